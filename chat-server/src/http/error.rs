//! API errors: `{"error":{"code":"snake_case_code","message":"human text"}}` with the
//! matching HTTP status.

use http::{HeaderValue, Response, StatusCode, header};

/// An error answer of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Explanation for humans.
    pub message: String,
    /// Seconds until a retry may succeed (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422 with a code: well-formed JSON whose values are not acceptable.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 401 `invalid_token`.
    pub fn invalid_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the access token is invalid or expired",
        )
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 500 `internal`, logging the cause (never shown to the client).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }

    /// 429 `rate_limited` with `Retry-After`.
    pub fn rate_limited(retry_after_secs: u64, message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// The same error with another code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response<super::Body> {
        let body = chat_api::ErrorResponse {
            error: chat_api::ErrorBody {
                code: self.code.to_string(),
                message: self.message.to_string(),
            },
        };
        let mut response = super::json_response(self.status, &body);
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<crate::ws::UpgradeError> for ApiError {
    fn from(e: crate::ws::UpgradeError) -> Self {
        use crate::ws::UpgradeError;
        let message = e.to_string();
        match e {
            UpgradeError::NotAnUpgrade => {
                Self::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", message)
            }
            UpgradeError::Subprotocol => Self::bad_request("unsupported_subprotocol", message),
            UpgradeError::Origin => Self::forbidden(message),
            UpgradeError::Handshake(_) => Self::bad_request("bad_upgrade", message),
        }
    }
}

impl From<crate::services::Denied> for ApiError {
    fn from(denied: crate::services::Denied) -> Self {
        use crate::services::Denied;
        let message = denied.to_string();
        match denied {
            Denied::NotFound => Self::not_found("conversation"),
            Denied::EncryptionRequired => Self::invalid("encryption_required", message),
            Denied::RateLimited(wait) => Self::rate_limited(wait.as_secs().max(1), message),
            Denied::DirectMembers | Denied::DirectLeave => {
                Self::invalid("direct_conversation", message)
            }
            Denied::NotOwner => Self::forbidden(message),
            Denied::GroupFull(_) => Self::invalid("too_many_members", message),
            Denied::Store(e) => e.into(),
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        match e {
            crate::auth::AuthError::InvalidToken => Self::invalid_token(),
            crate::auth::AuthError::Store(e) => e.into(),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("this {what} already exists"),
            ),
            // A full disk, a lost connection, a timeout: the same request may work in
            // a moment, and the client is told so.
            e if e.kind().is_transient() => {
                tracing::warn!(error = %e, kind = e.kind().as_str(), "storage unavailable");
                let mut err = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "storage is unavailable",
                );
                err.retry_after = Some(1);
                err
            }
            other => Self::internal(other),
        }
    }
}
