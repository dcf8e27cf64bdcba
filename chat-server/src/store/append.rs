//! Group commit: concurrent sends share one transaction.
//!
//! Every send goes to one task through a channel. The task takes whatever has queued
//! up (at most `max_batch`), stores it in one transaction, and answers each sender
//! after the commit. Under load batches grow by themselves, so throughput rises with
//! concurrency while a lone send still commits at once. Newly stored messages are then
//! handed, in commit order, to whoever delivers them (the real-time hub).

use std::sync::Arc;

use chat_proto::entry::Entry;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};

use super::health::WriteHealth;
use super::{Appended, NewEntry, Store, StoreError};

/// The answer to one send.
pub type AppendResult = Result<Appended, Arc<StoreError>>;
type Reply = oneshot::Sender<AppendResult>;

/// Handle to the group-commit task; cheap to clone.
#[derive(Clone, Debug)]
pub struct Appender {
    tx: mpsc::Sender<(NewEntry, Reply)>,
    health: Arc<WriteHealth>,
}

impl Appender {
    /// Starts the task over `store`. Committed new messages go to `committed`, one
    /// batch at a time in commit order (pass `None` to drop them). The task ends when
    /// every handle is dropped, after committing what was queued.
    pub fn spawn(
        store: Arc<dyn Store>,
        max_batch: usize,
        committed: Option<mpsc::Sender<Vec<Entry>>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(max_batch.max(1) * 4);
        let health = Arc::new(WriteHealth::default());
        tokio::spawn(run(store, rx, max_batch.max(1), committed, health.clone()));
        Self { tx, health }
    }

    /// The outcome of the latest writes, for readiness.
    pub fn health(&self) -> &Arc<WriteHealth> {
        &self.health
    }

    /// Queues one send; the receiver resolves after its transaction committed. Sends
    /// queued by one caller are committed in the order they were queued.
    pub async fn enqueue(
        &self,
        message: NewEntry,
    ) -> Result<oneshot::Receiver<AppendResult>, Arc<StoreError>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((message, reply))
            .await
            .map_err(|_| Arc::new(StoreError::Closed))?;
        Ok(answer)
    }

    /// Stores one send; resolves after its transaction committed.
    pub async fn append(&self, message: NewEntry) -> AppendResult {
        let answer = self.enqueue(message).await?;
        answer.await.map_err(|_| Arc::new(StoreError::Closed))?
    }
}

async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<(NewEntry, Reply)>,
    max_batch: usize,
    committed: Option<mpsc::Sender<Vec<Entry>>>,
    health: Arc<WriteHealth>,
) {
    // Several batches may be in flight where the backend writes concurrently; they are
    // finished in the order they were started, so acknowledgements and delivery keep
    // commit order (one conversation's writers serialize on its row in the database).
    let depth = store.write_concurrency().max(1);
    let mut in_flight = FuturesOrdered::new();
    let mut pending: Vec<(NewEntry, Reply)> = Vec::with_capacity(max_batch);
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some((replies, size, result)) = in_flight.next(), if !in_flight.is_empty() => {
                match &result {
                    Ok(_) => health.succeeded(),
                    Err(e) => health.failed(e),
                }
                finish(replies, size, result, committed.as_ref()).await;
            }
            n = rx.recv_many(&mut pending, max_batch), if open && in_flight.len() < depth => {
                if n == 0 {
                    open = false;
                    continue;
                }
                let (batch, replies): (Vec<NewEntry>, Vec<Reply>) = pending.drain(..).unzip();
                let store = store.clone();
                in_flight.push_back(async move {
                    let size = batch.len();
                    let started = std::time::Instant::now();
                    let result = store.append_batch(batch).await;
                    metrics::histogram!(crate::metrics::STORE_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
                    metrics::histogram!(crate::metrics::STORE_BATCH_SIZE).record(size as f64);
                    (replies, size, result)
                });
            }
            else => break,
        }
    }
}

async fn finish(
    replies: Vec<Reply>,
    size: usize,
    result: Result<Vec<Appended>, StoreError>,
    committed: Option<&mpsc::Sender<Vec<Entry>>>,
) {
    match result {
        Ok(results) => {
            let fresh: Vec<Entry> = results
                .iter()
                .filter_map(|r| match r {
                    Appended::New(m) => Some(m.clone()),
                    _ => None,
                })
                .collect();
            metrics::counter!(crate::metrics::MESSAGES_RECEIVED).increment(fresh.len() as u64);
            // Deliver before acknowledging, so a sender never sees its ack before its
            // other devices could have seen the message.
            if let Some(sink) = committed
                && !fresh.is_empty()
            {
                let _ = sink.send(fresh).await;
            }
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, kind = e.kind().as_str(), size, "message batch failed to commit");
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
