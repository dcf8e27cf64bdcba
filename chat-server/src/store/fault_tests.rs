//! Store failures that must not outlive their cause: a full database, connections
//! killed mid-batch. Each test checks that the failure is reported clearly, that
//! writes work again as soon as the cause is gone, and that nothing acknowledged was
//! lost or stored twice.

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_proto::body::Body;
use chat_proto::ids::{ClientMsgId, ConversationId, Seq, Timestamp, UserId};
use sqlx::Connection as _;
#[cfg(feature = "postgres")]
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use super::append::Appender;
use super::*;
use crate::testing::{TestDb, TestDbKind};

fn send(conversation: ConversationId, sender: UserId, n: u32, text: String) -> NewEntry {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&n.to_be_bytes());
    NewEntry::message(
        conversation,
        sender,
        ClientMsgId::from_bytes(key),
        Body::Text(text),
        Timestamp::now(),
    )
}

async fn two_users_and_a_conversation(store: &dyn Store) -> (UserId, ConversationId) {
    let mut ids = Vec::new();
    for name in ["ada", "bea"] {
        let user = store
            .create_user(super::tests::new_user(name))
            .await
            .expect("user");
        ids.push(user.id);
    }
    let (conversation, _) = store
        .direct_conversation(ids[0], ids[1], false, Timestamp(1_000))
        .await
        .expect("conversation");
    (ids[0], conversation.id)
}

/// Every stored message of `conversation`, by seq.
async fn stored(store: &dyn Store, conversation: ConversationId) -> Vec<Entry> {
    let (mut page, more) = store
        .messages_after(conversation, Seq::ZERO, 10_000)
        .await
        .expect("history");
    assert!(!more);
    page.sort_by_key(|m| m.seq);
    page
}

/// Checks that the acknowledged messages are stored exactly once each, with the seqs
/// they were acknowledged with, and that seqs have no gaps.
fn assert_nothing_lost(acked: &BTreeMap<ClientMsgId, Entry>, stored: &[Entry]) {
    for (i, m) in stored.iter().enumerate() {
        assert_eq!(u64::from(m.seq), i as u64 + 1, "seqs have no gaps");
    }
    let mut by_key = BTreeMap::new();
    for m in stored {
        assert!(
            by_key.insert(m.client_msg_id, m).is_none(),
            "{:?} is stored twice",
            m.client_msg_id
        );
    }
    for (key, ack) in acked {
        let m = by_key
            .get(key)
            .unwrap_or_else(|| panic!("acknowledged {key:?} was lost"));
        assert_eq!((m.seq, m.id), (ack.seq, ack.id));
    }
}

/// SQLite whose size limit (`max_page_count`, set on every connection) is reached by
/// appends, then freed by deleting other rows: the appends fail with `Full`, the
/// readiness state says so, and once space is free the very next append commits.
#[tokio::test]
async fn a_full_sqlite_database_takes_writes_again_once_space_is_freed() {
    let db = TestDb::new(TestDbKind::Sqlite).await;
    let (ada, conversation) = two_users_and_a_conversation(db.store.as_ref()).await;

    // Something else takes most of the room: 64 pages of filler.
    let mut side = SqliteConnection::connect(&db.url).await.expect("side");
    sqlx::raw_sql(
        "CREATE TABLE filler (b BLOB); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 64) \
         INSERT INTO filler SELECT zeroblob(4000) FROM n",
    )
    .execute(&mut side)
    .await
    .expect("filler");
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut side)
        .await
        .expect("page count");

    // The store under test may grow by 16 pages at most.
    let options = SqliteConnectOptions::from_str(&db.url)
        .expect("url")
        .pragma("max_page_count", (pages + 16).to_string());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::connect_with(options).await.expect("store"));
    let appender = Appender::spawn(store.clone(), 256, None);

    // Send 1 KB messages, each after the last one's answer, until the database is full.
    let mut acked = BTreeMap::new();
    let mut n = 0u32;
    let error = loop {
        n += 1;
        assert!(n < 1_000, "the database never filled up");
        match appender
            .append(send(conversation, ada, n, "x".repeat(1024)))
            .await
        {
            Ok(Appended::New(m)) => {
                acked.insert(m.client_msg_id, m);
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break e,
        }
    };
    assert!(acked.len() > 5, "some messages fit: {}", acked.len());
    assert_eq!(error.kind(), StoreErrorKind::Full, "{error}");
    assert_eq!(appender.health().failing(), Some(StoreErrorKind::Full));
    // A full database keeps saying so (not some other error about its connections).
    for _ in 0..3 {
        let e = appender
            .append(send(conversation, ada, n, "x".repeat(1024)))
            .await
            .expect_err("still full");
        assert_eq!(e.kind(), StoreErrorKind::Full, "{e}");
    }
    assert!(
        appender.health().check(store.as_ref()).await.is_err(),
        "not ready while writes fail"
    );

    // Space is freed; the send that failed goes through at once.
    sqlx::query("DELETE FROM filler")
        .execute(&mut side)
        .await
        .expect("freed");
    let freed = Instant::now();
    let retried = appender
        .append(send(conversation, ada, n, "x".repeat(1024)))
        .await
        .expect("writes work again");
    assert!(freed.elapsed() < Duration::from_secs(1));
    let Appended::New(m) = retried else {
        panic!("the failed send was not stored, so it is new: {retried:?}")
    };
    acked.insert(m.client_msg_id, m);
    assert_eq!(appender.health().failing(), None);
    appender
        .health()
        .check(store.as_ref())
        .await
        .expect("ready again");

    // Other writes than appends work too (they share the pool).
    store
        .mark_read(conversation, ada, Seq::new(1).expect("seq"))
        .await
        .expect("mark read");
    assert_nothing_lost(&acked, &stored(store.as_ref(), conversation).await);
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut side)
        .await
        .expect("integrity check");
    assert_eq!(check, "ok");
}

/// PostgreSQL connections terminated by the server (`pg_terminate_backend`) while
/// several senders append: the batches hit are refused with `Unreachable`, retries
/// with the same `client_msg_id` are stored once, and writes work again within a
/// second of the last kill.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_connections_killed_mid_batch_leave_writes_working() {
    let db = TestDb::new(TestDbKind::Postgres).await;
    let (ada, conversation) = two_users_and_a_conversation(db.store.as_ref()).await;
    let name = format!("chat_fault_{:08x}", rand::random::<u32>());
    let options = PgConnectOptions::from_str(&db.url)
        .expect("url")
        .application_name(&name);
    let store: Arc<dyn Store> = Arc::new(PgStore::connect_with(options).await.expect("store"));
    let appender = Appender::spawn(store.clone(), 256, None);

    let killer = {
        let name = name.clone();
        tokio::spawn(async move {
            let options = PgConnectOptions::from_str(&crate::testing::postgres_url()).expect("url");
            let mut conn = sqlx::PgConnection::connect_with(&options)
                .await
                .expect("killer");
            let mut killed = 0i64;
            for _ in 0..25 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1) AS t",
                )
                .bind(&name)
                .fetch_one(&mut conn)
                .await
                .expect("terminate");
                killed += n;
            }
            killed
        })
    };

    // Eight senders, each sending its next message once the last one is answered and
    // retrying a failed one (same key) until it is stored.
    let senders: Vec<_> = (0..8u32)
        .map(|s| {
            let appender = appender.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut failures = 0;
                for i in 0..40u32 {
                    let n = s * 1_000 + i;
                    loop {
                        match appender
                            .append(send(conversation, ada, n, format!("m{n}")))
                            .await
                        {
                            Ok(Appended::New(m) | Appended::Duplicate(m)) => {
                                acked.push(m);
                                break;
                            }
                            Ok(other) => panic!("unexpected {other:?}"),
                            Err(e) => {
                                assert!(e.kind().is_transient(), "unclear error: {e}");
                                failures += 1;
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    }
                }
                (acked, failures)
            })
        })
        .collect();
    let mut acked = BTreeMap::new();
    let mut failures = 0;
    for s in senders {
        let (messages, failed) = s.await.expect("sender");
        failures += failed;
        for m in messages {
            acked.insert(m.client_msg_id, m);
        }
    }
    let killed = killer.await.expect("killer");
    assert!(killed > 0, "no connection was killed");
    eprintln!("killed {killed} connections, {failures} failed appends retried");

    // The kills are over: the next writes work at once.
    let started = Instant::now();
    let m = appender
        .append(send(conversation, ada, 99_999, "after".into()))
        .await
        .expect("writes work");
    assert!(started.elapsed() < Duration::from_secs(1));
    if let Appended::New(m) = m {
        acked.insert(m.client_msg_id, m);
    }
    assert_eq!(acked.len(), 8 * 40 + 1);
    assert_nothing_lost(&acked, &stored(store.as_ref(), conversation).await);
    db.cleanup().await;
}
