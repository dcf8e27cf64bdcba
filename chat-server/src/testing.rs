//! Test support: throwaway databases for both backends, and client WebSocket frames
//! as the wire carries them.
//!
//! PostgreSQL tests use the server named by `CHAT_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), each in a fresh schema that is dropped
//! afterwards.

use std::sync::Arc;

#[cfg(feature = "postgres")]
use sqlx::postgres::PgConnectOptions;
#[cfg(feature = "postgres")]
use sqlx::{ConnectOptions as _, Connection as _};

#[cfg(feature = "postgres")]
use crate::store::PgStore;
use crate::store::{SqliteStore, Store};

/// Which backend a [`TestDb`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestDbKind {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh schema in the test PostgreSQL server.
    #[cfg(feature = "postgres")]
    Postgres,
}

/// A throwaway database.
#[derive(Debug)]
pub struct TestDb {
    /// The store over it.
    pub store: Arc<dyn Store>,
    /// A URL that opens the same database (for starting a server on it).
    pub url: String,
    /// The PostgreSQL schema to drop afterwards.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

/// The PostgreSQL server used by tests.
pub fn postgres_url() -> String {
    std::env::var("CHAT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

impl TestDb {
    /// Creates and migrates a fresh database.
    pub async fn new(kind: TestDbKind) -> Self {
        match kind {
            TestDbKind::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                let store = SqliteStore::connect(&url).await.expect("sqlite store");
                Self {
                    store: Arc::new(store),
                    url,
                    schema: None,
                    _dir: Some(dir),
                }
            }
            #[cfg(feature = "postgres")]
            TestDbKind::Postgres => {
                let base = postgres_url();
                let schema = format!("chat_test_{:016x}", rand::random::<u64>());
                let options: PgConnectOptions = base.parse().expect("postgres URL");
                let mut conn = options.connect().await.expect("PostgreSQL is reachable");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut conn)
                    .await
                    .expect("schema created");
                conn.close().await.ok();
                let store =
                    PgStore::connect_with(options.options([("search_path", schema.as_str())]))
                        .await
                        .expect("postgres store");
                let sep = if base.contains('?') { '&' } else { '?' };
                Self {
                    store: Arc::new(store),
                    url: format!("{base}{sep}options=-csearch_path%3D{schema}"),
                    schema: Some(schema),
                    _dir: None,
                }
            }
        }
    }

    /// Drops the PostgreSQL schema (SQLite files go with the temporary directory).
    pub async fn cleanup(self) {
        #[cfg(feature = "postgres")]
        if let Some(schema) = &self.schema {
            let options: PgConnectOptions = postgres_url().parse().expect("postgres URL");
            if let Ok(mut conn) = options.connect().await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(&mut conn)
                    .await;
                conn.close().await.ok();
            }
        }
    }
}

/// A final client WebSocket frame (masked with `key`, as RFC 6455 requires of clients)
/// as the wire carries it, for tests that write raw bytes.
pub fn client_frame(opcode: fastwebsockets::OpCode, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut frame = fastwebsockets::Frame::new(true, opcode, Some(key), payload.to_vec().into());
    frame.mask();
    let mut head = [0u8; 14];
    let n = frame.fmt_head(&mut head);
    let mut out = head[..n].to_vec();
    out.extend_from_slice(&frame.payload);
    out
}
