//! The transport contract: what a transport (WebSocket, QUIC) gives a session and
//! takes from it. A leaf module: the session, the hub's queues and the transports all
//! build on these types, and none of them is needed to define them.
//!
//! A transport supplies a [`FrameReader`] (complete frame payloads in) and a
//! [`FrameWriter`] (queued [`Outbound`] frames out), and optionally a [`DirectWrite`]
//! (pushes that write at once where the socket takes them) and [`Datagrams`] (QUIC's
//! unreliable side channel). [`QueueLimits`] bound what waits for a writer, and
//! [`CloseReason`] says why the server ends a connection.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

/// How a session's frames travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// WebSocket `chat.v1.postcard`: one binary message per postcard frame.
    WsPostcard,
    /// WebSocket `chat.v1.json`: one text message per JSON frame.
    WsJson,
    /// A byte stream (QUIC): length-delimited postcard frames.
    Stream,
}

/// One frame ready for a session's transport.
#[derive(Clone, Debug)]
pub enum Outbound {
    /// An encoded frame (binary or text according to the session's [`Wire`]).
    Frame(Bytes),
    /// A WebSocket pong answering a ping.
    Pong(Bytes),
    /// Bytes already in the transport's framing, written as they are: the rest of a
    /// write the socket took only in part.
    Raw(Bytes),
}

impl Outbound {
    /// The bytes to send (before any transport framing, except for `Raw`).
    pub fn payload(&self) -> &Bytes {
        let (Self::Frame(bytes) | Self::Pong(bytes) | Self::Raw(bytes)) = self;
        bytes
    }
}

/// Queue bounds of one session.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    /// Frames queued at most.
    pub frames: usize,
    /// Bytes queued at most.
    pub bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            frames: 4096,
            bytes: 8 * 1024 * 1024,
        }
    }
}

/// A transport's unreliable side channel (QUIC datagrams, PROTOCOL.md §1.1), for the
/// frames that may be lost (`typing`).
pub trait Datagrams: Send + Sync + std::fmt::Debug {
    /// Sends one datagram without waiting; `false` if it cannot go this way (the peer
    /// takes no datagrams, or the connection is gone), and the frame should take the
    /// stream instead.
    fn send(&self, datagram: Bytes) -> bool;
}

/// A transport that can take bytes without waiting, from whichever task pushes.
pub trait DirectWrite: Send + Sync + 'static {
    /// Appends the frames as the transport puts them on the wire.
    fn encode(&self, frames: &[Outbound], buf: &mut Vec<u8>);
    /// Writes what the socket takes now, never waiting: the bytes written, or
    /// `WouldBlock` when it takes none.
    fn try_write(&self, bytes: &[u8]) -> std::io::Result<usize>;
}

/// What a transport read.
#[derive(Debug)]
pub enum ReadEvent {
    /// One complete frame payload.
    Frame(Bytes),
    /// One QUIC datagram's payload (PROTOCOL.md §1.1).
    Datagram(Bytes),
    /// A transport-level ping to answer (WebSocket).
    Ping(Bytes),
    /// The peer closed the connection.
    Closed,
}

/// A transport failure while reading.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A message exceeded the frame limit.
    #[error("message too large")]
    TooLarge,
    /// The peer broke the transport's rules (wrong message type, bad fragmentation).
    #[error("transport protocol error: {0}")]
    Protocol(String),
    /// A text message that is not UTF-8.
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(String),
}

/// Why the server closes a connection, for the transport's close signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Normal end.
    Normal,
    /// Server shutting down (WebSocket 1001).
    GoingAway,
    /// A fatal protocol error was sent (WebSocket 1008).
    Policy,
    /// A frame was too large (WebSocket 1009).
    TooLarge,
    /// Transport rules broken (WebSocket 1002).
    Protocol,
    /// A text message that is not UTF-8 (WebSocket 1007).
    InvalidData,
}

/// Reads complete frames from a transport.
pub trait FrameReader: Send + 'static {
    /// The next event. Need not be cancel-safe: the session keeps one read in flight
    /// across everything else it waits for, and only drops it when the session ends.
    fn next(&mut self) -> impl Future<Output = Result<ReadEvent, ReadError>> + Send;
}

/// Writes queued frames to a transport.
pub trait FrameWriter: Send + 'static {
    /// Writes a batch and flushes once.
    fn write_batch(
        &mut self,
        batch: &[Outbound],
    ) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Ends the connection, with a reason where the transport has a way to say it.
    fn close(&mut self, reason: CloseReason) -> impl Future<Output = ()> + Send;
    /// A way for pushes to write without waiting while this writer is idle, if the
    /// transport has one (see [`crate::outbox`]).
    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        None
    }
    /// The transport's datagrams, if it has them (QUIC).
    fn datagrams(&self) -> Option<Arc<dyn Datagrams>> {
        None
    }
}
