//! Building a [`Client`]: where, who, and whom to trust.

use std::sync::Arc;
use std::time::Duration;

use chat_proto::frame::Cursor;
use http::Uri;

use crate::api::{Credentials, TokenPair};
use crate::driver::Backoff;
use crate::error::{Error, Result};
use crate::tls::{self, Trust};
use crate::transport;
use crate::transport::Target;

/// Configures and connects a [`Client`](crate::Client).
///
/// ```no_run
/// # async fn run() -> Result<(), chat_sdk::Error> {
/// use chat_sdk::{ClientBuilder, Trust};
///
/// let client = ClientBuilder::new("quic://127.0.0.1:4433")
///     .api_url("http://127.0.0.1:8080")
///     .trust(Trust::certificate_file("quic-cert.pem")?)
///     .login("alice", "correct horse battery")
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct ClientBuilder {
    pub(crate) url: String,
    pub(crate) api_url: Option<String>,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) trust: Trust,
    pub(crate) client_name: String,
    pub(crate) resume: Vec<Cursor>,
    pub(crate) backoff: Backoff,
    pub(crate) connect_timeout: Duration,
    pub(crate) device_key: Option<std::path::PathBuf>,
    pub(crate) handler: Option<crate::driver::Handler>,
}

impl ClientBuilder {
    /// A client for the real-time endpoint at `url`: `ws://host:port`,
    /// `wss://host:port` (path `/ws` unless given) or `quic://host:port`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            api_url: None,
            credentials: None,
            trust: Trust::System,
            client_name: concat!("chat-sdk/", env!("CARGO_PKG_VERSION")).to_owned(),
            resume: Vec::new(),
            backoff: Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(30),
            },
            connect_timeout: Duration::from_secs(10),
            device_key: None,
            handler: None,
        }
    }

    /// The HTTP API's base URL (`http://host:port`). Defaults to the WebSocket URL's
    /// host and port; required with `quic://`, which carries no HTTP.
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = Some(url.into());
        self
    }

    /// Signs in to an existing account.
    pub fn login(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(Credentials::Login {
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// Creates an account and signs in to it.
    pub fn register(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
        display_name: Option<String>,
    ) -> Self {
        self.credentials = Some(Credentials::Register {
            username: username.into(),
            password: password.into(),
            display_name,
        });
        self
    }

    /// Continues a login from tokens saved earlier ([`Client::tokens`](crate::Client::tokens)).
    pub fn tokens(mut self, tokens: TokenPair) -> Self {
        self.credentials = Some(Credentials::Tokens(tokens));
        self
    }

    /// Whom to trust for TLS (default: the system's roots).
    pub fn trust(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }

    /// The name the server logs for this client (at most 64 bytes).
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// Positions the application already has (saved from [`Client::cursors`](crate::Client::cursors)): the
    /// first connection replays everything after them.
    pub fn resume_from(mut self, cursors: impl IntoIterator<Item = Cursor>) -> Self {
        self.resume.extend(cursors);
        self
    }

    /// Reconnect delays: the first retry after about `initial`, doubling up to `max`.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Backoff {
            initial: initial.max(Duration::from_millis(1)),
            max: max.max(initial),
        };
        self
    }

    /// How long one connection attempt (transport and handshake) may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Enables end-to-end encryption with this device's key, kept in the file at
    /// `path`: created there on first use (owner-only permissions; a file others can
    /// read is refused) and registered with the server on every connect. Sends to
    /// encrypted conversations are then sealed for every member's every device, and
    /// encrypted messages arrive opened. Keep the file: a new key cannot read what was
    /// sealed for the old one.
    pub fn device_key(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.device_key = Some(path.into());
        self
    }

    /// Calls `handler` with every [`Event`](crate::Event), in order, on the
    /// connection's own task as it happens: no channel, no other task woken. It sees
    /// everything from the first connection on (so no backlog is kept for
    /// [`Client::events`](crate::Client::events), whose streams then all start when they subscribe).
    ///
    /// For cheap, non-blocking work: counting, recording, handing events to a channel
    /// of the application's choice. The connection waits while it runs, and a panic in
    /// it stops the client.
    ///
    /// [`Client::events`]: crate::Client::events
    pub fn on_event(mut self, handler: impl FnMut(&crate::events::Event) + Send + 'static) -> Self {
        self.handler = Some(crate::driver::Handler(Box::new(handler)));
        self
    }
}

/// Where a client connects, read from its URLs.
pub(crate) struct Parsed {
    pub(crate) target: Target,
    pub(crate) api: Uri,
    pub(crate) http_tls: Arc<rustls::ClientConfig>,
}

fn host_port(uri: &Uri, default_port: u16) -> Result<(String, u16)> {
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::Config(format!("no host in {uri}")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, uri.port_u16().unwrap_or(default_port)))
}

/// Reads the real-time URL (`quic://`, `ws://`, `wss://`) and the API URL.
pub(crate) fn parse(url: &str, api_url: Option<&str>, trust: &Trust) -> Result<Parsed> {
    let uri: Uri = url
        .parse()
        .map_err(|e| Error::Config(format!("not a URL: {url:?}: {e}")))?;
    // The HTTP connector negotiates ALPN itself.
    let http_tls = tls::client_config(trust, &[], false)?;
    let (target, default_api) = match uri.scheme_str() {
        Some("quic") => {
            let (host, port) = host_port(&uri, 4433)?;
            let tls = tls::client_config(trust, &[chat_proto::version::ALPN], true)?;
            (
                Target::Quic {
                    host,
                    port,
                    tls: transport::quic_config(tls)?,
                },
                None,
            )
        }
        Some(scheme @ ("ws" | "wss")) => {
            let secure = scheme == "wss";
            let (host, port) = host_port(&uri, if secure { 443 } else { 80 })?;
            let path = match uri.path_and_query().map(|p| p.as_str()) {
                None | Some("") | Some("/") => "/ws".to_owned(),
                Some(p) => p.to_owned(),
            };
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            let api = format!("{}://{authority}", if secure { "https" } else { "http" });
            (
                Target::WebSocket {
                    host,
                    port,
                    path,
                    tls: if secure {
                        Some(tls::client_config(trust, &[b"http/1.1"], false)?)
                    } else {
                        None
                    },
                },
                Some(api),
            )
        }
        _ => {
            return Err(Error::Config(format!(
                "unsupported URL {url:?}: use quic://, ws:// or wss://"
            )));
        }
    };
    let api = match api_url.map(str::to_owned).or(default_api) {
        Some(a) => a,
        None => {
            return Err(Error::Config(
                "a quic:// client needs the HTTP API address too: ClientBuilder::api_url".into(),
            ));
        }
    };
    let api: Uri = api
        .parse()
        .map_err(|e| Error::Config(format!("not a URL: {api:?}: {e}")))?;
    if !matches!(api.scheme_str(), Some("http" | "https")) || api.host().is_none() {
        return Err(Error::Config(format!(
            "the API URL must be http:// or https://, not {api}"
        )));
    }
    Ok(Parsed {
        target,
        api,
        http_tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str, api: Option<&str>) -> Result<(String, String)> {
        let trust = Trust::Pinned([0; 32]);
        parse(url, api, &trust).map(|p| (format!("{:?}", p.target), p.api.to_string()))
    }

    #[test]
    fn urls_pick_the_transport_and_the_api() {
        assert_eq!(
            target("ws://127.0.0.1:8080", None).unwrap(),
            (
                "ws://127.0.0.1:8080/ws".into(),
                "http://127.0.0.1:8080/".into()
            )
        );
        assert_eq!(
            target("wss://chat.example/realtime", None).unwrap(),
            (
                "wss://chat.example:443/realtime".into(),
                "https://chat.example/".into()
            )
        );
        assert_eq!(
            target("quic://[::1]:4433", Some("http://[::1]:8080")).unwrap(),
            ("quic://::1:4433".into(), "http://[::1]:8080/".into())
        );
        assert!(matches!(target("quic://h:1", None), Err(Error::Config(_))));
        assert!(matches!(target("http://h:1", None), Err(Error::Config(_))));
        assert!(matches!(
            target("ws://h:1", Some("ftp://x")),
            Err(Error::Config(_))
        ));
        assert!(matches!(target("not a url", None), Err(Error::Config(_))));
    }

    #[test]
    fn backoff_grows_jittered_and_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in 0..40 {
            let d = b.delay(attempt);
            let full = Duration::from_millis(100 * (1u64 << attempt.min(16))).min(b.max);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?} vs {full:?}");
        }
    }
}
