//! The gateway's stores, the log (`LogStore`: one appended frame and one fsync per commit,
//! indexes in memory) and redb (`RedbStore`: one write transaction and one fsync): a durable
//! group commit of 1, 100 and 1000 events of about 100 bytes; one page of a timeseries query in a
//! store of 100,000 events; retention of 10,000 of them; and opening that store (for the log, the
//! recovery that reads every segment), with the bytes read per second. Run:
//! `cargo bench -p rivulet-gateway --bench store -- --warm-up-time 1 --measurement-time 5`.
//!
//! The stores live under the target directory (`CARGO_TARGET_TMPDIR`), on the same disk as a
//! gateway's data would be, so the fsync is a real one.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rivulet_core::model::{EventId, Order, Timestamp};
use rivulet_core::owned::{Event, Payload, TimeseriesQuery};
use std::path::Path;

use rivulet_gateway::store::{Commit, EventStore, LogStore, RedbStore};

/// Event types the events are spread over.
const TYPES: u64 = 100;
/// Events in the store the queries read.
const QUERY_STORE: u64 = 100_000;
/// Events per page of the queries.
const PAGE: u32 = 100;

/// Event `n` of the run: one of [`TYPES`] types, a JSON payload of a sensor reading, timestamps a
/// millisecond apart.
fn event(n: u64) -> Event {
    let device = n % TYPES;
    let payload =
        format!(r#"{{"device":"dev-{device:03}","seq":{n},"temp":{}.{},"unit":"C","ok":true}}"#, 15 + n % 15, n % 10);
    Event {
        id: EventId { server: 1, session: 1, instance: n + 1 },
        event_type: format!("site/{}/dev/{device}/temp", device / 10).as_str().into(),
        timestamp: Timestamp { s: 1_760_000_000 + (n / 1000) as i64, us: (n % 1000) as u32 * 1000 },
        source_timestamp: None,
        payload: Some(Payload::Json(payload)),
    }
}

/// A group commit of events `from..from + count`, with the one client session they came from.
fn commit(from: u64, count: u64) -> Commit {
    Commit::new((from..from + count).map(event), vec![(7, (from + count) as u32)])
}

/// The stores compared, by name, each opened at a path in a scratch directory.
/// Opens a store in a directory.
type Open = fn(&Path) -> Box<dyn EventStore>;

const STORES: [(&str, Open); 2] = [
    ("log", |dir| Box::new(LogStore::open(&dir.join("events.log")).expect("open the log store"))),
    ("redb", |dir| Box::new(RedbStore::open(&dir.join("events.redb")).expect("open the redb store"))),
];

/// A store of `name` holding [`QUERY_STORE`] events, committed 1000 at a time.
fn filled(open: Open, dir: &Path) -> Box<dyn EventStore> {
    let store = open(dir);
    for from in (0..QUERY_STORE).step_by(1000) {
        store.commit(&commit(from, 1000)).expect("fill the store");
    }
    store
}

/// The system allocator, counting the bytes allocated and not freed: what an open store keeps
/// in memory.
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: passes every call on to the system allocator unchanged; only counts sizes.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: a pointer this allocator gave out, with its layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a directory under target/")
}

fn commits(c: &mut Criterion) {
    let sample = event(12_345);
    let encoded = postcard::to_allocvec(&sample.as_ref()).expect("encode").len();
    println!("an event: {encoded} bytes as stored (type {}, payload {:?})", sample.event_type, sample.payload);
    let mut group = c.benchmark_group("commit (durable)");
    for (engine, open) in STORES {
        for size in [1u64, 100, 1000] {
            // A fresh store per size; ids keep counting up across iterations, as in a gateway.
            let dir = scratch();
            let store = open(dir.path());
            let mut next = 0;
            group.throughput(Throughput::Elements(size));
            group.bench_with_input(BenchmarkId::new(engine, format!("{size} events")), &size, |b, &size| {
                b.iter_batched(
                    || {
                        let batch = commit(next, size);
                        next += size;
                        batch
                    },
                    |batch| store.commit(black_box(&batch)).expect("commit"),
                    BatchSize::PerIteration,
                )
            });
            let stats = store.stats().expect("stats");
            println!("  {engine}, {size}-event commits: store holds {} events in {} bytes", stats.events, stats.bytes);
        }
    }
    group.finish();
}

fn queries(c: &mut Criterion) {
    let page = |event_types: Option<&str>, order| TimeseriesQuery {
        event_types: event_types.map(|pattern| vec![pattern.into()]),
        order,
        max_results: Some(PAGE),
        ..TimeseriesQuery::default()
    };
    let cases = [
        ("oldest 100, all types", page(None, Order::Ascending)),
        ("newest 100, all types", page(None, Order::Descending)),
        // The type filter is applied to each event on the time index: 100 of one type in 100
        // read about 10,000 events.
        ("oldest 100 of one type", page(Some("site/4/dev/42/temp"), Order::Ascending)),
        ("oldest 100 of site/4/* (10 types)", page(Some("site/4/*"), Order::Ascending)),
    ];
    let mut group = c.benchmark_group(format!("timeseries page of {PAGE}, {QUERY_STORE} events stored"));
    for (engine, open) in STORES {
        let dir = scratch();
        let store = filled(open, dir.path());
        for (name, query) in &cases {
            let answer = store.timeseries(query, usize::MAX).expect("query");
            assert_eq!(answer.events.len(), PAGE as usize, "{name}: a full page");
            assert!(answer.more_follows, "{name}: more follow");
            group.bench_with_input(BenchmarkId::new(engine, name), query, |b, query| {
                b.iter(|| store.timeseries(black_box(query), usize::MAX).expect("query"))
            });
        }
    }
    group.finish();
}

/// Retention of the oldest 10,000 of 100,000 events (by count), each iteration on a fresh copy.
fn retention(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("retain 10,000 of {QUERY_STORE} events"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(10_000));
    for (engine, open) in STORES {
        group.bench_function(engine, |b| {
            b.iter_batched(
                || {
                    let dir = scratch();
                    let store = filled(open, dir.path());
                    (dir, store)
                },
                |(dir, store)| {
                    assert_eq!(store.retain(None, Some(QUERY_STORE - 10_000)).expect("retain"), 10_000);
                    (dir, store)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// Opening a store of 100,000 events: the log reads and indexes every segment (its recovery
/// after a crash is this same read); redb opens its file. Throughput is the store's bytes.
fn opening(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("open a store of {QUERY_STORE} events"));
    group.sample_size(10);
    for (engine, open) in STORES {
        let dir = scratch();
        let bytes = {
            let store = filled(open, dir.path());
            store.stats().expect("stats").bytes
        };
        let before = live();
        let kept = open(dir.path());
        let held = live().saturating_sub(before) as u64;
        println!("  {engine}: {bytes} bytes on disk; open, it holds {} bytes of memory per event", held / QUERY_STORE);
        drop(kept);
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(engine, |b| b.iter(|| drop(black_box(open(dir.path())))));
    }
    group.finish();
}

criterion_group!(store, commits, queries, retention, opening);
criterion_main!(store);
