//! What can go wrong, as one typed error.

use chat_proto::error::ErrorCode;

/// Everything a [`Client`](crate::Client) call can fail with.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL, credentials or TLS settings given to the builder are unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Login refused: unknown user or wrong password (the server does not say which).
    #[error("wrong username or password")]
    InvalidCredentials,
    /// The session was revoked or expired and cannot be refreshed: log in again.
    #[error("the session was revoked or has expired; log in again")]
    Unauthorized,
    /// The HTTP API refused a request.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable snake_case code from the server (`username_taken`, `not_found`, …).
        code: String,
        /// Human-readable explanation.
        message: String,
    },
    /// The real-time connection refused a request.
    #[error("{message} ({code})")]
    Server {
        /// Stable error code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
        /// For `rate_limited`: when a retry may succeed.
        retry_after_ms: Option<u32>,
    },
    /// The server could not be reached (DNS, TCP, QUIC, HTTP transport).
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The server's certificate is not the pinned one.
    #[error("the server's certificate does not match the pinned certificate")]
    CertificateMismatch,
    /// TLS failed for another reason (untrusted certificate, wrong name, no common
    /// protocol).
    #[error("TLS: {0}")]
    Tls(String),
    /// The server answered with something this client cannot understand.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The client was shut down before the request completed.
    #[error("the client is closed")]
    Closed,
}

impl Error {
    /// Whether retrying the same call later may succeed (with the same client message
    /// id, for sends).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable(_) | Error::Timeout => true,
            Error::Api { status, .. } => *status == 429 || *status >= 500,
            Error::Server { code, .. } => matches!(
                code,
                ErrorCode::RateLimited
                    | ErrorCode::TooManyRequests
                    | ErrorCode::Unavailable
                    | ErrorCode::Internal
            ),
            _ => false,
        }
    }

    pub(crate) fn server(error: chat_proto::frame::Error) -> Self {
        Error::Server {
            code: error.code,
            message: error.message,
            retry_after_ms: error.retry_after_ms,
        }
    }

    /// Classifies a connection failure, recognising a pin mismatch anywhere in the
    /// chain of causes.
    pub(crate) fn connect(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        let mut tls = None;
        while let Some(e) = cause {
            let rustls_error = e.downcast_ref::<rustls::Error>().or_else(|| {
                e.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(r) = rustls_error {
                if is_pin_mismatch(r) {
                    return Error::CertificateMismatch;
                }
                tls = Some(r.to_string());
            }
            cause = e.source();
        }
        let text = chain(error);
        // QUIC reports the TLS alert as text only.
        if text.contains("ApplicationVerificationFailure") {
            return Error::CertificateMismatch;
        }
        match tls {
            Some(t) => Error::Tls(t),
            None => Error::Unreachable(text),
        }
    }
}

fn is_pin_mismatch(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
    )
}

/// `error: cause: cause`, for messages that keep the whole story.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = e.source();
    }
    text
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
