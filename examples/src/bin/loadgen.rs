//! The benchmark client: many connected users in rooms, some of them sending, and the
//! end-to-end latency of every delivery.
//!
//! `cargo run --release -p chat-examples --bin loadgen -- --clients 200 --rooms 10 --senders 20 --rate 10 --duration 20`
//!
//! Each message carries its send time; every member's client (the sender's included)
//! records how long it took to arrive. Run the server with a send rate above the one
//! asked for (`--send-rate`, `--send-burst`), or sends are paced by the server.
//!
//! Paced senders are independent users by default (`--pacing poisson`: random gaps
//! averaging the rate); `staggered` spreads fixed periods evenly and `lockstep` makes
//! every sender send in the same instant, the burstiest load a group can see.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chat_examples::ConnectArgs;
use chat_sdk::chat_proto::entry::Content;
use chat_sdk::chat_proto::ids::{ConversationId, Seq};
use chat_sdk::{Client, Event};
use clap::Parser;
use hdrhistogram::Histogram;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;

/// Load generator for BENCHMARKS.md.
#[derive(Parser, Clone)]
struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// More real-time endpoints (nodes of one cluster): clients are spread round-robin
    /// over --url and these. Repeat for several.
    #[arg(long = "also-url", value_name = "URL")]
    also_urls: Vec<String>,
    /// Connected users.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Group conversations; users are spread over them evenly (at most 1,024 each).
    #[arg(long, default_value_t = 4)]
    rooms: usize,
    /// How many of the users send.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Messages per second per sender; 0 sends as fast as acks allow (see --window).
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// How paced senders' messages fall in time (with --rate above 0).
    #[arg(long, value_enum, default_value_t = Pacing::Poisson)]
    pacing: Pacing,
    /// With --rate 0: sends in flight per sender.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Percent of each sender's writes that are reactions (to the sender's latest
    /// message, emoji in turn) instead of messages (protocol 1.3).
    #[arg(long, default_value_t = 0.0)]
    reactions: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent registrations and connections while setting up.
    #[arg(long, default_value_t = 16)]
    setup_concurrency: usize,
    /// Account names are PREFIX_0, PREFIX_1, … (default: random per run).
    #[arg(long)]
    prefix: Option<String>,
    /// Log in to existing PREFIX_i accounts (password "loadgen password") instead of
    /// registering them, for example to measure connections apart from sign-ups.
    #[arg(long, requires = "prefix")]
    login: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// When paced senders send. Each sender averages --rate messages per second.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Pacing {
    /// Independent users: exponentially distributed gaps (Poisson arrivals), so sends
    /// sometimes bunch up as they do in a real group.
    Poisson,
    /// Every sender on its own fixed period, started at a random point of it: evenly
    /// spread load.
    Staggered,
    /// Every sender on the same fixed tick: all senders' messages leave in the same
    /// instant, each tick a burst of senders × members deliveries (the worst case).
    Lockstep,
}

impl Pacing {
    /// The first send's delay after the start and the gap before each next send.
    fn first_and_gap(self, period: Duration) -> (Duration, impl FnMut() -> Duration) {
        let mut rng = rand::rngs::StdRng::from_os_rng();
        let first = match self {
            Pacing::Lockstep => Duration::ZERO,
            Pacing::Staggered => period.mul_f64(rng.random::<f64>()),
            Pacing::Poisson => exponential(&mut rng, period),
        };
        let gap = move || match self {
            Pacing::Lockstep | Pacing::Staggered => period,
            Pacing::Poisson => exponential(&mut rng, period),
        };
        (first, gap)
    }
}

/// An exponentially distributed duration with the given mean.
fn exponential(rng: &mut impl rand::Rng, mean: Duration) -> Duration {
    // 1 - u is in (0, 1], so the logarithm is finite.
    let u: f64 = rng.random();
    mean.mul_f64(-(1.0 - u).ln())
}

struct Stats {
    sent: AtomicU64,
    failed: AtomicU64,
    /// Reactions acknowledged (counted in `sent` too).
    reactions_sent: AtomicU64,
    /// Reaction entries delivered to members.
    reactions_delivered: AtomicU64,
    /// Deliveries are recorded while this is set.
    recording: AtomicBool,
}

/// One client's latencies in micro-seconds, in arrival order, appended by its event
/// handler on its connection's task (the lock is only shared with the progress count
/// now and then) and binned once at the end: a histogram per client is a large table touched at random, and 1,000 of
/// them make the recording itself a visible cost.
type Samples = Arc<std::sync::Mutex<Vec<u32>>>;

/// Deliveries recorded so far by all clients (each counts its own: no counter shared
/// by every connection's task).
fn delivered(samples: &[Samples]) -> u64 {
    samples
        .iter()
        .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len() as u64)
        .sum()
}

/// Reactions the senders take turns with.
const REACTIONS: [&str; 8] = ["👍", "🎉", "❤️", "😂", "👀", "🙏", "🔥", "✅"];

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// Micro-seconds since `epoch`, then padding up to `size` bytes.
fn payload(epoch: Instant, size: usize) -> String {
    let mut text = format!("{} ", epoch.elapsed().as_micros());
    text.extend(std::iter::repeat_n('x', size.saturating_sub(text.len())));
    text
}

fn sent_at(text: &str) -> Option<u64> {
    text.split(' ').next()?.parse().ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_examples::init_logging();
    let args = Args::parse();
    anyhow::ensure!(args.clients > 0 && args.rooms > 0, "need clients and rooms");
    anyhow::ensure!(args.senders <= args.clients, "more senders than clients");
    let run = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("lg{:x}", rand::random::<u32>()));
    let epoch = Instant::now();
    let stats = Arc::new(Stats {
        sent: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        reactions_sent: AtomicU64::new(0),
        reactions_delivered: AtomicU64::new(0),
        recording: AtomicBool::new(true),
    });

    // Sign everyone up and connect, a few at a time; time each connection.
    eprintln!("connecting {} clients…", args.clients);
    let setup = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.setup_concurrency.max(1)));
    let mut joins = Vec::new();
    for i in 0..args.clients {
        let (args, run, gate) = (args.clone(), run.clone(), gate.clone());
        let stats = stats.clone();
        joins.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            let started = Instant::now();
            let mut connect = args.connect.clone();
            let nodes = 1 + args.also_urls.len();
            if i % nodes > 0 {
                connect.url = args.also_urls[i % nodes - 1].clone();
                // Each node serves the HTTP API next to its WebSocket.
                connect.api_url = None;
            }
            let builder = connect.builder("loadgen")?;
            let name = format!("{run}_{i}");
            let builder = if args.login {
                builder.login(name, "loadgen password")
            } else {
                builder.register(name, "loadgen password", None)
            };
            // Every delivery of a timed message is recorded on the connection's own
            // task, as it is handled.
            let samples = Samples::default();
            let record = samples.clone();
            let client = builder
                .on_event(move |event| {
                    if let Event::Entry(m) = event
                        && matches!(m.content, Content::Reaction { .. })
                        && stats.recording.load(Ordering::Relaxed)
                    {
                        stats.reactions_delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Event::Entry(m) = event
                        && let Some(at) = m.text().and_then(sent_at)
                        && stats.recording.load(Ordering::Relaxed)
                    {
                        let now = epoch.elapsed().as_micros() as u64;
                        let micros = now.saturating_sub(at).max(1);
                        let mut samples = record.lock().unwrap_or_else(|e| e.into_inner());
                        samples.push(u32::try_from(micros).unwrap_or(u32::MAX));
                    }
                })
                .connect()
                .await
                .with_context(|| format!("client {i}"))?;
            anyhow::Ok((client, samples, started.elapsed()))
        }));
    }
    let mut clients: Vec<Client> = Vec::new();
    let mut samples: Vec<Samples> = Vec::new();
    let mut connect_times = histogram();
    for join in joins {
        let (client, recorded, took) = join.await??;
        connect_times.saturating_record(took.as_micros() as u64);
        clients.push(client);
        samples.push(recorded);
    }
    let setup_took = setup.elapsed();

    // Rooms: user k joins room k % rooms; the first member creates it.
    let mut rooms: Vec<(ConversationId, usize)> = Vec::new();
    for r in 0..args.rooms {
        let members: Vec<usize> = (r..args.clients).step_by(args.rooms).collect();
        let Some(&owner) = members.first() else { break };
        anyhow::ensure!(
            members.len() <= 1024,
            "room {r} would have {} members",
            members.len()
        );
        let ids: Vec<_> = members[1..].iter().map(|&m| clients[m].user_id()).collect();
        // A group starts with up to 255 invitees; the rest are added one by one.
        let (first, rest) = ids.split_at(ids.len().min(255));
        let room = clients[owner]
            .create_group(&format!("{run} room {r}"), first)
            .await
            .context("creating a room")?;
        for &user in rest {
            clients[owner]
                .add_member(room.id, user)
                .await
                .context("adding a member")?;
        }
        rooms.push((room.id, members.len()));
    }

    // Senders: spread over the rooms; paced, or a window of sends in flight.
    eprintln!("sending for {} s…", args.duration);
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let send_start = Instant::now();
    let mut senders = Vec::new();
    let mut expected_per_room = vec![0u64; rooms.len()];
    for (s, client) in clients.iter().take(args.senders).enumerate() {
        // Sender s is a member of room s % rooms, like every user.
        let room_index = s % args.rooms.min(rooms.len());
        let room = rooms[room_index].0;
        let lanes = if args.rate > 0.0 {
            1
        } else {
            args.window.max(1)
        };
        for _ in 0..lanes {
            let (client, stats, args) = (client.clone(), stats.clone(), args.clone());
            senders.push(tokio::spawn(async move {
                let mut count = 0u64;
                // Every `react_every`-th write reacts to this lane's latest message.
                let react_every = (args.reactions > 0.0)
                    .then(|| (100.0 / args.reactions).round().max(1.0) as u64);
                let mut latest: Option<Seq> = None;
                let mut pace = (args.rate > 0.0).then(|| {
                    let (first, gap) = args
                        .pacing
                        .first_and_gap(Duration::from_secs_f64(1.0 / args.rate));
                    (send_start + first, gap)
                });
                loop {
                    if let Some((next, gap)) = &mut pace {
                        // Send times are fixed in advance: a slow ack delays the
                        // next send at most, never the schedule after it.
                        tokio::time::sleep_until((*next).into()).await;
                        *next += gap();
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                    if let (Some(k), Some(target)) = (react_every, latest)
                        && count % k == k - 1
                    {
                        let emoji = REACTIONS[(count / k) as usize % REACTIONS.len()];
                        match client.react(room, target, emoji).await {
                            Ok(_) => {
                                stats.sent.fetch_add(1, Ordering::Relaxed);
                                stats.reactions_sent.fetch_add(1, Ordering::Relaxed);
                                count += 1;
                            }
                            Err(e) => {
                                stats.failed.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(error = %e, "reaction failed");
                            }
                        }
                        continue;
                    }
                    match client.send_text(room, payload(epoch, args.size)).await {
                        Ok(ack) => {
                            stats.sent.fetch_add(1, Ordering::Relaxed);
                            latest = Some(ack.seq);
                            count += 1;
                        }
                        Err(e) => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "send failed");
                        }
                    }
                }
                (room_index, count)
            }));
        }
    }
    let progress = {
        let (stats, samples) = (stats.clone(), samples.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprint!(
                    "\r  sent {:>9}  delivered {:>10}",
                    stats.sent.load(Ordering::Relaxed),
                    delivered(&samples)
                );
            }
        })
    };
    if senders.is_empty() {
        // No senders: hold the connections idle for the duration (memory checks).
        tokio::time::sleep_until(deadline.into()).await;
    }
    for sender in senders {
        let (room_index, count) = sender.await?;
        expected_per_room[room_index] += count * rooms[room_index].1 as u64;
    }
    let send_took = send_start.elapsed();
    let expected: u64 = expected_per_room.iter().sum();
    // Let the last deliveries arrive.
    let drain = Instant::now();
    let all_delivered = || delivered(&samples) + stats.reactions_delivered.load(Ordering::Relaxed);
    while all_delivered() < expected && drain.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress.abort();
    eprintln!();
    let took = send_start.elapsed().as_secs_f64();
    stats.recording.store(false, Ordering::Relaxed);

    let sent = stats.sent.load(Ordering::Relaxed);
    let mut latency = histogram();
    for recorded in &samples {
        for &micros in recorded.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            latency.saturating_record(u64::from(micros));
        }
    }
    let delivered = latency.len() + stats.reactions_delivered.load(Ordering::Relaxed);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let report = json!({
        "transport": args.connect.url.split("://").next(),
        "nodes": 1 + args.also_urls.len(),
        "clients": args.clients,
        "rooms": rooms.len(),
        "senders": args.senders,
        "rate_per_sender": args.rate,
        "window": if args.rate > 0.0 { 1 } else { args.window },
        "pacing": (args.rate > 0.0).then(|| format!("{:?}", args.pacing).to_lowercase()),
        "payload_bytes": args.size,
        "duration_s": send_took.as_secs_f64(),
        "sent": sent,
        "send_failures": stats.failed.load(Ordering::Relaxed),
        "sent_per_s": sent as f64 / send_took.as_secs_f64(),
        "reactions_sent": stats.reactions_sent.load(Ordering::Relaxed),
        "reaction_deliveries": stats.reactions_delivered.load(Ordering::Relaxed),
        "deliveries": delivered,
        "deliveries_per_s": delivered as f64 / took,
        "lost": expected.saturating_sub(delivered),
        "latency_ms": {
            "p50": ms(&latency, 0.5), "p90": ms(&latency, 0.9),
            "p99": ms(&latency, 0.99), "max": latency.max() as f64 / 1000.0,
        },
        "connect_ms": {
            "p50": ms(&connect_times, 0.5), "p99": ms(&connect_times, 0.99),
            "max": connect_times.max() as f64 / 1000.0,
            "setup_total_s": setup_took.as_secs_f64(),
        },
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let l = &report["latency_ms"];
        let c = &report["connect_ms"];
        println!(
            "clients {}  rooms {}  senders {}  payload {} B",
            args.clients,
            rooms.len(),
            args.senders,
            args.size
        );
        println!(
            "sent         {sent:>10}  ({:.0}/s, {} failed)",
            report["sent_per_s"].as_f64().unwrap_or(0.0),
            report["send_failures"]
        );
        println!(
            "deliveries   {delivered:>10}  ({:.0}/s), lost {}",
            report["deliveries_per_s"].as_f64().unwrap_or(0.0),
            report["lost"]
        );
        if args.reactions > 0.0 {
            println!(
                "reactions    {:>10}  sent, {} delivered (in the counts above)",
                report["reactions_sent"], report["reaction_deliveries"]
            );
        }
        println!(
            "latency ms   p50 {}  p90 {}  p99 {}  max {}",
            l["p50"], l["p90"], l["p99"], l["max"]
        );
        println!(
            "connect ms   p50 {}  p99 {}  max {}  (setup {:.1} s)",
            c["p50"],
            c["p99"],
            c["max"],
            setup_took.as_secs_f64()
        );
    }
    let closing: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(async move { c.close().await }))
        .collect();
    for c in closing {
        c.await?;
    }
    Ok(())
}
