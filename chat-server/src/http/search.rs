//! `GET /api/search`: messages of the caller's conversations that match a query,
//! newest first, with a snippet (chat_api::search has the query rules). Encrypted
//! conversations are never in the index: the server cannot read them.

use chat_api::search::{
    DEFAULT_LIMIT, MAX_LIMIT, MAX_QUERY, MAX_TERMS, Query, QueryError, SearchPage, SearchResult,
    snippet,
};
use chat_proto::ids::ConversationId;
use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::error::ApiError;
use super::request::{self, query_param};
use super::{HandlerResult, json_response};
use crate::app::App;

/// Characters of text a snippet shows around its first match.
const SNIPPET_WIDTH: usize = 120;

/// `GET /api/search?q=…&conversation=ID&before=CURSOR&limit=N`
pub async fn search(app: App, req: Request<Incoming>) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    let pairs = request::query(&req);
    let q = query_param::<String>(&pairs, "q")?.unwrap_or_default();
    let query = Query::parse(&q).map_err(|e| match e {
        QueryError::Empty => {
            ApiError::bad_request("empty_query", "the query needs a word to look for")
        }
        QueryError::TooLong => ApiError::bad_request(
            "query_too_long",
            format!("queries are at most {MAX_QUERY} bytes and {MAX_TERMS} terms"),
        ),
    })?;
    let limit = query_param::<u32>(&pairs, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be within 1..={MAX_LIMIT}"),
        ));
    }
    let before = query_param::<i64>(&pairs, "before")?;
    let conversation = match query_param::<u64>(&pairs, "conversation")? {
        None => None,
        Some(raw) => {
            let id = ConversationId::new(raw)
                .map_err(|_| ApiError::bad_request("invalid_query", "conversation is not an id"))?;
            // Someone else's conversation is not found, as everywhere.
            crate::services::conversations::member_view(&app, caller.user.id, id).await?;
            Some(id)
        }
    };
    let hits = app
        .store()
        .search(caller.user.id, conversation, &query, before, limit)
        .await?;
    let next = (hits.len() == limit as usize)
        .then(|| hits.last().map(|h| h.id.to_string()))
        .flatten();
    let results = hits
        .into_iter()
        .map(|h| SearchResult {
            snippet: snippet(&h.text, &query, SNIPPET_WIDTH),
            conversation: h.conversation,
            seq: h.seq,
            sender: h.sender,
            sent_at: h.sent_at,
            text: h.text,
        })
        .collect();
    Ok(json_response(StatusCode::OK, &SearchPage { results, next }))
}
