//! The cluster bus: several nodes behind a load balancer share one PostgreSQL database
//! (the source of truth, which assigns every sequence number, so order holds across
//! nodes) and one Redis pub/sub channel. On it each node publishes what the others'
//! sessions need and cannot learn from the database in time: frames to fan out
//! (committed messages, typing, receipts, membership changes, presence), membership
//! cache invalidations, and which users have sessions on it.
//!
//! Pub/sub is best effort; nothing acknowledged depends on it. A node keeps what it
//! could not publish (bounded) and publishes it once Redis is back. When that backlog
//! overflowed, or when the node's own subscription was interrupted (it may have missed
//! what others published meanwhile), the affected sessions are asked to reconnect
//! (`go_away`) and their clients fill any gap from storage by resuming.
//!
//! Presence: every node tracks which users have sessions on which other node (from
//! `Online`/`Offline` events, a `Snapshot` each node sends when another says `Hello`,
//! and `Alive` heartbeats; a node silent for [`NODE_TIMEOUT`] is dropped with its users).
//! A user is online while any node has a session of theirs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chat_proto::codec;
use chat_proto::frame::ServerFrame;
use chat_proto::ids::{ConversationId, Timestamp, UserId};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::hub::{Hub, SharedFrame};

/// Version of the bus message format; nodes ignore messages of another version.
const BUS_VERSION: u8 = 1;
/// How often a node says it is alive.
pub const ALIVE_EVERY: Duration = Duration::from_secs(2);
/// A node not heard from for this long is considered gone, with its users' sessions.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of unpublished bus messages kept while Redis is unreachable.
const MAX_BACKLOG_BYTES: usize = 64 * 1024 * 1024;
/// Messages handed to the publisher and not yet taken by it.
const PUBLISH_QUEUE: usize = 65_536;
/// Messages published in one pipelined round trip at most.
const PUBLISH_BATCH: usize = 512;
/// Largest bus message accepted.
const MAX_BUS_MESSAGE: usize = 16 * 1024 * 1024;
/// Longest wait for one Redis operation.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// What travels on the bus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Queue this frame (postcard) on every session of these users.
    Fanout {
        /// Recipients.
        users: Vec<UserId>,
        /// A postcard-encoded server frame.
        frame: Vec<u8>,
    },
    /// A conversation's membership changed: drop it from the membership cache.
    Invalidate {
        /// The conversation.
        conversation: ConversationId,
    },
    /// The sender node has a first session of this user.
    Online {
        /// The user.
        user: UserId,
    },
    /// The sender node's last session of this user ended.
    Offline {
        /// The user.
        user: UserId,
    },
    /// The sender node (re)joined: everyone answers with a snapshot.
    Hello,
    /// Every user with a session on the sender node.
    Snapshot {
        /// The users.
        users: Vec<UserId>,
    },
    /// The sender node is alive.
    Alive,
    /// The sender node lost bus messages: every node's sessions should resume.
    Resync,
    /// People came to share a conversation: each node tells its own sessions among
    /// them who of the others is online (see [`Hub::introduce`]).
    Introduce {
        /// Who joined.
        newcomers: Vec<UserId>,
        /// Everyone in the conversation.
        members: Vec<UserId>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    version: u8,
    node: u64,
    /// Microseconds since the Unix epoch when it was published, for the lag metric.
    sent_at_us: u64,
    event: Event,
}

impl Envelope {
    /// `event` from `node`, stamped now, in its wire form.
    fn encode(node: u64, event: Event) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(&Envelope {
            version: BUS_VERSION,
            node,
            sent_at_us: now_us(),
            event,
        })
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Which users have sessions on which other nodes.
#[derive(Debug, Default)]
struct Roster {
    /// Per other node: when it was last heard from, and its users.
    nodes: HashMap<u64, (Instant, HashSet<UserId>)>,
    /// Per user: the other nodes they have sessions on.
    users: HashMap<UserId, HashSet<u64>>,
    /// Users whose last session here ended while they still had sessions elsewhere: if
    /// those end too, this node announces the user offline (so that two nodes losing
    /// the user's last sessions at once still announce it).
    left_here: HashSet<UserId>,
}

impl Roster {
    fn heard(&mut self, node: u64, now: Instant) {
        self.nodes
            .entry(node)
            .or_insert_with(|| (now, HashSet::new()))
            .0 = now;
    }

    fn add(&mut self, node: u64, user: UserId, now: Instant) {
        self.heard(node, now);
        if let Some((_, users)) = self.nodes.get_mut(&node) {
            users.insert(user);
        }
        self.users.entry(user).or_default().insert(node);
    }

    /// Removes `user` from `node`; true if the user has no other node left.
    fn remove(&mut self, node: u64, user: UserId, now: Instant) -> bool {
        self.heard(node, now);
        if let Some((_, users)) = self.nodes.get_mut(&node) {
            users.remove(&user);
        }
        self.drop_user_node(user, node)
    }

    fn drop_user_node(&mut self, user: UserId, node: u64) -> bool {
        match self.users.get_mut(&user) {
            Some(nodes) => {
                nodes.remove(&node);
                if nodes.is_empty() {
                    self.users.remove(&user);
                    true
                } else {
                    false
                }
            }
            None => true,
        }
    }

    /// Replaces what is known of `node`; returns the users it no longer has.
    fn replace(&mut self, node: u64, users: Vec<UserId>, now: Instant) -> Vec<UserId> {
        let new: HashSet<UserId> = users.into_iter().collect();
        let old = self
            .nodes
            .insert(node, (now, new.clone()))
            .map(|(_, users)| users)
            .unwrap_or_default();
        for &user in &new {
            self.users.entry(user).or_default().insert(node);
        }
        old.difference(&new)
            .copied()
            .filter(|&user| self.drop_user_node(user, node))
            .collect()
    }

    /// Forgets nodes silent since before `cutoff`; returns how many, and the users left
    /// on no node.
    fn expire(&mut self, cutoff: Instant) -> (usize, Vec<UserId>) {
        let dead: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, (heard, _))| *heard < cutoff)
            .map(|(&node, _)| node)
            .collect();
        let mut gone = Vec::new();
        let count = dead.len();
        for node in dead {
            tracing::warn!(
                node = format_args!("{node:016x}"),
                "cluster node went silent; dropping its sessions"
            );
            if let Some((_, users)) = self.nodes.remove(&node) {
                gone.extend(users.into_iter().filter(|&u| self.drop_user_node(u, node)));
            }
        }
        (count, gone)
    }
}

/// This node's end of the cluster bus.
#[derive(Debug)]
pub struct Bus {
    node: u64,
    tx: mpsc::Sender<Vec<u8>>,
    roster: Mutex<Roster>,
    /// A message could not even be queued for publishing.
    dropped: AtomicBool,
    /// Messages queued and not yet published.
    unpublished: Arc<AtomicUsize>,
    /// Whether the subscription is up (what this node hears from the others).
    connected: AtomicBool,
    /// The bus's tasks, stopped by [`Bus::shutdown`].
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Bus {
    /// This node's id on the bus (random per process).
    pub fn node(&self) -> u64 {
        self.node
    }

    /// Publishes an event (queued; the publisher task sends it in order).
    pub fn publish(&self, event: Event) {
        let bytes = match Envelope::encode(self.node, event) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(error = %e, "encoding a bus message failed");
                return;
            }
        };
        self.unpublished.fetch_add(1, Ordering::AcqRel);
        if self.tx.try_send(bytes).is_err() {
            self.unpublished.fetch_sub(1, Ordering::AcqRel);
            self.dropped.store(true, Ordering::Release);
            metrics::counter!(crate::metrics::BUS_DROPPED).increment(1);
        }
    }

    /// Whether this node hears the other nodes (its subscription is up).
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Whether another node has a session of `user`.
    pub fn is_remote(&self, user: UserId) -> bool {
        self.roster().users.contains_key(&user)
    }

    /// The last session of `user` here ended; true if the user is offline everywhere.
    /// Otherwise remembers it, so that this node announces the user offline if their
    /// sessions elsewhere end before it hears of a new one here.
    pub fn went_offline_here(&self, user: UserId) -> bool {
        let mut roster = self.roster();
        if roster.users.contains_key(&user) {
            roster.left_here.insert(user);
            false
        } else {
            true
        }
    }

    /// Publishes what is queued (waiting at most `timeout`), then leaves the bus.
    pub async fn shutdown(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.unpublished.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.abort();
        }
    }

    fn roster(&self) -> std::sync::MutexGuard<'_, Roster> {
        self.roster.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl crate::hub::Peers for Bus {
    fn came_online(&self, user: UserId) -> bool {
        self.publish(Event::Online { user });
        !self.is_remote(user)
    }

    fn went_offline(&self, user: UserId) -> bool {
        self.publish(Event::Offline { user });
        self.went_offline_here(user)
    }

    fn is_remote(&self, user: UserId) -> bool {
        Bus::is_remote(self, user)
    }

    fn fanout(&self, users: &[UserId], frame: bytes::Bytes) {
        self.publish(Event::Fanout {
            users: users.to_vec(),
            frame: frame.to_vec(),
        });
    }

    fn invalidate(&self, conversation: ConversationId) {
        self.publish(Event::Invalidate { conversation });
    }

    fn introduce(&self, newcomers: &[UserId], members: &[UserId]) {
        self.publish(Event::Introduce {
            newcomers: newcomers.to_vec(),
            members: members.to_vec(),
        });
    }

    fn is_connected(&self) -> bool {
        Bus::is_connected(self)
    }
}

/// Why the cluster bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The Redis URL is not valid.
    #[error("invalid Redis URL: {0}")]
    Url(#[from] redis::RedisError),
}

/// Joins the cluster on `channel` of the Redis at `url`: attaches a bus to `hub` and
/// starts its tasks. Connecting happens in the background (with retries), so a node
/// starts while Redis is still coming up.
pub fn start(url: &str, channel: &str, hub: Arc<Hub>) -> Result<Arc<Bus>, BusError> {
    let client = redis::Client::open(url)?;
    let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
    let bus = Arc::new(Bus {
        node: rand::random(),
        tx,
        roster: Mutex::new(Roster::default()),
        dropped: AtomicBool::new(false),
        unpublished: Arc::new(AtomicUsize::new(0)),
        connected: AtomicBool::new(false),
        tasks: Mutex::new(Vec::new()),
    });
    hub.attach_peers(bus.clone());
    tracing::info!(
        node = format_args!("{:016x}", bus.node),
        channel,
        "joining the cluster bus"
    );
    let channel: Arc<str> = channel.into();
    let tasks = vec![
        tokio::spawn(publisher(client.clone(), channel.clone(), rx, bus.clone())),
        tokio::spawn(subscriber(client, channel, hub.clone(), bus.clone())),
        tokio::spawn(heartbeat(hub, bus.clone())),
    ];
    *bus.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
    Ok(bus)
}

/// Jittered exponential backoff between reconnect attempts.
fn backoff(attempt: u32) -> Duration {
    let ceiling = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    Duration::from_millis(ceiling / 2 + rand::random::<u64>() % (ceiling / 2 + 1))
}

/// Publishes queued messages in order, in pipelined batches; keeps them while Redis is
/// unreachable, and asks everyone to resync if it had to drop any.
async fn publisher(
    client: redis::Client,
    channel: Arc<str>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    bus: Arc<Bus>,
) {
    let mut backlog: VecDeque<Vec<u8>> = VecDeque::new();
    let mut backlog_bytes = 0usize;
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut attempt = 0u32;
    let mut lost = false;
    let keep = |backlog: &mut VecDeque<Vec<u8>>, bytes: &mut usize, m: Vec<u8>, lost: &mut bool| {
        *bytes += m.len();
        backlog.push_back(m);
        while *bytes > MAX_BACKLOG_BYTES {
            if let Some(old) = backlog.pop_front() {
                *bytes -= old.len();
                bus.unpublished.fetch_sub(1, Ordering::AcqRel);
                metrics::counter!(crate::metrics::BUS_DROPPED).increment(1);
                *lost = true;
            } else {
                break;
            }
        }
    };
    loop {
        if backlog.is_empty() {
            match rx.recv().await {
                Some(m) => keep(&mut backlog, &mut backlog_bytes, m, &mut lost),
                None => return,
            }
        }
        while backlog.len() < PUBLISH_BATCH {
            match rx.try_recv() {
                Ok(m) => keep(&mut backlog, &mut backlog_bytes, m, &mut lost),
                Err(_) => break,
            }
        }
        let Some(c) = conn.as_mut() else {
            match tokio::time::timeout(REDIS_TIMEOUT, client.get_multiplexed_async_connection())
                .await
            {
                Ok(Ok(c)) => {
                    conn = Some(c);
                    attempt = 0;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, queued = backlog.len(), "cluster bus: cannot connect to Redis to publish");
                    wait_keeping(&mut rx, backoff(attempt), |m| {
                        keep(&mut backlog, &mut backlog_bytes, m, &mut lost)
                    })
                    .await;
                    attempt += 1;
                }
                Err(_) => {
                    tracing::warn!(
                        queued = backlog.len(),
                        "cluster bus: connecting to Redis timed out"
                    );
                    attempt += 1;
                }
            }
            continue;
        };
        if lost || bus.dropped.swap(false, Ordering::AcqRel) {
            lost = true;
            if let Ok(bytes) = Envelope::encode(bus.node, Event::Resync) {
                let sent: Result<Result<(), _>, _> = tokio::time::timeout(
                    REDIS_TIMEOUT,
                    redis::cmd("PUBLISH")
                        .arg(&*channel)
                        .arg(bytes)
                        .query_async(c),
                )
                .await;
                if matches!(sent, Ok(Ok(()))) {
                    tracing::warn!("cluster bus: messages were lost; every node's sessions resume");
                    lost = false;
                }
            }
        }
        let n = backlog.len().min(PUBLISH_BATCH);
        let mut pipe = redis::pipe();
        for m in backlog.iter().take(n) {
            pipe.cmd("PUBLISH").arg(&*channel).arg(&m[..]).ignore();
        }
        let result: Result<Result<(), redis::RedisError>, _> =
            tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(c)).await;
        match result {
            Ok(Ok(())) => {
                for m in backlog.drain(..n) {
                    backlog_bytes -= m.len();
                }
                bus.unpublished.fetch_sub(n, Ordering::AcqRel);
                metrics::counter!(crate::metrics::BUS_PUBLISHED).increment(n as u64);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, queued = backlog.len(), "cluster bus: publishing failed; will retry");
                conn = None;
            }
            Err(_) => {
                tracing::warn!(
                    queued = backlog.len(),
                    "cluster bus: publishing timed out; will retry"
                );
                conn = None;
            }
        }
    }
}

/// Sleeps for `pause` while still taking messages off the queue (so publishers never
/// block and the backlog bound applies).
async fn wait_keeping(
    rx: &mut mpsc::Receiver<Vec<u8>>,
    pause: Duration,
    mut keep: impl FnMut(Vec<u8>),
) {
    let sleep = tokio::time::sleep(pause);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return,
            m = rx.recv() => match m {
                Some(m) => keep(m),
                None => return,
            },
        }
    }
}

/// Receives what other nodes publish and applies it here; resubscribes after any
/// interruption, and then asks this node's sessions to resume (they may have missed
/// frames published meanwhile).
async fn subscriber(client: redis::Client, channel: Arc<str>, hub: Arc<Hub>, bus: Arc<Bus>) {
    let mut attempt = 0u32;
    let mut interrupted = false;
    loop {
        let subscribed = tokio::time::timeout(REDIS_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&*channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let pubsub = match subscribed {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cluster bus: cannot subscribe; retrying");
                interrupted = true;
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            Err(_) => {
                tracing::warn!("cluster bus: subscribing timed out; retrying");
                interrupted = true;
                attempt += 1;
                continue;
            }
        };
        attempt = 0;
        metrics::gauge!(crate::metrics::BUS_CONNECTED).set(1.0);
        bus.connected.store(true, Ordering::Release);
        tracing::info!("cluster bus: subscribed");
        if interrupted {
            hub.resync();
        }
        bus.publish(Event::Hello);
        bus.publish(Event::Snapshot {
            users: hub.local_users(),
        });
        let mut messages = pubsub.into_on_message();
        // Our own `Alive` coming back proves the subscription works; without it for a
        // while, the connection is presumed dead even if the socket did not say so.
        let mut own_echo = Instant::now();
        let mut check = tokio::time::interval(ALIVE_EVERY);
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(m) => {
                        let payload = m.get_payload_bytes();
                        if let Some(own) = apply(&hub, &bus, payload).await
                            && own
                        {
                            own_echo = Instant::now();
                        }
                    }
                    None => break,
                },
                _ = check.tick() => {
                    if own_echo.elapsed() > NODE_TIMEOUT {
                        tracing::warn!("cluster bus: no echo of our own heartbeat; resubscribing");
                        break;
                    }
                }
            }
        }
        metrics::gauge!(crate::metrics::BUS_CONNECTED).set(0.0);
        bus.connected.store(false, Ordering::Release);
        tracing::warn!("cluster bus: subscription lost; resubscribing");
        interrupted = true;
        tokio::time::sleep(backoff(0)).await;
    }
}

/// Applies one bus message; `Some(true)` for this node's own heartbeat echo.
async fn apply(hub: &Arc<Hub>, bus: &Bus, payload: &[u8]) -> Option<bool> {
    if payload.len() > MAX_BUS_MESSAGE {
        tracing::warn!(
            len = payload.len(),
            "cluster bus: message too large; ignored"
        );
        return None;
    }
    let envelope: Envelope = match postcard::from_bytes(payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cluster bus: undecodable message; ignored");
            return None;
        }
    };
    if envelope.version != BUS_VERSION {
        return None;
    }
    if envelope.node == bus.node {
        return Some(envelope.event == Event::Alive);
    }
    let lag = now_us().saturating_sub(envelope.sent_at_us);
    metrics::histogram!(crate::metrics::BUS_LAG_SECONDS).record(lag as f64 / 1e6);
    let node = envelope.node;
    let now = Instant::now();
    // Any message says its node is alive.
    bus.roster().heard(node, now);
    match envelope.event {
        Event::Fanout { users, frame } => match codec::decode_postcard::<ServerFrame>(&frame) {
            Ok(frame) => {
                let is_message = matches!(frame, ServerFrame::Entry(_) | ServerFrame::Message(_));
                if let ServerFrame::Entry(e) = &frame {
                    hub.note_seen(e.conversation, e.seq);
                }
                let queued = hub.send_to_users(&users, &SharedFrame::new(frame), None);
                if is_message {
                    metrics::counter!(crate::metrics::MESSAGES_DELIVERED).increment(queued as u64);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cluster bus: undecodable frame; ignored"),
        },
        Event::Invalidate { conversation } => {
            hub.invalidate(conversation);
        }
        Event::Online { user } => {
            let mut roster = bus.roster();
            roster.add(node, user, now);
            roster.left_here.remove(&user);
        }
        Event::Offline { user } => {
            let announce = {
                let mut roster = bus.roster();
                roster.remove(node, user, now) && roster.left_here.remove(&user)
            };
            if announce && !hub.is_local(user) {
                hub.announce_offline(user, Timestamp::now(), true).await;
            }
        }
        Event::Hello => {
            bus.publish(Event::Snapshot {
                users: hub.local_users(),
            });
        }
        Event::Snapshot { users } => {
            let gone = bus.roster().replace(node, users, now);
            offline_here(hub, gone).await;
        }
        Event::Alive => {}
        Event::Introduce { newcomers, members } => {
            hub.introduce_here(&newcomers, &members);
        }
        Event::Resync => {
            tracing::warn!(
                node = format_args!("{node:016x}"),
                "cluster bus: a node lost messages; sessions here resume"
            );
            hub.resync();
        }
    }
    Some(false)
}

/// Tells this node's sessions that users left on no node are offline. Every node
/// reaches this conclusion on its own (a node went silent), so each tells only its own.
async fn offline_here(hub: &Hub, users: Vec<UserId>) {
    let now = Timestamp::now();
    for user in users {
        if !hub.is_local(user) {
            hub.announce_offline(user, now, false).await;
        }
    }
}

/// Says this node is alive, and forgets nodes that stopped saying so.
async fn heartbeat(hub: Arc<Hub>, bus: Arc<Bus>) {
    let mut tick = tokio::time::interval(ALIVE_EVERY);
    loop {
        tick.tick().await;
        bus.publish(Event::Alive);
        let Some(cutoff) = Instant::now().checked_sub(NODE_TIMEOUT) else {
            continue;
        };
        let (nodes, gone) = bus.roster().expire(cutoff);
        offline_here(&hub, gone).await;
        if nodes > 0 {
            // It may have committed entries it never published.
            let hub = hub.clone();
            tokio::spawn(async move { hub.catch_up().await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u64) -> UserId {
        UserId::new(n).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn events_round_trip_through_the_envelope() {
        let envelope = Envelope {
            version: BUS_VERSION,
            node: 7,
            sent_at_us: 42,
            event: Event::Fanout {
                users: vec![user(1), user(2)],
                frame: vec![6, 7],
            },
        };
        let bytes = postcard::to_stdvec(&envelope).unwrap_or_default();
        let back: Envelope = postcard::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((back.node, back.event), (7, envelope.event));
    }

    #[test]
    fn the_roster_knows_who_is_on_which_node() {
        let t0 = Instant::now();
        let mut r = Roster::default();
        r.add(1, user(10), t0);
        r.add(2, user(10), t0);
        r.add(2, user(11), t0);
        assert!(!r.remove(1, user(10), t0), "still on node 2");
        assert!(r.users.contains_key(&user(10)));
        // A snapshot from node 2 without user 10: gone everywhere.
        assert_eq!(r.replace(2, vec![user(11)], t0), vec![user(10)]);
        assert!(!r.users.contains_key(&user(10)));
        // Node 2 goes silent: user 11 is gone with it; node 1, heard later, stays.
        r.heard(1, t0 + Duration::from_secs(20));
        assert_eq!(r.expire(t0 + Duration::from_secs(5)), (1, vec![user(11)]));
        assert!(r.users.is_empty());
        assert!(r.nodes.contains_key(&1) && !r.nodes.contains_key(&2));
    }
}
