//! Cryptography of the chat system, on vetted primitives only.
//!
//! - [`password`]: Argon2id password hashing in PHC string format, with parameter
//!   upgrades detected at verification time.
//!
//! End-to-end message encryption (HPKE-wrapped AES-256-GCM envelopes) joins this crate
//! with the end-to-end encryption work; nothing here implements a primitive itself.
#![deny(missing_docs)]

pub mod password;
