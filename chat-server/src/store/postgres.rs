//! PostgreSQL: the production backend, shared by every server node.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::Dialect as _;
use super::StoreError;
use super::sql::impl_store;

/// The PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to the database a `postgres://` URL names and migrates it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        Self::connect_with(options).await
    }

    /// Connects with explicit options (tests use them to pick a schema).
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        // A write that waits for a lock longer than this fails (`busy`: clients are
        // told `unavailable` with a retry time) instead of queueing every send behind it.
        let options = options
            .statement_cache_capacity(super::STATEMENT_CACHE)
            .options([("lock_timeout", "5s")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // A database that went away is reported to clients (`unavailable`) within
            // this, rather than holding their requests.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

impl super::Dialect for PgStore {
    type Db = Postgres;

    /// Inserts message rows with one fixed statement over arrays, prepared once
    /// whatever the batch size.
    async fn insert_messages(
        tx: &mut super::tx::WriteTx<Postgres>,
        rows: &[super::NewRow],
    ) -> Result<super::InsertedIds, StoreError> {
        let conversation: Vec<i64> = rows.iter().map(|r| r.conversation).collect();
        let seq: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let sender: Vec<i64> = rows.iter().map(|r| r.sender).collect();
        let key: Vec<&[u8]> = rows.iter().map(|r| r.client_msg_id.as_slice()).collect();
        let body_kind: Vec<i16> = rows.iter().map(|r| r.body_kind).collect();
        let body: Vec<Option<&[u8]>> = rows.iter().map(|r| r.body.as_deref()).collect();
        let files: Vec<Option<&[u8]>> = rows.iter().map(|r| r.files.as_deref()).collect();
        let created: Vec<i64> = rows.iter().map(|r| r.created_at).collect();
        let kind: Vec<i16> = rows.iter().map(|r| r.kind).collect();
        let target: Vec<Option<i64>> = rows.iter().map(|r| r.target).collect();
        let inserted = sqlx::query(
            "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body_kind, body, files, created_at, kind, target) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[], $5::smallint[], $6::bytea[], $7::bytea[], $8::bigint[], $9::smallint[], $10::bigint[]) \
             RETURNING id, conversation_id, seq",
        )
        .bind(&conversation)
        .bind(&seq)
        .bind(&sender)
        .bind(&key)
        .bind(&body_kind)
        .bind(&body)
        .bind(&files)
        .bind(&created)
        .bind(&kind)
        .bind(&target)
        .fetch_all(&mut **tx)
        .await?;
        super::inserted_ids(inserted)
    }

    /// Locks the user's row until the transaction ends.
    async fn lock_user(tx: &mut super::tx::WriteTx<Postgres>, id: i64) -> Result<(), StoreError> {
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Locks conversation rows in id order, so concurrent batches (on this node or
    /// others) never wait on each other in a cycle.
    async fn lock_conversations(
        tx: &mut super::tx::WriteTx<Postgres>,
        ids: &[i64],
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT id FROM conversations WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(ids)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Rows with a tsvector built here from the index words (no parser, no dictionary).
    async fn index_rows(
        tx: &mut super::tx::WriteTx<Postgres>,
        rows: &[super::search::IndexRow],
    ) -> Result<(), StoreError> {
        let id: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let conversation: Vec<i64> = rows.iter().map(|r| r.conversation).collect();
        let seq: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let text: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
        let doc: Vec<String> = rows
            .iter()
            .map(|r| super::search::tsvector(&r.text))
            .collect();
        sqlx::query(
            "INSERT INTO message_search (message_id, conversation_id, seq, text, doc) \
             SELECT i, c, s, t, d::tsvector \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[]) AS v(i, c, s, t, d)",
        )
        .bind(&id)
        .bind(&conversation)
        .bind(&seq)
        .bind(&text)
        .bind(&doc)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn unindex(tx: &mut super::tx::WriteTx<Postgres>, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM message_search WHERE message_id = ANY($1)")
            .bind(ids)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The GIN index finds the matches; the newest of the caller's come first.
    async fn search_rows(
        &self,
        user: i64,
        conversation: Option<i64>,
        query: &chat_api::search::Query,
        before: i64,
        limit: i64,
    ) -> Result<Vec<super::search::SearchHit>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.message_id AS id, s.conversation_id, s.seq, m.sender_id, m.created_at, s.text \
             FROM message_search s JOIN messages m ON m.id = s.message_id \
             WHERE s.doc @@ $1::tsquery AND s.message_id < $2 \
             AND s.conversation_id IN (SELECT conversation_id FROM members WHERE user_id = $3) \
             AND ($4::bigint IS NULL OR s.conversation_id = $4) \
             ORDER BY s.message_id DESC LIMIT $5",
        )
        .bind(super::search::tsquery(query))
        .bind(before)
        .bind(user)
        .bind(conversation)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::hit_from_row).collect()
    }

    async fn begin_write(&self) -> Result<super::tx::WriteTx<Postgres>, StoreError> {
        super::tx::WriteTx::begin(&self.pool, "BEGIN").await
    }
}

impl_store!(PgStore, Postgres, "postgres", 4);
