//! Write transactions that never leave a poisoned connection in the pool.
//!
//! A failed statement or `COMMIT` can leave a connection's transaction state out of
//! step with what the driver believes: SQLite may roll a transaction back by itself
//! after `SQLITE_FULL` or an I/O error (so the driver's later `ROLLBACK` fails and its
//! transaction depth stays at one), or keep it open after a failed `COMMIT`; a
//! PostgreSQL connection may be in an aborted transaction or killed mid-batch. Handing
//! such a connection to the next writer makes every later write fail until a restart.
//!
//! [`WriteTx`] therefore keeps its connection only when the transaction ended cleanly
//! (committed, or rolled back on purpose). On any error, and when the transaction is
//! dropped unfinished (a cancelled request), the connection is closed instead of being
//! returned to the pool, which rolls back whatever it had open on the database's side,
//! and the pool opens a fresh one for the next writer.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Executor, Pool};

use super::StoreError;

/// An open write transaction on a connection of its own.
pub(crate) struct WriteTx<DB: Database> {
    conn: PoolConnection<DB>,
    /// Whether the transaction may still be open: the connection is closed on drop.
    open: bool,
}

impl<DB: Database> WriteTx<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Takes a connection and runs `begin` on it (`BEGIN`, or `BEGIN IMMEDIATE` for a
    /// SQLite writer that must not have to upgrade its lock halfway).
    pub(crate) async fn begin(pool: &Pool<DB>, begin: &'static str) -> Result<Self, StoreError> {
        let conn = pool.acquire().await?;
        // Open from here on: a `BEGIN` that fails or is cancelled also discards.
        let mut tx = Self { conn, open: true };
        sqlx::raw_sql(begin).execute(&mut *tx.conn).await?;
        Ok(tx)
    }

    /// Commits. On failure the connection is discarded, so whatever the database left
    /// of the transaction goes with it.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::raw_sql("COMMIT").execute(&mut *self.conn).await?;
        self.open = false;
        Ok(())
    }

    /// Rolls back on purpose (nothing went wrong, there is just nothing to write).
    pub(crate) async fn rollback(mut self) -> Result<(), StoreError> {
        sqlx::raw_sql("ROLLBACK").execute(&mut *self.conn).await?;
        self.open = false;
        Ok(())
    }
}

impl<DB: Database> Drop for WriteTx<DB> {
    fn drop(&mut self) {
        if self.open {
            tracing::debug!(
                "discarding a database connection whose transaction did not end cleanly"
            );
            self.conn.close_on_drop();
        }
    }
}

impl<DB: Database> Deref for WriteTx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.conn
    }
}

impl<DB: Database> DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }
}

impl<DB: Database> std::fmt::Debug for WriteTx<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx").field("open", &self.open).finish()
    }
}
