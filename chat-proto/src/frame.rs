//! Every frame of the protocol (PROTOCOL.md §6 "Frames").
//!
//! A frame is one variant of [`ClientFrame`] (client to server) or [`ServerFrame`]
//! (server to client). The same serde types are encoded by every codec: in postcard a
//! frame is the variant index (varint) followed by its fields in declaration order; in
//! JSON it is an object with exactly one key, the frame kind, whose value holds the
//! fields by name: `{"ping":{"nonce":7}}`.

use serde::{Deserialize, Serialize};

use crate::body::Body;
use crate::entry::{Entry, Relation};
use crate::error::ErrorCode;
use crate::ids::{ClientMsgId, ConversationId, MessageId, RequestId, Seq, Timestamp, UserId};
use crate::limits::ServerLimits;
use crate::version::ProtocolVersion;

#[cfg(any(test, feature = "arbitrary"))]
use arbitrary::Arbitrary;

/// Conversation position: "the last message I have seen here is `seq`" (in `hello`), or
/// "the newest message here is `seq`" (in `welcome`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct Cursor {
    /// The conversation.
    pub conversation: ConversationId,
    /// A position in it.
    pub seq: Seq,
}

/// A stored message as delivered to clients (§6.2.3).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct Message {
    /// The conversation it belongs to.
    pub conversation: ConversationId,
    /// Its position in the conversation, assigned by the server.
    pub seq: Seq,
    /// Its deployment-wide id.
    pub id: MessageId,
    /// Who sent it.
    pub sender: UserId,
    /// The sender's idempotency key.
    pub client_msg_id: ClientMsgId,
    /// When the server committed it.
    pub sent_at: Timestamp,
    /// Its content.
    pub body: Body,
}

// ---------------------------------------------------------------------------------------
// Client to server
// ---------------------------------------------------------------------------------------

/// The first frame on every connection: authenticates and asks for the missed messages
/// (§6.1.1).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct Hello {
    /// The highest protocol version the client speaks.
    pub version: ProtocolVersion,
    /// An access token from the HTTP API.
    pub token: String,
    /// A short description of the client software, for logs (may be empty).
    pub client: String,
    /// The last seq the client has seen, per conversation it tracks.
    pub resume: Vec<Cursor>,
}

/// Send a message (§6.1.2).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
#[cfg_attr(feature = "ts", ts(rename = "SendRequest"))]
pub struct Send {
    /// Request id for the `ack`.
    pub request_id: RequestId,
    /// Target conversation.
    pub conversation: ConversationId,
    /// Idempotency key: resending the same key returns the original `ack`.
    pub client_msg_id: ClientMsgId,
    /// The content.
    pub body: Body,
}

/// Ask for older messages, newest first (§6.1.3).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
#[cfg_attr(feature = "ts", ts(rename = "HistoryRequest"))]
pub struct History {
    /// Request id for the `history_page`.
    pub request_id: RequestId,
    /// The conversation.
    pub conversation: ConversationId,
    /// Only messages with a smaller seq; `None` starts at the newest.
    pub before: Option<Seq>,
    /// At most this many messages, `1..=max_page`.
    pub limit: u16,
}

/// Ask for the messages after a position, oldest first, to fill a gap (§6.1.4).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
#[cfg_attr(feature = "ts", ts(rename = "SyncRequest"))]
pub struct Sync {
    /// Request id for the `sync_page`.
    pub request_id: RequestId,
    /// The conversation.
    pub conversation: ConversationId,
    /// Only messages with a greater seq.
    pub after: Seq,
    /// At most this many messages, `1..=max_page`.
    pub limit: u16,
}

/// Start or stop a typing indicator (§6.1.5). Never stored, never answered.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct SetTyping {
    /// The conversation.
    pub conversation: ConversationId,
    /// `true` while composing; expires after `TYPING_TTL` unless refreshed.
    pub active: bool,
}

/// Record that the user has read up to a position (§6.1.6).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct MarkRead {
    /// Request id for the `done`.
    pub request_id: RequestId,
    /// The conversation.
    pub conversation: ConversationId,
    /// Last read position; a position lower than the stored one is ignored.
    pub seq: Seq,
}

/// Liveness probe; the peer answers `pong` with the same nonce (§6.3).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct Ping {
    /// Echoed in the `pong`.
    pub nonce: u32,
}

/// Answer to a `ping` (§6.3).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct Pong {
    /// The nonce of the `ping` answered.
    pub nonce: u32,
}

/// Add a relation to a conversation's log: a reply, an edit, a deletion or a reaction
/// (§6.1.7, since 1.3). Answered like `send`: `ack` after the commit, or `error`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
#[cfg_attr(feature = "ts", ts(rename = "RelateRequest"))]
pub struct Relate {
    /// Request id for the `ack`.
    pub request_id: RequestId,
    /// The conversation.
    pub conversation: ConversationId,
    /// Idempotency key, shared with sends: one key, one entry.
    pub client_msg_id: ClientMsgId,
    /// What to add.
    pub relation: Relation,
}

/// A frame sent by a client.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum ClientFrame {
    /// §6.1.1 — index 0.
    Hello(Hello),
    /// §6.1.2 — index 1.
    Send(Send),
    /// §6.1.3 — index 2.
    History(History),
    /// §6.1.4 — index 3.
    Sync(Sync),
    /// §6.1.5 — index 4.
    Typing(SetTyping),
    /// §6.1.6 — index 5.
    MarkRead(MarkRead),
    /// §6.3 — index 6.
    Ping(Ping),
    /// §6.3 — index 7.
    Pong(Pong),
    /// §6.1.7 — index 8, since 1.3.
    Relate(Relate),
}

impl ClientFrame {
    /// Frame kind names in wire order (the postcard index is the position).
    pub const KINDS: &'static [&'static str] = &[
        "hello",
        "send",
        "history",
        "sync",
        "typing",
        "mark_read",
        "ping",
        "pong",
        "relate",
    ];

    /// This frame's kind name, as used in JSON.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[match self {
            ClientFrame::Hello(_) => 0,
            ClientFrame::Send(_) => 1,
            ClientFrame::History(_) => 2,
            ClientFrame::Sync(_) => 3,
            ClientFrame::Typing(_) => 4,
            ClientFrame::MarkRead(_) => 5,
            ClientFrame::Ping(_) => 6,
            ClientFrame::Pong(_) => 7,
            ClientFrame::Relate(_) => 8,
        }]
    }

    /// The first protocol version that defines this frame kind.
    pub fn since(&self) -> ProtocolVersion {
        match self {
            ClientFrame::Relate(_) => ProtocolVersion::RELATIONS,
            _ => ProtocolVersion { major: 1, minor: 0 },
        }
    }

    /// Whether this frame may travel as a QUIC datagram (PROTOCOL.md §1.1): only
    /// `typing`, which is ephemeral and may be lost.
    pub fn datagram_allowed(&self) -> bool {
        matches!(self, ClientFrame::Typing(_))
    }

    /// The request id, for frames the server answers.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            ClientFrame::Send(f) => Some(f.request_id),
            ClientFrame::History(f) => Some(f.request_id),
            ClientFrame::Sync(f) => Some(f.request_id),
            ClientFrame::MarkRead(f) => Some(f.request_id),
            ClientFrame::Relate(f) => Some(f.request_id),
            ClientFrame::Hello(_)
            | ClientFrame::Typing(_)
            | ClientFrame::Ping(_)
            | ClientFrame::Pong(_) => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server to client
// ---------------------------------------------------------------------------------------

/// The handshake succeeded (§6.2.1).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct Welcome {
    /// The negotiated version; both sides speak exactly this from now on.
    pub version: ProtocolVersion,
    /// The authenticated user.
    pub user: UserId,
    /// The server's clock, for display-time skew correction.
    pub server_time: Timestamp,
    /// The limits the client must respect.
    pub limits: ServerLimits,
    /// The newest seq of every conversation the user belongs to.
    pub heads: Vec<Cursor>,
}

/// A send was committed (§6.2.2). Sent only after the message is durable.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct Ack {
    /// The `send` answered.
    pub request_id: RequestId,
    /// The conversation.
    pub conversation: ConversationId,
    /// The stored message's id.
    pub id: MessageId,
    /// Its position in the conversation.
    pub seq: Seq,
    /// When it was committed.
    pub sent_at: Timestamp,
}

/// A page of messages answering `history` (newest first) or `sync` (oldest first)
/// (§6.2.4, §6.2.5).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct Page {
    /// The request answered.
    pub request_id: RequestId,
    /// The conversation.
    pub conversation: ConversationId,
    /// The messages, in the order the request defines.
    pub messages: Vec<Message>,
    /// Whether more messages lie beyond this page in the requested direction.
    pub has_more: bool,
}

/// A page of log entries answering `history` (newest first) or `sync` (oldest first)
/// for a peer of version 1.3 or later (§6.2.15).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct EntryPage {
    /// The request answered.
    pub request_id: RequestId,
    /// The conversation.
    pub conversation: ConversationId,
    /// The entries, in the order the request defines.
    pub entries: Vec<Entry>,
    /// Whether more entries lie beyond this page in the requested direction.
    pub has_more: bool,
}

/// The handshake replay is complete; what follows is live (§6.2.6).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct ReplayDone {
    /// Conversations whose gap was larger than the replay limit; the client fills them
    /// with `sync`.
    pub truncated: Vec<ConversationId>,
}

/// Someone started or stopped typing (§6.2.7).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct Typing {
    /// The conversation.
    pub conversation: ConversationId,
    /// Who is typing.
    pub user: UserId,
    /// Whether they are typing now.
    pub active: bool,
}

/// Online state of a user.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// At least one of the user's devices is connected.
    Online,
    /// None is.
    Offline,
}

/// A user who shares a conversation with the receiver came online or went offline
/// (§6.2.8).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct Presence {
    /// The user.
    pub user: UserId,
    /// Their state.
    pub status: PresenceStatus,
    /// When they were last connected (absent while online or if never seen).
    pub last_seen: Option<Timestamp>,
}

/// A member's read position advanced (§6.2.9).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct Receipt {
    /// The conversation.
    pub conversation: ConversationId,
    /// The reader.
    pub user: UserId,
    /// Their last read position.
    pub seq: Seq,
}

/// How a conversation's membership changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum MembershipChange {
    /// The user joined or was added.
    Added,
    /// The user left or was removed.
    Removed,
}

/// A conversation's membership changed (§6.2.10). Sent to every member, including the
/// affected user, so clients learn about new conversations live.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct Membership {
    /// The conversation.
    pub conversation: ConversationId,
    /// The member added or removed.
    pub user: UserId,
    /// What happened.
    pub change: MembershipChange,
    /// Who did it (the member themself when leaving).
    pub by: UserId,
}

/// A request without a payload answer succeeded (§6.2.11).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct Done {
    /// The request answered.
    pub request_id: RequestId,
}

/// A request failed, or the connection is being closed (§6.2.12, §7).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
#[cfg_attr(feature = "ts", ts(rename = "ErrorFrame"))]
pub struct Error {
    /// The request this answers, if the error concerns one.
    pub request_id: Option<RequestId>,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation (English, for logs; never parse it).
    pub message: String,
    /// When to retry, for `rate_limited` and `unavailable`.
    pub retry_after_ms: Option<u32>,
}

/// Why the server asks clients to go away.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum GoAwayReason {
    /// The node is shutting down; reconnect (to another node, or to this one later).
    Shutdown,
    /// The node is overloaded; reconnect elsewhere or after the delay.
    Overloaded,
}

/// The server is about to close this connection; the client should reconnect after
/// the given delay and resume (§6.2.13).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
pub struct GoAway {
    /// Why.
    pub reason: GoAwayReason,
    /// Suggested delay before reconnecting; clients add jitter.
    pub reconnect_after_ms: u32,
    /// Human-readable explanation.
    pub message: String,
}

/// A frame sent by the server.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum ServerFrame {
    /// §6.2.1 — index 0.
    Welcome(Welcome),
    /// §6.2.2 — index 1.
    Ack(Ack),
    /// §6.2.3 — index 2.
    Message(Message),
    /// §6.2.4 — index 3.
    HistoryPage(Page),
    /// §6.2.5 — index 4.
    SyncPage(Page),
    /// §6.2.6 — index 5.
    ReplayDone(ReplayDone),
    /// §6.2.7 — index 6.
    Typing(Typing),
    /// §6.2.8 — index 7.
    Presence(Presence),
    /// §6.2.9 — index 8.
    Receipt(Receipt),
    /// §6.2.10 — index 9.
    Membership(Membership),
    /// §6.2.11 — index 10.
    Done(Done),
    /// §6.2.12 — index 11.
    Error(Error),
    /// §6.3 — index 12.
    Ping(Ping),
    /// §6.3 — index 13.
    Pong(Pong),
    /// §6.2.13 — index 14.
    GoAway(GoAway),
    /// §6.2.14 — index 15, since 1.3: an entry of a conversation's log, live or
    /// replayed (a 1.2 peer gets `message` instead).
    Entry(Entry),
    /// §6.2.15 — index 16, since 1.3: answers `history` and `sync` (a 1.2 peer gets
    /// `history_page` and `sync_page`).
    Entries(EntryPage),
}

impl ServerFrame {
    /// Frame kind names in wire order (the postcard index is the position).
    pub const KINDS: &'static [&'static str] = &[
        "welcome",
        "ack",
        "message",
        "history_page",
        "sync_page",
        "replay_done",
        "typing",
        "presence",
        "receipt",
        "membership",
        "done",
        "error",
        "ping",
        "pong",
        "go_away",
        "entry",
        "entries",
    ];

    /// This frame's kind name, as used in JSON.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[match self {
            ServerFrame::Welcome(_) => 0,
            ServerFrame::Ack(_) => 1,
            ServerFrame::Message(_) => 2,
            ServerFrame::HistoryPage(_) => 3,
            ServerFrame::SyncPage(_) => 4,
            ServerFrame::ReplayDone(_) => 5,
            ServerFrame::Typing(_) => 6,
            ServerFrame::Presence(_) => 7,
            ServerFrame::Receipt(_) => 8,
            ServerFrame::Membership(_) => 9,
            ServerFrame::Done(_) => 10,
            ServerFrame::Error(_) => 11,
            ServerFrame::Ping(_) => 12,
            ServerFrame::Pong(_) => 13,
            ServerFrame::GoAway(_) => 14,
            ServerFrame::Entry(_) => 15,
            ServerFrame::Entries(_) => 16,
        }]
    }

    /// Whether this frame may travel as a QUIC datagram (PROTOCOL.md §1.1): only
    /// `typing`, which is ephemeral and may be lost.
    pub fn datagram_allowed(&self) -> bool {
        matches!(self, ServerFrame::Typing(_))
    }

    /// Builds an `error` frame, truncating the message to the protocol limit.
    pub fn error(
        request_id: Option<RequestId>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        let mut message = message.into();
        truncate_utf8(&mut message, crate::limits::MAX_ERROR_MESSAGE);
        ServerFrame::Error(Error {
            request_id,
            code,
            message,
            retry_after_ms: None,
        })
    }
}

/// Shortens `s` to at most `max` bytes without splitting a character.
pub(crate) fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// The two frame families, so codecs can be generic over the direction.
pub trait Frame: Serialize + for<'de> Deserialize<'de> + sealed::Sealed {
    /// Kind names in wire order.
    const KINDS: &'static [&'static str];
    /// Largest postcard encoding a receiver accepts.
    const MAX_POSTCARD: usize;
    /// Largest JSON encoding a receiver accepts.
    const MAX_JSON: usize;
}

impl Frame for ClientFrame {
    const KINDS: &'static [&'static str] = ClientFrame::KINDS;
    const MAX_POSTCARD: usize = crate::limits::MAX_CLIENT_FRAME;
    const MAX_JSON: usize = crate::limits::MAX_CLIENT_FRAME_JSON;
}

impl Frame for ServerFrame {
    const KINDS: &'static [&'static str] = ServerFrame::KINDS;
    const MAX_POSTCARD: usize = crate::limits::MAX_SERVER_FRAME;
    const MAX_JSON: usize = crate::limits::MAX_SERVER_FRAME_JSON;
}

mod sealed {
    #[allow(unreachable_pub)]
    pub trait Sealed {}
    impl Sealed for super::ClientFrame {}
    impl Sealed for super::ServerFrame {}
}
