//! The client side of the protocol as a sans-IO state machine (PROTOCOL.md §9.1).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::body::Body;
use crate::entry::{Entry, Relation};
use crate::error::ErrorCode;
use crate::frame::{
    Ack, ClientFrame, Cursor, EntryPage, Error, GoAway, Hello, History, MarkRead, Membership,
    MembershipChange, Page, Ping, Pong, Presence, Receipt, Relate, Send, ServerFrame, SetTyping,
    Sync, Typing, Welcome,
};
use crate::ids::{ClientMsgId, ConversationId, RequestId, Seq, UserId};
use crate::limits::{HANDSHAKE_TIMEOUT, HEARTBEAT_INTERVAL, IDLE_TIMEOUT, MAX_PAGE};
use crate::version::ProtocolVersion;

/// Settings of a [`ClientSession`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Sent in `hello` for the server's logs (at most 64 bytes).
    pub client_name: String,
    /// The highest version to announce.
    pub version: ProtocolVersion,
    /// How long to wait for `welcome` after `hello`.
    pub handshake_timeout: Duration,
    /// Out-of-order messages held per conversation while a gap is being filled; more
    /// are dropped and fetched again by `sync`.
    pub max_buffered: usize,
    /// Messages asked for per `sync` request.
    pub sync_page: u16,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            client_name: concat!("chat-proto/", env!("CARGO_PKG_VERSION")).to_owned(),
            version: ProtocolVersion::CURRENT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_buffered: 10_000,
            sync_page: MAX_PAGE,
        }
    }
}

/// Where the connection stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConnectionState {
    /// No transport; requests wait in the queue.
    Disconnected,
    /// `hello` sent, waiting for `welcome`.
    Handshaking,
    /// `welcome` received; the server is replaying missed messages.
    Replaying,
    /// Caught up; messages arrive live.
    Live,
    /// [`ClientSession::close`] was called; the session is finished.
    Closed,
}

/// A request the application made, as returned when it fails.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PendingKind {
    /// [`ClientSession::send`].
    Send {
        /// Target conversation.
        conversation: ConversationId,
        /// Idempotency key.
        client_msg_id: ClientMsgId,
        /// Content.
        body: Body,
    },
    /// [`ClientSession::relate`].
    Relate {
        /// Target conversation.
        conversation: ConversationId,
        /// Idempotency key.
        client_msg_id: ClientMsgId,
        /// What to add.
        relation: Relation,
    },
    /// [`ClientSession::history`].
    History {
        /// The conversation.
        conversation: ConversationId,
        /// Upper bound (exclusive).
        before: Option<Seq>,
        /// Page size.
        limit: u16,
    },
    /// [`ClientSession::mark_read`].
    MarkRead {
        /// The conversation.
        conversation: ConversationId,
        /// Last read position.
        seq: Seq,
    },
}

/// Why a request failed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RequestError {
    /// The server refused it.
    Server(Error),
    /// The session was closed before an answer came.
    Closed,
}

/// Why the connection ended. After any of these the application drops the transport,
/// and may call [`ClientSession::connect`] again on a new one.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DisconnectReason {
    /// The transport reported the end ([`ClientSession::transport_closed`]).
    Transport,
    /// No `welcome` within the handshake timeout.
    HandshakeTimeout,
    /// The server was silent past the idle timeout.
    IdleTimeout,
    /// The server sent a fatal error (`invalid_token` means: refresh and reconnect).
    Server(Error),
    /// The server broke the protocol.
    ProtocolViolation(String),
    /// [`ClientSession::close`] was called.
    Closed,
}

/// What the session tells the application.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event {
    /// The handshake completed.
    Connected(Welcome),
    /// The replay after the handshake is over; messages now arrive live.
    Live,
    /// An entry of a conversation's log (a message, or from protocol 1.3 on a relation
    /// to one), in seq order per conversation, each exactly once. From a server of an
    /// older version every entry is a message.
    Entry(Entry),
    /// A send or relation was committed by the server.
    Acked(Ack),
    /// The answer to [`ClientSession::history`], newest first.
    HistoryPage(EntryPage),
    /// A request without a payload answer (`mark_read`) succeeded.
    Done(RequestId),
    /// A request failed; sends that fail may be retried with the same idempotency key.
    RequestFailed {
        /// The request.
        request_id: RequestId,
        /// What it was.
        kind: PendingKind,
        /// Why it failed.
        error: RequestError,
    },
    /// Someone is typing.
    Typing(Typing),
    /// A contact came online or went offline.
    Presence(Presence),
    /// A member's read position advanced.
    Receipt(Receipt),
    /// Membership of a conversation changed.
    Membership(Membership),
    /// A non-fatal error not tied to a request (for logs).
    Notice(Error),
    /// The server is going away; reconnect after the suggested delay.
    GoAway(GoAway),
    /// The connection ended; queued and unanswered requests will be retried on the next
    /// connection.
    Disconnected(DisconnectReason),
}

/// A method was called in a state that does not allow it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("not allowed while the session is {0:?}")]
pub struct StateError(pub ConnectionState);

#[derive(Clone, Debug)]
enum Request {
    User(PendingKind),
    /// Internal gap filling; rebuilt from the cursor, never retried as such.
    Sync(ConversationId),
}

#[derive(Debug, Default)]
struct Track {
    /// Last message handed to the application (contiguous from the start).
    delivered: Seq,
    /// Newest seq known to exist.
    head: Seq,
    /// Entries received past a gap, waiting for it to fill.
    buffer: BTreeMap<Seq, Entry>,
    /// The sync request in flight, if any.
    syncing: Option<RequestId>,
    /// `head` when that sync request went out: every message up to it was committed
    /// before the server read the page, so a complete page shows all that still exist.
    sync_head: Seq,
}

impl Track {
    /// Hands `entry` to the application as the next one, then whatever buffered
    /// entries now follow it without a gap.
    fn hand_out(&mut self, entry: Entry, events: &mut VecDeque<Event>) {
        self.delivered = entry.seq;
        events.push_back(Event::Entry(entry));
        while let Some(next) = self.delivered.next()
            && let Some(buffered) = self.buffer.remove(&next)
        {
            self.delivered = next;
            events.push_back(Event::Entry(buffered));
        }
    }
}

/// The client's protocol state: feed it server frames, timestamps and application
/// requests; take client frames to transmit and events for the application.
///
/// Every request is idempotent on the wire (sends carry an idempotency key), so the
/// session re-sends unanswered requests after a reconnect, in their original order,
/// with their original request ids. Messages are handed out per conversation in seq
/// order, each exactly once, whatever the mix of replay, live delivery and gap filling.
///
/// ```
/// use std::time::Instant;
/// use chat_proto::prelude::*;
///
/// let mut session = ClientSession::new(ClientConfig::default());
/// session.connect("token".into(), Instant::now()).unwrap();
/// let hello = session.poll_transmit().unwrap();
/// assert_eq!(hello.kind(), "hello");
/// ```
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    state: ConnectionState,
    user: Option<UserId>,
    version: Option<ProtocolVersion>,
    next_request: u32,
    next_nonce: u32,
    /// Requests not yet sent on the current connection, in order.
    outbox: VecDeque<(RequestId, Request)>,
    /// Requests sent and not yet answered, by id (ids grow, so this is send order).
    in_flight: BTreeMap<RequestId, Request>,
    max_in_flight: usize,
    transmit: VecDeque<ClientFrame>,
    events: VecDeque<Event>,
    tracks: HashMap<ConversationId, Track>,
    /// The last seq handed out in conversations no longer tracked (left, removed or
    /// gone), so that a later return never hands out an old message a second time.
    retired: HashMap<ConversationId, Seq>,
    handshake_deadline: Option<Instant>,
    last_heard: Option<Instant>,
    ping_outstanding: bool,
    heartbeat: Duration,
    idle_timeout: Duration,
}

/// A page of an older server's messages as a page of entries.
fn entries_of(page: Page) -> EntryPage {
    EntryPage {
        request_id: page.request_id,
        conversation: page.conversation,
        entries: page.messages.into_iter().map(Entry::from_message).collect(),
        has_more: page.has_more,
    }
}

impl ClientSession {
    /// A disconnected session.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            state: ConnectionState::Disconnected,
            user: None,
            version: None,
            next_request: 1,
            next_nonce: 1,
            outbox: VecDeque::new(),
            in_flight: BTreeMap::new(),
            max_in_flight: 1,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            tracks: HashMap::new(),
            retired: HashMap::new(),
            handshake_deadline: None,
            last_heard: None,
            ping_outstanding: false,
            heartbeat: HEARTBEAT_INTERVAL,
            idle_timeout: IDLE_TIMEOUT,
        }
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// The authenticated user, once a handshake has completed.
    pub fn user(&self) -> Option<UserId> {
        self.user
    }

    /// The negotiated protocol version of the current or last connection.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Requests waiting to be sent or answered.
    pub fn pending_requests(&self) -> usize {
        self.outbox
            .iter()
            .filter(|(_, r)| matches!(r, Request::User(_)))
            .count()
            + self
                .in_flight
                .values()
                .filter(|r| matches!(r, Request::User(_)))
                .count()
    }

    /// Starts tracking a conversation from a position the application already has
    /// (for example restored from disk), so the next handshake resumes after it.
    pub fn track(&mut self, conversation: ConversationId, last_seen: Seq) {
        let track = Self::track_from(&mut self.tracks, &mut self.retired, conversation, Seq::ZERO);
        if last_seen > track.delivered {
            track.delivered = last_seen;
            track.head = track.head.max(last_seen);
            track.buffer = track
                .buffer
                .split_off(&Seq::new(last_seen.get() + 1).unwrap_or(last_seen));
        }
    }

    /// The last seq handed out per tracked conversation: persist these to resume after
    /// a restart.
    pub fn cursors(&self) -> Vec<Cursor> {
        let mut cursors: Vec<Cursor> = self
            .tracks
            .iter()
            .map(|(&conversation, t)| Cursor {
                conversation,
                seq: t.delivered,
            })
            .collect();
        cursors.sort_by_key(|c| c.conversation);
        cursors
    }

    /// Begins a handshake on a fresh transport: queues `hello` with the access token and
    /// the resume cursors.
    pub fn connect(&mut self, token: String, now: Instant) -> Result<(), StateError> {
        if self.state != ConnectionState::Disconnected {
            return Err(StateError(self.state));
        }
        let mut resume = self.cursors();
        resume.truncate(crate::limits::MAX_RESUME_CURSORS);
        self.transmit.clear();
        self.transmit.push_back(ClientFrame::Hello(Hello {
            version: self.config.version,
            token,
            client: self.config.client_name.clone(),
            resume,
        }));
        self.state = ConnectionState::Handshaking;
        self.handshake_deadline = Some(now + self.config.handshake_timeout);
        self.last_heard = Some(now);
        self.ping_outstanding = false;
        Ok(())
    }

    /// Queues a message. It is sent as soon as the connection allows, re-sent with the
    /// same idempotency key after reconnects until acknowledged, and answered by
    /// [`Event::Acked`] or [`Event::RequestFailed`].
    pub fn send(
        &mut self,
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
        body: Body,
    ) -> Result<RequestId, StateError> {
        self.request(PendingKind::Send {
            conversation,
            client_msg_id,
            body,
        })
    }

    /// Queues a relation: a reply, an edit, a deletion or a reaction (protocol 1.3).
    /// Like [`ClientSession::send`] it is re-sent with the same idempotency key until
    /// acknowledged, and answered by [`Event::Acked`] or [`Event::RequestFailed`]; a
    /// server of an older version refuses it (`unsupported_frame` as a failed request).
    pub fn relate(
        &mut self,
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
        relation: Relation,
    ) -> Result<RequestId, StateError> {
        self.request(PendingKind::Relate {
            conversation,
            client_msg_id,
            relation,
        })
    }

    /// Asks for up to `limit` entries older than `before` (newest first), answered by
    /// [`Event::HistoryPage`].
    pub fn history(
        &mut self,
        conversation: ConversationId,
        before: Option<Seq>,
        limit: u16,
    ) -> Result<RequestId, StateError> {
        self.request(PendingKind::History {
            conversation,
            before,
            limit,
        })
    }

    /// Records that the user has read up to `seq`, answered by [`Event::Done`].
    pub fn mark_read(
        &mut self,
        conversation: ConversationId,
        seq: Seq,
    ) -> Result<RequestId, StateError> {
        self.request(PendingKind::MarkRead { conversation, seq })
    }

    /// Shows or clears the typing indicator. Ephemeral: dropped unless connected.
    pub fn set_typing(&mut self, conversation: ConversationId, active: bool) -> bool {
        if matches!(
            self.state,
            ConnectionState::Replaying | ConnectionState::Live
        ) {
            self.transmit.push_back(ClientFrame::Typing(SetTyping {
                conversation,
                active,
            }));
            true
        } else {
            false
        }
    }

    /// Forgets a request: it is not sent (again) and its answer is ignored. A send
    /// already transmitted may still be committed.
    pub fn cancel(&mut self, request_id: RequestId) -> bool {
        let before = self.outbox.len();
        self.outbox.retain(|(id, _)| *id != request_id);
        self.outbox.len() != before || self.in_flight.remove(&request_id).is_some()
    }

    /// Takes the next frame to write to the transport.
    pub fn poll_transmit(&mut self) -> Option<ClientFrame> {
        self.transmit.pop_front()
    }

    /// Takes the next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`ClientSession::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ConnectionState::Handshaking => self.handshake_deadline,
            ConnectionState::Replaying | ConnectionState::Live => {
                let last = self.last_heard?;
                Some(if self.ping_outstanding {
                    last + self.idle_timeout
                } else {
                    last + self.heartbeat.min(self.idle_timeout)
                })
            }
            ConnectionState::Disconnected | ConnectionState::Closed => None,
        }
    }

    /// Advances timers: handshake deadline, heartbeat pings and the idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            ConnectionState::Handshaking => {
                if self.handshake_deadline.is_some_and(|d| now >= d) {
                    self.drop_connection(DisconnectReason::HandshakeTimeout);
                }
            }
            ConnectionState::Replaying | ConnectionState::Live => {
                let Some(last) = self.last_heard else { return };
                if now >= last + self.idle_timeout {
                    self.drop_connection(DisconnectReason::IdleTimeout);
                } else if !self.ping_outstanding && now >= last + self.heartbeat {
                    let nonce = self.next_nonce;
                    self.next_nonce = self.next_nonce.wrapping_add(1);
                    self.transmit.push_back(ClientFrame::Ping(Ping { nonce }));
                    self.ping_outstanding = true;
                }
            }
            ConnectionState::Disconnected | ConnectionState::Closed => {}
        }
    }

    /// The transport ended (closed, reset, or failed to connect). Unanswered requests
    /// go back to the queue for the next connection.
    pub fn transport_closed(&mut self) {
        if matches!(
            self.state,
            ConnectionState::Handshaking | ConnectionState::Replaying | ConnectionState::Live
        ) {
            self.drop_connection(DisconnectReason::Transport);
        }
    }

    /// Ends the session for good: every pending request fails with
    /// [`RequestError::Closed`].
    pub fn close(&mut self) {
        if self.state == ConnectionState::Closed {
            return;
        }
        self.state = ConnectionState::Closed;
        self.transmit.clear();
        let in_flight = std::mem::take(&mut self.in_flight);
        let outbox = std::mem::take(&mut self.outbox);
        for (request_id, request) in in_flight.into_iter().chain(outbox) {
            if let Request::User(kind) = request {
                self.events.push_back(Event::RequestFailed {
                    request_id,
                    kind,
                    error: RequestError::Closed,
                });
            }
        }
        self.events
            .push_back(Event::Disconnected(DisconnectReason::Closed));
    }

    /// Processes one frame from the server.
    pub fn handle(&mut self, frame: ServerFrame, now: Instant) {
        match self.state {
            ConnectionState::Disconnected | ConnectionState::Closed => return,
            ConnectionState::Handshaking => {
                self.last_heard = Some(now);
                match frame {
                    ServerFrame::Welcome(welcome) => self.on_welcome(welcome),
                    ServerFrame::Error(error) => {
                        self.drop_connection(DisconnectReason::Server(error))
                    }
                    ServerFrame::Ping(Ping { nonce }) => {
                        self.transmit.push_back(ClientFrame::Pong(Pong { nonce }))
                    }
                    ServerFrame::GoAway(g) => self.events.push_back(Event::GoAway(g)),
                    other => self.violation(format!("{} before welcome", other.kind())),
                }
                return;
            }
            ConnectionState::Replaying | ConnectionState::Live => {}
        }
        self.last_heard = Some(now);
        self.ping_outstanding = false;
        match frame {
            ServerFrame::Welcome(_) => self.violation("second welcome".into()),
            ServerFrame::Ack(ack) => {
                if let Some(Request::User(PendingKind::Send { .. } | PendingKind::Relate { .. })) =
                    self.take_answer(ack.request_id)
                {
                    self.events.push_back(Event::Acked(ack));
                }
            }
            ServerFrame::Message(message) => {
                let conversation = message.conversation;
                self.deliver(Entry::from_message(message));
                self.maybe_sync(conversation);
            }
            ServerFrame::Entry(entry) => {
                let conversation = entry.conversation;
                self.deliver(entry);
                self.maybe_sync(conversation);
            }
            ServerFrame::HistoryPage(page) => self.on_history_page(entries_of(page)),
            ServerFrame::Entries(page) => {
                // One frame answers both requests; the request id says which.
                match self.in_flight.get(&page.request_id) {
                    Some(Request::Sync(_)) => self.on_sync_page(page),
                    _ => self.on_history_page(page),
                }
            }
            ServerFrame::SyncPage(page) => self.on_sync_page(entries_of(page)),
            ServerFrame::ReplayDone(done) => {
                if self.state == ConnectionState::Replaying {
                    self.state = ConnectionState::Live;
                    self.events.push_back(Event::Live);
                    for conversation in done.truncated {
                        if let Some(t) = self.tracks.get_mut(&conversation) {
                            // The server has more than it replayed; sync will find out.
                            t.head = t.head.max(t.delivered.next().unwrap_or(t.delivered));
                        }
                    }
                    let mut gaps: Vec<ConversationId> = self.tracks.keys().copied().collect();
                    gaps.sort();
                    for conversation in gaps {
                        self.maybe_sync(conversation);
                    }
                }
            }
            ServerFrame::Typing(t) => self.events.push_back(Event::Typing(t)),
            ServerFrame::Presence(p) => self.events.push_back(Event::Presence(p)),
            ServerFrame::Receipt(r) => self.events.push_back(Event::Receipt(r)),
            ServerFrame::Membership(m) => {
                if Some(m.user) == self.user {
                    match m.change {
                        MembershipChange::Removed => self.retire(m.conversation),
                        // Everything in a conversation the user just joined is new to
                        // them, even what arrives only after a reconnect.
                        MembershipChange::Added => {
                            Self::track_from(
                                &mut self.tracks,
                                &mut self.retired,
                                m.conversation,
                                Seq::ZERO,
                            );
                        }
                    }
                }
                self.events.push_back(Event::Membership(m));
            }
            ServerFrame::Done(done) => {
                if let Some(Request::User(_)) = self.take_answer(done.request_id) {
                    self.events.push_back(Event::Done(done.request_id));
                }
            }
            ServerFrame::Error(error) => self.on_error(error),
            ServerFrame::Ping(Ping { nonce }) => {
                self.transmit.push_back(ClientFrame::Pong(Pong { nonce }))
            }
            ServerFrame::Pong(_) => {}
            ServerFrame::GoAway(g) => self.events.push_back(Event::GoAway(g)),
        }
        self.flush();
    }

    fn request(&mut self, kind: PendingKind) -> Result<RequestId, StateError> {
        if self.state == ConnectionState::Closed {
            return Err(StateError(self.state));
        }
        let id = self.next_request_id();
        self.outbox.push_back((id, Request::User(kind)));
        self.flush();
        Ok(id)
    }

    fn next_request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request = self.next_request.wrapping_add(1);
        id
    }

    /// Moves queued requests onto the wire while the in-flight window allows.
    fn flush(&mut self) {
        if !matches!(
            self.state,
            ConnectionState::Replaying | ConnectionState::Live
        ) {
            return;
        }
        while self.in_flight.len() < self.max_in_flight {
            let Some((id, request)) = self.outbox.pop_front() else {
                break;
            };
            if let Request::User(kind @ PendingKind::Relate { .. }) = &request
                && !self.version.is_some_and(ProtocolVersion::has_relations)
            {
                // The server would not know the frame: fail it here, with the answer
                // such a server gives.
                let version = self.version.unwrap_or(ProtocolVersion::CURRENT);
                self.events.push_back(Event::RequestFailed {
                    request_id: id,
                    kind: kind.clone(),
                    error: RequestError::Server(Error {
                        request_id: Some(id),
                        code: ErrorCode::UnsupportedFrame,
                        message: format!(
                            "the server speaks protocol {version}; relations need 1.3"
                        ),
                        retry_after_ms: None,
                    }),
                });
                continue;
            }
            let frame = match &request {
                Request::User(PendingKind::Send {
                    conversation,
                    client_msg_id,
                    body,
                }) => ClientFrame::Send(Send {
                    request_id: id,
                    conversation: *conversation,
                    client_msg_id: *client_msg_id,
                    body: body.clone(),
                }),
                Request::User(PendingKind::Relate {
                    conversation,
                    client_msg_id,
                    relation,
                }) => ClientFrame::Relate(Relate {
                    request_id: id,
                    conversation: *conversation,
                    client_msg_id: *client_msg_id,
                    relation: relation.clone(),
                }),
                Request::User(PendingKind::History {
                    conversation,
                    before,
                    limit,
                }) => ClientFrame::History(History {
                    request_id: id,
                    conversation: *conversation,
                    before: *before,
                    limit: *limit,
                }),
                Request::User(PendingKind::MarkRead { conversation, seq }) => {
                    ClientFrame::MarkRead(MarkRead {
                        request_id: id,
                        conversation: *conversation,
                        seq: *seq,
                    })
                }
                Request::Sync(conversation) => {
                    let Some(track) = self.tracks.get_mut(conversation) else {
                        continue;
                    };
                    track.sync_head = track.head;
                    ClientFrame::Sync(Sync {
                        request_id: id,
                        conversation: *conversation,
                        after: track.delivered,
                        limit: self.config.sync_page.max(1),
                    })
                }
            };
            self.transmit.push_back(frame);
            self.in_flight.insert(id, request);
        }
    }

    fn take_answer(&mut self, request_id: RequestId) -> Option<Request> {
        self.in_flight.remove(&request_id)
    }

    fn on_welcome(&mut self, welcome: Welcome) {
        if welcome.version.major != self.config.version.major
            || welcome.version.minor > self.config.version.minor
        {
            self.violation(format!(
                "server chose unsupported version {}",
                welcome.version
            ));
            return;
        }
        self.user = Some(welcome.user);
        self.version = Some(welcome.version);
        self.max_in_flight = (welcome.limits.max_in_flight as usize).max(1);
        self.heartbeat = Duration::from_millis(u64::from(welcome.limits.heartbeat_ms.max(1000)));
        self.idle_timeout =
            Duration::from_millis(u64::from(welcome.limits.idle_timeout_ms.max(2000)));
        self.handshake_deadline = None;
        let mut tracks = std::mem::take(&mut self.tracks);
        for head in &welcome.heads {
            // A conversation listed twice keeps the track the first listing moved.
            let known = tracks
                .remove(&head.conversation)
                .or_else(|| self.tracks.remove(&head.conversation));
            let mut track = match known {
                Some(track) => track,
                None => {
                    // A conversation the client did not track starts at its head: older
                    // messages are history, not missed messages.
                    let start = self.retired_floor(head.conversation).max(head.seq);
                    Track {
                        delivered: start,
                        head: start,
                        ..Track::default()
                    }
                }
            };
            track.head = track.head.max(head.seq);
            track.syncing = None;
            self.tracks.insert(head.conversation, track);
        }
        // Conversations missing from `heads` are ones the user no longer belongs to.
        for (conversation, track) in tracks {
            self.retired.insert(conversation, track.delivered);
        }
        self.state = ConnectionState::Replaying;
        self.events.push_back(Event::Connected(welcome));
        self.flush();
    }

    fn on_error(&mut self, error: Error) {
        let fatal = error.code.is_fatal().then(|| error.clone());
        let Some(request_id) = error.request_id else {
            if fatal.is_some() {
                self.drop_connection(DisconnectReason::Server(error));
            } else {
                self.events.push_back(Event::Notice(error));
            }
            return;
        };
        match self.take_answer(request_id) {
            Some(Request::User(kind)) => self.events.push_back(Event::RequestFailed {
                request_id,
                kind,
                error: RequestError::Server(error),
            }),
            Some(Request::Sync(conversation)) => {
                if error.code == ErrorCode::NotFound {
                    self.retire(conversation);
                } else if let Some(t) = self.tracks.get_mut(&conversation) {
                    // Retried at the next gap or reconnect.
                    t.syncing = None;
                }
            }
            None => {}
        }
        if let Some(error) = fatal {
            self.drop_connection(DisconnectReason::Server(error));
        }
    }

    fn on_history_page(&mut self, page: EntryPage) {
        if let Some(Request::User(PendingKind::History { .. })) = self.take_answer(page.request_id)
        {
            self.events.push_back(Event::HistoryPage(page));
        }
    }

    fn on_sync_page(&mut self, page: EntryPage) {
        let Some(Request::Sync(conversation)) = self.take_answer(page.request_id) else {
            return;
        };
        if conversation != page.conversation {
            self.violation("sync page for another conversation".into());
            return;
        }
        for entry in page.entries {
            if entry.conversation == conversation {
                self.deliver(entry);
            }
        }
        let Some(track) = self.tracks.get_mut(&conversation) else {
            return;
        };
        track.syncing = None;
        if !page.has_more {
            // Everything up to `sync_head` existed before the page was read, so what
            // the page lacks of it is gone: hand out the messages buffered up to
            // there rather than wait forever. Messages past it may be newer than the
            // page (committed after the read); they wait for the next sync.
            let known = track.sync_head;
            while let Some(entry) = track.buffer.first_entry()
                && *entry.key() <= known
            {
                let held = entry.remove();
                track.hand_out(held, &mut self.events);
            }
            if track.head <= known {
                // Nothing newer is known: the rest up to `head` is gone, stop asking.
                track.head = track.delivered;
            }
        }
        self.maybe_sync(conversation);
    }

    /// Hands out `entry` if it is the next one, buffers it past a gap, drops it if it
    /// was already handed out.
    fn deliver(&mut self, entry: Entry) {
        // First sight of a conversation after the handshake: start here.
        let start = Seq::new(entry.seq.get().saturating_sub(1)).unwrap_or(Seq::ZERO);
        let track = Self::track_from(
            &mut self.tracks,
            &mut self.retired,
            entry.conversation,
            start,
        );
        if entry.seq <= track.delivered || track.buffer.contains_key(&entry.seq) {
            return;
        }
        track.head = track.head.max(entry.seq);
        if track.delivered.next() == Some(entry.seq) {
            track.hand_out(entry, &mut self.events);
        } else if track.buffer.len() < self.config.max_buffered {
            track.buffer.insert(entry.seq, entry);
        }
    }

    /// The track of `conversation`, created at `start` (or past what was handed out
    /// before the conversation was retired) if there is none.
    fn track_from<'a>(
        tracks: &'a mut HashMap<ConversationId, Track>,
        retired: &mut HashMap<ConversationId, Seq>,
        conversation: ConversationId,
        start: Seq,
    ) -> &'a mut Track {
        // One lookup for a conversation already tracked, the common case per frame; a
        // conversation is never both tracked and retired.
        tracks.entry(conversation).or_insert_with(|| {
            let floor = retired.remove(&conversation).unwrap_or(Seq::ZERO);
            let start = start.max(floor);
            Track {
                delivered: start,
                head: start,
                ..Track::default()
            }
        })
    }

    fn retired_floor(&mut self, conversation: ConversationId) -> Seq {
        self.retired.remove(&conversation).unwrap_or(Seq::ZERO)
    }

    /// Stops tracking a conversation, remembering how far the application got.
    fn retire(&mut self, conversation: ConversationId) {
        if let Some(track) = self.tracks.remove(&conversation) {
            self.retired.insert(conversation, track.delivered);
        }
    }

    /// Asks for the missing messages of a conversation, once live and if none is asked.
    fn maybe_sync(&mut self, conversation: ConversationId) {
        if self.state != ConnectionState::Live {
            return;
        }
        let Some(track) = self.tracks.get_mut(&conversation) else {
            return;
        };
        if track.delivered >= track.head || track.syncing.is_some() {
            return;
        }
        let id = RequestId(self.next_request);
        self.next_request = self.next_request.wrapping_add(1);
        track.syncing = Some(id);
        self.outbox.push_front((id, Request::Sync(conversation)));
        self.flush();
    }

    fn violation(&mut self, what: String) {
        self.drop_connection(DisconnectReason::ProtocolViolation(what));
    }

    fn drop_connection(&mut self, reason: DisconnectReason) {
        self.state = ConnectionState::Disconnected;
        self.transmit.clear();
        self.handshake_deadline = None;
        self.ping_outstanding = false;
        // Unanswered requests go back to the front of the queue in their original
        // order; internal syncs are recomputed after the next handshake.
        let in_flight = std::mem::take(&mut self.in_flight);
        let mut requeue: Vec<(RequestId, Request)> = in_flight
            .into_iter()
            .filter(|(_, r)| matches!(r, Request::User(_)))
            .collect();
        self.outbox.retain(|(_, r)| matches!(r, Request::User(_)));
        requeue.extend(self.outbox.drain(..));
        self.outbox = requeue.into();
        for track in self.tracks.values_mut() {
            track.syncing = None;
        }
        self.events.push_back(Event::Disconnected(reason));
    }
}

impl Default for ClientSession {
    fn default() -> Self {
        Self::new(ClientConfig::default())
    }
}
