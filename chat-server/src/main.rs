//! `chat-server`: see `chat-server --help`.

use anyhow::Context as _;
use chat_server::config::{Config, LogFormat};
use clap::Parser as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // RUST_LOG: a default level and/or `target=level` pairs, e.g. `info,chat_server=debug`.
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) => spec.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("ignoring RUST_LOG={spec:?} ({e}); logging at info");
            Targets::new().with_default(tracing::Level::INFO)
        }),
        Err(_) => Targets::new().with_default(tracing::Level::INFO),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match config.log_format {
        LogFormat::Human => registry.with(logs.with_ansi(ansi)).init(),
        LogFormat::Json => registry.with(logs.json()).init(),
    }
    tracing::info!(backend = %chat_crypto::backend(), "cryptography");
    let server = chat_server::Server::bind(config)
        .await
        .context("starting chat-server")?;
    let addr = server.http_addr();
    let cert = server.quic_cert();
    let ui = match server.app().web() {
        Some(ui) => format!("web UI at http://{addr}/ ({ui})"),
        None => "no web UI (--web-dir serves one)".to_owned(),
    };
    eprintln!(
        "chat-server ready\n  HTTP API and WebSocket: http://{addr}/api, ws://{addr}/ws; {ui}\n  QUIC: quic://{} (certificate {}, SHA-256 {})",
        server.quic_addr(),
        cert.path.display(),
        cert.fingerprint
    );
    server.run_until_signal().await
}
