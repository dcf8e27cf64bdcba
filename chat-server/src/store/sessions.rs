//! Login sessions and their refresh tokens (the `sessions` table): the trait, and its
//! SQL for both backends (one macro, expanded for each store type in `sqlite.rs` and
//! `postgres.rs`).

use chat_proto::ids::{Timestamp, UserId};

use super::*;

/// Login sessions and their refresh tokens (the `sessions` table).
pub trait SessionStore {
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
}

/// Implements [`SessionStore`] for a SQL store type over `$db` (see `sql.rs`).
macro_rules! impl_sessions {
    ($ty:ty, $db:ty) => {
        impl $crate::store::SessionStore for $ty {
            fn create_session(
                &self,
                user: chat_proto::ids::UserId,
                token_hash: [u8; 32],
                now: chat_proto::ids::Timestamp,
                expires_at: chat_proto::ids::Timestamp,
                user_agent: &str,
            ) -> $crate::store::StoreFuture<'_, i64> {
                let user_agent: String = user_agent.chars().take(200).collect();
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let mut tx = self.begin_write().await?;
                    let row = sqlx::query(
                        "INSERT INTO sessions (user_id, created_at, user_agent) VALUES ($1, $2, $3) RETURNING id",
                    )
                    .bind(i64::from(user))
                    .bind(now.0)
                    .bind(&user_agent)
                    .fetch_one(&mut *tx)
                    .await?;
                    let session: i64 = row.try_get("id")?;
                    sqlx::query(
                        "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&token_hash[..])
                    .bind(session)
                    .bind(now.0)
                    .bind(expires_at.0)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(session)
                })
            }

            fn rotate_refresh(
                &self,
                old_hash: [u8; 32],
                new_hash: [u8; 32],
                now: chat_proto::ids::Timestamp,
                expires_at: chat_proto::ids::Timestamp,
            ) -> $crate::store::StoreFuture<'_, $crate::store::Rotation> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let mut tx = self.begin_write().await?;
                    // Claim the token: only one concurrent refresh can win.
                    let claimed = sqlx::query(
                        "UPDATE refresh_tokens SET used_at = $1 \
                         WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 \
                         RETURNING session_id",
                    )
                    .bind(now.0)
                    .bind(&old_hash[..])
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(claimed) = claimed else {
                        // Used before (reuse: revoke the family) or unknown/expired.
                        let used = sqlx::query(
                            "SELECT session_id FROM refresh_tokens WHERE token_hash = $1 AND used_at IS NOT NULL",
                        )
                        .bind(&old_hash[..])
                        .fetch_optional(&mut *tx)
                        .await?;
                        let outcome = match used {
                            Some(row) => {
                                let session: i64 = row.try_get("session_id")?;
                                sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                                    .bind(now.0)
                                    .bind(session)
                                    .execute(&mut *tx)
                                    .await?;
                                $crate::store::Rotation::Reused
                            }
                            None => $crate::store::Rotation::Invalid,
                        };
                        tx.commit().await?;
                        return Ok(outcome);
                    };
                    let session: i64 = claimed.try_get("session_id")?;
                    let owner = sqlx::query(
                        "SELECT s.user_id FROM sessions s JOIN users u ON u.id = s.user_id \
                         WHERE s.id = $1 AND s.revoked_at IS NULL AND u.deleted_at IS NULL",
                    )
                    .bind(session)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(owner) = owner else {
                        tx.rollback().await?;
                        return Ok($crate::store::Rotation::Invalid);
                    };
                    sqlx::query(
                        "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&new_hash[..])
                    .bind(session)
                    .bind(now.0)
                    .bind(expires_at.0)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok($crate::store::Rotation::Rotated {
                        session_id: session,
                        user_id: $crate::store::user_id(owner.try_get("user_id")?)?,
                    })
                })
            }

            fn refresh_session(&self, token_hash: [u8; 32]) -> $crate::store::StoreFuture<'_, Option<i64>> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let row = sqlx::query("SELECT session_id FROM refresh_tokens WHERE token_hash = $1")
                        .bind(&token_hash[..])
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(match row {
                        Some(r) => Some(r.try_get("session_id")?),
                        None => None,
                    })
                })
            }

            fn session_user(&self, session_id: i64, user: chat_proto::ids::UserId) -> $crate::store::StoreFuture<'_, Option<$crate::store::User>> {
                $crate::store::counted(async move {
                    let row = sqlx::query(
                        "SELECT u.id, u.username, u.display_name, u.bio, u.created_at, u.last_seen \
                         FROM sessions s JOIN users u ON u.id = s.user_id \
                         WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND u.deleted_at IS NULL",
                    )
                    .bind(session_id)
                    .bind(i64::from(user))
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(Self::user_from_row).transpose()
                })
            }

            fn revoke_session(&self, session_id: i64, now: chat_proto::ids::Timestamp) -> $crate::store::StoreFuture<'_, ()> {
                $crate::store::counted(async move {
                    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                        .bind(now.0)
                        .bind(session_id)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn revoke_other_sessions(
                &self,
                user: chat_proto::ids::UserId,
                keep: i64,
                now: chat_proto::ids::Timestamp,
            ) -> $crate::store::StoreFuture<'_, ()> {
                $crate::store::counted(async move {
                    sqlx::query(
                        "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND id <> $3 AND revoked_at IS NULL",
                    )
                    .bind(now.0)
                    .bind(i64::from(user))
                    .bind(keep)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }
        }
    };
}

pub(crate) use impl_sessions;
