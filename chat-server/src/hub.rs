//! The hub: who is connected, who belongs where, and fan-out.
//!
//! Every live session registers a [`SessionHandle`]. A delivered frame is encoded at
//! most once per wire encoding (postcard, JSON) and the same reference-counted buffer
//! goes to every recipient session: no per-recipient serialization. Where a session's
//! socket takes it at once it is written there and then, otherwise queued for the
//! session's writer (see [`crate::outbox`]). Queues are bounded in frames and bytes; a
//! session that cannot keep up is marked a slow consumer and closed by its own task, so
//! it never delays anyone else.
//!
//! Committed messages go out one conversation at a time, in commit order. Messages of
//! the same conversation committed while its fan-out runs join it: sessions it has not
//! reached yet get them in the same write, the others in one more pass over them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_proto::codec;
use chat_proto::frame::{Cursor, Message, Presence, PresenceStatus, ServerFrame};
use chat_proto::ids::Timestamp;
use chat_proto::ids::{ConversationId, UserId};
use chat_proto::limits::MAX_DATAGRAM;
use tokio::sync::{mpsc, watch};

use crate::outbox::Outbox;
use crate::store::{ConversationMeta, Store, StoreError};
use crate::wire::{Datagrams, Outbound, QueueLimits, Wire};

/// The other nodes of a cluster, as the hub needs them: the cluster bus implements
/// this, so the hub names no module above it.
pub trait Peers: Send + Sync + std::fmt::Debug {
    /// This node has a first session of `user`; whether the user had none elsewhere
    /// (so they just came online).
    fn came_online(&self, user: UserId) -> bool;
    /// This node's last session of `user` ended; whether the user has none elsewhere
    /// (so they just went offline).
    fn went_offline(&self, user: UserId) -> bool;
    /// Whether another node has a session of `user`.
    fn is_remote(&self, user: UserId) -> bool;
    /// Queue this frame (postcard) on every session of `users` on the other nodes.
    fn fanout(&self, users: &[UserId], frame: Bytes);
    /// A conversation's membership changed: the other nodes drop it from their cache.
    fn invalidate(&self, conversation: ConversationId);
    /// People came to share a conversation (see [`Hub::introduce`]).
    fn introduce(&self, newcomers: &[UserId], members: &[UserId]);
    /// Whether this node hears the others.
    fn is_connected(&self) -> bool;
}

/// A frame encoded lazily, at most once per encoding, shared by every recipient.
#[derive(Debug)]
pub struct SharedFrame {
    frame: ServerFrame,
    postcard: std::sync::OnceLock<Option<codec::EncodedFrame>>,
    json: std::sync::OnceLock<Option<Bytes>>,
}

impl SharedFrame {
    /// Wraps a frame; nothing is encoded yet.
    pub fn new(frame: ServerFrame) -> Self {
        Self {
            frame,
            postcard: std::sync::OnceLock::new(),
            json: std::sync::OnceLock::new(),
        }
    }

    /// The frame itself.
    pub fn frame(&self) -> &ServerFrame {
        &self.frame
    }

    /// The frame back, dropping any encodings.
    pub fn into_frame(self) -> ServerFrame {
        self.frame
    }

    /// The bytes for a wire, encoding on first use. `None` if the frame cannot be
    /// encoded within the limits (never the case for frames the hub builds).
    pub fn bytes(&self, wire: Wire) -> Option<Bytes> {
        match wire {
            Wire::WsJson => self
                .json
                .get_or_init(|| codec::encode_json(&self.frame).ok().map(Bytes::from))
                .clone(),
            Wire::WsPostcard | Wire::Stream => {
                let encoded = self
                    .postcard
                    .get_or_init(|| codec::encode_postcard(&self.frame).ok())
                    .as_ref()?;
                Some(if wire == Wire::Stream {
                    encoded.length_delimited()
                } else {
                    encoded.payload()
                })
            }
        }
    }
}

/// The hub's view of one live session.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    /// Unique per process.
    pub id: u64,
    /// Its user.
    pub user: UserId,
    /// Its wire encoding.
    pub wire: Wire,
    /// Where frames that may be lost go instead of the queue, once the session
    /// negotiated a version that allows it.
    pub datagrams: Option<Arc<dyn Datagrams>>,
    outbox: Arc<Outbox>,
}

impl SessionHandle {
    /// A handle and the queue its writer drains.
    pub fn new(id: u64, user: UserId, wire: Wire, limits: QueueLimits) -> (Self, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(limits));
        (
            Self {
                id,
                user,
                wire,
                datagrams: None,
                outbox: outbox.clone(),
            },
            outbox,
        )
    }

    /// Sends encoded bytes without waiting; on overflow marks the session slow and
    /// returns `false`.
    pub fn push(&self, item: Outbound) -> bool {
        self.outbox.push(item)
    }

    /// Sends frames in order without waiting, all or none (see [`Outbox::push_all`]).
    pub fn push_all(&self, items: &[Outbound]) -> bool {
        self.outbox.push_all(items)
    }

    /// Sends a frame that may be lost as a datagram, if this session takes them;
    /// `false` if it must be queued instead.
    fn send_datagram(&self, frame: &SharedFrame) -> bool {
        let Some(datagrams) = &self.datagrams else {
            return false;
        };
        frame.frame().datagram_allowed()
            && frame
                .bytes(Wire::WsPostcard)
                .is_some_and(|bytes| bytes.len() <= MAX_DATAGRAM && datagrams.send(bytes))
    }

    /// Queues a frame shared with other sessions (`typing` goes as a datagram where
    /// the session takes them).
    pub fn push_shared(&self, frame: &SharedFrame) -> bool {
        if self.send_datagram(frame) {
            return true;
        }
        match frame.bytes(self.wire) {
            Some(bytes) => self.push(Outbound::Frame(bytes)),
            None => false,
        }
    }

    /// Queues a frame shared with other sessions for the writer, never writing it
    /// from here (see [`Outbox::enqueue`]).
    pub fn enqueue_shared(&self, frame: &SharedFrame) -> bool {
        if self.send_datagram(frame) {
            return true;
        }
        match frame.bytes(self.wire) {
            Some(bytes) => self.outbox.enqueue(Outbound::Frame(bytes)),
            None => false,
        }
    }

    /// Queues a frame for this session alone.
    pub fn push_frame(&self, frame: &ServerFrame) -> bool {
        self.push_shared(&SharedFrame::new(frame.clone()))
    }
}

/// Cached membership; refreshed from the store when missing or invalidated.
#[derive(Clone, Debug)]
pub struct CachedConversation {
    /// Whether bodies must be encrypted.
    pub encrypted: bool,
    /// Member ids, ascending.
    pub members: Arc<[UserId]>,
}

impl CachedConversation {
    /// Whether `user` is a member.
    pub fn has(&self, user: UserId) -> bool {
        self.members.binary_search(&user).is_ok()
    }
}

const MEMBERSHIP_CACHE: usize = 100_000;
/// Sessions the fan-out sends to between yields to the scheduler.
const FANOUT_YIELD: usize = 64;
/// Audiences from this size on are split across the runtime's workers.
const FANOUT_SPLIT: usize = 256;

/// Index of a wire's encoding in per-wire arrays.
fn slot(wire: Wire) -> usize {
    match wire {
        Wire::WsPostcard => 0,
        Wire::WsJson => 1,
        Wire::Stream => 2,
    }
}

/// Most frames one conversation's fan-out takes in while it runs.
const SWEEP_MAX_FRAMES: usize = 1024;

/// The frames of one conversation's fan-out (a sweep), each encoded for every wire its
/// audience uses, in commit order. Messages committed while the sweep runs are
/// appended, so sessions it has not reached yet get them in the same write.
#[derive(Default)]
struct Tail {
    /// Per wire (see [`slot`]), every frame so far.
    frames: [Vec<Outbound>; 3],
    /// Set by the first share of the audience to finish: from then on nothing is
    /// appended, so no share can have missed a frame.
    sealed: bool,
}

/// How many frames there are for each wire.
fn lens(frames: &[Vec<Outbound>; 3]) -> [usize; 3] {
    frames.each_ref().map(Vec::len)
}

impl Tail {
    /// Copies into `local` what was appended since it last looked.
    fn catch_up(&self, local: &mut [Vec<Outbound>; 3]) {
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
    let mut local: [Vec<Outbound>; 3] = Default::default();
    lock(&tail).catch_up(&mut local);
    // How many frames of its wire each session has had.
    let mut had = vec![0usize; sessions.len()];
    let (mut queued, mut pushes) = (0, 0);
    loop {
        // A pass during which nothing was appended leaves every session up to date.
        let before = lens(&local);
        for (handle, had) in sessions.iter().zip(had.iter_mut()) {
            let frames = &local[slot(handle.wire)];
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

/// Sessions, membership cache and rate limits.
#[derive(Debug)]
pub struct Hub {
    store: Arc<dyn Store>,
    sessions: RwLock<HashMap<UserId, Vec<SessionHandle>>>,
    conversations: RwLock<HashMap<ConversationId, CachedConversation>>,
    next_id: AtomicU64,
    send_limits: Mutex<HashMap<UserId, Bucket>>,
    queue_limits: QueueLimits,
    /// The other nodes, when this node is one of several.
    peers: OnceLock<Arc<dyn Peers>>,
    /// Counts invalidations, so a store read that raced one is not cached.
    invalidations: AtomicU64,
    /// Counts registrations: a fan-out takes in later messages only for the sessions
    /// it started with, and only while this stays the same.
    registrations: AtomicU64,
    /// Bumped when every session should reconnect and resume (see [`Hub::resync`]).
    resync: watch::Sender<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Hub {
    /// A hub over `store`.
    pub fn new(store: Arc<dyn Store>, queue_limits: QueueLimits) -> Self {
        Self {
            store,
            sessions: RwLock::new(HashMap::new()),
            conversations: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            send_limits: Mutex::new(HashMap::new()),
            queue_limits,
            peers: OnceLock::new(),
            invalidations: AtomicU64::new(0),
            registrations: AtomicU64::new(0),
            resync: watch::channel(0).0,
        }
    }

    /// Joins this node to a cluster: from now on fan-out, membership changes and
    /// presence also reach the other nodes through `peers`.
    pub fn attach_peers(&self, peers: Arc<dyn Peers>) {
        if self.peers.set(peers).is_err() {
            tracing::warn!("a cluster bus was already attached");
        }
    }

    /// The other nodes, if this node is part of a cluster.
    pub fn peers(&self) -> Option<&Arc<dyn Peers>> {
        self.peers.get()
    }

    /// Asks every session on this node to reconnect and resume (`go_away`): used when
    /// this node may have missed frames other nodes published.
    pub fn resync(&self) {
        self.resync.send_modify(|n| *n += 1);
    }

    /// Changes whenever [`Hub::resync`] is called.
    pub fn resync_signal(&self) -> watch::Receiver<u64> {
        self.resync.subscribe()
    }

    /// A new session's handle and queue; not yet registered.
    pub fn new_session(&self, user: UserId, wire: Wire) -> (SessionHandle, Arc<Outbox>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        SessionHandle::new(id, user, wire, self.queue_limits)
    }

    /// Makes a session reachable; returns `true` if the user just came online: this is
    /// their first session here and they have none on other nodes.
    pub fn register(&self, handle: SessionHandle) -> bool {
        let user = handle.user;
        let first = {
            let mut sessions = self.sessions.write().unwrap_or_else(|p| p.into_inner());
            self.registrations.fetch_add(1, Ordering::AcqRel);
            let list = sessions.entry(user).or_default();
            list.push(handle);
            list.len() == 1
        };
        match self.peers() {
            Some(peers) if first => peers.came_online(user),
            _ => first,
        }
    }

    /// Removes a session; returns `true` if the user just went offline: that was their
    /// last session here and they have none on other nodes.
    pub fn unregister(&self, user: UserId, id: u64) -> bool {
        let last = {
            let mut sessions = self.sessions.write().unwrap_or_else(|p| p.into_inner());
            let Some(list) = sessions.get_mut(&user) else {
                return false;
            };
            list.retain(|h| h.id != id);
            if list.is_empty() {
                sessions.remove(&user);
                true
            } else {
                false
            }
        };
        match self.peers() {
            Some(peers) if last => peers.went_offline(user),
            _ => last,
        }
    }

    /// Whether a user has a live session on this node or, in a cluster, on another.
    pub fn is_online(&self, user: UserId) -> bool {
        self.is_local(user) || self.peers().is_some_and(|peers| peers.is_remote(user))
    }

    /// Whether a user has a live session on this node.
    pub fn is_local(&self, user: UserId) -> bool {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&user)
    }

    /// Users with a live session on this node.
    pub fn local_users(&self) -> Vec<UserId> {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Everyone who shares one of the given conversations (a user's `heads`),
    /// ascending, without duplicates.
    pub async fn contacts(&self, heads: &[Cursor]) -> Vec<UserId> {
        let mut contacts = Vec::new();
        for head in heads {
            if let Ok(Some(c)) = self.conversation(head.conversation).await {
                contacts.extend(c.members.iter().copied());
            }
        }
        contacts.sort_unstable();
        contacts.dedup();
        contacts
    }

    /// Tells `user`'s contacts that they went offline at `at`: everywhere, or only to
    /// sessions on this node (when every node reaches the same conclusion on its own).
    pub async fn announce_offline(&self, user: UserId, at: Timestamp, everywhere: bool) {
        let heads = match self.store.heads(user).await {
            Ok(heads) => heads,
            Err(e) => {
                tracing::warn!(error = %e, %user, "contacts lookup failed; offline presence not sent");
                return;
            }
        };
        let contacts: Vec<UserId> = self
            .contacts(&heads)
            .await
            .into_iter()
            .filter(|&c| c != user)
            .collect();
        let frame = SharedFrame::new(ServerFrame::Presence(Presence {
            user,
            status: PresenceStatus::Offline,
            last_seen: Some(at),
        }));
        if everywhere {
            self.broadcast(&contacts, &frame);
        } else {
            self.send_to_users(&contacts, &frame, None);
        }
    }

    /// Live sessions in total.
    pub fn session_count(&self) -> usize {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    /// A conversation's membership, from the cache or the store; `None` if it does not
    /// exist.
    pub async fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<CachedConversation>, StoreError> {
        if let Some(c) = self
            .conversations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(Some(c.clone()));
        }
        // An invalidation while the store is read may concern what was read: then the
        // answer is used but not cached (it could be older than the invalidation).
        let epoch = self.invalidations.load(Ordering::Acquire);
        let Some(ConversationMeta { encrypted, members }) =
            self.store.conversation_meta(id).await?
        else {
            return Ok(None);
        };
        let cached = CachedConversation {
            encrypted,
            members: members.into(),
        };
        let mut map = self
            .conversations
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if self.invalidations.load(Ordering::Acquire) == epoch {
            if map.len() >= MEMBERSHIP_CACHE {
                map.clear();
            }
            map.insert(id, cached.clone());
        }
        Ok(Some(cached))
    }

    /// Queues a frame on every session of the given users on every node: here
    /// directly, elsewhere through the cluster bus. Returns how many sessions here got it.
    pub fn broadcast(&self, users: &[UserId], frame: &SharedFrame) -> usize {
        let queued = self.send_to_users(users, frame, None);
        self.publish_fanout(users, frame);
        queued
    }

    /// Hands a frame for `users` to the other nodes, if this node is in a cluster.
    fn publish_fanout(&self, users: &[UserId], frame: &SharedFrame) {
        if let Some(peers) = self.peers()
            && !users.is_empty()
            && let Some(bytes) = frame.bytes(Wire::WsPostcard)
        {
            peers.fanout(users, bytes);
        }
    }

    /// Forgets cached membership of a conversation (after it changed).
    pub fn invalidate(&self, id: ConversationId) {
        let mut map = self
            .conversations
            .write()
            .unwrap_or_else(|p| p.into_inner());
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        map.remove(&id);
    }

    /// Queues a frame on every session of the given users, except one session;
    /// returns on how many sessions it was queued.
    pub fn send_to_users(
        &self,
        users: &[UserId],
        frame: &SharedFrame,
        except_session: Option<u64>,
    ) -> usize {
        let targets = self.local_sessions(users);
        // A big audience reached from a session's own task (typing, receipts,
        // presence) is left to the sessions' writers, as one task writing to every
        // socket in turn would hold its worker for that long.
        let queue_only = targets.len() >= FANOUT_SPLIT;
        targets
            .iter()
            .filter(|handle| Some(handle.id) != except_session)
            .filter(|handle| {
                if queue_only {
                    handle.enqueue_shared(frame)
                } else {
                    handle.push_shared(frame)
                }
            })
            .count()
    }

    /// Every session here of the given users. Taken out of the map so that writing
    /// to them (pushes may write to sockets) never holds the lock.
    fn local_sessions(&self, users: &[UserId]) -> Vec<SessionHandle> {
        let sessions = self.sessions.read().unwrap_or_else(|p| p.into_inner());
        users
            .iter()
            .filter_map(|user| sessions.get(user))
            .flatten()
            .cloned()
            .collect()
    }

    /// A conversation's membership changed: forget the cached members and tell
    /// `recipients` (every session of each).
    pub fn membership_changed(
        &self,
        conversation: ConversationId,
        subject: UserId,
        change: chat_proto::frame::MembershipChange,
        by: UserId,
        recipients: &[UserId],
    ) {
        self.invalidate(conversation);
        if let Some(peers) = self.peers() {
            peers.invalidate(conversation);
        }
        let frame = SharedFrame::new(ServerFrame::Membership(chat_proto::frame::Membership {
            conversation,
            user: subject,
            change,
            by,
        }));
        self.broadcast(recipients, &frame);
    }

    /// Tells users who have just come to share a conversation which of them are online:
    /// each online newcomer to the other members, each online member to the newcomers.
    /// (Presence otherwise reaches contacts only when someone connects or disconnects.)
    pub fn introduce(&self, newcomers: &[UserId], members: &[UserId]) {
        self.introduce_here(newcomers, members);
        if let Some(peers) = self.peers() {
            peers.introduce(newcomers, members);
        }
    }

    /// [`Hub::introduce`] for the sessions on this node (each node does its own, so
    /// the bus carries one event instead of a frame per member).
    pub fn introduce_here(&self, newcomers: &[UserId], members: &[UserId]) {
        let online = |user: UserId| {
            SharedFrame::new(ServerFrame::Presence(Presence {
                user,
                status: PresenceStatus::Online,
                last_seen: None,
            }))
        };
        for &user in newcomers {
            if self.is_online(user) {
                let others: Vec<UserId> = members.iter().copied().filter(|&m| m != user).collect();
                self.send_to_users(&others, &online(user), None);
            }
        }
        for &member in members {
            if !newcomers.contains(&member) && self.is_online(member) {
                self.send_to_users(newcomers, &online(member), None);
            }
        }
    }

    /// Delivers a batch of newly committed messages to every session of every member
    /// (the sender's included), each encoded once per wire. A session gets all of one
    /// conversation's messages in the batch with one push, so a burst costs it one
    /// write; the task yields between groups of sessions so others keep running.
    pub async fn deliver(&self, messages: Vec<Message>) {
        self.deliver_from(messages, None).await;
    }

    /// [`Hub::deliver`], taking in messages committed meanwhile from `more`: while a
    /// conversation's fan-out runs, later messages of the same conversation join it
    /// (sessions not reached yet get them in the same write, the others in one more
    /// pass), so a message waits for at most one pass over the audience, not for the
    /// whole fan-out before it and then its own. Everything else taken from `more`, and
    /// everything after it, waits its turn: each conversation's order is kept.
    async fn deliver_from(
        &self,
        mut messages: Vec<Message>,
        mut more: Option<&mut mpsc::Receiver<Vec<Message>>>,
    ) {
        let mut deferred: Vec<Message> = Vec::new();
        while !messages.is_empty() {
            let mut runs: Vec<(ConversationId, Vec<Message>)> = Vec::new();
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
        run: Vec<Message>,
        more: Option<&mut mpsc::Receiver<Vec<Message>>>,
        deferred: &mut Vec<Message>,
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
        let mut wires = [false; 3];
        for target in &targets {
            wires[slot(target.wire)] = true;
        }
        let tail = Arc::new(Mutex::new(Tail::default()));
        let append = |tail: &mut Tail, message: Message| {
            let frame = SharedFrame::new(ServerFrame::Message(message));
            self.publish_fanout(&members, &frame);
            for wire in [Wire::WsPostcard, Wire::WsJson, Wire::Stream] {
                if wires[slot(wire)]
                    && let Some(bytes) = frame.bytes(wire)
                {
                    tail.frames[slot(wire)].push(Outbound::Frame(bytes));
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

    /// Takes one send from the user's budget (`rate` per second, `burst` at once);
    /// `Err(wait)` when it is exhausted.
    pub fn take_send_token(
        &self,
        user: UserId,
        rate: u32,
        burst: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut map = self.send_limits.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let rate = f64::from(rate.max(1));
        let burst = f64::from(burst.max(1));
        let bucket = map.entry(user).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    /// Runs the fan-out of committed messages until the appender ends.
    pub fn spawn_delivery(self: &Arc<Self>, mut committed: mpsc::Receiver<Vec<Message>>) {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::Notify;

    use super::*;

    fn user(n: u64) -> UserId {
        UserId::new(n).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn shared_frames_encode_once_per_wire_and_share_the_buffer() {
        let frame = SharedFrame::new(ServerFrame::Ping(chat_proto::frame::Ping { nonce: 3 }));
        let a = frame.bytes(Wire::WsPostcard).unwrap_or_default();
        let b = frame.bytes(Wire::WsPostcard).unwrap_or_default();
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "same allocation for every recipient"
        );
        let s = frame.bytes(Wire::Stream).unwrap_or_default();
        assert_eq!(&s[4..], &a[..]);
        assert_eq!(
            s[4..].as_ptr(),
            a.as_ptr(),
            "stream framing is a view of the same buffer"
        );
        assert_eq!(
            frame.bytes(Wire::WsJson).as_deref(),
            Some(&br#"{"ping":{"nonce":3}}"#[..])
        );
    }

    #[test]
    fn send_budget_refills_at_the_rate() {
        let store: Arc<dyn Store> = Arc::new(NoStore::default());
        let hub = Hub::new(store, QueueLimits::default());
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(hub.take_send_token(user(1), 10, 5, t0).is_ok());
        }
        let wait = hub
            .take_send_token(user(1), 10, 5, t0)
            .expect_err("burst spent");
        assert!(wait <= Duration::from_millis(100));
        assert!(hub.take_send_token(user(2), 10, 5, t0).is_ok(), "per user");
        assert!(
            hub.take_send_token(user(1), 10, 5, t0 + Duration::from_millis(100))
                .is_ok()
        );
    }

    /// Counts the writes made to it and keeps what they wrote.
    #[derive(Default)]
    struct CountingSocket {
        writes: AtomicUsize,
        wire: Mutex<Vec<u8>>,
    }

    impl crate::wire::DirectWrite for CountingSocket {
        fn encode(&self, frames: &[Outbound], buf: &mut Vec<u8>) {
            for item in frames {
                buf.extend_from_slice(item.payload());
            }
        }
        fn try_write(&self, bytes: &[u8]) -> std::io::Result<usize> {
            self.writes.fetch_add(1, Ordering::AcqRel);
            self.wire
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
    }

    fn message(conversation: u64, seq: u64) -> Message {
        Message {
            conversation: ConversationId::new(conversation).unwrap_or_else(|_| unreachable!()),
            seq: chat_proto::ids::Seq::new(seq).unwrap_or_else(|_| unreachable!()),
            id: chat_proto::ids::MessageId::new(conversation * 100 + seq)
                .unwrap_or_else(|_| unreachable!()),
            sender: user(2),
            client_msg_id: chat_proto::ids::ClientMsgId::from_bytes([seq as u8; 16]),
            sent_at: Timestamp(1),
            body: chat_proto::body::Body::Text(format!("{conversation}/{seq}")),
        }
    }

    fn encoded(messages: &[Message], wire: Wire) -> Vec<Bytes> {
        messages
            .iter()
            .map(|m| {
                SharedFrame::new(ServerFrame::Message(m.clone()))
                    .bytes(wire)
                    .unwrap_or_default()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_batch_reaches_each_member_in_order_with_one_write_per_conversation() {
        let hub = ungated_hub();
        // User 1 writes directly; user 2 (both conversations) and 3 queue for a writer.
        let (one, one_out) = hub.new_session(user(1), Wire::WsPostcard);
        let socket = Arc::new(CountingSocket::default());
        one_out.write_directly(socket.clone());
        let (two, two_out) = hub.new_session(user(2), Wire::WsJson);
        let (three, three_out) = hub.new_session(user(3), Wire::Stream);
        for handle in [one, two, three] {
            hub.register(handle);
        }

        let batch = vec![message(7, 1), message(8, 1), message(7, 2), message(8, 2)];
        let (seven, eight) = (
            vec![batch[0].clone(), batch[2].clone()],
            vec![batch[1].clone(), batch[3].clone()],
        );
        hub.deliver(batch).await;

        assert_eq!(
            socket.writes.load(Ordering::Acquire),
            1,
            "one write for both"
        );
        let wire = socket
            .wire
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        assert_eq!(wire, encoded(&seven, Wire::WsPostcard).concat());
        assert_eq!(one_out.queued_bytes(), 0);

        let queued = |outbox: &Outbox| {
            let taken = futures_util::FutureExt::now_or_never(outbox.take(64));
            match taken {
                Some(crate::outbox::Taken::Frames(f)) => {
                    f.iter().map(|o| o.payload().clone()).collect::<Vec<_>>()
                }
                _ => Vec::new(),
            }
        };
        let mut want = encoded(&seven, Wire::WsJson);
        want.extend(encoded(&eight, Wire::WsJson));
        assert_eq!(
            queued(&two_out),
            want,
            "each conversation's messages in order"
        );
        assert_eq!(queued(&three_out), encoded(&eight, Wire::Stream));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_big_audience_split_across_workers_gets_every_frame_in_order() {
        let hub = ungated_hub();
        // One user with more devices than the split threshold; every other device
        // writes directly.
        let devices = devices(&hub, user(1), FANOUT_SPLIT + 44);
        let first = vec![message(7, 1), message(7, 2)];
        let second = vec![message(7, 3)];
        hub.deliver(first.clone()).await;
        hub.deliver(second.clone()).await;

        let want = encoded(&[first, second].concat(), Wire::WsPostcard).concat();
        for (outbox, socket) in &devices {
            assert_eq!(received(outbox, socket.as_ref()), want);
        }
    }

    /// What a session has received: written to its socket, or queued for its writer.
    fn received(outbox: &Outbox, socket: Option<&Arc<CountingSocket>>) -> Vec<u8> {
        let mut got = match socket {
            Some(socket) => socket
                .wire
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            None => Vec::new(),
        };
        if let Some(crate::outbox::Taken::Frames(f)) =
            futures_util::FutureExt::now_or_never(outbox.take(1024))
        {
            got.extend(f.iter().flat_map(|o| o.payload().to_vec()));
        }
        got
    }

    /// `n` sessions of `user`, every other one writing directly to a counting socket.
    fn devices(
        hub: &Hub,
        who: UserId,
        n: usize,
    ) -> Vec<(Arc<Outbox>, Option<Arc<CountingSocket>>)> {
        (0..n)
            .map(|i| {
                let (handle, outbox) = hub.new_session(who, Wire::WsPostcard);
                let socket = (i % 2 == 0).then(|| {
                    let socket = Arc::new(CountingSocket::default());
                    outbox.write_directly(socket.clone());
                    socket
                });
                hub.register(handle);
                (outbox, socket)
            })
            .collect()
    }

    #[tokio::test]
    async fn messages_committed_during_a_fan_out_join_it_in_order() {
        let hub = ungated_hub();
        // Conversation 7: user 1 (150 devices, one share) and user 2; 8: users 2, 3.
        let ones = devices(&hub, user(1), 150);
        let two = devices(&hub, user(2), 1).remove(0);
        // Committed while the first batch goes out (taken in after the first
        // FANOUT_YIELD sessions): 7/3 joins it; 8/1 waits, and so does 7/4,
        // committed after it.
        let (tx, mut rx) = mpsc::channel(8);
        for batch in [
            vec![message(7, 3)],
            vec![message(8, 1)],
            vec![message(7, 4)],
        ] {
            tx.send(batch).await.unwrap_or_else(|_| unreachable!());
        }
        hub.deliver_from(vec![message(7, 1), message(7, 2)], Some(&mut rx))
            .await;

        let seven: Vec<Message> = (1..=4).map(|seq| message(7, seq)).collect();
        let want = encoded(&seven, Wire::WsPostcard).concat();
        for (i, (outbox, socket)) in ones.iter().enumerate() {
            assert_eq!(
                received(outbox, socket.as_ref()),
                want,
                "all of 7, in order"
            );
            if let Some(socket) = socket {
                // Reached before 7/3 was taken in: 7/1-2, then 7/3 in one more pass,
                // then 7/4. Reached after: 7/1-3 in one write, then 7/4.
                let writes = if i < FANOUT_YIELD { 3 } else { 2 };
                assert_eq!(socket.writes.load(Ordering::Acquire), writes, "device {i}");
            }
        }
        let both = [&seven[..3], &[message(8, 1)][..], &seven[3..]].concat();
        assert_eq!(
            received(&two.0, two.1.as_ref()),
            encoded(&both, Wire::WsPostcard).concat(),
            "7/4 after 8/1, committed before it"
        );
        assert!(rx.try_recv().is_err(), "everything was taken");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_split_fan_out_taking_in_messages_keeps_every_session_in_order() {
        let hub = ungated_hub();
        // Two shares, each catching up with what the other takes in (or not, when
        // the other share finished first): every session gets everything in order.
        let ones = devices(&hub, user(1), FANOUT_SPLIT + 44);
        for round in 0..20u64 {
            let base = round * 6;
            let (tx, mut rx) = mpsc::channel(8);
            for seq in base + 3..=base + 6 {
                tx.send(vec![message(7, seq)])
                    .await
                    .unwrap_or_else(|_| unreachable!());
            }
            let first = vec![message(7, base + 1), message(7, base + 2)];
            hub.deliver_from(first, Some(&mut rx)).await;
            assert!(rx.try_recv().is_err(), "everything was taken");
        }
        let all: Vec<Message> = (1..=120).map(|seq| message(7, seq)).collect();
        let want = encoded(&all, Wire::WsPostcard).concat();
        for (outbox, socket) in &ones {
            assert_eq!(received(outbox, socket.as_ref()), want);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fan_out_takes_nothing_in_once_sessions_or_members_changed() {
        let store = Arc::new(NoStore::default());
        let hub = Arc::new(Hub::new(store.clone(), QueueLimits::default()));
        let ones = devices(&hub, user(1), 150);
        let (tx, mut rx) = mpsc::channel(8);
        tx.send(vec![message(7, 3)])
            .await
            .unwrap_or_else(|_| unreachable!());
        let fan_out = tokio::spawn({
            let hub = hub.clone();
            async move {
                hub.deliver_from(vec![message(7, 1), message(7, 2)], Some(&mut rx))
                    .await;
            }
        });
        // A device connects while the audience is looked up.
        while store.reads.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        let late = devices(&hub, user(1), 1).remove(0);
        store.gate.notify_one();
        fan_out.await.unwrap_or_else(|_| unreachable!());

        let want = encoded(
            &(1..=3).map(|s| message(7, s)).collect::<Vec<_>>(),
            Wire::WsPostcard,
        )
        .concat();
        assert_eq!(received(&late.0, late.1.as_ref()), want);
        for (outbox, socket) in &ones {
            assert_eq!(received(outbox, socket.as_ref()), want);
            if let Some(socket) = socket {
                assert_eq!(
                    socket.writes.load(Ordering::Acquire),
                    2,
                    "7/3 went out on its own, after the first fan-out"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_broadcast_to_a_big_audience_leaves_the_writing_to_the_writers() {
        let hub = Hub::new(Arc::new(NoStore::default()), QueueLimits::default());
        let frame = SharedFrame::new(ServerFrame::Ping(chat_proto::frame::Ping { nonce: 1 }));
        let connect = |n: usize| -> Vec<(Arc<Outbox>, Arc<CountingSocket>)> {
            (0..n)
                .map(|_| {
                    let (handle, outbox) = hub.new_session(user(1), Wire::WsPostcard);
                    let socket = Arc::new(CountingSocket::default());
                    outbox.write_directly(socket.clone());
                    hub.register(handle);
                    (outbox, socket)
                })
                .collect()
        };

        // A few sessions: written at once.
        let few = connect(3);
        assert_eq!(hub.broadcast(&[user(1)], &frame), 3);
        for (outbox, socket) in &few {
            assert_eq!(socket.writes.load(Ordering::Acquire), 1);
            assert_eq!(outbox.queued_bytes(), 0);
        }

        // Enough of them to split a fan-out: queued for each session's writer.
        let many = connect(FANOUT_SPLIT);
        assert_eq!(hub.broadcast(&[user(1)], &frame), FANOUT_SPLIT + 3);
        let size = frame.bytes(Wire::WsPostcard).map_or(0, |b| b.len());
        for (outbox, socket) in few.iter().chain(&many) {
            assert_eq!(outbox.queued_bytes(), size);
            assert!(
                socket.writes.load(Ordering::Acquire) <= 1,
                "not written here"
            );
        }
    }

    #[test]
    fn registration_tracks_first_and_last_session() {
        let hub = Hub::new(Arc::new(NoStore::default()), QueueLimits::default());
        let (a, _qa) = hub.new_session(user(1), Wire::WsJson);
        let (b, _qb) = hub.new_session(user(1), Wire::Stream);
        assert!(hub.register(a.clone()));
        assert!(!hub.register(b.clone()));
        assert!(hub.is_online(user(1)));
        assert!(!hub.unregister(user(1), a.id));
        assert!(hub.unregister(user(1), b.id));
        assert!(!hub.is_online(user(1)));
    }

    #[tokio::test]
    async fn a_lookup_that_raced_an_invalidation_is_not_cached() {
        let store = Arc::new(NoStore::default());
        let hub = Arc::new(Hub::new(store.clone(), QueueLimits::default()));
        let id = ConversationId::new(7).unwrap_or_else(|_| unreachable!());
        // The lookup reads the store while the membership changes and is invalidated.
        let lookup = tokio::spawn({
            let hub = hub.clone();
            async move { hub.conversation(id).await }
        });
        while store.reads.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        hub.invalidate(id);
        store.gate.notify_one();
        let first = lookup.await.ok().and_then(Result::ok).flatten();
        assert!(first.is_some_and(|c| c.has(user(1))));
        // Not cached: the next lookup reads the store again, and that one is cached.
        store.gate.notify_one();
        assert!(hub.conversation(id).await.is_ok_and(|c| c.is_some()));
        assert_eq!(store.reads.load(Ordering::Acquire), 2);
        assert!(hub.conversation(id).await.is_ok_and(|c| c.is_some()));
        assert_eq!(store.reads.load(Ordering::Acquire), 2);
    }

    /// A store for tests: membership reads wait for `gate` (unless `ungated`) and are
    /// counted; nothing else is ever used. Conversation 8 has users 2 and 3, every
    /// other one users 1 and 2.
    #[derive(Debug, Default)]
    struct NoStore {
        gate: Notify,
        reads: AtomicUsize,
        ungated: bool,
    }

    /// A hub whose store answers every membership read at once.
    fn ungated_hub() -> Hub {
        let store = Arc::new(NoStore {
            ungated: true,
            ..NoStore::default()
        });
        Hub::new(store, QueueLimits::default())
    }

    macro_rules! unused {
        ($($name:ident($($arg:ty),*) -> $ret:ty;)*) => {
            $(fn $name(&self, $(_: $arg),*) -> crate::store::StoreFuture<'_, $ret> {
                Box::pin(async { Err(StoreError::Closed) })
            })*
        };
    }

    impl Store for NoStore {
        fn backend(&self) -> &'static str {
            "none"
        }
        fn conversation_meta(
            &self,
            id: ConversationId,
        ) -> crate::store::StoreFuture<'_, Option<ConversationMeta>> {
            Box::pin(async move {
                self.reads.fetch_add(1, Ordering::AcqRel);
                if !self.ungated {
                    self.gate.notified().await;
                }
                let members = if id.get() == 8 {
                    vec![user(2), user(3)]
                } else {
                    vec![user(1), user(2)]
                };
                Ok(Some(ConversationMeta {
                    encrypted: false,
                    members,
                }))
            })
        }
        unused! {
            ping() -> ();
            probe_write() -> ();
            create_user(crate::store::NewUser) -> crate::store::User;
            user(UserId) -> Option<crate::store::User>;
            credentials(&str) -> Option<crate::store::Credentials>;
            search_users(&str, Option<&str>, u32) -> Vec<crate::store::User>;
            update_profile(UserId, Option<String>, Option<String>) -> Option<crate::store::User>;
            set_password(UserId, String) -> ();
            delete_user(UserId, chat_proto::ids::Timestamp) -> ();
            set_last_seen(UserId, chat_proto::ids::Timestamp) -> ();
            create_session(UserId, [u8; 32], chat_proto::ids::Timestamp, chat_proto::ids::Timestamp, &str) -> i64;
            rotate_refresh([u8; 32], [u8; 32], chat_proto::ids::Timestamp, chat_proto::ids::Timestamp) -> crate::store::Rotation;
            refresh_session([u8; 32]) -> Option<i64>;
            session_user(i64, UserId) -> Option<crate::store::User>;
            revoke_session(i64, chat_proto::ids::Timestamp) -> ();
            revoke_other_sessions(UserId, i64, chat_proto::ids::Timestamp) -> ();
            direct_conversation(UserId, UserId, bool, chat_proto::ids::Timestamp) -> (crate::store::Conversation, bool);
            add_device(UserId, chat_crypto::e2e::DevicePublicKey, String, chat_proto::ids::Timestamp) -> (crate::store::Device, bool);
            devices(UserId) -> Vec<crate::store::Device>;
            conversation_devices(ConversationId) -> Vec<crate::store::Device>;
            remove_device(UserId, chat_crypto::e2e::DeviceId) -> bool;
            share_conversation(UserId, UserId) -> bool;
            create_group(UserId, String, Vec<UserId>, bool, chat_proto::ids::Timestamp) -> crate::store::Conversation;
            conversation(ConversationId, UserId) -> Option<crate::store::Conversation>;
            conversations(UserId) -> Vec<crate::store::ConversationSummary>;
            heads(UserId) -> Vec<chat_proto::frame::Cursor>;
            member_ids(ConversationId) -> Vec<UserId>;
            add_member(ConversationId, UserId, crate::store::Role, chat_proto::ids::Timestamp) -> bool;
            remove_member(ConversationId, UserId) -> bool;
            history(ConversationId, Option<chat_proto::ids::Seq>, u32) -> (Vec<Message>, bool);
            messages_after(ConversationId, chat_proto::ids::Seq, u32) -> (Vec<Message>, bool);
            mark_read(ConversationId, UserId, chat_proto::ids::Seq) -> Option<chat_proto::ids::Seq>;
            append_batch(Vec<crate::store::NewMessage>) -> Vec<crate::store::Appended>;
        }
    }
}
