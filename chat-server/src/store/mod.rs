//! Storage: one [`Store`] trait, implemented for SQLite (the default, embedded) and
//! PostgreSQL (production, several nodes), with migrations for both.
//!
//! Both implementations share their SQL (written to be portable) through one macro in
//! `sql.rs`; what differs is the schema dialect in `migrations/` and the connection
//! setup. Message appends go through [`append::Appender`], which group-commits
//! concurrent sends.

pub mod append;
mod conversations;
mod devices;
pub mod health;
mod messages;
#[cfg(feature = "postgres")]
mod postgres;
mod rows;
pub mod search;
mod sessions;
mod sql;
mod sqlite;
mod tx;
mod uploads;
mod users;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chat_crypto::e2e::DevicePublicKey;
use chat_proto::body::Body;
use chat_proto::entry::{Content, Entry, Reaction};
use chat_proto::ids::{ClientMsgId, ConversationId, Seq, Timestamp, UserId};

pub use chat_api::{Conversation, ConversationKind, ConversationSummary, Member, Role, User};
pub use conversations::ConversationStore;
pub use devices::DeviceStore;
pub use messages::MessageStore;
#[cfg(feature = "postgres")]
pub use postgres::PgStore;
pub use search::{SearchHit, SearchStore};
pub use sessions::SessionStore;
pub use sqlite::SqliteStore;
pub use uploads::{NewUpload, Upload, UploadRefusal, UploadStore};
pub use users::UserStore;

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
    /// The database URL names a backend this build does not include.
    #[error("{0}")]
    Unsupported(&'static str),
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
            StoreError::Unsupported(_) => StoreErrorKind::Other,
        }
    }
}

fn sqlx_kind(e: &sqlx::Error) -> StoreErrorKind {
    match e {
        sqlx::Error::Database(db) => {
            #[cfg(feature = "postgres")]
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
#[cfg(feature = "postgres")]
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

/// A log entry to store: a send, or a relation (PROTOCOL.md §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    /// Target conversation.
    pub conversation: ConversationId,
    /// Author.
    pub sender: UserId,
    /// Author's idempotency key.
    pub client_msg_id: ClientMsgId,
    /// What it is.
    pub content: Content,
    /// Commit time to record.
    pub sent_at: Timestamp,
    /// Whether the author moderates the conversation (owns the group): they may delete
    /// any message in it.
    pub moderator: bool,
}

impl NewEntry {
    /// A plain message.
    pub fn message(
        conversation: ConversationId,
        sender: UserId,
        client_msg_id: ClientMsgId,
        body: Body,
        sent_at: Timestamp,
    ) -> Self {
        Self {
            conversation,
            sender,
            client_msg_id,
            content: Content::message(body),
            sent_at,
            moderator: false,
        }
    }
}

/// The outcome of one append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Stored now.
    New(Entry),
    /// Stored before: the original entry under the same idempotency key, or the entry
    /// an idempotent relation repeats (the first deletion of a message, the author's
    /// same reaction).
    Duplicate(Entry),
    /// The idempotency key was used before for a different entry.
    Conflict,
    /// No such conversation.
    NoConversation,
    /// The relation breaks a rule of PROTOCOL.md §5.2.
    Refused(Refusal),
}

/// Why a relation was refused (PROTOCOL.md §5.2, "Rules").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The target is not an entry of the conversation.
    NoTarget,
    /// The target is not of a kind the relation applies to.
    WrongTarget,
    /// The author may not do this to the target.
    Forbidden,
    /// The target message was deleted.
    Deleted,
    /// Too many reactions on the target.
    ReactionLimit,
    /// A file of the message is not an upload of its sender's.
    NoFile,
    /// A file of the message is not completely uploaded.
    FileUnfinished,
    /// A file of the message is in another message already.
    FileInUse,
    /// A file's stated size is not the upload's.
    FileSize,
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

/// What differs between the SQL backends besides their migrations, declared once:
/// the SQL shared by both (`sql.rs` and one file per table family) calls these hooks.
pub(crate) trait Dialect {
    /// The sqlx database.
    type Db: sqlx::Database;
    /// A write transaction (SQLite takes the write lock up front).
    async fn begin_write(&self) -> Result<tx::WriteTx<Self::Db>, StoreError>;
    /// Inserts message rows, returning their ids by (conversation, seq).
    async fn insert_messages(
        tx: &mut tx::WriteTx<Self::Db>,
        rows: &[NewRow],
    ) -> Result<InsertedIds, StoreError>;
    /// Locks a user's row for the rest of the transaction (SQLite's write lock already
    /// serializes writers).
    async fn lock_user(tx: &mut tx::WriteTx<Self::Db>, id: i64) -> Result<(), StoreError>;
    /// Locks conversation rows before their seqs are reserved, so concurrent writers
    /// never wait on each other in a cycle.
    async fn lock_conversations(
        tx: &mut tx::WriteTx<Self::Db>,
        ids: &[i64],
    ) -> Result<(), StoreError>;
    /// Adds rows to the search index (ids without a row there).
    async fn index_rows(
        tx: &mut tx::WriteTx<Self::Db>,
        rows: &[search::IndexRow],
    ) -> Result<(), StoreError>;
    /// Removes the search index's rows of these message ids, if they have any.
    async fn unindex(tx: &mut tx::WriteTx<Self::Db>, ids: &[i64]) -> Result<(), StoreError>;
    /// The search: see [`SearchStore::search`](search::SearchStore::search).
    async fn search_rows(
        &self,
        user: i64,
        conversation: Option<i64>,
        query: &chat_api::search::Query,
        before: i64,
        limit: i64,
    ) -> Result<Vec<search::SearchHit>, StoreError>;
}

/// Everything the server stores. Implemented for SQLite and PostgreSQL.
pub trait Store:
    UserStore
    + SessionStore
    + ConversationStore
    + DeviceStore
    + MessageStore
    + UploadStore
    + SearchStore
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
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
}

/// Opens the store a database URL names (`sqlite://…` or `postgres://…`) and runs its
/// migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(PgStore::connect(url).await?));
        #[cfg(not(feature = "postgres"))]
        return Err(StoreError::Unsupported(
            "this chat-server was built without PostgreSQL support: build it with `--features postgres`",
        ));
    } else {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    }
}

/// Prepared statements kept per connection, on both backends: the batched append
/// statements come in one variant per batch size, and re-preparing them costs more
/// than running them.
const STATEMENT_CACHE: usize = 2048;

/// One entry row to insert (backend-neutral).
#[derive(Debug)]
pub(crate) struct NewRow {
    conversation: i64,
    seq: i64,
    sender: i64,
    client_msg_id: Vec<u8>,
    kind: i16,
    target: Option<i64>,
    body_kind: i16,
    body: Option<Vec<u8>>,
    files: Option<Vec<u8>>,
    created_at: i64,
}

/// Entry kinds as stored in `messages.kind`.
pub(crate) mod kind {
    /// A message (a reply too: its `target` is the message answered).
    pub(crate) const MESSAGE: i16 = 0;
    /// An edit.
    pub(crate) const EDIT: i16 = 1;
    /// A deletion.
    pub(crate) const DELETE: i16 = 2;
    /// A reaction.
    pub(crate) const REACTION: i16 = 3;
}

/// The columns of an entry row, for SELECTs (a literal, for `concat!`).
macro_rules! entry_columns {
    () => {
        "id, conversation_id, seq, sender_id, client_msg_id, kind, target, body_kind, body, files, created_at"
    };
}
pub(crate) use entry_columns;

/// An entry's content as stored: its columns of `messages`.
pub(crate) struct ContentParts {
    kind: i16,
    target: Option<i64>,
    body_kind: i16,
    body: Option<Vec<u8>>,
    files: Option<Vec<u8>>,
}

/// An entry's content as (kind, target, body kind, body, files) columns.
fn content_parts(content: &Content) -> ContentParts {
    let target = |s: &Seq| Some(i64::from(*s));
    let parts = |kind, target, body: &Option<Body>| {
        let (body_kind, body, files) = match body {
            Some(b) => {
                let (k, bytes, files) = body_parts(b);
                (k, Some(bytes), files)
            }
            None => (0, None, None),
        };
        ContentParts {
            kind,
            target,
            body_kind,
            body,
            files,
        }
    };
    match content {
        Content::Message { body, reply_to } => {
            parts(kind::MESSAGE, reply_to.as_ref().and_then(target), body)
        }
        Content::Edit { target: t, body } => parts(kind::EDIT, target(t), body),
        Content::Delete { target: t } => parts(kind::DELETE, target(t), &None),
        Content::Reaction {
            target: t,
            reaction,
        } => {
            let body = reaction.clone().map(|r| match r {
                Reaction::Emoji(e) => Body::Text(e),
                Reaction::Encrypted(env) => Body::Encrypted(env),
            });
            parts(kind::REACTION, target(t), &body)
        }
    }
}

/// An entry's content from its (kind, target, body kind, body, files) columns.
fn content_from(
    kind: i16,
    target: Option<i64>,
    body_kind: i16,
    body: Option<Vec<u8>>,
    files: Option<Vec<u8>>,
) -> Result<Content, StoreError> {
    let target_seq = || {
        target
            .ok_or_else(|| StoreError::Corrupt("relation without a target".into()))
            .and_then(seq)
    };
    let body = body
        .map(|b| body_with_files(body_kind, b, files.as_deref()))
        .transpose()?;
    Ok(match kind {
        kind::MESSAGE => Content::Message {
            body,
            reply_to: target.map(seq).transpose()?,
        },
        kind::EDIT => Content::Edit {
            target: target_seq()?,
            body,
        },
        kind::DELETE => Content::Delete {
            target: target_seq()?,
        },
        kind::REACTION => Content::Reaction {
            target: target_seq()?,
            reaction: body
                .map(|b| match b {
                    Body::Text(t) => Ok(Reaction::Emoji(t)),
                    Body::Encrypted(e) => Ok(Reaction::Encrypted(e)),
                    _ => Err(StoreError::Corrupt("a reaction with files".into())),
                })
                .transpose()?,
        },
        other => return Err(StoreError::Corrupt(format!("entry kind {other}"))),
    })
}

/// Inserted rows' ids, by (conversation, seq).
pub(crate) type InsertedIds = std::collections::HashMap<(i64, i64), i64>;

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

/// A body as (body kind, body, files) columns: text or an envelope, and the files
/// postcard-encoded (their descriptions for a plain body, their ids for a sealed one).
fn body_parts(body: &Body) -> (i16, Vec<u8>, Option<Vec<u8>>) {
    match body {
        Body::Text(t) => (0, t.as_bytes().to_vec(), None),
        Body::Encrypted(e) => (1, e.0.to_vec(), None),
        Body::Attachments(a) => (0, a.text.as_bytes().to_vec(), Some(encode_files(&a.files))),
        Body::SealedAttachments(s) => (1, s.envelope.0.to_vec(), Some(encode_files(&s.files))),
    }
}

/// A list of files postcard-encoded (it cannot fail for these types).
fn encode_files<T: serde::Serialize>(files: &[T]) -> Vec<u8> {
    postcard::to_allocvec(files).unwrap_or_default()
}

fn body_from(kind: i16, bytes: Vec<u8>) -> Result<Body, StoreError> {
    body_with_files(kind, bytes, None)
}

fn body_with_files(kind: i16, bytes: Vec<u8>, files: Option<&[u8]>) -> Result<Body, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("stored {what} do not decode"));
    let text = |bytes: Vec<u8>| {
        String::from_utf8(bytes).map_err(|_| StoreError::Corrupt("text body is not UTF-8".into()))
    };
    match (kind, files) {
        (0, None) => text(bytes).map(Body::Text),
        (1, None) => Ok(Body::Encrypted(bytes.into())),
        (0, Some(files)) => Ok(Body::Attachments(chat_proto::body::Attachments {
            text: text(bytes)?,
            files: postcard::from_bytes(files).map_err(|_| corrupt("files"))?,
        })),
        (1, Some(files)) => Ok(Body::SealedAttachments(
            chat_proto::body::SealedAttachmentIds {
                envelope: bytes.into(),
                files: postcard::from_bytes(files).map_err(|_| corrupt("file ids"))?,
            },
        )),
        (other, _) => Err(StoreError::Corrupt(format!("body kind {other}"))),
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
mod relation_tests;
#[cfg(test)]
mod tests;
