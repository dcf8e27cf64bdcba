//! SQLite: the embedded default. WAL mode, foreign keys on, a busy timeout, and one
//! writer for messages (the appender) so group commits never fight each other.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::Dialect as _;
use super::StoreError;
use super::sql::impl_store;

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database a `sqlite://` URL names and migrates it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(SqliteConnectOptions::from_str(url)?).await
    }

    /// Opens the database `options` name and migrates it, with this store's settings
    /// (journal, durability, foreign keys, busy timeout) on top of them; tests use it
    /// to set pragmas of their own.
    pub async fn connect_with(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL keeps the database consistent across crashes and loses at
            // most the last transactions on power loss; FULL makes each commit durable.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Deleted messages are purged, not hidden: freed space is overwritten with
            // zeros, so a purged body does not linger in the file's free pages.
            .pragma("secure_delete", "ON")
            .busy_timeout(Duration::from_secs(5))
            .statement_cache_capacity(super::STATEMENT_CACHE);
        create_private(options.get_filename());
        let pool = SqlitePoolOptions::new()
            // A file in this process does not go away between uses: no liveness ping
            // (a round trip to the connection's thread) before every acquire.
            .test_before_acquire(false)
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

impl super::Dialect for SqliteStore {
    type Db = Sqlite;

    /// Inserts message rows with multi-row VALUES statements.
    async fn insert_messages(
        tx: &mut super::tx::WriteTx<Sqlite>,
        rows: &[super::NewRow],
    ) -> Result<super::InsertedIds, StoreError> {
        let mut ids = super::InsertedIds::with_capacity(rows.len());
        for chunk in rows.chunks(100) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body_kind, body, files, created_at, kind, target) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.conversation)
                    .push_bind(r.seq)
                    .push_bind(r.sender)
                    .push_bind(r.client_msg_id.as_slice())
                    .push_bind(r.body_kind)
                    .push_bind(r.body.as_deref())
                    .push_bind(r.files.as_deref())
                    .push_bind(r.created_at)
                    .push_bind(r.kind)
                    .push_bind(r.target);
            });
            q.push(" RETURNING id, conversation_id, seq");
            ids.extend(super::inserted_ids(q.build().fetch_all(&mut **tx).await?)?);
        }
        Ok(ids)
    }

    /// `BEGIN IMMEDIATE` already holds the one write lock.
    async fn lock_user(_tx: &mut super::tx::WriteTx<Sqlite>, _id: i64) -> Result<(), StoreError> {
        Ok(())
    }

    /// SQLite has one writer at a time (`BEGIN IMMEDIATE`): nothing to order.
    async fn lock_conversations(
        _tx: &mut super::tx::WriteTx<Sqlite>,
        _ids: &[i64],
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// FTS5 rows keyed by the message id, with the index words in `doc`.
    async fn index_rows(
        tx: &mut super::tx::WriteTx<Sqlite>,
        rows: &[super::search::IndexRow],
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(100) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO message_search (rowid, doc, text, conversation_id, seq) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.id)
                    .push_bind(chat_api::search::document(&r.text))
                    .push_bind(r.text.as_str())
                    .push_bind(r.conversation)
                    .push_bind(r.seq);
            });
            q.build().execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn unindex(tx: &mut super::tx::WriteTx<Sqlite>, ids: &[i64]) -> Result<(), StoreError> {
        for chunk in ids.chunks(500) {
            let mut q =
                sqlx::QueryBuilder::<Sqlite>::new("DELETE FROM message_search WHERE rowid IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            q.build().execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// FTS5 walks its matches by rowid (the message id), newest first, and stops at
    /// the page's end; the join keeps the caller's conversations only.
    async fn search_rows(
        &self,
        user: i64,
        conversation: Option<i64>,
        query: &chat_api::search::Query,
        before: i64,
        limit: i64,
    ) -> Result<Vec<super::search::SearchHit>, StoreError> {
        let rows = sqlx::query(
            "SELECT message_search.rowid AS id, m.conversation_id, m.seq, m.sender_id, m.created_at, \
             message_search.text AS text \
             FROM message_search JOIN messages m ON m.id = message_search.rowid \
             WHERE message_search MATCH $1 AND message_search.rowid < $2 \
             AND m.conversation_id IN (SELECT conversation_id FROM members WHERE user_id = $3) \
             AND ($4 IS NULL OR m.conversation_id = $4) \
             ORDER BY message_search.rowid DESC LIMIT $5",
        )
        .bind(super::search::fts5_query(query))
        .bind(before)
        .bind(user)
        .bind(conversation)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::hit_from_row).collect()
    }

    /// A write transaction that takes the write lock up front, so it never has to
    /// upgrade (and fail with SQLITE_BUSY) halfway.
    async fn begin_write(&self) -> Result<super::tx::WriteTx<Sqlite>, StoreError> {
        super::tx::WriteTx::begin(&self.pool, "BEGIN IMMEDIATE").await
    }
}

impl_store!(SqliteStore, Sqlite, "sqlite", 1);

/// Creates the database file readable by its owner only (it holds password hashes);
/// SQLite gives its -wal and -shm files the same permissions.
fn create_private(path: &std::path::Path) {
    if path.as_os_str().is_empty() || path == std::path::Path::new(":memory:") || path.exists() {
        return;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    if let Err(e) = options.open(path) {
        tracing::debug!(path = %path.display(), error = %e, "could not pre-create the database file");
    }
}
