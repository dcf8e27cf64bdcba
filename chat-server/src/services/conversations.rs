//! Conversations: who is a member, what a member may send and relate, who moderates,
//! who may change the members, and how large a group may grow.

use std::time::{Duration, Instant};

use chat_proto::body::Body;
use chat_proto::entry::{Content, Reaction};
use chat_proto::ids::{ConversationId, UserId};

use crate::app::App;
use crate::hub::CachedConversation;
use crate::store::{Conversation, ConversationKind, Role, StoreError};

/// Most members a group may have (as in the large messengers' groups; fan-out encodes
/// each message once whatever the size).
pub const MAX_GROUP_MEMBERS: usize = 1024;
/// Most members named when a group is created; more are added one by one.
pub const MAX_INITIAL_MEMBERS: usize = 255;
/// Most devices one user may register. With [`MAX_ENCRYPTED_GROUP_MEMBERS`] it keeps
/// every member's every device within one envelope
/// ([`chat_crypto::e2e::MAX_RECIPIENTS`]).
pub const MAX_DEVICES_PER_USER: usize = 10;
/// Most members of an end-to-end encrypted group.
pub const MAX_ENCRYPTED_GROUP_MEMBERS: usize =
    chat_crypto::e2e::MAX_RECIPIENTS / MAX_DEVICES_PER_USER;

/// Why a user may not do what they asked.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// Not a member, or no such conversation: the two look the same, so ids do not
    /// reveal which conversations exist.
    #[error("no such conversation")]
    NotFound,
    /// A plain-text body in an end-to-end encrypted conversation.
    #[error("this conversation is end-to-end encrypted")]
    EncryptionRequired,
    /// Sending faster than the per-user rate; a retry after this long may succeed.
    #[error("sending too fast")]
    RateLimited(Duration),
    /// The members of a direct conversation never change.
    #[error("direct conversations have exactly two members")]
    DirectMembers,
    /// Nobody leaves a direct conversation.
    #[error("direct conversations cannot be left")]
    DirectLeave,
    /// Only a group's owner may add or remove others.
    #[error("only the group's owner can change its members")]
    NotOwner,
    /// The group has as many members as it may have.
    #[error("this group has at most {0} members")]
    GroupFull(usize),
    /// Storage failed while checking.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Most members of a group: end-to-end encrypted groups seal every message for every
/// member's every device, which bounds them tighter.
pub fn max_members(encrypted: bool) -> usize {
    if encrypted {
        MAX_ENCRYPTED_GROUP_MEMBERS
    } else {
        MAX_GROUP_MEMBERS
    }
}

/// The conversation's membership, from the hub's cache, if `user` is a member.
pub async fn member(
    app: &App,
    user: UserId,
    conversation: ConversationId,
) -> Result<CachedConversation, Denied> {
    match app.hub().conversation(conversation).await? {
        Some(c) if c.has(user) => Ok(c),
        _ => Err(Denied::NotFound),
    }
}

/// The whole conversation (members with their profiles and roles), if `user` is a
/// member.
pub async fn member_view(
    app: &App,
    user: UserId,
    conversation: ConversationId,
) -> Result<Conversation, Denied> {
    app.store()
        .conversation(conversation, user)
        .await?
        .ok_or(Denied::NotFound)
}

/// Whether a member may send `body` here: sealed bodies only where the conversation is
/// end-to-end encrypted.
pub fn may_send(conversation: &CachedConversation, body: &Body) -> Result<(), Denied> {
    if conversation.encrypted && !body.is_sealed() {
        return Err(Denied::EncryptionRequired);
    }
    Ok(())
}

/// Whether a new entry's content (a message, or a relation as
/// [`Relation::into_content`](chat_proto::entry::Relation::into_content) makes it) fits
/// the conversation's encryption policy: in an encrypted conversation, bodies and
/// reactions are sealed.
pub fn may_write(conversation: &CachedConversation, content: &Content) -> Result<(), Denied> {
    match content {
        Content::Message {
            body: Some(body), ..
        }
        | Content::Edit {
            body: Some(body), ..
        } => may_send(conversation, body),
        Content::Reaction {
            reaction: Some(Reaction::Emoji(_)),
            ..
        } if conversation.encrypted => Err(Denied::EncryptionRequired),
        Content::Message { .. }
        | Content::Edit { .. }
        | Content::Reaction { .. }
        | Content::Delete { .. } => Ok(()),
    }
}

/// Whether `user` moderates the conversation: owns it and it is a group. A moderator
/// may delete anyone's message in it (PROTOCOL.md §5.2).
pub async fn moderates(
    app: &App,
    user: UserId,
    conversation: ConversationId,
) -> Result<bool, Denied> {
    let c = member_view(app, user, conversation).await?;
    Ok(c.kind == ConversationKind::Group
        && c.members
            .iter()
            .any(|m| m.user.id == user && m.role == Role::Owner))
}

/// Takes one send from `user`'s rate budget (the limits announced in `welcome`).
pub fn take_send(app: &App, user: UserId, now: Instant) -> Result<(), Denied> {
    let limits = app.limits();
    app.hub()
        .take_send_token(user, limits.send_rate, limits.send_burst, now)
        .map_err(Denied::RateLimited)
}

/// Whether `actor` may change the members: remove `removing`, or add someone when it
/// is `None`. The owner changes a group's members; anyone may leave a group; a direct
/// conversation's members never change.
pub fn may_change_members(
    conversation: &Conversation,
    actor: UserId,
    removing: Option<UserId>,
) -> Result<(), Denied> {
    if removing == Some(actor) {
        return match conversation.kind {
            ConversationKind::Direct => Err(Denied::DirectLeave),
            ConversationKind::Group => Ok(()),
        };
    }
    if conversation.kind == ConversationKind::Direct {
        return Err(Denied::DirectMembers);
    }
    let is_owner = conversation
        .members
        .iter()
        .any(|m| m.user.id == actor && m.role == Role::Owner);
    if is_owner {
        Ok(())
    } else {
        Err(Denied::NotOwner)
    }
}

/// Whether a group (end-to-end encrypted or not) may have `members` members.
pub fn may_have_members(encrypted: bool, members: usize) -> Result<(), Denied> {
    let most = max_members(encrypted);
    if members > most {
        return Err(Denied::GroupFull(most));
    }
    Ok(())
}

/// Whether the group has room for `more` members.
pub fn has_room(conversation: &Conversation, more: usize) -> Result<(), Denied> {
    may_have_members(conversation.encrypted, conversation.members.len() + more)
}

#[cfg(test)]
mod tests {
    use chat_proto::ids::{Seq, Timestamp};

    use super::*;
    use crate::store::{Member, User};

    fn user(n: u64) -> UserId {
        UserId::new(n).unwrap_or_else(|_| unreachable!())
    }

    fn conversation(
        kind: ConversationKind,
        encrypted: bool,
        members: &[(u64, Role)],
    ) -> Conversation {
        Conversation {
            id: ConversationId::new(1).unwrap_or_else(|_| unreachable!()),
            kind,
            title: String::new(),
            encrypted,
            created_by: user(1),
            created_at: Timestamp(0),
            last_seq: Seq::ZERO,
            last_activity: Timestamp(0),
            members: members
                .iter()
                .map(|&(id, role)| Member {
                    user: User {
                        id: user(id),
                        username: format!("u{id}"),
                        display_name: String::new(),
                        bio: String::new(),
                        created_at: Timestamp(0),
                        last_seen: None,
                    },
                    role,
                    last_read_seq: Seq::ZERO,
                    joined_at: Timestamp(0),
                })
                .collect(),
        }
    }

    #[test]
    fn owners_change_groups_members_leave_groups_and_direct_conversations_stay() {
        let group = conversation(
            ConversationKind::Group,
            false,
            &[(1, Role::Owner), (2, Role::Member), (3, Role::Member)],
        );
        assert!(may_change_members(&group, user(1), None).is_ok());
        assert!(may_change_members(&group, user(1), Some(user(2))).is_ok());
        assert!(matches!(
            may_change_members(&group, user(2), None),
            Err(Denied::NotOwner)
        ));
        assert!(matches!(
            may_change_members(&group, user(2), Some(user(3))),
            Err(Denied::NotOwner)
        ));
        assert!(
            may_change_members(&group, user(2), Some(user(2))).is_ok(),
            "leaving"
        );
        let direct = conversation(
            ConversationKind::Direct,
            false,
            &[(1, Role::Member), (2, Role::Member)],
        );
        assert!(matches!(
            may_change_members(&direct, user(1), None),
            Err(Denied::DirectMembers)
        ));
        assert!(matches!(
            may_change_members(&direct, user(1), Some(user(1))),
            Err(Denied::DirectLeave)
        ));
    }

    #[test]
    fn encrypted_groups_are_smaller_and_take_sealed_bodies_only() {
        let members: Vec<(u64, Role)> = (1..=MAX_ENCRYPTED_GROUP_MEMBERS as u64)
            .map(|n| (n, Role::Member))
            .collect();
        let sealed = conversation(ConversationKind::Group, true, &members);
        assert!(
            matches!(has_room(&sealed, 1), Err(Denied::GroupFull(n)) if n == MAX_ENCRYPTED_GROUP_MEMBERS)
        );
        let plain = conversation(ConversationKind::Group, false, &members);
        assert!(has_room(&plain, 1).is_ok());
        assert!(has_room(&plain, MAX_GROUP_MEMBERS - members.len()).is_ok());
        assert!(has_room(&plain, MAX_GROUP_MEMBERS - members.len() + 1).is_err());

        let cached = |encrypted| CachedConversation {
            encrypted,
            members: vec![user(1)].into(),
        };
        let text = Body::Text("hi".into());
        let envelope = Body::Encrypted(vec![1, 2, 3].into());
        assert!(matches!(
            may_send(&cached(true), &text),
            Err(Denied::EncryptionRequired)
        ));
        assert!(may_send(&cached(true), &envelope).is_ok());
        assert!(may_send(&cached(false), &text).is_ok());
        let target = chat_proto::ids::Seq::new(1).expect("seq");
        let thumbs = |reaction| Content::Reaction {
            target,
            reaction: Some(reaction),
        };
        let sealed_reaction = thumbs(Reaction::Encrypted(vec![1, 2, 3].into()));
        let plain_reaction = thumbs(Reaction::Emoji("👍".into()));
        let plain_edit = Content::Edit {
            target,
            body: Some(text.clone()),
        };
        assert!(matches!(
            may_write(&cached(true), &plain_reaction),
            Err(Denied::EncryptionRequired)
        ));
        assert!(matches!(
            may_write(&cached(true), &plain_edit),
            Err(Denied::EncryptionRequired)
        ));
        assert!(matches!(
            may_write(&cached(true), &Content::message(text.clone())),
            Err(Denied::EncryptionRequired)
        ));
        for allowed in [
            sealed_reaction,
            Content::Delete { target },
            Content::message(envelope),
        ] {
            assert!(may_write(&cached(true), &allowed).is_ok(), "{allowed:?}");
        }
        for allowed in [plain_reaction, plain_edit, Content::message(text)] {
            assert!(may_write(&cached(false), &allowed).is_ok(), "{allowed:?}");
        }
    }
}
