//! The sans-IO client session, driven with no sockets: scenarios, and a randomized
//! model test that throws reconnects, duplicates and lost frames at it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use chat_proto::limits::ServerLimits;
use chat_proto::prelude::*;
use chat_proto::session::{DisconnectReason, PendingKind, RequestError};
use proptest::prelude::*;

fn conv(n: u64) -> ConversationId {
    ConversationId::new(n).expect("id")
}
fn user(n: u64) -> UserId {
    UserId::new(n).expect("id")
}
fn seq(n: u64) -> Seq {
    Seq::new(n).expect("seq")
}
fn key(n: u8) -> ClientMsgId {
    ClientMsgId::from_bytes([n; 16])
}

/// The server's welcome at `version`, with these conversation heads.
fn welcome(version: ProtocolVersion, heads: Vec<Cursor>) -> ServerFrame {
    ServerFrame::Welcome(Welcome {
        version,
        user: user(ME),
        server_time: Timestamp(0),
        limits: ServerLimits::default(),
        heads,
    })
}

const ME: u64 = 42;
const OTHER: u64 = 43;

/// A server that keeps conversations in memory and speaks the protocol by the book.
struct ModelServer {
    conversations: BTreeMap<ConversationId, Vec<Message>>,
    keys: HashMap<(UserId, ClientMsgId), Message>,
    next_id: u64,
    replay_limit: usize,
    limits: ServerLimits,
}

impl ModelServer {
    fn new(conversations: &[u64]) -> Self {
        Self {
            conversations: conversations
                .iter()
                .map(|&c| (conv(c), Vec::new()))
                .collect(),
            keys: HashMap::new(),
            next_id: 1,
            replay_limit: 3,
            limits: ServerLimits {
                max_in_flight: 4,
                ..ServerLimits::default()
            },
        }
    }

    fn append(
        &mut self,
        conversation: ConversationId,
        sender: UserId,
        k: ClientMsgId,
        text: &str,
    ) -> (Message, bool) {
        if let Some(existing) = self.keys.get(&(sender, k)) {
            return (existing.clone(), false);
        }
        let log = self
            .conversations
            .get_mut(&conversation)
            .expect("conversation");
        let message = Message {
            conversation,
            seq: seq(log.len() as u64 + 1),
            id: MessageId::new(self.next_id).expect("id"),
            sender,
            client_msg_id: k,
            sent_at: Timestamp(1_000 + self.next_id as i64),
            body: Body::Text(text.to_owned()),
        };
        self.next_id += 1;
        log.push(message.clone());
        self.keys.insert((sender, k), message.clone());
        (message, true)
    }

    fn heads(&self) -> Vec<Cursor> {
        self.conversations
            .iter()
            .map(|(&conversation, log)| Cursor {
                conversation,
                seq: seq(log.len() as u64),
            })
            .collect()
    }

    /// Answers one client frame; returns the frames for the client and, for a new
    /// message, the message to fan out live.
    fn handle(&mut self, frame: ClientFrame) -> (Vec<ServerFrame>, Option<Message>) {
        match frame {
            ClientFrame::Hello(hello) => {
                let mut out = vec![ServerFrame::Welcome(Welcome {
                    version: ProtocolVersion::CURRENT,
                    user: user(ME),
                    server_time: Timestamp(0),
                    limits: self.limits,
                    heads: self.heads(),
                })];
                let mut truncated = Vec::new();
                for cursor in hello.resume {
                    let Some(log) = self.conversations.get(&cursor.conversation) else {
                        continue;
                    };
                    let missing: Vec<_> =
                        log.iter().filter(|m| m.seq > cursor.seq).cloned().collect();
                    if missing.len() > self.replay_limit {
                        truncated.push(cursor.conversation);
                    }
                    out.extend(
                        missing
                            .into_iter()
                            .take(self.replay_limit)
                            .map(ServerFrame::Message),
                    );
                }
                out.push(ServerFrame::ReplayDone(ReplayDone { truncated }));
                (out, None)
            }
            ClientFrame::Send(send) => {
                let text = send.body.as_text().unwrap_or_default().to_owned();
                let (message, new) =
                    self.append(send.conversation, user(ME), send.client_msg_id, &text);
                let ack = ServerFrame::Ack(Ack {
                    request_id: send.request_id,
                    conversation: message.conversation,
                    id: message.id,
                    seq: message.seq,
                    sent_at: message.sent_at,
                });
                (vec![ack], new.then_some(message))
            }
            ClientFrame::Sync(sync) => {
                let log = &self.conversations[&sync.conversation];
                let after: Vec<_> = log.iter().filter(|m| m.seq > sync.after).cloned().collect();
                let has_more = after.len() > sync.limit as usize;
                let messages = after.into_iter().take(sync.limit as usize).collect();
                (
                    vec![ServerFrame::SyncPage(Page {
                        request_id: sync.request_id,
                        conversation: sync.conversation,
                        messages,
                        has_more,
                    })],
                    None,
                )
            }
            ClientFrame::History(h) => {
                let log = &self.conversations[&h.conversation];
                let mut older: Vec<_> = log
                    .iter()
                    .filter(|m| h.before.is_none_or(|b| m.seq < b))
                    .cloned()
                    .collect();
                older.reverse();
                let has_more = older.len() > h.limit as usize;
                older.truncate(h.limit as usize);
                (
                    vec![ServerFrame::HistoryPage(Page {
                        request_id: h.request_id,
                        conversation: h.conversation,
                        messages: older,
                        has_more,
                    })],
                    None,
                )
            }
            ClientFrame::MarkRead(m) => (
                vec![ServerFrame::Done(Done {
                    request_id: m.request_id,
                })],
                None,
            ),
            ClientFrame::Ping(p) => (vec![ServerFrame::Pong(Pong { nonce: p.nonce })], None),
            ClientFrame::Typing(_) | ClientFrame::Pong(_) | ClientFrame::Relate(_) => {
                (vec![], None)
            }
        }
    }
}

/// One client, one server, and the link between them.
struct Harness {
    server: ModelServer,
    client: ClientSession,
    up: bool,
    to_server: VecDeque<ClientFrame>,
    to_client: VecDeque<ServerFrame>,
    now: Instant,
    /// Messages handed to the application, per conversation.
    delivered: BTreeMap<ConversationId, Vec<Seq>>,
    acks: HashMap<RequestId, Vec<Ack>>,
    failed: Vec<RequestId>,
    sends: Vec<(RequestId, ClientMsgId)>,
    next_key: u8,
    other_key: u8,
}

impl Harness {
    fn new(conversations: &[u64], sync_page: u16) -> Self {
        let mut client = ClientSession::new(ClientConfig {
            sync_page,
            ..ClientConfig::default()
        });
        for &c in conversations {
            client.track(conv(c), Seq::ZERO);
        }
        Self {
            server: ModelServer::new(conversations),
            client,
            up: false,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            now: Instant::now(),
            delivered: BTreeMap::new(),
            acks: HashMap::new(),
            failed: Vec::new(),
            sends: Vec::new(),
            next_key: 1,
            other_key: 1,
        }
    }

    fn connect(&mut self) {
        if self.client.state() == ConnectionState::Disconnected {
            self.client
                .connect("token".into(), self.now)
                .expect("connects");
            self.up = true;
            self.to_server.clear();
            self.to_client.clear();
            self.pump_client();
        }
    }

    fn drop_link(&mut self) {
        self.up = false;
        self.to_server.clear();
        self.to_client.clear();
        self.client.transport_closed();
        self.pump_client();
    }

    /// Moves the client's output onto the link and checks its events.
    fn pump_client(&mut self) {
        while let Some(frame) = self.client.poll_transmit() {
            if self.up {
                self.to_server.push_back(frame);
            }
        }
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::Entry(m) => {
                    let seen = self.delivered.entry(m.conversation).or_default();
                    let expected = seen.last().map_or(seq(1), |s| s.next().expect("next"));
                    assert_eq!(
                        m.seq, expected,
                        "out of order or duplicate in {:?}",
                        m.conversation
                    );
                    seen.push(m.seq);
                }
                Event::Acked(ack) => self.acks.entry(ack.request_id).or_default().push(ack),
                Event::RequestFailed { request_id, .. } => self.failed.push(request_id),
                Event::Disconnected(_) => {
                    self.up = false;
                    self.to_server.clear();
                    self.to_client.clear();
                }
                _ => {}
            }
        }
    }

    fn client_send(&mut self, c: u64) {
        let k = key(self.next_key);
        self.next_key = self.next_key.wrapping_add(1).max(1);
        let id = self
            .client
            .send(conv(c), k, Body::Text("mine".into()))
            .expect("queued");
        self.sends.push((id, k));
        self.pump_client();
    }

    fn other_sends(&mut self, c: u64, lose_live: bool) {
        let k = ClientMsgId::from_bytes([
            0x80 | (self.other_key & 0x7f),
            0xee,
            self.other_key,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ]);
        self.other_key = self.other_key.wrapping_add(1);
        let (message, _) = self.server.append(conv(c), user(OTHER), k, "theirs");
        if self.up && !lose_live {
            self.to_client.push_back(ServerFrame::Message(message));
        }
    }

    fn deliver_to_server(&mut self, n: usize) {
        for _ in 0..n {
            let Some(frame) = self.to_server.pop_front() else {
                return;
            };
            let (replies, fan_out) = self.server.handle(frame);
            if self.up {
                self.to_client.extend(replies);
                if let Some(m) = fan_out {
                    self.to_client.push_back(ServerFrame::Message(m));
                }
            }
        }
    }

    fn deliver_to_client(&mut self, n: usize, duplicate: bool) {
        for _ in 0..n {
            let Some(frame) = self.to_client.pop_front() else {
                return;
            };
            if duplicate {
                self.client.handle(frame.clone(), self.now);
            }
            self.client.handle(frame, self.now);
            self.pump_client();
        }
    }

    fn settle(&mut self) {
        for _ in 0..10_000 {
            if self.client.state() == ConnectionState::Disconnected {
                self.connect();
            }
            if self.to_server.is_empty() && self.to_client.is_empty() {
                return;
            }
            self.deliver_to_server(usize::MAX);
            self.deliver_to_client(usize::MAX, false);
        }
        panic!("the conversation never settled");
    }

    /// After settling, the client has every message exactly once and every send was
    /// stored exactly once and acknowledged.
    fn check_complete(&self) {
        assert_eq!(self.client.state(), ConnectionState::Live);
        for (c, log) in &self.server.conversations {
            let want: Vec<Seq> = log.iter().map(|m| m.seq).collect();
            let got = self.delivered.get(c).cloned().unwrap_or_default();
            assert_eq!(got, want, "conversation {c:?}");
        }
        for (id, k) in &self.sends {
            let stored = self
                .server
                .conversations
                .values()
                .flatten()
                .filter(|m| m.sender == user(ME) && m.client_msg_id == *k)
                .count();
            assert_eq!(stored, 1, "send {id:?} stored {stored} times");
            let acks = self.acks.get(id).map_or(0, Vec::len);
            assert!(acks >= 1, "send {id:?} never acknowledged");
            // Every ack of one send names the same stored message.
            if let Some(list) = self.acks.get(id) {
                assert!(
                    list.iter()
                        .all(|a| a.id == list[0].id && a.seq == list[0].seq)
                );
            }
        }
        assert!(self.failed.is_empty());
        assert_eq!(self.client.pending_requests(), 0);
    }
}

#[derive(Debug, Clone)]
enum Op {
    ClientSends(u64),
    OtherSends(u64),
    OtherSendsLost(u64),
    ToServer(usize),
    ToClient(usize),
    ToClientDuplicated(usize),
    DropLink,
    Reconnect,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..=3).prop_map(Op::ClientSends),
        3 => (1u64..=3).prop_map(Op::OtherSends),
        1 => (1u64..=3).prop_map(Op::OtherSendsLost),
        4 => (1usize..4).prop_map(Op::ToServer),
        4 => (1usize..4).prop_map(Op::ToClient),
        1 => (1usize..3).prop_map(Op::ToClientDuplicated),
        1 => Just(Op::DropLink),
        2 => Just(Op::Reconnect),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the interleaving of sends, losses, duplicates and reconnects, the
    /// application sees every message once, in order, and every send is stored once.
    #[test]
    fn exactly_once_in_order_under_any_interleaving(ops in proptest::collection::vec(op(), 0..120)) {
        let mut h = Harness::new(&[1, 2, 3], 2);
        h.connect();
        for op in ops {
            match op {
                Op::ClientSends(c) => h.client_send(c),
                Op::OtherSends(c) => h.other_sends(c, false),
                Op::OtherSendsLost(c) => h.other_sends(c, true),
                Op::ToServer(n) => h.deliver_to_server(n),
                Op::ToClient(n) => h.deliver_to_client(n, false),
                Op::ToClientDuplicated(n) => h.deliver_to_client(n, true),
                Op::DropLink => h.drop_link(),
                Op::Reconnect => h.connect(),
            }
        }
        h.settle();
        // A message lost at the very end of a quiet conversation is noticed with the
        // next message there (or at the next reconnect): send one everywhere.
        for c in 1..=3 {
            h.other_sends(c, false);
        }
        h.settle();
        h.check_complete();
    }
}

#[test]
fn handshake_replay_then_live() {
    let mut h = Harness::new(&[1, 2], 50);
    for _ in 0..5 {
        h.other_sends(1, false);
    }
    h.connect();
    assert_eq!(h.client.state(), ConnectionState::Handshaking);
    let hello = h.to_server.front().cloned();
    let Some(ClientFrame::Hello(hello)) = hello else {
        panic!("hello first")
    };
    assert_eq!(hello.resume.len(), 2);
    h.settle();
    // Three replayed, the rest fetched by sync because the replay was truncated.
    assert_eq!(h.delivered[&conv(1)].len(), 5);
    assert_eq!(h.client.state(), ConnectionState::Live);
    h.client_send(2);
    h.settle();
    h.check_complete();
    assert_eq!(
        h.client.cursors(),
        vec![
            Cursor {
                conversation: conv(1),
                seq: seq(5)
            },
            Cursor {
                conversation: conv(2),
                seq: seq(1)
            }
        ]
    );
}

#[test]
fn unanswered_send_is_retried_with_the_same_ids_after_reconnect() {
    let mut h = Harness::new(&[1], 50);
    h.connect();
    h.settle();
    h.client_send(1);
    let Some(ClientFrame::Send(first)) = h.to_server.front().cloned() else {
        panic!("send")
    };
    // The server commits it, but the ack is lost with the connection.
    h.deliver_to_server(1);
    h.drop_link();
    assert_eq!(h.client.pending_requests(), 1);
    h.connect();
    h.deliver_to_server(1); // hello
    h.deliver_to_client(usize::MAX, false);
    let Some(ClientFrame::Send(retry)) = h.to_server.front().cloned() else {
        panic!("retry")
    };
    assert_eq!(
        (retry.request_id, retry.client_msg_id),
        (first.request_id, first.client_msg_id)
    );
    h.settle();
    h.check_complete();
    assert_eq!(h.server.conversations[&conv(1)].len(), 1);
}

#[test]
fn in_flight_window_is_respected() {
    let mut h = Harness::new(&[1], 50);
    h.connect();
    h.settle();
    for _ in 0..10 {
        h.client_send(1);
    }
    assert_eq!(h.to_server.len(), 4, "max_in_flight from welcome");
    h.deliver_to_server(1);
    h.deliver_to_client(1, false); // the ack frees one slot
    assert_eq!(h.to_server.len(), 4);
    h.settle();
    h.check_complete();
}

#[test]
fn requests_wait_while_disconnected() {
    let mut client = ClientSession::default();
    let id = client
        .send(conv(1), key(1), Body::Text("queued".into()))
        .expect("queued");
    assert_eq!(client.poll_transmit(), None);
    client
        .connect("t".into(), Instant::now())
        .expect("connects");
    assert!(matches!(
        client.poll_transmit(),
        Some(ClientFrame::Hello(_))
    ));
    assert_eq!(client.poll_transmit(), None, "nothing before welcome");
    client.handle(welcome(ProtocolVersion::CURRENT, vec![]), Instant::now());
    assert!(matches!(client.poll_transmit(), Some(ClientFrame::Send(s)) if s.request_id == id));
}

#[test]
fn untracked_conversations_start_at_their_head() {
    let mut client = ClientSession::default();
    let now = Instant::now();
    client.connect("t".into(), now).expect("connects");
    client.handle(
        welcome(
            ProtocolVersion::CURRENT,
            vec![Cursor {
                conversation: conv(5),
                seq: seq(900),
            }],
        ),
        now,
    );
    client.handle(ServerFrame::ReplayDone(ReplayDone::default()), now);
    while client.poll_transmit().is_some() {}
    assert!(
        client.cursors().contains(&Cursor {
            conversation: conv(5),
            seq: seq(900)
        }),
        "no sync of 900 old messages"
    );
    let m = Message {
        conversation: conv(5),
        seq: seq(901),
        id: MessageId::new(1).expect("id"),
        sender: user(OTHER),
        client_msg_id: key(9),
        sent_at: Timestamp(1),
        body: Body::Text("new".into()),
    };
    client.handle(ServerFrame::Message(m.clone()), now);
    let events: Vec<Event> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(events.contains(&Event::Entry(Entry::from_message(m))));
}

#[test]
fn a_conversation_listed_twice_in_welcome_never_rewinds() {
    let mut client = ClientSession::default();
    let now = Instant::now();
    let welcome_with_heads = |heads: &[u64]| {
        welcome(
            ProtocolVersion::CURRENT,
            heads
                .iter()
                .map(|&s| Cursor {
                    conversation: conv(5),
                    seq: Seq::new(s).expect("seq"),
                })
                .collect(),
        )
    };
    let m = Message {
        conversation: conv(5),
        seq: seq(6),
        id: MessageId::new(1).expect("id"),
        sender: user(OTHER),
        client_msg_id: key(9),
        sent_at: Timestamp(1),
        body: Body::Text("new".into()),
    };
    client.connect("t".into(), now).expect("connects");
    client.handle(welcome_with_heads(&[5]), now);
    client.handle(ServerFrame::ReplayDone(ReplayDone::default()), now);
    client.handle(ServerFrame::Message(m.clone()), now);
    let first: Vec<Event> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(first.contains(&Event::Entry(Entry::from_message(m.clone()))));

    client.transport_closed();
    client.connect("t".into(), now).expect("connects");
    client.handle(welcome_with_heads(&[6, 2]), now);
    client.handle(ServerFrame::ReplayDone(ReplayDone::default()), now);
    client.handle(ServerFrame::Message(m), now);
    let again: Vec<Event> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(
        !again.iter().any(|e| matches!(e, Event::Entry(_))),
        "{again:?}"
    );
    assert_eq!(
        client.cursors(),
        vec![Cursor {
            conversation: conv(5),
            seq: seq(6)
        }]
    );
}

/// A live session tracking conversation 1 up to `at`, with nothing left to transmit.
fn live_in_conversation_1(at: Seq, now: Instant) -> ClientSession {
    let mut client = ClientSession::default();
    client.track(conv(1), at);
    client.connect("t".into(), now).expect("connects");
    client.handle(
        welcome(
            ProtocolVersion::CURRENT,
            vec![Cursor {
                conversation: conv(1),
                seq: at,
            }],
        ),
        now,
    );
    client.handle(ServerFrame::ReplayDone(ReplayDone::default()), now);
    while client.poll_transmit().is_some() {}
    client
}

/// Message `n` of conversation 1, from someone else.
fn message_in_conversation_1(n: u64) -> Message {
    Message {
        conversation: conv(1),
        seq: seq(n),
        id: MessageId::new(n).expect("id"),
        sender: user(OTHER),
        client_msg_id: key(n as u8),
        sent_at: Timestamp(1),
        body: Body::Text("x".into()),
    }
}

#[test]
fn an_unfillable_gap_releases_what_is_buffered() {
    let now = Instant::now();
    let mut client = live_in_conversation_1(seq(3), now);
    let m = message_in_conversation_1;
    client.handle(ServerFrame::Message(m(6)), now);
    let Some(ClientFrame::Sync(sync)) = client.poll_transmit() else {
        panic!("sync for the gap")
    };
    assert_eq!(sync.after, seq(3));
    // The server has nothing for 4 and 5 (deleted): release 6.
    client.handle(
        ServerFrame::SyncPage(Page {
            request_id: sync.request_id,
            conversation: conv(1),
            messages: vec![],
            has_more: false,
        }),
        now,
    );
    let events: Vec<Event> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(events.contains(&Event::Entry(Entry::from_message(m(6)))));
    assert_eq!(client.poll_transmit(), None, "no sync loop");
}

/// A sync page read before a newer gap opened says nothing about that gap: the
/// messages past it wait for the next sync instead of being released over it.
#[test]
fn a_page_older_than_a_new_gap_does_not_release_past_it() {
    let now = Instant::now();
    let mut client = live_in_conversation_1(seq(10), now);
    let m = message_in_conversation_1;
    let delivered = |client: &mut ClientSession| -> Vec<u64> {
        std::iter::from_fn(|| client.poll_event())
            .filter_map(|e| match e {
                Event::Entry(m) => Some(m.seq.get()),
                _ => None,
            })
            .collect()
    };
    // 12 arrives before 11 (another node was faster): sync after 10.
    client.handle(ServerFrame::Message(m(12)), now);
    let Some(ClientFrame::Sync(first)) = client.poll_transmit() else {
        panic!("sync for the gap")
    };
    // 11 arrives live; then 14 before 13: a new gap while the first sync is out.
    client.handle(ServerFrame::Message(m(11)), now);
    client.handle(ServerFrame::Message(m(14)), now);
    assert_eq!(delivered(&mut client), [11, 12]);
    // The page was read before 13 existed: it holds 11 and 12 only.
    client.handle(
        ServerFrame::SyncPage(Page {
            request_id: first.request_id,
            conversation: conv(1),
            messages: vec![m(11), m(12)],
            has_more: false,
        }),
        now,
    );
    assert_eq!(delivered(&mut client), Vec::<u64>::new(), "14 waits for 13");
    let Some(ClientFrame::Sync(second)) = client.poll_transmit() else {
        panic!("a new sync for 13")
    };
    assert_eq!(second.after, seq(12));
    client.handle(
        ServerFrame::SyncPage(Page {
            request_id: second.request_id,
            conversation: conv(1),
            messages: vec![m(13), m(14)],
            has_more: false,
        }),
        now,
    );
    assert_eq!(delivered(&mut client), [13, 14]);
    assert_eq!(client.poll_transmit(), None);
}

#[test]
fn heartbeat_then_idle_timeout() {
    let mut client = ClientSession::default();
    let t0 = Instant::now();
    client.connect("t".into(), t0).expect("connects");
    assert_eq!(
        client.poll_timeout(),
        Some(t0 + chat_proto::limits::HANDSHAKE_TIMEOUT)
    );
    client.handle(
        ServerFrame::Welcome(Welcome {
            version: ProtocolVersion::CURRENT,
            user: user(ME),
            server_time: Timestamp(0),
            limits: ServerLimits {
                heartbeat_ms: 5_000,
                idle_timeout_ms: 15_000,
                ..ServerLimits::default()
            },
            heads: vec![],
        }),
        t0,
    );
    while client.poll_transmit().is_some() {}
    assert_eq!(client.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    client.handle_timeout(t0 + Duration::from_secs(5));
    assert!(matches!(client.poll_transmit(), Some(ClientFrame::Ping(_))));
    assert_eq!(client.poll_timeout(), Some(t0 + Duration::from_secs(15)));
    // A pong (any frame) resets the clock.
    client.handle(
        ServerFrame::Pong(Pong { nonce: 1 }),
        t0 + Duration::from_secs(6),
    );
    assert_eq!(client.poll_timeout(), Some(t0 + Duration::from_secs(11)));
    client.handle_timeout(t0 + Duration::from_secs(11));
    assert!(matches!(client.poll_transmit(), Some(ClientFrame::Ping(_))));
    client.handle_timeout(t0 + Duration::from_secs(21));
    assert_eq!(client.state(), ConnectionState::Disconnected);
    let events: Vec<Event> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(events.contains(&Event::Disconnected(DisconnectReason::IdleTimeout)));
}

#[test]
fn handshake_timeout_and_server_refusal() {
    let mut client = ClientSession::default();
    let t0 = Instant::now();
    client.connect("t".into(), t0).expect("connects");
    assert!(
        client.connect("t".into(), t0).is_err(),
        "one handshake at a time"
    );
    client.handle_timeout(t0 + Duration::from_secs(11));
    assert_eq!(
        client.poll_event(),
        Some(Event::Disconnected(DisconnectReason::HandshakeTimeout))
    );

    client.connect("t".into(), t0).expect("connects again");
    let refusal = chat_proto::frame::Error {
        request_id: None,
        code: ErrorCode::InvalidToken,
        message: "expired".into(),
        retry_after_ms: None,
    };
    client.handle(ServerFrame::Error(refusal.clone()), t0);
    assert_eq!(
        client.poll_event(),
        Some(Event::Disconnected(DisconnectReason::Server(refusal)))
    );
    assert_eq!(client.state(), ConnectionState::Disconnected);
}

#[test]
fn protocol_violations_drop_the_connection() {
    let mut client = ClientSession::default();
    let now = Instant::now();
    client.connect("t".into(), now).expect("connects");
    client.handle(
        ServerFrame::Done(Done {
            request_id: RequestId(1),
        }),
        now,
    );
    assert!(matches!(
        client.poll_event(),
        Some(Event::Disconnected(DisconnectReason::ProtocolViolation(_)))
    ));
    // A welcome for a minor version the client never offered.
    client.connect("t".into(), now).expect("connects");
    client.handle(welcome(ProtocolVersion { major: 1, minor: 9 }, vec![]), now);
    assert!(matches!(
        client.poll_event(),
        Some(Event::Disconnected(DisconnectReason::ProtocolViolation(_)))
    ));
}

#[test]
fn close_fails_everything_pending() {
    let mut client = ClientSession::default();
    let a = client
        .send(conv(1), key(1), Body::Text("a".into()))
        .expect("queued");
    let b = client.history(conv(1), None, 20).expect("queued");
    client.close();
    let events: Vec<Event> = std::iter::from_fn(|| client.poll_event()).collect();
    let failed: Vec<RequestId> = events
        .iter()
        .filter_map(|e| match e {
            Event::RequestFailed {
                request_id,
                error: RequestError::Closed,
                ..
            } => Some(*request_id),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![a, b]);
    assert!(
        client
            .send(conv(1), key(2), Body::Text("late".into()))
            .is_err()
    );
}

#[test]
fn request_errors_reach_the_application() {
    let mut h = Harness::new(&[1], 50);
    h.connect();
    h.settle();
    let id = h
        .client
        .send(conv(1), key(77), Body::Text("x".into()))
        .expect("queued");
    h.client.handle(
        ServerFrame::Error(chat_proto::frame::Error {
            request_id: Some(id),
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
            retry_after_ms: Some(100),
        }),
        h.now,
    );
    let events: Vec<Event> = std::iter::from_fn(|| h.client.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::RequestFailed { request_id, kind: PendingKind::Send { .. }, error: RequestError::Server(err) }
            if *request_id == id && err.code == ErrorCode::RateLimited && err.retry_after_ms == Some(100)
    )));
    // The connection survives a non-fatal error.
    assert_eq!(h.client.state(), ConnectionState::Live);
}

#[test]
fn history_and_read_receipts_round_trip() {
    let mut h = Harness::new(&[1], 50);
    for _ in 0..7 {
        h.other_sends(1, false);
    }
    h.connect();
    h.settle();
    let id = h.client.history(conv(1), Some(seq(6)), 3).expect("queued");
    let read = h.client.mark_read(conv(1), seq(7)).expect("queued");
    h.pump_client();
    h.deliver_to_server(usize::MAX);
    let mut page = None;
    let mut done = None;
    while let Some(frame) = h.to_client.pop_front() {
        h.client.handle(frame, h.now);
    }
    while let Some(e) = h.client.poll_event() {
        match e {
            Event::HistoryPage(p) => page = Some(p),
            Event::Done(d) => done = Some(d),
            _ => {}
        }
    }
    let page = page.expect("history page");
    assert_eq!(page.request_id, id);
    assert_eq!(
        page.entries.iter().map(|m| m.seq.get()).collect::<Vec<_>>(),
        vec![5, 4, 3]
    );
    assert!(page.has_more);
    assert_eq!(done, Some(read));
}

#[test]
fn typing_is_only_sent_when_connected() {
    let mut client = ClientSession::default();
    assert!(!client.set_typing(conv(1), true));
    assert_eq!(client.poll_transmit(), None);
}

#[test]
fn a_conversation_joined_while_connected_is_tracked_from_its_start() {
    let mut h = Harness::new(&[1], 50);
    h.connect();
    h.settle();
    // Conversation 2 is created after the handshake, with the user in it.
    h.server.conversations.insert(conv(2), Vec::new());
    h.client.handle(
        ServerFrame::Membership(Membership {
            conversation: conv(2),
            user: user(ME),
            change: MembershipChange::Added,
            by: user(OTHER),
        }),
        h.now,
    );
    // The first message arrives while the link is down: the next handshake resumes
    // from seq 0 instead of treating it as old history.
    h.drop_link();
    h.other_sends(2, true);
    h.connect();
    h.settle();
    assert_eq!(h.delivered[&conv(2)], vec![seq(1)]);
}

#[test]
fn removal_from_a_conversation_stops_tracking_it() {
    let mut h = Harness::new(&[1, 2], 50);
    h.connect();
    h.settle();
    h.other_sends(2, false);
    h.other_sends(2, false);
    h.settle();
    h.client.handle(
        ServerFrame::Membership(Membership {
            conversation: conv(2),
            user: user(ME),
            change: MembershipChange::Removed,
            by: user(OTHER),
        }),
        h.now,
    );
    assert_eq!(h.client.cursors().len(), 1);

    // A late copy of an old message (or a return to the conversation) never hands out
    // what the application already saw: the harness asserts strict order per
    // conversation, duplicates included.
    let old = h.server.conversations[&conv(2)][0].clone();
    h.client.handle(ServerFrame::Message(old), h.now);
    h.pump_client();
    h.other_sends(2, false);
    h.settle();
    assert_eq!(h.delivered[&conv(2)], vec![seq(1), seq(2), seq(3)]);
}

/// A connected, live session that negotiated `minor`.
fn live_at(minor: u16) -> (ClientSession, Instant) {
    let mut client = ClientSession::new(ClientConfig::default());
    let now = Instant::now();
    client.connect("t".into(), now).expect("connects");
    client.handle(
        welcome(
            ProtocolVersion { major: 1, minor },
            vec![Cursor {
                conversation: conv(5),
                seq: seq(1),
            }],
        ),
        now,
    );
    client.handle(ServerFrame::ReplayDone(ReplayDone::default()), now);
    while client.poll_transmit().is_some() {}
    while client.poll_event().is_some() {}
    (client, now)
}

fn entry(at: u64, content: Content) -> Entry {
    Entry {
        conversation: conv(5),
        seq: seq(at),
        id: MessageId::new(at).expect("id"),
        sender: user(OTHER),
        client_msg_id: key(at as u8),
        sent_at: Timestamp(at as i64),
        content,
    }
}

#[test]
fn relations_go_out_as_relate_and_are_answered_like_sends() {
    let (mut client, now) = live_at(3);
    let relation = Relation::React {
        target: seq(1),
        reaction: Reaction::Emoji("👍".into()),
    };
    let id = client
        .relate(conv(5), key(7), relation.clone())
        .expect("queued");
    let Some(ClientFrame::Relate(r)) = client.poll_transmit() else {
        panic!("a relate frame")
    };
    assert_eq!((r.request_id, r.relation), (id, relation.clone()));
    // Unanswered at a disconnect: sent again, same key, on the next connection.
    client.transport_closed();
    client.connect("t".into(), now).expect("reconnects");
    let _hello = client.poll_transmit();
    client.handle(welcome(ProtocolVersion::CURRENT, vec![]), now);
    let Some(ClientFrame::Relate(again)) = client.poll_transmit() else {
        panic!("the relation again")
    };
    assert_eq!((again.request_id, again.client_msg_id), (id, key(7)));
    client.handle(
        ServerFrame::Ack(Ack {
            request_id: id,
            conversation: conv(5),
            id: MessageId::new(2).expect("id"),
            seq: seq(2),
            sent_at: Timestamp(2),
        }),
        now,
    );
    let events: Vec<Event> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Acked(a) if a.request_id == id))
    );
}

#[test]
fn a_server_of_1_2_never_sees_a_relation() {
    let (mut client, _) = live_at(2);
    let id = client
        .relate(conv(5), key(8), Relation::Delete { target: seq(1) })
        .expect("queued");
    assert!(client.poll_transmit().is_none(), "nothing on the wire");
    match client.poll_event() {
        Some(Event::RequestFailed {
            request_id,
            error: RequestError::Server(e),
            ..
        }) => {
            assert_eq!(request_id, id);
            assert_eq!(e.code, ErrorCode::UnsupportedFrame);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn entries_are_ordered_like_messages_and_pages_of_entries_fill_gaps() {
    let (mut client, now) = live_at(3);
    // Seq 3 arrives before 2: held back, a sync goes out, its `entries` page fills it.
    client.handle(
        ServerFrame::Entry(entry(
            3,
            Content::Edit {
                target: seq(1),
                body: Some(Body::Text("fixed".into())),
            },
        )),
        now,
    );
    assert!(client.poll_event().is_none(), "held back past the gap");
    let Some(ClientFrame::Sync(sync)) = client.poll_transmit() else {
        panic!("a sync for the gap")
    };
    assert_eq!(sync.after, seq(1));
    let two = entry(2, Content::Delete { target: seq(1) });
    client.handle(
        ServerFrame::Entries(EntryPage {
            request_id: sync.request_id,
            conversation: conv(5),
            entries: vec![two.clone()],
            has_more: false,
        }),
        now,
    );
    let seqs: Vec<u64> = std::iter::from_fn(|| client.poll_event())
        .filter_map(|e| match e {
            Event::Entry(e) => Some(e.seq.get()),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![2, 3]);
    // A history request is answered by `entries` too, handed over as a page.
    let id = client.history(conv(5), None, 10).expect("queued");
    while client.poll_transmit().is_some() {}
    client.handle(
        ServerFrame::Entries(EntryPage {
            request_id: id,
            conversation: conv(5),
            entries: vec![two],
            has_more: true,
        }),
        now,
    );
    assert!(matches!(
        client.poll_event(),
        Some(Event::HistoryPage(p)) if p.request_id == id && p.entries.len() == 1
    ));
}
