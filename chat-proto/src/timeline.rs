//! Folding a conversation's entries into the messages people see (PROTOCOL.md §5.2,
//! "Folding").
//!
//! A [`Timeline`] takes a conversation's entries in any order (live, replayed, synced
//! or from history pages, duplicates included) and answers, per message, its current
//! body, whether it was edited or deleted, what it replies to and who reacted with
//! what. The fold is order-independent: the same entries give the same view however
//! they arrived, which is what lets a client that resumed after a gap show what one
//! that stayed online shows. Sealed bodies and reactions are folded as they are; open
//! them before applying to see their text.
//!
//! ```
//! use chat_proto::prelude::*;
//! use chat_proto::timeline::Timeline;
//! # let id = |n| ConversationId::new(n).unwrap();
//! # let entry = |seq, content| Entry {
//! #     conversation: id(1), seq: Seq::new(seq).unwrap(), id: MessageId::new(seq).unwrap(),
//! #     sender: UserId::new(1).unwrap(), client_msg_id: ClientMsgId::from_bytes([seq as u8; 16]),
//! #     sent_at: Timestamp(0), content,
//! # };
//! let mut timeline = Timeline::default();
//! let first = Seq::new(1).unwrap();
//! timeline.apply(entry(2, Content::Edit { target: first, body: Some(Body::Text("hi!".into())) }));
//! timeline.apply(entry(1, Content::message(Body::Text("hi".into()))));
//! let view = timeline.message(first).unwrap();
//! assert_eq!(view.body.as_ref().and_then(Body::as_text), Some("hi!"));
//! assert!(view.edited);
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::body::{Attachments, Body};
use crate::entry::{Content, Entry, Reaction};
use crate::ids::{ClientMsgId, MessageId, Seq, Timestamp, UserId};

/// A message as people see it, relations folded in.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MessageView {
    /// Its seq.
    pub seq: Seq,
    /// Its id.
    pub id: MessageId,
    /// Its author.
    pub sender: UserId,
    /// The author's idempotency key.
    pub client_msg_id: ClientMsgId,
    /// When it was sent.
    pub sent_at: Timestamp,
    /// The current body: the latest edit's, else its own (a message with files keeps
    /// them under an edited caption); `None` when deleted.
    pub body: Option<Body>,
    /// Whether an edit changed it.
    pub edited: bool,
    /// When the latest edit was committed.
    pub edited_at: Option<Timestamp>,
    /// Whether it was deleted (a tombstone: who and when only).
    pub deleted: bool,
    /// The message it answers.
    pub reply_to: Option<Seq>,
    /// Its reactions, grouped by reaction in order of first use.
    pub reactions: Vec<ReactionView>,
}

/// One reaction on a message and everyone who gave it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReactionView {
    /// The emoji (or, not yet opened, the sealed reaction).
    pub reaction: Reaction,
    /// Who reacted with it, earliest first, with the seq of their reaction entry (what
    /// to delete to take it back).
    pub by: Vec<(UserId, Seq)>,
}

impl ReactionView {
    /// How many people reacted with it.
    pub fn count(&self) -> usize {
        self.by.len()
    }

    /// The seq of `user`'s reaction entry, if they gave this reaction.
    pub fn of(&self, user: UserId) -> Option<Seq> {
        self.by.iter().find(|(u, _)| *u == user).map(|(_, s)| *s)
    }
}

#[derive(Clone, Debug)]
struct Stored {
    id: MessageId,
    sender: UserId,
    client_msg_id: ClientMsgId,
    sent_at: Timestamp,
    body: Option<Body>,
    reply_to: Option<Seq>,
}

/// The entries of one conversation, folded (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    messages: BTreeMap<Seq, Stored>,
    /// Per target: its edits by seq, with their bodies and times.
    edits: HashMap<Seq, BTreeMap<Seq, (Option<Body>, Timestamp)>>,
    /// Targets of deletions.
    deleted: BTreeSet<Seq>,
    /// Per target: its reaction entries by seq.
    reactions: HashMap<Seq, BTreeMap<Seq, (UserId, Option<Reaction>)>>,
    /// The target of each reaction entry, to find it when it is deleted.
    reaction_targets: HashMap<Seq, Seq>,
    /// Entries seen, to count each once.
    seen: BTreeSet<Seq>,
}

impl Timeline {
    /// Folds in one entry; entries seen before are ignored, except that a purged copy
    /// of an entry (content `null`) replaces what was known of it.
    pub fn apply(&mut self, entry: Entry) {
        let fresh = self.seen.insert(entry.seq);
        if !fresh && !entry.content.is_purged() {
            return;
        }
        match entry.content {
            Content::Message { body, reply_to } => {
                self.messages.insert(
                    entry.seq,
                    Stored {
                        id: entry.id,
                        sender: entry.sender,
                        client_msg_id: entry.client_msg_id,
                        sent_at: entry.sent_at,
                        body,
                        reply_to,
                    },
                );
            }
            Content::Edit { target, body } => {
                self.edits
                    .entry(target)
                    .or_default()
                    .insert(entry.seq, (body, entry.sent_at));
            }
            Content::Delete { target } => {
                self.deleted.insert(target);
            }
            Content::Reaction { target, reaction } => {
                self.reaction_targets.insert(entry.seq, target);
                self.reactions
                    .entry(target)
                    .or_default()
                    .insert(entry.seq, (entry.sender, reaction));
            }
        }
    }

    /// The view of the message at `seq`, if that entry is a message this timeline has.
    pub fn message(&self, seq: Seq) -> Option<MessageView> {
        let m = self.messages.get(&seq)?;
        let deleted = m.body.is_none() || self.deleted.contains(&seq);
        let latest_edit = self
            .edits
            .get(&seq)
            .and_then(|edits| edits.iter().next_back());
        let body = if deleted {
            None
        } else {
            match (latest_edit, &m.body) {
                // An edit replaces the caption; the files stay (§5.3).
                (Some((_, (Some(Body::Text(text)), _))), Some(Body::Attachments(original))) => {
                    Some(Body::Attachments(Attachments {
                        text: text.clone(),
                        files: original.files.clone(),
                    }))
                }
                (Some((_, (Some(body), _))), _) => Some(body.clone()),
                _ => m.body.clone(),
            }
        };
        let mut reactions: Vec<ReactionView> = Vec::new();
        if !deleted && let Some(entries) = self.reactions.get(&seq) {
            for (&at, (user, reaction)) in entries {
                let Some(reaction) = reaction else { continue };
                if self.deleted.contains(&at) {
                    continue;
                }
                match reactions.iter_mut().find(|r| r.reaction == *reaction) {
                    Some(group) => {
                        if group.of(*user).is_none() {
                            group.by.push((*user, at));
                        }
                    }
                    None => reactions.push(ReactionView {
                        reaction: reaction.clone(),
                        by: vec![(*user, at)],
                    }),
                }
            }
        }
        Some(MessageView {
            seq,
            id: m.id,
            sender: m.sender,
            client_msg_id: m.client_msg_id,
            sent_at: m.sent_at,
            body,
            edited: !deleted && latest_edit.is_some(),
            edited_at: latest_edit.filter(|_| !deleted).map(|(_, (_, at))| *at),
            deleted,
            reply_to: if deleted { None } else { m.reply_to },
            reactions,
        })
    }

    /// Every message this timeline has, oldest first.
    pub fn messages(&self) -> impl Iterator<Item = MessageView> + '_ {
        self.messages.keys().filter_map(|&seq| self.message(seq))
    }

    /// The message a relation entry at `seq` changes, if this timeline knows the
    /// relation: to find what to redraw when it arrives.
    pub fn target_of(&self, seq: Seq) -> Option<Seq> {
        if let Some(target) = self.reaction_targets.get(&seq) {
            return Some(*target);
        }
        self.edits
            .iter()
            .find(|(_, edits)| edits.contains_key(&seq))
            .map(|(target, _)| *target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ConversationId;
    use proptest::prelude::*;

    fn seq(n: u64) -> Seq {
        Seq::new(n).expect("seq")
    }

    fn user(n: u64) -> UserId {
        UserId::new(n).expect("user")
    }

    fn entry(at: u64, sender: u64, content: Content) -> Entry {
        Entry {
            conversation: ConversationId::new(1).expect("id"),
            seq: seq(at),
            id: MessageId::new(at).expect("id"),
            sender: user(sender),
            client_msg_id: ClientMsgId::from_bytes([at as u8; 16]),
            sent_at: Timestamp(at as i64 * 10),
            content,
        }
    }

    fn text(t: &str) -> Body {
        Body::Text(t.into())
    }

    fn emoji(e: &str) -> Option<Reaction> {
        Some(Reaction::Emoji(e.into()))
    }

    /// A small log with every kind of relation.
    fn log() -> Vec<Entry> {
        vec![
            entry(1, 1, Content::message(text("hello"))),
            entry(
                2,
                2,
                Content::Message {
                    body: Some(text("hi")),
                    reply_to: Some(seq(1)),
                },
            ),
            entry(
                3,
                1,
                Content::Edit {
                    target: seq(1),
                    body: Some(text("hello all")),
                },
            ),
            entry(
                4,
                2,
                Content::Reaction {
                    target: seq(1),
                    reaction: emoji("👍"),
                },
            ),
            entry(
                5,
                3,
                Content::Reaction {
                    target: seq(1),
                    reaction: emoji("👍"),
                },
            ),
            entry(
                6,
                3,
                Content::Reaction {
                    target: seq(1),
                    reaction: emoji("🎉"),
                },
            ),
            entry(7, 3, Content::Delete { target: seq(6) }),
            entry(
                8,
                1,
                Content::Edit {
                    target: seq(1),
                    body: Some(text("hello everyone")),
                },
            ),
            entry(9, 2, Content::message(text("bye"))),
            entry(10, 2, Content::Delete { target: seq(9) }),
        ]
    }

    #[test]
    fn relations_fold_into_the_messages_they_name() {
        let mut t = Timeline::default();
        for e in log() {
            t.apply(e);
        }
        let first = t.message(seq(1)).expect("first");
        assert_eq!(first.body, Some(text("hello everyone")));
        assert!(first.edited && !first.deleted);
        assert_eq!(first.edited_at, Some(Timestamp(80)));
        assert_eq!(first.reactions.len(), 1, "the taken-back 🎉 is gone");
        assert_eq!(first.reactions[0].reaction, Reaction::Emoji("👍".into()));
        assert_eq!(
            first.reactions[0].by,
            vec![(user(2), seq(4)), (user(3), seq(5))]
        );
        assert_eq!(first.reactions[0].of(user(3)), Some(seq(5)));
        let reply = t.message(seq(2)).expect("reply");
        assert_eq!(reply.reply_to, Some(seq(1)));
        let gone = t.message(seq(9)).expect("tombstone");
        assert!(gone.deleted && gone.body.is_none() && !gone.edited);
        assert_eq!(gone.sender, user(2));
        assert!(t.message(seq(3)).is_none(), "an edit is not a message");
        assert_eq!(t.messages().count(), 3);
        assert_eq!(t.target_of(seq(4)), Some(seq(1)));
        assert_eq!(t.target_of(seq(8)), Some(seq(1)));
    }

    #[test]
    fn an_edited_caption_keeps_the_files() {
        use crate::body::{FileId, FileRef};
        let photo = FileRef {
            id: FileId("9f86d081884c7d659a2feaa0c55ad015".into()),
            name: "view.jpg".into(),
            size: 10,
            media_type: "image/jpeg".into(),
            image: None,
        };
        let with = |caption: &str| {
            Body::Attachments(Attachments {
                text: caption.into(),
                files: vec![photo.clone()],
            })
        };
        let mut t = Timeline::default();
        t.apply(entry(
            2,
            1,
            Content::Edit {
                target: seq(1),
                body: Some(text("the view")),
            },
        ));
        t.apply(entry(1, 1, Content::message(with("a view"))));
        let view = t.message(seq(1)).expect("message");
        assert_eq!(view.body, Some(with("the view")));
        assert!(view.edited);
        t.apply(entry(3, 1, Content::Delete { target: seq(1) }));
        assert_eq!(t.message(seq(1)).expect("tombstone").body, None);
    }

    #[test]
    fn a_purged_copy_replaces_what_was_known() {
        let mut t = Timeline::default();
        t.apply(entry(1, 1, Content::message(text("secret"))));
        t.apply(entry(
            1,
            1,
            Content::Message {
                body: None,
                reply_to: None,
            },
        ));
        assert!(t.message(seq(1)).expect("message").deleted);
        // A stale full copy arriving later does not bring the body back.
        t.apply(entry(1, 1, Content::message(text("secret"))));
        assert!(t.message(seq(1)).expect("message").deleted);
    }

    #[test]
    fn one_reaction_per_user_and_emoji_counts() {
        let mut t = Timeline::default();
        t.apply(entry(1, 1, Content::message(text("m"))));
        for at in [2, 3] {
            t.apply(entry(
                at,
                2,
                Content::Reaction {
                    target: seq(1),
                    reaction: emoji("👍"),
                },
            ));
        }
        let view = t.message(seq(1)).expect("message");
        assert_eq!(view.reactions[0].by, vec![(user(2), seq(2))]);
    }

    proptest! {
        /// Any order of arrival, with duplicates, gives the view of the log in order.
        #[test]
        fn the_fold_does_not_depend_on_arrival_order(
            order in Just((0..10usize).collect::<Vec<_>>()).prop_shuffle(),
            repeats in proptest::collection::vec(0..10usize, 0..5),
        ) {
            let entries = log();
            let mut in_order = Timeline::default();
            for e in entries.clone() {
                in_order.apply(e);
            }
            let mut shuffled = Timeline::default();
            for i in order.into_iter().chain(repeats) {
                shuffled.apply(entries[i].clone());
            }
            let a: Vec<_> = in_order.messages().collect();
            let b: Vec<_> = shuffled.messages().collect();
            prop_assert_eq!(a, b);
        }
    }
}
