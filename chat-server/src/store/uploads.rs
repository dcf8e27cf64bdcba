//! Resumable uploads (the `uploads` table): who uploads what, how much of it is stored,
//! quotas, and expiry. The bytes live in the file store (`crate::blobs`) under the same
//! id. The trait, and its SQL for both backends (one macro, expanded for each store
//! type in `sqlite.rs` and `postgres.rs`).

use chat_proto::ids::{ConversationId, Timestamp, UserId};

use super::*;

/// An upload as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// 32 hex digits, random.
    pub id: String,
    /// Who uploads it; only they may write, read its progress or end it.
    pub owner: UserId,
    /// Its announced size in bytes.
    pub length: u64,
    /// Bytes stored durably so far (the tus `Upload-Offset`).
    pub received: u64,
    /// The file name the client gave (display only; never a path).
    pub name: String,
    /// The media type the client gave.
    pub media_type: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When an unfinished upload is collected.
    pub expires_at: Timestamp,
    /// When its last byte was stored.
    pub completed_at: Option<Timestamp>,
    /// The conversation whose message holds it, once it is in one: its members may
    /// download it.
    pub conversation: Option<ConversationId>,
    /// Whether the message holding it was deleted: it is no longer served, and the
    /// collector removes it.
    pub purged: bool,
}

/// An upload to create.
#[derive(Clone, Debug)]
pub struct NewUpload {
    /// Its id (32 hex digits).
    pub id: String,
    /// The uploader.
    pub owner: UserId,
    /// Its size in bytes.
    pub length: u64,
    /// The file name (already cleaned).
    pub name: String,
    /// The media type (already cleaned).
    pub media_type: String,
    /// Now.
    pub created_at: Timestamp,
    /// When it expires unless finished.
    pub expires_at: Timestamp,
}

/// Why an upload was not created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadRefusal {
    /// The owner's files would exceed their storage quota.
    Quota,
    /// The owner has as many unfinished uploads as allowed.
    TooManyInProgress,
}

/// Resumable uploads (the `uploads` table).
pub trait UploadStore {
    /// Creates an upload unless it would take its owner past `quota` bytes (finished and
    /// unfinished uploads counted at their full length; files of deleted messages, no
    /// longer served, not at all) or past `max_in_progress` unfinished uploads.
    fn create_upload(
        &self,
        upload: NewUpload,
        quota: u64,
        max_in_progress: u32,
    ) -> StoreFuture<'_, Result<Upload, UploadRefusal>>;
    /// The upload with this id.
    fn upload(&self, id: &str) -> StoreFuture<'_, Option<Upload>>;
    /// Records that bytes up to `to` are stored, if the upload was at `from` (so two
    /// writers never both advance it); finished when `to` is its length. `false` if it
    /// was not at `from` (or is gone).
    fn advance_upload(&self, id: &str, from: u64, to: u64, now: Timestamp)
    -> StoreFuture<'_, bool>;
    /// Deletes an upload's row; `false` if there was none.
    fn delete_upload(&self, id: &str) -> StoreFuture<'_, bool>;
    /// Uploads to remove, at most `limit`: unfinished ones that expired before `now`,
    /// finished ones that no message took since before `unattached_before`, and those
    /// whose message was deleted.
    fn collectable_uploads(
        &self,
        now: Timestamp,
        unattached_before: Timestamp,
        limit: u32,
    ) -> StoreFuture<'_, Vec<String>>;
}

fn bytes(raw: i64) -> Result<u64, StoreError> {
    u64::try_from(raw).map_err(|_| StoreError::Corrupt("negative size".into()))
}

/// A byte count as the database stores it.
pub(crate) fn to_signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An upload from a row of `uploads`.
pub(crate) fn upload_row<R: sqlx::Row>(row: &R) -> Result<Upload, StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    Ok(Upload {
        id: row.try_get("id")?,
        owner: user_id(row.try_get("owner_id")?)?,
        length: bytes(row.try_get("length")?)?,
        received: bytes(row.try_get("received")?)?,
        name: row.try_get("name")?,
        media_type: row.try_get("media_type")?,
        created_at: Timestamp(row.try_get("created_at")?),
        expires_at: Timestamp(row.try_get("expires_at")?),
        completed_at: row
            .try_get::<Option<i64>, _>("completed_at")?
            .map(Timestamp),
        conversation: row
            .try_get::<Option<i64>, _>("conversation_id")?
            .map(conversation_id)
            .transpose()?,
        purged: row.try_get::<Option<i64>, _>("purged_at")?.is_some(),
    })
}

/// Implements [`UploadStore`] for a SQL store type over `$db` (see `sql.rs`).
macro_rules! impl_uploads {
    ($ty:ty, $db:ty) => {
        impl $crate::store::UploadStore for $ty {
            fn create_upload(
                &self,
                upload: $crate::store::NewUpload,
                quota: u64,
                max_in_progress: u32,
            ) -> $crate::store::StoreFuture<'_, Result<$crate::store::Upload, $crate::store::UploadRefusal>> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    use $crate::store::uploads::to_signed;
                    let owner = i64::from(upload.owner);
                    let mut tx = self.begin_write().await?;
                    // One owner's creations serialize on their user row.
                    Self::lock_user(&mut tx, owner).await?;
                    let row = sqlx::query(
                        "SELECT CAST(COALESCE(SUM(length), 0) AS BIGINT) AS used, \
                         CAST(COALESCE(SUM(CASE WHEN completed_at IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS open \
                         FROM uploads WHERE owner_id = $1 AND purged_at IS NULL",
                    )
                    .bind(owner)
                    .fetch_one(&mut *tx)
                    .await?;
                    let used: i64 = row.try_get("used")?;
                    let open: i64 = row.try_get("open")?;
                    if open >= i64::from(max_in_progress) {
                        tx.rollback().await?;
                        return Ok(Err($crate::store::UploadRefusal::TooManyInProgress));
                    }
                    if used.saturating_add(to_signed(upload.length)) > to_signed(quota) {
                        tx.rollback().await?;
                        return Ok(Err($crate::store::UploadRefusal::Quota));
                    }
                    let row = sqlx::query(
                        "INSERT INTO uploads (id, owner_id, length, received, name, media_type, created_at, expires_at, completed_at) \
                         VALUES ($1, $2, $3, 0, $4, $5, $6, $7, CASE WHEN $3 = 0 THEN $6 ELSE NULL END) \
                         RETURNING id, owner_id, length, received, name, media_type, created_at, expires_at, completed_at, conversation_id, purged_at",
                    )
                    .bind(&upload.id)
                    .bind(owner)
                    .bind(to_signed(upload.length))
                    .bind(&upload.name)
                    .bind(&upload.media_type)
                    .bind(upload.created_at.0)
                    .bind(upload.expires_at.0)
                    .fetch_one(&mut *tx)
                    .await?;
                    let created = $crate::store::uploads::upload_row(&row)?;
                    tx.commit().await?;
                    Ok(Ok(created))
                })
            }

            fn upload(&self, id: &str) -> $crate::store::StoreFuture<'_, Option<$crate::store::Upload>> {
                let id = id.to_owned();
                $crate::store::counted(async move {
                    sqlx::query(
                        "SELECT id, owner_id, length, received, name, media_type, created_at, expires_at, completed_at, \
                         conversation_id, purged_at FROM uploads WHERE id = $1",
                    )
                    .bind(&id)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map($crate::store::uploads::upload_row)
                    .transpose()
                })
            }

            fn advance_upload(
                &self,
                id: &str,
                from: u64,
                to: u64,
                now: chat_proto::ids::Timestamp,
            ) -> $crate::store::StoreFuture<'_, bool> {
                let id = id.to_owned();
                $crate::store::counted(async move {
                    use $crate::store::uploads::to_signed;
                    let mut tx = self.begin_write().await?;
                    let done = sqlx::query(
                        "UPDATE uploads SET received = $3, \
                         completed_at = CASE WHEN $3 = length THEN $4 ELSE completed_at END \
                         WHERE id = $1 AND received = $2 AND $3 <= length",
                    )
                    .bind(&id)
                    .bind(to_signed(from))
                    .bind(to_signed(to))
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn delete_upload(&self, id: &str) -> $crate::store::StoreFuture<'_, bool> {
                let id = id.to_owned();
                $crate::store::counted(async move {
                    let mut tx = self.begin_write().await?;
                    let done = sqlx::query("DELETE FROM uploads WHERE id = $1")
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn collectable_uploads(
                &self,
                now: chat_proto::ids::Timestamp,
                unattached_before: chat_proto::ids::Timestamp,
                limit: u32,
            ) -> $crate::store::StoreFuture<'_, Vec<String>> {
                $crate::store::counted(async move {
                    Ok(sqlx::query_scalar(
                        "SELECT id FROM uploads WHERE completed_at IS NULL AND expires_at < $1 \
                         UNION ALL SELECT id FROM uploads WHERE conversation_id IS NULL \
                         AND completed_at IS NOT NULL AND completed_at < $2 \
                         UNION ALL SELECT id FROM uploads WHERE purged_at IS NOT NULL \
                         LIMIT $3",
                    )
                    .bind(now.0)
                    .bind(unattached_before.0)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?)
                })
            }
        }
    };
}

pub(crate) use impl_uploads;
