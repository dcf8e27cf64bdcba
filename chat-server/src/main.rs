//! `chat-server`: see `chat-server --help`.

use anyhow::Context as _;
use chat_server::config::{Config, LogFormat};
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match config.log_format {
        LogFormat::Human => logs.with_ansi(ansi).init(),
        LogFormat::Json => logs.json().init(),
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
    server.run(chat_server::server::shutdown_signal()).await
}
