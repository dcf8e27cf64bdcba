//! What the SDK's integration tests share: an in-process server and event helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_sdk::chat_proto::prelude::*;
use chat_sdk::{Client, ClientBuilder, Event, Events, Trust};
use chat_server::RunningServer;
use chat_server::config::Config;

pub(crate) const PASSWORD: &str = "correct horse battery";
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A server in-process on ephemeral ports with its own data directory.
pub(crate) struct TestServer {
    pub(crate) server: Option<RunningServer>,
    pub(crate) addrs: (SocketAddr, SocketAddr),
    pub(crate) dir: tempfile::TempDir,
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let server = Self::spawn(dir.path(), |_| {}).await;
        Self {
            addrs: (server.http_addr, server.quic_addr),
            server: Some(server),
            dir,
        }
    }

    pub(crate) async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let server = Self::spawn(dir.path(), tweak).await;
        Self {
            addrs: (server.http_addr, server.quic_addr),
            server: Some(server),
            dir,
        }
    }

    pub(crate) async fn spawn(dir: &Path, tweak: impl FnOnce(&mut Config)) -> RunningServer {
        let mut config = Config::for_tests(dir);
        // Tests send bursts; the rate limit has its own tests in chat-server.
        config.send_rate = 10_000;
        config.send_burst = 10_000;
        tweak(&mut config);
        chat_server::Server::bind(config)
            .await
            .expect("server starts")
            .spawn()
    }

    pub(crate) fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("running")
    }

    pub(crate) fn http(&self) -> SocketAddr {
        self.running().http_addr
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}", self.http())
    }

    pub(crate) fn cert(&self) -> PathBuf {
        self.running().quic_cert.path.clone()
    }

    pub(crate) fn quic(&self, name: &str) -> ClientBuilder {
        ClientBuilder::new(format!("quic://{}", self.running().quic_addr))
            .api_url(format!("http://{}", self.http()))
            .trust(Trust::certificate_file(self.cert()).expect("certificate"))
            .client_name(name)
    }

    pub(crate) fn ws(&self, name: &str) -> ClientBuilder {
        ClientBuilder::new(self.ws_url()).client_name(name)
    }

    pub(crate) async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await.expect("clean shutdown");
        }
    }

    /// Starts again on the same ports, data directory and SQLite file.
    pub(crate) async fn restart(&mut self) {
        let (http, quic) = self.addrs;
        self.stop().await;
        let server = Self::spawn(self.dir.path(), |c| {
            c.http_addr = http;
            c.quic_addr = quic;
        })
        .await;
        self.server = Some(server);
    }
    /// The server's data directory.
    pub(crate) fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every byte the server has written to its SQLite files (database and journal).
    pub(crate) fn stored_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).expect("data dir") {
            let path = entry.expect("entry").path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("chat.db"))
            {
                all.extend(std::fs::read(&path).expect("read database file"));
            }
        }
        all
    }
}

pub(crate) async fn next_event(events: &mut Events, mut pick: impl FnMut(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("client still running");
            if std::env::var_os("TEST_TRACE").is_some() {
                eprintln!("event: {event:?}");
            }
            if pick(&event) {
                return event;
            }
        }
    })
    .await
    .expect("event within the deadline")
}

pub(crate) async fn next_message(events: &mut Events) -> Entry {
    match next_event(events, |e| matches!(e, Event::Entry(_))).await {
        Event::Entry(m) => m,
        _ => unreachable!(),
    }
}

pub(crate) fn text(m: &Entry) -> &str {
    match m.body() {
        Some(Body::Text(t)) => t,
        Some(Body::Attachments(a)) => &a.text,
        Some(Body::Encrypted(_) | Body::SealedAttachments(_)) => "<encrypted>",
        None => "<not a message>",
    }
}

/// Whether `needle`'s bytes appear anywhere in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A new account `name` connected over WebSocket, with a device key at `key` if
/// given, and its events.
pub(crate) async fn user(
    server: &TestServer,
    name: &str,
    key: Option<&std::path::Path>,
) -> (Client, Events) {
    let mut builder = server.ws(name).register(name, PASSWORD, None);
    if let Some(path) = key {
        builder = builder.device_key(path);
    }
    let client = builder.connect().await.expect("connects");
    let events = client.events();
    (client, events)
}
