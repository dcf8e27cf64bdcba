//! The QUIC listener: ALPN `chat/1`, one client-opened bidirectional stream per
//! connection carrying length-delimited postcard frames (PROTOCOL.md §1.1), served by
//! the same session driver as WebSocket. `typing` may also travel as datagrams both
//! ways, with sessions that negotiated version 1.2.
//!
//! Without `--tls-cert`/`--tls-key` a self-signed certificate for `localhost` and
//! `127.0.0.1` is generated on first start and kept in the data directory, so clients
//! can pin it by file or by its SHA-256 fingerprint (logged at start).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::{Bytes, BytesMut};
use chat_proto::codec::StreamDecoder;
use chat_proto::error::DecodeError;
use chat_proto::frame::ClientFrame;
use chat_proto::limits::HANDSHAKE_TIMEOUT;
use chat_proto::version::ALPN;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

use crate::app::App;
use crate::wire::{
    CloseReason, Datagrams, FrameReader, FrameWriter, Outbound, ReadError, ReadEvent, Wire,
};

/// Bytes of datagrams kept per connection and direction, waiting to be read or sent.
const DATAGRAM_BUFFER: usize = 4 * 1024;

const CERT_FILE: &str = "quic-cert.pem";
const KEY_FILE: &str = "quic-key.pem";

/// Where the QUIC certificate came from, for the startup message.
#[derive(Clone, Debug)]
pub struct CertInfo {
    /// The certificate file.
    pub path: PathBuf,
    /// SHA-256 of the leaf certificate (DER), as colon-separated hex.
    pub fingerprint: String,
}

/// The SHA-256 fingerprint of a DER certificate, `AB:CD:…`.
pub fn fingerprint(cert: &[u8]) -> String {
    Sha256::digest(cert)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn write_private(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// Loads the configured certificate, or the development one (created if missing).
fn load_tls(
    app: &App,
) -> anyhow::Result<(
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    CertInfo,
)> {
    let config = app.config();
    let (cert_path, key_path) = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let cert_path = config.data_dir.join(CERT_FILE);
            let key_path = config.data_dir.join(KEY_FILE);
            if !cert_path.exists() || !key_path.exists() {
                let names = vec![
                    "localhost".to_owned(),
                    "127.0.0.1".to_owned(),
                    "::1".to_owned(),
                ];
                let certified = rcgen::generate_simple_self_signed(names)
                    .context("generating a certificate")?;
                write_private(
                    &key_path,
                    certified.signing_key.serialize_pem().as_bytes(),
                    0o600,
                )?;
                write_private(&cert_path, certified.cert.pem().as_bytes(), 0o644)?;
                tracing::info!(path = %cert_path.display(), "generated a self-signed QUIC certificate");
            }
            (cert_path, key_path)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert_path.display()))?;
    let Some(leaf) = certs.first() else {
        bail!("{} holds no certificate", cert_path.display());
    };
    let info = CertInfo {
        path: cert_path.clone(),
        fingerprint: fingerprint(leaf),
    };
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;
    Ok((certs, key, info))
}

/// A bound QUIC endpoint.
#[derive(Debug)]
pub struct QuicListener {
    endpoint: quinn::Endpoint,
    /// The certificate clients should expect.
    pub cert: CertInfo,
}

impl QuicListener {
    /// Binds the endpoint with the protocol's transport limits.
    pub fn bind(app: &App) -> anyhow::Result<Self> {
        let (certs, key, cert) = load_tls(app)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("loading the QUIC certificate and key")?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .context("QUIC TLS configuration")?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        // One bidirectional stream per connection, nothing else: a client that opens
        // more cannot make the server hold state for them.
        transport
            .max_concurrent_bidi_streams(1u32.into())
            .max_concurrent_uni_streams(0u32.into())
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(chat_proto::limits::IDLE_TIMEOUT)
                    .context("idle timeout")?,
            ))
            .stream_receive_window((256u32 * 1024).into())
            .receive_window((512u32 * 1024).into())
            // Datagrams carry `typing` alone (PROTOCOL.md §1.1): a few small ones
            // buffered per connection in each direction; past that the oldest go.
            .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
            .datagram_send_buffer_size(DATAGRAM_BUFFER);
        server.transport_config(Arc::new(transport));
        server.max_incoming(app.config().max_quic_connections.max(1));
        let endpoint = quinn::Endpoint::server(server, app.config().quic_addr)
            .with_context(|| format!("binding QUIC on {}", app.config().quic_addr))?;
        Ok(Self { endpoint, cert })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Accepts connections until the endpoint is closed.
    pub async fn serve(self, app: App) {
        let live = Arc::new(AtomicUsize::new(0));
        let max = app.config().max_quic_connections.max(1);
        let mut shutdown = app.shutdown_signal();
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => match incoming {
                    Some(i) => i,
                    None => break,
                },
                _ = shutdown.changed() => break,
            };
            if live.load(Ordering::Acquire) >= max {
                incoming.refuse();
                continue;
            }
            let app = app.clone();
            let live = live.clone();
            live.fetch_add(1, Ordering::AcqRel);
            app.sessions().clone().spawn(async move {
                let peer = incoming.remote_address();
                if let Err(e) = connection(app, incoming).await {
                    tracing::debug!(%peer, error = %e, "QUIC connection ended");
                }
                live.fetch_sub(1, Ordering::AcqRel);
            });
        }
        // Sessions send go_away and close their connections themselves; give the
        // endpoint a moment to flush, then close it.
        self.endpoint.wait_idle().await;
    }
}

async fn connection(app: App, incoming: quinn::Incoming) -> anyhow::Result<()> {
    let peer = incoming.remote_address();
    let connection = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming.accept()?)
        .await
        .context("QUIC handshake timed out")??;
    let alpn = connection
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    if alpn.as_deref() != Some(ALPN) {
        connection.close(1u32.into(), b"ALPN chat/1 required");
        bail!("client did not negotiate ALPN chat/1");
    }
    let (send, recv) = tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.accept_bi())
        .await
        .context("no stream opened")??;
    let reader = QuicReader {
        recv,
        buf: BytesMut::new(),
        decoder: StreamDecoder::new(),
        connection: connection.clone(),
        datagrams_open: true,
    };
    let writer = QuicWriter {
        send,
        connection: connection.clone(),
    };
    crate::session::run(app, Wire::Stream, reader, writer, peer.to_string()).await;
    Ok(())
}

struct QuicReader {
    recv: quinn::RecvStream,
    buf: BytesMut,
    decoder: StreamDecoder<ClientFrame>,
    /// For the datagrams that arrive beside the stream.
    connection: quinn::Connection,
    /// Until the connection says it has none (the peer sends none, or it is gone).
    datagrams_open: bool,
}

impl FrameReader for QuicReader {
    async fn next(&mut self) -> Result<ReadEvent, ReadError> {
        loop {
            match self.decoder.next_payload(&mut self.buf) {
                Ok(Some(payload)) => return Ok(ReadEvent::Frame(payload)),
                Ok(None) => {}
                Err(DecodeError::TooLarge { .. }) => return Err(ReadError::TooLarge),
                Err(e) => return Err(ReadError::Protocol(e.to_string())),
            }
            if self.buf.is_empty() {
                // Let go of the last chunk's allocation while waiting for the next.
                self.buf = BytesMut::new();
            }
            // Both reads are cancel-safe: what one of them has not returned stays in
            // the connection for the next round.
            let chunk = tokio::select! {
                chunk = self.recv.read_chunk(64 * 1024, true) => chunk,
                datagram = self.connection.read_datagram(), if self.datagrams_open => {
                    match datagram {
                        Ok(datagram) => return Ok(ReadEvent::Datagram(datagram)),
                        // The stream reports how the connection ended.
                        Err(_) => self.datagrams_open = false,
                    }
                    continue;
                }
            };
            match chunk {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    return if self.buf.is_empty() {
                        Ok(ReadEvent::Closed)
                    } else {
                        Err(ReadError::Protocol("stream ended inside a frame".into()))
                    };
                }
                Err(e) => return Err(ReadError::Io(e.to_string())),
            }
        }
    }
}

struct QuicWriter {
    send: quinn::SendStream,
    connection: quinn::Connection,
}

/// A connection's datagrams, for the hub (`typing`, PROTOCOL.md §1.1).
#[derive(Debug)]
struct QuicDatagrams(quinn::Connection);

impl Datagrams for QuicDatagrams {
    fn send(&self, datagram: Bytes) -> bool {
        // Never waits: when the send buffer is full, the oldest queued datagram goes.
        self.0.send_datagram(datagram).is_ok()
    }
}

impl FrameWriter for QuicWriter {
    fn datagrams(&self) -> Option<Arc<dyn Datagrams>> {
        Some(Arc::new(QuicDatagrams(self.connection.clone())))
    }

    async fn write_batch(&mut self, batch: &[Outbound]) -> std::io::Result<()> {
        let mut chunks: Vec<Bytes> = batch
            .iter()
            .filter_map(|o| match o {
                Outbound::Frame(b) | Outbound::Raw(b) => Some(b.clone()),
                Outbound::Pong(_) => None,
            })
            .collect();
        self.send
            .write_all_chunks(&mut chunks)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    async fn close(&mut self, reason: CloseReason) {
        let _ = self.send.finish();
        // Let the peer read what was written before the connection goes.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.send.stopped()).await;
        let code = if reason == CloseReason::Normal || reason == CloseReason::GoingAway {
            0u32
        } else {
            1u32
        };
        self.connection.close(code.into(), b"");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_are_colon_hex() {
        let f = super::fingerprint(b"abc");
        assert_eq!(f.len(), 32 * 3 - 1);
        assert!(f.starts_with("BA:78:16:BF"));
    }
}
