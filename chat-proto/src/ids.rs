//! Typed identifiers and timestamps (PROTOCOL.md §3 "Identifiers").
//!
//! Every numeric id is a `u64` restricted to `1..=MAX_ID` (2^53 − 1) so that it
//! survives a round trip through a JavaScript number in the JSON subprotocol. Decoders
//! reject zero and larger values with a typed error instead of silently rounding.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest value any numeric identifier or sequence number may take: 2^53 − 1, the
/// largest integer a JavaScript `number` represents exactly.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// An identifier value outside `1..=MAX_ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("identifier {0} is outside 1..=2^53-1")]
pub struct IdOutOfRange(pub u64);

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "u64", into = "u64")]
        pub struct $name(u64);

        #[cfg(feature = "ts")]
        crate::ts::alias!($name => "number");
        #[cfg(feature = "schema")]
        crate::schema::plain!($name, stringify!($name) => {
            "type": "integer", "minimum": 1, "maximum": MAX_ID
        });

        impl $name {
            /// Wraps a raw value, checking that it lies in `1..=MAX_ID`.
            pub const fn new(raw: u64) -> Result<Self, IdOutOfRange> {
                if raw == 0 || raw > MAX_ID {
                    Err(IdOutOfRange(raw))
                } else {
                    Ok(Self(raw))
                }
            }

            /// The raw numeric value.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl TryFrom<u64> for $name {
            type Error = IdOutOfRange;
            fn try_from(raw: u64) -> Result<Self, IdOutOfRange> {
                Self::new(raw)
            }
        }

        impl TryFrom<i64> for $name {
            type Error = IdOutOfRange;
            fn try_from(raw: i64) -> Result<Self, IdOutOfRange> {
                u64::try_from(raw).map_err(|_| IdOutOfRange(0)).and_then(Self::new)
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.0
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                // Cannot truncate: MAX_ID < i64::MAX.
                id.0 as i64
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, ParseIdError> {
                let raw: u64 = s.parse().map_err(|_| ParseIdError)?;
                Self::new(raw).map_err(|_| ParseIdError)
            }
        }

        #[cfg(any(test, feature = "arbitrary"))]
        impl<'a> arbitrary::Arbitrary<'a> for $name {
            fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
                Ok(Self(u.int_in_range(1..=MAX_ID)?))
            }
        }
    };
}

numeric_id!(
    /// A registered user.
    UserId
);
numeric_id!(
    /// A conversation (direct or group).
    ConversationId
);
numeric_id!(
    /// A stored message, unique across the whole deployment.
    MessageId
);

/// A string that is not a valid identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid identifier")]
pub struct ParseIdError;

/// Position of a message inside its conversation.
///
/// The server assigns `1, 2, 3, …` per conversation with no gaps; `Seq::ZERO` means
/// "nothing yet" (a cursor before the first message).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Seq(u64);

#[cfg(feature = "ts")]
crate::ts::alias!(Seq => "number");
#[cfg(feature = "schema")]
crate::schema::plain!(Seq, "Seq" => { "type": "integer", "minimum": 0, "maximum": MAX_ID });

impl Seq {
    /// The position before the first message.
    pub const ZERO: Seq = Seq(0);

    /// Wraps a raw value, checking that it is at most `MAX_ID`.
    pub const fn new(raw: u64) -> Result<Self, IdOutOfRange> {
        if raw > MAX_ID {
            Err(IdOutOfRange(raw))
        } else {
            Ok(Self(raw))
        }
    }

    /// The raw numeric value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The following position, or `None` past `MAX_ID`.
    pub const fn next(self) -> Option<Seq> {
        if self.0 >= MAX_ID {
            None
        } else {
            Some(Seq(self.0 + 1))
        }
    }
}

impl TryFrom<u64> for Seq {
    type Error = IdOutOfRange;
    fn try_from(raw: u64) -> Result<Self, IdOutOfRange> {
        Self::new(raw)
    }
}

impl TryFrom<i64> for Seq {
    type Error = IdOutOfRange;
    fn try_from(raw: i64) -> Result<Self, IdOutOfRange> {
        u64::try_from(raw)
            .map_err(|_| IdOutOfRange(0))
            .and_then(Self::new)
    }
}

impl From<Seq> for u64 {
    fn from(seq: Seq) -> u64 {
        seq.0
    }
}

impl From<Seq> for i64 {
    fn from(seq: Seq) -> i64 {
        seq.0 as i64
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(any(test, feature = "arbitrary"))]
impl<'a> arbitrary::Arbitrary<'a> for Seq {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self(u.int_in_range(0..=MAX_ID)?))
    }
}

/// Correlates a client request with the server's answer.
///
/// Chosen by the client, unique among its requests in flight on one connection. The
/// server copies it into the ack, page or error that answers the request.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[serde(transparent)]
pub struct RequestId(pub u32);

#[cfg(feature = "ts")]
crate::ts::alias!(RequestId => "number");

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Idempotency key of a send, chosen by the sending client (a random UUID).
///
/// The server stores at most one message per `(sender, client_msg_id)`: a retried send
/// with the same id is answered with the original acknowledgement. On the wire it is 16
/// raw bytes in postcard and the canonical lowercase hyphenated UUID text in JSON (what
/// `crypto.randomUUID()` returns in a browser).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct ClientMsgId([u8; 16]);

#[cfg(feature = "ts")]
crate::ts::alias!(ClientMsgId => "string");
#[cfg(feature = "schema")]
crate::schema::plain!(ClientMsgId, "ClientMsgId" => { "type": "string", "format": "uuid" });

impl ClientMsgId {
    /// Wraps 16 raw bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// Builds a version 4 (random) UUID from 16 bytes of randomness supplied by the
    /// caller; this crate does no IO and owns no random source.
    pub fn new_v4(mut random: [u8; 16]) -> Self {
        random[6] = (random[6] & 0x0f) | 0x40;
        random[8] = (random[8] & 0x3f) | 0x80;
        Self(random)
    }

    /// The 16 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for ClientMsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClientMsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientMsgId({self})")
    }
}

impl FromStr for ClientMsgId {
    type Err = ParseIdError;

    /// Parses the canonical 36-character hyphenated form (either letter case).
    fn from_str(s: &str) -> Result<Self, ParseIdError> {
        let bytes = s.as_bytes();
        if bytes.len() != 36 {
            return Err(ParseIdError);
        }
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for (i, &c) in bytes.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(ParseIdError);
                }
                continue;
            }
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(ParseIdError),
            };
            out[nibbles / 2] |= if nibbles.is_multiple_of(2) { v << 4 } else { v };
            nibbles += 1;
        }
        Ok(Self(out))
    }
}

impl Serialize for ClientMsgId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for ClientMsgId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            struct Visitor;
            impl serde::de::Visitor<'_> for Visitor {
                type Value = ClientMsgId;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a hyphenated UUID string")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ClientMsgId, E> {
                    v.parse()
                        .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
            deserializer.deserialize_str(Visitor)
        } else {
            <[u8; 16]>::deserialize(deserializer).map(Self)
        }
    }
}

/// A point in time: milliseconds since the Unix epoch, UTC. Server-assigned times are
/// authoritative; clients show them in local time.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[serde(transparent)]
pub struct Timestamp(pub i64);

#[cfg(feature = "ts")]
crate::ts::alias!(Timestamp => "number");
#[cfg(feature = "schema")]
crate::schema::plain!(Timestamp, "Timestamp" => { "type": "integer" });

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_zero_and_unsafe_integers() {
        assert_eq!(UserId::new(0), Err(IdOutOfRange(0)));
        assert_eq!(UserId::new(MAX_ID + 1), Err(IdOutOfRange(MAX_ID + 1)));
        assert_eq!(UserId::new(MAX_ID).map(UserId::get), Ok(MAX_ID));
        assert!(serde_json::from_str::<UserId>("0").is_err());
        assert!(serde_json::from_str::<UserId>("9007199254740992").is_err());
        assert_eq!(
            serde_json::from_str::<UserId>("42").ok(),
            UserId::new(42).ok()
        );
        assert!(postcard::from_bytes::<ConversationId>(&[0]).is_err());
        assert_eq!(Seq::new(0), Ok(Seq::ZERO));
        assert_eq!(Seq::new(MAX_ID).ok().and_then(Seq::next), None);
        assert!(ConversationId::try_from(-1i64).is_err());
    }

    #[test]
    fn client_msg_id_text_form() {
        let id = ClientMsgId::from_bytes([
            0x6f, 0x2c, 0x5a, 0x10, 0x8e, 0x41, 0x4c, 0x7b, 0x9d, 0x03, 0x52, 0x1e, 0xa4, 0xf0,
            0x88, 0x01,
        ]);
        let text = id.to_string();
        assert_eq!(text, "6f2c5a10-8e41-4c7b-9d03-521ea4f08801");
        assert_eq!(text.parse::<ClientMsgId>(), Ok(id));
        assert_eq!(text.to_uppercase().parse::<ClientMsgId>(), Ok(id));
        assert_eq!(
            serde_json::to_string(&id).ok().as_deref(),
            Some("\"6f2c5a10-8e41-4c7b-9d03-521ea4f08801\"")
        );
        assert_eq!(postcard::to_allocvec(&id).ok().as_deref(), Some(&id.0[..]));
        for bad in [
            "",
            "6f2c5a10-8e41-4c7b-9d03-521ea4f0880",
            "6f2c5a108e414c7b9d03521ea4f08801xxxx",
            "6f2c5a10-8e41-4c7b-9d03-521ea4f0880g",
            "6f2c5a10+8e41-4c7b-9d03-521ea4f08801",
        ] {
            assert_eq!(bad.parse::<ClientMsgId>(), Err(ParseIdError), "{bad:?}");
        }
        let v4 = ClientMsgId::new_v4([0xff; 16]);
        assert_eq!(&v4.to_string()[14..15], "4");
    }
}
