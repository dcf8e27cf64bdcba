//! Binding the listeners and running until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::app::App;
use crate::auth::Tokens;
use crate::config::Config;
use crate::io::IdleIo;
use crate::quic::{CertInfo, QuicListener};

/// A server whose listeners are bound, ready to run.
#[derive(Debug)]
pub struct Server {
    app: App,
    #[cfg(feature = "cluster")]
    bus: Option<std::sync::Arc<crate::cluster::Bus>>,
    listener: TcpListener,
    http_addr: SocketAddr,
    quic: QuicListener,
    quic_addr: SocketAddr,
}

impl Server {
    /// Opens the database (migrating it), loads or creates the signing key, and binds
    /// the HTTP listener.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let url = config.database_url();
        let store = crate::store::open(&url)
            .await
            .with_context(|| format!("opening database {}", redact(&url)))?;
        let tokens =
            Tokens::load_or_create(&config.data_dir, config.access_ttl(), config.refresh_ttl())?;
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP listener on {}", config.http_addr))?;
        let http_addr = listener.local_addr()?;
        tracing::info!(backend = store.backend(), database = %redact(&url), "storage ready");
        let redis = config.redis_url.clone();
        let channel = config.redis_channel.clone();
        let blobs = match &config.file_store {
            Some(setting) => crate::blobs::Blobs::from_setting(setting, &config.file_store_options),
            None => crate::blobs::Blobs::open(&config.data_dir.join("files")),
        }
        .context("opening the file store")?;
        tracing::info!(kind = blobs.kind(), "file store ready");
        let app = App::new(config, store, tokens, blobs);
        #[cfg(feature = "cluster")]
        let bus = match redis {
            Some(url) => Some(
                crate::cluster::start(&url, &channel, app.hub().clone())
                    .with_context(|| format!("joining the cluster bus at {}", redact(&url)))?,
            ),
            None => None,
        };
        #[cfg(not(feature = "cluster"))]
        if redis.is_some() {
            let _ = channel;
            anyhow::bail!(
                "--redis-url is set, but this chat-server was built without the cluster bus: build it with `--features cluster`"
            );
        }
        let quic = QuicListener::bind(&app)?;
        let quic_addr = quic.local_addr()?;
        Ok(Self {
            app,
            #[cfg(feature = "cluster")]
            bus,
            listener,
            http_addr,
            quic,
            quic_addr,
        })
    }

    /// The shared state (tests use it to reach the store directly).
    pub fn app(&self) -> &App {
        &self.app
    }

    /// The bound QUIC address (useful with port 0).
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The QUIC certificate clients should expect.
    pub fn quic_cert(&self) -> &CertInfo {
        &self.quic.cert
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves until SIGINT or SIGTERM ([`Server::run`] with [`shutdown_signal`]): what the
    /// binary does. Not generic, so the whole server is compiled into the library once
    /// rather than again into every binary that runs it.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        self.run(shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests
    /// finish (within the configured timeout) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Server {
            app,
            #[cfg(feature = "cluster")]
            bus,
            listener,
            http_addr,
            quic,
            quic_addr,
        } = self;
        tracing::info!(
            "listening on quic://{quic_addr} (certificate {}, SHA-256 {})",
            quic.cert.path.display(),
            quic.cert.fingerprint
        );
        let quic_task = tokio::spawn(quic.serve(app.clone()));
        let collector = tokio::spawn(crate::http::files::collect_expired(app.clone()));
        let backfill = tokio::spawn(backfill_search(app.clone()));
        let connections = TaskTracker::new();
        let live_http = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::pin!(shutdown);
        tracing::info!("listening on http://{http_addr}");
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of file descriptors and the like: back off briefly.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    if live_http.load(Ordering::Acquire) >= app.config().max_http_connections {
                        tracing::debug!(%peer, "HTTP connection limit reached; closing");
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let (stream, activity) = IdleIo::new(stream);
                    let idle = Duration::from_secs(app.config().http_idle_timeout.max(1));
                    let live = live_http.clone();
                    live.fetch_add(1, Ordering::AcqRel);
                    let app = app.clone();
                    let service = service_fn(move |req| crate::http::handle(app.clone(), peer, req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .max_buf_size(64 * 1024)
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    let mut stop = stop_rx.clone();
                    connections.spawn(async move {
                        tokio::pin!(conn);
                        let result = tokio::select! {
                            result = conn.as_mut() => result,
                            // On shutdown, or after a keep-alive connection sat idle:
                            // finish the request in progress, if any, then close.
                            () = async {
                                tokio::select! {
                                    _ = stop.wait_for(|s| *s) => {}
                                    () = activity.idle_for(idle) => {}
                                }
                            } => {
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                        };
                        live.fetch_sub(1, Ordering::AcqRel);
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        let timeout = Duration::from_secs(app.config().shutdown_timeout);
        tracing::info!("shutting down: draining sessions and finishing in-flight requests");
        app.begin_shutdown();
        collector.abort();
        backfill.abort();
        let _ = stop_tx.send(true);
        connections.close();
        let drained = async {
            connections.wait().await;
            app.sessions().wait().await;
            let _ = quic_task.await;
        };
        if tokio::time::timeout(timeout, drained).await.is_err() {
            tracing::warn!("in-flight work did not finish within {timeout:?}");
        }
        #[cfg(feature = "cluster")]
        if let Some(bus) = &bus {
            // Other nodes learn that this node's users went offline here.
            bus.shutdown(Duration::from_secs(2)).await;
        }
        Ok(())
    }

    /// Runs in a background task; the handle stops it.
    pub fn spawn(self) -> RunningServer {
        let http_addr = self.http_addr;
        let quic_addr = self.quic_addr;
        let quic_cert = self.quic.cert.clone();
        let app = self.app.clone();
        let (tx, mut rx) = watch::channel(false);
        let task = tokio::spawn(self.run(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }));
        RunningServer {
            http_addr,
            quic_addr,
            quic_cert,
            app,
            stop: tx,
            task,
        }
    }
}

/// A server running in the background.
#[derive(Debug)]
pub struct RunningServer {
    /// Its HTTP address.
    pub http_addr: SocketAddr,
    /// Its QUIC address.
    pub quic_addr: SocketAddr,
    /// Its QUIC certificate.
    pub quic_cert: CertInfo,
    /// Its shared state.
    pub app: App,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Shuts it down gracefully and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("server task panicked")?
    }
}

/// Hides the password of a database URL for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

/// Indexes for search the messages stored before the index existed, newest first, a
/// batch at a time with pauses between, so serving traffic comes first; done once.
async fn backfill_search(app: App) {
    let mut seen = 0usize;
    loop {
        match app.store().backfill_search(500).await {
            Ok(0) => break,
            Ok(n) => seen += n,
            Err(e) => {
                tracing::warn!(error = %e, "indexing older messages for search failed; retrying");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if seen > 0 {
        tracing::info!(messages = seen, "older messages indexed for search");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://chat:s3cret@db/chat"),
            "postgres://chat:***@db/chat"
        );
        assert_eq!(
            super::redact("postgres://chat@db/chat"),
            "postgres://chat@db/chat"
        );
        assert_eq!(super::redact("sqlite://./chat.db"), "sqlite://./chat.db");
    }
}
