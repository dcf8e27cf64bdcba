//! Real faults against a running server: what clients are told, what `/readyz` says,
//! how soon writes work again, and that nothing acknowledged is lost.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chat_proto::body::Body;
use chat_proto::error::ErrorCode;
use chat_proto::frame::{Ack, ClientFrame, Send, ServerFrame};
use chat_proto::ids::{ClientMsgId, ConversationId, RequestId};
use chat_server::testing::TestDbKind;
use common::TestServer;
use common::ws::{Sub, WsClient};
use http::{Method, StatusCode};
use sqlx::Connection as _;

/// A small tmpfs, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount` takes it) on a new directory. Needs root;
    /// `None` when not root (the caller says the case was skipped).
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(Self { dir }),
            _ if !is_root() => None,
            other => panic!("mounting a tmpfs as root failed: {other:?}"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk with a file, then shortens it so `free` bytes stay free.
    fn fill_leaving(&self, free: u64) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        file.set_len(written.saturating_sub(free)).expect("shorten");
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily, so a test that failed with the database still open leaves no mount.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn send(request: u32, conversation: ConversationId, n: u32) -> ClientFrame {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&n.to_be_bytes());
    ClientFrame::Send(Send {
        request_id: RequestId(request),
        conversation,
        client_msg_id: ClientMsgId::from_bytes(key),
        body: Body::Text(format!("{n:04} {}", "x".repeat(1019))),
    })
}

/// The answer to the send with `request`: its ack, or its error.
async fn answer(c: &mut WsClient, request: u32) -> Result<Ack, chat_proto::frame::Error> {
    c.until(|f| match f {
        ServerFrame::Ack(a) if a.request_id == RequestId(request) => Some(Ok(a)),
        ServerFrame::Error(e) if e.request_id == Some(RequestId(request)) => Some(Err(e)),
        _ => None,
    })
    .await
}

/// Every acknowledged message (`n` → its ack) is in the history once, at its
/// acknowledged seq, and nothing else is.
async fn assert_stored_once(
    s: &TestServer,
    token: &str,
    conversation: ConversationId,
    acked: &BTreeMap<u32, Ack>,
) {
    let page = s
        .get(
            &format!("/api/conversations/{conversation}/messages?limit=100"),
            token,
        )
        .await;
    let mut stored: Vec<(u64, u32)> = page.body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            let text = m["body"]["text"].as_str().expect("text");
            (
                m["seq"].as_u64().expect("seq"),
                text[..4].parse().expect("n"),
            )
        })
        .collect();
    stored.sort_unstable();
    let mut expected: Vec<(u64, u32)> = acked.iter().map(|(&k, a)| (u64::from(a.seq), k)).collect();
    expected.sort_unstable();
    assert_eq!(
        stored, expected,
        "every acknowledged message, once, at its seq"
    );
    assert_eq!(stored.len(), acked.len());
}

/// The defect an operator found: once the disk of a SQLite server had been full,
/// writes never worked again until a restart. Now: while full, sends are answered
/// `unavailable` with a retry time and `/readyz` says why; once space is freed, the
/// next send is stored within a second; nothing acknowledged is lost, and the
/// database passes its integrity check.
#[tokio::test]
async fn a_full_disk_refuses_sends_clearly_and_writes_work_again_once_freed() {
    let Some(disk) = SmallDisk::mount("8m") else {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    };
    let db_path = disk.path().join("chat.db");
    let url = format!("sqlite://{}", db_path.display());
    let s =
        TestServer::start_with(TestDbKind::Sqlite, |c| c.database_url = Some(url.clone())).await;
    let ada = s.register("ada").await;
    let bea = s.register("bea").await;
    let conversation = ConversationId::new(s.direct(&ada, &bea).await).expect("id");
    let filler = disk.fill_leaving(512 * 1024);

    // One client sends 1 KB messages as fast as the acks come back.
    let (mut c, _) = WsClient::login_live(s.addr(), Sub::Postcard, &ada.token, vec![]).await;
    let mut acked = BTreeMap::new();
    let mut n = 0u32;
    let refused = loop {
        n += 1;
        assert!(n < 5_000, "the disk never filled up");
        c.send(&send(n, conversation, n)).await;
        match answer(&mut c, n).await {
            Ok(ack) => {
                acked.insert(n, ack);
            }
            Err(e) => break e,
        }
    };
    assert!(acked.len() > 5, "some messages fit: {}", acked.len());
    assert_eq!(refused.code, ErrorCode::Unavailable, "{refused:?}");
    assert!(refused.retry_after_ms.is_some_and(|ms| ms > 0));
    let ready = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("full")),
        "{}",
        ready.body
    );
    // Still full: still refused the same way.
    c.send(&send(n + 10_000, conversation, n)).await;
    let again = answer(&mut c, n + 10_000).await.expect_err("still full");
    assert_eq!(again.code, ErrorCode::Unavailable);
    let metrics = s.call(Method::GET, "/metrics", None, None).await;
    let text = String::from_utf8_lossy(&metrics.raw);
    assert!(
        text.lines()
            .any(|l| l.starts_with("chat_store_errors_total{kind=\"full\"}")),
        "store errors are counted by kind"
    );

    // The operator frees space; the client's retry of the refused send (same key) is
    // stored within a second.
    std::fs::remove_file(&filler).expect("free space");
    let freed = Instant::now();
    let request = n + 20_000;
    let ack = loop {
        c.send(&send(request, conversation, n)).await;
        match answer(&mut c, request).await {
            Ok(ack) => break ack,
            Err(e) => {
                assert!(
                    freed.elapsed() < Duration::from_secs(1),
                    "writes did not come back: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    acked.insert(n, ack);
    for k in n + 1..n + 20 {
        c.send(&send(k + 30_000, conversation, k)).await;
        let ack = answer(&mut c, k + 30_000).await.expect("stored");
        acked.insert(k, ack);
    }
    let ready = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);

    assert_stored_once(&s, &ada.token, conversation, &acked).await;
    s.stop().await;

    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .expect("integrity check");
    assert_eq!(check, "ok");
    conn.close().await.ok();
    drop(disk);
}

/// A PostgreSQL server of the test's own (started as the `postgres` user, since initdb
/// refuses root), on a free port in a temporary directory; stopped when dropped.
#[cfg(feature = "postgres")]
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

#[cfg(feature = "postgres")]
impl PrivatePostgres {
    /// `None` when not root or without PostgreSQL's server binaries.
    fn start() -> Option<Self> {
        if !is_root() {
            return None;
        }
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists())?;
        let dir = tempfile::tempdir().expect("directory");
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(status.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let pg = Self { dir, bin, port };
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        pg.up();
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn as_postgres(&self, program: &str, args: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .output()
            .expect("runuser");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &format!("{}/log", self.data()),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server the hard way: no checkpoint, connections cut (a crash as far
    /// as clients are concerned; recovery replays the write-ahead log).
    fn crash(&self) {
        self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

#[cfg(feature = "postgres")]
impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

/// PostgreSQL crashes under a sending client: sends are answered `unavailable` with a
/// retry time and `/readyz` says so; once the database is back, the client's retry of
/// the refused send (same key) is stored, writes go on, and every acknowledged message
/// is stored exactly once at its acknowledged seq.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_crash_is_survived_without_losing_an_acknowledged_message() {
    let Some(pg) = PrivatePostgres::start() else {
        eprintln!("skipped: a private PostgreSQL needs root and its server binaries");
        return;
    };
    let url = pg.url();
    let s =
        TestServer::start_with(TestDbKind::Sqlite, |c| c.database_url = Some(url.clone())).await;
    let ada = s.register("ada").await;
    let bea = s.register("bea").await;
    let conversation = ConversationId::new(s.direct(&ada, &bea).await).expect("id");
    let (mut c, _) = WsClient::login_live(s.addr(), Sub::Postcard, &ada.token, vec![]).await;
    let mut acked = BTreeMap::new();
    for n in 1..=20u32 {
        c.send(&send(n, conversation, n)).await;
        acked.insert(n, answer(&mut c, n).await.expect("stored"));
    }

    pg.crash();
    let n = 21u32;
    c.send(&send(n, conversation, n)).await;
    // The pool gives up on the database within its acquire timeout (5 s).
    let refused = loop {
        match c
            .recv_within(Duration::from_secs(15))
            .await
            .expect("an answer")
        {
            ServerFrame::Error(e) if e.request_id == Some(RequestId(n)) => break e,
            ServerFrame::Ack(a) if a.request_id == RequestId(n) => {
                panic!("stored while down: {a:?}")
            }
            _ => {}
        }
    };
    assert_eq!(refused.code, ErrorCode::Unavailable, "{refused:?}");
    assert!(refused.retry_after_ms.is_some_and(|ms| ms > 0));
    let ready = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );

    pg.up();
    let back = Instant::now();
    let mut request = 1_000u32;
    let ack = loop {
        request += 1;
        c.send(&send(request, conversation, n)).await;
        match answer(&mut c, request).await {
            Ok(ack) => break ack,
            Err(e) => {
                assert!(
                    back.elapsed() < Duration::from_secs(15),
                    "writes did not come back: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    acked.insert(n, ack);
    for k in n + 1..n + 20 {
        c.send(&send(k + 30_000, conversation, k)).await;
        acked.insert(k, answer(&mut c, k + 30_000).await.expect("stored"));
    }
    let ready = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);

    assert_stored_once(&s, &ada.token, conversation, &acked).await;
    s.stop().await;
    drop(pg);
}

/// A long lock held by another connection (an operator's migration, a stuck batch
/// job): a send is refused with `unavailable` and a retry time once the lock timeout
/// passes, instead of waiting in silence behind it; reads go on meanwhile; once the
/// lock is gone the retry of the refused send (same key) is stored at once.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lock_makes_sends_back_off_and_writes_resume_when_it_ends() {
    let s = TestServer::start(TestDbKind::Postgres).await;
    let ada = s.register("ada").await;
    let bea = s.register("bea").await;
    let conversation = ConversationId::new(s.direct(&ada, &bea).await).expect("id");
    let (mut c, _) = WsClient::login_live(s.addr(), Sub::Json, &ada.token, vec![]).await;
    c.send(&send(1, conversation, 1)).await;
    answer(&mut c, 1).await.expect("stored");

    // Another connection holds the conversations table against writers.
    let mut locker = sqlx::PgConnection::connect(&s.db.url)
        .await
        .expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut locker)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE conversations IN EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock");
    let locked = Instant::now();
    c.send(&send(2, conversation, 2)).await;
    let refused = loop {
        match c
            .recv_within(Duration::from_secs(15))
            .await
            .expect("an answer")
        {
            ServerFrame::Error(e) if e.request_id == Some(RequestId(2)) => break e,
            ServerFrame::Ack(a) if a.request_id == RequestId(2) => {
                panic!("stored under the lock: {a:?}")
            }
            _ => {}
        }
    };
    let waited = locked.elapsed();
    assert_eq!(refused.code, ErrorCode::Unavailable, "{refused:?}");
    assert!(refused.retry_after_ms.is_some_and(|ms| ms > 0));
    assert!(
        waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );
    // Reads are not held up by it.
    let page = s
        .get(
            &format!("/api/conversations/{conversation}/messages"),
            &ada.token,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);

    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("unlock");
    let freed = Instant::now();
    c.send(&send(3, conversation, 2)).await;
    let ack = answer(&mut c, 3)
        .await
        .expect("stored once the lock is gone");
    assert!(
        freed.elapsed() < Duration::from_secs(2),
        "took {:?}",
        freed.elapsed()
    );
    assert_eq!(
        u64::from(ack.seq),
        2,
        "the refused send was not stored before"
    );
    locker.close().await.ok();
    s.stop().await;
}
