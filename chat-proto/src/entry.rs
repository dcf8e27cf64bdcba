//! Entries of a conversation's log and the relations between them (PROTOCOL.md §5.2,
//! since version 1.3).
//!
//! Every seq of a conversation holds one [`Entry`]: a message, or a relation to an
//! earlier entry (an edit, a deletion, a reaction). Replies are messages that name the
//! seq they answer. Relations travel, are stored, replayed and paged exactly like
//! messages; a client folds them into what it shows ([`Entry::target`] says which
//! entry one changes). Peers of version 1.2 and older see every entry as a plain
//! `message` ([`Entry::to_message`]), so they never wait on a seq they cannot read.

use serde::{Deserialize, Serialize};

use crate::body::{Attachments, Body, Envelope};
use crate::frame::{Message, truncate_utf8};
use crate::ids::{ClientMsgId, ConversationId, MessageId, Seq, Timestamp, UserId};
use crate::limits::{MAX_ENVELOPE, MAX_REACTION, MAX_TEXT_BODY};

#[cfg(any(test, feature = "arbitrary"))]
use arbitrary::Arbitrary;

/// One entry of a conversation's log, at its own seq (§6.2.14).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct Entry {
    /// The conversation it belongs to.
    pub conversation: ConversationId,
    /// Its position in the conversation, assigned by the server.
    pub seq: Seq,
    /// Its deployment-wide id.
    pub id: MessageId,
    /// Who wrote it.
    pub sender: UserId,
    /// The sender's idempotency key.
    pub client_msg_id: ClientMsgId,
    /// When the server committed it.
    pub sent_at: Timestamp,
    /// What it is.
    pub content: Content,
}

/// What an entry is. A `None` body or reaction means its content was purged by a
/// deletion: the server keeps only who, when and where.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// A message; `reply_to` names the entry it answers.
    Message {
        /// Its body; `None` once deleted.
        body: Option<Body>,
        /// The seq of the message it replies to.
        reply_to: Option<Seq>,
    },
    /// A new body for the message at `target`, by its author.
    Edit {
        /// The message edited.
        target: Seq,
        /// The new body; `None` once the message was deleted.
        body: Option<Body>,
    },
    /// Deletes the message or reaction at `target`, whose content is purged.
    Delete {
        /// The entry deleted.
        target: Seq,
    },
    /// A reaction to the message at `target`; deleting this entry takes it back.
    Reaction {
        /// The message reacted to.
        target: Seq,
        /// The reaction; `None` once taken back or the message deleted.
        reaction: Option<Reaction>,
    },
}

/// A reaction: one emoji, or one sealed for the conversation's devices.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum Reaction {
    /// One grapheme cluster (an emoji, possibly with modifiers), at most
    /// [`MAX_REACTION`] bytes.
    Emoji(String),
    /// An end-to-end envelope (§5.1) whose plaintext is the emoji.
    Encrypted(Envelope),
}

impl Reaction {
    /// Whether this reaction is well formed: one grapheme cluster of at most
    /// [`MAX_REACTION`] bytes with no control or white-space character, or a sealed
    /// envelope of at most [`MAX_ENVELOPE`] bytes.
    pub fn is_valid(&self) -> bool {
        match self {
            Reaction::Emoji(e) => is_reaction_text(e),
            Reaction::Encrypted(env) => !env.0.is_empty() && env.0.len() <= MAX_ENVELOPE,
        }
    }
}

/// Whether `text` may be a reaction: one extended grapheme cluster of at most
/// [`MAX_REACTION`] bytes, without control or white-space characters.
pub fn is_reaction_text(text: &str) -> bool {
    use unicode_segmentation::UnicodeSegmentation as _;
    !text.is_empty()
        && text.len() <= MAX_REACTION
        && !text.chars().any(|c| c.is_control() || c.is_whitespace())
        && text.graphemes(true).count() == 1
}

/// What a client asks to add to a conversation's log with `relate` (§6.1.7).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// A message answering the message at `target`.
    Reply {
        /// The message answered.
        target: Seq,
        /// The reply's body.
        body: Body,
    },
    /// A new body for the caller's message at `target`.
    Edit {
        /// The message edited.
        target: Seq,
        /// The new body.
        body: Body,
    },
    /// Deletes the message or reaction at `target` (the author's own; any message of
    /// a group, for its owner).
    Delete {
        /// The entry deleted.
        target: Seq,
    },
    /// Reacts to the message at `target`.
    React {
        /// The message reacted to.
        target: Seq,
        /// The reaction.
        reaction: Reaction,
    },
}

impl Relation {
    /// The seq this relation names.
    pub fn target(&self) -> Seq {
        match self {
            Relation::Reply { target, .. }
            | Relation::Edit { target, .. }
            | Relation::Delete { target }
            | Relation::React { target, .. } => *target,
        }
    }

    /// The plain text this relation carries (a reply's or an edit's text, a reaction's
    /// emoji): what an end-to-end encrypted conversation seals.
    pub fn plain_text(&self) -> Option<&str> {
        match self {
            Relation::Reply {
                body: Body::Text(t),
                ..
            }
            | Relation::Edit {
                body: Body::Text(t),
                ..
            }
            | Relation::React {
                reaction: Reaction::Emoji(t),
                ..
            } => Some(t),
            _ => None,
        }
    }

    /// This relation with its plain text replaced by `sealed`, the envelope of that
    /// text (a deletion has none and stays as it is).
    pub fn sealed(self, sealed: Envelope) -> Relation {
        match self {
            Relation::Reply { target, .. } => Relation::Reply {
                target,
                body: Body::Encrypted(sealed),
            },
            Relation::Edit { target, .. } => Relation::Edit {
                target,
                body: Body::Encrypted(sealed),
            },
            Relation::React { target, .. } => Relation::React {
                target,
                reaction: Reaction::Encrypted(sealed),
            },
            delete @ Relation::Delete { .. } => delete,
        }
    }

    /// The entry content this relation stores.
    pub fn into_content(self) -> Content {
        match self {
            Relation::Reply { target, body } => Content::Message {
                body: Some(body),
                reply_to: Some(target),
            },
            Relation::Edit { target, body } => Content::Edit {
                target,
                body: Some(body),
            },
            Relation::Delete { target } => Content::Delete { target },
            Relation::React { target, reaction } => Content::Reaction {
                target,
                reaction: Some(reaction),
            },
        }
    }
}

impl Content {
    /// A plain message with `body`.
    pub fn message(body: Body) -> Self {
        Content::Message {
            body: Some(body),
            reply_to: None,
        }
    }

    /// The seq of the entry this one changes or answers, if any.
    pub fn target(&self) -> Option<Seq> {
        match self {
            Content::Message { reply_to, .. } => *reply_to,
            Content::Edit { target, .. }
            | Content::Delete { target }
            | Content::Reaction { target, .. } => Some(*target),
        }
    }

    /// Whether this is a message (a reply included), the kind of entry that counts as
    /// unread.
    pub fn is_message(&self) -> bool {
        matches!(self, Content::Message { .. })
    }

    /// Whether a deletion purged this entry's content.
    pub fn is_purged(&self) -> bool {
        matches!(
            self,
            Content::Message { body: None, .. }
                | Content::Edit { body: None, .. }
                | Content::Reaction { reaction: None, .. }
        )
    }

    /// The sealed envelope this entry carries, if any.
    pub fn envelope(&self) -> Option<&Envelope> {
        match self {
            Content::Message { body: Some(b), .. } | Content::Edit { body: Some(b), .. } => {
                b.envelope()
            }
            Content::Reaction {
                reaction: Some(Reaction::Encrypted(e)),
                ..
            } => Some(e),
            _ => None,
        }
    }
}

/// Text a 1.2 peer sees in place of a deleted entry.
pub const DELETED_TEXT: &str = "🗑 message deleted";

impl Entry {
    /// The entry a stored message is (a plain message, no reply).
    pub fn from_message(m: Message) -> Self {
        Entry {
            conversation: m.conversation,
            seq: m.seq,
            id: m.id,
            sender: m.sender,
            client_msg_id: m.client_msg_id,
            sent_at: m.sent_at,
            content: Content::message(m.body),
        }
    }

    /// The seq of the entry this one changes or answers, if any.
    pub fn target(&self) -> Option<Seq> {
        self.content.target()
    }

    /// The body of a message (a reply too), if it is a message not deleted.
    pub fn body(&self) -> Option<&Body> {
        match &self.content {
            Content::Message { body, .. } => body.as_ref(),
            _ => None,
        }
    }

    /// The text of a message (a reply too), if it is a message with plain text.
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Content::Message {
                body: Some(Body::Text(t)),
                ..
            } => Some(t),
            _ => None,
        }
    }

    /// This entry as a peer of version 1.3 sees it (§2.2): a body with files becomes
    /// plain text; `None` when it has no files and is seen as it is.
    pub fn without_files(&self) -> Option<Entry> {
        let (Content::Message {
            body: Some(body), ..
        }
        | Content::Edit {
            body: Some(body), ..
        }) = &self.content
        else {
            return None;
        };
        if !body.has_files() {
            return None;
        }
        let mut entry = self.clone();
        if let Content::Message { body: Some(b), .. } | Content::Edit { body: Some(b), .. } =
            &mut entry.content
        {
            *b = b.without_files();
        }
        Some(entry)
    }

    /// This entry in the form a peer of `version` reads: itself for 1.4 and later, a
    /// body with files as text for 1.3, a `message` for 1.2 and older.
    pub fn for_version(
        &self,
        version: crate::version::ProtocolVersion,
    ) -> crate::frame::ServerFrame {
        use crate::frame::ServerFrame;
        if !version.has_relations() {
            ServerFrame::Message(self.to_message())
        } else if !version.has_files() {
            ServerFrame::Entry(self.without_files().unwrap_or_else(|| self.clone()))
        } else {
            ServerFrame::Entry(self.clone())
        }
    }

    /// How a peer of version 1.2 or older sees this entry: as a `message` at the same
    /// seq, so its log stays gap-free (§2, "Relations for older peers"). A message is
    /// itself (a reply without its reference); an edit is its new text after "✎ "; a
    /// reaction is its emoji with "(reaction)"; a deletion and purged content read
    /// "🗑 message deleted". Sealed edits and reactions stay sealed: an older peer
    /// opens them as messages of their own. A body with files
    /// reads as text (see [`Body::without_files`]).
    pub fn to_message(&self) -> Message {
        let text = |t: String| Body::Text(t);
        let body = match &self.content {
            Content::Message { body: Some(b), .. } => b.without_files(),
            Content::Edit {
                body: Some(Body::Text(t) | Body::Attachments(Attachments { text: t, .. })),
                ..
            } => {
                let mut edited = format!("✎ {t}");
                truncate_utf8(&mut edited, MAX_TEXT_BODY);
                text(edited)
            }
            Content::Edit {
                body: Some(sealed @ (Body::Encrypted(_) | Body::SealedAttachments(_))),
                ..
            } => sealed.without_files(),
            Content::Reaction {
                reaction: Some(Reaction::Emoji(e)),
                ..
            } => text(format!("{e} (reaction)")),
            Content::Reaction {
                reaction: Some(Reaction::Encrypted(env)),
                ..
            } => Body::Encrypted(env.clone()),
            Content::Delete { .. }
            | Content::Message { body: None, .. }
            | Content::Edit { body: None, .. }
            | Content::Reaction { reaction: None, .. } => text(DELETED_TEXT.to_owned()),
        };
        Message {
            conversation: self.conversation,
            seq: self.seq,
            id: self.id,
            sender: self.sender,
            client_msg_id: self.client_msg_id,
            sent_at: self.sent_at,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(content: Content) -> Entry {
        Entry {
            conversation: ConversationId::new(7).expect("id"),
            seq: Seq::new(20).expect("seq"),
            id: MessageId::new(100).expect("id"),
            sender: UserId::new(42).expect("id"),
            client_msg_id: ClientMsgId::from_bytes([1; 16]),
            sent_at: Timestamp(1),
            content,
        }
    }

    #[test]
    fn reactions_are_one_grapheme_cluster_within_the_byte_limit() {
        for ok in ["👍", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "a", "+"]
        {
            assert!(is_reaction_text(ok), "{ok}");
        }
        for bad in ["", "👍👍", "ab", " ", "\u{7}", "a\u{301}\u{301}b", "👍 "] {
            assert!(!is_reaction_text(bad), "{bad:?}");
        }
        // One cluster, but past the byte limit (a base with many combining marks).
        let long = format!("a{}", "\u{301}".repeat(MAX_REACTION));
        assert!(!is_reaction_text(&long));
        assert!(!Reaction::Encrypted(Envelope::default()).is_valid());
    }

    #[test]
    fn older_peers_see_every_entry_as_a_message_at_its_seq() {
        let seq = Seq::new(3).expect("seq");
        let shown = |c: Content| entry(c).to_message().body;
        assert_eq!(
            shown(Content::Message {
                body: Some(Body::Text("hi".into())),
                reply_to: Some(seq)
            }),
            Body::Text("hi".into())
        );
        assert_eq!(
            shown(Content::Edit {
                target: seq,
                body: Some(Body::Text("fixed".into()))
            }),
            Body::Text("✎ fixed".into())
        );
        assert_eq!(
            shown(Content::Reaction {
                target: seq,
                reaction: Some(Reaction::Emoji("👍".into()))
            }),
            Body::Text("👍 (reaction)".into())
        );
        for gone in [
            Content::Delete { target: seq },
            Content::Message {
                body: None,
                reply_to: None,
            },
            Content::Reaction {
                target: seq,
                reaction: None,
            },
        ] {
            assert_eq!(shown(gone), Body::Text(DELETED_TEXT.into()));
        }
        let sealed = Body::Encrypted(Envelope(vec![1, 2, 3].into()));
        assert_eq!(
            shown(Content::Edit {
                target: seq,
                body: Some(sealed.clone())
            }),
            sealed
        );
        // The seq, id, sender and key are the entry's own.
        let m = entry(Content::Delete { target: seq }).to_message();
        assert_eq!((m.seq.get(), m.id.get(), m.sender.get()), (20, 100, 42));
        // An edit at the text limit still fits the limit with its marker.
        let long = "x".repeat(MAX_TEXT_BODY);
        let m = shown(Content::Edit {
            target: seq,
            body: Some(Body::Text(long)),
        });
        assert!(m.len() <= MAX_TEXT_BODY && m.as_text().expect("text").starts_with("✎ "));
    }

    #[test]
    fn relations_store_as_the_content_they_name() {
        let t = Seq::new(5).expect("seq");
        let reply = Relation::Reply {
            target: t,
            body: Body::Text("yes".into()),
        };
        assert_eq!(reply.target(), t);
        let content = reply.into_content();
        assert!(content.is_message());
        assert_eq!(content.target(), Some(t));
        assert!(!content.is_purged());
        assert!(
            Content::Edit {
                target: t,
                body: None
            }
            .is_purged()
        );
    }

    #[test]
    fn older_peers_see_files_as_text() {
        use crate::body::{FileId, FileRef, ImageInfo, SealedAttachmentIds};
        use crate::frame::ServerFrame;
        use crate::version::ProtocolVersion;
        let v = |minor| ProtocolVersion { major: 1, minor };
        let file = |name: &str, size| FileRef {
            id: FileId(format!("{:032x}", size)),
            name: name.into(),
            size,
            media_type: "image/png".into(),
            image: Some(ImageInfo {
                width: 2,
                height: 3,
                thumbnail: None,
            }),
        };
        let plain = entry(Content::message(Body::Attachments(Attachments {
            text: "Look".into(),
            files: vec![file("a.png", 999), file("b.png", 1_250_000)],
        })));
        let expected = "Look\n📎 a.png (999 B)\n📎 b.png (1.3 MB)";
        assert_eq!(plain.to_message().body, Body::Text(expected.into()));
        let ServerFrame::Entry(seen) = plain.for_version(v(3)) else {
            panic!("a 1.3 peer reads entries");
        };
        assert_eq!(seen.content, Content::message(Body::Text(expected.into())));
        assert_eq!((seen.seq, seen.id), (plain.seq, plain.id));
        assert_eq!(plain.for_version(v(4)), ServerFrame::Entry(plain.clone()));
        assert!(matches!(plain.for_version(v(2)), ServerFrame::Message(_)));

        let no_caption = entry(Content::message(Body::Attachments(Attachments {
            text: String::new(),
            files: vec![file("c.png", 12_345)],
        })));
        assert_eq!(
            no_caption.to_message().body,
            Body::Text("📎 c.png (12 KB)".into())
        );

        let sealed = entry(Content::message(Body::SealedAttachments(
            SealedAttachmentIds {
                envelope: Envelope::from(vec![1, 2, 3]),
                files: vec![FileId("0".repeat(32)), FileId("1".repeat(32))],
            },
        )));
        let ServerFrame::Entry(seen) = sealed.for_version(v(3)) else {
            panic!("a 1.3 peer reads entries");
        };
        assert_eq!(
            seen.content,
            Content::message(Body::Text(crate::body::sealed_files_notice(2)))
        );
        assert!(sealed.content.envelope().is_some(), "1.4 peers open it");
        // An entry without files is shared as it is.
        assert_eq!(
            entry(Content::message(Body::Text("hi".into()))).without_files(),
            None
        );
    }
}
