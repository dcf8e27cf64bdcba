//! Fan-out of committed entries: one conversation at a time, in commit order,
//! big audiences split across the runtime's workers, later messages of the same
//! conversation joining a fan-out that is still running.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use chat_proto::entry::Entry;
use chat_proto::frame::ServerFrame;
use chat_proto::ids::ConversationId;
use tokio::sync::mpsc;

use crate::wire::{Outbound, Wire};

use super::{Hub, SessionHandle, SharedFrame, View};

/// Sessions the fan-out sends to between yields to the scheduler.
pub(super) const FANOUT_YIELD: usize = 64;
/// Audiences from this size on are split across the runtime's workers.
pub(super) const FANOUT_SPLIT: usize = 256;

/// The wires, in slot order.
const WIRES: [Wire; 3] = [Wire::WsPostcard, Wire::WsJson, Wire::Stream];
/// Every (wire, view) a session may read.
const SLOTS: usize = WIRES.len() * View::ALL.len();

/// The (wire, view) of a slot.
fn encoding(slot: usize) -> (Wire, View) {
    (WIRES[slot % WIRES.len()], View::ALL[slot / WIRES.len()])
}

/// Index of a session's encoding in per-encoding arrays (see [`encoding`]).
fn slot(handle: &SessionHandle) -> usize {
    let wire = match handle.wire {
        Wire::WsPostcard => 0,
        Wire::WsJson => 1,
        Wire::Stream => 2,
    };
    wire + WIRES.len() * handle.view.index()
}

/// Most frames one conversation's fan-out takes in while it runs.
const SWEEP_MAX_FRAMES: usize = 1024;

/// The frames of one conversation's fan-out (a sweep), each encoded for every wire its
/// audience uses, in commit order. Messages committed while the sweep runs are
/// appended, so sessions it has not reached yet get them in the same write.
#[derive(Default)]
struct Tail {
    /// Per encoding (see [`slot`]), every frame so far.
    frames: [Vec<Outbound>; SLOTS],
    /// Set by the first share of the audience to finish: from then on nothing is
    /// appended, so no share can have missed a frame.
    sealed: bool,
}

/// How many frames there are for each wire.
fn lens(frames: &[Vec<Outbound>; SLOTS]) -> [usize; SLOTS] {
    frames.each_ref().map(Vec::len)
}

impl Tail {
    /// Copies into `local` what was appended since it last looked.
    fn catch_up(&self, local: &mut [Vec<Outbound>; SLOTS]) {
        for (mine, all) in local.iter_mut().zip(&self.frames) {
            mine.extend_from_slice(&all[mine.len()..]);
        }
    }
}

fn lock(tail: &Mutex<Tail>) -> std::sync::MutexGuard<'_, Tail> {
    tail.lock().unwrap_or_else(|p| p.into_inner())
}

/// One share of a sweep's audience: pushes each session every frame of the tail it has
/// not had yet, pass after pass, until a pass finds every session up to date with the
/// tail; yields every [`FANOUT_YIELD`] pushes, and then first calls `refill` (which may
/// append to the tail). Returns how many frames were sent or queued.
async fn sweep_share(
    sessions: Vec<SessionHandle>,
    tail: Arc<Mutex<Tail>>,
    mut refill: Option<&mut (dyn FnMut() + Send)>,
) -> usize {
    let mut local: [Vec<Outbound>; SLOTS] = Default::default();
    lock(&tail).catch_up(&mut local);
    // How many frames of its wire each session has had.
    let mut had = vec![0usize; sessions.len()];
    let (mut queued, mut pushes) = (0, 0);
    loop {
        // A pass during which nothing was appended leaves every session up to date.
        let before = lens(&local);
        for (handle, had) in sessions.iter().zip(had.iter_mut()) {
            let frames = &local[slot(handle)];
            if *had == frames.len() {
                continue;
            }
            let items = &frames[*had..];
            if handle.push_all(items) {
                queued += items.len();
            }
            *had = frames.len();
            pushes += 1;
            if pushes % FANOUT_YIELD == 0 {
                tokio::task::yield_now().await;
                if let Some(refill) = refill.as_mut() {
                    refill();
                }
                lock(&tail).catch_up(&mut local);
            }
        }
        let mut tail = lock(&tail);
        if lens(&tail.frames) == before && lens(&local) == before {
            tail.sealed = true;
            return queued;
        }
        tail.catch_up(&mut local);
    }
}

impl Hub {
    /// Delivers a batch of newly committed entries to every session of every member
    /// (the sender's included), each encoded once per wire and protocol generation. A session gets all of one
    /// conversation's messages in the batch with one push, so a burst costs it one
    /// write; the task yields between groups of sessions so others keep running.
    pub async fn deliver(&self, messages: Vec<Entry>) {
        self.deliver_from(messages, None).await;
    }

    /// [`Hub::deliver`], taking in messages committed meanwhile from `more`: while a
    /// conversation's fan-out runs, later messages of the same conversation join it
    /// (sessions not reached yet get them in the same write, the others in one more
    /// pass), so a message waits for at most one pass over the audience, not for the
    /// whole fan-out before it and then its own. Everything else taken from `more`, and
    /// everything after it, waits its turn: each conversation's order is kept.
    pub(super) async fn deliver_from(
        &self,
        mut messages: Vec<Entry>,
        mut more: Option<&mut mpsc::Receiver<Vec<Entry>>>,
    ) {
        let mut deferred: Vec<Entry> = Vec::new();
        while !messages.is_empty() {
            let mut runs: Vec<(ConversationId, Vec<Entry>)> = Vec::new();
            let mut index: HashMap<ConversationId, usize> = HashMap::new();
            for message in messages {
                let at = *index.entry(message.conversation).or_insert_with(|| {
                    runs.push((message.conversation, Vec::new()));
                    runs.len() - 1
                });
                runs[at].1.push(message);
            }
            for (conversation, run) in runs {
                self.sweep(conversation, run, more.as_deref_mut(), &mut deferred)
                    .await;
            }
            messages = std::mem::take(&mut deferred);
        }
    }

    /// One conversation's fan-out (see [`Hub::deliver_from`]).
    async fn sweep(
        &self,
        conversation: ConversationId,
        run: Vec<Entry>,
        more: Option<&mut mpsc::Receiver<Vec<Entry>>>,
        deferred: &mut Vec<Entry>,
    ) {
        // Taken before the audience is: a change after it stops the sweep from taking
        // in more (a new member, a new session).
        let epochs = || {
            (
                self.invalidations.load(Ordering::Acquire),
                self.registrations.load(Ordering::Acquire),
            )
        };
        let started_at = epochs();
        let members = match self.conversation(conversation).await {
            Ok(Some(c)) => c.members,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, %conversation, "membership lookup failed; messages reach clients by resume");
                return;
            }
        };
        let started = std::time::Instant::now();
        let mut targets = self.local_sessions(&members);
        let mut used = [false; SLOTS];
        for target in &targets {
            used[slot(target)] = true;
        }
        let tail = Arc::new(Mutex::new(Tail::default()));
        let append = |tail: &mut Tail, entry: Entry| {
            // Every entry this node's sessions get, those a sweep takes in included.
            self.note_seen(entry.conversation, entry.seq);
            let frame = SharedFrame::new(ServerFrame::Entry(entry));
            self.publish_fanout(&members, &frame);
            for (at, &used) in used.iter().enumerate() {
                let (wire, view) = encoding(at);
                if used && let Some(bytes) = frame.bytes_for(wire, view) {
                    tail.frames[at].push(Outbound::Frame(bytes));
                }
            }
        };
        {
            let mut tail = lock(&tail);
            for message in run {
                append(&mut tail, message);
            }
        }
        // Later commits: this conversation's join the sweep while nothing else waits
        // and nothing changed; the rest waits for the next round, in order.
        let mut refill = more.map(|more| {
            let tail = tail.clone();
            move || {
                while let Ok(batch) = more.try_recv() {
                    for message in batch {
                        let mut tail = lock(&tail);
                        if deferred.is_empty()
                            && message.conversation == conversation
                            && !tail.sealed
                            && tail.frames.iter().all(|f| f.len() < SWEEP_MAX_FRAMES)
                            && epochs() == started_at
                        {
                            append(&mut tail, message);
                        } else {
                            deferred.push(message);
                        }
                    }
                }
            }
        });
        // A big audience is split across the runtime's workers: each writes to its
        // share of the sockets. All of it is done before the next conversation, so no
        // session sees a later frame first.
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        let mut others = tokio::task::JoinSet::new();
        if workers > 1 && targets.len() >= FANOUT_SPLIT {
            let share = targets.len().div_ceil(workers);
            while targets.len() > share {
                let part = targets.split_off(targets.len() - share);
                others.spawn(sweep_share(part, tail.clone(), None));
            }
        }
        let refill = refill.as_mut().map(|r| r as &mut (dyn FnMut() + Send));
        let mut queued = sweep_share(targets, tail.clone(), refill).await;
        while let Some(done) = others.join_next().await {
            queued += done.unwrap_or(0);
        }
        metrics::counter!(crate::metrics::MESSAGES_DELIVERED).increment(queued as u64);
        metrics::histogram!(crate::metrics::FANOUT_SECONDS).record(started.elapsed().as_secs_f64());
    }

    /// Runs the fan-out of committed messages until the appender ends.
    pub fn spawn_delivery(self: &Arc<Self>, mut committed: mpsc::Receiver<Vec<Entry>>) {
        let hub = self.clone();
        tokio::spawn(async move {
            // Everything committed while the last fan-out ran goes out together: when
            // fan-out falls behind, each session gets more per write, not more writes.
            let mut batches = Vec::new();
            while committed.recv_many(&mut batches, 1024).await > 0 {
                let messages = batches.drain(..).flatten().collect();
                hub.deliver_from(messages, Some(&mut committed)).await;
            }
        });
    }
}
