//! Presence: who is online, announced to the people who share a conversation.

use chat_proto::frame::{Cursor, Presence, PresenceStatus, ServerFrame};
use chat_proto::ids::Timestamp;
use chat_proto::ids::UserId;

use super::{Hub, SharedFrame};

impl Hub {
    /// Everyone who shares one of the given conversations (a user's `heads`),
    /// ascending, without duplicates.
    pub async fn contacts(&self, heads: &[Cursor]) -> Vec<UserId> {
        let mut contacts = Vec::new();
        for head in heads {
            if let Ok(Some(c)) = self.conversation(head.conversation).await {
                contacts.extend(c.members.iter().copied());
            }
        }
        contacts.sort_unstable();
        contacts.dedup();
        contacts
    }

    /// Tells `user`'s contacts that they went offline at `at`: everywhere, or only to
    /// sessions on this node (when every node reaches the same conclusion on its own).
    pub async fn announce_offline(&self, user: UserId, at: Timestamp, everywhere: bool) {
        let heads = match self.store.heads(user).await {
            Ok(heads) => heads,
            Err(e) => {
                tracing::warn!(error = %e, %user, "contacts lookup failed; offline presence not sent");
                return;
            }
        };
        let contacts: Vec<UserId> = self
            .contacts(&heads)
            .await
            .into_iter()
            .filter(|&c| c != user)
            .collect();
        let frame = SharedFrame::new(ServerFrame::Presence(Presence {
            user,
            status: PresenceStatus::Offline,
            last_seen: Some(at),
        }));
        if everywhere {
            self.broadcast(&contacts, &frame);
        } else {
            self.send_to_users(&contacts, &frame, None);
        }
    }

    /// Tells users who have just come to share a conversation which of them are online:
    /// each online newcomer to the other members, each online member to the newcomers.
    /// (Presence otherwise reaches contacts only when someone connects or disconnects.)
    pub fn introduce(&self, newcomers: &[UserId], members: &[UserId]) {
        self.introduce_here(newcomers, members);
        if let Some(peers) = self.peers() {
            peers.introduce(newcomers, members);
        }
    }

    /// [`Hub::introduce`] for the sessions on this node (each node does its own, so
    /// the bus carries one event instead of a frame per member).
    pub fn introduce_here(&self, newcomers: &[UserId], members: &[UserId]) {
        let online = |user: UserId| {
            SharedFrame::new(ServerFrame::Presence(Presence {
                user,
                status: PresenceStatus::Online,
                last_seen: None,
            }))
        };
        for &user in newcomers {
            if self.is_online(user) {
                let others: Vec<UserId> = members.iter().copied().filter(|&m| m != user).collect();
                self.send_to_users(&others, &online(user), None);
            }
        }
        for &member in members {
            if !newcomers.contains(&member) && self.is_online(member) {
                self.send_to_users(newcomers, &online(member), None);
            }
        }
    }
}
