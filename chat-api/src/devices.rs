//! Device keys for end-to-end encryption: register, list, remove; a contact's or a
//! conversation's devices. The server stores public keys only.

use serde::{Deserialize, Serialize};

use crate::model::Device;

crate::endpoints! {
    /// `GET /api/devices`: the caller's devices.
    ListDevices: GET "/api/devices", () => Vec<Device>;
    /// `POST /api/devices`: registers a device key of the caller's (201 when new, 200
    /// when the caller had it).
    RegisterDevice: POST "/api/devices", RegisterDeviceRequest => Device;
    /// `DELETE /api/devices/{id}`: removes one of the caller's devices (204).
    RemoveDevice: DELETE "/api/devices/{id}", () => ();
    /// `GET /api/users/{id}/devices`: a user's devices.
    UserDevices: GET "/api/users/{id}/devices", () => Vec<Device>;
}

/// The body of [`RegisterDevice`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterDeviceRequest {
    /// The X25519 public key, standard base64 of 32 bytes.
    pub public_key: String,
    /// A name for the owner's device list ("laptop").
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(as = "Option<String>", optional))]
    pub name: String,
}
