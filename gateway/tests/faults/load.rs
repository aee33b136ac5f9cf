//! Load that must not become memory: slow consumers, large queries.

use std::net::SocketAddr;
use std::sync::Arc;

use rivulet_tokio::model::{Order, Payload, Query, RegisterEvent, TimeseriesQuery};
use rivulet_tokio::{Client, ClientOptions, Events, connect};
use tokio::task::JoinSet;

use crate::common::PATIENCE;
use crate::gateway::{Gateway, within};
use crate::steady::*;

/// Registers `count` events of `ty`, each a `size`-byte binary payload starting with its number,
/// and waits until all are stored.
async fn publish_blobs(addr: SocketAddr, ty: String, count: u64, size: usize) -> Client {
    let (client, _) =
        within("a publisher", connect(addr, ClientOptions::new(ty.replace('/', "-")))).await.expect("connect");
    let mut last = None;
    for n in 0..count {
        let mut data = vec![0x5a; size];
        data[..8].copy_from_slice(&n.to_be_bytes());
        let event = RegisterEvent::new(ty.as_str(), Some(Payload::Binary { kind: "blob".into(), data }));
        last = Some(within("register a blob", client.register(event)).await.expect("register"));
    }
    within("the blobs stored", client.registered(last.expect("at least one"))).await.expect("stored");
    client
}

/// `n` subscribers to `pattern` that never read (the client takes 8 events and stops).
async fn never_reading(gateway: &Gateway, pattern: &str, n: usize, window: u16) -> Vec<(Client, Events)> {
    let mut slow = Vec::new();
    for i in 0..n {
        let options = ClientOptions {
            subscriptions: vec![pattern.into()],
            window,
            events: 8,
            ..ClientOptions::new(format!("slow-{i}"))
        };
        // Their events are kept, never read.
        slow.push(within("a slow subscriber", connect(gateway.addr, options)).await.expect("connect"));
    }
    slow
}

/// Publishes `events` blobs of `size` bytes on `bulk/0`..`bulk/{publishers}` at once; returns
/// the publishers once all are stored.
async fn publish_bulk(gateway: &Gateway, publishers: u64, events: u64, size: usize) -> Vec<Client> {
    let mut publishing = JoinSet::new();
    for p in 0..publishers {
        publishing.spawn(publish_blobs(gateway.addr, format!("bulk/{p}"), events / publishers, size));
    }
    let mut clients = Vec::new();
    while let Some(publisher) = publishing.join_next().await {
        clients.push(publisher.expect("a publisher"));
    }
    clients
}

/// Four subscribers that never read while 60 MiB of 60 KB events go to them, against a byte
/// budget of 16 MiB per client and 24 MiB for all (`--notify-queue-mb`, `--notify-total-mb`),
/// publishers never held back (`--notify-stall-ms 0`, so that the budgets are what stops them):
/// the count limit (65,536 events, 3.8 GB of them) is never near. Each is cut off by bytes, the
/// one holding the most first when the total is reached, and the gateway's memory grows by
/// what its store caches and the budget, not by what they did not read (with counts alone,
/// one such subscriber pinned 990 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_of_large_events_are_cut_off_by_bytes() {
    const EVENT: usize = 60_000;
    const EVENTS: u64 = 1000; // 57 MiB
    const SLOW: usize = 4;
    const TOTAL_MIB: u64 = 24;
    let total = TOTAL_MIB.to_string();
    let gateway = Gateway::start(&["--notify-queue-mb", "16", "--notify-total-mb", &total, "--notify-stall-ms", "0"]);
    let steady = Steady::start(&gateway, "bytes").await;
    let slow = never_reading(&gateway, "bulk/*", SLOW, 8).await;
    let store_before = gateway.metrics().await.get("rivulet_store_bytes");
    let (rss_before, _) = gateway.memory_kib();
    let publishers = publish_bulk(&gateway, 2, EVENTS, EVENT).await;
    let mut reasons = Vec::new();
    for (client, _events) in &slow {
        reasons.push(told_why(client).await);
    }
    for reason in &reasons {
        let by_bytes = reason.contains("fell 16 MiB of notifications behind")
            || reason.contains("held the most when the notifications queued for all clients reached 24 MiB");
        assert!(by_bytes, "{reason}");
    }
    assert!(reasons.iter().any(|r| r.contains("held the most")), "the total was reached first: {reasons:?}");
    let (_, peak) = gateway.memory_kib();
    let metrics = gateway.metrics().await;
    assert!(metrics.get("rivulet_subscribers_cut_off_total") >= SLOW as u64);
    let store_grown = metrics.get("rivulet_store_bytes") - store_before;
    // What the store caches (as in the test above), the total budget, and 16 MiB for the
    // allocator, the link buffers and the steady clients. Unbounded, the slow ones would hold the
    // 57 MiB they did not read on top.
    let bound_kib = store_grown / 1024 + TOTAL_MIB * 1024 + 16 * 1024;
    let grown = peak.saturating_sub(rss_before);
    assert!(grown <= bound_kib, "RSS peaked {grown} KiB above the {rss_before} KiB before; bound {bound_kib} KiB");
    let steady_run = steady.finish().await;
    for publisher in publishers {
        publisher.close().await;
    }
    drop(slow);
    gateway.stop();
    println!(
        "large events: {SLOW} never reading, {} MiB published; reasons {reasons:?}; RSS grew {grown} KiB (bound \
         {bound_kib} KiB, store grew {} KiB); {steady_run}",
        (EVENTS * EVENT as u64) >> 20,
        store_grown / 1024
    );
}

/// Five subscribers that never read, with `--notify-queue 64` and publishers never held back
/// (`--notify-stall-ms 0`; `flow.rs` tests the default), while 50 MiB of events go to them:
/// each is cut off with the reason and counted, the others are not slowed, and the gateway's
/// memory grows by what its store caches, not by what the slow ones did not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_are_cut_off_and_memory_stays_bounded() {
    const QUEUE: u64 = 64;
    const SLOW: usize = 5;
    const WINDOW: u16 = 8;
    // 15,000 bytes rather than 16 KiB: with 16 KiB payloads the store file grew by 2.7 times the
    // data (redb's cache with it), with 15,000 by 1.4 times, which keeps the bound below tight.
    const EVENT: usize = 15_000;
    const EVENTS: u64 = 3500; // 50 MiB
    const PUBLISHERS: u64 = 4;
    let gateway = Gateway::start(&["--notify-queue", &QUEUE.to_string(), "--notify-stall-ms", "0"]);
    let steady = Steady::start(&gateway, "slow").await;
    let slow = never_reading(&gateway, "bulk/*", SLOW, WINDOW).await;
    let store_before = gateway.metrics().await.get("rivulet_store_bytes");
    let (rss_before, _) = gateway.memory_kib();
    let publishers = publish_bulk(&gateway, PUBLISHERS, EVENTS, EVENT).await;
    for (client, _events) in &slow {
        let reason = told_why(client).await;
        assert!(reason.contains(&format!("fell {QUEUE} notifications behind")), "{reason}");
    }
    let (rss_after, peak) = gateway.memory_kib();
    let metrics = gateway.metrics().await;
    let cut_off = metrics.get("rivulet_slow_clients_total");
    assert!(cut_off >= SLOW as u64, "each slow one counted when cut off: {cut_off}");
    let by_fanout = metrics.get("rivulet_subscribers_cut_off_total");
    assert!(by_fanout >= SLOW as u64, "and by the broker's fan-out: {by_fanout}");
    let store_grown = metrics.get("rivulet_store_bytes") - store_before;
    // The bound. What the slow subscribers may cost the gateway: each has at most QUEUE
    // notifications queued (the events themselves, shared between them) and WINDOW in flight,
    // plus its two link buffers (max_packet + 16 bytes each): about 6 MiB for the five. Besides,
    // redb keeps every page it writes in its cache (up to 1 GiB by default), so the gateway's
    // memory follows what it stores, by at most what the store file grew. 16 MiB more covers the
    // allocator and the other clients. An unbounded queue would hold the 50 MiB the slow ones did
    // not read on top: with `--notify-queue 1000000` instead of 64, RSS grew by 110 MiB against
    // a bound of 90 MiB, where the bounded queue grew it by 60 MiB (docs/RELIABILITY.md).
    let queues = SLOW as u64 * ((QUEUE + u64::from(WINDOW)) * EVENT as u64 + 2 * (64 * 1024 + 16));
    let bound_kib = (store_grown + queues) / 1024 + 16 * 1024;
    let grown = peak.saturating_sub(rss_before);
    assert!(
        grown <= bound_kib,
        "RSS peaked {grown} KiB above the {rss_before} KiB before; bound {bound_kib} KiB \
         (store grew {} KiB, queues {} KiB)",
        store_grown / 1024,
        queues / 1024
    );

    // Every blob is stored once: the count, and each publisher's last one is its latest.
    let steady_run = steady.finish().await;
    assert_eq!(gateway.metrics().await.get("rivulet_store_events"), EVENTS + steady_run.events);
    for (p, publisher) in publishers.iter().enumerate() {
        let ty = format!("bulk/{p}");
        let latest = Query::Latest { event_types: Some(vec![ty.as_str().into()]) };
        let latest = within("latest", publisher.query(latest)).await.expect("an answer");
        assert_eq!(latest.events.iter().map(number).collect::<Vec<_>>(), vec![EVENTS / PUBLISHERS - 1], "{ty}");
    }
    for publisher in publishers {
        publisher.close().await;
    }
    // Not closed one by one: a rivulet-tokio client whose application does not read never gets
    // past handing it the events it holds, so its close waits out the request timeout (10 s).
    drop(slow);
    gateway.stop();
    println!(
        "slow consumers: {SLOW} never reading, {} MiB published; cut off {cut_off} times; RSS {rss_before} KiB \
         before, {rss_after} KiB after, peak {peak} KiB (grew {grown} KiB, bound {bound_kib} KiB; store grew \
         {} KiB); {steady_run}",
        (EVENTS * EVENT as u64) >> 20,
        store_grown / 1024
    );
}

/// Found as a bug, fixed since (the test shows the fix), while checking the slow consumers' blobs:
/// a timeseries page is read whole from the store (up to `broker::PAGE_LIMIT`, 1000 events) before
/// the server cuts the answer to what fits one packet. With large events that is up to 1000 ×
/// `--max-packet` bytes held per query, and a client may have 256 requests in flight: concurrent
/// queries make the gateway's memory follow them, not what it can answer. Here four queries over
/// 500 stored events of 30 KB each get two events apiece (what fits 64 KiB), while the gateway
/// reads all 15 MB for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_queries_hold_no_more_than_they_can_answer() {
    const EVENT: usize = 30_000;
    const QUERIES: usize = 4;
    let gateway = Gateway::start(&[]);
    let mut publishing = JoinSet::new();
    for p in 0..2 {
        publishing.spawn(publish_blobs(gateway.addr, format!("big/{p}"), 250, EVENT));
    }
    while let Some(publisher) = publishing.join_next().await {
        publisher.expect("a publisher").close().await;
    }
    // Publishing had its own peak: what counts is how far the queries raise it.
    let (_, peak_before) = gateway.memory_kib();
    // Queries over 15 MB take a while in a debug build.
    let patient = ClientOptions { request_timeout: PATIENCE, ..ClientOptions::new("querier") };
    let (client, _) = within("a querier", connect(gateway.addr, patient)).await.expect("connect");
    let client = Arc::new(client);
    let mut queries = JoinSet::new();
    for _ in 0..QUERIES {
        let client = client.clone();
        queries.spawn(async move {
            let everything =
                Query::Timeseries(TimeseriesQuery { order: Order::Ascending, ..TimeseriesQuery::default() });
            within("a page", client.query(everything)).await.expect("an answer").events.len()
        });
    }
    while let Some(answered) = queries.join_next().await {
        assert!(answered.expect("a query") < 3, "at most two 30 KB events fit an answer of 64 KiB");
    }
    let (_, peak) = gateway.memory_kib();
    // Each answer is at most 64 KiB; 8 MiB covers them and the allocator many times over.
    let grown = peak.saturating_sub(peak_before);
    assert!(
        grown < 8 * 1024,
        "{QUERIES} queries answered with 64 KiB each made the gateway's RSS peak {grown} KiB higher"
    );
    gateway.stop();
}
