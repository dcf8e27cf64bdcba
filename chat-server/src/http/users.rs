//! Profiles: one's own, others', and search by username prefix.

use chat_api::users::{ProfileUpdate, UserPage};
use chat_proto::ids::UserId;
use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::error::ApiError;
use super::request::{self, query_param};
use super::{HandlerResult, Params, json_response, path_id, validate};
use crate::app::App;

/// `GET /api/me`
pub async fn me(app: App, req: Request<Incoming>) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    Ok(json_response(StatusCode::OK, &caller.user))
}

/// `PATCH /api/me`: changes `display_name` and/or `bio`.
pub async fn update_me(app: App, req: Request<Incoming>) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    let body: ProfileUpdate = request::json(req).await?;
    let display_name = body
        .display_name
        .as_deref()
        .map(validate::display_name)
        .transpose()?;
    let bio = body.bio.as_deref().map(validate::bio).transpose()?;
    let user = app
        .store()
        .update_profile(caller.user.id, display_name, bio)
        .await?
        .ok_or_else(ApiError::invalid_token)?;
    Ok(json_response(StatusCode::OK, &user))
}

/// `GET /api/users/{id}`
pub async fn get(app: App, req: Request<Incoming>, params: Params) -> HandlerResult {
    request::authenticate(&app, &req).await?;
    let id: UserId = path_id(&params, 0, "user")?;
    let user = app
        .store()
        .user(id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(json_response(StatusCode::OK, &user))
}

/// `GET /api/users?q=PREFIX&limit=N&after=USERNAME`: users whose username starts with
/// the prefix, in username order; `next` is the cursor of the following page.
pub async fn search(app: App, req: Request<Incoming>) -> HandlerResult {
    request::authenticate(&app, &req).await?;
    let pairs = request::query(&req);
    let prefix = query_param::<String>(&pairs, "q")?
        .unwrap_or_default()
        .to_ascii_lowercase();
    if prefix.chars().count() > 32 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "q is at most 32 characters",
        ));
    }
    let limit = query_param::<u32>(&pairs, "limit")?.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be within 1..=100",
        ));
    }
    let after = query_param::<String>(&pairs, "after")?;
    let users = app
        .store()
        .search_users(&prefix, after.as_deref(), limit)
        .await?;
    let next = (users.len() == limit as usize)
        .then(|| users.last().map(|u| u.username.clone()))
        .flatten();
    Ok(json_response(StatusCode::OK, &UserPage { users, next }))
}
