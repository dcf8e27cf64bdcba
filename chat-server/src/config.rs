//! The server's one configuration struct: every setting by flag or environment
//! variable, with the defaults a newcomer needs (no set-up at all).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// chat-server: accounts, conversations and real-time chat over HTTP, WebSocket and
/// QUIC. With no flags it serves http://127.0.0.1:8080/ with an SQLite database in the
/// current directory.
#[derive(Clone, Debug, Parser)]
#[command(name = "chat-server", version, about, long_about = None)]
pub struct Config {
    /// Address of the HTTP listener (API, WebSocket, web UI, health and metrics).
    #[arg(long, env = "CHAT_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Address of the QUIC listener (UDP; ALPN `chat/1`).
    #[arg(long, env = "CHAT_QUIC_ADDR", default_value = "127.0.0.1:4433")]
    pub quic_addr: SocketAddr,

    /// TLS certificate chain (PEM) for QUIC. Default: a self-signed development
    /// certificate generated in the data directory on first start.
    #[arg(long, env = "CHAT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for QUIC, with --tls-cert.
    #[arg(long, env = "CHAT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Most simultaneous QUIC connections; more are refused before their handshake.
    #[arg(long, env = "CHAT_MAX_QUIC_CONNECTIONS", default_value_t = 20_000)]
    pub max_quic_connections: usize,

    /// Directory for the default database, the token signing key and certificates.
    #[arg(long, env = "CHAT_DATA_DIR", default_value = ".")]
    pub data_dir: PathBuf,

    /// Database URL: `sqlite://PATH` or `postgres://USER@HOST/DB`. Default: SQLite at
    /// DATA_DIR/chat.db.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Redis URL (`redis://HOST:PORT`) of the cluster bus. Set it on every node of a
    /// deployment that runs several nodes on one PostgreSQL database; without it the
    /// server runs as a single node.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Redis pub/sub channel of the cluster bus; the nodes of one deployment share it.
    #[arg(long, env = "CHAT_REDIS_CHANNEL", default_value = "chat:bus")]
    pub redis_channel: String,

    /// Directory of the built web UI to serve at `/`.
    #[arg(long, env = "CHAT_WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// Log format.
    #[arg(long, env = "CHAT_LOG_FORMAT", value_enum, default_value = "human")]
    pub log_format: LogFormat,

    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "CHAT_ACCESS_TOKEN_TTL", default_value_t = 900)]
    pub access_token_ttl: u64,

    /// Lifetime of refresh tokens, in seconds.
    #[arg(long, env = "CHAT_REFRESH_TOKEN_TTL", default_value_t = 30 * 24 * 3600)]
    pub refresh_token_ttl: u64,

    /// Mark the refresh cookie `Secure` (set this when clients reach the server over
    /// HTTPS, for example behind a TLS-terminating proxy).
    #[arg(long, env = "CHAT_SECURE_COOKIES")]
    pub secure_cookies: bool,

    /// Password hashes computed at once (each takes ~19 MiB and tens of ms of CPU).
    #[arg(long, env = "CHAT_HASHING_CONCURRENCY", default_value_t = default_hashing_concurrency())]
    pub hashing_concurrency: usize,

    /// Origins (`scheme://host[:port]`) allowed to open WebSocket connections besides the
    /// server's own; comma-separated.
    #[arg(long, env = "CHAT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Messages a user may send per second, sustained.
    #[arg(long, env = "CHAT_SEND_RATE", default_value_t = 20)]
    pub send_rate: u32,

    /// Messages a user may send in a burst above the sustained rate.
    #[arg(long, env = "CHAT_SEND_BURST", default_value_t = 100)]
    pub send_burst: u32,

    /// Seconds an HTTP keep-alive connection may sit idle between requests.
    #[arg(long, env = "CHAT_HTTP_IDLE_TIMEOUT", default_value_t = 60)]
    pub http_idle_timeout: u64,

    /// Most simultaneous HTTP connections (WebSocket connections stop counting once
    /// upgraded); more are closed as they arrive.
    #[arg(long, env = "CHAT_MAX_HTTP_CONNECTIONS", default_value_t = 10_000)]
    pub max_http_connections: usize,

    /// Where files' bytes are kept: a directory (a path or `file:///PATH`), or an
    /// S3-compatible bucket `s3://BUCKET[/PREFIX]` (a build with the `s3` feature) that
    /// all nodes of a deployment share, its endpoint, region and credentials from the
    /// standard `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`). Default:
    /// DATA_DIR/files.
    #[arg(long, env = "CHAT_FILE_STORE")]
    pub file_store: Option<String>,

    /// Settings of an S3 file store over those of the environment (object_store's
    /// configuration keys, such as `aws_endpoint`), for programs that embed the server.
    #[arg(skip)]
    pub file_store_options: Vec<(String, String)>,

    /// Largest file a user may upload, in bytes; a larger announced `Upload-Length` is
    /// refused (413) before any byte is stored.
    #[arg(long, env = "CHAT_MAX_FILE_SIZE", default_value_t = 100 * 1024 * 1024)]
    pub max_file_size: u64,

    /// Bytes of files each user may store, finished and unfinished uploads together.
    #[arg(long, env = "CHAT_FILE_QUOTA", default_value_t = 1024 * 1024 * 1024)]
    pub file_quota: u64,

    /// Unfinished uploads a user may have at once.
    #[arg(long, env = "CHAT_MAX_UPLOADS", default_value_t = 10)]
    pub max_uploads: u32,

    /// Hours an unfinished upload is kept before it is collected.
    #[arg(long, env = "CHAT_UPLOAD_EXPIRY_HOURS", default_value_t = 24)]
    pub upload_expiry_hours: u64,

    /// Milliseconds a new real-time connection has to send `hello`.
    #[arg(long, env = "CHAT_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,

    /// Seconds allowed for in-flight work to finish on shutdown.
    #[arg(long, env = "CHAT_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u64,
}

fn default_hashing_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl Config {
    /// The database URL to open.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("chat.db").display()))
    }

    /// Access token lifetime.
    pub fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl)
    }

    /// Refresh token lifetime.
    pub fn refresh_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_token_ttl)
    }

    /// A configuration for tests: ephemeral port, the given data directory.
    pub fn for_tests(data_dir: &std::path::Path) -> Self {
        let mut config = Config::parse_from(["chat-server"]);
        config.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.quic_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.data_dir = data_dir.to_path_buf();
        config.shutdown_timeout = 5;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_set_up() {
        let c = Config::parse_from(["chat-server"]);
        assert_eq!(c.http_addr, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(c.database_url(), "sqlite://./chat.db");
        assert_eq!(c.access_ttl(), Duration::from_secs(900));
        assert_eq!(c.log_format, LogFormat::Human);
    }

    #[test]
    fn flags_override_defaults() {
        let c = Config::parse_from([
            "chat-server",
            "--http-addr",
            "0.0.0.0:9000",
            "--data-dir",
            "/var/lib/chat",
            "--log-format",
            "json",
        ]);
        assert_eq!(c.http_addr.port(), 9000);
        assert_eq!(c.database_url(), "sqlite:///var/lib/chat/chat.db");
        assert_eq!(c.log_format, LogFormat::Json);
    }
}
