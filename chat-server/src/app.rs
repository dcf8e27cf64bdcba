//! Shared server state.

use std::sync::Arc;

use crate::auth::{LoginThrottle, Passwords, Tokens};
use crate::config::Config;
use crate::http::error::ApiError;
use crate::http::request::Caller;
use crate::store::Store;
use crate::store::append::Appender;

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
}

impl App {
    /// Assembles the state.
    pub fn new(config: Config, store: Arc<dyn Store>, tokens: Tokens) -> Self {
        let appender = Appender::spawn(store.clone(), 256);
        let passwords = Passwords::new(config.hashing_concurrency);
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                appender,
                tokens,
                passwords,
                throttle: LoginThrottle::default(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
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

    /// Verifies an access token and its session.
    pub async fn authenticate_token(&self, token: &str) -> Result<Caller, ApiError> {
        let claims = self.tokens().verify_access(token).map_err(|e| {
            tracing::debug!(error = %e, "access token refused");
            ApiError::invalid_token()
        })?;
        let user = self
            .store()
            .session_user(claims.session, claims.user)
            .await?
            .ok_or_else(ApiError::invalid_token)?;
        Ok(Caller {
            user,
            session: claims.session,
        })
    }
}
