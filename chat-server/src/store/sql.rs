//! The SQL both backends share. Every statement is portable between SQLite and
//! PostgreSQL; placeholders are `$1, $2, …` in order of first appearance, which both
//! drivers bind positionally.

/// Implements [`Store`](super::Store) and every table family's trait for a type with a
/// `pool: sqlx::Pool<$db>` field and the [`Dialect`](super::Dialect) hooks.
macro_rules! impl_store {
    ($ty:ty, $db:ty, $name:literal, $write_concurrency:literal) => {
        $crate::store::rows::impl_rows!($ty, $db);
        $crate::store::users::impl_users!($ty, $db);
        $crate::store::sessions::impl_sessions!($ty, $db);
        $crate::store::conversations::impl_conversations!($ty, $db);
        $crate::store::devices::impl_devices!($ty, $db);
        $crate::store::messages::impl_messages!($ty, $db);
        $crate::store::uploads::impl_uploads!($ty, $db);
        $crate::store::search::impl_search!($ty, $db);

        impl $crate::store::Store for $ty {
            fn backend(&self) -> &'static str {
                $name
            }

            fn ping(&self) -> $crate::store::StoreFuture<'_, ()> {
                $crate::store::counted(async move {
                    sqlx::query("SELECT 1").execute(&self.pool).await?;
                    Ok(())
                })
            }

            fn probe_write(&self) -> $crate::store::StoreFuture<'_, ()> {
                $crate::store::counted(async move {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    let mut tx = self.begin_write().await?;
                    sqlx::query("UPDATE write_probe SET probed_at = $1 WHERE id = 1")
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await
                })
            }

            fn write_concurrency(&self) -> usize {
                $write_concurrency
            }
        }
    };
}

pub(crate) use impl_store;
