//! Codecs: postcard (binary) and JSON (text) over the same frame types, plus the
//! length-delimited framing for byte streams (PROTOCOL.md §4 "Encodings"), and
//! WebSocket message assembly ([`ws`]).
//!
//! Every decoder checks the input size against the direction's limit before it
//! allocates, classifies every failure as a [`DecodeError`], and never panics.

mod stream;
pub mod ws;

pub use stream::StreamDecoder;
#[cfg(feature = "codec")]
pub use stream::{CodecError, PostcardCodec};

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::IgnoredAny;

use crate::error::{DecodeError, EncodeError, UnknownKind};
use crate::frame::Frame;

/// Length of the big-endian length prefix of a stream frame.
pub const PREFIX_LEN: usize = 4;

/// A frame encoded once in postcard, shareable by every recipient without copying.
///
/// The buffer holds the 4-byte length prefix followed by the postcard bytes, so the
/// same allocation serves byte streams ([`EncodedFrame::length_delimited`]) and
/// message transports such as WebSocket ([`EncodedFrame::payload`]); both are cheap
/// reference-counted views.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedFrame(Bytes);

impl EncodedFrame {
    /// Prefix and payload, ready for a byte stream.
    pub fn length_delimited(&self) -> Bytes {
        self.0.clone()
    }

    /// The postcard payload alone, for one WebSocket binary message.
    pub fn payload(&self) -> Bytes {
        self.0.slice(PREFIX_LEN..)
    }

    /// Size of the payload in bytes.
    pub fn payload_len(&self) -> usize {
        self.0.len() - PREFIX_LEN
    }
}

/// Encodes a frame in postcard, with its length prefix in front, checking the
/// receiver's size limit.
pub fn encode_postcard<F: Frame>(frame: &F) -> Result<EncodedFrame, EncodeError> {
    let buf = postcard::to_extend(frame, vec![0u8; PREFIX_LEN])
        .map_err(|e| EncodeError::Serialize(e.to_string()))?;
    let len = buf.len() - PREFIX_LEN;
    if len > F::MAX_POSTCARD {
        return Err(EncodeError::TooLarge {
            len,
            max: F::MAX_POSTCARD,
        });
    }
    let mut buf = buf;
    // `len` fits: it is at most MAX_POSTCARD, far below u32::MAX.
    buf[..PREFIX_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(EncodedFrame(Bytes::from(buf)))
}

/// Decodes a QUIC datagram (PROTOCOL.md §1.1): one postcard frame without a length
/// prefix, at most [`MAX_DATAGRAM`](crate::limits::MAX_DATAGRAM) bytes. Which kinds
/// may travel this way is the receiver's check (`datagram_allowed` on the frame).
pub fn decode_datagram<F: Frame>(bytes: &[u8]) -> Result<F, DecodeError> {
    if bytes.len() > crate::limits::MAX_DATAGRAM {
        return Err(DecodeError::TooLarge {
            len: bytes.len() as u64,
            max: crate::limits::MAX_DATAGRAM,
        });
    }
    decode_postcard(bytes)
}

/// Decodes one postcard frame (no length prefix), as carried by one WebSocket binary
/// message or one stream frame.
///
/// Bytes after the last field the receiver knows are ignored: that is how a newer minor
/// version appends fields (PROTOCOL.md §2).
pub fn decode_postcard<F: Frame>(bytes: &[u8]) -> Result<F, DecodeError> {
    if bytes.len() > F::MAX_POSTCARD {
        return Err(DecodeError::TooLarge {
            len: bytes.len() as u64,
            max: F::MAX_POSTCARD,
        });
    }
    match read_varint_u32(bytes) {
        None if bytes.len() < 5 => return Err(DecodeError::Truncated),
        None => return Err(DecodeError::Malformed("invalid frame kind varint".into())),
        Some(kind) if kind as usize >= F::KINDS.len() => {
            return Err(DecodeError::UnknownKind(UnknownKind::Index(kind)));
        }
        Some(_) => {}
    }
    postcard::from_bytes(bytes).map_err(|e| match e {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
        postcard::Error::DeserializeBadUtf8 => {
            DecodeError::Malformed("string is not valid UTF-8".into())
        }
        other => DecodeError::Malformed(other.to_string()),
    })
}

/// Reads a postcard (LEB128) varint of at most 32 bits; `None` if the input ends
/// first or the value does not fit.
fn read_varint_u32(bytes: &[u8]) -> Option<u32> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().take(5).enumerate() {
        let part = u32::from(b & 0x7f);
        if i == 4 && (b & 0xf0) != 0 {
            return None;
        }
        value |= part << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Encodes a frame as JSON text, checking the receiver's size limit.
pub fn encode_json<F: Frame>(frame: &F) -> Result<String, EncodeError> {
    let text = serde_json::to_string(frame).map_err(|e| EncodeError::Serialize(e.to_string()))?;
    if text.len() > F::MAX_JSON {
        return Err(EncodeError::TooLarge {
            len: text.len(),
            max: F::MAX_JSON,
        });
    }
    Ok(text)
}

/// Decodes one JSON frame from the bytes of a WebSocket text message.
///
/// Unknown object members are ignored (a newer minor version may add them); an object
/// whose single key names an unknown frame kind gives [`DecodeError::UnknownKind`].
pub fn decode_json<F: Frame>(bytes: &[u8]) -> Result<F, DecodeError> {
    if bytes.len() > F::MAX_JSON {
        return Err(DecodeError::TooLarge {
            len: bytes.len() as u64,
            max: F::MAX_JSON,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    decode_json_str(text)
}

/// Decodes one JSON frame from text.
pub fn decode_json_str<F: Frame>(text: &str) -> Result<F, DecodeError> {
    if text.len() > F::MAX_JSON {
        return Err(DecodeError::TooLarge {
            len: text.len() as u64,
            max: F::MAX_JSON,
        });
    }
    serde_json::from_str(text).map_err(|e| {
        if e.is_eof() {
            return DecodeError::Truncated;
        }
        // Classify: a well-formed object with one unknown key is an unknown kind.
        if let Ok(map) = serde_json::from_str::<BTreeMap<String, IgnoredAny>>(text)
            && map.len() == 1
            && let Some(key) = map.keys().next()
            && !F::KINDS.contains(&key.as_str())
        {
            let mut name = key.clone();
            crate::frame::truncate_utf8(&mut name, 64);
            return DecodeError::UnknownKind(UnknownKind::Name(name));
        }
        DecodeError::Malformed(e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_reader_matches_postcard() {
        for v in [0u32, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let bytes = postcard::to_allocvec(&v).unwrap_or_default();
            assert_eq!(read_varint_u32(&bytes), Some(v));
        }
        assert_eq!(read_varint_u32(&[]), None);
        assert_eq!(read_varint_u32(&[0x80]), None);
        assert_eq!(read_varint_u32(&[0xff, 0xff, 0xff, 0xff, 0x1f]), None);
    }
}
