//! A minimal QUIC client speaking the chat protocol, for tests.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chat_proto::codec::{self, StreamDecoder};
use chat_proto::frame::{ClientFrame, Cursor, Hello, ServerFrame, Welcome};
use chat_proto::version::ProtocolVersion;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

pub struct QuicClient {
    pub connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: BytesMut,
    decoder: StreamDecoder<ServerFrame>,
    _endpoint: quinn::Endpoint,
}

/// Connects trusting exactly the server's certificate file, offering `alpn`.
pub async fn connect(addr: SocketAddr, cert: &Path, alpn: &[u8]) -> Result<QuicClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).map_err(|e| e.to_string())? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connection = endpoint
        .connect(addr, "localhost")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (send, recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    Ok(QuicClient {
        connection,
        send,
        recv,
        buf: BytesMut::new(),
        decoder: StreamDecoder::new(),
        _endpoint: endpoint,
    })
}

impl QuicClient {
    pub async fn login(
        addr: SocketAddr,
        cert: &Path,
        token: &str,
        resume: Vec<Cursor>,
    ) -> (Self, Welcome) {
        Self::login_at(addr, cert, token, resume, super::V1_2).await
    }

    /// Logs in announcing `version`.
    pub async fn login_at(
        addr: SocketAddr,
        cert: &Path,
        token: &str,
        resume: Vec<Cursor>,
        version: ProtocolVersion,
    ) -> (Self, Welcome) {
        let mut c = connect(addr, cert, chat_proto::version::ALPN)
            .await
            .expect("QUIC connection");
        c.send(&ClientFrame::Hello(Hello {
            version,
            token: token.to_owned(),
            client: "quic-test".into(),
            resume,
        }))
        .await;
        match c.recv().await {
            Some(ServerFrame::Welcome(w)) => (c, w),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, frame: &ClientFrame) {
        let bytes = codec::encode_postcard(frame)
            .expect("encodes")
            .length_delimited();
        self.send.write_all(&bytes).await.expect("written");
    }

    /// Sends `frame` as one QUIC datagram (postcard, no length prefix).
    pub fn send_datagram(&self, frame: &ClientFrame) {
        let bytes = codec::encode_postcard(frame).expect("encodes").payload();
        self.connection
            .send_datagram(bytes)
            .expect("the server takes datagrams");
    }

    /// The next datagram, decoded (5 s at most).
    pub async fn datagram(&self) -> ServerFrame {
        let bytes = tokio::time::timeout(Duration::from_secs(5), self.connection.read_datagram())
            .await
            .expect("a datagram within 5 s")
            .expect("connection open");
        codec::decode_datagram(&bytes).expect("a valid datagram")
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("written");
    }

    /// The next frame, or `None` when the stream or connection ends (5 s at most).
    pub async fn recv(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf).expect("in sync") {
                return Some(frame.expect("valid frame"));
            }
            match tokio::time::timeout(
                Duration::from_secs(5),
                self.recv.read_chunk(64 * 1024, true),
            )
            .await
            {
                Ok(Ok(Some(chunk))) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(_) => return None,
                Err(_) => panic!("no frame within 5 s"),
            }
        }
    }

    pub async fn until<T>(&mut self, mut pick: impl FnMut(ServerFrame) -> Option<T>) -> T {
        loop {
            let frame = self.recv().await.expect("connection ended while waiting");
            if let Some(t) = pick(frame) {
                return t;
            }
        }
    }
}
