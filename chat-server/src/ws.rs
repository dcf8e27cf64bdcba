//! The WebSocket bridge (`GET /ws`): subprotocols `chat.v1.postcard` (binary) and
//! `chat.v1.json` (text), mapped onto the same session as every other transport.
//!
//! Upgrades without a supported subprotocol are refused (400), as are browser origins
//! other than the server's own and the configured allow-list (403). Messages are
//! assembled from fragments here, with the frame limit applied to the whole message
//! (the library's own limit only bounds single frames).

use bytes::{Bytes, BytesMut};
use chat_proto::limits::{MAX_CLIENT_FRAME, MAX_CLIENT_FRAME_JSON};
use chat_proto::version::{WS_SUBPROTOCOL_JSON, WS_SUBPROTOCOL_POSTCARD};
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketError, WebSocketRead};
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWriteExt as _, ReadHalf, WriteHalf};

use crate::app::App;
use crate::http::HandlerResult;
use crate::http::error::ApiError;
use crate::hub::{Outbound, Wire};
use crate::session::{CloseReason, FrameReader, FrameWriter, ReadError, ReadEvent};

type Io = TokioIo<Upgraded>;

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

/// `GET /ws`: validates and upgrades, then runs the session in the background.
pub async fn upgrade(
    app: App,
    peer: std::net::SocketAddr,
    mut req: Request<Incoming>,
) -> HandlerResult {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this endpoint speaks WebSocket",
        ));
    }
    let Some(wire) = choose_subprotocol(&req) else {
        return Err(ApiError::bad_request(
            "unsupported_subprotocol",
            format!(
                "offer Sec-WebSocket-Protocol {WS_SUBPROTOCOL_JSON} or {WS_SUBPROTOCOL_POSTCARD}"
            ),
        ));
    };
    if !origin_allowed(&app, &req) {
        return Err(ApiError::forbidden(
            "this origin may not open WebSocket connections",
        ));
    }
    let (response, fut) = fastwebsockets::upgrade::upgrade(&mut req).map_err(|e| {
        ApiError::bad_request("bad_upgrade", format!("WebSocket handshake failed: {e}"))
    })?;
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
        let ws = match fut.await {
            Ok(ws) => ws,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade did not complete");
                return;
            }
        };
        let io = ws.into_inner();
        let (read, write) = tokio::io::split(io);
        // Reading goes through fastwebsockets; writing encodes whole batches itself
        // (below), so its write half gets nothing to write to.
        let (mut ws_read, _) =
            fastwebsockets::after_handshake_split(read, tokio::io::sink(), Role::Server);
        let max = if wire == Wire::WsJson {
            MAX_CLIENT_FRAME_JSON
        } else {
            MAX_CLIENT_FRAME
        };
        ws_read.set_auto_close(false);
        ws_read.set_auto_pong(false);
        ws_read.set_max_message_size(max);
        let reader = WsReader {
            ws: ws_read,
            wire,
            max,
            partial: None,
        };
        let writer = WsWriter {
            io: write,
            wire,
            buf: Vec::new(),
        };
        crate::session::run(app, wire, reader, writer, peer.to_string()).await;
    });
    Ok(response)
}

struct WsReader {
    ws: WebSocketRead<ReadHalf<Io>>,
    wire: Wire,
    max: usize,
    partial: Option<BytesMut>,
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

/// A whole message; text must be UTF-8.
fn complete(wire: Wire, message: Bytes) -> Result<ReadEvent, ReadError> {
    if wire == Wire::WsJson && std::str::from_utf8(&message).is_err() {
        return Err(ReadError::InvalidUtf8);
    }
    Ok(ReadEvent::Frame(message))
}

impl FrameReader for WsReader {
    async fn next(&mut self) -> Result<ReadEvent, ReadError> {
        let expected = if self.wire == Wire::WsJson {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        loop {
            // Control frames are answered by the session (auto pong/close are off), so
            // the library never needs to write from here.
            let frame = self
                .ws
                .read_frame(&mut |_: Frame<'_>| async { Ok::<(), std::io::Error>(()) })
                .await
                .map_err(read_error)?;
            match frame.opcode {
                OpCode::Close => return Ok(ReadEvent::Closed),
                OpCode::Ping => return Ok(ReadEvent::Ping(Bytes::copy_from_slice(&frame.payload))),
                OpCode::Pong => continue,
                OpCode::Text | OpCode::Binary => {
                    if frame.opcode != expected {
                        return Err(ReadError::Protocol(format!(
                            "{:?} message on a {} connection",
                            frame.opcode,
                            if expected == OpCode::Text {
                                "text"
                            } else {
                                "binary"
                            }
                        )));
                    }
                    if self.partial.is_some() {
                        return Err(ReadError::Protocol(
                            "new message inside a fragmented one".into(),
                        ));
                    }
                    if frame.fin {
                        return complete(self.wire, Bytes::copy_from_slice(&frame.payload));
                    }
                    self.partial = Some(BytesMut::from(&frame.payload[..]));
                }
                OpCode::Continuation => {
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(ReadError::Protocol("continuation without a message".into()));
                    };
                    if partial.len() + frame.payload.len() > self.max {
                        return Err(ReadError::TooLarge);
                    }
                    partial.extend_from_slice(&frame.payload);
                    if frame.fin {
                        let whole = self.partial.take().unwrap_or_default().freeze();
                        return complete(self.wire, whole);
                    }
                }
            }
        }
    }
}

/// Writes each batch of frames as one buffer: one write for the whole burst.
struct WsWriter {
    io: WriteHalf<Io>,
    wire: Wire,
    /// The batch being written, encoded. Kept between batches only while small, so an
    /// idle connection holds next to no write memory.
    buf: Vec<u8>,
}

/// Largest write buffer kept between batches, bytes.
const KEEP_WRITE_BUFFER: usize = 4 * 1024;
/// Longest WebSocket frame header a server writes (unmasked, 64-bit length).
const MAX_HEAD: usize = 10;

impl WsWriter {
    fn encode(&mut self, mut frame: Frame<'_>) {
        let mut head = [0u8; MAX_HEAD];
        let n = frame.fmt_head(&mut head);
        self.buf.extend_from_slice(&head[..n]);
        self.buf.extend_from_slice(&frame.payload);
    }

    async fn send_buffered(&mut self) -> std::io::Result<()> {
        let result = match self.io.write_all(&self.buf).await {
            Ok(()) => self.io.flush().await,
            Err(e) => Err(e),
        };
        self.buf.clear();
        if self.buf.capacity() > KEEP_WRITE_BUFFER {
            self.buf = Vec::new();
        }
        result
    }
}

impl FrameWriter for WsWriter {
    async fn write_batch(&mut self, batch: &[Outbound]) -> std::io::Result<()> {
        let opcode = if self.wire == Wire::WsJson {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        let total: usize = batch
            .iter()
            .map(|item| match item {
                Outbound::Frame(b) | Outbound::Pong(b) => b.len() + MAX_HEAD,
            })
            .sum();
        self.buf.reserve(total);
        for item in batch {
            let frame = match item {
                Outbound::Frame(bytes) => Frame::new(true, opcode, None, Payload::Borrowed(bytes)),
                Outbound::Pong(bytes) => Frame::pong(Payload::Borrowed(bytes)),
            };
            self.encode(frame);
        }
        self.send_buffered().await
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
        self.encode(Frame::close(code, b""));
        let _ = self.send_buffered().await;
    }
}
