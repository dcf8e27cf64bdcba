//! Shared server state.

use std::sync::Arc;

use chat_proto::limits::ServerLimits;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthError, Caller, LoginThrottle, Passwords, Tokens};
use crate::config::Config;
use crate::hub::Hub;
use crate::store::Store;
use crate::store::append::Appender;
use crate::wire::QueueLimits;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone, Debug)]
pub struct App {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    store: Arc<dyn Store>,
    appender: Appender,
    tokens: Tokens,
    passwords: Passwords,
    throttle: LoginThrottle,
    hub: Arc<Hub>,
    limits: ServerLimits,
    shutdown: watch::Sender<bool>,
    sessions: TaskTracker,
    web: Option<crate::web::WebUi>,
    blobs: crate::blobs::Blobs,
}

impl App {
    /// Assembles the state.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        tokens: Tokens,
        blobs: crate::blobs::Blobs,
    ) -> Self {
        crate::metrics::handle();
        let hub = Arc::new(Hub::new(store.clone(), QueueLimits::default()));
        let (committed_tx, committed_rx) = tokio::sync::mpsc::channel(1024);
        let appender = Appender::spawn(store.clone(), 256, Some(committed_tx));
        hub.spawn_delivery(committed_rx);
        let passwords = Passwords::new(config.hashing_concurrency);
        let web = crate::web::WebUi::choose(config.web_dir.as_deref());
        let limits = ServerLimits {
            send_rate: config.send_rate,
            send_burst: config.send_burst,
            ..ServerLimits::default()
        };
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                appender,
                tokens,
                passwords,
                throttle: LoginThrottle::default(),
                hub,
                limits,
                shutdown: watch::channel(false).0,
                sessions: TaskTracker::new(),
                web,
                blobs,
            }),
        }
    }

    /// Where uploaded files' bytes live.
    pub fn blobs(&self) -> &crate::blobs::Blobs {
        &self.inner.blobs
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The web UI served at `/`, if there is one (see
    /// [`WebUi::choose`](crate::web::WebUi::choose)).
    pub fn web(&self) -> Option<&crate::web::WebUi> {
        self.inner.web.as_ref()
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// The group-commit appender for messages.
    pub fn appender(&self) -> &Appender {
        &self.inner.appender
    }

    /// Token issuing and checking.
    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    /// Password hashing.
    pub fn passwords(&self) -> &Passwords {
        &self.inner.passwords
    }

    /// Failed-login throttling.
    pub fn throttle(&self) -> &LoginThrottle {
        &self.inner.throttle
    }

    /// The real-time hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// The limits announced to real-time clients.
    pub fn limits(&self) -> ServerLimits {
        self.inner.limits
    }

    /// Becomes `true` when the server starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Tells every session to drain (go away) and close.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner.sessions.close();
    }

    /// Tracks real-time session tasks, so shutdown can wait for them.
    pub fn sessions(&self) -> &TaskTracker {
        &self.inner.sessions
    }

    /// Verifies an access token and its session.
    pub async fn authenticate_token(&self, token: &str) -> Result<Caller, AuthError> {
        let claims = self.tokens().verify_access(token).map_err(|e| {
            tracing::debug!(error = %e, "access token refused");
            AuthError::InvalidToken
        })?;
        let user = self
            .store()
            .session_user(claims.session, claims.user)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        Ok(Caller {
            user,
            session: claims.session,
        })
    }
}
