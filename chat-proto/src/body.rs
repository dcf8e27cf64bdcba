//! Message bodies (PROTOCOL.md §5 "Bodies").

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a message carries: plain text, or an end-to-end encrypted envelope that the
/// server stores and forwards without being able to read it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// UTF-8 text, non-empty, at most [`MAX_TEXT_BODY`](crate::limits::MAX_TEXT_BODY)
    /// bytes.
    Text(String),
    /// An opaque sealed envelope, at most [`MAX_ENVELOPE`](crate::limits::MAX_ENVELOPE)
    /// bytes; its format belongs to the end-to-end encryption layer.
    Encrypted(Envelope),
}

impl Body {
    /// Size of the payload in bytes (text bytes or envelope bytes).
    pub fn len(&self) -> usize {
        match self {
            Body::Text(t) => t.len(),
            Body::Encrypted(e) => e.0.len(),
        }
    }

    /// Whether the payload is empty (never valid on the wire).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text, if this is a plain text body.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Body::Text(t) => Some(t),
            Body::Encrypted(_) => None,
        }
    }
}

/// Opaque encrypted bytes: a length-prefixed byte string in postcard, standard base64
/// (with padding) in JSON.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Envelope(pub Bytes);

#[cfg(feature = "ts")]
crate::ts::alias!(Envelope => "string");
#[cfg(feature = "schema")]
crate::schema::plain!(Envelope, "Envelope" => { "type": "string", "contentEncoding": "base64" });

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Envelope({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Envelope {
    fn from(v: Vec<u8>) -> Self {
        Self(Bytes::from(v))
    }
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&BASE64.encode(&self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor {
            text: bool,
        }
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Envelope;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(if self.text {
                    "a base64 string"
                } else {
                    "a byte string"
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Envelope, E> {
                BASE64
                    .decode(v)
                    .map(Envelope::from)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str("not base64"), &self))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Envelope, E> {
                Ok(Envelope(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Envelope, E> {
                Ok(Envelope::from(v))
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(Visitor { text: true })
        } else {
            deserializer.deserialize_bytes(Visitor { text: false })
        }
    }
}

#[cfg(any(test, feature = "arbitrary"))]
impl<'a> arbitrary::Arbitrary<'a> for Envelope {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Envelope::from(Vec::<u8>::arbitrary(u)?))
    }
}
