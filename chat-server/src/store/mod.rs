//! Storage: one [`Store`] trait, implemented for SQLite (the default, embedded) and
//! PostgreSQL (production, several nodes), with migrations for both.
//!
//! Both implementations share their SQL (written to be portable) through one macro in
//! `sql.rs`; what differs is the schema dialect in `migrations/` and the connection
//! setup. Message appends go through [`append::Appender`], which group-commits
//! concurrent sends.

pub mod append;
pub mod health;
mod postgres;
mod sql;
mod sqlite;
mod tx;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chat_crypto::e2e::{DeviceId, DevicePublicKey};
use chat_proto::body::Body;
use chat_proto::frame::Message;
use chat_proto::ids::{ClientMsgId, ConversationId, Seq, Timestamp, UserId};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A boxed store future; one allocation per database call is noise next to the call.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint refused the write (which one is named).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value is outside what the protocol allows.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The store's background task is gone (shutting down).
    #[error("store is shut down")]
    Closed,
}

/// What kind of failure a [`StoreError`] is: the label of
/// `chat_store_errors_total`, and whether a client should simply retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreErrorKind {
    /// The disk (or the database's size limit) is full.
    Full,
    /// Another writer holds a lock, or a transaction lost a serialization race.
    Busy,
    /// The connection failed, was killed, or the database is shutting down.
    Unreachable,
    /// No connection became free in time, or a statement hit its timeout.
    Timeout,
    /// Reading or writing the database's files failed.
    Io,
    /// A stored value or the database file is not what it should be.
    Corrupt,
    /// A uniqueness constraint refused the write (an answer, not a failure).
    Conflict,
    /// The store is shutting down.
    Closed,
    /// Anything else (a bug, a failed migration).
    Other,
}

impl StoreErrorKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Full => "full",
            StoreErrorKind::Busy => "busy",
            StoreErrorKind::Unreachable => "unreachable",
            StoreErrorKind::Timeout => "timeout",
            StoreErrorKind::Io => "io",
            StoreErrorKind::Corrupt => "corrupt",
            StoreErrorKind::Conflict => "conflict",
            StoreErrorKind::Closed => "closed",
            StoreErrorKind::Other => "other",
        }
    }

    /// Whether the same request may well succeed later, so the client is told
    /// `unavailable` with a retry time rather than about an internal error.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            StoreErrorKind::Full
                | StoreErrorKind::Busy
                | StoreErrorKind::Unreachable
                | StoreErrorKind::Timeout
                | StoreErrorKind::Io
                | StoreErrorKind::Closed
        )
    }
}

impl StoreError {
    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::Conflict(_) => StoreErrorKind::Conflict,
            StoreError::Database(e) => sqlx_kind(e),
            StoreError::Migrate(_) => StoreErrorKind::Other,
            StoreError::Corrupt(_) => StoreErrorKind::Corrupt,
            StoreError::Closed => StoreErrorKind::Closed,
        }
    }
}

fn sqlx_kind(e: &sqlx::Error) -> StoreErrorKind {
    match e {
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                return postgres_kind(pg.code());
            }
            // SQLite reports its (extended) result code; the primary code is its low byte.
            match db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map(|c| c & 0xff)
            {
                Some(13) => StoreErrorKind::Full,         // SQLITE_FULL
                Some(5 | 6) => StoreErrorKind::Busy,      // SQLITE_BUSY, SQLITE_LOCKED
                Some(10 | 14) => StoreErrorKind::Io,      // SQLITE_IOERR, SQLITE_CANTOPEN
                Some(11 | 26) => StoreErrorKind::Corrupt, // SQLITE_CORRUPT, SQLITE_NOTADB
                _ if db.is_unique_violation() => StoreErrorKind::Conflict,
                _ => StoreErrorKind::Other,
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreErrorKind::Unreachable,
        sqlx::Error::PoolTimedOut => StoreErrorKind::Timeout,
        _ => StoreErrorKind::Other,
    }
}

/// PostgreSQL's SQLSTATE classes (appendix A of its manual).
fn postgres_kind(sqlstate: &str) -> StoreErrorKind {
    match sqlstate {
        "53100" => StoreErrorKind::Full,                     // disk_full
        "57014" => StoreErrorKind::Timeout,                  // query_canceled (statement_timeout)
        "40001" | "40P01" | "55P03" => StoreErrorKind::Busy, // serialization, deadlock, lock
        "23505" => StoreErrorKind::Conflict,                 // unique_violation
        s if s.starts_with("08") || s.starts_with("57P") || s.starts_with("53") => {
            // connection exceptions, shutdowns, insufficient resources
            StoreErrorKind::Unreachable
        }
        s if s.starts_with("58") => StoreErrorKind::Io, // system errors (I/O)
        "XX001" | "XX002" => StoreErrorKind::Corrupt,   // data_corrupted, index_corrupted
        _ => StoreErrorKind::Other,
    }
}

/// Counts a failed store call by kind: every call of the SQL stores goes through it,
/// so each failure is counted once, where it happened.
fn counted<'a, T: Send + 'a>(
    call: impl Future<Output = Result<T, StoreError>> + Send + 'a,
) -> StoreFuture<'a, T> {
    Box::pin(async move {
        let result = call.await;
        if let Err(e) = &result {
            let kind = e.kind();
            if kind != StoreErrorKind::Conflict {
                metrics::counter!(crate::metrics::STORE_ERRORS, "kind" => kind.as_str())
                    .increment(1);
            }
        }
        result
    })
}

pub use chat_api::{Conversation, ConversationKind, ConversationSummary, Member, Role, User};

/// What registration stores.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// Lower-cased, validated username.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Now.
    pub created_at: Timestamp,
}

/// A user with their password hash, for login.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The user.
    pub user: User,
    /// Argon2id PHC string.
    pub password_hash: String,
}

fn conversation_kind(s: &str) -> Result<ConversationKind, StoreError> {
    ConversationKind::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("conversation kind {s:?}")))
}

fn role(s: &str) -> Result<Role, StoreError> {
    Role::parse(s).ok_or_else(|| StoreError::Corrupt(format!("role {s:?}")))
}

/// A device's end-to-end encryption key, as registered (the API shows it as
/// [`chat_api::Device`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The key (its id is derived from it).
    pub public_key: DevicePublicKey,
    /// Owner.
    pub user_id: UserId,
    /// A name the user gave it ("laptop"), for their device list.
    pub name: String,
    /// When it was registered.
    pub created_at: Timestamp,
}

impl From<&Device> for chat_api::Device {
    fn from(d: &Device) -> Self {
        use base64::Engine as _;
        chat_api::Device {
            id: d.public_key.id().to_string(),
            user_id: d.user_id,
            public_key: base64::engine::general_purpose::STANDARD.encode(d.public_key.as_bytes()),
            name: d.name.clone(),
            created_at: d.created_at,
        }
    }
}

/// What the real-time hub needs to know about a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationMeta {
    /// Whether bodies must be end-to-end encrypted.
    pub encrypted: bool,
    /// Member ids, ascending.
    pub members: Vec<UserId>,
}

/// A send to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// Target conversation.
    pub conversation: ConversationId,
    /// Author.
    pub sender: UserId,
    /// Author's idempotency key.
    pub client_msg_id: ClientMsgId,
    /// Content.
    pub body: Body,
    /// Commit time to record.
    pub sent_at: Timestamp,
}

/// The outcome of one append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Stored now.
    New(Message),
    /// Stored before under the same idempotency key: the original message.
    Duplicate(Message),
    /// The idempotency key was used before for a different message.
    Conflict,
    /// No such conversation.
    NoConversation,
}

/// Refresh-token rotation outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was valid and is now used; a new one was stored.
    Rotated {
        /// The session (token family).
        session_id: i64,
        /// Its user.
        user_id: UserId,
    },
    /// The token had been used before: the whole session is now revoked.
    Reused,
    /// Unknown, expired, or its session is revoked.
    Invalid,
}

/// Everything the server stores. Implemented for SQLite and PostgreSQL.
pub trait Store: std::fmt::Debug + Send + Sync + 'static {
    /// Which backend, for logs.
    fn backend(&self) -> &'static str;
    /// Whether the database answers.
    fn ping(&self) -> StoreFuture<'_, ()>;
    /// Commits one small write, to learn whether the database takes writes again.
    fn probe_write(&self) -> StoreFuture<'_, ()>;
    /// How many message batches may be written at once (1 for a single-writer
    /// database).
    fn write_concurrency(&self) -> usize {
        1
    }

    /// Registers a user; [`StoreError::Conflict`] if the username is taken.
    fn create_user(&self, user: NewUser) -> StoreFuture<'_, User>;
    /// A live (not deleted) user.
    fn user(&self, id: UserId) -> StoreFuture<'_, Option<User>>;
    /// A live user and their password hash, by lower-cased username.
    fn credentials(&self, username: &str) -> StoreFuture<'_, Option<Credentials>>;
    /// Live users whose username starts with `prefix`, after `after`, by username.
    fn search_users(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<User>>;
    /// Changes the profile fields given.
    fn update_profile(
        &self,
        id: UserId,
        display_name: Option<String>,
        bio: Option<String>,
    ) -> StoreFuture<'_, Option<User>>;
    /// Replaces the password hash.
    fn set_password(&self, id: UserId, password_hash: String) -> StoreFuture<'_, ()>;
    /// Marks a user deleted, frees the username and revokes every session.
    fn delete_user(&self, id: UserId, now: Timestamp) -> StoreFuture<'_, ()>;
    /// Records when a user was last connected.
    fn set_last_seen(&self, id: UserId, at: Timestamp) -> StoreFuture<'_, ()>;

    /// Opens a session with its first refresh token; returns the session id.
    fn create_session(
        &self,
        user: UserId,
        token_hash: [u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
        user_agent: &str,
    ) -> StoreFuture<'_, i64>;
    /// Swaps a refresh token for a new one in the same session; a reused token revokes
    /// the session.
    fn rotate_refresh(
        &self,
        old_hash: [u8; 32],
        new_hash: [u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StoreFuture<'_, Rotation>;
    /// The session a refresh token belongs to, without using it.
    fn refresh_session(&self, token_hash: [u8; 32]) -> StoreFuture<'_, Option<i64>>;
    /// The user of an active session (not revoked, user not deleted).
    fn session_user(&self, session_id: i64, user: UserId) -> StoreFuture<'_, Option<User>>;
    /// Revokes one session.
    fn revoke_session(&self, session_id: i64, now: Timestamp) -> StoreFuture<'_, ()>;
    /// Revokes every session of a user except `keep`.
    fn revoke_other_sessions(&self, user: UserId, keep: i64, now: Timestamp)
    -> StoreFuture<'_, ()>;

    /// The direct conversation of a pair, plain or end-to-end encrypted (a pair has
    /// one of each), created if needed; `true` if created now.
    fn direct_conversation(
        &self,
        a: UserId,
        b: UserId,
        encrypted: bool,
        now: Timestamp,
    ) -> StoreFuture<'_, (Conversation, bool)>;
    /// Creates a group owned by `owner` with the given other members.
    fn create_group(
        &self,
        owner: UserId,
        title: String,
        members: Vec<UserId>,
        encrypted: bool,
        now: Timestamp,
    ) -> StoreFuture<'_, Conversation>;
    /// A conversation, if `user` is a member.
    fn conversation(
        &self,
        id: ConversationId,
        user: UserId,
    ) -> StoreFuture<'_, Option<Conversation>>;
    /// Every conversation of a user, most recent activity first.
    fn conversations(&self, user: UserId) -> StoreFuture<'_, Vec<ConversationSummary>>;
    /// The newest seq of every conversation `user` belongs to.
    fn heads(&self, user: UserId) -> StoreFuture<'_, Vec<chat_proto::frame::Cursor>>;
    /// Whether a conversation is end-to-end encrypted, and its members; `None` if it
    /// does not exist.
    fn conversation_meta(&self, id: ConversationId) -> StoreFuture<'_, Option<ConversationMeta>>;
    /// Ids of a conversation's members.
    fn member_ids(&self, id: ConversationId) -> StoreFuture<'_, Vec<UserId>>;
    /// Registers a device key for `user`; `true` if new, `false` if the user had it
    /// already. [`StoreError::Conflict`] if another user registered the same key.
    fn add_device(
        &self,
        user: UserId,
        key: DevicePublicKey,
        name: String,
        now: Timestamp,
    ) -> StoreFuture<'_, (Device, bool)>;
    /// A user's devices, oldest first.
    fn devices(&self, user: UserId) -> StoreFuture<'_, Vec<Device>>;
    /// Every device of every member of a conversation.
    fn conversation_devices(&self, id: ConversationId) -> StoreFuture<'_, Vec<Device>>;
    /// Removes one of `user`'s devices; `false` if they have no such device.
    fn remove_device(&self, user: UserId, id: DeviceId) -> StoreFuture<'_, bool>;
    /// Whether two users are members of a common conversation.
    fn share_conversation(&self, a: UserId, b: UserId) -> StoreFuture<'_, bool>;
    /// Adds a member; `false` if already one.
    fn add_member(
        &self,
        id: ConversationId,
        user: UserId,
        role: Role,
        now: Timestamp,
    ) -> StoreFuture<'_, bool>;
    /// Removes a member; `false` if not one. An owner who leaves hands ownership to
    /// the longest-standing member.
    fn remove_member(&self, id: ConversationId, user: UserId) -> StoreFuture<'_, bool>;
    /// Messages before `before` (or the newest), newest first, and whether older exist.
    fn history(
        &self,
        id: ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> StoreFuture<'_, (Vec<Message>, bool)>;
    /// Messages after `after`, oldest first, and whether newer exist.
    fn messages_after(
        &self,
        id: ConversationId,
        after: Seq,
        limit: u32,
    ) -> StoreFuture<'_, (Vec<Message>, bool)>;
    /// Moves a member's read position forward; returns it if it moved.
    fn mark_read(&self, id: ConversationId, user: UserId, seq: Seq)
    -> StoreFuture<'_, Option<Seq>>;
    /// Stores a batch of sends in one transaction, assigning per-conversation seqs.
    fn append_batch(&self, batch: Vec<NewMessage>) -> StoreFuture<'_, Vec<Appended>>;
}

/// Opens the store a database URL names (`sqlite://…` or `postgres://…`) and runs its
/// migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    }
}

/// Prepared statements kept per connection, on both backends: the batched append
/// statements come in one variant per batch size, and re-preparing them costs more
/// than running them.
const STATEMENT_CACHE: usize = 2048;

/// One message row to insert (backend-neutral).
#[derive(Debug)]
struct NewRow {
    conversation: i64,
    seq: i64,
    sender: i64,
    client_msg_id: Vec<u8>,
    body_kind: i16,
    body: Vec<u8>,
    created_at: i64,
}

/// Inserted rows' ids, by (conversation, seq).
type InsertedIds = std::collections::HashMap<(i64, i64), i64>;

/// Collects `RETURNING id, conversation_id, seq` rows.
fn inserted_ids<R: sqlx::Row>(rows: Vec<R>) -> Result<InsertedIds, StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    let mut ids = InsertedIds::with_capacity(rows.len());
    for row in rows {
        ids.insert(
            (row.try_get("conversation_id")?, row.try_get("seq")?),
            row.try_get("id")?,
        );
    }
    Ok(ids)
}

fn user_id(raw: i64) -> Result<UserId, StoreError> {
    UserId::try_from(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn conversation_id(raw: i64) -> Result<ConversationId, StoreError> {
    ConversationId::try_from(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn seq(raw: i64) -> Result<Seq, StoreError> {
    Seq::try_from(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn body_parts(body: &Body) -> (i16, Vec<u8>) {
    match body {
        Body::Text(t) => (0, t.as_bytes().to_vec()),
        Body::Encrypted(e) => (1, e.0.to_vec()),
    }
}

fn body_from(kind: i16, bytes: Vec<u8>) -> Result<Body, StoreError> {
    match kind {
        0 => String::from_utf8(bytes)
            .map(Body::Text)
            .map_err(|_| StoreError::Corrupt("text body is not UTF-8".into())),
        1 => Ok(Body::Encrypted(bytes.into())),
        other => Err(StoreError::Corrupt(format!("body kind {other}"))),
    }
}

fn client_msg_id(bytes: &[u8]) -> Result<ClientMsgId, StoreError> {
    <[u8; 16]>::try_from(bytes)
        .map(ClientMsgId::from_bytes)
        .map_err(|_| StoreError::Corrupt("client_msg_id is not 16 bytes".into()))
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;
