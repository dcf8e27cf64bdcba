//! The HTTP API: accounts, tokens, profiles, users and conversations.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chat_proto::ids::UserId;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;

use chat_api::accounts::{
    Login, LoginRequest, Logout, LogoutRequest, Refresh, RefreshRequest, Register, RegisterRequest,
    Session,
};
use chat_api::conversations::ListConversations;
use chat_api::{Endpoint, ErrorResponse};

use crate::error::{Error, Result};

/// Largest HTTP answer read (a page of 200 full-size messages fits many times over).
const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// How long one HTTP call may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Tokens are refreshed this long before they expire.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(60);

pub use chat_api::users::UserPage;
pub use chat_api::{Conversation, ConversationKind, ConversationSummary, Member, Role, User};

/// An access token and the refresh token that renews it: persist these to resume a
/// login without the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPair {
    /// Short-lived JWT sent in the handshake and on HTTP calls.
    pub access_token: String,
    /// Long-lived, single-use token that obtains the next pair.
    pub refresh_token: String,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenPair { .. }")
    }
}

#[derive(Debug)]
pub(crate) struct Http {
    base: String,
    client: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Http {
    pub(crate) fn new(base: &Uri, tls: std::sync::Arc<rustls::ClientConfig>) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            base: base.to_string().trim_end_matches('/').to_owned(),
            client,
        }
    }

    /// One call; `Ok(None)` for an empty success body.
    async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&B>,
    ) -> Result<T> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("chat-sdk/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                let json = serde_json::to_vec(v)
                    .map_err(|e| Error::Config(format!("request body: {e}")))?;
                Full::new(Bytes::from(json))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req
            .body(body)
            .map_err(|e| Error::Config(format!("bad request URL: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(req)
                .await
                .map_err(|e| Error::connect(&e))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| Error::Unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, Error>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(HTTP_TIMEOUT, exchange)
            .await
            .map_err(|_| Error::Timeout)??;
        if status.is_success() {
            let bytes = if bytes.is_empty() {
                Bytes::from_static(b"null")
            } else {
                bytes
            };
            return serde_json::from_slice(&bytes)
                .map_err(|e| Error::Protocol(format!("HTTP {status}: {e}")));
        }
        let (code, message) = match serde_json::from_slice::<ErrorResponse>(&bytes) {
            Ok(r) => (r.error.code, r.error.message),
            Err(_) => (
                "http_error".to_owned(),
                status.canonical_reason().unwrap_or("error").to_owned(),
            ),
        };
        Err(match (status, code.as_str()) {
            (StatusCode::UNAUTHORIZED, "invalid_credentials") => Error::InvalidCredentials,
            (StatusCode::UNAUTHORIZED, _) => Error::Unauthorized,
            _ => Error::Api {
                status: status.as_u16(),
                code,
                message,
            },
        })
    }

    /// The absolute URL of an API path.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request as it is (files: bytes, tus headers); the answer's head must
    /// arrive within the HTTP timeout, its body is the caller's to read.
    pub(crate) async fn raw(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>> {
        tokio::time::timeout(HTTP_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(|e| Error::connect(&e))
    }

    /// An unauthenticated (or explicitly authenticated) call of endpoint `E`.
    async fn endpoint<E: Endpoint>(
        &self,
        params: &[&str],
        token: Option<&str>,
        body: Option<&E::Request>,
    ) -> Result<E::Response>
    where
        E::Request: Serialize,
        E::Response: DeserializeOwned,
    {
        self.call(E::METHOD, &E::path(params), token, body).await
    }
}

/// How the client signs in.
#[derive(Clone)]
pub(crate) enum Credentials {
    Login {
        username: String,
        password: String,
    },
    Register {
        username: String,
        password: String,
        display_name: Option<String>,
    },
    Tokens(TokenPair),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Login { username, .. } => write!(f, "Login({username})"),
            Credentials::Register { username, .. } => write!(f, "Register({username})"),
            Credentials::Tokens(_) => f.write_str("Tokens"),
        }
    }
}

#[derive(Debug)]
struct TokenState {
    pair: TokenPair,
    expires_at: SystemTime,
}

/// The signed-in account: current tokens, refreshed once at a time (a refresh token
/// is single-use, and presenting a used one revokes the whole login).
#[derive(Debug)]
pub(crate) struct Auth {
    pub(crate) http: Http,
    tokens: Mutex<TokenState>,
    /// The current access token's expiry (Unix seconds), readable without the lock.
    expires_at: AtomicU64,
    user: UserId,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn expiry(expires_in: u64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(expires_in)
}

/// The `exp` claim of a JWT, read without verifying (only to schedule refreshes).
fn jwt_expiry(token: &str) -> Option<(SystemTime, UserId)> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    let sub = claims.get("sub")?;
    let user = sub
        .as_u64()
        .or_else(|| sub.as_str().and_then(|s| s.parse().ok()))?;
    Some((
        UNIX_EPOCH + Duration::from_secs(exp),
        UserId::new(user).ok()?,
    ))
}

impl Auth {
    /// Signs in over HTTP.
    pub(crate) async fn sign_in(http: Http, credentials: Credentials) -> Result<Self> {
        let reply: Session = match credentials {
            Credentials::Login { username, password } => {
                http.endpoint::<Login>(&[], None, Some(&LoginRequest::new(username, password)))
                    .await?
            }
            Credentials::Register {
                username,
                password,
                display_name,
            } => {
                let request = RegisterRequest {
                    display_name,
                    ..RegisterRequest::new(username, password)
                };
                http.endpoint::<Register>(&[], None, Some(&request)).await?
            }
            Credentials::Tokens(pair) => {
                let (expires_at, user) = jwt_expiry(&pair.access_token).ok_or_else(|| {
                    Error::Config("the access token is not a JWT this client can read".into())
                })?;
                return Ok(Self {
                    http,
                    expires_at: AtomicU64::new(unix(expires_at)),
                    tokens: Mutex::new(TokenState { pair, expires_at }),
                    user,
                });
            }
        };
        let refresh_token = reply
            .refresh_token
            .ok_or_else(|| Error::Protocol("no refresh token in the login answer".into()))?;
        let expires_at = expiry(reply.expires_in);
        Ok(Self {
            http,
            expires_at: AtomicU64::new(unix(expires_at)),
            tokens: Mutex::new(TokenState {
                pair: TokenPair {
                    access_token: reply.access_token,
                    refresh_token,
                },
                expires_at,
            }),
            user: reply.user.id,
        })
    }

    /// The signed-in user.
    pub(crate) fn user(&self) -> UserId {
        self.user
    }

    /// The current pair.
    pub(crate) async fn tokens(&self) -> TokenPair {
        self.tokens.lock().await.pair.clone()
    }

    /// When the current access token should be renewed.
    pub(crate) fn refresh_due(&self) -> SystemTime {
        let expires_at = UNIX_EPOCH + Duration::from_secs(self.expires_at.load(Ordering::Relaxed));
        expires_at.checked_sub(REFRESH_MARGIN).unwrap_or(UNIX_EPOCH)
    }

    /// A valid access token, refreshed first if it is about to expire.
    pub(crate) async fn access_token(&self) -> Result<String> {
        let current = {
            let state = self.tokens.lock().await;
            if state.expires_at > SystemTime::now() + REFRESH_MARGIN {
                return Ok(state.pair.access_token.clone());
            }
            state.pair.access_token.clone()
        };
        self.refresh(&current).await
    }

    /// Replaces `stale` with a fresh access token, unless another task already did.
    pub(crate) async fn refresh(&self, stale: &str) -> Result<String> {
        let mut state = self.tokens.lock().await;
        if state.pair.access_token != stale {
            return Ok(state.pair.access_token.clone());
        }
        let reply: Session = self
            .http
            .endpoint::<Refresh>(
                &[],
                None,
                Some(&RefreshRequest::with_token(
                    state.pair.refresh_token.clone(),
                )),
            )
            .await?;
        let refresh_token = reply
            .refresh_token
            .ok_or_else(|| Error::Protocol("no refresh token in the refresh answer".into()))?;
        tracing::debug!("access token refreshed");
        state.pair = TokenPair {
            access_token: reply.access_token,
            refresh_token,
        };
        state.expires_at = expiry(reply.expires_in);
        self.expires_at
            .store(unix(state.expires_at), Ordering::Relaxed);
        Ok(state.pair.access_token.clone())
    }

    /// An authenticated call of endpoint `E` with its path `params` filled in and an
    /// optional query string, refreshing the token and retrying once if it was
    /// refused.
    pub(crate) async fn call<E: Endpoint>(
        &self,
        params: &[&str],
        query: Option<&str>,
        body: Option<&E::Request>,
    ) -> Result<E::Response>
    where
        E::Request: Serialize,
        E::Response: DeserializeOwned,
    {
        let path = match query {
            Some(q) => format!("{}?{q}", E::path(params)),
            None => E::path(params),
        };
        let token = self.access_token().await?;
        match self.http.call(E::METHOD, &path, Some(&token), body).await {
            Err(Error::Unauthorized) => {
                let token = self.refresh(&token).await?;
                self.http.call(E::METHOD, &path, Some(&token), body).await
            }
            other => other,
        }
    }

    /// Revokes the login on the server.
    pub(crate) async fn logout(&self) -> Result<()> {
        let state = self.tokens.lock().await;
        self.http
            .endpoint::<Logout>(
                &[],
                Some(&state.pair.access_token),
                Some(&LogoutRequest {
                    refresh_token: Some(state.pair.refresh_token.clone()),
                }),
            )
            .await
    }

    pub(crate) async fn conversations(&self) -> Result<Vec<ConversationSummary>> {
        let list = self.call::<ListConversations>(&[], None, None).await?;
        Ok(list.conversations)
    }
}
