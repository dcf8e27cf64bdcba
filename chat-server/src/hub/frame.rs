//! A frame encoded at most once per wire encoding and protocol view, shared by every
//! recipient.

use std::sync::OnceLock;

use bytes::Bytes;
use chat_proto::codec;
use chat_proto::frame::ServerFrame;
use chat_proto::version::ProtocolVersion;

use crate::wire::Wire;

/// The form in which a session reads log entries, by the protocol it negotiated.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum View {
    /// 1.4 and later: entries as they are.
    Entries,
    /// 1.3: entries, with bodies that carry files as text (PROTOCOL.md §2.2).
    EntriesWithoutFiles,
    /// 1.2 and older: every entry as a `message` (PROTOCOL.md §2.1).
    Messages,
}

impl View {
    /// Every view, in slot order.
    pub const ALL: [View; 3] = [View::Entries, View::EntriesWithoutFiles, View::Messages];

    /// The view of a session that negotiated `version`.
    pub fn of(version: ProtocolVersion) -> Self {
        if version.has_files() {
            View::Entries
        } else if version.has_relations() {
            View::EntriesWithoutFiles
        } else {
            View::Messages
        }
    }

    /// Its position in per-view arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A frame encoded lazily, at most once per (encoding, view), shared by every
/// recipient. Sessions of protocol 1.4 read log entries as they are; 1.3 sessions get
/// entries whose bodies with files are text, and older sessions every entry as a
/// `message` (PROTOCOL.md §2.1, §2.2), each form built once on first use. A view in
/// which the frame is the same shares the encoding of the current one.
#[derive(Debug)]
pub struct SharedFrame {
    frame: ServerFrame,
    /// The frame of each older view, where it differs (1.3, then 1.2).
    older: [OnceLock<Option<ServerFrame>>; 2],
    /// Postcard, per view.
    postcard: [OnceLock<Option<codec::EncodedFrame>>; 3],
    /// JSON, per view.
    json: [OnceLock<Option<Bytes>>; 3],
}

impl SharedFrame {
    /// Wraps a frame; nothing is encoded yet.
    pub fn new(frame: ServerFrame) -> Self {
        Self {
            frame,
            older: Default::default(),
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

    /// The frame a session of `view` gets, or `None` when it is the frame itself.
    fn view(&self, view: View) -> Option<&ServerFrame> {
        let ServerFrame::Entry(entry) = &self.frame else {
            return None;
        };
        match view {
            View::Entries => None,
            View::EntriesWithoutFiles => self.older[0]
                .get_or_init(|| entry.without_files().map(ServerFrame::Entry))
                .as_ref(),
            View::Messages => self.older[1]
                .get_or_init(|| Some(ServerFrame::Message(entry.to_message())))
                .as_ref(),
        }
    }

    /// The bytes for a wire, for sessions of the current protocol, encoding on first
    /// use. `None` if the frame cannot be encoded within the limits (never the case
    /// for frames the hub builds).
    pub fn bytes(&self, wire: Wire) -> Option<Bytes> {
        self.bytes_for(wire, View::Entries)
    }

    /// The bytes for a wire and a session reading `view`.
    pub fn bytes_for(&self, wire: Wire, view: View) -> Option<Bytes> {
        let (slot, frame) = match self.view(view) {
            Some(frame) => (view.index(), frame),
            None => (View::Entries.index(), &self.frame),
        };
        match wire {
            Wire::WsJson => self.json[slot]
                .get_or_init(|| codec::encode_json(frame).ok().map(Bytes::from))
                .clone(),
            Wire::WsPostcard | Wire::Stream => {
                let encoded = self.postcard[slot]
                    .get_or_init(|| codec::encode_postcard(frame).ok())
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
