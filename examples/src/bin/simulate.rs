//! Simulated people: they sign up, open direct chats and groups, and talk with
//! human-like pauses over a mix of QUIC and WebSocket, while every delivery is checked
//! (in order, exactly once, to every member). An operator's end-to-end check of a
//! deployment; exits non-zero if anything was lost or duplicated.
//!
//! `cargo run --release -p chat-examples --bin simulate -- --users 50 --duration 30`
//! (add `--quic-url quic://127.0.0.1:4433 --pin quic-cert.pem --quic-share 0.5` to
//! put half of them on QUIC).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chat_examples::ConnectArgs;
use chat_sdk::chat_proto::ids::{ConversationId, Seq};
use chat_sdk::{Client, Event};
use clap::Parser;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::Mutex;

/// Simulated users chatting like people.
#[derive(Parser, Clone)]
struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// QUIC endpoint for the share of users on QUIC (needs --api-url and usually --pin).
    #[arg(long)]
    quic_url: Option<String>,
    /// Fraction of users on QUIC (0..=1) when --quic-url is given.
    #[arg(long, default_value_t = 0.5)]
    quic_share: f64,
    /// Simulated people.
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Groups, each with 3 to 8 random members.
    #[arg(long, default_value_t = 4)]
    groups: usize,
    /// Seconds of chatting.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Mean pause between one person's messages, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    think_ms: u64,
}

const WORDS: &[&str] = &[
    "hello", "coffee", "later", "meeting", "lunch", "sounds", "good", "see", "you", "at", "the",
    "station", "tomorrow", "maybe", "friday", "great", "idea", "thanks", "ok", "why", "not",
    "photos", "from", "the", "trip", "are", "up", "running", "late", "sorry",
];

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    send_errors: AtomicU64,
    delivered: AtomicU64,
    out_of_order: AtomicU64,
    typing: AtomicU64,
    receipts: AtomicU64,
    reconnects: AtomicU64,
}

/// Deliveries seen per message, to compare with each conversation's member count.
type Seen = Mutex<HashMap<(ConversationId, Seq), u32>>;

fn sentence(rng: &mut impl rand::Rng) -> String {
    let n = rng.random_range(1..12);
    (0..n)
        .map(|_| *WORDS.choose(rng).unwrap_or(&"hi"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_examples::init_logging();
    let args = Args::parse();
    anyhow::ensure!(args.users >= 2, "need at least two users");
    let run = format!("sim{:x}", rand::random::<u32>());
    let totals = Arc::new(Totals::default());
    let seen: Arc<Seen> = Arc::default();

    eprintln!("signing up {} people…", args.users);
    let mut clients: Vec<(Client, &'static str)> = Vec::new();
    for i in 0..args.users {
        let on_quic =
            args.quic_url.is_some() && (i as f64 + 0.5) / (args.users as f64) < args.quic_share;
        let mut connect = args.connect.clone();
        if on_quic {
            connect.url = args.quic_url.clone().unwrap_or_default();
        }
        let client = connect
            .builder("simulate")?
            .register(format!("{run}_{i}"), "simulated password", None)
            .connect()
            .await
            .with_context(|| format!("user {i} ({})", connect.url))?;
        clients.push((client, if on_quic { "quic" } else { "ws" }));
    }

    // Everyone has a direct chat with the next person; groups of 3 to 8.
    let mut conversations: Vec<(ConversationId, Vec<usize>)> = Vec::new();
    for i in 0..args.users {
        let j = (i + 1) % args.users;
        if i < j || args.users > 2 {
            let dm = clients[i].0.create_direct(clients[j].0.user_id()).await?;
            conversations.push((dm.id, vec![i, j]));
        }
    }
    let mut rng = rand::rng();
    for g in 0..args.groups {
        let size = rng.random_range(3..=8).min(args.users);
        let members: Vec<usize> = rand::seq::index::sample(&mut rng, args.users, size).into_vec();
        let ids: Vec<_> = members[1..]
            .iter()
            .map(|&m| clients[m].0.user_id())
            .collect();
        let group = clients[members[0]]
            .0
            .create_group(&format!("{run} group {g}"), &ids)
            .await?;
        conversations.push((group.id, members));
    }
    let members_of: HashMap<ConversationId, usize> =
        conversations.iter().map(|(c, m)| (*c, m.len())).collect();

    // Every client checks what it receives.
    for (client, _) in &clients {
        let mut events = client.events();
        let (totals, seen) = (totals.clone(), seen.clone());
        tokio::spawn(async move {
            let mut last: HashMap<ConversationId, Seq> = HashMap::new();
            while let Some(event) = events.recv().await {
                match event {
                    Event::Entry(m) => {
                        if last.get(&m.conversation).is_some_and(|&s| m.seq <= s) {
                            totals.out_of_order.fetch_add(1, Ordering::Relaxed);
                        }
                        last.insert(m.conversation, m.seq);
                        totals.delivered.fetch_add(1, Ordering::Relaxed);
                        *seen
                            .lock()
                            .await
                            .entry((m.conversation, m.seq))
                            .or_default() += 1;
                    }
                    Event::Typing(_) => drop(totals.typing.fetch_add(1, Ordering::Relaxed)),
                    Event::Receipt(_) => drop(totals.receipts.fetch_add(1, Ordering::Relaxed)),
                    Event::Disconnected { .. } => {
                        totals.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
    }

    // People: pick one of their conversations, type for a while, send, read, pause.
    eprintln!("chatting for {} s…", args.duration);
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let mut people = Vec::new();
    for (i, (client, _)) in clients.iter().enumerate() {
        let mine: Vec<ConversationId> = conversations
            .iter()
            .filter(|(_, m)| m.contains(&i))
            .map(|(c, _)| *c)
            .collect();
        let (client, totals, think) = (client.clone(), totals.clone(), args.think_ms.max(1));
        people.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut rng = rand::rngs::StdRng::from_os_rng();
            loop {
                // Exponentially distributed pauses, as between real messages.
                let pause = -(think as f64) * (1.0 - rng.random::<f64>()).ln();
                let wake = Instant::now() + Duration::from_millis(pause as u64);
                if wake >= deadline {
                    break;
                }
                tokio::time::sleep_until(wake.into()).await;
                let Some(&conversation) = mine.choose(&mut rng) else {
                    break;
                };
                let text = sentence(&mut rng);
                let _ = client.set_typing(conversation, true);
                tokio::time::sleep(Duration::from_millis(20 * text.len() as u64)).await;
                match client.send_text(conversation, text).await {
                    Ok(ack) => {
                        totals.sent.fetch_add(1, Ordering::Relaxed);
                        if rng.random_bool(0.5) {
                            let _ = client.mark_read(conversation, ack.seq).await;
                        }
                        acked.push(ack);
                    }
                    Err(e) => {
                        totals.send_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "send failed");
                    }
                }
            }
            acked
        }));
    }
    let progress = {
        let totals = totals.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprint!(
                    "\r  {:>4} s  sent {:>6}  delivered {:>7}  typing {:>6}  receipts {:>6}  reconnects {}   ",
                    start.elapsed().as_secs(),
                    totals.sent.load(Ordering::Relaxed),
                    totals.delivered.load(Ordering::Relaxed),
                    totals.typing.load(Ordering::Relaxed),
                    totals.receipts.load(Ordering::Relaxed),
                    totals.reconnects.load(Ordering::Relaxed),
                );
            }
        })
    };
    let mut acks = Vec::new();
    for person in people {
        acks.extend(person.await?);
    }
    // Give the last deliveries a moment.
    let expected: u64 = acks
        .iter()
        .map(|a| members_of.get(&a.conversation).copied().unwrap_or(0) as u64)
        .sum();
    let settle = Instant::now();
    while totals.delivered.load(Ordering::Relaxed) < expected
        && settle.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.abort();
    eprintln!();

    let seen = seen.lock().await;
    let mut missing = 0u64;
    for ack in &acks {
        let want = members_of.get(&ack.conversation).copied().unwrap_or(0) as u32;
        let got = seen.get(&(ack.conversation, ack.seq)).copied().unwrap_or(0);
        missing += u64::from(want.saturating_sub(got));
    }
    let quic = clients.iter().filter(|(_, t)| *t == "quic").count();
    let out_of_order = totals.out_of_order.load(Ordering::Relaxed);
    println!(
        "{} people ({} on QUIC, {} on WebSocket), {} conversations",
        clients.len(),
        quic,
        clients.len() - quic,
        conversations.len()
    );
    println!(
        "messages sent {}  (send errors {})",
        acks.len(),
        totals.send_errors.load(Ordering::Relaxed)
    );
    println!(
        "deliveries    {} of {expected} expected: missing {missing}, out of order or repeated {out_of_order}",
        totals.delivered.load(Ordering::Relaxed)
    );
    println!(
        "typing events {}  receipts {}  reconnects {}",
        totals.typing.load(Ordering::Relaxed),
        totals.receipts.load(Ordering::Relaxed),
        totals.reconnects.load(Ordering::Relaxed)
    );
    let closing: Vec<_> = clients
        .into_iter()
        .map(|(c, _)| tokio::spawn(async move { c.close().await }))
        .collect();
    for c in closing {
        c.await?;
    }
    anyhow::ensure!(
        missing == 0 && out_of_order == 0,
        "deliveries were lost or repeated"
    );
    println!("OK: every message reached every member once, in order");
    Ok(())
}
