//! The SDK against a real in-process server, over both transports.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_sdk::chat_proto::prelude::*;
use chat_sdk::chat_proto::session::ConnectionState;
use chat_sdk::{ClientBuilder, ConversationKind, Error, Event, Events, Trust};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

mod common;

use common::{PASSWORD, TestServer, next_event, next_message, text};

/// A TCP relay that can sever every connection through it, as a flaky network does.
struct Relay {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let held = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().expect("lock").push(link);
            }
        });
        Self {
            addr,
            links,
            accept,
        }
    }

    /// Drops every connection mid-stream.
    fn cut(&self) {
        for link in self.links.lock().expect("lock").drain(..) {
            link.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_over_websocket_and_quic() {
    let server = TestServer::start().await;
    let alice = server
        .ws("alice-ws")
        .register("alice", PASSWORD, Some("Alice".into()))
        .connect()
        .await
        .expect("alice connects over WebSocket");
    let bob = server
        .quic("bob-quic")
        .register("bob", PASSWORD, None)
        .connect()
        .await
        .expect("bob connects over QUIC");
    let mut alice_events = alice.events();
    let mut bob_events = bob.events();
    alice.wait_for(ConnectionState::Live).await.expect("live");
    bob.wait_for(ConnectionState::Live).await.expect("live");

    // Profiles and search.
    let me = alice
        .update_profile(None, Some("hello there"))
        .await
        .expect("profile");
    assert_eq!(
        (me.display_name.as_str(), me.bio.as_str()),
        ("Alice", "hello there")
    );
    assert_eq!(
        bob.user(alice.user_id()).await.expect("user").bio,
        "hello there"
    );
    let found = bob.search_users("ali", 10, None).await.expect("search");
    assert_eq!(found.users.len(), 1);
    assert_eq!(found.users[0].id, alice.user_id());

    // A direct conversation, both ways.
    let dm = alice.create_direct(bob.user_id()).await.expect("DM");
    assert_eq!(dm.kind, ConversationKind::Direct);
    // A second subscriber sees everything from the moment it subscribes.
    let mut bob_second = bob.events();
    let ack = alice.send_text(dm.id, "hi bob").await.expect("acked");
    assert_eq!(ack.seq, Seq::new(1).unwrap());
    let got = next_message(&mut bob_events).await;
    assert_eq!((got.seq, got.id, text(&got)), (ack.seq, ack.id, "hi bob"));
    assert_eq!(next_message(&mut bob_second).await.id, ack.id);
    drop(bob_second);
    assert_eq!(got.sender, alice.user_id());
    // The sender sees her own message too (other devices would).
    assert_eq!(next_message(&mut alice_events).await.id, ack.id);
    let reply = bob.send_text(dm.id, "hi alice").await.expect("acked");
    assert_eq!(text(&next_message(&mut alice_events).await), "hi alice");
    // The server's search finds both, newest first, and says where they are.
    let page = alice
        .search("hi", Some(dm.id), None, 10)
        .await
        .expect("search");
    let hits: Vec<(Seq, &str)> = page
        .results
        .iter()
        .map(|r| (r.seq, r.text.as_str()))
        .collect();
    assert_eq!(hits, [(reply.seq, "hi alice"), (ack.seq, "hi bob")]);
    assert!(matches!(
        alice.search("  ", None, None, 10).await,
        Err(chat_sdk::Error::Api { status: 400, .. })
    ));
    // Bob's own copy, read before the typing below: a datagram may overtake it.
    assert_eq!(text(&next_message(&mut bob_events).await), "hi alice");

    // Typing and receipts. Over QUIC typing rides datagrams both ways: Bob's client
    // gets Alice's as one (the server sends typing no other way to a session at 1.2
    // that takes datagrams), and the server counts Bob's as one (no other test in this
    // binary sends any).
    alice.set_typing(dm.id, true).expect("typing");
    let typing = next_event(&mut bob_events, |e| matches!(e, Event::Typing(_))).await;
    assert!(matches!(typing, Event::Typing(t) if t.user == alice.user_id() && t.active));
    bob.set_typing(dm.id, true).expect("typing");
    let typing = next_event(&mut alice_events, |e| matches!(e, Event::Typing(_))).await;
    assert!(matches!(typing, Event::Typing(t) if t.user == bob.user_id() && t.active));
    let metrics = chat_server::metrics::render();
    assert!(
        metrics
            .lines()
            .any(|l| l == "chat_datagrams_received_total{outcome=\"typing\"} 1"),
        "{metrics}"
    );
    bob.mark_read(dm.id, reply.seq).await.expect("read");
    let receipt = next_event(&mut alice_events, |e| matches!(e, Event::Receipt(_))).await;
    assert!(matches!(receipt, Event::Receipt(r) if r.user == bob.user_id() && r.seq == reply.seq));
    let listed = alice.conversations().await.expect("list");
    assert_eq!(listed[0].conversation.id, dm.id);
    assert_eq!(listed[0].unread, 1, "bob's reply is unread for alice");

    // History pages, newest first.
    let page = bob.history(dm.id, None, 1).await.expect("history");
    assert_eq!(page.entries.len(), 1);
    assert_eq!(text(&page.entries[0]), "hi alice");
    assert!(page.has_more);
    let older = bob
        .history(dm.id, Some(page.entries[0].seq), 10)
        .await
        .expect("older");
    assert_eq!(text(&older.entries[0]), "hi bob");
    assert!(!older.has_more);

    // A group over both transports; a third member joins later.
    let carol = server
        .ws("carol")
        .register("carol", PASSWORD, None)
        .connect()
        .await
        .expect("carol");
    let mut carol_events = carol.events();
    let group = alice
        .create_group("friends", &[bob.user_id()])
        .await
        .expect("group");
    alice.send_text(group.id, "welcome").await.expect("acked");
    assert_eq!(text(&next_message(&mut bob_events).await), "welcome");
    let group = alice
        .add_member(group.id, carol.user_id())
        .await
        .expect("add");
    assert_eq!(group.members.len(), 3);
    next_event(&mut carol_events, |e| matches!(e, Event::Membership(_))).await;
    bob.send_text(group.id, "hi carol").await.expect("acked");
    // Joining a conversation makes everything in it new, older messages included.
    let m = next_message(&mut carol_events).await;
    assert_eq!((text(&m), m.seq.get()), ("welcome", 1));
    let m = next_message(&mut carol_events).await;
    assert_eq!((text(&m), m.seq.get()), ("hi carol", 2));
    carol.leave(group.id).await.expect("leave");
    assert!(matches!(
        carol.send_text(group.id, "still here?").await,
        Err(Error::Server {
            code: ErrorCode::NotFound,
            ..
        })
    ));

    // Presence: bob sees alice go offline when her only device disconnects. Closing
    // is a handshake with the server, not the two-second fallback.
    tokio::time::timeout(Duration::from_millis(1500), alice.close())
        .await
        .expect("closed promptly");
    let offline = next_event(
        &mut bob_events,
        |e| matches!(e, Event::Presence(p) if p.status == PresenceStatus::Offline),
    )
    .await;
    assert!(matches!(offline, Event::Presence(p) if p.user == alice.user_id()));
    assert!(matches!(
        alice.send_text(dm.id, "gone").await,
        Err(Error::Closed)
    ));
    drop((bob, carol));
    let mut server = server;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_handler_sees_everything_in_order_and_streams_still_work() {
    let mut server = TestServer::start().await;
    let alice = server
        .ws("alice")
        .register("alice", PASSWORD, None)
        .connect()
        .await
        .expect("alice");
    // Bob's handler is set before he connects: it sees the handshake, which no
    // stream could (none exists yet), and everything after it.
    let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
    let bob = {
        let seen = seen.clone();
        server
            .ws("bob")
            .register("bob", PASSWORD, None)
            .on_event(move |event| seen.lock().expect("not poisoned").push(event.clone()))
            .connect()
            .await
            .expect("bob")
    };
    bob.wait_for(ConnectionState::Live).await.expect("live");
    let dm = alice.create_direct(bob.user_id()).await.expect("DM");
    let first = alice.send_text(dm.id, "one").await.expect("acked");
    let has = |id: MessageId| {
        seen.lock()
            .expect("not poisoned")
            .iter()
            .any(|e| matches!(e, Event::Entry(m) if m.id == id))
    };
    tokio::time::timeout(common::WAIT, async {
        while !has(first.id) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the handler gets the message");
    // A stream subscribed now starts here: nothing was kept for it, the handler
    // having had it all.
    let mut bob_events = bob.events();
    let second = alice.send_text(dm.id, "two").await.expect("acked");
    let streamed = next_message(&mut bob_events).await;
    assert_eq!(
        streamed.id, second.id,
        "the stream starts when it subscribes"
    );

    let seen = seen.lock().expect("not poisoned").clone();
    assert!(
        matches!(seen.first(), Some(Event::Connected { user }) if *user == bob.user_id()),
        "the handler saw the first handshake: {seen:?}"
    );
    assert!(seen.iter().any(|e| matches!(e, Event::Live)));
    let messages: Vec<MessageId> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Entry(m) if m.conversation == dm.id => Some(m.id),
            _ => None,
        })
        .collect();
    assert_eq!(messages, [first.id, second.id], "each once, in order");
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::Entry(m) if m.conversation != dm.id)),
        "nothing else was delivered"
    );
    drop((alice, bob));
    server.stop().await;
}

/// Messages of `conversation` from `events` until `count` have arrived, starting at
/// seq `first`; asserts exactly-once, in order.
async fn collect_in_order(
    events: &mut Events,
    conversation: ConversationId,
    first: u64,
    count: u64,
) -> Vec<Entry> {
    let mut got: Vec<Entry> = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while (got.len() as u64) < count {
            match events.recv().await.expect("client running") {
                Event::Entry(m) if m.conversation == conversation => {
                    let expected = first + got.len() as u64;
                    assert_eq!(m.seq.get(), expected, "out of order or duplicated");
                    got.push(m);
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {count} messages arrived", got.len()));
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_drops_mid_stream_lose_and_duplicate_nothing() {
    let mut server = TestServer::start().await;
    let relay = Relay::start(server.http()).await;
    let sender = server
        .quic("sender")
        .register("sender", PASSWORD, None)
        .connect()
        .await
        .expect("sender");
    let flaky = ClientBuilder::new(format!("ws://{}", relay.addr))
        .register("flaky", PASSWORD, None)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .expect("flaky");
    let mut flaky_events = flaky.events();
    let dm = sender.create_direct(flaky.user_id()).await.expect("DM");

    // The other side sends 300 messages while the connection is cut again and again;
    // the flaky side also sends, and its sends survive the cuts.
    const N: u64 = 300;
    let burst = {
        let sender = sender.clone();
        tokio::spawn(async move {
            for i in 0..N {
                sender
                    .send_text(dm.id, format!("m{i}"))
                    .await
                    .expect("acked");
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    let mine = {
        let flaky = flaky.clone();
        tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..20 {
                acks.push(
                    flaky
                        .send_text(dm.id, format!("f{i}"))
                        .await
                        .expect("acked"),
                );
            }
            acks
        })
    };
    let cutter = tokio::spawn(async move {
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            relay.cut();
        }
        relay
    });
    burst.await.expect("sender");
    let acks = mine.await.expect("flaky sends");
    let _relay = cutter.await.expect("cutter");
    let got = collect_in_order(&mut flaky_events, dm.id, 1, N + 20).await;
    let mut texts: Vec<&str> = got.iter().map(text).collect();
    texts.sort_unstable();
    texts.dedup();
    assert_eq!(texts.len() as u64, N + 20, "every message once");
    // Each of flaky's sends was stored exactly once, under the seq its ack named.
    for ack in &acks {
        assert_eq!(got[ack.seq.get() as usize - 1].id, ack.id);
    }
    drop((sender, flaky));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_with_its_sqlite_file_is_survived() {
    let mut server = TestServer::start().await;
    let alice = server
        .quic("alice")
        .register("alice", PASSWORD, None)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .connect()
        .await
        .expect("alice");
    let bob = server
        .ws("bob")
        .register("bob", PASSWORD, None)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .connect()
        .await
        .expect("bob");
    let mut bob_events = bob.events();
    let dm = alice.create_direct(bob.user_id()).await.expect("DM");
    for i in 0..5 {
        alice
            .send_text(dm.id, format!("before {i}"))
            .await
            .expect("acked");
    }
    collect_in_order(&mut bob_events, dm.id, 1, 5).await;

    server.stop().await;
    // Sent while the server is down: queued, then delivered once it is back.
    let queued = {
        let alice = alice.clone();
        tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..5 {
                acks.push(
                    alice
                        .send_text(dm.id, format!("during {i}"))
                        .await
                        .expect("acked"),
                );
            }
            acks
        })
    };
    next_event(&mut bob_events, |e| matches!(e, Event::Disconnected { .. })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().await;

    let acks = tokio::time::timeout(Duration::from_secs(30), queued)
        .await
        .expect("queued sends acked after the restart")
        .expect("task");
    assert_eq!(
        acks.iter().map(|a| a.seq.get()).collect::<Vec<_>>(),
        vec![6, 7, 8, 9, 10]
    );
    let rest = collect_in_order(&mut bob_events, dm.id, 6, 5).await;
    assert_eq!(rest[0].id, acks[0].id);
    let page = bob.history(dm.id, None, 50).await.expect("history");
    assert_eq!(page.entries.len(), 10, "nothing lost, nothing doubled");
    drop((alice, bob));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_and_saved_logins_resume() {
    // Access tokens that live two seconds: every use after that needs a refresh.
    let mut server = TestServer::start_with(|c| c.access_token_ttl = 2).await;
    let relay = Relay::start(server.http()).await;
    let alice = ClientBuilder::new(format!("ws://{}", relay.addr))
        .register("alice", PASSWORD, None)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .connect()
        .await
        .expect("alice");
    let first = alice.tokens().await;
    let bob = server
        .ws("bob")
        .register("bob", PASSWORD, None)
        .connect()
        .await
        .expect("bob");
    let dm = bob.create_direct(alice.user_id()).await.expect("DM");
    let mut events = alice.events();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // HTTP calls and the next handshake both use a refreshed token.
    assert_eq!(alice.me().await.expect("me").username, "alice");
    let second = alice.tokens().await;
    assert_ne!(first, second, "rotated");
    relay.cut();
    next_event(&mut events, |e| matches!(e, Event::Connected { .. })).await;
    bob.send_text(dm.id, "after refresh").await.expect("acked");
    let m = next_message(&mut events).await;
    assert_eq!(text(&m), "after refresh");
    let cursors = alice.cursors().await.expect("cursors");
    alice.close().await;

    // A saved login resumes where it left off: only what came after is replayed.
    bob.send_text(dm.id, "while away").await.expect("acked");
    let saved = ClientBuilder::new(server.ws_url())
        .tokens(alice.tokens().await)
        .resume_from(cursors)
        .connect()
        .await
        .expect("resumes from saved tokens");
    let mut events = saved.events();
    let m = next_message(&mut events).await;
    assert_eq!((text(&m), m.seq.get()), ("while away", 2));

    // The first pair was rotated away: presenting it again revokes the whole login.
    let stale = ClientBuilder::new(server.ws_url())
        .tokens(first)
        .connect()
        .await;
    assert!(matches!(stale, Err(Error::Unauthorized)), "{stale:?}");
    drop((bob, saved));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_clear() {
    let mut server = TestServer::start().await;
    server
        .ws("taken")
        .register("taken", PASSWORD, None)
        .connect()
        .await
        .expect("registers")
        .close()
        .await;

    let wrong = server
        .ws("x")
        .login("taken", "not the password")
        .connect()
        .await;
    assert!(matches!(wrong, Err(Error::InvalidCredentials)), "{wrong:?}");
    let unknown = server.ws("x").login("nobody", PASSWORD).connect().await;
    assert!(
        matches!(unknown, Err(Error::InvalidCredentials)),
        "{unknown:?}"
    );
    let taken = server
        .ws("x")
        .register("taken", PASSWORD, None)
        .connect()
        .await;
    assert!(
        matches!(&taken, Err(Error::Api { status: 409, code, .. }) if code == "username_taken"),
        "{taken:?}"
    );

    // Nothing listens on the port.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let unreachable = ClientBuilder::new(format!("ws://{dead}"))
        .login("taken", PASSWORD)
        .connect()
        .await;
    assert!(
        matches!(unreachable, Err(Error::Unreachable(_))),
        "{unreachable:?}"
    );

    // QUIC with a pin that is not the server's certificate.
    let mismatch = ClientBuilder::new(format!("quic://{}", server.running().quic_addr))
        .api_url(format!("http://{}", server.http()))
        .trust(Trust::Pinned([7; 32]))
        .login("taken", PASSWORD)
        .connect()
        .await;
    assert!(
        matches!(mismatch, Err(Error::CertificateMismatch)),
        "{mismatch:?}"
    );
    // The same with the right fingerprint, as the server prints it.
    let pin = Trust::fingerprint(&server.running().quic_cert.fingerprint).expect("pin");
    let good = ClientBuilder::new(format!("quic://{}", server.running().quic_addr))
        .api_url(format!("http://{}", server.http()))
        .trust(pin)
        .login("taken", PASSWORD)
        .connect()
        .await
        .expect("pinned by fingerprint");
    good.close().await;

    let no_api = ClientBuilder::new("quic://127.0.0.1:4433")
        .login("a", "b")
        .connect()
        .await;
    assert!(matches!(no_api, Err(Error::Config(_))), "{no_api:?}");
    server.stop().await;
}
