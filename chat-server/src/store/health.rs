//! Whether this node can take writes, for `/readyz`.
//!
//! Answering a `SELECT 1` says the database is there, not that it takes writes: a full
//! disk answers reads to the end. So the writers report their outcomes here (the
//! message appender after every batch), and readiness fails while the latest write
//! failed for a reason that retrying could fix (disk full, connection lost, timeout).
//! A node that a load balancer stopped sending traffic to would then never learn that
//! it recovered, so a readiness check that finds writes failing for longer than
//! [`PROBE_AFTER`] tries one small committed write itself, and its outcome counts like
//! any other write.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Store, StoreError, StoreErrorKind};

/// How long writes must have been failing before a readiness check probes with a
/// write of its own (so probes come at most this often while the store is down).
pub const PROBE_AFTER: Duration = Duration::from_secs(2);

/// Longest a readiness check waits for the database.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Why this node cannot take writes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// The database does not answer.
    #[error("the database is unreachable ({0})")]
    Unreachable(&'static str),
    /// The database answers but writes fail.
    #[error("writes are failing ({0})")]
    WritesFailing(&'static str),
}

/// The outcome of the latest writes; shared by the writers and the readiness check.
#[derive(Debug, Default)]
pub struct WriteHealth {
    failing: Mutex<Option<Failing>>,
}

#[derive(Clone, Copy, Debug)]
struct Failing {
    since: Instant,
    kind: StoreErrorKind,
}

impl WriteHealth {
    /// A write committed.
    pub fn succeeded(&self) {
        *self.lock() = None;
    }

    /// A write failed. Only failures that a retry could fix make the node unready:
    /// a corrupt row is a bug to fix, not a reason to take the node out of service.
    pub fn failed(&self, error: &StoreError) {
        let kind = error.kind();
        if kind.is_transient() {
            *self.lock() = Some(Failing {
                since: Instant::now(),
                kind,
            });
        }
    }

    /// Whether writes are failing now, and of what kind.
    pub fn failing(&self) -> Option<StoreErrorKind> {
        self.lock().map(|f| f.kind)
    }

    /// Checks that `store` answers and takes writes.
    pub async fn check(&self, store: &dyn Store) -> Result<(), NotReady> {
        match tokio::time::timeout(CHECK_TIMEOUT, store.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(NotReady::Unreachable(e.kind().as_str())),
            Err(_) => return Err(NotReady::Unreachable("timeout")),
        }
        let Some(failing) = *self.lock() else {
            return Ok(());
        };
        if failing.since.elapsed() < PROBE_AFTER {
            return Err(NotReady::WritesFailing(failing.kind.as_str()));
        }
        match tokio::time::timeout(CHECK_TIMEOUT, store.probe_write()).await {
            Ok(Ok(())) => {
                self.succeeded();
                Ok(())
            }
            Ok(Err(e)) => {
                self.failed(&e);
                Err(NotReady::WritesFailing(e.kind().as_str()))
            }
            Err(_) => {
                *self.lock() = Some(Failing {
                    since: Instant::now(),
                    kind: StoreErrorKind::Timeout,
                });
                Err(NotReady::WritesFailing("timeout"))
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Failing>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }
}
