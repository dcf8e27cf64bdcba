//! Several `chat-server` processes on one PostgreSQL database and one Redis: people on
//! different nodes chat in real time; a killed node's clients move to another node and
//! resume without loss or duplicates; a Redis restart is survived.
//!
//! Each test runs its own `redis-server` (so it can restart it without disturbing
//! anything else) and its own PostgreSQL schema. With the `s3` feature, the nodes share
//! files through a bucket on a real S3-compatible server (moto).

#[cfg(feature = "s3")]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chat_proto::prelude::*;
use chat_sdk::{Client, ClientBuilder, Event, Events};
use chat_server::testing::{TestDb, TestDbKind};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const PASSWORD: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(20);

/// A private `redis-server` on a free port.
struct Redis {
    port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Redis {
    async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.boot().await;
        redis
    }

    async fn boot(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (the machine's Redis package)");
        self.child = Some(child);
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.ok();
        }
    }
}

/// One `chat-server` process of the cluster.
struct Node {
    addr: SocketAddr,
    child: Child,
}

impl Node {
    /// Starts a node; all nodes share `data_dir` (the token signing key) and the database.
    async fn start(
        db: &TestDb,
        redis: &Redis,
        channel: &str,
        data_dir: &Path,
        env: &[(String, String)],
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["--http-addr", "127.0.0.1:0", "--quic-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--database-url", &db.url])
            .args(["--redis-url", &redis.url()])
            .args(["--redis-channel", channel])
            .args(["--send-rate", "10000", "--send-burst", "10000"])
            .env("RUST_LOG", "warn,chat_server::cluster=info")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chat-server starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("HTTP API and WebSocket: http://").nth(1)
                    && let Some(addr) = rest.split("/api").next()
                {
                    return addr.parse::<SocketAddr>().expect("address");
                }
            }
            panic!("chat-server exited before it was ready");
        })
        .await
        .expect("chat-server ready in time");
        // Keep draining its log (shown with --nocapture).
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[node {addr}] {line}");
            }
        });
        Self { addr, child }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Kills the process at once: no `go_away`, no goodbye on the bus.
    async fn kill(&mut self) {
        self.child.kill().await.ok();
    }
}

/// A load balancer in front of the nodes: each new connection goes to the first node
/// that accepts it.
struct Balancer {
    addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl Balancer {
    async fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let backends = backends.clone();
                tokio::spawn(async move {
                    for backend in backends {
                        if let Ok(mut outbound) = TcpStream::connect(backend).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, accept }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// What one test needs: a database, a Redis, a channel, a shared data directory, and
/// environment variables for every node.
struct Cluster {
    db: Option<TestDb>,
    redis: Redis,
    channel: String,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Cluster {
    async fn new() -> Self {
        Self {
            db: Some(TestDb::new(TestDbKind::Postgres).await),
            redis: Redis::start().await,
            channel: format!("chat-test:{:016x}", rand::random::<u64>()),
            dir: tempfile::tempdir().expect("temporary directory"),
            env: Vec::new(),
        }
    }

    async fn node(&self) -> Node {
        Node::start(
            self.db.as_ref().expect("database"),
            &self.redis,
            &self.channel,
            self.dir.path(),
            &self.env,
        )
        .await
    }

    async fn cleanup(mut self) {
        self.redis.stop().await;
        if let Some(db) = self.db.take() {
            db.cleanup().await;
        }
    }
}

async fn person(url: &str, name: &str) -> (Client, Events) {
    let client = ClientBuilder::new(url)
        .client_name(name)
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .register(name, PASSWORD, None)
        .connect()
        .await
        .expect("connects");
    let events = client.events();
    (client, events)
}

async fn next_event(events: &mut Events, mut pick: impl FnMut(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("client still running");
            if pick(&event) {
                return event;
            }
        }
    })
    .await
    .expect("event within the deadline")
}

fn text(m: &Entry) -> String {
    m.text().unwrap_or("<not text>").to_owned()
}

/// Collects `n` messages of `conversation`, in the order the client hands them over.
async fn messages(events: &mut Events, conversation: ConversationId, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        if let Event::Entry(m) = next_event(events, |e| matches!(e, Event::Entry(_))).await
            && m.conversation == conversation
        {
            got.push(text(&m));
        }
    }
    got
}

/// A plain HTTP/1.0 GET; the whole response as text.
async fn get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    response
}

/// Fails if a message arrives within half a second (a duplicate trailing behind).
async fn no_more_messages(events: &mut Events) {
    let extra = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Some(Event::Entry(m)) = events.recv().await {
                return m;
            }
        }
    })
    .await;
    assert!(extra.is_err(), "unexpected extra message {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_on_different_nodes_chat_in_real_time() {
    let cluster = Cluster::new().await;
    let a = cluster.node().await;
    let b = cluster.node().await;
    let (alice, mut alice_events) = person(&a.url(), "alice").await;
    let (bob, mut bob_events) = person(&b.url(), "bob").await;
    let (carol, mut carol_events) = person(&b.url(), "carol").await;

    // A direct conversation across nodes: presence, typing and messages both ways.
    let dm = alice.create_direct(bob.user_id()).await.expect("dm").id;
    let online = next_event(
        &mut bob_events,
        |e| matches!(e, Event::Presence(p) if p.user == alice.user_id()),
    )
    .await;
    assert!(
        matches!(online, Event::Presence(p) if p.status == PresenceStatus::Online),
        "{online:?}"
    );
    alice.set_typing(dm, true).expect("typing");
    next_event(
        &mut bob_events,
        |e| matches!(e, Event::Typing(t) if t.user == alice.user_id() && t.active),
    )
    .await;
    let hers = alice.send_text(dm, "hello from node A").await.expect("ack");
    assert_eq!(
        messages(&mut bob_events, dm, 1).await,
        ["hello from node A"]
    );
    let his = bob.send_text(dm, "hello from node B").await.expect("ack");
    assert_eq!(
        messages(&mut alice_events, dm, 2).await,
        ["hello from node A", "hello from node B"]
    );

    // Relations cross nodes as entries, in the conversation's order.
    bob.react(dm, hers.seq, "👍").await.expect("reacted");
    bob.edit(dm, his.seq, "hello from node B, edited")
        .await
        .expect("edited");
    let mut relations = Vec::new();
    while relations.len() < 2 {
        if let Event::Entry(e) = next_event(
            &mut alice_events,
            |e| matches!(e, Event::Entry(x) if x.conversation == dm),
        )
        .await
        {
            relations.push(e.content);
        }
    }
    assert_eq!(
        relations,
        [
            Content::Reaction {
                target: hers.seq,
                reaction: Some(Reaction::Emoji("👍".into())),
            },
            Content::Edit {
                target: his.seq,
                body: Some(Body::Text("hello from node B, edited".into())),
            },
        ]
    );

    // A group spanning both nodes: everyone sees every message once, in one order.
    let group = alice
        .create_group("both nodes", &[bob.user_id(), carol.user_id()])
        .await
        .expect("group")
        .id;
    let mut sends = Vec::new();
    for (client, name) in [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")] {
        for i in 0..20 {
            sends.push(client.send_text(group, format!("{name} {i}")));
        }
    }
    for ack in futures_util::future::join_all(sends).await {
        ack.expect("ack");
    }
    let seen_by_alice = messages(&mut alice_events, group, 60).await;
    let seen_by_bob = messages(&mut bob_events, group, 60).await;
    let seen_by_carol = messages(&mut carol_events, group, 60).await;
    assert_eq!(seen_by_alice, seen_by_bob, "one order on every node");
    assert_eq!(seen_by_alice, seen_by_carol);
    let mut distinct = seen_by_alice.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 60);

    // Read receipts cross nodes too.
    let last = alice.cursors().await.expect("cursors");
    let seq = last
        .iter()
        .find(|c| c.conversation == group)
        .map(|c| c.seq)
        .expect("cursor");
    carol.mark_read(group, seq).await.expect("mark read");
    next_event(
        &mut alice_events,
        |e| matches!(e, Event::Receipt(r) if r.user == carol.user_id() && r.seq == seq),
    )
    .await;

    // Node B's metrics show the bus: subscribed, and how late frames from node A came.
    let metrics = get(b.addr, "/metrics").await;
    assert!(
        metrics.contains("chat_cluster_bus_connected 1"),
        "{metrics}"
    );
    let lagged = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chat_cluster_bus_lag_seconds_count "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .expect("a lag histogram");
    // At least Alice's 20 group messages came from node A over the bus.
    assert!(
        lagged >= 20,
        "frames from node A went through the bus: {lagged}"
    );

    // Alice leaves (her only session, on node A): Bob on node B sees her go offline.
    alice.close().await;
    next_event(&mut bob_events, |e| {
        matches!(e, Event::Presence(p) if p.user == alice.user_id() && p.status == PresenceStatus::Offline)
    })
    .await;
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_clients_move_to_another_and_miss_nothing() {
    let cluster = Cluster::new().await;
    let mut a = cluster.node().await;
    let b = cluster.node().await;
    let balancer = Balancer::start(vec![a.addr, b.addr]).await;
    // Alice reaches node A through the balancer; Bob is on node B.
    let (alice, mut alice_events) = person(&balancer.url(), "alice").await;
    let (bob, mut bob_events) = person(&b.url(), "bob").await;
    let dm = alice.create_direct(bob.user_id()).await.expect("dm").id;

    // Both keep sending while node A dies under Alice.
    let sender = |client: Client, name: &'static str| {
        tokio::spawn(async move {
            for i in 0..60 {
                client
                    .send_text(dm, format!("{name} {i}"))
                    .await
                    .expect("every send is acknowledged exactly once");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client
        })
    };
    let alice_sends = sender(alice, "alice");
    let bob_sends = sender(bob, "bob");
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.kill().await;
    let alice = alice_sends.await.expect("alice's sends");
    let bob = bob_sends.await.expect("bob's sends");

    let seen_by_alice = messages(&mut alice_events, dm, 120).await;
    let seen_by_bob = messages(&mut bob_events, dm, 120).await;
    assert_eq!(seen_by_alice, seen_by_bob, "one order, nothing missing");
    let mut per_sender: HashMap<&str, Vec<usize>> = HashMap::new();
    for m in &seen_by_alice {
        let (name, i) = m.split_once(' ').expect("name i");
        per_sender
            .entry(if name == "alice" { "alice" } else { "bob" })
            .or_default()
            .push(i.parse().expect("number"));
    }
    for (name, got) in per_sender {
        assert_eq!(
            got,
            (0..60).collect::<Vec<_>>(),
            "{name}'s messages, each once, in order"
        );
    }
    // Nothing more arrives: no duplicates trailing behind.
    no_more_messages(&mut alice_events).await;
    drop((alice, bob));
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_survived() {
    let mut cluster = Cluster::new().await;
    let a = cluster.node().await;
    let b = cluster.node().await;
    let (alice, mut alice_events) = person(&a.url(), "alice").await;
    let (bob, mut bob_events) = person(&b.url(), "bob").await;
    let dm = alice.create_direct(bob.user_id()).await.expect("dm").id;
    bob.send_text(dm, "before").await.expect("ack");
    assert_eq!(messages(&mut alice_events, dm, 1).await, ["before"]);

    // Redis goes away: each node goes on serving its own users, and what is sent now
    // is stored, though the other node cannot hear of it yet.
    cluster.redis.stop().await;
    bob.send_text(dm, "during 1")
        .await
        .expect("stored without Redis");
    alice
        .send_text(dm, "during 2")
        .await
        .expect("stored without Redis");
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.redis.boot().await;

    // Once Redis is back, everyone has everything, exactly once, in order.
    let expect = ["before", "during 1", "during 2", "after"];
    bob.send_text(dm, "after").await.expect("ack");
    assert_eq!(messages(&mut alice_events, dm, 3).await, expect[1..]);
    assert_eq!(messages(&mut bob_events, dm, 4).await, expect);
    no_more_messages(&mut alice_events).await;
    drop((alice, bob));
    cluster.cleanup().await;
}

/// A node that commits an entry and dies before publishing it (nothing follows in that
/// conversation): once the survivors declare it gone, their sessions get the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_node_committed_before_dying_reaches_the_survivors_sessions() {
    use chat_server::store::NewEntry;
    let cluster = Cluster::new().await;
    let a = cluster.node().await;
    let mut b = cluster.node().await;
    let (alice, mut alice_events) = person(&a.url(), "alice").await;
    let (bob, _bob_events) = person(&b.url(), "bob").await;
    let dm = alice.create_direct(bob.user_id()).await.expect("dm").id;
    bob.send_text(dm, "before").await.expect("sent");
    assert_eq!(messages(&mut alice_events, dm, 1).await, ["before"]);

    // Node B's commit, through the store it writes with, that it never publishes: it is
    // killed at once.
    let store = chat_server::store::open(&cluster.db.as_ref().expect("database").url)
        .await
        .expect("store");
    let entry = NewEntry::message(
        dm,
        bob.user_id(),
        ClientMsgId::from_bytes([7; 16]),
        Body::Text("committed, never published".into()),
        Timestamp::now(),
    );
    let stored = store.append_batch(vec![entry]).await.expect("commits");
    assert!(matches!(stored[0], chat_server::store::Appended::New(_)));
    b.kill().await;

    // Node A declares B gone after its silence and catches its sessions up.
    let wait = chat_server::cluster::NODE_TIMEOUT + chat_server::cluster::ALIVE_EVERY * 3;
    let got = tokio::time::timeout(wait, messages(&mut alice_events, dm, 1))
        .await
        .expect("the entry arrives once node B is declared gone");
    assert_eq!(got, ["committed, never published"]);
    no_more_messages(&mut alice_events).await;
    drop((alice, bob, store));
    cluster.cleanup().await;
}

/// Files in a bucket are the cluster's: an upload started on one node goes on through
/// another, and a member on a third connection downloads it from either node.
#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_share_files_through_a_bucket() {
    use chat_proto::body::{Attachments, FileId, FileRef};
    use std::ops::ControlFlow;
    let moto = common::s3::Moto::start().await;
    let bucket = moto.bucket().await;
    let mut cluster = Cluster::new().await;
    cluster.env = bucket.env.clone();
    cluster
        .env
        .push(("CHAT_FILE_STORE".into(), bucket.setting.clone()));
    let a = cluster.node().await;
    let b = cluster.node().await;
    let (alice, _alice_events) = person(&a.url(), "alice").await;
    let (bob, mut bob_events) = person(&b.url(), "bob").await;
    let dm = alice.create_direct(bob.user_id()).await.expect("dm").id;

    let content: Vec<u8> = (0..6 * 1024 * 1024 + 5).map(|i| (i % 239) as u8).collect();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("photos.tar");
    std::fs::write(&path, &content).expect("file");
    // Node A stores the first chunk; alice pauses there.
    let paused = alice
        .upload_file(&path, "application/x-tar", |_, _| ControlFlow::Break(()))
        .await
        .expect("first chunk");
    assert_eq!(paused.received, chat_sdk::files::CHUNK as u64);
    // Her other device, on node B, finishes it.
    let other = ClientBuilder::new(b.url())
        .client_name("alice-laptop")
        .login("alice", PASSWORD)
        .connect()
        .await
        .expect("alice on node B");
    let done = other
        .resume_upload(&paused.id, &path, |_, _| ControlFlow::Continue(()))
        .await
        .expect("the rest");
    assert!(done.is_complete(), "{done:?}");
    let keys = moto.keys(&bucket, &format!("files/{}/", paused.id)).await;
    assert_eq!(keys.len(), 2, "a part from each node: {keys:?}");

    let file = FileRef {
        id: FileId(paused.id.clone()),
        name: "photos.tar".into(),
        size: content.len() as u64,
        media_type: "application/x-tar".into(),
        image: None,
    };
    other
        .send(
            dm,
            chat_sdk::new_client_msg_id(),
            Body::Attachments(Attachments {
                text: "the photos".into(),
                files: vec![file.clone()],
            }),
        )
        .await
        .expect("sent");
    next_event(&mut bob_events, |e| {
        matches!(e, Event::Entry(m) if m.conversation == dm
            && matches!(m.body(), Some(Body::Attachments(a)) if a.files.len() == 1))
    })
    .await;
    // Bob, whose session is on node B, downloads through either node.
    for node in [&a, &b] {
        let reader = ClientBuilder::new(node.url())
            .login("bob", PASSWORD)
            .connect()
            .await
            .expect("bob");
        let mut got = Vec::new();
        reader
            .download_attachment(&file, &mut got)
            .await
            .expect("download");
        assert!(got == content, "node {} served other bytes", node.addr);
    }
    drop((alice, bob, other));
    cluster.cleanup().await;
}
