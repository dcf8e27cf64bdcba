//! A frame encoded at most once per wire encoding, shared by every recipient.

use bytes::Bytes;
use chat_proto::codec;
use chat_proto::frame::ServerFrame;

use crate::wire::Wire;

/// A frame encoded lazily, at most once per encoding, shared by every recipient.
#[derive(Debug)]
pub struct SharedFrame {
    frame: ServerFrame,
    postcard: std::sync::OnceLock<Option<codec::EncodedFrame>>,
    json: std::sync::OnceLock<Option<Bytes>>,
}

impl SharedFrame {
    /// Wraps a frame; nothing is encoded yet.
    pub fn new(frame: ServerFrame) -> Self {
        Self {
            frame,
            postcard: std::sync::OnceLock::new(),
            json: std::sync::OnceLock::new(),
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

    /// The bytes for a wire, encoding on first use. `None` if the frame cannot be
    /// encoded within the limits (never the case for frames the hub builds).
    pub fn bytes(&self, wire: Wire) -> Option<Bytes> {
        match wire {
            Wire::WsJson => self
                .json
                .get_or_init(|| codec::encode_json(&self.frame).ok().map(Bytes::from))
                .clone(),
            Wire::WsPostcard | Wire::Stream => {
                let encoded = self
                    .postcard
                    .get_or_init(|| codec::encode_postcard(&self.frame).ok())
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
