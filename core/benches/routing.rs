//! Finding the connections an event goes to, among 10,000 subscriptions (1,000 connections × 10
//! patterns): the subscription index against the scan `notify_events` did before it, which tests
//! each connection's patterns until one matches. Run: `cargo bench -p rivulet-core --features alloc --bench routing`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rivulet_core::owned::{EventPath, SubscriptionIndex};

const CONNECTIONS: u64 = 1_000;
const SITES: u64 = 100;
const DEVICES: u64 = 50;
const METRICS: [&str; 4] = ["temp", "humidity", "pressure", "co2"];

/// A cheap deterministic spread (splitmix64), so every run builds the same subscriptions.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Ten patterns of connection `c`, a dashboard or service at one site: six single devices' metrics,
/// a metric of every device, every device's commands, one in ten a whole site, one in two hundred
/// everything, the rest alarms of a site.
fn patterns(c: u64) -> Vec<EventPath> {
    let site = c % SITES;
    let pick = |n: u64, k: u64| mix(c * 16 + k) % n;
    let metric = |k: u64| METRICS[pick(METRICS.len() as u64, k) as usize];
    let mut patterns: Vec<EventPath> =
        (0..6).map(|k| format!("site/{site}/dev/{}/{}", pick(DEVICES, k), metric(k + 6)).as_str().into()).collect();
    patterns.push(format!("site/{site}/dev/?/{}", metric(12)).as_str().into());
    patterns.push(format!("site/{site}/dev/?/command/*").as_str().into());
    patterns.push(
        if c.is_multiple_of(10) { format!("site/{site}/*") } else { format!("site/{site}/?/temp") }.as_str().into(),
    );
    patterns.push(
        if c.is_multiple_of(200) { "*".to_string() } else { format!("alarm/{}/*", pick(SITES, 13)) }.as_str().into(),
    );
    patterns
}

fn scan(connections: &[(u64, Vec<EventPath>)], event_type: &EventPath, out: &mut Vec<u64>) {
    out.clear();
    out.extend(
        connections.iter().filter(|(_, patterns)| patterns.iter().any(|p| p.matches(event_type))).map(|(id, _)| *id),
    );
}

fn benches(c: &mut Criterion) {
    let connections: Vec<(u64, Vec<EventPath>)> = (0..CONNECTIONS).map(|id| (id, patterns(id))).collect();
    let mut index = SubscriptionIndex::new();
    for (id, patterns) in &connections {
        index.insert(*id, patterns);
    }
    let events = [
        ("device metric", EventPath::from("site/42/dev/7/temp")),
        ("unwatched", EventPath::from("factory/3/line/1/speed")),
    ];
    let mut group = c.benchmark_group("route one event, 10k subscriptions");
    for (name, event_type) in &events {
        let (mut by_index, mut by_scan) = (Vec::new(), Vec::new());
        index.matching(event_type, &mut by_index);
        scan(&connections, event_type, &mut by_scan);
        assert_eq!(by_index, by_scan, "the index and the scan disagree on {event_type}");
        let label = format!("{name} ({} connections)", by_index.len());
        group.bench_with_input(BenchmarkId::new("index", &label), event_type, |b, event_type| {
            b.iter(|| index.matching(black_box(event_type), &mut by_index))
        });
        group.bench_with_input(BenchmarkId::new("scan", &label), event_type, |b, event_type| {
            b.iter(|| scan(&connections, black_box(event_type), &mut by_scan))
        });
    }
    group.finish();

    // What a client's Subscribe costs the index: one connection's ten patterns out and back in.
    let replacement: Vec<EventPath> = patterns(CONNECTIONS + 1);
    let original = &connections[7].1;
    c.bench_function("replace one connection's 10 patterns", |b| {
        b.iter(|| {
            index.insert(7, black_box(&replacement));
            index.insert(7, black_box(original));
        })
    });
}

criterion_group!(routing, benches);
criterion_main!(routing);
