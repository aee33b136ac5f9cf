//! `rivulet bench`: publishers and subscribers on separate connections against a running
//! gateway, and what it delivered: messages and bytes per second, end-to-end latency
//! percentiles, lost and duplicated deliveries, and the gateway's CPU time per delivery.
//!
//! Each payload carries its publisher, its sequence number and when it was sent (on one monotonic
//! clock: every client runs in this process), so a subscriber knows what it missed, what it got
//! twice and how long each took. Numbers are measured, never asserted; docs/BENCHMARKS.md keeps
//! them with the command that made them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rivulet_core::owned::{Payload, RegisterEvent};
use rivulet_tokio::{Client, Events, Submitted};

use crate::cli::{Login, connect_as};

mod idle;

/// Bytes of the header every payload starts with: publisher, sequence number, send time.
const HEADER: usize = 4 + 8 + 8;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Publishing connections.
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// Subscribing connections; each gets every message.
    #[arg(long, default_value_t = 1)]
    pub subscribers: u32,
    /// Payload bytes per message (at least 20: the header each carries).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages per second per publisher [default: as fast as possible].
    #[arg(long)]
    pub rate: Option<u64>,
    /// Messages per publisher.
    #[arg(long, default_value_t = 100_000, conflicts_with = "duration")]
    pub count: u64,
    /// Publish for this many seconds instead of a count.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Subscribers receive events only once stored durably.
    #[arg(long)]
    pub persisted: bool,
    /// Each publisher's outbox in KiB: registrations it keeps in flight before it waits, which
    /// bounds the latency of a flat-out run [default: the client's 2048].
    #[arg(long, value_name = "KIB")]
    pub outbox_kib: Option<usize>,
    /// Sessions that log in, subscribe to `--idle-patterns` patterns of their own and stay idle
    /// while the load runs: the report gives the gateway's memory per idle session, and the
    /// load's rate shows what routing past their subscriptions costs (raise the gateway's
    /// --max-connections for more than its 10,000).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub idle_sessions: u32,
    /// Patterns each idle session subscribes to (matching none of the load's events).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub idle_patterns: u32,
    /// After the last publication, wait this long for stragglers before counting losses.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = crate::cli::DEFAULT_GATEWAY)]
    pub gateway: String,
    #[command(flatten)]
    pub login: Login,
}

/// Latencies in microseconds, in buckets of about 1.5 % width: exact below 1 ms, then 64 buckets
/// per power of two. Fixed size whatever the number of samples.
#[derive(Debug, Clone)]
pub struct Latencies {
    buckets: Vec<u64>,
    count: u64,
}

const EXACT: u64 = 1024;
const PER_OCTAVE: u64 = 64;

impl Default for Latencies {
    fn default() -> Self {
        Latencies { buckets: vec![0; (EXACT + PER_OCTAVE * 54) as usize], count: 0 }
    }
}

impl Latencies {
    fn bucket(micros: u64) -> usize {
        if micros < EXACT {
            return micros as usize;
        }
        let octave = 63 - u64::from(micros.leading_zeros()); // ≥ 10
        let within = (micros >> (octave - 6)) & (PER_OCTAVE - 1);
        (EXACT + (octave - 10) * PER_OCTAVE + within) as usize
    }

    /// The smallest value of a bucket.
    fn floor(bucket: usize) -> u64 {
        let bucket = bucket as u64;
        if bucket < EXACT {
            return bucket;
        }
        let octave = (bucket - EXACT) / PER_OCTAVE + 10;
        let within = (bucket - EXACT) % PER_OCTAVE;
        (1 << octave) + (within << (octave - 6))
    }

    pub fn record(&mut self, micros: u64) {
        let index = Self::bucket(micros).min(self.buckets.len() - 1);
        self.buckets[index] += 1;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Latencies) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
    }

    /// The value below which a fraction `q` of the samples fall, in microseconds.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::floor(bucket));
            }
        }
        None
    }
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Received {
    latencies: Latencies,
    unique: u64,
    duplicates: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub publishers: u32,
    pub subscribers: u32,
    pub size: usize,
    pub persisted: bool,
    pub published: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// From the first publication to the last delivery (connecting and waiting for stragglers
    /// that never came do not count).
    pub seconds: f64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency_us_p50: Option<u64>,
    pub latency_us_p99: Option<u64>,
    pub latency_us_p999: Option<u64>,
    pub latency_us_max: Option<u64>,
    /// The gateway's CPU time per delivered message, if it reported its CPU time (in 10 ms ticks:
    /// meaningful for runs of seconds, not of a few messages).
    pub gateway_cpu_us_per_msg: Option<f64>,
    /// Idle sessions held open during the load (`--idle-sessions`), their subscriptions, and
    /// the gateway's resident memory grown for them, per session.
    pub idle_sessions: u32,
    pub idle_subscriptions: u64,
    pub gateway_bytes_per_idle_session: Option<u64>,
}

pub async fn run(args: BenchArgs) -> Result<(), String> {
    if args.size < HEADER {
        return Err(format!("--size {} is too small: every message carries a {HEADER}-byte header", args.size));
    }
    if args.publishers == 0 {
        return Err("--publishers must be at least 1".into());
    }
    let report = measure(&args).await?;
    if args.json {
        crate::out!("{}", serde_json::to_string(&report).map_err(|e| e.to_string())?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// The gateway's status.
async fn status(client: &Client) -> Option<serde_json::Value> {
    let reply = client.request(crate::frontend::native::RQ_STATUS, 0, Vec::new()).await.ok()?;
    serde_json::from_slice(&reply.payload).ok()
}

/// The gateway's CPU seconds so far, from its status.
async fn gateway_cpu(client: &Client) -> Option<f64> {
    status(client).await?["cpu_seconds"].as_f64()
}

async fn measure(args: &BenchArgs) -> Result<Report, String> {
    // A run id keeps concurrent runs (and old events) apart.
    let run = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
    );
    let pattern = format!("bench/{run}/*");
    let origin = Instant::now();
    let (mut subscribers, mut streams) = (Vec::new(), Vec::new());
    for n in 0..args.subscribers {
        let (client, events) = connect_as(&args.gateway, &args.login, &format!("bench-sub-{n}"), |options| {
            options.subscriptions = vec![pattern.as_str().into()];
            options.persisted = args.persisted;
            options.window = 256;
            options.events = 4096;
        })
        .await?;
        subscribers.push(client);
        streams.push(events);
    }
    let mut publishers = Vec::new();
    for n in 0..args.publishers {
        let (client, _) = connect_as(&args.gateway, &args.login, &format!("bench-pub-{n}"), |options| {
            if let Some(kib) = args.outbox_kib {
                options.outbox = kib.saturating_mul(1024);
            }
        })
        .await?;
        publishers.push(Arc::new(client));
    }
    crate::limits::raise_open_files();
    let idle = idle::open(args, &run, &publishers[0]).await?;
    let cpu_before = gateway_cpu(&publishers[0]).await;
    let published = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    // Nanoseconds since `origin` of the first publication and of the latest delivery.
    let first_sent = Arc::new(AtomicU64::new(u64::MAX));
    let last_delivered = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(args);

    let deadline = args.duration.map(|s| Instant::now() + Duration::from_secs_f64(s));
    let shared = Arc::new(Publishing {
        args: args.clone(),
        run: run.clone(),
        origin,
        deadline,
        published: published.clone(),
        first_sent: first_sent.clone(),
    });
    let mut publishing = Vec::new();
    for (index, client) in publishers.iter().enumerate() {
        let client = client.clone();
        let shared = shared.clone();
        publishing.push(tokio::spawn(async move { publish(&client, index as u32, &shared).await }));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(None::<u64>);
    let mut receiving = Vec::new();
    for events in streams {
        let (delivered, stop, last) = (delivered.clone(), stop_rx.clone(), last_delivered.clone());
        receiving.push(tokio::spawn(receive(events, args.publishers, origin, delivered, last, stop)));
    }
    let ticker = {
        let (progress, delivered, published) = (progress.clone(), delivered.clone(), published.clone());
        tokio::spawn(async move {
            loop {
                progress.set_position(delivered.load(Relaxed));
                progress.set_message(format!("published {}", published.load(Relaxed)));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut total_published = 0;
    for task in publishing {
        total_published += task.await.map_err(|e| format!("publisher failed: {e}"))??;
    }
    let expected = total_published * u64::from(args.subscribers);
    // Wait for everything, or for the drain time after the last publication.
    let drain_until = Instant::now() + Duration::from_secs_f64(args.drain);
    while delivered.load(Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop_tx.send(Some(total_published));
    let mut latencies = Latencies::default();
    let (mut unique, mut duplicates) = (0, 0);
    for task in receiving {
        let received = task.await.map_err(|e| format!("subscriber failed: {e}"))?;
        latencies.merge(&received.latencies);
        unique += received.unique;
        duplicates += received.duplicates;
    }
    ticker.abort();
    progress.finish_and_clear();
    let cpu_after = gateway_cpu(&publishers[0]).await;
    for client in publishers {
        // The publishing tasks are done, so each handle is the last one.
        if let Ok(client) = Arc::try_unwrap(client) {
            client.close().await;
        }
    }
    for client in subscribers {
        client.close().await;
    }
    let (first, last) = (first_sent.load(Relaxed), last_delivered.load(Relaxed));
    let elapsed = last.saturating_sub(first) as f64 / 1e9;
    let elapsed = if elapsed > 0.0 { elapsed } else { f64::MIN_POSITIVE };
    let cpu = cpu_before.zip(cpu_after).map(|(before, after)| (after - before) * 1e6 / unique.max(1) as f64);
    Ok(Report {
        publishers: args.publishers,
        subscribers: args.subscribers,
        size: args.size,
        persisted: args.persisted,
        published: total_published,
        expected,
        delivered: unique,
        lost: expected.saturating_sub(unique),
        duplicated: duplicates,
        seconds: elapsed,
        msgs_per_sec: unique as f64 / elapsed,
        mb_per_sec: (unique as f64 * args.size as f64) / elapsed / 1e6,
        latency_us_p50: latencies.quantile(0.5),
        latency_us_p99: latencies.quantile(0.99),
        latency_us_p999: latencies.quantile(0.999),
        latency_us_max: latencies.quantile(1.0),
        gateway_cpu_us_per_msg: cpu,
        idle_sessions: idle.sessions,
        idle_subscriptions: idle.subscriptions,
        gateway_bytes_per_idle_session: idle.bytes_per_session(),
    })
}

fn progress_bar(args: &BenchArgs) -> indicatif::ProgressBar {
    let total = if args.duration.is_some() { 0 } else { args.count * u64::from(args.publishers * args.subscribers) };
    if args.json {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} delivered ({per_sec}) {msg} {elapsed}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// What every publisher of a run shares: its clock, when to stop, and the counters it feeds.
struct Publishing {
    args: BenchArgs,
    run: String,
    origin: Instant,
    deadline: Option<Instant>,
    published: Arc<AtomicU64>,
    /// Nanoseconds since `origin` of the run's first publication.
    first_sent: Arc<AtomicU64>,
}

/// Registrations a publisher keeps submitted before it waits for the oldest to be in the outbox:
/// as many as the client's command queue holds.
const SUBMIT_WINDOW: usize = 64;

/// Registers publisher `index`'s messages; returns how many.
async fn publish(client: &Client, index: u32, run: &Publishing) -> Result<u64, String> {
    let Publishing { args, run, origin, deadline, published, first_sent } = run;
    let event_type = format!("bench/{run}/p{index}");
    let mut pace = args.rate.map(|rate| {
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        interval
    });
    let mut seq = 0u64;
    let mut last = None;
    // Submissions in flight, oldest first: the client's task takes them in bursts.
    let mut submitted: VecDeque<Submitted> = VecDeque::with_capacity(SUBMIT_WINDOW);
    loop {
        let done = match deadline {
            Some(deadline) => Instant::now() >= *deadline,
            None => seq >= args.count,
        };
        if done {
            break;
        }
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let mut data = vec![0u8; args.size];
        data[..4].copy_from_slice(&index.to_le_bytes());
        data[4..12].copy_from_slice(&seq.to_le_bytes());
        let sent = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        data[12..20].copy_from_slice(&sent.to_le_bytes());
        first_sent.fetch_min(sent, Relaxed);
        let event = RegisterEvent::new(event_type.as_str(), Some(Payload::Binary { kind: "bench".into(), data }));
        if submitted.len() == SUBMIT_WINDOW
            && let Some(oldest) = submitted.pop_front()
        {
            last = Some(oldest.await.map_err(|e| format!("publisher {index}: {e}"))?);
        }
        submitted.push_back(client.submit(event).await.map_err(|e| format!("publisher {index}: {e}"))?);
        seq += 1;
        published.fetch_add(1, Relaxed);
    }
    for pending in submitted {
        last = Some(pending.await.map_err(|e| format!("publisher {index}: {e}"))?);
    }
    if let Some(last) = last {
        client.registered(last).await.map_err(|e| format!("publisher {index}: {e}"))?;
    }
    Ok(seq)
}

/// Counts one subscriber's deliveries until told how many each publisher sent and everything is
/// in (or the run gives up waiting).
async fn receive(
    mut events: Events,
    publishers: u32,
    origin: Instant,
    delivered: Arc<AtomicU64>,
    last_delivered: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<Option<u64>>,
) -> Received {
    let mut received = Received::default();
    // Per publisher, which sequence numbers arrived (a bit each).
    let mut seen: Vec<Vec<u64>> = vec![Vec::new(); publishers as usize];
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = stop.changed() => None,
        };
        let Some(event) = event else { break };
        let Some(Payload::Binary { data, .. }) = event.payload else { continue };
        let word = |at: usize| data.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        let publisher = data.get(0..4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
        let (Some(publisher), Some(seq), Some(sent)) = (publisher, word(4), word(12)) else { continue };
        let publisher = publisher as usize;
        let Some(bits) = seen.get_mut(publisher) else { continue };
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & (1 << bit) != 0 {
            received.duplicates += 1;
            continue;
        }
        bits[word] |= 1 << bit;
        received.unique += 1;
        delivered.fetch_add(1, Relaxed);
        let now = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        last_delivered.fetch_max(now, Relaxed);
        received.latencies.record(now.saturating_sub(sent) / 1000);
    }
    received
}

fn print_table(r: &Report) {
    let us = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} µs"));
    crate::out!(
        "{} publisher(s) → {} subscriber(s), {} B payloads{}",
        r.publishers,
        r.subscribers,
        r.size,
        if r.persisted { ", persisted" } else { "" }
    );
    crate::out!("  published        {}", r.published);
    crate::out!("  delivered        {} of {} ({} lost, {} duplicated)", r.delivered, r.expected, r.lost, r.duplicated);
    crate::out!("  throughput       {:.0} msg/s, {:.2} MB/s over {:.2} s", r.msgs_per_sec, r.mb_per_sec, r.seconds);
    crate::out!(
        "  latency          p50 {}, p99 {}, p999 {}, max {}",
        us(r.latency_us_p50),
        us(r.latency_us_p99),
        us(r.latency_us_p999),
        us(r.latency_us_max)
    );
    match r.gateway_cpu_us_per_msg {
        Some(cpu) => crate::out!("  gateway CPU      {cpu:.2} µs per delivered message"),
        None => crate::out!("  gateway CPU      - (the gateway did not report its CPU time)"),
    };
    if r.idle_sessions > 0 {
        let per = r.gateway_bytes_per_idle_session.map_or("-".to_string(), |b| format!("{:.1} KiB", b as f64 / 1024.0));
        crate::out!(
            "  idle sessions    {} with {} subscriptions held during the load: gateway memory {per} per session",
            r.idle_sessions,
            r.idle_subscriptions
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_below_a_millisecond_and_within_two_percent_above() {
        for v in [0u64, 1, 500, 1023, 1024, 1500, 10_000, 123_456, 9_999_999, 1 << 40] {
            let floor = Latencies::floor(Latencies::bucket(v));
            assert!(floor <= v, "{v}: floor {floor}");
            if v < EXACT {
                assert_eq!(floor, v);
            } else {
                assert!((v - floor) as f64 / v as f64 <= 1.0 / 64.0, "{v}: floor {floor}");
            }
        }
    }

    #[test]
    fn quantiles() {
        let mut l = Latencies::default();
        assert_eq!(l.quantile(0.5), None);
        for v in 1..=1000 {
            l.record(v);
        }
        assert_eq!(l.quantile(0.5), Some(500));
        assert_eq!(l.quantile(0.99), Some(990));
        assert_eq!(l.quantile(1.0), Some(1000));
        let mut other = Latencies::default();
        other.record(5_000_000);
        l.merge(&other);
        assert_eq!(l.quantile(1.0).map(|v| v / 100_000), Some(49), "within a bucket of 5 s");
    }
}
