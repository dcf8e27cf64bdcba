//! The HTTP API of the chat system: every request and response body, the data types
//! they share, and each endpoint's method and path. The server's handlers and the
//! SDK both use these types, so the two cannot disagree about a field; the wire
//! frames of real-time sessions live in `chat-proto`.
//!
//! Each endpoint is a unit type implementing [`Endpoint`], grouped in one module per
//! family ([`accounts`], [`users`], [`conversations`], [`devices`], [`files`],
//! [`search`]), in the way the
//! `openapi.yaml` description of the API groups them. Path patterns name their
//! parameters in braces (`/api/users/{id}`); [`Endpoint::path`] fills them in.
//!
//! Features: `ts` generates the browser client's TypeScript from these types
//! (`ts::typescript`); `schema` derives their JSON Schema (`schema::endpoints`),
//! against which a test checks `openapi.yaml`.
//!
//! ```
//! use chat_api::Endpoint as _;
//! use chat_api::accounts::{Login, LoginRequest};
//!
//! assert_eq!(Login::PATH, "/api/login");
//! let body = LoginRequest::new("ada", "analytical engine");
//! assert_eq!(body.username, "ada");
//! assert_eq!(chat_api::users::GetUser::path(&["7"]), "/api/users/7");
//! ```
#![deny(missing_docs)]

pub mod accounts;
pub mod conversations;
pub mod devices;
pub mod files;
pub mod model;
#[cfg(feature = "schema")]
pub mod schema;
pub mod search;
#[cfg(feature = "ts")]
pub mod ts;
pub mod users;

pub use model::{Conversation, ConversationKind, ConversationSummary, Device, Member, Role, User};

use serde::{Deserialize, Serialize};

/// One HTTP endpoint: its method, its path pattern, and the bodies it takes and gives.
pub trait Endpoint {
    /// The HTTP method.
    const METHOD: http::Method;
    /// The path, with `{name}` for each parameter segment.
    const PATH: &'static str;
    /// The JSON request body (`()` when there is none).
    type Request;
    /// The JSON response body on success (`()` for `204 No Content`).
    type Response;

    /// The path with its `{…}` segments replaced by `params`, in order.
    fn path(params: &[&str]) -> String {
        let mut params = params.iter();
        Self::PATH
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') && segment.ends_with('}') {
                    params.next().copied().unwrap_or(segment)
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Declares endpoint unit types.
macro_rules! endpoints {
    ($($(#[$doc:meta])* $name:ident: $method:ident $path:literal, $req:ty => $resp:ty;)*) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Copy, Debug)]
            pub struct $name;

            impl $crate::Endpoint for $name {
                const METHOD: http::Method = http::Method::$method;
                const PATH: &'static str = $path;
                type Request = $req;
                type Response = $resp;
            }
        )*

        /// Every endpoint of this module, with the JSON Schemas of its bodies.
        #[cfg(feature = "schema")]
        pub fn described() -> Vec<$crate::schema::Described> {
            vec![$($crate::schema::Described::of::<$name>(),)*]
        }
    };
}
pub(crate) use endpoints;

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorBody,
}

/// The body of an [`ErrorResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    /// A stable, machine-readable code (`invalid_credentials`, `not_found`, …).
    pub code: String,
    /// A sentence for people.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fill_their_parameters_in_order() {
        assert_eq!(
            conversations::RemoveMember::path(&["7", "9"]),
            "/api/conversations/7/members/9"
        );
        assert_eq!(accounts::Register::path(&[]), "/api/register");
    }

    #[test]
    fn bodies_read_and_write_the_json_the_api_documents() {
        use chat_proto::ids::UserId;
        let direct: conversations::CreateConversationRequest =
            serde_json::from_str(r#"{"kind":"direct","members":[2]}"#).expect("direct");
        assert_eq!(
            direct,
            conversations::CreateConversationRequest::Direct {
                members: vec![UserId::new(2).expect("id")],
                encrypted: false,
            }
        );
        let group = serde_json::to_value(conversations::CreateConversationRequest::Group {
            title: "g".into(),
            members: vec![],
            encrypted: true,
        })
        .expect("group");
        assert_eq!(
            group,
            serde_json::json!({"kind": "group", "title": "g", "members": [], "encrypted": true})
        );
        // Browsers ask for the cookie; other clients leave the field out.
        let login = serde_json::to_value(accounts::LoginRequest::new("ada", "pw")).expect("login");
        assert_eq!(
            login,
            serde_json::json!({"username": "ada", "password": "pw"})
        );
        let refresh: accounts::RefreshRequest =
            serde_json::from_str(r#"{"cookie":true}"#).expect("refresh");
        assert_eq!((refresh.refresh_token, refresh.cookie), (None, true));
        // Unknown fields in a device registration are refused, as the server always did.
        assert!(
            serde_json::from_str::<devices::RegisterDeviceRequest>(
                r#"{"public_key":"AA==","extra":1}"#
            )
            .is_err()
        );
        let error: ErrorResponse =
            serde_json::from_str(r#"{"error":{"code":"not_found","message":"no such user"}}"#)
                .expect("error");
        assert_eq!(error.error.code, "not_found");
    }
}
