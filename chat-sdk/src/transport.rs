//! Moving frames: a WebSocket (`ws://`, `wss://`) or QUIC (`quic://`) link. Reading
//! happens in the session's own task (a [`Reader`] it polls), writing in a task of its
//! own behind a channel. The protocol lives elsewhere.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chat_proto::codec::{self, StreamDecoder, ws};
use chat_proto::frame::{ClientFrame, ServerFrame};
use chat_proto::limits::{MAX_DATAGRAM, MAX_SERVER_FRAME};
use chat_proto::version::WS_SUBPROTOCOL_POSTCARD;
use fastwebsockets::{Frame, Payload, Role, WebSocketError};
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result, chain};

/// Where the real-time connection goes.
#[derive(Clone)]
pub(crate) enum Target {
    Quic {
        host: String,
        port: u16,
        tls: quinn::ClientConfig,
    },
    WebSocket {
        host: String,
        port: u16,
        path: String,
        tls: Option<Arc<rustls::ClientConfig>>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Quic { host, port, .. } => write!(f, "quic://{host}:{port}"),
            Target::WebSocket {
                host,
                port,
                path,
                tls,
            } => {
                let scheme = if tls.is_some() { "wss" } else { "ws" };
                write!(f, "{scheme}://{host}:{port}{path}")
            }
        }
    }
}

/// What a read returns.
#[derive(Debug)]
pub(crate) enum Incoming {
    Frame(ServerFrame),
    /// The link ended; the text says why (for logs).
    Closed(String),
}

enum Outgoing {
    Frame(ClientFrame),
    Pong(Bytes),
    /// Write what is queued, say goodbye, stop.
    Close,
}

/// A live connection. Dropping it tears the writer task down.
#[derive(Debug)]
pub(crate) struct Link {
    tx: mpsc::UnboundedSender<Outgoing>,
    /// Taken by the session, which reads in its own task.
    pub(crate) reader: Option<Reader>,
    tasks: Vec<JoinHandle<()>>,
    quic: Option<quinn::Connection>,
    /// `typing` goes as a QUIC datagram (the negotiated version allows it).
    datagrams: bool,
}

type WsRead = fastwebsockets::WebSocketRead<tokio::io::ReadHalf<TokioIo<hyper::upgrade::Upgraded>>>;

/// The reading side of a link. Reads are not cancel-safe: keep one in flight until it
/// completes (see [`read`]).
#[derive(Debug)]
pub(crate) struct Reader(Side);

impl Reader {
    /// A reader whose link already ended.
    pub(crate) fn ended() -> Self {
        Reader(Side::Ended)
    }
}

enum Side {
    /// WebSocket messages; pings are answered through the writer.
    Ws {
        ws: WsRead,
        messages: ws::Assembler,
        pong: mpsc::UnboundedSender<Outgoing>,
    },
    /// Length-delimited postcard frames on a QUIC stream, and `typing` frames in
    /// datagrams beside it (PROTOCOL.md §1.1).
    Quic {
        recv: quinn::RecvStream,
        decoder: StreamDecoder<ServerFrame>,
        buf: BytesMut,
        connection: quinn::Connection,
        /// A frame came on the stream, so `welcome` was read: datagrams count from
        /// then on.
        welcomed: bool,
        /// Until the connection says there are no more datagrams.
        datagrams_open: bool,
    },
    /// Reading ended; `next` reports it again.
    Ended,
}

impl std::fmt::Debug for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Ws { .. } => "WebSocket",
            Side::Quic { .. } => "QUIC",
            Side::Ended => "ended",
        })
    }
}

/// One read that owns its reader, so a session can keep it in flight across its
/// `select!` rounds and start the next read from what this one returns.
pub(crate) async fn read(mut reader: Reader) -> (Reader, Incoming) {
    let incoming = reader.0.next().await;
    if matches!(incoming, Incoming::Closed(_)) {
        reader = Reader::ended();
    }
    (reader, incoming)
}

impl Side {
    /// The next frame, or why the link ended.
    async fn next(&mut self) -> Incoming {
        match self {
            Side::Ws { ws, messages, pong } => loop {
                let frame = match ws
                    .read_frame(&mut |_: Frame<'_>| async { Ok::<(), std::io::Error>(()) })
                    .await
                {
                    Ok(frame) => frame,
                    Err(e) => return Incoming::Closed(e.to_string()),
                };
                let Some(opcode) = ws::Opcode::from_wire(frame.opcode as u8) else {
                    return Incoming::Closed("reserved opcode from the server".into());
                };
                let message = match messages.add(opcode, frame.fin, &frame.payload) {
                    Ok(Some(ws::Assembled::Message(message))) => message,
                    Ok(Some(ws::Assembled::Ping(payload))) => {
                        let _ = pong.send(Outgoing::Pong(payload));
                        continue;
                    }
                    Ok(Some(ws::Assembled::Close { code, reason })) => {
                        return Incoming::Closed(format!(
                            "closed by the server ({code:?} {reason})"
                        ));
                    }
                    Ok(Some(ws::Assembled::Pong) | None) => continue,
                    Err(e) => return Incoming::Closed(e.to_string()),
                };
                if let Some(incoming) = decoded(codec::decode_postcard(&message)) {
                    return incoming;
                }
            },
            Side::Quic {
                recv,
                decoder,
                buf,
                connection,
                welcomed,
                datagrams_open,
            } => loop {
                loop {
                    match decoder.decode(buf) {
                        Ok(Some(frame)) => {
                            *welcomed = true;
                            if let Some(incoming) = decoded(frame) {
                                return incoming;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return Incoming::Closed(format!("stream out of sync: {e}")),
                    }
                }
                // Both reads are cancel-safe: what one of them has not returned stays
                // in the connection for the next round.
                let chunk = tokio::select! {
                    chunk = recv.read_chunk(64 * 1024, true) => chunk,
                    datagram = connection.read_datagram(), if *datagrams_open => {
                        match datagram {
                            Ok(datagram) => match codec::decode_datagram::<ServerFrame>(&datagram) {
                                Ok(frame) if *welcomed && frame.datagram_allowed() => {
                                    return Incoming::Frame(frame);
                                }
                                // Anything else is discarded (PROTOCOL.md §1.1).
                                Ok(frame) => tracing::debug!(kind = frame.kind(), welcomed = *welcomed, "datagram discarded"),
                                Err(e) => tracing::debug!(error = %e, "undecodable datagram discarded"),
                            },
                            // The stream reports how the connection ended.
                            Err(_) => *datagrams_open = false,
                        }
                        continue;
                    }
                };
                match chunk {
                    Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                    Ok(None) => return Incoming::Closed("the server finished the stream".into()),
                    Err(e) => return Incoming::Closed(chain(&e)),
                }
            },
            Side::Ended => Incoming::Closed("the link already ended".into()),
        }
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outgoing::Frame(frame) => write!(f, "Frame({})", frame.kind()),
            Outgoing::Pong(_) => f.write_str("Pong"),
            Outgoing::Close => f.write_str("Close"),
        }
    }
}

impl Link {
    /// Queues a frame for the writer (never blocks: the session bounds what is in
    /// flight).
    pub(crate) fn send(&self, frame: ClientFrame) {
        if self.datagrams
            && frame.datagram_allowed()
            && let Some(connection) = &self.quic
            && let Ok(encoded) = codec::encode_postcard(&frame)
            && encoded.payload_len() <= MAX_DATAGRAM
            // Never waits: when the send buffer is full, the oldest queued one goes.
            && connection.send_datagram(encoded.payload()).is_ok()
        {
            return;
        }
        let _ = self.tx.send(Outgoing::Frame(frame));
    }

    /// Sends `typing` as QUIC datagrams from now on, where the server takes them: the
    /// negotiated version allows it (PROTOCOL.md §1.1).
    pub(crate) fn use_datagrams(&mut self) {
        self.datagrams = true;
    }

    /// Ends the link politely: pending frames are written, then the transport closes.
    pub(crate) async fn close(mut self) {
        let _ = self.tx.send(Outgoing::Close);
        if let Some(writer) = self.tasks.pop() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
        }
        if let Some(c) = &self.quic {
            c.close(0u32.into(), b"bye");
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(c) = &self.quic {
            c.close(0u32.into(), b"");
        }
    }
}

/// Opens a link to `target`.
pub(crate) async fn connect(target: &Target, quic: Option<&quinn::Endpoint>) -> Result<Link> {
    match target {
        Target::Quic {
            host, port, tls, ..
        } => {
            let endpoint = quic.ok_or_else(|| Error::Config("no QUIC endpoint".into()))?;
            connect_quic(endpoint, host, *port, tls.clone()).await
        }
        Target::WebSocket {
            host,
            port,
            path,
            tls,
            ..
        } => {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|e| Error::Unreachable(format!("{host}:{port}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let authority = format!("{host}:{port}");
            match tls {
                None => connect_ws(tcp, &authority, path).await,
                Some(config) => {
                    let name = crate::tls::server_name(host)?;
                    let stream = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| Error::connect(&e))?;
                    connect_ws(stream, &authority, path).await
                }
            }
        }
    }
}

struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

async fn connect_ws<S>(stream: S, authority: &str, path: &str) -> Result<Link>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let req = Request::builder()
        .method("GET")
        .uri(path)
        .header(header::HOST, authority)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .header(header::SEC_WEBSOCKET_PROTOCOL, WS_SUBPROTOCOL_POSTCARD)
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::Config(format!("bad WebSocket URL: {e}")))?;
    let (ws, response) = fastwebsockets::handshake::client(&SpawnExecutor, req, stream)
        .await
        .map_err(|e| match e {
            WebSocketError::InvalidStatusCode(code) => Error::Api {
                status: code,
                code: "upgrade_refused".into(),
                message: format!("the server refused the WebSocket upgrade on {path}"),
            },
            other => Error::connect(&other),
        })?;
    let chosen = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    if chosen != Some(WS_SUBPROTOCOL_POSTCARD) {
        return Err(Error::Protocol(format!(
            "the server chose subprotocol {chosen:?}, not {WS_SUBPROTOCOL_POSTCARD}"
        )));
    }
    let io: TokioIo<hyper::upgrade::Upgraded> = ws.into_inner();
    let (read, write) = tokio::io::split(io);
    let (mut ws_read, mut ws_write) =
        fastwebsockets::after_handshake_split(read, tokio::io::BufWriter::new(write), Role::Client);
    ws_read.set_auto_close(false);
    ws_read.set_auto_pong(false);
    ws_read.set_max_message_size(MAX_SERVER_FRAME);
    ws_write.set_writev(false);

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outgoing>();
    let reader = Reader(Side::Ws {
        ws: ws_read,
        messages: ws::Assembler::new(false, MAX_SERVER_FRAME),
        pong: out_tx.clone(),
    });
    let writer = tokio::spawn(async move {
        'write: while let Some(first) = out_rx.recv().await {
            let mut next = Some(first);
            // Write everything queued, then flush once.
            while let Some(item) = next {
                let frame = match item {
                    Outgoing::Frame(frame) => match codec::encode_postcard(&frame) {
                        Ok(encoded) => Frame::binary(Payload::Owned(encoded.payload().to_vec())),
                        Err(e) => {
                            tracing::warn!(error = %e, kind = frame.kind(), "frame not sent");
                            next = out_rx.try_recv().ok();
                            continue;
                        }
                    },
                    Outgoing::Pong(data) => Frame::pong(Payload::Owned(data.to_vec())),
                    Outgoing::Close => break 'write,
                };
                if ws_write.write_frame(frame).await.is_err() {
                    return;
                }
                next = out_rx.try_recv().ok();
            }
            if ws_write.flush().await.is_err() {
                return;
            }
        }
        // The session is done with this link: say goodbye.
        let _ = ws_write
            .write_frame(Frame::close(1000, b"client closing"))
            .await;
        let _ = ws_write.flush().await;
    });
    Ok(Link {
        tx: out_tx,
        reader: Some(reader),
        tasks: vec![writer],
        quic: None,
        datagrams: false,
    })
}

/// What a decoded frame means for the session: frames of a kind this client does not
/// know are skipped (`None`; a newer server), anything else undecodable ends the link.
fn decoded(
    decoded: std::result::Result<ServerFrame, chat_proto::error::DecodeError>,
) -> Option<Incoming> {
    match decoded {
        Ok(frame) => Some(Incoming::Frame(frame)),
        Err(e @ chat_proto::error::DecodeError::UnknownKind(_)) => {
            tracing::debug!(error = %e, "skipping a frame of an unknown kind");
            None
        }
        Err(e) => Some(Incoming::Closed(format!(
            "undecodable frame from the server: {e}"
        ))),
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| Error::Unreachable(format!("{host}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| Error::Unreachable(format!("{host}: no address")))
}

/// Bytes of datagrams kept per connection and direction, waiting to be read or sent.
const DATAGRAM_BUFFER: usize = 4 * 1024;

/// A client endpoint able to reach `target` (IPv4 or IPv6 like the server's address).
pub(crate) async fn quic_endpoint(host: &str, port: u16) -> Result<quinn::Endpoint> {
    let addr = resolve(host, port).await?;
    let local: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    quinn::Endpoint::client(local).map_err(|e| Error::Unreachable(format!("UDP socket: {e}")))
}

/// The QUIC client configuration for `tls` (ALPN `chat/1`).
pub(crate) fn quic_config(tls: Arc<rustls::ClientConfig>) -> Result<quinn::ClientConfig> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| Error::Tls(format!("not usable for QUIC: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(std::time::Duration::from_secs(10)))
        // Datagrams carry `typing` alone (PROTOCOL.md §1.1): a few small ones kept in
        // each direction; past that the oldest go.
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_BUFFER);
    config.transport_config(Arc::new(transport));
    Ok(config)
}

async fn connect_quic(
    endpoint: &quinn::Endpoint,
    host: &str,
    port: u16,
    config: quinn::ClientConfig,
) -> Result<Link> {
    let addr = resolve(host, port).await?;
    let name = host.trim_matches(['[', ']']);
    let connection = endpoint
        .connect_with(config, addr, name)
        .map_err(|e| Error::Config(format!("QUIC: {e}")))?
        .await
        .map_err(|e| Error::connect(&e))?;
    let (mut send, recv) = connection.open_bi().await.map_err(|e| Error::connect(&e))?;

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outgoing>();
    let reader = Reader(Side::Quic {
        recv,
        decoder: StreamDecoder::new(),
        buf: BytesMut::new(),
        connection: connection.clone(),
        welcomed: false,
        datagrams_open: true,
    });
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(16 * 1024);
        let mut closing = false;
        while let Some(first) = out_rx.recv().await {
            batch.clear();
            let mut next = Some(first);
            while let Some(item) = next {
                match item {
                    Outgoing::Frame(frame) => match codec::encode_postcard(&frame) {
                        Ok(encoded) => batch.extend_from_slice(&encoded.length_delimited()),
                        Err(e) => tracing::warn!(error = %e, kind = frame.kind(), "frame not sent"),
                    },
                    Outgoing::Pong(_) => {}
                    Outgoing::Close => {
                        closing = true;
                        break;
                    }
                }
                next = if batch.len() < 64 * 1024 {
                    out_rx.try_recv().ok()
                } else {
                    None
                };
            }
            if send.write_all(&batch).await.is_err() {
                return;
            }
            if closing {
                break;
            }
        }
        let _ = send.finish();
        let _ = send.stopped().await;
    });
    Ok(Link {
        tx: out_tx,
        reader: Some(reader),
        tasks: vec![writer],
        quic: Some(connection),
        datagrams: false,
    })
}
