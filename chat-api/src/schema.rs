//! JSON Schema of every endpoint's bodies (feature `schema`).
//!
//! [`endpoints`] lists every endpoint with the schema of the request body the server
//! accepts and of the response body it sends, as `schemars` derives them from the
//! types themselves. `tests/openapi.rs` checks `openapi.yaml` against this list, so
//! the published description of the API cannot drift from the code.

use std::any::TypeId;

use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, Schema};

use crate::Endpoint;

/// One endpoint and the JSON Schemas of its bodies.
#[derive(Clone, Debug)]
pub struct Described {
    /// The HTTP method.
    pub method: http::Method,
    /// The path pattern, with `{name}` segments.
    pub path: &'static str,
    /// What the server accepts as the request body; `None` when it takes none.
    pub request: Option<Schema>,
    /// What the server sends on success; `None` for `204 No Content`.
    pub response: Option<Schema>,
}

impl Described {
    /// The description of endpoint `E`.
    pub fn of<E>() -> Self
    where
        E: Endpoint,
        E::Request: JsonSchema + 'static,
        E::Response: JsonSchema + 'static,
    {
        Described {
            method: E::METHOD,
            path: E::PATH,
            request: body::<E::Request>(Contract::Deserialize),
            response: body::<E::Response>(Contract::Serialize),
        }
    }
}

/// The schema of one body as `contract` sees it: what deserializing accepts (optional
/// and defaulted fields are not required) or what serializing produces.
fn body<T: JsonSchema + 'static>(contract: Contract) -> Option<Schema> {
    if TypeId::of::<T>() == TypeId::of::<()>() {
        return None;
    }
    let generator = SchemaSettings::draft2020_12()
        .with(|settings| settings.contract = contract)
        .into_generator();
    Some(generator.into_root_schema_for::<T>())
}

/// Every endpoint of the API.
pub fn endpoints() -> Vec<Described> {
    [
        crate::accounts::described(),
        crate::users::described(),
        crate::conversations::described(),
        crate::devices::described(),
        crate::files::described(),
        crate::search::described(),
    ]
    .concat()
}
