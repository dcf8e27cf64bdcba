//! The real-time core over real WebSocket connections: delivery, devices, resume,
//! idempotency, typing/presence/receipts, hostile input and slow consumers.

mod common;

use std::time::Duration;

use chat_proto::body::Body;
use chat_proto::error::ErrorCode;
use chat_proto::frame::{
    ClientFrame, Cursor, History, MarkRead, PresenceStatus, Send, ServerFrame, SetTyping, Sync,
};
use chat_proto::ids::{ClientMsgId, ConversationId, RequestId, Seq, UserId};
use chat_server::testing::{TestDbKind, client_frame};
use common::ws::{End, RawWs, Sub, WsClient, connect_raw};
use common::{Account, TestServer};
use fastwebsockets::OpCode;
use http::StatusCode;
use serde_json::json;

fn cid(n: u64) -> ConversationId {
    ConversationId::new(n).expect("id")
}

/// A send whose idempotency key is derived from `key` alone.
fn send(request: u32, conversation: u64, key: u8, text: &str) -> ClientFrame {
    ClientFrame::Send(Send {
        request_id: RequestId(request),
        conversation: cid(conversation),
        client_msg_id: ClientMsgId::from_bytes([key; 16]),
        body: Body::Text(text.to_owned()),
    })
}

async fn dm(s: &TestServer, a: &Account, b: &Account) -> u64 {
    s.direct(a, b).await
}

/// A server (SQLite) with Alice and Bob and their direct conversation.
async fn alice_and_bob() -> (TestServer, Account, Account, u64) {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let conv = dm(&s, &alice, &bob).await;
    (s, alice, bob, conv)
}

async fn next_error(c: &mut WsClient) -> chat_proto::frame::Error {
    c.until(|f| match f {
        ServerFrame::Error(e) => Some(e),
        _ => None,
    })
    .await
}

async fn next_message(c: &mut WsClient) -> chat_proto::frame::Message {
    c.until(|f| match f {
        ServerFrame::Message(m) => Some(m),
        _ => None,
    })
    .await
}

async fn chat_both_ways(sender_sub: Sub, receiver_sub: Sub) {
    let (s, alice, bob, conv) = alice_and_bob().await;
    let (mut a, welcome) = WsClient::login(s.addr(), sender_sub, &alice.token, vec![]).await;
    assert_eq!(welcome.user, UserId::new(alice.id).expect("id"));
    assert_eq!(
        welcome.heads,
        vec![Cursor {
            conversation: cid(conv),
            seq: Seq::ZERO
        }]
    );
    a.until_live().await;
    let (mut b, _) = WsClient::login_live(s.addr(), receiver_sub, &bob.token, vec![]).await;

    a.send(&send(1, conv, 1, "hello bob")).await;
    let ack = a
        .until(|f| match f {
            ServerFrame::Ack(ack) => Some(ack),
            _ => None,
        })
        .await;
    assert_eq!(
        (ack.request_id, ack.seq),
        (RequestId(1), Seq::new(1).expect("seq"))
    );
    let m = next_message(&mut b).await;
    assert_eq!(
        (m.seq, m.id, m.body.as_text()),
        (ack.seq, ack.id, Some("hello bob"))
    );
    assert_eq!(m.sender, UserId::new(alice.id).expect("id"));

    b.send(&send(7, conv, 2, "hi alice")).await;
    let m = next_message(&mut a).await;
    // Alice sees her own message too (every session of every member), then Bob's.
    let m = if m.body.as_text() == Some("hello bob") {
        next_message(&mut a).await
    } else {
        m
    };
    assert_eq!((m.seq.get(), m.body.as_text()), (2, Some("hi alice")));
    s.stop().await;
}

#[tokio::test]
async fn two_users_chat_over_json() {
    chat_both_ways(Sub::Json, Sub::Json).await;
}

#[tokio::test]
async fn two_users_chat_over_postcard() {
    chat_both_ways(Sub::Postcard, Sub::Postcard).await;
}

#[tokio::test]
async fn postcard_sender_reaches_json_receiver() {
    chat_both_ways(Sub::Postcard, Sub::Json).await;
}

#[tokio::test]
async fn a_second_device_sees_its_users_sends_and_retries_are_idempotent() {
    let (s, alice, _bob, conv) = alice_and_bob().await;
    let (mut phone, _) = WsClient::login_live(s.addr(), Sub::Json, &alice.token, vec![]).await;
    let (mut laptop, _) = WsClient::login_live(s.addr(), Sub::Postcard, &alice.token, vec![]).await;

    phone.send(&send(1, conv, 9, "from my phone")).await;
    let first = phone
        .until(|f| {
            if let ServerFrame::Ack(a) = f {
                Some(a)
            } else {
                None
            }
        })
        .await;
    let m = next_message(&mut laptop).await;
    assert_eq!(m.body.as_text(), Some("from my phone"));

    // The same client_msg_id again (a retry after a lost ack): same ack, no new message.
    phone.send(&send(2, conv, 9, "from my phone")).await;
    let phone_ack = |f| {
        if let ServerFrame::Ack(a) = f {
            Some(a)
        } else {
            None
        }
    };
    let retry = phone.until(phone_ack).await;
    assert_eq!(
        (retry.id, retry.seq, retry.sent_at),
        (first.id, first.seq, first.sent_at)
    );
    assert_eq!(retry.request_id, RequestId(2));
    laptop
        .expect_silence(Duration::from_millis(300), |f| {
            matches!(f, ServerFrame::Presence(_))
        })
        .await;
    let history = s
        .get(&format!("/api/conversations/{conv}/messages"), &alice.token)
        .await;
    assert_eq!(history.body["messages"].as_array().map(Vec::len), Some(1));

    // Reusing the key for different content is a conflict.
    phone.send(&send(2, conv, 9, "something else")).await;
    let err = next_error(&mut phone).await;
    assert_eq!(err.code, ErrorCode::IdempotencyConflict);
    s.stop().await;
}

#[tokio::test]
async fn reconnecting_client_gets_exactly_what_it_missed() {
    let (s, alice, bob, conv) = alice_and_bob().await;
    let (mut a, _) = WsClient::login_live(s.addr(), Sub::Postcard, &alice.token, vec![]).await;
    let (mut b, _) = WsClient::login_live(s.addr(), Sub::Json, &bob.token, vec![]).await;
    a.send(&send(1, conv, 1, "one")).await;
    let m = next_message(&mut b).await;
    assert_eq!(m.seq.get(), 1);
    drop(b); // Bob's client dies mid-conversation.

    for (i, text) in ["two", "three", "four"].iter().enumerate() {
        let id = 2 + i as u32;
        a.send(&send(id, conv, id as u8, text)).await;
        a.until(|f| {
            matches!(f, ServerFrame::Ack(ack) if ack.request_id == RequestId(id)).then_some(())
        })
        .await;
    }
    let cursor = Cursor {
        conversation: cid(conv),
        seq: Seq::new(1).expect("seq"),
    };
    let (mut b, welcome) = WsClient::login(s.addr(), Sub::Json, &bob.token, vec![cursor]).await;
    assert_eq!(welcome.heads[0].seq.get(), 4);
    let mut replayed = Vec::new();
    loop {
        match b.recv().await.expect("frame") {
            ServerFrame::Message(m) => {
                replayed.push((m.seq.get(), m.body.as_text().map(str::to_owned)))
            }
            ServerFrame::ReplayDone(done) => {
                assert!(done.truncated.is_empty());
                break;
            }
            _ => {}
        }
    }
    assert_eq!(
        replayed,
        vec![
            (2, Some("two".to_owned())),
            (3, Some("three".to_owned())),
            (4, Some("four".to_owned()))
        ]
    );

    // Sync and history over the socket.
    b.send(&ClientFrame::Sync(Sync {
        request_id: RequestId(5),
        conversation: cid(conv),
        after: Seq::new(2).expect("seq"),
        limit: 1,
    }))
    .await;
    let page = b
        .until(|f| {
            if let ServerFrame::SyncPage(p) = f {
                Some(p)
            } else {
                None
            }
        })
        .await;
    assert_eq!(
        (
            page.messages.len(),
            page.messages[0].seq.get(),
            page.has_more
        ),
        (1, 3, true)
    );
    b.send(&ClientFrame::History(History {
        request_id: RequestId(6),
        conversation: cid(conv),
        before: None,
        limit: 2,
    }))
    .await;
    let page = b
        .until(|f| {
            if let ServerFrame::HistoryPage(p) = f {
                Some(p)
            } else {
                None
            }
        })
        .await;
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq.get()).collect();
    assert_eq!((seqs, page.has_more), (vec![4, 3], true));
    s.stop().await;
}

#[tokio::test]
async fn typing_presence_and_receipts_reach_the_right_people() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let conv = dm(&s, &alice, &bob).await;
    let (mut c, _) = WsClient::login_live(s.addr(), Sub::Json, &carol.token, vec![]).await;
    let (mut a, _) = WsClient::login_live(s.addr(), Sub::Json, &alice.token, vec![]).await;
    let (mut b, _) = WsClient::login(s.addr(), Sub::Json, &bob.token, vec![]).await;
    // Bob learns Alice is online as he connects; Alice learns Bob came online.
    let p = b
        .until(|f| {
            if let ServerFrame::Presence(p) = f {
                Some(p)
            } else {
                None
            }
        })
        .await;
    assert_eq!((p.user.get(), p.status), (alice.id, PresenceStatus::Online));
    let p = a
        .until(|f| {
            if let ServerFrame::Presence(p) = f {
                Some(p)
            } else {
                None
            }
        })
        .await;
    assert_eq!((p.user.get(), p.status), (bob.id, PresenceStatus::Online));

    a.send(&ClientFrame::Typing(SetTyping {
        conversation: cid(conv),
        active: true,
    }))
    .await;
    let t = b
        .until(|f| {
            if let ServerFrame::Typing(t) = f {
                Some(t)
            } else {
                None
            }
        })
        .await;
    assert_eq!((t.user.get(), t.active), (alice.id, true));
    // A stop is relayed once: a second one has nothing to end.
    for _ in 0..2 {
        a.send(&ClientFrame::Typing(SetTyping {
            conversation: cid(conv),
            active: false,
        }))
        .await;
    }

    a.send(&send(1, conv, 1, "read me")).await;
    let mut typing = Vec::new();
    let m = b
        .until(|f| match f {
            ServerFrame::Message(m) => Some(m),
            ServerFrame::Typing(t) => {
                typing.push((t.user.get(), t.active));
                None
            }
            _ => None,
        })
        .await;
    assert_eq!(typing, vec![(alice.id, false)]);
    b.send(&ClientFrame::MarkRead(MarkRead {
        request_id: RequestId(3),
        conversation: cid(conv),
        seq: m.seq,
    }))
    .await;
    b.until(|f| matches!(f, ServerFrame::Done(d) if d.request_id == RequestId(3)).then_some(()))
        .await;
    let r = a
        .until(|f| {
            if let ServerFrame::Receipt(r) = f {
                Some(r)
            } else {
                None
            }
        })
        .await;
    assert_eq!((r.user.get(), r.seq), (bob.id, m.seq));
    let listed = s.get("/api/conversations", &bob.token).await;
    assert_eq!(listed.body["conversations"][0]["unread"], 0);

    // Bob leaves: Alice sees him go offline with a last-seen time.
    drop(b);
    let p = a
        .until(|f| {
            if let ServerFrame::Presence(p) = f {
                Some(p)
            } else {
                None
            }
        })
        .await;
    assert_eq!((p.user.get(), p.status), (bob.id, PresenceStatus::Offline));
    assert!(p.last_seen.is_some());

    // Carol shares no conversation: she got none of it.
    c.expect_silence(Duration::from_millis(300), |_| false)
        .await;
    s.stop().await;
}

/// The next presence frame `c` receives, as (user, status).
async fn next_presence(c: &mut WsClient) -> (u64, PresenceStatus) {
    c.until(|f| match f {
        ServerFrame::Presence(p) => Some((p.user.get(), p.status)),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn people_who_come_to_share_a_conversation_learn_who_is_online() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let dave = s.register("dave").await;
    let mut online = Vec::new();
    for who in [&alice, &bob, &carol] {
        let (c, _) = WsClient::login_live(s.addr(), Sub::Json, &who.token, vec![]).await;
        online.push(c);
    }
    let [a, b, c] = &mut online[..] else {
        unreachable!()
    };
    // Strangers while they connected; a direct conversation makes Alice and Bob
    // contacts, and each learns at once that the other is online.
    dm(&s, &alice, &bob).await;
    assert_eq!(next_presence(a).await, (bob.id, PresenceStatus::Online));
    assert_eq!(next_presence(b).await, (alice.id, PresenceStatus::Online));

    // Alice adds Carol (online) and Dave (offline) to a group: Carol and the members
    // learn about each other; nobody is told Dave is online.
    let group = s.group(&alice, &[&bob]).await;
    for id in [carol.id, dave.id] {
        let r = s
            .post(
                &format!("/api/conversations/{group}/members"),
                Some(&alice.token),
                json!({ "user_id": id }),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let mut seen_by_carol = vec![next_presence(c).await, next_presence(c).await];
    seen_by_carol.sort_unstable_by_key(|(user, _)| *user);
    assert_eq!(
        seen_by_carol,
        vec![
            (alice.id, PresenceStatus::Online),
            (bob.id, PresenceStatus::Online)
        ]
    );
    a.until(|f| {
        matches!(f, ServerFrame::Presence(p) if p.user.get() == carol.id && p.status == PresenceStatus::Online)
            .then_some(())
    })
    .await;
    a.expect_silence(
        Duration::from_millis(300),
        |f| !matches!(f, ServerFrame::Presence(p) if p.user.get() == dave.id),
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn hostile_frames_get_typed_errors_and_harm_no_one_else() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let mallory = s.register("mallory").await;
    let conv = dm(&s, &alice, &bob).await;
    let (mut b, _) = WsClient::login_live(s.addr(), Sub::Json, &bob.token, vec![]).await;

    // A request before hello: handshake_required, then the server closes (1008).
    let mut x = WsClient::connect(s.addr(), Sub::Json).await;
    x.send(&send(1, conv, 1, "sneaky")).await;
    let e = next_error(&mut x).await;
    assert_eq!(e.code, ErrorCode::HandshakeRequired);
    assert_eq!(x.recv().await.err(), Some(End::Closed(1008)));

    // A forged token.
    let mut x = WsClient::connect(s.addr(), Sub::Postcard).await;
    x.send(&ClientFrame::Hello(chat_proto::frame::Hello {
        version: common::V1_2,
        token: format!("{}x", alice.token),
        client: String::new(),
        resume: vec![],
    }))
    .await;
    let e = next_error(&mut x).await;
    assert_eq!(e.code, ErrorCode::InvalidToken);
    assert_eq!(x.recv().await.err(), Some(End::Closed(1008)));

    // After the handshake: garbage and unknown kinds are answered and survived...
    let (mut m, _) = WsClient::login_live(s.addr(), Sub::Json, &mallory.token, vec![]).await;
    m.send_raw(OpCode::Text, b"{not json".to_vec()).await;
    let e = next_error(&mut m).await;
    assert_eq!(e.code, ErrorCode::BadFrame);
    m.send_raw(OpCode::Text, br#"{"reaction":{"emoji":"+1"}}"#.to_vec())
        .await;
    let e = next_error(&mut m).await;
    assert_eq!(e.code, ErrorCode::UnsupportedFrame);
    // Invalid UTF-8 in a text message fails the WebSocket connection (RFC 6455: 1007),
    // after a bad_frame error saying why.
    m.send_raw(OpCode::Text, b"\xff\xfe".to_vec()).await;
    let e = next_error(&mut m).await;
    assert_eq!(e.code, ErrorCode::BadFrame);
    assert_eq!(m.recv().await.err(), Some(End::Closed(1007)));

    // ...a non-member send is not_found, and an empty body invalid_request.
    let (mut m, _) = WsClient::login_live(s.addr(), Sub::Json, &mallory.token, vec![]).await;
    m.send(&send(4, conv, 4, "let me in")).await;
    let e = next_error(&mut m).await;
    assert_eq!(
        (e.code, e.request_id),
        (ErrorCode::NotFound, Some(RequestId(4)))
    );
    m.send(&send(5, 999_999, 5, "nowhere")).await;
    let e = next_error(&mut m).await;
    assert_eq!(
        e.code,
        ErrorCode::NotFound,
        "same answer as for a conversation that does not exist"
    );
    m.send(&send(6, conv, 6, "")).await;
    let e = next_error(&mut m).await;
    assert_eq!(e.code, ErrorCode::InvalidRequest);

    // An oversized message, even in fragments: frame_too_large and close 1009.
    let chunk = vec![b' '; 200 * 1024];
    m.send_fragment(false, OpCode::Text, chunk.clone()).await;
    m.send_fragment(true, OpCode::Continuation, chunk).await;
    let mut saw_error = false;
    loop {
        match m.recv().await {
            Ok(ServerFrame::Error(e)) if e.code == ErrorCode::FrameTooLarge => saw_error = true,
            Ok(_) => {}
            Err(end) => {
                assert_eq!(end, End::Closed(1009));
                break;
            }
        }
    }
    assert!(saw_error);

    // Bob was never bothered and still works.
    b.expect_silence(Duration::from_millis(200), |f| {
        matches!(f, ServerFrame::Presence(_))
    })
    .await;
    let (mut a, _) = WsClient::login_live(s.addr(), Sub::Json, &alice.token, vec![]).await;
    a.send(&send(1, conv, 1, "still here?")).await;
    assert_eq!(
        next_message(&mut b).await.body.as_text(),
        Some("still here?")
    );
    assert_eq!(
        s.get(&format!("/api/conversations/{conv}/messages"), &bob.token)
            .await
            .body["messages"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    s.stop().await;
}

/// The server reads frames wherever TCP cuts them: one sent in the same write as the
/// upgrade request, one trickled a byte at a time, several in one write, a ping
/// between them; and it refuses an unmasked client frame (RFC 6455 §5.1).
#[tokio::test]
async fn frames_are_read_however_tcp_delivers_them() {
    let (s, alice, bob, conv) = alice_and_bob().await;
    let (mut b, _) = WsClient::login_live(s.addr(), Sub::Json, &bob.token, vec![]).await;

    let json = |frame: &ClientFrame| chat_proto::codec::encode_json(frame).expect("encodes");
    let hello = json(&ClientFrame::Hello(chat_proto::frame::Hello {
        version: common::V1_2,
        token: alice.token.clone(),
        client: "raw".into(),
        resume: vec![],
    }));
    let mut a = RawWs::upgrade_with(
        s.addr(),
        &client_frame(OpCode::Text, hello.as_bytes(), [1, 2, 3, 4]),
    )
    .await;
    assert!(matches!(a.recv().await, ServerFrame::Welcome(_)));
    while !matches!(a.recv().await, ServerFrame::ReplayDone(_)) {}

    // A byte at a time, the last byte after a pause.
    let one = client_frame(
        OpCode::Text,
        json(&send(1, conv, 1, "trickled")).as_bytes(),
        [9, 8, 7, 6],
    );
    for byte in &one[..one.len() - 1] {
        a.write(std::slice::from_ref(byte)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.write(&one[one.len() - 1..]).await;
    assert_eq!(next_message(&mut b).await.body.as_text(), Some("trickled"));

    // Three messages and a ping in one write, the last message longer than 125 bytes.
    let long = "x".repeat(300);
    let mut burst = client_frame(
        OpCode::Text,
        json(&send(2, conv, 2, "first")).as_bytes(),
        [5, 5, 5, 5],
    );
    burst.extend(client_frame(OpCode::Ping, b"are you there", [0, 1, 0, 1]));
    burst.extend(client_frame(
        OpCode::Text,
        json(&send(3, conv, 3, "second")).as_bytes(),
        [7, 0, 0, 7],
    ));
    burst.extend(client_frame(
        OpCode::Text,
        json(&send(4, conv, 4, &long)).as_bytes(),
        [3, 3, 3, 3],
    ));
    a.write(&burst).await;
    for text in ["first", "second", long.as_str()] {
        assert_eq!(next_message(&mut b).await.body.as_text(), Some(text));
    }
    let pong = loop {
        let (opcode, payload) = a.next().await;
        if opcode == 0xA {
            break payload;
        }
    };
    assert_eq!(pong, b"are you there");

    // An unmasked frame: bad_frame, then close 1002.
    let (mut m, _) = WsClient::login_live(s.addr(), Sub::Json, &alice.token, vec![]).await;
    m.send_unmasked(OpCode::Text, json(&send(5, conv, 5, "bare")).into_bytes())
        .await;
    let e = next_error(&mut m).await;
    assert_eq!(e.code, ErrorCode::BadFrame);
    assert!(e.message.contains("unmasked"), "{}", e.message);
    assert_eq!(m.recv().await.err(), Some(End::Closed(1002)));
    b.expect_silence(Duration::from_millis(200), |f| {
        matches!(f, ServerFrame::Presence(_) | ServerFrame::Typing(_))
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn upgrades_need_a_subprotocol_and_a_trusted_origin() {
    let s = TestServer::start_with(TestDbKind::Sqlite, |c| {
        c.allowed_origins = vec!["https://chat.example".into()];
    })
    .await;
    assert_eq!(
        connect_raw(s.addr(), None, None).await.err(),
        Some(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        connect_raw(s.addr(), Some("chat.v2.json, mqtt"), None)
            .await
            .err(),
        Some(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        connect_raw(s.addr(), Some("chat.v1.json"), Some("https://evil.example"))
            .await
            .err(),
        Some(StatusCode::FORBIDDEN)
    );
    let own = format!("http://{}", s.addr());
    assert!(
        connect_raw(s.addr(), Some("chat.v1.json"), Some(&own))
            .await
            .is_ok()
    );
    assert!(
        connect_raw(s.addr(), Some("chat.v1.json"), Some("https://chat.example"))
            .await
            .is_ok()
    );
    let (_, chosen) = connect_raw(s.addr(), Some("mqtt, chat.v1.postcard, chat.v1.json"), None)
        .await
        .expect("accepted");
    assert_eq!(chosen.as_deref(), Some("chat.v1.postcard"));
    s.stop().await;
}

#[tokio::test]
async fn sends_beyond_the_rate_limit_are_refused_with_a_retry_time() {
    let s = TestServer::start_with(TestDbKind::Sqlite, |c| {
        c.send_rate = 1;
        c.send_burst = 3;
    })
    .await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let conv = dm(&s, &alice, &bob).await;
    let (mut a, welcome) = WsClient::login(s.addr(), Sub::Json, &alice.token, vec![]).await;
    assert_eq!(
        (welcome.limits.send_rate, welcome.limits.send_burst),
        (1, 3)
    );
    a.until_live().await;
    for i in 1..=4u32 {
        a.send(&send(i, conv, i as u8, "spam")).await;
    }
    let mut acks = 0;
    let limited = loop {
        match a.recv().await.expect("frame") {
            ServerFrame::Ack(_) => acks += 1,
            ServerFrame::Error(e) => break e,
            _ => {}
        }
    };
    assert_eq!(
        (limited.code, limited.request_id),
        (ErrorCode::RateLimited, Some(RequestId(4)))
    );
    assert!(
        limited
            .retry_after_ms
            .is_some_and(|ms| ms > 0 && ms <= 1000)
    );
    while acks < 3 {
        if let Ok(ServerFrame::Ack(_)) = a.recv().await {
            acks += 1;
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_cut_off_while_others_keep_up() {
    let s = TestServer::start_with(TestDbKind::Sqlite, |c| {
        c.send_rate = 1_000_000;
        c.send_burst = 1_000_000;
    })
    .await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let conv = s.group(&alice, &[&bob, &carol]).await;
    let (mut a, _) = WsClient::login_live(s.addr(), Sub::Postcard, &alice.token, vec![]).await;
    let (mut bob_ws, _) = WsClient::login_live(s.addr(), Sub::Postcard, &bob.token, vec![]).await;
    // Carol connects and then never reads again.
    let (mut carol_ws, _) =
        WsClient::login_live(s.addr(), Sub::Postcard, &carol.token, vec![]).await;

    let text = "x".repeat(16 * 1024 - 100);
    let total = 1200u32;
    let sender = tokio::spawn(async move {
        for i in 1..=total {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&i.to_be_bytes());
            a.send(&ClientFrame::Send(Send {
                request_id: RequestId(i),
                conversation: cid(conv),
                client_msg_id: ClientMsgId::from_bytes(k),
                body: Body::Text(text.clone()),
            }))
            .await;
            if i % 64 == 0 {
                // Keep within the in-flight window.
                a.until(|f| {
                    matches!(f, ServerFrame::Ack(ack) if ack.request_id == RequestId(i))
                        .then_some(())
                })
                .await;
            }
        }
        a
    });
    let mut got = 0u32;
    while got < total {
        let m = next_message(&mut bob_ws).await;
        got += 1;
        assert_eq!(m.seq.get(), u64::from(got), "in order, none missing");
    }
    let _a = sender.await.expect("sender");
    // Carol's connection was closed; draining what reached her socket ends in a close
    // or error, never in all 1200 messages.
    let mut carol_got = 0;
    let end = loop {
        match carol_ws.recv_within(Duration::from_secs(3)).await {
            Ok(ServerFrame::Message(_)) => carol_got += 1,
            Ok(_) => {}
            Err(end) => break end,
        }
    };
    assert!(
        carol_got < total,
        "the slow reader was cut off ({carol_got} delivered)"
    );
    assert_ne!(
        end,
        End::Timeout,
        "the connection was closed, not left hanging"
    );
    assert_eq!(
        s.server.app.hub().session_count(),
        2,
        "only alice and bob remain"
    );
    s.stop().await;
}

#[tokio::test]
async fn membership_changes_take_effect_live() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let (mut a, _) = WsClient::login_live(s.addr(), Sub::Json, &alice.token, vec![]).await;
    let (mut b, _) = WsClient::login_live(s.addr(), Sub::Json, &bob.token, vec![]).await;
    let (mut c, _) = WsClient::login_live(s.addr(), Sub::Json, &carol.token, vec![]).await;

    // Bob learns about a group he was put in, without polling.
    let conv = s.group(&alice, &[&bob]).await;
    let m = b
        .until(|f| {
            if let ServerFrame::Membership(m) = f {
                Some(m)
            } else {
                None
            }
        })
        .await;
    assert_eq!(
        (m.conversation, m.user.get(), m.by.get()),
        (cid(conv), bob.id, alice.id)
    );

    a.send(&send(1, conv, 1, "before carol")).await;
    assert_eq!(
        next_message(&mut b).await.body.as_text(),
        Some("before carol")
    );

    // Carol is added: she is told, and from now on receives messages.
    s.post(
        &format!("/api/conversations/{conv}/members"),
        Some(&alice.token),
        json!({"user_id": carol.id}),
    )
    .await;
    let m = c
        .until(|f| {
            if let ServerFrame::Membership(m) = f {
                Some(m)
            } else {
                None
            }
        })
        .await;
    assert_eq!(
        (m.user.get(), m.change),
        (carol.id, chat_proto::frame::MembershipChange::Added)
    );
    a.send(&send(2, conv, 2, "welcome carol")).await;
    assert_eq!(
        next_message(&mut c).await.body.as_text(),
        Some("welcome carol")
    );

    // Bob is removed: he is told, and receives nothing more from the group.
    let r = s
        .call(
            http::Method::DELETE,
            &format!("/api/conversations/{conv}/members/{}", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let m = b
        .until(|f| match f {
            ServerFrame::Membership(m)
                if m.change == chat_proto::frame::MembershipChange::Removed =>
            {
                Some(m)
            }
            _ => None,
        })
        .await;
    assert_eq!(m.user.get(), bob.id);
    a.send(&send(3, conv, 3, "bob is gone")).await;
    assert_eq!(
        next_message(&mut c).await.body.as_text(),
        Some("bob is gone")
    );
    b.expect_silence(Duration::from_millis(300), |f| {
        matches!(f, ServerFrame::Presence(_) | ServerFrame::Receipt(_))
    })
    .await;
    b.send(&send(9, conv, 9, "let me back")).await;
    let e = next_error(&mut b).await;
    assert_eq!(e.code, ErrorCode::NotFound);
    s.stop().await;
}

#[tokio::test]
async fn shutdown_sends_go_away_and_loses_nothing_acknowledged() {
    let (s, alice, _bob, conv) = alice_and_bob().await;
    let (mut a, _) = WsClient::login_live(s.addr(), Sub::Postcard, &alice.token, vec![]).await;
    for i in 1..=20u32 {
        a.send(&send(i, conv, i as u8, "before shutdown")).await;
    }
    let db_url = s.db.url.clone();
    let store = s.db.store.clone();
    let stopping = tokio::spawn(async move { s.stop().await });
    let mut acked = Vec::new();
    let mut go_away = None;
    let end = loop {
        match a.recv().await {
            Ok(ServerFrame::Ack(ack)) => acked.push(ack.seq),
            Ok(ServerFrame::GoAway(g)) => go_away = Some(g),
            Ok(_) => {}
            Err(end) => break end,
        }
    };
    stopping.await.expect("stopped");
    let go_away =
        go_away.unwrap_or_else(|| panic!("no go_away before {end:?}; acked {}", acked.len()));
    assert_eq!(go_away.reason, chat_proto::frame::GoAwayReason::Shutdown);
    assert_eq!(end, End::Closed(1001));
    // Every acknowledged message is stored.
    let (stored, _) = store.history(cid(conv), None, 200).await.expect("history");
    for seq in &acked {
        assert!(
            stored.iter().any(|m| m.seq == *seq),
            "acked seq {seq:?} is stored ({db_url})"
        );
    }
}

#[tokio::test]
async fn quic_and_websocket_clients_chat_and_resume() {
    use common::quic::QuicClient;
    let (s, alice, bob, conv) = alice_and_bob().await;
    let cert = s.server.quic_cert.path.clone();
    let quic = s.server.quic_addr;

    // A QUIC sender reaches a browser-style WebSocket JSON receiver, and back.
    let (mut a, welcome) = QuicClient::login(quic, &cert, &alice.token, vec![]).await;
    assert_eq!(welcome.user.get(), alice.id);
    a.until(|f| matches!(f, ServerFrame::ReplayDone(_)).then_some(()))
        .await;
    let (mut b, _) = WsClient::login_live(s.addr(), Sub::Json, &bob.token, vec![]).await;
    a.send(&send(1, conv, 1, "over QUIC")).await;
    let ack = a
        .until(|f| {
            if let ServerFrame::Ack(ack) = f {
                Some(ack)
            } else {
                None
            }
        })
        .await;
    let m = next_message(&mut b).await;
    assert_eq!((m.seq, m.body.as_text()), (ack.seq, Some("over QUIC")));
    b.send(&send(2, conv, 2, "over WebSocket")).await;
    let m = a
        .until(|f| match f {
            ServerFrame::Message(m) if m.body.as_text() == Some("over WebSocket") => Some(m),
            _ => None,
        })
        .await;
    assert_eq!(m.seq.get(), 2);

    // The QUIC client goes away, misses two messages, and resumes exactly after them.
    a.connection.close(0u32.into(), b"bye");
    drop(a);
    for i in 3..=4u32 {
        b.send(&send(i, conv, i as u8, "while you were away")).await;
        b.until(|f| {
            matches!(f, ServerFrame::Ack(ack) if ack.request_id == RequestId(i)).then_some(())
        })
        .await;
    }
    let cursor = Cursor {
        conversation: cid(conv),
        seq: Seq::new(2).expect("seq"),
    };
    let (mut a, _) = QuicClient::login(quic, &cert, &alice.token, vec![cursor]).await;
    let mut replayed = Vec::new();
    loop {
        match a.recv().await.expect("frame") {
            ServerFrame::Message(m) => replayed.push(m.seq.get()),
            ServerFrame::ReplayDone(_) => break,
            _ => {}
        }
    }
    assert_eq!(replayed, vec![3, 4]);
    s.stop().await;
}

#[tokio::test]
async fn typing_rides_quic_datagrams_where_the_version_allows_it() {
    use chat_proto::version::ProtocolVersion;
    use common::quic::QuicClient;
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let group = s.group(&alice, &[&bob, &carol]).await;
    let cert = s.server.quic_cert.path.clone();
    let quic = s.server.quic_addr;
    // Bob speaks 1.2 over QUIC, Carol 1.1 over QUIC, Alice a browser's WebSocket.
    let (mut b, welcome) = QuicClient::login(quic, &cert, &bob.token, vec![]).await;
    assert_eq!(welcome.version, ProtocolVersion::DATAGRAMS);
    let v1_1 = ProtocolVersion { major: 1, minor: 1 };
    let (mut c, welcome) = QuicClient::login_at(quic, &cert, &carol.token, vec![], v1_1).await;
    assert_eq!(welcome.version, v1_1);
    for q in [&mut b, &mut c] {
        q.until(|f| matches!(f, ServerFrame::ReplayDone(_)).then_some(()))
            .await;
    }
    let (mut a, _) = WsClient::login_live(s.addr(), Sub::Json, &alice.token, vec![]).await;
    let typing = |active| {
        ClientFrame::Typing(SetTyping {
            conversation: cid(group),
            active,
        })
    };
    let typing_of = |f| match f {
        ServerFrame::Typing(t) => Some((t.user.get(), t.active)),
        _ => None,
    };

    // Alice types: Bob gets a datagram, Carol (1.1) the frame on her stream.
    a.send(&typing(true)).await;
    assert_eq!(typing_of(b.datagram().await), Some((alice.id, true)));
    assert_eq!(c.until(typing_of).await, (alice.id, true));

    // Bob types in a datagram: it reaches Alice and Carol.
    b.send_datagram(&typing(true));
    assert_eq!(a.until(typing_of).await, (bob.id, true));
    assert_eq!(c.until(typing_of).await, (bob.id, true));

    // A datagram from a 1.1 session, and a datagram holding anything but typing, are
    // discarded without an answer.
    c.send_datagram(&typing(true));
    b.send_datagram(&send(1, group, 1, "not by datagram"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.send(&send(2, group, 2, "on the stream")).await;
    let mut before = Vec::new();
    let m = a
        .until(|f| match f {
            ServerFrame::Message(m) => Some(m),
            other => {
                before.push(other);
                None
            }
        })
        .await;
    assert_eq!((m.seq.get(), m.body.as_text()), (1, Some("on the stream")));
    assert!(
        !before.iter().any(|f| matches!(f, ServerFrame::Typing(_))),
        "{before:?}"
    );
    let mut before = Vec::new();
    let ack = b
        .until(|f| match f {
            ServerFrame::Ack(ack) => Some(ack),
            other => {
                before.push(other);
                None
            }
        })
        .await;
    assert_eq!(ack.request_id, RequestId(2));
    // Bob got Alice's typing as a datagram only, and no answer to his.
    assert!(
        !before
            .iter()
            .any(|f| matches!(f, ServerFrame::Typing(_) | ServerFrame::Error(_))),
        "{before:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn quic_requires_the_chat_alpn() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let cert = s.server.quic_cert.path.clone();
    let refused = common::quic::connect(s.server.quic_addr, &cert, b"h3").await;
    assert!(refused.is_err(), "a wrong ALPN must not get a connection");
    let ok = common::quic::connect(s.server.quic_addr, &cert, chat_proto::version::ALPN).await;
    assert!(ok.is_ok());
    s.stop().await;
}

#[tokio::test]
async fn a_handshake_that_never_completes_is_closed_at_the_deadline() {
    let s = TestServer::start_with(TestDbKind::Sqlite, |c| c.handshake_timeout_ms = 300).await;
    let mut idle = WsClient::connect(s.addr(), Sub::Json).await;
    let started = std::time::Instant::now();
    let e = next_error(&mut idle).await;
    assert_eq!(e.code, ErrorCode::HandshakeTimeout);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(idle.recv().await.err(), Some(End::Closed(1008)));
    assert_eq!(s.server.app.hub().session_count(), 0);
    s.stop().await;
}

#[tokio::test]
async fn floods_of_requests_are_bounded_by_the_in_flight_window() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let alice = s.register("alice").await;
    let (mut a, welcome) =
        WsClient::login_live(s.addr(), Sub::Postcard, &alice.token, vec![]).await;
    let window = welcome.limits.max_in_flight;
    // Thousands of history requests at once, never waiting for answers.
    let total = 3000u32;
    for i in 0..total {
        a.send(&ClientFrame::History(History {
            request_id: RequestId(i),
            conversation: cid(1),
            before: None,
            limit: 1,
        }))
        .await;
    }
    let (mut answered, mut refused) = (0u32, 0u32);
    while answered + refused < total {
        match a.recv().await.expect("the connection survives the flood") {
            ServerFrame::Error(e) if e.code == ErrorCode::TooManyRequests => refused += 1,
            ServerFrame::Error(e) => {
                assert_eq!(e.code, ErrorCode::NotFound, "no such conversation");
                answered += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(answered >= window, "at least a window's worth was served");
    // The connection still works afterwards.
    a.send(&ClientFrame::Ping(chat_proto::frame::Ping { nonce: 9 }))
        .await;
    a.until(|f| matches!(f, ServerFrame::Pong(p) if p.nonce == 9).then_some(()))
        .await;
    s.stop().await;
}

#[tokio::test]
async fn quic_refuses_a_four_gigabyte_length_prefix() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let alice = s.register("alice").await;
    let cert = s.server.quic_cert.path.clone();
    let (mut a, _) =
        common::quic::QuicClient::login(s.server.quic_addr, &cert, &alice.token, vec![]).await;
    a.until(|f| matches!(f, ServerFrame::ReplayDone(_)).then_some(()))
        .await;
    a.send_raw(&[0xff, 0xff, 0xff, 0xff, 0x00]).await;
    let e = a
        .until(|f| match f {
            ServerFrame::Error(e) => Some(e),
            _ => None,
        })
        .await;
    assert_eq!(e.code, ErrorCode::FrameTooLarge);
    assert!(
        a.recv().await.is_none(),
        "the stream ends after a fatal error"
    );
    s.stop().await;
}

#[tokio::test]
async fn metrics_report_sessions_and_traffic() {
    let (s, alice, bob, conv) = alice_and_bob().await;
    let (mut a, _) = WsClient::login_live(s.addr(), Sub::Json, &alice.token, vec![]).await;
    let (mut b, _) = WsClient::login_live(s.addr(), Sub::Postcard, &bob.token, vec![]).await;
    a.send(&send(1, conv, 1, "counted")).await;
    next_message(&mut b).await;
    let r = s.call(http::Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers[http::header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/plain")
    );
    let text = String::from_utf8_lossy(&r.raw);
    for name in [
        "chat_connections{transport=\"websocket_json\"}",
        "chat_connections{transport=\"websocket_postcard\"}",
        "chat_handshakes_total{result=\"ok\"}",
        "chat_messages_received_total",
        "chat_messages_delivered_total",
        "chat_fanout_seconds_bucket",
        "chat_store_batch_size_bucket",
        "chat_store_commit_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    // Counters carry values, not just names.
    let received = text
        .lines()
        .find(|l| l.starts_with("chat_messages_received_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(received >= 1.0);
    s.stop().await;
}

#[tokio::test]
async fn pages_are_cut_to_the_frame_limit() {
    let s = TestServer::start_with(TestDbKind::Sqlite, |c| c.send_burst = 1000).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let conv = dm(&s, &alice, &bob).await;
    let (mut a, _) = WsClient::login_live(s.addr(), Sub::Postcard, &alice.token, vec![]).await;
    let big = "y".repeat(15 * 1024);
    for i in 1..=100u32 {
        a.send(&ClientFrame::Send(Send {
            request_id: RequestId(i),
            conversation: cid(conv),
            client_msg_id: ClientMsgId::from_bytes([i as u8; 16]),
            body: Body::Text(big.clone()),
        }))
        .await;
        if i % 50 == 0 {
            a.until(|f| {
                matches!(f, ServerFrame::Ack(ack) if ack.request_id == RequestId(i)).then_some(())
            })
            .await;
        }
    }
    // 100 x 15 KiB = 1.5 MiB: more than one postcard frame may carry.
    a.send(&ClientFrame::History(History {
        request_id: RequestId(500),
        conversation: cid(conv),
        before: None,
        limit: 100,
    }))
    .await;
    let page = a
        .until(|f| {
            if let ServerFrame::HistoryPage(p) = f {
                Some(p)
            } else {
                None
            }
        })
        .await;
    assert!(
        !page.messages.is_empty() && page.messages.len() < 100,
        "{} messages",
        page.messages.len()
    );
    assert!(page.has_more);
    assert_eq!(page.messages[0].seq.get(), 100, "newest first");
    s.stop().await;
}

#[tokio::test]
async fn encrypted_sends_must_be_sealed_for_exactly_the_members_devices() {
    use base64::Engine as _;
    use chat_crypto::e2e::{DevicePublicKey, DeviceSecret, message_aad};
    use chat_proto::body::Envelope;
    use chat_proto::version::ProtocolVersion;

    let s = TestServer::start(TestDbKind::Sqlite).await;
    let (ann, ben) = (s.register("ann").await, s.register("ben").await);
    let (ann_key, ben_key) = (DeviceSecret::generate(), DeviceSecret::generate());
    for (account, key) in [(&ann, &ann_key), (&ben, &ben_key)] {
        let public = base64::engine::general_purpose::STANDARD.encode(key.public_key().as_bytes());
        let r = s
            .post(
                "/api/devices",
                Some(&account.token),
                json!({"public_key": public}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let conv = s.encrypted_direct(&ann, &ben).await.body["id"]
        .as_u64()
        .expect("id");
    let sealed = |by: &DeviceSecret, for_: &[&DevicePublicKey], key: u8| {
        let aad = message_aad(conv, ann.id, &[key; 16]);
        Envelope(
            by.seal(b"sealed", for_.iter().copied(), &aad)
                .expect("seal")
                .into(),
        )
    };
    let frame = |request: u32, key: u8, body: Body| {
        ClientFrame::Send(Send {
            request_id: RequestId(request),
            conversation: cid(conv),
            client_msg_id: ClientMsgId::from_bytes([key; 16]),
            body,
        })
    };
    let (mut b, _) = WsClient::login_live(s.addr(), Sub::Postcard, &ben.token, vec![]).await;
    let (mut a, welcome) = WsClient::login(s.addr(), Sub::Json, &ann.token, vec![]).await;
    assert_eq!(welcome.version, common::V1_2);
    a.until_live().await;

    // Plain text is refused; an envelope for both devices is stored and forwarded as is.
    a.send(&send(1, conv, 1, "plain")).await;
    assert_eq!(next_error(&mut a).await.code, ErrorCode::EncryptionRequired);
    let good = sealed(&ann_key, &[ann_key.public_key(), ben_key.public_key()], 2);
    a.send(&frame(2, 2, Body::Encrypted(good.clone()))).await;
    let m = next_message(&mut b).await;
    assert_eq!(m.body, Body::Encrypted(good));

    // Not for exactly the members' devices: a device missing, or an outsider's added.
    let outsider = DeviceSecret::generate();
    for (request, for_) in [
        (3, vec![ann_key.public_key()]),
        (
            4,
            vec![
                ann_key.public_key(),
                ben_key.public_key(),
                outsider.public_key(),
            ],
        ),
    ] {
        a.send(&frame(
            request,
            request as u8,
            Body::Encrypted(sealed(&ann_key, &for_, request as u8)),
        ))
        .await;
        let e = next_error(&mut a).await;
        assert_eq!(
            (e.request_id, e.code),
            (Some(RequestId(request)), ErrorCode::DevicesChanged)
        );
    }
    // Sealed by a device that is not Ann's, not an envelope at all, or naming a device
    // twice (the second entry relabelled with the first one's id).
    let foreign = sealed(&ben_key, &[ann_key.public_key(), ben_key.public_key()], 5);
    let mut twice = sealed(&ann_key, &[ann_key.public_key(), ben_key.public_key()], 8)
        .0
        .to_vec();
    let (first, second) = (19, 19 + 96);
    let id: Vec<u8> = twice[first..first + 16].to_vec();
    twice[second..second + 16].copy_from_slice(&id);
    for (request, body) in [
        (5, foreign),
        (6, Envelope(vec![1u8; 30].into())),
        (8, Envelope(twice.into())),
    ] {
        a.send(&frame(request, request as u8, Body::Encrypted(body)))
            .await;
        let e = next_error(&mut a).await;
        assert_eq!(
            (e.request_id, e.code),
            (Some(RequestId(request)), ErrorCode::InvalidRequest)
        );
    }

    // A 1.0 client never sees the 1.1 code: it gets invalid_request instead.
    let older = ProtocolVersion { major: 1, minor: 0 };
    let (mut old, welcome) =
        WsClient::login_at(s.addr(), Sub::Postcard, &ann.token, vec![], older).await;
    assert_eq!(welcome.version, older);
    old.until_live().await;
    old.send(&frame(
        7,
        7,
        Body::Encrypted(sealed(&ann_key, &[ann_key.public_key()], 7)),
    ))
    .await;
    let e = next_error(&mut old).await;
    assert_eq!(
        (e.request_id, e.code),
        (Some(RequestId(7)), ErrorCode::InvalidRequest)
    );
    s.stop().await;
}
