//! Bots and tools built on `chat-sdk`; the binaries are in `src/bin`. This library
//! holds what they share: connection options on the command line.

use anyhow::Context as _;
use chat_sdk::{ClientBuilder, Trust};

/// Where and how to connect, as command-line options.
#[derive(Clone, Debug, clap::Args)]
pub struct ConnectArgs {
    /// Real-time endpoint: ws://host:port, wss://host:port or quic://host:port.
    #[arg(long, env = "CHAT_URL", default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// HTTP API base URL (needed with quic://; defaults to the WebSocket's host).
    #[arg(long, env = "CHAT_API_URL")]
    pub api_url: Option<String>,
    /// Trust only this certificate: a SHA-256 fingerprint (as chat-server prints it)
    /// or a PEM file such as the server's quic-cert.pem.
    #[arg(long, env = "CHAT_PIN")]
    pub pin: Option<String>,
    /// End-to-end encryption: this device's key file, created (owner-only) if missing.
    /// Without it, encrypted conversations cannot be read or written.
    #[arg(long, env = "CHAT_DEVICE_KEY")]
    pub device_key: Option<std::path::PathBuf>,
}

impl ConnectArgs {
    /// A builder for these options (credentials still to be added).
    pub fn builder(&self, client_name: &str) -> anyhow::Result<ClientBuilder> {
        let mut builder = ClientBuilder::new(&self.url).client_name(client_name);
        if let Some(api) = &self.api_url {
            builder = builder.api_url(api);
        }
        if let Some(pin) = &self.pin {
            let trust = if std::path::Path::new(pin).exists() {
                Trust::certificate_file(pin)
            } else {
                Trust::fingerprint(pin)
            }
            .with_context(|| format!("--pin {pin}"))?;
            builder = builder.trust(trust);
        }
        if let Some(path) = &self.device_key {
            builder = builder.device_key(path);
        }
        Ok(builder)
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A media type from a file name's extension (the common ones; anything else is
/// `application/octet-stream`).
pub fn media_type(path: &std::path::Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "txt" | "md" => "text/plain",
        "zip" => "application/zip",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        _ => "application/octet-stream",
    }
}
