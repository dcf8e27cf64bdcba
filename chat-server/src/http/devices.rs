//! Device keys for end-to-end encryption: register, list, remove; read a contact's or
//! a conversation's devices. The server stores public keys only.

use base64::Engine as _;
use chat_api::devices::RegisterDeviceRequest;
use chat_crypto::e2e::{DeviceId, DevicePublicKey, KeyError};
use chat_proto::ids::{ConversationId, Timestamp, UserId};
use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::error::ApiError;
use super::request;
use super::{HandlerResult, Params, empty, json_response, path_id, validate};
use crate::app::App;

pub use crate::services::conversations::{MAX_DEVICES_PER_USER, MAX_ENCRYPTED_GROUP_MEMBERS};

/// `POST /api/devices`: registers the caller's device key (`public_key`, standard
/// base64 of 32 bytes; `name` optional). 201 when new, 200 when the caller had it.
pub async fn register(app: App, req: Request<Incoming>) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    let body: RegisterDeviceRequest = request::json(req).await?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body.public_key.as_bytes())
        .map_err(|_| invalid_key("public_key is not standard base64"))?;
    let key = DevicePublicKey::from_bytes(&raw).map_err(|e| match e {
        KeyError::LowOrder => invalid_key("public_key is a low-order point"),
        _ => invalid_key("public_key is an X25519 public key of 32 bytes"),
    })?;
    let name = validate::device_name(&body.name)?;
    let me = caller.user.id;
    let existing = app.store().devices(me).await?;
    if existing.len() >= MAX_DEVICES_PER_USER && !existing.iter().any(|d| d.public_key == key) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_devices",
            format!("an account has at most {MAX_DEVICES_PER_USER} devices; remove one first"),
        ));
    }
    let (device, created) = app
        .store()
        .add_device(me, key, name, Timestamp::now())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &chat_api::Device::from(&device)))
}

fn invalid_key(message: &str) -> ApiError {
    ApiError::invalid("invalid_public_key", message)
}

/// `GET /api/devices`: the caller's devices.
pub async fn mine(app: App, req: Request<Incoming>) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    let devices = app.store().devices(caller.user.id).await?;
    Ok(json_response(StatusCode::OK, &api_devices(&devices)))
}

/// `DELETE /api/devices/{id}`: removes one of the caller's devices; it gets no key for
/// messages sealed afterwards.
pub async fn remove(app: App, req: Request<Incoming>, params: Params) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    let id: DeviceId = path_id(&params, 0, "device")?;
    if app.store().remove_device(caller.user.id, id).await? {
        Ok(empty(StatusCode::NO_CONTENT))
    } else {
        Err(ApiError::not_found("device"))
    }
}

/// `GET /api/users/{id}/devices`: a user's devices, for the user and their contacts
/// (people who share a conversation with them); 404 for anyone else.
pub async fn of_user(app: App, req: Request<Incoming>, params: Params) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    let id: UserId = path_id(&params, 0, "user")?;
    if id != caller.user.id && !app.store().share_conversation(caller.user.id, id).await? {
        return Err(ApiError::not_found("user"));
    }
    let devices = app.store().devices(id).await?;
    Ok(json_response(StatusCode::OK, &api_devices(&devices)))
}

/// `GET /api/conversations/{id}/devices`: every device of every member, the set an
/// encrypted message to the conversation is sealed for.
pub async fn of_conversation(app: App, req: Request<Incoming>, params: Params) -> HandlerResult {
    let caller = request::authenticate(&app, &req).await?;
    let id: ConversationId = path_id(&params, 0, "conversation")?;
    crate::services::conversations::member_view(&app, caller.user.id, id).await?;
    let devices = app.store().conversation_devices(id).await?;
    Ok(json_response(StatusCode::OK, &api_devices(&devices)))
}

fn api_devices(devices: &[crate::store::Device]) -> Vec<chat_api::Device> {
    devices.iter().map(chat_api::Device::from).collect()
}
