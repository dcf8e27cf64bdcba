//! Async client library.
#![deny(missing_docs)]
