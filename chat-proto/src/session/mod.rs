//! Session state machines, without IO (PROTOCOL.md §9 "Session rules").
//!
//! [`ClientSession`] is everything a client needs to speak the protocol correctly:
//! request ids, the in-flight window, retries across reconnects with the same
//! idempotency keys, resume cursors, and ordered, de-duplicated delivery per
//! conversation. [`ServerSession`] is the protocol's half of a server connection: which
//! frames each state allows and the limits every request must meet. Both take frames
//! and timestamps in and give frames and events out; the IO around them is the
//! caller's.

mod client;
mod server;

pub use client::{
    ClientConfig, ClientSession, ConnectionState, DisconnectReason, Event, PendingKind,
    RequestError, StateError,
};
pub use server::{Inbound, Rejection, ServerSession, ServerState, TYPING_INTERVAL, Timeout};
