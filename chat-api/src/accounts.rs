//! Accounts and sessions: registration, login, token refresh, logout, password
//! change, account deletion (PROTOCOL.md §3 names the tokens the handshake takes).

use serde::{Deserialize, Serialize};

use crate::model::User;

crate::endpoints! {
    /// `POST /api/register`: a new account and its first session (201).
    Register: POST "/api/register", RegisterRequest => Session;
    /// `POST /api/login`: a new session (200); `401 invalid_credentials` for a wrong
    /// username or password alike.
    Login: POST "/api/login", LoginRequest => Session;
    /// `POST /api/refresh`: the next token pair for a refresh token (from the body or
    /// the HttpOnly cookie); each refresh token works once.
    Refresh: POST "/api/refresh", RefreshRequest => Session;
    /// `POST /api/logout`: revokes the bearer token's session and/or the refresh
    /// token's (204).
    Logout: POST "/api/logout", LogoutRequest => ();
    /// `PUT /api/me/password`: changes the password and ends every other session (204).
    ChangePassword: PUT "/api/me/password", ChangePasswordRequest => ();
    /// `DELETE /api/me`: deletes the caller's account (204).
    DeleteMe: DELETE "/api/me", DeleteAccountRequest => ();
}

/// The body of [`Register`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RegisterRequest {
    /// 3–32 of `a-z 0-9 _ . -`, case-insensitive.
    pub username: String,
    /// At least 8 characters.
    pub password: String,
    /// Name shown to others; the username when absent.
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub display_name: Option<String>,
    /// Put the refresh token in an HttpOnly cookie instead of the body (browsers).
    #[serde(default, skip_serializing_if = "is_false")]
    pub cookie: bool,
}

impl RegisterRequest {
    /// A registration with no display name, the refresh token in the body.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            display_name: None,
            cookie: false,
        }
    }
}

/// The body of [`Login`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LoginRequest {
    /// The username (any case).
    pub username: String,
    /// The password.
    pub password: String,
    /// Put the refresh token in an HttpOnly cookie instead of the body (browsers).
    #[serde(default, skip_serializing_if = "is_false")]
    pub cookie: bool,
}

impl LoginRequest {
    /// A login with the refresh token in the body.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            cookie: false,
        }
    }
}

/// The body of [`Refresh`] (optional where the cookie is sent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RefreshRequest {
    /// The refresh token; the cookie's when absent.
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub refresh_token: Option<String>,
    /// Answer with the next refresh token in the cookie instead of the body.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cookie: bool,
}

impl RefreshRequest {
    /// A request naming its refresh token in the body.
    pub fn with_token(refresh_token: impl Into<String>) -> Self {
        Self {
            refresh_token: Some(refresh_token.into()),
            cookie: false,
        }
    }
}

/// The body of [`Logout`] (optional: the bearer token's session is revoked without
/// one, and the cookie's refresh token is used when the body names none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LogoutRequest {
    /// The refresh token whose session ends too.
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub refresh_token: Option<String>,
}

/// The body of [`ChangePassword`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChangePasswordRequest {
    /// The current password.
    pub old_password: String,
    /// The new one (at least 8 characters).
    pub new_password: String,
}

/// The body of [`DeleteMe`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeleteAccountRequest {
    /// The current password, to confirm.
    pub password: String,
}

/// A session's tokens: the answer to [`Register`], [`Login`] and [`Refresh`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Session {
    /// Whose session.
    pub user: User,
    /// Short-lived JWT for HTTP calls and the real-time handshake.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The single-use token that obtains the next pair; absent when it was put in the
    /// cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}
