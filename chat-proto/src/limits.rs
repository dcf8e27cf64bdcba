//! Every size and rate limit of the protocol, in one place (PROTOCOL.md §8 "Limits").
//!
//! Transports, codecs, the server and the clients all read their limits from here, so
//! the spec's table and the code cannot disagree (a test compares them).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest postcard-encoded client frame, in bytes (without the 4-byte length prefix).
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;
/// Largest postcard-encoded server frame, in bytes (without the length prefix).
pub const MAX_SERVER_FRAME: usize = 1024 * 1024;
/// Largest JSON client frame, in bytes of UTF-8 text. Larger than the postcard limit
/// because JSON escapes text and encodes bytes as base64.
pub const MAX_CLIENT_FRAME_JSON: usize = 256 * 1024;
/// Largest JSON server frame, in bytes of UTF-8 text.
pub const MAX_SERVER_FRAME_JSON: usize = 4 * 1024 * 1024;
/// Largest text body, in bytes of UTF-8.
pub const MAX_TEXT_BODY: usize = 16 * 1024;
/// Largest reaction emoji, in bytes of UTF-8 (one grapheme cluster).
pub const MAX_REACTION: usize = 64;
/// Most distinct emoji reacted to one message (plain conversations), and most live
/// reactions one user keeps on one message (either kind).
pub const MAX_REACTIONS: usize = 20;
/// Largest end-to-end encrypted envelope, in bytes.
pub const MAX_ENVELOPE: usize = 60 * 1024;
/// Most files in one message (since 1.4).
pub const MAX_FILES: usize = 10;
/// Longest file name in a message, in bytes of UTF-8.
pub const MAX_FILE_NAME: usize = 255;
/// Longest media type of a file in a message, in bytes.
pub const MAX_MEDIA_TYPE: usize = 127;
/// Largest image thumbnail in a message, in bytes.
pub const MAX_THUMBNAIL: usize = 4 * 1024;
/// Longest access token accepted in `hello`, in bytes.
pub const MAX_TOKEN: usize = 4096;
/// Longest client description in `hello`, in bytes.
pub const MAX_CLIENT_NAME: usize = 64;
/// Most resume cursors in one `hello`.
pub const MAX_RESUME_CURSORS: usize = 4096;
/// Most messages in one history or sync page.
pub const MAX_PAGE: u16 = 200;
/// Longest human-readable message in an `error` or `go_away` frame, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 1024;
/// Client requests a server answers concurrently per connection; more are refused with
/// `too_many_requests`.
pub const MAX_IN_FLIGHT: u32 = 256;
/// Deadline for the `hello` frame after the transport is up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a side pings when it has heard nothing from its peer.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(20);
/// How long a side waits for any frame after its ping before it drops the connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a typing indicator stays active without being refreshed.
pub const TYPING_TTL: Duration = Duration::from_secs(6);
/// Most messages the server replays per conversation right after the handshake; the
/// client pages the rest with `sync`.
pub const MAX_REPLAY: u16 = 500;
/// Largest QUIC datagram payload a peer accepts, in bytes: one postcard `typing` frame
/// (PROTOCOL.md §1.1), with room for fields a later minor version may append.
pub const MAX_DATAGRAM: usize = 64;

/// The limits a server announces in `welcome`. Clients must stay within them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct ServerLimits {
    /// Largest client frame the server accepts, postcard bytes.
    pub max_frame: u32,
    /// Largest text body, bytes of UTF-8.
    pub max_text_body: u32,
    /// Largest encrypted envelope, bytes.
    pub max_envelope: u32,
    /// Most messages per history or sync page.
    pub max_page: u16,
    /// Requests answered concurrently per connection.
    pub max_in_flight: u32,
    /// Sends allowed per user per second, sustained.
    pub send_rate: u32,
    /// Sends allowed in a burst above the sustained rate.
    pub send_burst: u32,
    /// The server pings after this many milliseconds of silence.
    pub heartbeat_ms: u32,
    /// The server drops a connection silent for this many milliseconds.
    pub idle_timeout_ms: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_frame: MAX_CLIENT_FRAME as u32,
            max_text_body: MAX_TEXT_BODY as u32,
            max_envelope: MAX_ENVELOPE as u32,
            max_page: MAX_PAGE,
            max_in_flight: MAX_IN_FLIGHT,
            send_rate: 20,
            send_burst: 100,
            heartbeat_ms: HEARTBEAT_INTERVAL.as_millis() as u32,
            idle_timeout_ms: IDLE_TIMEOUT.as_millis() as u32,
        }
    }
}
