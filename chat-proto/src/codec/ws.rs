//! WebSocket messages from frames (§1.2), for either end of a connection.
//!
//! A WebSocket library hands over frames; the protocol needs whole messages of the
//! connection's one data type (binary for `chat.v1.postcard`, text for
//! `chat.v1.json`), with the size limit applied to the assembled message and text
//! checked as UTF-8. [`Assembler`] does that without IO: feed it each frame's opcode,
//! `fin` bit and payload, and it answers with a message, a control frame, or a typed
//! error. The server and the SDK use the same one.

use bytes::{Bytes, BytesMut};

/// A WebSocket frame's opcode (RFC 6455 §5.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Opcode {
    /// More of a fragmented message.
    Continuation,
    /// A text message (or its first fragment).
    Text,
    /// A binary message (or its first fragment).
    Binary,
    /// The peer closes the connection.
    Close,
    /// A ping to answer with a pong carrying the same payload.
    Ping,
    /// A pong.
    Pong,
}

impl Opcode {
    /// The opcode with this number on the wire; `None` for the reserved ones.
    pub fn from_wire(code: u8) -> Option<Self> {
        Some(match code {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }
}

/// What a frame completed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Assembled {
    /// A whole data message: one protocol frame.
    Message(Bytes),
    /// A ping; the answer is a pong with this payload.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// The peer's close frame, with its status code and reason if it gave them.
    Close {
        /// The close status code.
        code: Option<u16>,
        /// The reason, as text (invalid UTF-8 replaced).
        reason: String,
    },
}

/// Why a frame was refused. Each is fatal to the connection.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AssemblyError {
    /// The assembled message would exceed the limit (close 1009).
    #[error("message larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// A text message that is not UTF-8 (close 1007).
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// A frame out of place: the wrong data type for the connection, a new message
    /// inside a fragmented one, or a continuation of nothing (close 1002).
    #[error("{0}")]
    Protocol(&'static str),
}

/// Assembles one connection's messages (see the module docs).
#[derive(Debug)]
pub struct Assembler {
    data: Opcode,
    max: usize,
    partial: Option<BytesMut>,
}

impl Assembler {
    /// For a connection whose messages are text (`chat.v1.json`) or binary
    /// (`chat.v1.postcard`), each at most `max` bytes once assembled.
    pub fn new(text: bool, max: usize) -> Self {
        Self {
            data: if text { Opcode::Text } else { Opcode::Binary },
            max,
            partial: None,
        }
    }

    /// The size limit of an assembled message.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes one frame. `Ok(None)` while a fragmented message is incomplete.
    pub fn add(
        &mut self,
        opcode: Opcode,
        fin: bool,
        payload: &[u8],
    ) -> Result<Option<Assembled>, AssemblyError> {
        match opcode {
            Opcode::Ping => Ok(Some(Assembled::Ping(Bytes::copy_from_slice(payload)))),
            Opcode::Pong => Ok(Some(Assembled::Pong)),
            Opcode::Close => Ok(Some(Assembled::Close {
                code: (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
                reason: String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned(),
            })),
            Opcode::Text | Opcode::Binary => {
                if opcode != self.data {
                    return Err(AssemblyError::Protocol(if self.data == Opcode::Text {
                        "binary message on a text connection"
                    } else {
                        "text message on a binary connection"
                    }));
                }
                if self.partial.is_some() {
                    return Err(AssemblyError::Protocol(
                        "new message inside a fragmented one",
                    ));
                }
                if payload.len() > self.max {
                    return Err(AssemblyError::TooLarge { max: self.max });
                }
                if fin {
                    return self.complete(Bytes::copy_from_slice(payload)).map(Some);
                }
                self.partial = Some(BytesMut::from(payload));
                Ok(None)
            }
            Opcode::Continuation => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(AssemblyError::Protocol("continuation without a message"));
                };
                if partial.len() + payload.len() > self.max {
                    return Err(AssemblyError::TooLarge { max: self.max });
                }
                partial.extend_from_slice(payload);
                if !fin {
                    return Ok(None);
                }
                let whole = self.partial.take().unwrap_or_default().freeze();
                self.complete(whole).map(Some)
            }
        }
    }

    fn complete(&self, message: Bytes) -> Result<Assembled, AssemblyError> {
        if self.data == Opcode::Text && std::str::from_utf8(&message).is_err() {
            return Err(AssemblyError::InvalidUtf8);
        }
        Ok(Assembled::Message(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(bytes: &[u8]) -> Option<Assembled> {
        Some(Assembled::Message(Bytes::copy_from_slice(bytes)))
    }

    #[test]
    fn whole_and_fragmented_messages_come_out_whole() {
        let mut a = Assembler::new(false, 16);
        assert_eq!(a.add(Opcode::Binary, true, b"one"), Ok(message(b"one")));
        assert_eq!(a.add(Opcode::Binary, false, b"tw"), Ok(None));
        // Control frames may come between fragments.
        assert_eq!(
            a.add(Opcode::Ping, true, b"p"),
            Ok(Some(Assembled::Ping(Bytes::from_static(b"p"))))
        );
        assert_eq!(a.add(Opcode::Pong, true, b""), Ok(Some(Assembled::Pong)));
        assert_eq!(a.add(Opcode::Continuation, false, b"o"), Ok(None));
        assert_eq!(a.add(Opcode::Continuation, true, b""), Ok(message(b"two")));
        assert_eq!(a.add(Opcode::Binary, true, b""), Ok(message(b"")));
    }

    #[test]
    fn the_limit_applies_to_the_assembled_message() {
        let mut a = Assembler::new(false, 8);
        assert_eq!(a.add(Opcode::Binary, true, &[0; 8]), Ok(message(&[0; 8])));
        assert_eq!(
            a.add(Opcode::Binary, true, &[0; 9]),
            Err(AssemblyError::TooLarge { max: 8 })
        );
        let mut a = Assembler::new(false, 8);
        assert_eq!(a.add(Opcode::Binary, false, &[0; 5]), Ok(None));
        assert_eq!(
            a.add(Opcode::Continuation, true, &[0; 4]),
            Err(AssemblyError::TooLarge { max: 8 })
        );
    }

    #[test]
    fn frames_out_of_place_are_protocol_errors() {
        let mut binary = Assembler::new(false, 64);
        assert!(matches!(
            binary.add(Opcode::Text, true, b"{}"),
            Err(AssemblyError::Protocol(_))
        ));
        assert!(matches!(
            binary.add(Opcode::Continuation, true, b"x"),
            Err(AssemblyError::Protocol(_))
        ));
        assert_eq!(binary.add(Opcode::Binary, false, b"a"), Ok(None));
        assert!(matches!(
            binary.add(Opcode::Binary, true, b"b"),
            Err(AssemblyError::Protocol(
                "new message inside a fragmented one"
            ))
        ));
        let mut text = Assembler::new(true, 64);
        assert!(matches!(
            text.add(Opcode::Binary, true, b"x"),
            Err(AssemblyError::Protocol(_))
        ));
    }

    #[test]
    fn text_must_be_utf8_once_whole() {
        let mut a = Assembler::new(true, 64);
        // "é" split across two fragments is fine once assembled.
        assert_eq!(a.add(Opcode::Text, false, &[0xC3]), Ok(None));
        assert_eq!(
            a.add(Opcode::Continuation, true, &[0xA9]),
            Ok(message("é".as_bytes()))
        );
        assert_eq!(
            a.add(Opcode::Text, true, &[0xC3]),
            Err(AssemblyError::InvalidUtf8)
        );
    }

    #[test]
    fn opcodes_are_the_rfc_numbers() {
        let known = [
            (0x0, Opcode::Continuation),
            (0x1, Opcode::Text),
            (0x2, Opcode::Binary),
            (0x8, Opcode::Close),
            (0x9, Opcode::Ping),
            (0xA, Opcode::Pong),
        ];
        for code in 0..=u8::MAX {
            let expected = known.iter().find(|(c, _)| *c == code).map(|(_, o)| *o);
            assert_eq!(Opcode::from_wire(code), expected, "{code:#x}");
        }
    }

    #[test]
    fn close_frames_carry_their_code_and_reason() {
        let mut a = Assembler::new(false, 64);
        let mut payload = 1008u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"policy");
        assert_eq!(
            a.add(Opcode::Close, true, &payload),
            Ok(Some(Assembled::Close {
                code: Some(1008),
                reason: "policy".into()
            }))
        );
        assert_eq!(
            a.add(Opcode::Close, true, b""),
            Ok(Some(Assembled::Close {
                code: None,
                reason: String::new()
            }))
        );
    }
}
