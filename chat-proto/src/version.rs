//! Protocol versions and their negotiation (PROTOCOL.md §2 "Versioning").
//!
//! The major version is fixed by the transport's protocol name (ALPN `chat/1`,
//! WebSocket subprotocols `chat.v1.*`): peers of different majors never exchange
//! frames. The minor version is negotiated in the handshake: the client announces the
//! highest minor it speaks, the server answers with `min(client, server)`, and from then
//! on each side sends only what that minor version defines.

use serde::{Deserialize, Serialize};

/// QUIC ALPN protocol identifier for major version 1.
pub const ALPN: &[u8] = b"chat/1";
/// WebSocket subprotocol: one binary message carries one postcard frame.
pub const WS_SUBPROTOCOL_POSTCARD: &str = "chat.v1.postcard";
/// WebSocket subprotocol: one text message carries one JSON frame.
pub const WS_SUBPROTOCOL_JSON: &str = "chat.v1.json";

/// A protocol version, `major.minor`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct ProtocolVersion {
    /// Incompatible revisions; fixed by the transport protocol name.
    pub major: u16,
    /// Compatible additions within a major version.
    pub minor: u16,
}

impl ProtocolVersion {
    /// The version this crate implements.
    pub const CURRENT: ProtocolVersion = ProtocolVersion { major: 1, minor: 4 };

    /// The first version in which `typing` frames may travel as QUIC datagrams
    /// (PROTOCOL.md §1.1): a peer that negotiated an older one never gets one.
    pub const DATAGRAMS: ProtocolVersion = ProtocolVersion { major: 1, minor: 2 };

    /// The first version with relations (PROTOCOL.md §5.2): the `relate` request and
    /// the `entry` and `entries` frames. Older peers see every entry as a `message`.
    pub const RELATIONS: ProtocolVersion = ProtocolVersion { major: 1, minor: 3 };

    /// The first version with files in messages (PROTOCOL.md §5.3): the
    /// `attachments` and `sealed_attachments` bodies. Older peers get a plain-text
    /// stand-in (§2.2).
    pub const FILES: ProtocolVersion = ProtocolVersion { major: 1, minor: 4 };

    /// Whether a peer that negotiated this version reads bodies with files.
    pub fn has_files(self) -> bool {
        self >= Self::FILES
    }

    /// Whether a peer that negotiated this version reads log entries (`entry`,
    /// `entries`) rather than `message` frames.
    pub fn has_relations(self) -> bool {
        self >= Self::RELATIONS
    }

    /// The version both peers speak, given the client's announced version, or `None`
    /// when the majors differ.
    ///
    /// A client that announces a newer minor than this implementation knows is served
    /// at this implementation's minor; an older client is served at its own.
    pub fn negotiate(self, client: ProtocolVersion) -> Option<ProtocolVersion> {
        (self.major == client.major).then(|| ProtocolVersion {
            major: self.major,
            minor: self.minor.min(client.minor),
        })
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_takes_the_lower_minor_of_the_same_major() {
        let server = ProtocolVersion { major: 1, minor: 3 };
        assert!(ProtocolVersion::CURRENT.has_files());
        assert!(!server.has_files() && server.has_relations());
        let v = |major, minor| ProtocolVersion { major, minor };
        assert_eq!(server.negotiate(v(1, 0)), Some(v(1, 0)));
        assert_eq!(server.negotiate(v(1, 3)), Some(v(1, 3)));
        assert_eq!(server.negotiate(v(1, 9)), Some(v(1, 3)));
        assert_eq!(server.negotiate(v(2, 0)), None);
        assert_eq!(server.negotiate(v(0, 7)), None);
        assert_eq!(v(1, 2).to_string(), "1.2");
    }
}
