//! The chat server.
#![deny(missing_docs)]

pub mod store;
#[doc(hidden)]
pub mod testing;
