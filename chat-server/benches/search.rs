//! Message search latency over a large log, on SQLite and PostgreSQL: fills a fresh
//! database with MESSAGES messages (default 1,000,000) of generated text in 200 group
//! conversations, then times queries of every kind (rare, common and very common
//! words, two words, a phrase, a prefix, Chinese characters) as a member of 40 of the
//! conversations, newest 20 first. Prints the fill rate and p50/p95 per query and
//! overall. Numbers: BENCHMARKS.md.
//!
//! `cargo bench -p chat-server --features postgres --bench search`
//! (`MESSAGES=100000` for a quick run, `ONLY=sqlite` or `ONLY=postgres` for one
//! backend; PostgreSQL: CHAT_TEST_DATABASE_URL, default the local `test` database, in
//! a fresh schema dropped afterwards.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_api::search::Query;
use chat_proto::body::Body;
use chat_proto::ids::{ClientMsgId, ConversationId, Timestamp, UserId};
use chat_server::store::{NewEntry, NewUser, Store};
use chat_server::testing::{TestDb, TestDbKind};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

const CONVERSATIONS: usize = 200;
const MEMBER_OF: usize = 40;
const VOCABULARY: usize = 20_000;
const BATCH: usize = 1_000;
const RUNS: usize = 20;

/// Pronounceable words: the vocabulary, most frequent first.
fn vocabulary() -> Vec<String> {
    const SYLLABLES: &[&str] = &[
        "ka", "to", "mi", "re", "su", "no", "ha", "ri", "ve", "lo", "na", "shi", "ta", "mo", "ke",
        "ra", "pu", "di", "zo", "be", "fi", "gu", "lan", "ter", "son", "mar", "el",
    ];
    let mut words = Vec::with_capacity(VOCABULARY);
    let mut rng = StdRng::seed_from_u64(7);
    while words.len() < VOCABULARY {
        let n = rng.random_range(2..=4);
        let w: String = (0..n)
            .map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())])
            .collect();
        if !words.contains(&w) {
            words.push(w);
        }
    }
    words
}

const HAN: &str = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坐集编宝谈府拉黑且随格尽剑讲布杀微怕母调局根曾准团段终乐切级克精哪官示冷域";

/// A message: mostly words with a skewed frequency, one in twenty Chinese.
fn message(rng: &mut StdRng, words: &[String], han: &[char]) -> String {
    if rng.random_range(0..20) == 0 {
        let n = rng.random_range(6..=12);
        return (0..n)
            .map(|_| han[rng.random_range(0..han.len())])
            .collect();
    }
    let n = rng.random_range(4..=14);
    let picked: Vec<&str> = (0..n)
        .map(|_| {
            // Rank ~ VOCABULARY × u³: a few words are very common, most are rare.
            let u: f64 = rng.random();
            words[((u * u * u) * VOCABULARY as f64) as usize % VOCABULARY].as_str()
        })
        .collect();
    picked.join(" ")
}

async fn fill(store: &Arc<dyn Store>, total: usize) -> (UserId, Duration) {
    let mut users = Vec::new();
    for i in 0..20 {
        let u = store
            .create_user(NewUser {
                username: format!("searcher{i}"),
                display_name: format!("Searcher {i}"),
                password_hash: "-".into(),
                created_at: Timestamp::now(),
            })
            .await
            .expect("user");
        users.push(u.id);
    }
    let reader = users[0];
    let mut conversations: Vec<ConversationId> = Vec::new();
    for i in 0..CONVERSATIONS {
        let owner = users[1 + i % (users.len() - 1)];
        let mut members = vec![users[1 + (i + 1) % (users.len() - 1)]];
        if i < MEMBER_OF {
            members.push(reader);
        }
        let c = store
            .create_group(owner, format!("room {i}"), members, false, Timestamp::now())
            .await
            .expect("group");
        conversations.push(c.id);
    }
    let words = vocabulary();
    let han: Vec<char> = HAN.chars().collect();
    let mut rng = StdRng::seed_from_u64(42);
    let start = Instant::now();
    let mut sent = 0usize;
    while sent < total {
        let n = BATCH.min(total - sent);
        let batch: Vec<NewEntry> = (0..n)
            .map(|k| {
                let i = sent + k;
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&(i as u64).to_be_bytes());
                NewEntry::message(
                    conversations[rng.random_range(0..CONVERSATIONS)],
                    users[1 + i % (users.len() - 1)],
                    ClientMsgId::from_bytes(key),
                    Body::Text(message(&mut rng, &words, &han)),
                    Timestamp::now(),
                )
            })
            .collect();
        store.append_batch(batch).await.expect("appended");
        sent += n;
        if sent.is_multiple_of(100_000) {
            eprintln!("  {sent} messages");
        }
    }
    (reader, start.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn measure(name: &str, kind: TestDbKind, total: usize) {
    let db = TestDb::new(kind).await;
    let store = db.store.clone();
    eprintln!("{name}: filling {total} messages");
    let (reader, took) = fill(&store, total).await;
    // What autovacuum does on its own soon after a bulk write: statistics for the
    // planner (PostgreSQL; SQLite's FTS5 needs none).
    #[cfg(feature = "postgres")]
    if kind == TestDbKind::Postgres {
        let pool = sqlx::PgPool::connect(&db.url).await.expect("postgres");
        sqlx::query("ANALYZE")
            .execute(&pool)
            .await
            .expect("analyze");
        pool.close().await;
    }
    println!(
        "{name}: {total} messages stored and indexed in {:.1} s ({:.0}/s, batches of {BATCH})",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    let words = vocabulary();
    let queries: Vec<(String, String)> = vec![
        ("very common word".into(), words[0].clone()),
        ("common word".into(), words[30].clone()),
        ("mid word".into(), words[1_000].clone()),
        ("rare word".into(), words[15_000].clone()),
        ("absent word".into(), "zzyzx".into()),
        (
            "two common words".into(),
            format!("{} {}", words[0], words[30]),
        ),
        (
            "common and rare".into(),
            format!("{} {}", words[0], words[15_000]),
        ),
        ("phrase".into(), format!("\"{} {}\"", words[0], words[1])),
        ("prefix of 3".into(), words[500][..3].to_owned()),
        ("exclusion".into(), format!("{} -{}", words[30], words[0])),
        ("Chinese pair".into(), "中国".into()),
        ("Chinese char".into(), "京".into()),
    ];
    let mut all = Vec::new();
    println!("| Query | Results | p50 ms | p95 ms |");
    println!("|---|---|---|---|");
    for (label, q) in &queries {
        let query = Query::parse(q).expect("query");
        let mut times = Vec::with_capacity(RUNS);
        let mut found = 0;
        for _ in 0..RUNS {
            let t = Instant::now();
            found = store
                .search(reader, None, &query, None, 20)
                .await
                .expect("search")
                .len();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "| {label} (`{q}`) | {found} | {} | {} |",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.95))
        );
        all.extend(times);
    }
    all.sort();
    println!(
        "{name}: all queries p50 {} ms, p95 {} ms",
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.95))
    );
    db.cleanup().await;
}

fn main() {
    let total: usize = std::env::var("MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let only = std::env::var("ONLY").unwrap_or_default();
    if only.is_empty() || only == "sqlite" {
        rt.block_on(measure("sqlite", TestDbKind::Sqlite, total));
    }
    #[cfg(feature = "postgres")]
    if only.is_empty() || only == "postgres" {
        rt.block_on(measure("postgres", TestDbKind::Postgres, total));
    }
}
