//! The chat server as a library: the `chat-server` binary is a thin main over
//! [`Server`], and integration tests start the same server in-process.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use clap::Parser as _;
//! let config = chat_server::config::Config::parse();
//! let server = chat_server::Server::bind(config).await?;
//! println!("listening on {}", server.http_addr());
//! server.run(chat_server::server::shutdown_signal()).await
//! # }
//! ```
#![deny(missing_docs)]

pub mod app;
pub mod auth;
pub mod blobs;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod http;
pub mod hub;
pub(crate) mod io;
pub mod metrics;
pub mod outbox;
pub mod quic;
pub mod server;
pub mod services;
pub mod session;
pub mod store;
#[doc(hidden)]
pub mod testing;
pub mod web;
pub mod wire;
pub mod ws;

pub use server::{RunningServer, Server};
