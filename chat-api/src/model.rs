//! The data types that several endpoints share: users, conversations, members,
//! devices. Messages are `chat-proto`'s [`Message`], the same as on the wire.

use chat_proto::frame::Message;
use chat_proto::ids::{ConversationId, Seq, Timestamp, UserId};
use serde::{Deserialize, Serialize};

/// A user's public profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct User {
    /// Stable id.
    pub id: UserId,
    /// Unique login name, lower case.
    pub username: String,
    /// Name shown to others.
    pub display_name: String,
    /// Free text about the user.
    pub bio: String,
    /// When the account was created.
    pub created_at: Timestamp,
    /// When a connection of theirs last closed; `None` if never.
    pub last_seen: Option<Timestamp>,
}

/// Direct chat between two people, or a titled group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// Two people (or one person's notes to self), one conversation per pair.
    Direct,
    /// A titled group with an owner.
    Group,
}

impl ConversationKind {
    /// The name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => "direct",
            ConversationKind::Group => "group",
        }
    }

    /// The kind a name stands for.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(ConversationKind::Direct),
            "group" => Some(ConversationKind::Group),
            _ => None,
        }
    }
}

/// A member's role in a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May add and remove members.
    Owner,
    /// May read, send and leave.
    Member,
}

impl Role {
    /// The name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }

    /// The role a name stands for.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Role::Owner),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// One member of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Member {
    /// Their profile.
    pub user: User,
    /// Owner or member.
    pub role: Role,
    /// The last message they marked read.
    pub last_read_seq: Seq,
    /// When they joined.
    pub joined_at: Timestamp,
}

/// A conversation and its members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Conversation {
    /// Stable id.
    pub id: ConversationId,
    /// Direct or group.
    pub kind: ConversationKind,
    /// Group title (empty for direct conversations).
    pub title: String,
    /// Whether bodies must be end-to-end encrypted.
    pub encrypted: bool,
    /// Creator.
    pub created_by: UserId,
    /// Creation time.
    pub created_at: Timestamp,
    /// Seq of the newest message (zero when empty).
    pub last_seq: Seq,
    /// Time of the newest message, or creation.
    pub last_activity: Timestamp,
    /// Members, oldest first.
    pub members: Vec<Member>,
}

/// A conversation as listed for one user: with its newest message and their unread
/// count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConversationSummary {
    /// The conversation.
    #[serde(flatten)]
    pub conversation: Conversation,
    /// Its newest message (replies included; relations are not messages), as it reads
    /// now: with the body of its latest edit, or reading "🗑 message deleted".
    pub last_message: Option<Message>,
    /// Whether that message was edited.
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(as = "Option<bool>", optional))]
    pub last_message_edited: bool,
    /// Whether that message was deleted.
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(as = "Option<bool>", optional))]
    pub last_message_deleted: bool,
    /// Messages after the user's read position.
    pub unread: u64,
}

/// A registered device and its end-to-end encryption key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Device {
    /// The device id (32 hex digits), derived from the key.
    pub id: String,
    /// Its owner.
    pub user_id: UserId,
    /// The X25519 public key, standard base64 of 32 bytes.
    pub public_key: String,
    /// The name its owner gave it ("laptop"), for their device list.
    pub name: String,
    /// When it was registered.
    pub created_at: Timestamp,
}
