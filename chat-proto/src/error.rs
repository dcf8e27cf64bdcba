//! Error codes on the wire and the codecs' typed errors (PROTOCOL.md §7 "Errors").

use crate::version::ProtocolVersion;
use serde::{Deserialize, Serialize};

/// Stable error codes carried by `error` frames.
///
/// On the wire a code is its snake_case name in JSON and its index in this list in
/// postcard; both are stable within major version 1. New codes are only ever appended,
/// and only sent to peers that negotiated a minor version defining them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame could not be decoded.
    BadFrame,
    /// The frame's kind is unknown to the receiver.
    UnsupportedFrame,
    /// The client's major protocol version is not served here.
    UnsupportedVersion,
    /// The frame exceeds the size limit.
    FrameTooLarge,
    /// A frame other than `hello` arrived before the handshake completed.
    HandshakeRequired,
    /// No `hello` arrived within the handshake deadline.
    HandshakeTimeout,
    /// A frame arrived that the session state does not allow (a second `hello`).
    ProtocolViolation,
    /// The access token is missing, malformed, expired, revoked or forged.
    InvalidToken,
    /// The conversation does not exist or the user is not a member (deliberately the
    /// same answer, so ids do not leak).
    NotFound,
    /// A field is out of range (an empty body, a page limit of zero, …).
    InvalidRequest,
    /// The body exceeds its size limit.
    BodyTooLarge,
    /// The conversation is end-to-end encrypted and the body was plain text.
    EncryptionRequired,
    /// The user sends faster than allowed; `retry_after_ms` says when to try again.
    RateLimited,
    /// More requests are in flight on this connection than `max_in_flight`.
    TooManyRequests,
    /// The client message id was already used for a different message.
    IdempotencyConflict,
    /// The connection fell too far behind reading its frames and is being closed; the
    /// client resumes on a new connection.
    SlowConsumer,
    /// The connection was silent past the idle timeout.
    IdleTimeout,
    /// The server cannot serve the request now (storage unreachable, draining).
    Unavailable,
    /// An unexpected server failure; the request may be retried.
    Internal,
    /// An end-to-end encrypted body was not sealed for exactly the devices of the
    /// conversation's members (one was added or removed): fetch the device list again,
    /// seal again and resend with the same client message id. Since version 1.1.
    DevicesChanged,
    /// The caller may not do this to that entry: edit another's message, delete
    /// another's message outside a group they own. Since version 1.3.
    Forbidden,
    /// The target entry was deleted: it can no longer be edited or reacted to. Since
    /// version 1.3.
    Deleted,
    /// A message has as many distinct reactions as allowed, or the caller as many on
    /// it as allowed. Since version 1.3.
    ReactionLimit,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::BadFrame,
        ErrorCode::UnsupportedFrame,
        ErrorCode::UnsupportedVersion,
        ErrorCode::FrameTooLarge,
        ErrorCode::HandshakeRequired,
        ErrorCode::HandshakeTimeout,
        ErrorCode::ProtocolViolation,
        ErrorCode::InvalidToken,
        ErrorCode::NotFound,
        ErrorCode::InvalidRequest,
        ErrorCode::BodyTooLarge,
        ErrorCode::EncryptionRequired,
        ErrorCode::RateLimited,
        ErrorCode::TooManyRequests,
        ErrorCode::IdempotencyConflict,
        ErrorCode::SlowConsumer,
        ErrorCode::IdleTimeout,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::DevicesChanged,
        ErrorCode::Forbidden,
        ErrorCode::Deleted,
        ErrorCode::ReactionLimit,
    ];

    /// The snake_case name used in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::HandshakeRequired => "handshake_required",
            ErrorCode::HandshakeTimeout => "handshake_timeout",
            ErrorCode::ProtocolViolation => "protocol_violation",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::EncryptionRequired => "encryption_required",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::IdempotencyConflict => "idempotency_conflict",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::DevicesChanged => "devices_changed",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Deleted => "deleted",
            ErrorCode::ReactionLimit => "reaction_limit",
        }
    }

    /// The first protocol version that defines this code.
    pub const fn since(self) -> ProtocolVersion {
        match self {
            ErrorCode::DevicesChanged => ProtocolVersion { major: 1, minor: 1 },
            ErrorCode::Forbidden | ErrorCode::Deleted | ErrorCode::ReactionLimit => {
                ProtocolVersion::RELATIONS
            }
            _ => ProtocolVersion { major: 1, minor: 0 },
        }
    }

    /// The code to send a peer that negotiated `version`: this one if that version
    /// defines it, else the nearest older code (`invalid_request` for refusals added
    /// later), so peers never receive a value they cannot decode (§2).
    pub fn for_version(self, version: ProtocolVersion) -> ErrorCode {
        if version.minor >= self.since().minor {
            self
        } else {
            ErrorCode::InvalidRequest
        }
    }

    /// Whether the server closes the connection after sending this code.
    ///
    /// Every error sent before the handshake completes is fatal as well.
    pub const fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::UnsupportedVersion
                | ErrorCode::FrameTooLarge
                | ErrorCode::HandshakeRequired
                | ErrorCode::HandshakeTimeout
                | ErrorCode::ProtocolViolation
                | ErrorCode::InvalidToken
                | ErrorCode::SlowConsumer
                | ErrorCode::IdleTimeout
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A frame kind the receiver does not know.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum UnknownKind {
    /// A postcard variant index past the known ones.
    Index(u32),
    /// A JSON key that names no known frame kind (truncated to 64 bytes).
    Name(String),
}

impl std::fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnknownKind::Index(i) => write!(f, "#{i}"),
            UnknownKind::Name(n) => write!(f, "{n:?}"),
        }
    }
}

/// Why bytes did not decode into a frame. Every decoder in this crate returns this and
/// never panics.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame (or its announced length) exceeds the limit; checked before allocating.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced or actual size.
        len: u64,
        /// The limit that applies.
        max: usize,
    },
    /// The input ended inside a frame.
    #[error("frame is truncated")]
    Truncated,
    /// A well-delimited frame of a kind this implementation does not know. The stream is
    /// still in sync: the receiver may answer `unsupported_frame` and go on.
    #[error("unknown frame kind {0}")]
    UnknownKind(UnknownKind),
    /// A JSON frame that is not valid UTF-8.
    #[error("frame is not valid UTF-8")]
    InvalidUtf8,
    /// The bytes are not a valid frame (bad tag, field out of range, wrong type, …).
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl DecodeError {
    /// The error code a server answers this decode failure with.
    pub const fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::UnknownKind(_) => ErrorCode::UnsupportedFrame,
            DecodeError::Truncated | DecodeError::InvalidUtf8 | DecodeError::Malformed(_) => {
                ErrorCode::BadFrame
            }
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded frame would exceed the receiver's limit, so it is not sent.
    #[error("encoded frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// The limit that applies.
        max: usize,
    },
    /// The serializer failed (cannot happen for frames built from this crate's types).
    #[error("serialization failed: {0}")]
    Serialize(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_newer_than_the_peer_fall_back_to_invalid_request() {
        let v1_0 = ProtocolVersion { major: 1, minor: 0 };
        let v1_1 = ProtocolVersion { major: 1, minor: 1 };
        assert_eq!(
            ErrorCode::DevicesChanged.for_version(v1_0),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            ErrorCode::DevicesChanged.for_version(v1_1),
            ErrorCode::DevicesChanged
        );
        for code in ErrorCode::ALL {
            assert_eq!(code.for_version(ProtocolVersion::CURRENT), code);
            if code.since() == v1_0 {
                assert_eq!(code.for_version(v1_0), code);
            }
        }
        assert!(!ErrorCode::DevicesChanged.is_fatal());
    }
}
