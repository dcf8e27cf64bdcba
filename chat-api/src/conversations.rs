//! Conversations: create direct or group, list, details, members, history.

use chat_proto::entry::Entry;
use chat_proto::frame::Message;
use chat_proto::ids::UserId;
use serde::{Deserialize, Serialize};

use crate::model::{Conversation, ConversationSummary, Device};

crate::endpoints! {
    /// `GET /api/conversations`: the caller's conversations, most recent activity
    /// first.
    ListConversations: GET "/api/conversations", () => ConversationList;
    /// `POST /api/conversations`: a direct conversation with one other user (the same
    /// pair always gets the same one: 201 when created, 200 after) or a group owned by
    /// the caller (201).
    CreateConversation: POST "/api/conversations", CreateConversationRequest => Conversation;
    /// `GET /api/conversations/{id}`: one conversation of the caller's.
    GetConversation: GET "/api/conversations/{id}", () => Conversation;
    /// `POST /api/conversations/{id}/members`: the owner adds a member to a group.
    AddMember: POST "/api/conversations/{id}/members", AddMemberRequest => Conversation;
    /// `DELETE /api/conversations/{id}/members/{user_id}`: the owner removes a member
    /// (204).
    RemoveMember: DELETE "/api/conversations/{id}/members/{user_id}", () => ();
    /// `POST /api/conversations/{id}/leave`: the caller leaves a group (204).
    Leave: POST "/api/conversations/{id}/leave", () => ();
    /// `GET /api/conversations/{id}/messages?before=SEQ&limit=N`: history, newest
    /// first, every entry as a message (the protocol 1.2 view, PROTOCOL.md §2.1).
    History: GET "/api/conversations/{id}/messages", () => MessagePage;
    /// `GET /api/conversations/{id}/entries?before=SEQ&limit=N`: the log, newest
    /// first: messages and relations (PROTOCOL.md §5.2).
    Entries: GET "/api/conversations/{id}/entries", () => EntryList;
    /// `GET /api/conversations/{id}/devices`: every member's devices, to seal for.
    ConversationDevices: GET "/api/conversations/{id}/devices", () => Vec<Device>;
}

/// The body of [`CreateConversation`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CreateConversationRequest {
    /// With one other user (or oneself alone, for notes).
    Direct {
        /// The other user (the caller may be listed too).
        members: Vec<UserId>,
        /// Whether bodies must be end-to-end encrypted.
        #[serde(default)]
        #[cfg_attr(feature = "ts", ts(as = "Option<bool>", optional))]
        encrypted: bool,
    },
    /// A group owned by the caller.
    Group {
        /// 1–64 characters.
        title: String,
        /// The first members besides the caller.
        #[serde(default)]
        #[cfg_attr(feature = "ts", ts(as = "Option<Vec<UserId>>", optional))]
        members: Vec<UserId>,
        /// Whether bodies must be end-to-end encrypted.
        #[serde(default)]
        #[cfg_attr(feature = "ts", ts(as = "Option<bool>", optional))]
        encrypted: bool,
    },
}

/// The body of [`AddMember`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AddMemberRequest {
    /// Who joins.
    pub user_id: UserId,
}

/// The answer to [`ListConversations`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConversationList {
    /// Most recent activity first.
    pub conversations: Vec<ConversationSummary>,
}

/// A page of log entries: the answer to [`Entries`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EntryList {
    /// Newest first.
    pub entries: Vec<Entry>,
    /// Whether older entries exist.
    pub has_more: bool,
}

/// A page of messages: the answer to [`History`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MessagePage {
    /// Newest first.
    pub messages: Vec<Message>,
    /// Whether older messages exist.
    pub has_more: bool,
}
