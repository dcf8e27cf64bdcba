//! The wire protocol of the chat system, without IO.
//!
//! `chat-proto` defines everything two peers must agree on: typed identifiers, the
//! client and server frames, their encodings (postcard for native clients, JSON for
//! browsers, and a length-delimited framing for byte streams), every limit, the error
//! codes, the versioning rules, and the session state machines that keep a client's
//! view of each conversation ordered, complete and free of duplicates across
//! reconnects. It does no IO and needs no async runtime; the `codec` feature adds
//! tokio-util `Encoder`/`Decoder` implementations.
//!
//! `PROTOCOL.md` at the repository root is the normative specification; every item
//! here names the section it implements, and the spec's examples are tests of this
//! crate.
//!
//! # Quick start
//!
//! ```
//! use chat_proto::prelude::*;
//!
//! let frame = ClientFrame::Ping(Ping { nonce: 7 });
//!
//! // Browsers: one JSON text message per frame.
//! let json = codec::encode_json(&frame)?;
//! assert_eq!(json, r#"{"ping":{"nonce":7}}"#);
//! assert_eq!(codec::decode_json::<ClientFrame>(json.as_bytes())?, frame);
//!
//! // Native clients: postcard, with a 4-byte length prefix on byte streams.
//! let encoded = codec::encode_postcard(&frame)?;
//! assert_eq!(&encoded.payload()[..], &[6, 7]);
//! assert_eq!(codec::decode_postcard::<ClientFrame>(&encoded.payload())?, frame);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod codec;
pub mod entry;
pub mod error;
pub mod frame;
pub mod ids;
pub mod limits;
#[cfg(feature = "schema")]
pub mod schema;
pub mod session;
pub mod timeline;
#[cfg(feature = "ts")]
pub mod ts;
pub mod version;

/// The types most code needs, in one import.
pub mod prelude {
    pub use crate::body::{Body, Envelope};
    pub use crate::codec;
    pub use crate::entry::{Content, Entry, Reaction, Relation};
    pub use crate::error::{DecodeError, EncodeError, ErrorCode};
    pub use crate::frame::{
        Ack, ClientFrame, Cursor, Done, EntryPage, GoAway, GoAwayReason, Hello, History, MarkRead,
        Membership, MembershipChange, Message, Page, Ping, Pong, Presence, PresenceStatus, Receipt,
        Relate, ReplayDone, Send, ServerFrame, SetTyping, Sync, Typing, Welcome,
    };
    pub use crate::ids::{
        ClientMsgId, ConversationId, MessageId, RequestId, Seq, Timestamp, UserId,
    };
    pub use crate::limits::ServerLimits;
    pub use crate::session::{ClientConfig, ClientSession, ConnectionState, Event};
    pub use crate::version::ProtocolVersion;
}

#[cfg(test)]
mod proptests;
