//! A minimal WebSocket client speaking the chat protocol, for tests.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use chat_proto::codec;
use chat_proto::frame::{ClientFrame, Cursor, Hello, ServerFrame, Welcome};
use chat_proto::version::ProtocolVersion;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sub {
    Json,
    Postcard,
}

struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

pub struct WsClient {
    ws: WebSocket<TokioIo<Upgraded>>,
    pub sub: Sub,
}

/// What came back instead of a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Closed(u16),
    Timeout,
    Error,
}

pub async fn connect_raw(
    addr: SocketAddr,
    protocols: Option<&str>,
    origin: Option<&str>,
) -> Result<(WebSocket<TokioIo<Upgraded>>, Option<String>), StatusCode> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("tcp connect");
    let mut req = Request::builder()
        .method("GET")
        .uri(format!("http://{addr}/ws"))
        .header(header::HOST, addr.to_string())
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13");
    if let Some(p) = protocols {
        req = req.header(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    if let Some(o) = origin {
        req = req.header(header::ORIGIN, o);
    }
    let req = req.body(Empty::<Bytes>::new()).expect("request");
    match fastwebsockets::handshake::client(&SpawnExecutor, req, stream).await {
        Ok((ws, response)) => {
            let chosen = response
                .headers()
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok((ws, chosen))
        }
        Err(fastwebsockets::WebSocketError::InvalidStatusCode(code)) => {
            Err(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

impl WsClient {
    pub async fn connect(addr: SocketAddr, sub: Sub) -> Self {
        let name = match sub {
            Sub::Json => "chat.v1.json",
            Sub::Postcard => "chat.v1.postcard",
        };
        let (mut ws, chosen) = connect_raw(addr, Some(name), None)
            .await
            .expect("upgrade accepted");
        assert_eq!(chosen.as_deref(), Some(name));
        ws.set_auto_close(true);
        ws.set_auto_pong(true);
        Self { ws, sub }
    }

    /// Connects and completes the handshake; returns the welcome (replay and
    /// `replay_done` follow).
    pub async fn login(
        addr: SocketAddr,
        sub: Sub,
        token: &str,
        resume: Vec<Cursor>,
    ) -> (Self, Welcome) {
        Self::login_at(addr, sub, token, resume, super::V1_2).await
    }

    /// [`WsClient::login`], then past the replay of missed messages: what comes next is
    /// live.
    pub async fn login_live(
        addr: SocketAddr,
        sub: Sub,
        token: &str,
        resume: Vec<Cursor>,
    ) -> (Self, Welcome) {
        let (mut c, welcome) = Self::login(addr, sub, token, resume).await;
        c.until_live().await;
        (c, welcome)
    }

    /// [`WsClient::login`] announcing `version`.
    pub async fn login_at(
        addr: SocketAddr,
        sub: Sub,
        token: &str,
        resume: Vec<Cursor>,
        version: ProtocolVersion,
    ) -> (Self, Welcome) {
        let mut c = Self::connect(addr, sub).await;
        c.send(&ClientFrame::Hello(Hello {
            version,
            token: token.to_owned(),
            client: "test".into(),
            resume,
        }))
        .await;
        match c.recv().await {
            Ok(ServerFrame::Welcome(w)) => (c, w),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, frame: &ClientFrame) {
        match self.sub {
            Sub::Json => {
                let text = codec::encode_json(frame).expect("encodes");
                self.send_raw(OpCode::Text, text.into_bytes()).await;
            }
            Sub::Postcard => {
                let bytes = codec::encode_postcard(frame)
                    .expect("encodes")
                    .payload()
                    .to_vec();
                self.send_raw(OpCode::Binary, bytes).await;
            }
        }
    }

    pub async fn send_raw(&mut self, opcode: OpCode, bytes: Vec<u8>) {
        let _ = self
            .ws
            .write_frame(Frame::new(true, opcode, None, Payload::Owned(bytes)))
            .await;
    }

    pub async fn send_fragment(&mut self, fin: bool, opcode: OpCode, bytes: Vec<u8>) {
        let _ = self
            .ws
            .write_frame(Frame::new(fin, opcode, None, Payload::Owned(bytes)))
            .await;
    }

    /// Sends a frame without the client mask RFC 6455 requires.
    pub async fn send_unmasked(&mut self, opcode: OpCode, bytes: Vec<u8>) {
        self.ws.set_auto_apply_mask(false);
        self.send_raw(opcode, bytes).await;
        self.ws.set_auto_apply_mask(true);
    }

    /// The next protocol frame (waits at most 5 s).
    pub async fn recv(&mut self) -> Result<ServerFrame, End> {
        self.recv_within(Duration::from_secs(5)).await
    }

    pub async fn recv_within(&mut self, wait: Duration) -> Result<ServerFrame, End> {
        loop {
            let frame = match tokio::time::timeout(wait, self.ws.read_frame()).await {
                Err(_) => return Err(End::Timeout),
                Ok(Err(_)) => return Err(End::Error),
                Ok(Ok(f)) => f,
            };
            match frame.opcode {
                OpCode::Text => {
                    assert_eq!(self.sub, Sub::Json, "text frame on a postcard connection");
                    return Ok(codec::decode_json(&frame.payload).expect("valid JSON frame"));
                }
                OpCode::Binary => {
                    assert_eq!(self.sub, Sub::Postcard, "binary frame on a JSON connection");
                    return Ok(
                        codec::decode_postcard(&frame.payload).expect("valid postcard frame")
                    );
                }
                OpCode::Close => {
                    let code = if frame.payload.len() >= 2 {
                        u16::from_be_bytes([frame.payload[0], frame.payload[1]])
                    } else {
                        1005
                    };
                    return Err(End::Closed(code));
                }
                _ => continue,
            }
        }
    }

    /// Skips frames until one matches.
    pub async fn until<T>(&mut self, mut pick: impl FnMut(ServerFrame) -> Option<T>) -> T {
        loop {
            match self.recv().await {
                Ok(frame) => {
                    if let Some(t) = pick(frame) {
                        return t;
                    }
                }
                Err(end) => panic!("connection ended while waiting: {end:?}"),
            }
        }
    }

    /// Asserts nothing but `pick`-ignored frames arrive within `wait`.
    /// Reads until the handshake replay is over (`replay_done`).
    pub async fn until_live(&mut self) {
        self.until(|f| matches!(f, ServerFrame::ReplayDone(_)).then_some(()))
            .await;
    }

    pub async fn expect_silence(
        &mut self,
        wait: Duration,
        mut ignore: impl FnMut(&ServerFrame) -> bool,
    ) {
        loop {
            match self.recv_within(wait).await {
                Err(End::Timeout) => return,
                Ok(f) if ignore(&f) => continue,
                other => panic!("expected silence, got {other:?}"),
            }
        }
    }
}

/// A WebSocket connection driven byte by byte over plain TCP, for tests of how the
/// server reads what arrives together with, or split across, TCP writes.
pub struct RawWs {
    pub stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Sends the upgrade request for `chat.v1.json` followed by `early` in one write,
    /// and reads the `101` response.
    pub async fn upgrade_with(addr: SocketAddr, early: &[u8]) -> Self {
        use tokio::io::AsyncWriteExt as _;
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("tcp connect");
        let key = fastwebsockets::handshake::generate_key();
        let mut bytes = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: chat.v1.json\r\n\r\n"
        )
        .into_bytes();
        bytes.extend_from_slice(early);
        stream.write_all(&bytes).await.expect("write");
        let mut raw = Self {
            stream,
            buf: Vec::new(),
        };
        let end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            raw.fill().await;
        };
        let head = String::from_utf8_lossy(&raw.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        raw.buf.drain(..end);
        raw
    }

    async fn fill(&mut self) {
        use tokio::io::AsyncReadExt as _;
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .expect("server answered within 5 s")
            .expect("read");
        assert!(n > 0, "connection closed");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt as _;
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next server frame: opcode and payload (servers do not mask).
    pub async fn next(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                let (len, head) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => (
                        usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                        4,
                    ),
                    127 if self.buf.len() >= 10 => {
                        let mut n = [0u8; 8];
                        n.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(n) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (usize::from(n), 2),
                };
                if len != usize::MAX && self.buf.len() >= head + len {
                    let opcode = self.buf[0] & 0x0f;
                    let payload = self.buf[head..head + len].to_vec();
                    self.buf.drain(..head + len);
                    return (opcode, payload);
                }
            }
            self.fill().await;
        }
    }

    /// The next protocol frame (JSON), skipping pings.
    pub async fn recv(&mut self) -> ServerFrame {
        loop {
            let (opcode, payload) = self.next().await;
            match opcode {
                1 => return codec::decode_json(&payload).expect("valid JSON frame"),
                8 => panic!("closed: {payload:?}"),
                _ => continue,
            }
        }
    }
}
