//! The service layer: what a user may do, decided once for the HTTP API and the
//! real-time sessions alike (the way a homeserver keeps its room rules out of its API
//! handlers). Handlers and sessions call these and turn a [`Denied`] into their own
//! answer: an HTTP status with a code, or an `error` frame.

pub mod conversations;

pub use conversations::Denied;
