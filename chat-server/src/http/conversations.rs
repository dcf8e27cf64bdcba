//! Conversations: create direct or group, list, details, members, history.

use chat_api::conversations::{
    AddMemberRequest, ConversationList, CreateConversationRequest, EntryList, MessagePage,
};
use chat_proto::entry::Entry;
use chat_proto::frame::MembershipChange;
use chat_proto::ids::{ConversationId, Seq, Timestamp, UserId};
use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::error::ApiError;
use super::request::{self, query_param};
use super::{HandlerResult, Params, empty, json_response, path_id, validate};
use crate::app::App;
use crate::store::{Conversation, Role};

pub use crate::services::conversations::{MAX_GROUP_MEMBERS, MAX_INITIAL_MEMBERS};
use crate::services::conversations::{has_room, may_change_members, may_have_members, member_view};

/// `POST /api/conversations`: a direct conversation with one other user (idempotent:
/// the same pair always gets the same conversation, 201 when created, 200 after), or a
/// group owned by the caller.
pub async fn create(app: App, req: Request<Incoming>) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    let me = caller.user.id;
    let body: CreateConversationRequest = request::json(req).await?;
    let now = Timestamp::now();
    match body {
        CreateConversationRequest::Direct { members, encrypted } => {
            if members.len() > 2 {
                return Err(ApiError::invalid(
                    "invalid_members",
                    "a direct conversation lists at most two members",
                ));
            }
            let others: Vec<UserId> = members.into_iter().filter(|&m| m != me).collect();
            let [other] = others.as_slice() else {
                return Err(ApiError::invalid(
                    "invalid_members",
                    "a direct conversation has exactly one other member",
                ));
            };
            if app.store().user(*other).await?.is_none() {
                return Err(ApiError::invalid(
                    "unknown_user",
                    format!("user {other} does not exist"),
                ));
            }
            let (conversation, created) = app
                .store()
                .direct_conversation(me, *other, encrypted, now)
                .await?;
            if created {
                announce_new(&app, &conversation, me);
            }
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(status, &conversation))
        }
        CreateConversationRequest::Group {
            title,
            mut members,
            encrypted,
        } => {
            if members.len() > MAX_INITIAL_MEMBERS {
                return Err(ApiError::invalid(
                    "too_many_members",
                    format!(
                        "a group is created with at most {MAX_INITIAL_MEMBERS} members; add more one by one"
                    ),
                ));
            }
            let title = validate::title(&title)?;
            members.retain(|&m| m != me);
            members.sort_unstable();
            members.dedup();
            may_have_members(encrypted, members.len() + 1)?;
            for &m in &members {
                if app.store().user(m).await?.is_none() {
                    return Err(ApiError::invalid(
                        "unknown_user",
                        format!("user {m} does not exist"),
                    ));
                }
            }
            let conversation = app
                .store()
                .create_group(me, title, members, encrypted, now)
                .await?;
            announce_new(&app, &conversation, me);
            Ok(json_response(StatusCode::CREATED, &conversation))
        }
    }
}

/// Tells every member's live sessions that they are in a new conversation.
fn announce_new(app: &App, conversation: &Conversation, by: UserId) {
    for member in &conversation.members {
        app.hub().membership_changed(
            conversation.id,
            member.user.id,
            MembershipChange::Added,
            by,
            &[member.user.id],
        );
    }
    let members = member_ids(conversation);
    app.hub().introduce(&members, &members);
}

fn member_ids(conversation: &Conversation) -> Vec<UserId> {
    conversation.members.iter().map(|m| m.user.id).collect()
}

/// `GET /api/conversations`: the caller's conversations, most recently active first,
/// each with its last message and unread count.
pub async fn list(app: App, req: Request<Incoming>) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    let conversations = app.store().conversations(caller.user.id).await?;
    Ok(json_response(
        StatusCode::OK,
        &ConversationList { conversations },
    ))
}

/// `GET /api/conversations/{id}`
pub async fn get(app: App, req: Request<Incoming>, params: Params) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    let id = path_id(&params, 0, "conversation")?;
    Ok(json_response(
        StatusCode::OK,
        &member_view(&app, caller.user.id, id).await?,
    ))
}

/// `POST /api/conversations/{id}/members`: the owner adds a user (idempotent).
pub async fn add_member(app: App, req: Request<Incoming>, params: Params) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    let id = path_id(&params, 0, "conversation")?;
    let body: AddMemberRequest = request::json(req).await?;
    let conversation = member_view(&app, caller.user.id, id).await?;
    may_change_members(&conversation, caller.user.id, None)?;
    if conversation
        .members
        .iter()
        .any(|m| m.user.id == body.user_id)
    {
        return Ok(json_response(StatusCode::OK, &conversation));
    }
    has_room(&conversation, 1)?;
    if !app
        .store()
        .add_member(id, body.user_id, Role::Member, Timestamp::now())
        .await?
    {
        return Err(ApiError::invalid(
            "unknown_user",
            format!("user {} does not exist", body.user_id),
        ));
    }
    let updated = member_view(&app, caller.user.id, id).await?;
    app.hub().membership_changed(
        id,
        body.user_id,
        MembershipChange::Added,
        caller.user.id,
        &member_ids(&updated),
    );
    app.hub().introduce(&[body.user_id], &member_ids(&updated));
    Ok(json_response(StatusCode::OK, &updated))
}

/// `DELETE /api/conversations/{id}/members/{user_id}`: the owner removes a member (a
/// member may remove themself, which is leaving).
pub async fn remove_member(app: App, req: Request<Incoming>, params: Params) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    let id = path_id(&params, 0, "conversation")?;
    let target: UserId = path_id(&params, 1, "member")?;
    let conversation = member_view(&app, caller.user.id, id).await?;
    may_change_members(&conversation, caller.user.id, Some(target))?;
    if !app.store().remove_member(id, target).await? {
        return Err(ApiError::not_found("member"));
    }
    app.hub().membership_changed(
        id,
        target,
        MembershipChange::Removed,
        caller.user.id,
        &member_ids(&conversation),
    );
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /api/conversations/{id}/leave`
pub async fn leave(app: App, req: Request<Incoming>, params: Params) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    let id = path_id(&params, 0, "conversation")?;
    let conversation = member_view(&app, caller.user.id, id).await?;
    may_change_members(&conversation, caller.user.id, Some(caller.user.id))?;
    app.store().remove_member(id, caller.user.id).await?;
    let me = caller.user.id;
    app.hub().membership_changed(
        id,
        me,
        MembershipChange::Removed,
        me,
        &member_ids(&conversation),
    );
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `GET /api/conversations/{id}/messages?before=SEQ&limit=N` (`entries` false: every
/// entry as a message, the protocol 1.2 view) and `GET …/entries` (`entries` true: the
/// log itself; with `protocol=1.3`, bodies with files as text, the 1.3 view): newest
/// first, at most 200; members only.
pub async fn history(
    app: App,
    req: Request<Incoming>,
    params: Params,
    entries: bool,
) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    let id: ConversationId = path_id(&params, 0, "conversation")?;
    let pairs = request::query(&req);
    let before = query_param::<u64>(&pairs, "before")?
        .map(|b| {
            Seq::new(b)
                .map_err(|_| ApiError::bad_request("invalid_query", "before is out of range"))
        })
        .transpose()?;
    let limit = query_param::<u32>(&pairs, "limit")?.unwrap_or(50);
    // A client of an older minor version reads the entries as it would on the wire.
    let files = match pairs
        .iter()
        .find(|(k, _)| k == "protocol")
        .map(|(_, v)| v.as_str())
    {
        None | Some("1.4") => true,
        Some("1.3") => false,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "protocol is 1.3 or 1.4",
            ));
        }
    };
    if !(1..=u32::from(chat_proto::limits::MAX_PAGE)).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be within 1..={}", chat_proto::limits::MAX_PAGE),
        ));
    }
    member_view(&app, caller.user.id, id).await?;
    let (page, has_more) = app.store().history(id, before, limit).await?;
    if entries {
        return Ok(json_response(
            StatusCode::OK,
            &EntryList {
                entries: if files {
                    page
                } else {
                    page.iter()
                        .map(|e| e.without_files().unwrap_or_else(|| e.clone()))
                        .collect()
                },
                has_more,
            },
        ));
    }
    let messages = page.iter().map(Entry::to_message).collect();
    Ok(json_response(
        StatusCode::OK,
        &MessagePage { messages, has_more },
    ))
}
