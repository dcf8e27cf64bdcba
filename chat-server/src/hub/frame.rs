//! A frame encoded at most once per wire encoding and protocol generation, shared by
//! every recipient.

use std::sync::OnceLock;

use bytes::Bytes;
use chat_proto::codec;
use chat_proto::frame::ServerFrame;

use crate::wire::Wire;

/// A frame encoded lazily, at most once per (encoding, generation), shared by every
/// recipient. Sessions of protocol 1.3 and later read log entries as `entry` frames;
/// older sessions get the same entry as a `message` (PROTOCOL.md §2.1), built once on
/// first use.
#[derive(Debug)]
pub struct SharedFrame {
    frame: ServerFrame,
    /// The frame older sessions get, where it differs.
    legacy: OnceLock<Option<ServerFrame>>,
    /// Postcard, current then legacy.
    postcard: [OnceLock<Option<codec::EncodedFrame>>; 2],
    /// JSON, current then legacy.
    json: [OnceLock<Option<Bytes>>; 2],
}

impl SharedFrame {
    /// Wraps a frame; nothing is encoded yet.
    pub fn new(frame: ServerFrame) -> Self {
        Self {
            frame,
            legacy: OnceLock::new(),
            postcard: Default::default(),
            json: Default::default(),
        }
    }

    /// The frame itself.
    pub fn frame(&self) -> &ServerFrame {
        &self.frame
    }

    /// The frame back, dropping any encodings.
    pub fn into_frame(self) -> ServerFrame {
        self.frame
    }

    /// The frame a session of protocol 1.2 or older gets.
    fn legacy(&self) -> &ServerFrame {
        self.legacy
            .get_or_init(|| match &self.frame {
                ServerFrame::Entry(entry) => Some(ServerFrame::Message(entry.to_message())),
                _ => None,
            })
            .as_ref()
            .unwrap_or(&self.frame)
    }

    /// The bytes for a wire, for sessions of the current protocol, encoding on first
    /// use. `None` if the frame cannot be encoded within the limits (never the case
    /// for frames the hub builds).
    pub fn bytes(&self, wire: Wire) -> Option<Bytes> {
        self.bytes_for(wire, true)
    }

    /// The bytes for a wire and a session that reads log entries (`entries`: it
    /// negotiated 1.3 or later) or only messages.
    pub fn bytes_for(&self, wire: Wire, entries: bool) -> Option<Bytes> {
        let generation = usize::from(!entries);
        let frame = || {
            if entries { &self.frame } else { self.legacy() }
        };
        match wire {
            Wire::WsJson => self.json[generation]
                .get_or_init(|| codec::encode_json(frame()).ok().map(Bytes::from))
                .clone(),
            Wire::WsPostcard | Wire::Stream => {
                let encoded = self.postcard[generation]
                    .get_or_init(|| codec::encode_postcard(frame()).ok())
                    .as_ref()?;
                Some(if wire == Wire::Stream {
                    encoded.length_delimited()
                } else {
                    encoded.payload()
                })
            }
        }
    }
}
