//! Accounts and profiles (the `users` table): the trait, and its SQL for both backends
//! (one macro, expanded for each store type in `sqlite.rs` and `postgres.rs`).

use chat_proto::ids::{Timestamp, UserId};

use super::*;

/// Accounts and profiles (the `users` table).
pub trait UserStore {
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
}

/// Implements [`UserStore`] for a SQL store type over `$db` (see `sql.rs`).
macro_rules! impl_users {
    ($ty:ty, $db:ty) => {
        impl $crate::store::UserStore for $ty {
            fn create_user(&self, user: $crate::store::NewUser) -> $crate::store::StoreFuture<'_, $crate::store::User> {
                $crate::store::counted(async move {
                    let row = sqlx::query(
                        "INSERT INTO users (username, display_name, bio, password_hash, created_at) \
                         VALUES ($1, $2, '', $3, $4) ON CONFLICT (username) DO NOTHING \
                         RETURNING id, username, display_name, bio, created_at, last_seen",
                    )
                    .bind(&user.username)
                    .bind(&user.display_name)
                    .bind(&user.password_hash)
                    .bind(user.created_at.0)
                    .fetch_optional(&self.pool)
                    .await?;
                    match row {
                        Some(row) => Self::user_from_row(&row),
                        None => Err($crate::store::StoreError::Conflict("username")),
                    }
                })
            }

            fn user(&self, id: chat_proto::ids::UserId) -> $crate::store::StoreFuture<'_, Option<$crate::store::User>> {
                $crate::store::counted(async move {
                    let row = sqlx::query(
                        "SELECT id, username, display_name, bio, created_at, last_seen FROM users \
                         WHERE id = $1 AND deleted_at IS NULL",
                    )
                    .bind(i64::from(id))
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(Self::user_from_row).transpose()
                })
            }

            fn credentials(&self, username: &str) -> $crate::store::StoreFuture<'_, Option<$crate::store::Credentials>> {
                let username = username.to_owned();
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let row = sqlx::query(
                        "SELECT id, username, display_name, bio, created_at, last_seen, password_hash FROM users \
                         WHERE username = $1 AND deleted_at IS NULL",
                    )
                    .bind(&username)
                    .fetch_optional(&self.pool)
                    .await?;
                    match row {
                        Some(row) => Ok(Some($crate::store::Credentials {
                            user: Self::user_from_row(&row)?,
                            password_hash: row.try_get("password_hash")?,
                        })),
                        None => Ok(None),
                    }
                })
            }

            fn search_users(
                &self,
                prefix: &str,
                after: Option<&str>,
                limit: u32,
            ) -> $crate::store::StoreFuture<'_, Vec<$crate::store::User>> {
                // LIKE metacharacters in the prefix are escaped, so `_` and `%` match
                // themselves.
                let mut pattern = String::with_capacity(prefix.len() + 1);
                for c in prefix.chars() {
                    if matches!(c, '%' | '_' | '\\') {
                        pattern.push('\\');
                    }
                    pattern.push(c);
                }
                pattern.push('%');
                let after = after.unwrap_or("").to_owned();
                $crate::store::counted(async move {
                    let rows = sqlx::query(
                        "SELECT id, username, display_name, bio, created_at, last_seen FROM users \
                         WHERE username LIKE $1 ESCAPE '\\' AND username > $2 AND deleted_at IS NULL \
                         ORDER BY username LIMIT $3",
                    )
                    .bind(&pattern)
                    .bind(&after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(Self::user_from_row).collect()
                })
            }

            fn update_profile(
                &self,
                id: chat_proto::ids::UserId,
                display_name: Option<String>,
                bio: Option<String>,
            ) -> $crate::store::StoreFuture<'_, Option<$crate::store::User>> {
                $crate::store::counted(async move {
                    let row = sqlx::query(
                        "UPDATE users SET display_name = COALESCE($1, display_name), bio = COALESCE($2, bio) \
                         WHERE id = $3 AND deleted_at IS NULL \
                         RETURNING id, username, display_name, bio, created_at, last_seen",
                    )
                    .bind(display_name)
                    .bind(bio)
                    .bind(i64::from(id))
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(Self::user_from_row).transpose()
                })
            }

            fn set_password(&self, id: chat_proto::ids::UserId, password_hash: String) -> $crate::store::StoreFuture<'_, ()> {
                $crate::store::counted(async move {
                    sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                        .bind(password_hash)
                        .bind(i64::from(id))
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn delete_user(&self, id: chat_proto::ids::UserId, now: chat_proto::ids::Timestamp) -> $crate::store::StoreFuture<'_, ()> {
                $crate::store::counted(async move {
                    let mut tx = self.begin_write().await?;
                    // The username is freed (an impossible name takes its place) and the
                    // profile emptied; messages stay, attributed to a deleted account.
                    sqlx::query(
                        "UPDATE users SET deleted_at = $1, username = '#deleted-' || id, \
                         display_name = 'Deleted account', bio = '', password_hash = '' WHERE id = $2",
                    )
                    .bind(now.0)
                    .bind(i64::from(id))
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
                        .bind(now.0)
                        .bind(i64::from(id))
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM members WHERE user_id = $1")
                        .bind(i64::from(id))
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM devices WHERE user_id = $1")
                        .bind(i64::from(id))
                        .execute(&mut *tx)
                        .await?;
                    // Their files go too, those in messages included: no longer served,
                    // and the collector removes the bytes.
                    sqlx::query("UPDATE uploads SET purged_at = $1 WHERE owner_id = $2 AND purged_at IS NULL")
                        .bind(now.0)
                        .bind(i64::from(id))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn set_last_seen(&self, id: chat_proto::ids::UserId, at: chat_proto::ids::Timestamp) -> $crate::store::StoreFuture<'_, ()> {
                $crate::store::counted(async move {
                    sqlx::query("UPDATE users SET last_seen = $1 WHERE id = $2")
                        .bind(at.0)
                        .bind(i64::from(id))
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }
        }
    };
}

pub(crate) use impl_users;
