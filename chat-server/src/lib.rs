//! The chat server.
#![deny(missing_docs)]
