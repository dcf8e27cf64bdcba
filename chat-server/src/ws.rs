//! The WebSocket bridge (`GET /ws`): subprotocols `chat.v1.postcard` (binary) and
//! `chat.v1.json` (text), mapped onto the same session as every other transport.
//!
//! Upgrades without a supported subprotocol are refused (400), as are browser origins
//! other than the server's own and the configured allow-list (403). Messages are
//! assembled from fragments here, with the frame limit applied to the whole message
//! (the library's own limit only bounds single frames).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use chat_proto::codec::ws;
use chat_proto::limits::{MAX_CLIENT_FRAME, MAX_CLIENT_FRAME_JSON};
use chat_proto::version::{WS_SUBPROTOCOL_JSON, WS_SUBPROTOCOL_POSTCARD};
use fastwebsockets::WebSocketRead;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketError};
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

use crate::app::App;
use crate::io::HttpIo;
use crate::wire::{
    CloseReason, DirectWrite, FrameReader, FrameWriter, Outbound, ReadError, ReadEvent, Wire,
};

/// Picks the first offered subprotocol this server speaks.
fn choose_subprotocol(req: &Request<Incoming>) -> Option<Wire> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| match p {
            WS_SUBPROTOCOL_POSTCARD => Some(Wire::WsPostcard),
            WS_SUBPROTOCOL_JSON => Some(Wire::WsJson),
            _ => None,
        })
}

/// Whether a browser's Origin may connect: no Origin (native clients), the server's
/// own host, or an allow-listed origin.
fn origin_allowed(app: &App, req: &Request<Incoming>) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let origin = origin.trim_end_matches('/');
    if app
        .config()
        .allowed_origins
        .iter()
        .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// Why a request to `/ws` did not become a WebSocket session (the HTTP layer answers
/// with the matching status).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// Not a WebSocket upgrade request (426).
    #[error("this endpoint speaks WebSocket")]
    NotAnUpgrade,
    /// Neither of our subprotocols was offered (400).
    #[error("offer Sec-WebSocket-Protocol {WS_SUBPROTOCOL_JSON} or {WS_SUBPROTOCOL_POSTCARD}")]
    Subprotocol,
    /// The page's origin may not open connections (403).
    #[error("this origin may not open WebSocket connections")]
    Origin,
    /// The handshake headers were wrong (400).
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
}

/// `GET /ws`: validates and upgrades, then runs the session in the background.
pub async fn upgrade(
    app: App,
    peer: std::net::SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, UpgradeError> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return Err(UpgradeError::NotAnUpgrade);
    }
    let Some(wire) = choose_subprotocol(&req) else {
        return Err(UpgradeError::Subprotocol);
    };
    if !origin_allowed(&app, &req) {
        return Err(UpgradeError::Origin);
    }
    let (response, fut) = fastwebsockets::upgrade::upgrade(&mut req)
        .map_err(|e| UpgradeError::Handshake(e.to_string()))?;
    let (parts, _) = response.into_parts();
    let mut response = hyper::Response::from_parts(parts, Full::new(Bytes::new()));
    let protocol = match wire {
        Wire::WsJson => WS_SUBPROTOCOL_JSON,
        _ => WS_SUBPROTOCOL_POSTCARD,
    };
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    let tracker = app.sessions().clone();
    tracker.spawn(async move {
        let upgraded = match fut.await {
            Ok(ws) => ws.into_inner().into_inner(),
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade did not complete");
                return;
            }
        };
        // The TCP connection itself, so that an idle connection can wait for data
        // without a read buffer (see `WsReader`).
        let hyper::upgrade::Parts { io, read_buf, .. } = match upgraded.downcast::<HttpIo>() {
            Ok(parts) => parts,
            Err(_) => {
                tracing::error!("upgraded connection is not the server's TCP stream");
                return;
            }
        };
        // Shared by the reading and the writing side, each waiting for its own
        // readiness.
        let socket = Arc::new(io.into_inner().into_inner());
        let max = if wire == Wire::WsJson {
            MAX_CLIENT_FRAME_JSON
        } else {
            MAX_CLIENT_FRAME
        };
        // Usually empty; then it is dropped here, as an empty view would still keep
        // hyper's whole read buffer for as long as the session runs.
        let early = if read_buf.is_empty() {
            drop(read_buf);
            Bytes::new()
        } else {
            read_buf
        };
        let reader = WsReader {
            socket: socket.clone(),
            early,
            parser: None,
            delivered: Arc::new(AtomicUsize::new(0)),
            messages: ws::Assembler::new(wire == Wire::WsJson, max),
        };
        let writer = WsWriter {
            out: Arc::new(WsOut { socket, wire }),
        };
        crate::session::run(app, wire, reader, writer, peer.to_string()).await;
    });
    Ok(response)
}

/// The reading side of a WebSocket connection.
///
/// Frames are parsed by fastwebsockets, whose reader owns an 8 KiB buffer from
/// creation to drop. Most connections of a chat server sit idle most of the time, so
/// a parser exists only while data flows: the connection waits for readability
/// without one, and the parser is dropped again once every byte it took from the
/// socket belonged to a frame it returned (nothing is left in its buffer).
struct WsReader {
    socket: Arc<TcpStream>,
    /// Bytes that arrived with the upgrade request, read before the socket.
    early: Bytes,
    parser: Option<Parser>,
    /// Bytes the current parser read (its source counts them).
    delivered: Arc<AtomicUsize>,
    messages: ws::Assembler,
}

/// A frame parser and how many of the bytes it read it has returned as frames.
struct Parser {
    ws: WebSocketRead<Source>,
    consumed: usize,
}

/// What a parser reads: the early bytes, then the socket. Adds the bytes it reads
/// from the socket to `delivered`, which the reader shares.
struct Source {
    socket: Arc<TcpStream>,
    early: Bytes,
    delivered: Arc<AtomicUsize>,
}

impl AsyncRead for Source {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.early.is_empty() {
            // Counted as delivered when the parser was made.
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early.split_to(n));
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(this.socket.poll_read_ready(cx))?;
            match this.socket.try_read_buf(buf) {
                Ok(n) => {
                    this.delivered.fetch_add(n, Ordering::Relaxed);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Bytes a received frame took on the wire, computed from what the parser returned,
/// and whether it was masked. Never more than it really took: a frame whose length
/// was not minimally encoded took more, which only keeps its parser alive.
fn wire_len(frame: &mut Frame<'_>) -> (usize, bool) {
    let mut head = [0u8; MAX_HEAD + 4];
    let head_len = frame.fmt_head(&mut head);
    let masked = head[1] & 0x80 != 0;
    (head_len + frame.payload.len(), masked)
}

impl WsReader {
    /// Makes the parser when there is something to read.
    async fn ensure_parser(&mut self) -> std::io::Result<()> {
        if self.parser.is_some() {
            return Ok(());
        }
        if self.early.is_empty() {
            // No parser, so no buffer, while waiting. Readiness alone could be stale
            // (the last read may have taken everything without seeing the socket
            // empty), so wait for a byte to be there, or for the end.
            self.socket.peek(&mut [0u8; 1]).await?;
        }
        // The previous parser is gone: count afresh. The early bytes count from the
        // start, so the parser is never taken for drained while some are left.
        self.delivered.store(self.early.len(), Ordering::Relaxed);
        let source = Source {
            socket: self.socket.clone(),
            early: std::mem::take(&mut self.early),
            delivered: self.delivered.clone(),
        };
        let (mut ws, _) =
            fastwebsockets::after_handshake_split(source, tokio::io::sink(), Role::Server);
        ws.set_auto_close(false);
        ws.set_auto_pong(false);
        ws.set_max_message_size(self.messages.max());
        self.parser = Some(Parser { ws, consumed: 0 });
        Ok(())
    }
}

impl FrameReader for WsReader {
    async fn next(&mut self) -> Result<ReadEvent, ReadError> {
        loop {
            self.ensure_parser()
                .await
                .map_err(|e| ReadError::Io(e.to_string()))?;
            let Some(parser) = self.parser.as_mut() else {
                unreachable!("made above")
            };
            // Control frames are answered by the session (auto pong and close are off),
            // so the parser never needs to write.
            let mut frame = parser
                .ws
                .read_frame(&mut |_: Frame<'_>| async { Ok::<(), std::io::Error>(()) })
                .await
                .map_err(read_error)?;
            let (len, masked) = wire_len(&mut frame);
            parser.consumed += len;
            let drained = parser.consumed == self.delivered.load(Ordering::Relaxed);
            if !masked {
                // RFC 6455 §5.1: a server closes on an unmasked client frame.
                return Err(ReadError::Protocol("unmasked frame from a client".into()));
            }
            let event = assemble(&mut self.messages, &frame);
            if drained {
                self.parser = None;
            }
            if let Some(event) = event? {
                return Ok(event);
            }
        }
    }
}

fn read_error(e: WebSocketError) -> ReadError {
    match e {
        WebSocketError::FrameTooLarge => ReadError::TooLarge,
        WebSocketError::InvalidUTF8 => ReadError::InvalidUtf8,
        WebSocketError::ConnectionClosed | WebSocketError::UnexpectedEOF => {
            ReadError::Io("closed".into())
        }
        WebSocketError::IoError(e) => ReadError::Io(e.to_string()),
        other => ReadError::Protocol(other.to_string()),
    }
}

/// Takes one frame; an event when it completes a message or is a control frame.
fn assemble(
    messages: &mut ws::Assembler,
    frame: &Frame<'_>,
) -> Result<Option<ReadEvent>, ReadError> {
    let opcode = ws::Opcode::from_wire(frame.opcode as u8)
        .ok_or_else(|| ReadError::Protocol("reserved opcode".into()))?;
    let assembled = messages
        .add(opcode, frame.fin, &frame.payload)
        .map_err(|e| match e {
            ws::AssemblyError::TooLarge { .. } => ReadError::TooLarge,
            ws::AssemblyError::InvalidUtf8 => ReadError::InvalidUtf8,
            ws::AssemblyError::Protocol(what) => ReadError::Protocol(what.into()),
        })?;
    Ok(match assembled {
        Some(ws::Assembled::Message(message)) => Some(ReadEvent::Frame(message)),
        Some(ws::Assembled::Ping(payload)) => Some(ReadEvent::Ping(payload)),
        Some(ws::Assembled::Close { .. }) => Some(ReadEvent::Closed),
        Some(ws::Assembled::Pong) | None => None,
    })
}

/// Writes each batch of frames as one buffer: one write for the whole burst.
struct WsWriter {
    out: Arc<WsOut>,
}

/// The sending side of a connection: how frames go on the wire, and the socket.
struct WsOut {
    socket: Arc<TcpStream>,
    wire: Wire,
}

/// Longest WebSocket frame header a server writes (unmasked, 64-bit length).
const MAX_HEAD: usize = 10;

fn encode(buf: &mut Vec<u8>, mut frame: Frame<'_>) {
    let mut head = [0u8; MAX_HEAD];
    let n = frame.fmt_head(&mut head);
    buf.extend_from_slice(&head[..n]);
    buf.extend_from_slice(&frame.payload);
}

impl DirectWrite for WsOut {
    fn encode(&self, frames: &[Outbound], buf: &mut Vec<u8>) {
        let opcode = if self.wire == Wire::WsJson {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        let total: usize = frames
            .iter()
            .map(|item| item.payload().len() + MAX_HEAD)
            .sum();
        buf.reserve(total);
        for item in frames {
            let frame = match item {
                Outbound::Frame(bytes) => Frame::new(true, opcode, None, Payload::Borrowed(bytes)),
                Outbound::Pong(bytes) => Frame::pong(Payload::Borrowed(bytes)),
                Outbound::Raw(bytes) => {
                    buf.extend_from_slice(bytes);
                    continue;
                }
            };
            encode(buf, frame);
        }
    }

    fn try_write(&self, bytes: &[u8]) -> std::io::Result<usize> {
        self.socket.try_write(bytes)
    }
}

impl WsOut {
    /// Writes one encoded buffer, the batch's own: an idle connection keeps no write
    /// memory.
    async fn send(&self, buf: Vec<u8>) -> std::io::Result<()> {
        let mut rest = &buf[..];
        while !rest.is_empty() {
            match self.socket.try_write(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.socket.writable().await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl FrameWriter for WsWriter {
    async fn write_batch(&mut self, batch: &[Outbound]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        self.out.encode(batch, &mut buf);
        self.out.send(buf).await
    }

    async fn close(&mut self, reason: CloseReason) {
        let code = match reason {
            CloseReason::Normal => 1000,
            CloseReason::GoingAway => 1001,
            CloseReason::Protocol => 1002,
            CloseReason::InvalidData => 1007,
            CloseReason::Policy => 1008,
            CloseReason::TooLarge => 1009,
        };
        let mut buf = Vec::with_capacity(MAX_HEAD + 2);
        encode(&mut buf, Frame::close(code, b""));
        let _ = self.out.send(buf).await;
    }

    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        Some(self.out.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// A client frame (masked) as the wire carries it.
    fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        crate::testing::client_frame(opcode, payload, [3, 1, 4, 1])
    }

    /// A reader on the server end of a loopback connection, and the client end.
    async fn pair(early: Vec<u8>) -> (WsReader, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let reader = WsReader {
            socket: Arc::new(server),
            early: Bytes::from(early),
            parser: None,
            delivered: Arc::new(AtomicUsize::new(0)),
            messages: ws::Assembler::new(false, MAX_CLIENT_FRAME),
        };
        (reader, client)
    }

    async fn next_payload(reader: &mut WsReader) -> Vec<u8> {
        match tokio::time::timeout(Duration::from_secs(5), reader.next()).await {
            Ok(Ok(ReadEvent::Frame(payload))) => payload.to_vec(),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_parser_and_its_buffer_exist_only_while_bytes_are_unread() {
        let (mut reader, mut client) = pair(Vec::new()).await;
        let mut two = client_frame(OpCode::Binary, b"one");
        two.extend(client_frame(OpCode::Binary, &[7u8; 300]));
        client.write_all(&two).await.expect("write");
        assert_eq!(next_payload(&mut reader).await, b"one");
        assert!(reader.parser.is_some(), "the second frame is in its buffer");
        assert_eq!(next_payload(&mut reader).await, vec![7u8; 300]);
        assert!(reader.parser.is_none(), "everything read was returned");

        // A frame cut in two: the parser waits for the rest and is dropped after it.
        let frame = client_frame(OpCode::Binary, b"split across writes");
        client.write_all(&frame[..5]).await.expect("write");
        let read = tokio::spawn(async move {
            let payload = next_payload(&mut reader).await;
            (reader, payload)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(&frame[5..]).await.expect("write");
        let (reader, payload) = read.await.expect("reader task");
        assert_eq!(payload, b"split across writes");
        assert!(reader.parser.is_none());
    }

    #[tokio::test]
    async fn early_bytes_beyond_one_parser_buffer_are_all_read() {
        // Whole frames filling exactly the parser's first read (8 KiB), then one more:
        // the parser must not be taken for drained at the boundary.
        let first = client_frame(OpCode::Binary, &[1u8; 100]);
        let mut early = first.clone();
        let mut filler = 8192 - early.len() - 8;
        while early.len() + client_frame(OpCode::Binary, &vec![2u8; filler]).len() > 8192 {
            filler -= 1;
        }
        early.extend(client_frame(OpCode::Binary, &vec![2u8; filler]));
        assert_eq!(early.len(), 8192, "a frame boundary at the buffer's end");
        early.extend(client_frame(OpCode::Binary, b"after the boundary"));
        let (mut reader, _client) = pair(early).await;
        assert_eq!(next_payload(&mut reader).await, vec![1u8; 100]);
        assert_eq!(next_payload(&mut reader).await, vec![2u8; filler]);
        assert_eq!(next_payload(&mut reader).await, b"after the boundary");
        assert!(reader.parser.is_none());
    }
}
