//! Message append throughput through the group-commit appender, on SQLite and on
//! PostgreSQL, with one writer (every send is its own transaction) and with 64
//! concurrent writers (sends share transactions). Numbers: BENCHMARKS.md.
//!
//! `cargo bench -p chat-server --bench append`
//! PostgreSQL: the server named by CHAT_TEST_DATABASE_URL (default: local `test` db).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_proto::body::Body;
use chat_proto::ids::{ClientMsgId, ConversationId, Timestamp};
use chat_server::store::append::Appender;
use chat_server::store::{Appended, NewEntry, NewUser, Store};
use chat_server::testing::{TestDb, TestDbKind};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PER_ITERATION: u64 = 640;
const CONVERSATIONS: usize = 8;

struct Fixture {
    db: TestDb,
    appender: Appender,
    conversations: Vec<ConversationId>,
    sender: chat_proto::ids::UserId,
}

async fn fixture(kind: TestDbKind) -> Fixture {
    let db = TestDb::new(kind).await;
    let store: Arc<dyn Store> = db.store.clone();
    let user = store
        .create_user(NewUser {
            username: "bench".into(),
            display_name: "Bench".into(),
            password_hash: "-".into(),
            created_at: Timestamp::now(),
        })
        .await
        .expect("user");
    let mut conversations = Vec::new();
    for i in 0..CONVERSATIONS {
        let c = store
            .create_group(
                user.id,
                format!("room {i}"),
                vec![],
                false,
                Timestamp::now(),
            )
            .await
            .expect("group");
        conversations.push(c.id);
    }
    Fixture {
        appender: Appender::spawn(store, 256, None),
        db,
        conversations,
        sender: user.id,
    }
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

async fn append_all(f: &Fixture, writers: u64) -> Duration {
    let per_writer = PER_ITERATION / writers;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let appender = f.appender.clone();
        let conversation = f.conversations[w as usize % f.conversations.len()];
        let sender = f.sender;
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_writer {
                let n = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&n.to_be_bytes());
                let m = NewEntry::message(
                    conversation,
                    sender,
                    ClientMsgId::from_bytes(key),
                    Body::Text("a typical short chat message, about sixty bytes long".into()),
                    Timestamp::now(),
                );
                let r = appender.append(m).await.expect("committed");
                assert!(matches!(r, Appended::New(_)));
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (name, kind) in [
        ("sqlite", TestDbKind::Sqlite),
        #[cfg(feature = "postgres")]
        ("postgres", TestDbKind::Postgres),
    ] {
        let f = rt.block_on(fixture(kind));
        let mut g = c.benchmark_group(format!("append_{name}"));
        g.throughput(Throughput::Elements(PER_ITERATION));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(8));
        for writers in [1u64, 64] {
            g.bench_function(format!("{writers}_writers"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += append_all(&f, writers).await;
                        }
                        total
                    })
                })
            });
        }
        g.finish();
        rt.block_on(f.db.cleanup());
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
