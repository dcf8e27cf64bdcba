//! Device keys for end-to-end encryption (the `devices` table): the trait, and its SQL
//! for both backends (one macro, expanded for each store type in `sqlite.rs` and
//! `postgres.rs`).

use chat_crypto::e2e::{DeviceId, DevicePublicKey};
use chat_proto::ids::{ConversationId, Timestamp, UserId};

use super::*;

/// Device keys for end-to-end encryption (the `devices` table).
pub trait DeviceStore {
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
}

/// Implements [`DeviceStore`] for a SQL store type over `$db` (see `sql.rs`).
macro_rules! impl_devices {
    ($ty:ty, $db:ty) => {
        impl $crate::store::DeviceStore for $ty {
            fn add_device(
                &self,
                user: chat_proto::ids::UserId,
                key: chat_crypto::e2e::DevicePublicKey,
                name: String,
                now: chat_proto::ids::Timestamp,
            ) -> $crate::store::StoreFuture<'_, ($crate::store::Device, bool)> {
                $crate::store::counted(async move {
                    let id = key.id();
                    let inserted = sqlx::query(
                        "INSERT INTO devices (id, user_id, public_key, name, created_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT DO NOTHING RETURNING id",
                    )
                    .bind(&id.as_bytes()[..])
                    .bind(i64::from(user))
                    .bind(&key.as_bytes()[..])
                    .bind(&name)
                    .bind(now.0)
                    .fetch_optional(&self.pool)
                    .await?;
                    let row = sqlx::query("SELECT id, user_id, public_key, name, created_at FROM devices WHERE id = $1")
                        .bind(&id.as_bytes()[..])
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or($crate::store::StoreError::Conflict("device"))?;
                    let device = Self::device_from_row(&row)?;
                    if device.user_id != user {
                        return Err($crate::store::StoreError::Conflict("device"));
                    }
                    Ok((device, inserted.is_some()))
                })
            }

            fn devices(&self, user: chat_proto::ids::UserId) -> $crate::store::StoreFuture<'_, Vec<$crate::store::Device>> {
                $crate::store::counted(async move {
                    let rows = sqlx::query(
                        "SELECT id, user_id, public_key, name, created_at FROM devices WHERE user_id = $1 ORDER BY created_at, id",
                    )
                    .bind(i64::from(user))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(Self::device_from_row).collect()
                })
            }

            fn conversation_devices(
                &self,
                id: chat_proto::ids::ConversationId,
            ) -> $crate::store::StoreFuture<'_, Vec<$crate::store::Device>> {
                $crate::store::counted(async move {
                    let rows = sqlx::query(
                        "SELECT d.id, d.user_id, d.public_key, d.name, d.created_at FROM devices d \
                         JOIN members m ON m.user_id = d.user_id WHERE m.conversation_id = $1 \
                         ORDER BY d.user_id, d.created_at, d.id",
                    )
                    .bind(i64::from(id))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(Self::device_from_row).collect()
                })
            }

            fn remove_device(
                &self,
                user: chat_proto::ids::UserId,
                id: chat_crypto::e2e::DeviceId,
            ) -> $crate::store::StoreFuture<'_, bool> {
                $crate::store::counted(async move {
                    let done = sqlx::query("DELETE FROM devices WHERE id = $1 AND user_id = $2")
                        .bind(&id.as_bytes()[..])
                        .bind(i64::from(user))
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected() > 0)
                })
            }
        }
    };
}

pub(crate) use impl_devices;
