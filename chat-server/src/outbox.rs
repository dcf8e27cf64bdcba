//! A session's outbound queue.
//!
//! The hub and the session push encoded frames without waiting; the session's writer
//! takes everything queued as one batch and writes it with one flush. The queue is
//! bounded in frames and bytes (bytes being written still count): a push past either
//! bound marks the session a slow consumer instead of growing. An empty queue holds no
//! heap memory, so the many idle connections of a chat server cost next to nothing
//! here; a tokio channel would keep its blocks for the connection's lifetime.
//!
//! Where the transport can write without waiting ([`DirectWrite`]), a push that finds
//! the queue empty and the writer idle writes to the socket itself: most frames of a
//! fan-out then cost one non-blocking write and no task wake-up. Only what the socket
//! does not take at once is queued for the writer, so the order on the wire is the
//! order of the pushes either way.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::wire::{CloseReason, DirectWrite, Outbound, QueueLimits};

/// Scratch space for encoding direct writes, one per thread; kept only while small.
const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How a direct write went.
enum Direct {
    /// Every byte is on the socket.
    All,
    /// The socket took the first bytes; these are the rest.
    Part(Bytes),
    /// Nothing was written (the socket is full, or failed: the writer finds out).
    Nothing,
}

/// Encodes `frames` and writes what the socket takes without waiting.
fn write_now(direct: &dyn DirectWrite, frames: &[Outbound]) -> Direct {
    SCRATCH.with(|scratch| {
        let Ok(mut buf) = scratch.try_borrow_mut() else {
            return Direct::Nothing;
        };
        buf.clear();
        direct.encode(frames, &mut buf);
        let mut written = 0;
        while written < buf.len() {
            match direct.try_write(&buf[written..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n,
            }
        }
        let outcome = if written == buf.len() {
            Direct::All
        } else if written == 0 {
            Direct::Nothing
        } else {
            Direct::Part(Bytes::copy_from_slice(&buf[written..]))
        };
        if buf.capacity() > SCRATCH_KEEP {
            *buf = Vec::new();
        }
        outcome
    })
}

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
    /// The writer took a batch it has not reported written yet.
    writing: bool,
}

/// One session's bounded outbound queue (see the module docs).
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer when the queue stops being empty or is closed.
    ready: Notify,
    slow: SlowFlag,
    limits: QueueLimits,
    direct: OnceLock<Arc<dyn DirectWrite>>,
}

impl std::fmt::Debug for dyn DirectWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectWrite")
    }
}

fn len(item: &Outbound) -> usize {
    item.payload().len()
}

fn queue(state: &mut State, items: &[Outbound], n: usize) {
    state.frames.extend(items.iter().cloned());
    state.bytes += n;
}

impl Outbox {
    /// An empty queue with these bounds.
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            slow: SlowFlag::default(),
            limits,
            direct: OnceLock::new(),
        }
    }

    /// Lets pushes write to the transport themselves while the writer is idle (see
    /// the module docs). Set once, before the session starts.
    pub fn write_directly(&self, direct: Arc<dyn DirectWrite>) {
        let _ = self.direct.set(direct);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Raised when a push overflowed the bounds.
    pub fn slow(&self) -> &SlowFlag {
        &self.slow
    }

    /// Sends a frame without waiting. `false` if it was not sent: the session is
    /// closing, its writer is gone, or this push overflowed the bounds (which also
    /// raises the slow flag; every later push is refused).
    pub fn push(&self, item: Outbound) -> bool {
        self.push_all(std::slice::from_ref(&item))
    }

    /// Sends frames in order without waiting, all or none: written at once where the
    /// transport allows (see the module docs), else queued. `false` as for
    /// [`Outbox::push`].
    pub fn push_all(&self, items: &[Outbound]) -> bool {
        self.send(items, true)
    }

    /// Queues a frame for the writer even where a push could write it at once: for
    /// a caller with many sessions to reach and no way to spread the writes. `false`
    /// as for [`Outbox::push`].
    pub fn enqueue(&self, item: Outbound) -> bool {
        self.send(std::slice::from_ref(&item), false)
    }

    fn send(&self, items: &[Outbound], may_write: bool) -> bool {
        if items.is_empty() {
            return true;
        }
        if self.slow.is_raised() {
            return false;
        }
        let n: usize = items.iter().map(len).sum();
        let mut state = self.lock();
        if state.dead || state.closing.is_some() {
            return false;
        }
        if state.frames.len() + items.len() > self.limits.frames
            || state.bytes + n > self.limits.bytes
        {
            drop(state);
            self.slow.raise();
            return false;
        }
        let wake = state.frames.is_empty();
        // The lock is held through the write: nothing else writes meanwhile.
        match self.direct.get() {
            Some(direct) if may_write && wake && !state.writing => {
                match write_now(&**direct, items) {
                    Direct::All => return true,
                    Direct::Part(rest) => {
                        state.bytes += rest.len();
                        state.frames.push_back(Outbound::Raw(rest));
                    }
                    Direct::Nothing => queue(&mut state, items, n),
                }
            }
            _ => queue(&mut state, items, n),
        }
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
                    state.writing = true;
                    return Taken::Frames(state.frames.drain(..max).collect());
                }
                if !state.frames.is_empty() {
                    // The whole queue: what stays behind is an empty, unallocated one.
                    state.writing = true;
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
        state.writing = false;
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

    /// A socket that takes at most `room` bytes, then would block; frames go on its
    /// wire as a length byte and the payload.
    #[derive(Default)]
    struct Socket {
        wire: Mutex<Vec<u8>>,
        room: Mutex<usize>,
    }

    impl Socket {
        fn with_room(room: usize) -> Arc<Self> {
            let socket = Arc::new(Socket::default());
            *socket.room.lock().unwrap() = room;
            socket
        }

        fn wire(&self) -> Vec<u8> {
            self.wire.lock().unwrap().clone()
        }

        /// What the writer task would do with a taken batch.
        fn write_batch(&self, batch: &[Outbound]) {
            let mut buf = Vec::new();
            self.encode(batch, &mut buf);
            self.wire.lock().unwrap().extend(buf);
        }
    }

    impl DirectWrite for Socket {
        fn encode(&self, frames: &[Outbound], buf: &mut Vec<u8>) {
            for item in frames {
                if let Outbound::Raw(bytes) = item {
                    buf.extend_from_slice(bytes);
                } else {
                    buf.push(len(item) as u8);
                    buf.extend_from_slice(item.payload());
                }
            }
        }

        fn try_write(&self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut room = self.room.lock().unwrap();
            let n = bytes.len().min(*room);
            if n == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            *room -= n;
            self.wire.lock().unwrap().extend_from_slice(&bytes[..n]);
            Ok(n)
        }
    }

    fn direct(socket: &Arc<Socket>) -> Outbox {
        let outbox = Outbox::new(LIMITS);
        outbox.write_directly(socket.clone());
        outbox
    }

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        payloads
            .iter()
            .flat_map(|p| std::iter::once(p.len() as u8).chain(p.iter().copied()))
            .collect()
    }

    fn bytes_frame(payload: &[u8]) -> Outbound {
        Outbound::Frame(Bytes::copy_from_slice(payload))
    }

    #[tokio::test]
    async fn an_idle_writer_is_bypassed_and_never_woken() {
        let socket = Socket::with_room(1000);
        let outbox = direct(&socket);
        assert!(outbox.push_all(&[bytes_frame(b"one"), bytes_frame(b"two")]));
        assert!(outbox.push(bytes_frame(b"three")));
        assert_eq!(socket.wire(), framed(&[b"one", b"two", b"three"]));
        assert_eq!(outbox.queued_bytes(), 0, "nothing queued");
        let woken = tokio::time::timeout(Duration::from_millis(50), outbox.take(16)).await;
        assert!(woken.is_err(), "the writer has nothing to do");
    }

    #[tokio::test]
    async fn a_busy_writer_keeps_the_order_on_the_wire() {
        let socket = Socket::with_room(1000);
        let outbox = Outbox::new(LIMITS);
        assert!(
            outbox.push(bytes_frame(b"a")),
            "queued: no direct writes yet"
        );
        outbox.write_directly(socket.clone());
        let batch = frames(outbox.take(16).await);
        assert!(outbox.push(bytes_frame(b"b")), "the writer is busy: queued");
        assert_eq!(socket.wire(), b"", "nothing may overtake the taken batch");
        socket.write_batch(&batch);
        outbox.written(&batch);
        let batch = frames(outbox.take(16).await);
        socket.write_batch(&batch);
        outbox.written(&batch);
        assert!(
            outbox.push(bytes_frame(b"c")),
            "idle again: written at once"
        );
        assert_eq!(socket.wire(), framed(&[b"a", b"b", b"c"]));
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_is_queued_byte_exact() {
        // Room for the first frame and two bytes of the second.
        let socket = Socket::with_room(6);
        let outbox = direct(&socket);
        assert!(outbox.push_all(&[bytes_frame(b"one"), bytes_frame(b"second")]));
        assert_eq!(outbox.queued_bytes(), 5, "the rest of the second frame");
        *socket.room.lock().unwrap() = 1000;
        assert!(outbox.push(bytes_frame(b"third")), "queued behind the rest");
        let batch = frames(outbox.take(16).await);
        assert!(matches!(batch[0], Outbound::Raw(_)));
        socket.write_batch(&batch);
        outbox.written(&batch);
        assert_eq!(socket.wire(), framed(&[b"one", b"second", b"third"]));
        assert_eq!(outbox.queued_bytes(), 0);

        // A full socket: the frames are queued whole, for the writer to wait on.
        let socket = Socket::with_room(0);
        let outbox = direct(&socket);
        assert!(outbox.push(bytes_frame(b"waits")));
        assert_eq!(outbox.queued_bytes(), 5);
        let batch = frames(outbox.take(16).await);
        assert!(matches!(&batch[..], [Outbound::Frame(b)] if b == &b"waits"[..]));
    }

    #[tokio::test]
    async fn an_enqueued_frame_waits_for_the_writer_and_later_pushes_queue_behind_it() {
        let socket = Socket::with_room(1000);
        let outbox = direct(&socket);
        assert!(outbox.enqueue(bytes_frame(b"first")));
        assert!(outbox.push(bytes_frame(b"second")), "behind the queued one");
        assert_eq!(socket.wire(), b"", "nothing written from the pushing side");
        let batch = frames(outbox.take(16).await);
        socket.write_batch(&batch);
        outbox.written(&batch);
        assert_eq!(socket.wire(), framed(&[b"first", b"second"]));
    }

    #[test]
    fn direct_writes_obey_the_bounds_and_the_close() {
        let socket = Socket::with_room(100_000);
        let outbox = direct(&socket);
        let five: Vec<Outbound> = (0..5).map(|_| frame(1)).collect();
        assert!(
            !outbox.push_all(&five),
            "more frames at once than the bound"
        );
        assert!(outbox.slow().is_raised());
        assert_eq!(socket.wire(), b"", "refused, not written");

        let outbox = direct(&socket);
        outbox.close(CloseReason::Normal);
        assert!(!outbox.push(frame(1)), "refused once closing");
        assert_eq!(socket.wire(), b"");
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
