//! Cryptography of the chat system, on vetted primitives only.
//!
//! - [`password`]: Argon2id password hashing in PHC string format, with parameter
//!   upgrades detected at verification time.
//!
//! - [`e2e`]: end-to-end message encryption: device keys, fingerprints, and envelopes
//!   whose AES-256-GCM body key is wrapped for every recipient device with HPKE
//!   (RFC 9180).
//! - [`file`](mod@file): end-to-end encrypted files, sealed in independently authenticated
//!   chunks under a per-file key.
//! - [`backend()`]: which hardware-accelerated paths the primitives use on this CPU.
//!
//! Nothing here implements a primitive: AES-GCM bodies use ring, HPKE the `hpke` crate
//! (RustCrypto AES-GCM and HKDF, curve25519-dalek), passwords the `argon2` crate.
#![deny(missing_docs)]

mod backend;
pub mod e2e;
pub mod file;
pub mod password;

pub use backend::{Backend, backend};
