//! Password hashing and end-to-end message encryption.
#![deny(missing_docs)]
