//! The sessions of this node: registering, looking up, and pushing frames to them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chat_proto::frame::ServerFrame;
use chat_proto::ids::UserId;
use chat_proto::limits::MAX_DATAGRAM;

use crate::outbox::Outbox;
use crate::wire::{Datagrams, Outbound, QueueLimits, Wire};

use super::fanout::FANOUT_SPLIT;
use super::{Hub, SharedFrame, View};

/// The hub's view of one live session.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    /// Unique per process.
    pub id: u64,
    /// Its user.
    pub user: UserId,
    /// Its wire encoding.
    pub wire: Wire,
    /// The form in which it reads log entries, by its protocol version.
    pub view: View,
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
                view: View::Entries,
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
        match frame.bytes_for(self.wire, self.view) {
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
        match frame.bytes_for(self.wire, self.view) {
            Some(bytes) => self.outbox.enqueue(Outbound::Frame(bytes)),
            None => false,
        }
    }

    /// Queues a frame for this session alone.
    pub fn push_frame(&self, frame: &ServerFrame) -> bool {
        self.push_shared(&SharedFrame::new(frame.clone()))
    }
}

impl Hub {
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

    /// Live sessions in total.
    pub fn session_count(&self) -> usize {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Queues a frame on every session of the given users on every node: here
    /// directly, elsewhere through the cluster bus. Returns how many sessions here got it.
    pub fn broadcast(&self, users: &[UserId], frame: &SharedFrame) -> usize {
        let queued = self.send_to_users(users, frame, None);
        self.publish_fanout(users, frame);
        queued
    }

    /// Hands a frame for `users` to the other nodes, if this node is in a cluster.
    pub(super) fn publish_fanout(&self, users: &[UserId], frame: &SharedFrame) {
        if let Some(peers) = self.peers()
            && !users.is_empty()
            && let Some(bytes) = frame.bytes(Wire::WsPostcard)
        {
            peers.fanout(users, bytes);
        }
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
    pub(super) fn local_sessions(&self, users: &[UserId]) -> Vec<SessionHandle> {
        let sessions = self.sessions.read().unwrap_or_else(|p| p.into_inner());
        users
            .iter()
            .filter_map(|user| sessions.get(user))
            .flatten()
            .cloned()
            .collect()
    }
}
