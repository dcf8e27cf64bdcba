//! A session's outbound queue.
//!
//! The hub and the session push encoded frames without waiting; the session's writer
//! takes everything queued as one batch and writes it with one flush. The queue is
//! bounded in frames and bytes (bytes being written still count): a push past either
//! bound marks the session a slow consumer instead of growing. An empty queue holds no
//! heap memory, so the many idle connections of a chat server cost next to nothing
//! here; a tokio channel would keep its blocks for the connection's lifetime.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use crate::hub::{Outbound, QueueLimits};
use crate::session::CloseReason;

/// Raised once when a session's queue overflows.
#[derive(Debug, Default)]
pub struct SlowFlag {
    raised: AtomicBool,
    notify: Notify,
}

impl SlowFlag {
    /// Whether the session fell behind.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Resolves once the session fell behind.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }

    fn raise(&self) {
        if !self.raised.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }
}

/// What the writer gets from [`Outbox::take`].
#[derive(Debug)]
pub enum Taken {
    /// Frames to write, oldest first; report them with [`Outbox::written`].
    Frames(Vec<Outbound>),
    /// Everything queued was taken and the session asked to close.
    Close(CloseReason),
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Outbound>,
    /// Bytes queued plus bytes taken but not yet reported written.
    bytes: usize,
    closing: Option<CloseReason>,
    /// The writer is gone: pushes are refused and nothing accumulates.
    dead: bool,
}

/// One session's bounded outbound queue (see the module docs).
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer when the queue stops being empty or is closed.
    ready: Notify,
    slow: SlowFlag,
    limits: QueueLimits,
}

fn len(item: &Outbound) -> usize {
    item.payload().len()
}

impl Outbox {
    /// An empty queue with these bounds.
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            slow: SlowFlag::default(),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Raised when a push overflowed the bounds.
    pub fn slow(&self) -> &SlowFlag {
        &self.slow
    }

    /// Queues a frame without waiting. `false` if it was not queued: the session is
    /// closing, its writer is gone, or this push overflowed the bounds (which also
    /// raises the slow flag; every later push is refused).
    pub fn push(&self, item: Outbound) -> bool {
        if self.slow.is_raised() {
            return false;
        }
        let n = len(&item);
        let mut state = self.lock();
        if state.dead || state.closing.is_some() {
            return false;
        }
        if state.frames.len() >= self.limits.frames || state.bytes + n > self.limits.bytes {
            drop(state);
            self.slow.raise();
            return false;
        }
        let wake = state.frames.is_empty();
        state.frames.push_back(item);
        state.bytes += n;
        drop(state);
        if wake {
            // A stored permit if the writer is busy: it looks again after writing.
            self.ready.notify_one();
        }
        true
    }

    /// Asks the writer to write what is queued, then close for `reason`. Later pushes
    /// are refused.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.lock();
        if state.closing.is_none() {
            state.closing = Some(reason);
        }
        drop(state);
        self.ready.notify_one();
    }

    /// The writer's next batch: at most `max` frames, or the close once nothing is
    /// left. Waits while the queue is empty and open. Cancel-safe.
    pub async fn take(&self, max: usize) -> Taken {
        loop {
            {
                let mut state = self.lock();
                if state.frames.len() > max {
                    return Taken::Frames(state.frames.drain(..max).collect());
                }
                if !state.frames.is_empty() {
                    // The whole queue: what stays behind is an empty, unallocated one.
                    return Taken::Frames(std::mem::take(&mut state.frames).into());
                }
                if let Some(reason) = state.closing {
                    return Taken::Close(reason);
                }
            }
            self.ready.notified().await;
        }
    }

    /// Reports a taken batch as written, freeing its bytes in the bound.
    pub fn written(&self, batch: &[Outbound]) {
        let n: usize = batch.iter().map(len).sum();
        let mut state = self.lock();
        state.bytes = state.bytes.saturating_sub(n);
    }

    /// The writer failed: drops what is queued and refuses every later push.
    pub fn writer_gone(&self) {
        let mut state = self.lock();
        state.dead = true;
        state.frames = VecDeque::new();
        state.bytes = 0;
    }

    /// Bytes queued or being written.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Heap capacity the queue holds now, in frames (zero when it is empty).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.lock().frames.capacity()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn frame(n: usize) -> Outbound {
        Outbound::Frame(Bytes::from(vec![7u8; n]))
    }

    fn frames(taken: Taken) -> Vec<Outbound> {
        match taken {
            Taken::Frames(f) => f,
            Taken::Close(r) => panic!("expected frames, got close {r:?}"),
        }
    }

    const LIMITS: QueueLimits = QueueLimits {
        frames: 4,
        bytes: 1000,
    };

    #[test]
    fn overflow_by_frames_or_bytes_raises_the_slow_flag_once_and_for_all() {
        let outbox = Outbox::new(LIMITS);
        for _ in 0..4 {
            assert!(outbox.push(frame(1)));
        }
        assert!(!outbox.slow().is_raised());
        assert!(!outbox.push(frame(1)), "frame bound");
        assert!(outbox.slow().is_raised());
        assert!(!outbox.push(frame(1)), "stays slow");

        let outbox = Outbox::new(LIMITS);
        assert!(outbox.push(frame(600)));
        assert!(!outbox.push(frame(600)), "byte bound");
        assert!(outbox.slow().is_raised());
        assert_eq!(outbox.queued_bytes(), 600);
    }

    #[tokio::test]
    async fn bytes_being_written_count_until_reported() {
        let outbox = Outbox::new(LIMITS);
        assert!(outbox.push(frame(600)));
        let batch = frames(outbox.take(16).await);
        assert_eq!(outbox.queued_bytes(), 600, "taken, not yet written");
        assert!(!outbox.push(frame(600)), "still counts against the bound");

        let outbox = Outbox::new(LIMITS);
        assert!(outbox.push(frame(600)));
        let batch2 = frames(outbox.take(16).await);
        outbox.written(&batch2);
        assert_eq!(outbox.queued_bytes(), 0);
        assert!(outbox.push(frame(600)));
        drop(batch);
    }

    #[tokio::test]
    async fn batches_keep_order_respect_the_maximum_and_leave_no_memory_behind() {
        let outbox = Outbox::new(QueueLimits {
            frames: 100,
            bytes: 100_000,
        });
        for n in 1..=10 {
            assert!(outbox.push(frame(n)));
        }
        let first = frames(outbox.take(4).await);
        let lens: Vec<usize> = first.iter().map(len).collect();
        assert_eq!(lens, [1, 2, 3, 4]);
        let rest = frames(outbox.take(64).await);
        let lens: Vec<usize> = rest.iter().map(len).collect();
        assert_eq!(lens, [5, 6, 7, 8, 9, 10]);
        assert_eq!(outbox.capacity(), 0, "an emptied queue holds no allocation");
        outbox.written(&first);
        outbox.written(&rest);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_a_push_and_for_the_close() {
        let outbox = Arc::new(Outbox::new(LIMITS));
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                let mut seen = Vec::new();
                loop {
                    match outbox.take(16).await {
                        Taken::Frames(f) => {
                            outbox.written(&f);
                            seen.extend(f.iter().map(len));
                        }
                        Taken::Close(reason) => return (seen, reason),
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(outbox.push(frame(3)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(outbox.push(frame(5)));
        outbox.close(CloseReason::GoingAway);
        assert!(!outbox.push(frame(9)), "refused once closing");
        let (seen, reason) = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("writer finished")
            .expect("writer did not panic");
        assert_eq!(seen, [3, 5], "what was queued before the close is written");
        assert_eq!(reason, CloseReason::GoingAway);
    }

    #[test]
    fn a_gone_writer_refuses_pushes_and_frees_the_queue() {
        let outbox = Outbox::new(LIMITS);
        assert!(outbox.push(frame(10)));
        outbox.writer_gone();
        assert_eq!(outbox.queued_bytes(), 0);
        assert_eq!(outbox.capacity(), 0);
        assert!(!outbox.push(frame(10)));
        assert!(!outbox.slow().is_raised(), "not a slow consumer, just gone");
    }
}
