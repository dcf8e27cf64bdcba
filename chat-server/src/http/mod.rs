//! The HTTP listener: a small router of our own over hyper, JSON in and out.
//!
//! Routes are one table ([`ROUTES`]) so that the API description can be checked
//! against them: a test fails when a route exists here but not in `openapi.yaml`.

pub mod accounts;
pub mod conversations;
pub mod devices;
pub mod error;
pub mod files;
pub mod request;
pub mod search;
pub mod static_files;
pub mod users;
pub mod validate;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use serde::Serialize;

use chat_api::{self as api, Endpoint as _};

use self::error::ApiError;
use crate::app::App;

/// Response body type of every route: a whole buffer for JSON, a stream for files.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A response body of one buffer.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// What a handler returns.
pub type HandlerResult = Result<Response<Body>, ApiError>;

/// Longest a request may take before the server answers 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Every endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`
    Health,
    /// `GET /readyz`
    Ready,
    /// `GET /api/openapi.yaml`
    OpenApi,
    /// `POST /api/register`
    Register,
    /// `POST /api/login`
    Login,
    /// `POST /api/refresh`
    Refresh,
    /// `POST /api/logout`
    Logout,
    /// `GET /api/me`
    Me,
    /// `PATCH /api/me`
    UpdateMe,
    /// `DELETE /api/me`
    DeleteMe,
    /// `PUT /api/me/password`
    ChangePassword,
    /// `GET /api/users`
    SearchUsers,
    /// `GET /api/users/{id}`
    GetUser,
    /// `GET /api/search`
    Search,
    /// `GET /api/conversations`
    ListConversations,
    /// `POST /api/conversations`
    CreateConversation,
    /// `GET /api/conversations/{id}`
    GetConversation,
    /// `POST /api/conversations/{id}/members`
    AddMember,
    /// `DELETE /api/conversations/{id}/members/{user_id}`
    RemoveMember,
    /// `POST /api/conversations/{id}/leave`
    Leave,
    /// `GET /api/conversations/{id}/messages`
    History,
    /// `GET /api/conversations/{id}/entries`
    Entries,
    /// `GET /api/conversations/{id}/devices`
    ConversationDevices,
    /// `OPTIONS /api/uploads`
    UploadOptions,
    /// `POST /api/uploads`
    CreateUpload,
    /// `HEAD /api/uploads/{id}`
    UploadStatus,
    /// `PATCH /api/uploads/{id}`
    AppendUpload,
    /// `DELETE /api/uploads/{id}`
    EndUpload,
    /// `GET /api/files/{id}`
    Download,
    /// `GET /api/devices`
    ListDevices,
    /// `POST /api/devices`
    RegisterDevice,
    /// `DELETE /api/devices/{id}`
    RemoveDevice,
    /// `GET /api/users/{id}/devices`
    UserDevices,
    /// `GET /ws`
    WebSocket,
    /// `GET /metrics`
    Metrics,
}

/// The route table: method, path pattern (`{name}` matches one segment), route; the
/// API's own endpoints take both from their `chat_api` definition.
pub const ROUTES: &[(Method, &str, Route)] = &[
    (Method::GET, "/healthz", Route::Health),
    (Method::GET, "/readyz", Route::Ready),
    (Method::GET, "/api/openapi.yaml", Route::OpenApi),
    (
        api::accounts::Register::METHOD,
        api::accounts::Register::PATH,
        Route::Register,
    ),
    (
        api::accounts::Login::METHOD,
        api::accounts::Login::PATH,
        Route::Login,
    ),
    (
        api::accounts::Refresh::METHOD,
        api::accounts::Refresh::PATH,
        Route::Refresh,
    ),
    (
        api::accounts::Logout::METHOD,
        api::accounts::Logout::PATH,
        Route::Logout,
    ),
    (api::users::Me::METHOD, api::users::Me::PATH, Route::Me),
    (
        api::users::UpdateMe::METHOD,
        api::users::UpdateMe::PATH,
        Route::UpdateMe,
    ),
    (
        api::accounts::DeleteMe::METHOD,
        api::accounts::DeleteMe::PATH,
        Route::DeleteMe,
    ),
    (
        api::accounts::ChangePassword::METHOD,
        api::accounts::ChangePassword::PATH,
        Route::ChangePassword,
    ),
    (
        api::users::SearchUsers::METHOD,
        api::users::SearchUsers::PATH,
        Route::SearchUsers,
    ),
    (
        api::users::GetUser::METHOD,
        api::users::GetUser::PATH,
        Route::GetUser,
    ),
    (
        api::search::Search::METHOD,
        api::search::Search::PATH,
        Route::Search,
    ),
    (
        api::conversations::ListConversations::METHOD,
        api::conversations::ListConversations::PATH,
        Route::ListConversations,
    ),
    (
        api::conversations::CreateConversation::METHOD,
        api::conversations::CreateConversation::PATH,
        Route::CreateConversation,
    ),
    (
        api::conversations::GetConversation::METHOD,
        api::conversations::GetConversation::PATH,
        Route::GetConversation,
    ),
    (
        api::conversations::AddMember::METHOD,
        api::conversations::AddMember::PATH,
        Route::AddMember,
    ),
    (
        api::conversations::RemoveMember::METHOD,
        api::conversations::RemoveMember::PATH,
        Route::RemoveMember,
    ),
    (
        api::conversations::Leave::METHOD,
        api::conversations::Leave::PATH,
        Route::Leave,
    ),
    (
        api::conversations::History::METHOD,
        api::conversations::History::PATH,
        Route::History,
    ),
    (
        api::conversations::Entries::METHOD,
        api::conversations::Entries::PATH,
        Route::Entries,
    ),
    (
        api::conversations::ConversationDevices::METHOD,
        api::conversations::ConversationDevices::PATH,
        Route::ConversationDevices,
    ),
    (
        api::devices::ListDevices::METHOD,
        api::devices::ListDevices::PATH,
        Route::ListDevices,
    ),
    (
        api::devices::RegisterDevice::METHOD,
        api::devices::RegisterDevice::PATH,
        Route::RegisterDevice,
    ),
    (
        api::devices::RemoveDevice::METHOD,
        api::devices::RemoveDevice::PATH,
        Route::RemoveDevice,
    ),
    (
        api::devices::UserDevices::METHOD,
        api::devices::UserDevices::PATH,
        Route::UserDevices,
    ),
    (
        api::files::UploadOptions::METHOD,
        api::files::UploadOptions::PATH,
        Route::UploadOptions,
    ),
    (
        api::files::CreateUpload::METHOD,
        api::files::CreateUpload::PATH,
        Route::CreateUpload,
    ),
    (
        api::files::UploadStatus::METHOD,
        api::files::UploadStatus::PATH,
        Route::UploadStatus,
    ),
    (
        api::files::AppendUpload::METHOD,
        api::files::AppendUpload::PATH,
        Route::AppendUpload,
    ),
    (
        api::files::EndUpload::METHOD,
        api::files::EndUpload::PATH,
        Route::EndUpload,
    ),
    (
        api::files::Download::METHOD,
        api::files::Download::PATH,
        Route::Download,
    ),
    (Method::GET, "/ws", Route::WebSocket),
    (Method::GET, "/metrics", Route::Metrics),
];

/// The API description served at `/api/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../../openapi.yaml");

/// Path parameters captured by a pattern, in order.
pub type Params = Vec<String>;

enum Matched {
    Route(Route, Params),
    WrongMethod(Vec<Method>),
    None,
}

fn match_path(pattern: &str, path: &str) -> Option<Params> {
    let mut params = Vec::new();
    let mut p = pattern.split('/');
    let mut s = path.split('/');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return Some(params),
            (Some(pat), Some(seg)) if pat.starts_with('{') => {
                if seg.is_empty() {
                    return None;
                }
                params.push(seg.to_owned());
            }
            (Some(pat), Some(seg)) if pat == seg => {}
            _ => return None,
        }
    }
}

fn route(method: &Method, path: &str) -> Matched {
    let mut allowed = Vec::new();
    for (m, pattern, route) in ROUTES {
        if let Some(params) = match_path(pattern, path) {
            if m == method || (*m == Method::GET && method == Method::HEAD) {
                return Matched::Route(*route, params);
            }
            allowed.push(m.clone());
        }
    }
    if allowed.is_empty() {
        Matched::None
    } else {
        Matched::WrongMethod(allowed)
    }
}

/// A JSON response with the API's headers.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An empty response.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// Parses a numeric path parameter into a typed id; unparsable ids are 404 (an id that
/// cannot exist is not found).
pub fn path_id<T: std::str::FromStr>(
    params: &Params,
    index: usize,
    what: &str,
) -> Result<T, ApiError> {
    params
        .get(index)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::not_found(what))
}

/// Answers one request. Never fails: every error becomes a JSON error response.
pub async fn handle(
    app: App,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    // An upload's body may take long to arrive; it has its own idle limit instead.
    let limit = if method == Method::PATCH && path.starts_with("/api/uploads/") {
        Duration::MAX
    } else {
        REQUEST_TIMEOUT
    };
    let result = match tokio::time::timeout(limit, dispatch(app, peer, req)).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long",
        )),
    };
    let mut response = result.unwrap_or_else(ApiError::into_response);
    let headers = response.headers_mut();
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if method == Method::HEAD {
        *response.body_mut() = full(Bytes::new());
    }
    tracing::debug!(%method, %path, status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    Ok(response)
}

async fn dispatch(app: App, peer: SocketAddr, req: Request<Incoming>) -> HandlerResult {
    let path = req.uri().path().to_owned();
    let (route, params) = match route(req.method(), &path) {
        Matched::Route(route, params) => (route, params),
        Matched::WrongMethod(allowed) => {
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} is not allowed on {path}", req.method()),
            )
            .into_response();
            let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                response.headers_mut().insert(header::ALLOW, v);
            }
            return Ok(response);
        }
        Matched::None => {
            let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
            if is_read
                && !path.starts_with("/api/")
                && let Some(ui) = app.web()
            {
                return static_files::serve(ui, &path).await;
            }
            return Err(ApiError::not_found(&format!("route {path}")));
        }
    };
    match route {
        Route::Health => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
        )),
        Route::Ready => {
            let store = app.appender().health().check(app.store()).await;
            let bus = app.hub().peers().map(|peers| peers.is_connected());
            let reason = match (store, bus) {
                (Err(e), _) => e.to_string(),
                (Ok(()), Some(false)) => "the cluster bus is disconnected".to_owned(),
                (Ok(()), _) => {
                    return Ok(json_response(
                        StatusCode::OK,
                        &serde_json::json!({"status": "ready"}),
                    ));
                }
            };
            tracing::warn!(reason, "readiness check failed");
            let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", reason);
            err.retry_after = Some(1);
            Err(err)
        }
        Route::OpenApi => {
            let mut response = Response::new(full(Bytes::from_static(OPENAPI.as_bytes())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            );
            Ok(response)
        }
        Route::Register => accounts::register(app, peer, req).await,
        Route::Login => accounts::login(app, peer, req).await,
        Route::Refresh => accounts::refresh(app, req).await,
        Route::Logout => accounts::logout(app, req).await,
        Route::Me => users::me(app, req).await,
        Route::UpdateMe => users::update_me(app, req).await,
        Route::DeleteMe => accounts::delete_me(app, req).await,
        Route::ChangePassword => accounts::change_password(app, req).await,
        Route::SearchUsers => users::search(app, req).await,
        Route::GetUser => users::get(app, req, params).await,
        Route::Search => search::search(app, req).await,
        Route::ListConversations => conversations::list(app, req).await,
        Route::CreateConversation => conversations::create(app, req).await,
        Route::GetConversation => conversations::get(app, req, params).await,
        Route::AddMember => conversations::add_member(app, req, params).await,
        Route::RemoveMember => conversations::remove_member(app, req, params).await,
        Route::Leave => conversations::leave(app, req, params).await,
        Route::History => conversations::history(app, req, params, false).await,
        Route::Entries => conversations::history(app, req, params, true).await,
        Route::ConversationDevices => devices::of_conversation(app, req, params).await,
        Route::ListDevices => devices::mine(app, req).await,
        Route::RegisterDevice => devices::register(app, req).await,
        Route::RemoveDevice => devices::remove(app, req, params).await,
        Route::UserDevices => devices::of_user(app, req, params).await,
        Route::UploadOptions => files::options(&app),
        Route::CreateUpload => files::create(app, req).await,
        Route::UploadStatus => files::status(app, req, params).await,
        Route::AppendUpload => files::append(app, req, params).await,
        Route::EndUpload => files::end(app, req, params).await,
        Route::Download => files::download(app, req, params).await,
        Route::WebSocket => crate::ws::upgrade(app, peer, req)
            .await
            .map(|r| r.map(|b| b.map_err(|never| match never {}).boxed()))
            .map_err(Into::into),
        Route::Metrics => {
            let mut response = Response::new(full(crate::metrics::render()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_capture_segments() {
        assert_eq!(
            match_path("/api/users/{id}", "/api/users/42"),
            Some(vec!["42".to_owned()])
        );
        assert_eq!(match_path("/api/users/{id}", "/api/users/"), None);
        assert_eq!(match_path("/api/users/{id}", "/api/users/42/x"), None);
        assert_eq!(
            match_path(
                "/api/conversations/{id}/members/{user_id}",
                "/api/conversations/7/members/9"
            ),
            Some(vec!["7".to_owned(), "9".to_owned()])
        );
        assert!(
            matches!(route(&Method::DELETE, "/api/login"), Matched::WrongMethod(m) if m == [Method::POST])
        );
        assert!(matches!(route(&Method::GET, "/nope"), Matched::None));
        assert!(matches!(
            route(&Method::HEAD, "/healthz"),
            Matched::Route(Route::Health, _)
        ));
    }
}
