//! The HTTP API: accounts, tokens, profiles, users and conversations.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chat_proto::frame::Message;
use chat_proto::ids::{ConversationId, Seq, Timestamp, UserId};
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// Largest HTTP answer read (a page of 200 full-size messages fits many times over).
const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// How long one HTTP call may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Tokens are refreshed this long before they expire.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// A user's public profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct User {
    /// Stable id.
    pub id: UserId,
    /// Unique login name (case-insensitive).
    pub username: String,
    /// Name shown to others.
    pub display_name: String,
    /// Free text.
    pub bio: String,
    /// When the account was created.
    pub created_at: Timestamp,
    /// When the user was last online; `None` if never or hidden.
    pub last_seen: Option<Timestamp>,
}

/// Direct chat between two people, or a named group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// Two people (or one person's notes to self).
    Direct,
    /// A titled group with an owner.
    Group,
}

/// A member's role in a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May add and remove members.
    Owner,
    /// Everyone else.
    Member,
}

/// One member of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Member {
    /// Who.
    pub user: User,
    /// Owner or member.
    pub role: Role,
    /// The last message they marked read.
    pub last_read_seq: Seq,
    /// When they joined.
    pub joined_at: Timestamp,
}

/// A conversation and its members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Conversation {
    /// Stable id.
    pub id: ConversationId,
    /// Direct or group.
    pub kind: ConversationKind,
    /// Group title (empty for direct conversations).
    pub title: String,
    /// Whether bodies must be end-to-end encrypted.
    pub encrypted: bool,
    /// Creator.
    pub created_by: UserId,
    /// Creation time.
    pub created_at: Timestamp,
    /// Seq of the newest message (zero when empty).
    pub last_seq: Seq,
    /// Time of the newest message or membership change.
    pub last_activity: Timestamp,
    /// Everyone in it.
    pub members: Vec<Member>,
}

/// A conversation as listed: with its newest message and the caller's unread count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConversationSummary {
    /// The conversation.
    #[serde(flatten)]
    pub conversation: Conversation,
    /// Its newest message, if any.
    pub last_message: Option<Message>,
    /// Messages after the caller's read position.
    pub unread: u64,
}

/// A page of users from [`Client::search_users`](crate::Client::search_users).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct UserPage {
    /// Users in username order.
    pub users: Vec<User>,
    /// Pass as `after` to get the next page; `None` on the last one.
    pub next: Option<String>,
}

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

#[derive(Deserialize)]
struct SessionReply {
    user: User,
    access_token: String,
    refresh_token: Option<String>,
    expires_in: u64,
}

#[derive(Deserialize)]
struct ErrorReply {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

#[derive(Deserialize)]
struct Conversations {
    conversations: Vec<ConversationSummary>,
}

/// The HTTP transport: one pooled client for a base URL.
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
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
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
                Full::new(Bytes::from(v.to_string()))
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
        let (code, message) = match serde_json::from_slice::<ErrorReply>(&bytes) {
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
        let reply: SessionReply = match credentials {
            Credentials::Login { username, password } => {
                http.call(
                    Method::POST,
                    "/api/login",
                    None,
                    Some(&json!({"username": username, "password": password})),
                )
                .await?
            }
            Credentials::Register {
                username,
                password,
                display_name,
            } => {
                http.call(
                    Method::POST,
                    "/api/register",
                    None,
                    Some(&json!({
                        "username": username,
                        "password": password,
                        "display_name": display_name,
                    })),
                )
                .await?
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
        let reply: SessionReply = self
            .http
            .call(
                Method::POST,
                "/api/refresh",
                None,
                Some(&json!({"refresh_token": state.pair.refresh_token})),
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

    /// An authenticated call, refreshing and retrying once if the token was refused.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T> {
        let token = self.access_token().await?;
        match self
            .http
            .call(method.clone(), path, Some(&token), body.as_ref())
            .await
        {
            Err(Error::Unauthorized) => {
                let token = self.refresh(&token).await?;
                self.http
                    .call(method, path, Some(&token), body.as_ref())
                    .await
            }
            other => other,
        }
    }

    /// Revokes the login on the server.
    pub(crate) async fn logout(&self) -> Result<()> {
        let state = self.tokens.lock().await;
        let _: Value = self
            .http
            .call(
                Method::POST,
                "/api/logout",
                Some(&state.pair.access_token),
                Some(&json!({"refresh_token": state.pair.refresh_token})),
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn conversations(&self) -> Result<Vec<ConversationSummary>> {
        let list: Conversations = self.call(Method::GET, "/api/conversations", None).await?;
        Ok(list.conversations)
    }
}
