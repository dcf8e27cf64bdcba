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

mod catchup;
mod fanout;
mod frame;
mod membership;
mod presence;
mod rate;
mod registry;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use chat_proto::ids::{ConversationId, UserId};
use tokio::sync::watch;

use crate::store::Store;
use crate::wire::QueueLimits;

pub use frame::{SharedFrame, View};
pub use membership::CachedConversation;
use rate::Bucket;
pub use registry::SessionHandle;

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
    /// The newest seq this node's sessions have had, per conversation (see
    /// [`Hub::catch_up`]).
    seen: Mutex<catchup::Seen>,
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
            seen: Mutex::default(),
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
}

#[cfg(test)]
mod tests;
