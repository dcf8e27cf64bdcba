//! JSON Schema of the wire types that the HTTP API shares with the real-time protocol
//! (feature `schema`): ids, sequence numbers, times and messages.
//!
//! `chat-api` derives the schema of every HTTP body from these, and its tests check
//! `openapi.yaml` against them, so the published description cannot drift from the
//! types the server and the SDK use.

/// `JsonSchema` for a type whose JSON form is one plain JSON Schema, given inline.
macro_rules! plain {
    ($name:ty, $title:expr => $schema:tt) => {
        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed($title)
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!($schema)
            }
        }
    };
}
pub(crate) use plain;
