//! Registration, login, token refresh, logout, password change, account deletion.

use std::net::SocketAddr;
use std::time::Instant;

use chat_api::accounts::{
    ChangePasswordRequest, DeleteAccountRequest, LoginRequest, LogoutRequest, RefreshRequest,
    RegisterRequest, Session,
};
use chat_proto::ids::{Timestamp, UserId};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::error::ApiError;
use super::request::{self, Caller};
use super::{Body, HandlerResult, empty, json_response, validate};
use crate::app::App;
use crate::store::{NewUser, Rotation, StoreError, User};

/// Name of the HttpOnly refresh-token cookie.
pub const REFRESH_COOKIE: &str = "chat_refresh";

fn user_agent(req: &Request<Incoming>) -> String {
    req.headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "wrong username or password",
    )
}

fn cookie_header(app: &App, token: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if app.config().secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{REFRESH_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/api; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// Opens a session for `user` and answers with a token pair.
async fn start_session(
    app: &App,
    user: &User,
    status: StatusCode,
    cookie: bool,
    agent: &str,
) -> HandlerResult {
    let (refresh, hash) = app.tokens().new_refresh();
    let now = Timestamp::now();
    let expires = Timestamp(now.0 + app.tokens().refresh_ttl().as_millis() as i64);
    let session = app
        .store()
        .create_session(user.id, hash, now, expires, agent)
        .await?;
    token_response(app, user, session, refresh, status, cookie)
}

fn token_response(
    app: &App,
    user: &User,
    session: i64,
    refresh: String,
    status: StatusCode,
    cookie: bool,
) -> HandlerResult {
    let access = app
        .tokens()
        .issue_access(user.id, session)
        .map_err(ApiError::internal)?;
    let body = Session {
        user: user.clone(),
        access_token: access,
        token_type: "Bearer".to_owned(),
        expires_in: app.tokens().access_ttl().as_secs(),
        refresh_token: (!cookie).then(|| refresh.clone()),
    };
    let mut response = json_response(status, &body);
    if cookie && let Some(v) = cookie_header(app, &refresh, app.tokens().refresh_ttl().as_secs()) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// `POST /api/register`
pub async fn register(app: App, _peer: SocketAddr, req: Request<Incoming>) -> HandlerResult {
    let agent = user_agent(&req);
    let body: RegisterRequest = request::json(req).await?;
    let username = validate::username(&body.username)?;
    validate::password(&body.password)?;
    let display_name = validate::display_name(body.display_name.as_deref().unwrap_or(&username))?;
    let password_hash = app
        .passwords()
        .hash(body.password)
        .await
        .map_err(ApiError::internal)?;
    let user = match app
        .store()
        .create_user(NewUser {
            username,
            display_name,
            password_hash,
            created_at: Timestamp::now(),
        })
        .await
    {
        Ok(user) => user,
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "username_taken",
                "that username is taken",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(user = %user.id, username = %user.username, "registered");
    start_session(&app, &user, StatusCode::CREATED, body.cookie, &agent).await
}

/// `POST /api/login`: the same answer, in the same time, for an unknown user and a
/// wrong password.
pub async fn login(app: App, peer: SocketAddr, req: Request<Incoming>) -> HandlerResult {
    let agent = user_agent(&req);
    let body: LoginRequest = request::json(req).await?;
    let username = body.username.to_ascii_lowercase();
    if let Err(wait) = app.throttle().check(&username, peer.ip(), Instant::now()) {
        metrics::counter!(crate::metrics::RATE_LIMITED, "kind" => "login").increment(1);
        return Err(ApiError::rate_limited(
            wait.as_secs(),
            "too many failed logins; try again later",
        ));
    }
    if body.password.len() > 1024 {
        return Err(invalid_credentials());
    }
    let credentials = match validate::username(&username) {
        Ok(name) => app.store().credentials(&name).await?,
        Err(_) => None,
    };
    let stored = credentials.as_ref().map(|c| c.password_hash.clone());
    let verdict = app
        .passwords()
        .verify(body.password.clone(), stored)
        .await
        .map_err(ApiError::internal)?;
    let Some(credentials) = credentials.filter(|_| verdict.is_valid()) else {
        app.throttle().failed(&username, peer.ip(), Instant::now());
        return Err(invalid_credentials());
    };
    app.throttle().succeeded(&username);
    if verdict == chat_crypto::password::Verification::ValidNeedsRehash {
        // Upgrade the stored hash to the current cost while the password is at hand.
        let app2 = app.clone();
        let id = credentials.user.id;
        let password = body.password;
        tokio::spawn(async move {
            if let Ok(hash) = app2.passwords().hash(password).await {
                let _ = app2.store().set_password(id, hash).await;
            }
        });
    }
    start_session(&app, &credentials.user, StatusCode::OK, body.cookie, &agent).await
}

/// `POST /api/refresh`: the refresh token from the body or the cookie.
pub async fn refresh(app: App, req: Request<Incoming>) -> HandlerResult {
    let from_cookie = request::cookie(&req, REFRESH_COOKIE).map(str::to_owned);
    let has_json = req.headers().contains_key(header::CONTENT_TYPE);
    let body: RefreshRequest = if has_json {
        request::json(req).await?
    } else {
        RefreshRequest::default()
    };
    let (token, cookie) = match (body.refresh_token, from_cookie) {
        (Some(t), _) => (t, body.cookie),
        (None, Some(c)) => (c, true),
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "a refresh token is required",
            ));
        }
    };
    let Some(old_hash) = crate::auth::Tokens::refresh_hash(&token) else {
        return Err(ApiError::invalid_token());
    };
    let (refresh, new_hash) = app.tokens().new_refresh();
    let now = Timestamp::now();
    let expires = Timestamp(now.0 + app.tokens().refresh_ttl().as_millis() as i64);
    match app
        .store()
        .rotate_refresh(old_hash, new_hash, now, expires)
        .await?
    {
        Rotation::Rotated {
            session_id,
            user_id,
        } => {
            let user = app
                .store()
                .user(user_id)
                .await?
                .ok_or_else(ApiError::invalid_token)?;
            token_response(&app, &user, session_id, refresh, StatusCode::OK, cookie)
        }
        Rotation::Reused => {
            tracing::warn!("a rotated refresh token was presented again; its session is revoked");
            Err(ApiError::invalid_token())
        }
        Rotation::Invalid => Err(ApiError::invalid_token()),
    }
}

fn clear_cookie(app: &App, mut response: Response<Body>) -> Response<Body> {
    if let Some(v) = cookie_header(app, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// `POST /api/logout`: revokes the session of the bearer token and/or of the refresh
/// token (body or cookie), and clears the cookie.
pub async fn logout(app: App, req: Request<Incoming>) -> HandlerResult {
    let now = Timestamp::now();
    let mut revoked = false;
    if req.headers().contains_key(header::AUTHORIZATION) {
        let caller = request::authenticate(&app, &req).await?;
        app.store().revoke_session(caller.session, now).await?;
        revoked = true;
    }
    let from_cookie = request::cookie(&req, REFRESH_COOKIE).map(str::to_owned);
    let body: LogoutRequest = if req.headers().contains_key(header::CONTENT_TYPE) {
        request::json(req).await?
    } else {
        LogoutRequest::default()
    };
    if let Some(token) = body.refresh_token.or(from_cookie) {
        if let Some(hash) = crate::auth::Tokens::refresh_hash(&token)
            && let Some(session) = app.store().refresh_session(hash).await?
        {
            app.store().revoke_session(session, now).await?;
        }
        revoked = true;
    }
    if !revoked {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "nothing to log out",
        ));
    }
    Ok(clear_cookie(&app, empty(StatusCode::NO_CONTENT)))
}

async fn check_password(
    app: &App,
    user: UserId,
    username: &str,
    password: String,
) -> Result<(), ApiError> {
    let credentials = app.store().credentials(username).await?;
    let stored = credentials
        .filter(|c| c.user.id == user)
        .map(|c| c.password_hash);
    let verdict = app
        .passwords()
        .verify(password, stored)
        .await
        .map_err(ApiError::internal)?;
    if verdict.is_valid() {
        Ok(())
    } else {
        Err(ApiError::forbidden("the current password is wrong").with_code("wrong_password"))
    }
}

/// `PUT /api/me/password`: needs the old password; revokes every other session.
pub async fn change_password(app: App, req: Request<Incoming>) -> HandlerResult {
    let Caller { user, session } = request::authenticate(&app, &req).await?;
    let body: ChangePasswordRequest = request::json(req).await?;
    validate::password(&body.new_password)?;
    check_password(&app, user.id, &user.username, body.old_password).await?;
    let hash = app
        .passwords()
        .hash(body.new_password)
        .await
        .map_err(ApiError::internal)?;
    app.store().set_password(user.id, hash).await?;
    app.store()
        .revoke_other_sessions(user.id, session, Timestamp::now())
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `DELETE /api/me`: needs the password; frees the username and revokes every session.
pub async fn delete_me(app: App, req: Request<Incoming>) -> HandlerResult {
    let Caller { user, .. } = request::authenticate(&app, &req).await?;
    let body: DeleteAccountRequest = request::json(req).await?;
    check_password(&app, user.id, &user.username, body.password).await?;
    let heads = app.store().heads(user.id).await?;
    app.store().delete_user(user.id, Timestamp::now()).await?;
    for head in heads {
        app.hub().invalidate(head.conversation);
    }
    tracing::info!(user = %user.id, "account deleted");
    Ok(clear_cookie(&app, empty(StatusCode::NO_CONTENT)))
}
