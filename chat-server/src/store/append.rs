//! Group commit: concurrent sends share one transaction.
//!
//! Every send goes to one task through a channel. The task takes whatever has queued
//! up (at most `max_batch`), stores it in one transaction, and answers each sender
//! after the commit. Under load batches grow by themselves, so throughput rises with
//! concurrency while a lone send still commits at once.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Appended, NewMessage, Store, StoreError};

type Reply = oneshot::Sender<Result<Appended, Arc<StoreError>>>;

/// Handle to the group-commit task; cheap to clone.
#[derive(Clone, Debug)]
pub struct Appender {
    tx: mpsc::Sender<(NewMessage, Reply)>,
}

impl Appender {
    /// Starts the task over `store`. It ends when every handle is dropped, after
    /// committing what was queued.
    pub fn spawn(store: Arc<dyn Store>, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::channel(max_batch * 4);
        tokio::spawn(run(store, rx, max_batch.max(1)));
        Self { tx }
    }

    /// Stores one send; resolves after its transaction committed.
    pub async fn append(&self, message: NewMessage) -> Result<Appended, Arc<StoreError>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((message, reply))
            .await
            .map_err(|_| Arc::new(StoreError::Closed))?;
        answer.await.map_err(|_| Arc::new(StoreError::Closed))?
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<(NewMessage, Reply)>, max_batch: usize) {
    let mut pending: Vec<(NewMessage, Reply)> = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut pending, max_batch).await > 0 {
        let (batch, replies): (Vec<NewMessage>, Vec<Reply>) = pending.drain(..).unzip();
        let size = batch.len();
        match store.append_batch(batch).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, size, "message batch failed to commit");
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
