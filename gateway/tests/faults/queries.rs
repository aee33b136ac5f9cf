//! Queries that cost: many patterns, nothing found in a large store, rare events far apart.

use rivulet_tokio::model::{Order, Query, TimeseriesQuery};
use rivulet_tokio::{Client, ClientError, ClientOptions, connect};

use crate::gateway::{Gateway, within};
use crate::steady::{Steady, numbered, stored_numbers};

const SCAN: u64 = 20_000;
const EVENTS: u64 = 30_000;
/// Every this many events, one of type `rare/x`.
const RARE_EVERY: u64 = 5_000;

fn timeseries(patterns: &[&str]) -> Query {
    Query::Timeseries(TimeseriesQuery {
        event_types: Some(patterns.iter().map(|p| (*p).into()).collect()),
        order: Order::Ascending,
        ..TimeseriesQuery::default()
    })
}

/// 30,000 events, the rare ones numbered by where they are.
async fn fill(client: &Client) {
    let mut last = 0;
    for n in 0..EVENTS {
        let ty = if n % RARE_EVERY == 0 { "rare/x".to_string() } else { format!("many/{}", n % 100) };
        last = within("register", client.register(numbered(&ty, n))).await.expect("register");
    }
    within("stored", client.registered(last)).await.expect("stored");
}

/// With `--query-scan 20000` over 30,000 stored events: a query naming more patterns than a
/// client may hold is refused; one that finds nothing in 20,000 is refused with what to do; one
/// whose events are far apart gets them page by page, each page looking at no more than 20,000.
/// Meanwhile the steady clients keep their rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_costs_at_most_its_scan_budget_per_page() {
    let gateway = Gateway::start(&["--query-scan", &SCAN.to_string()]);
    let patient = ClientOptions { request_timeout: crate::common::PATIENCE, ..ClientOptions::new("querier") };
    let (client, _) = within("a client", connect(gateway.addr, patient)).await.expect("connect");
    // Steady first: its events spread among the others, so that its own check of the store
    // (page by page) finds some in every 20,000.
    let steady = Steady::start(&gateway, "queries").await;
    fill(&client).await;

    let many: Vec<String> = (0..1001).map(|n| format!("none/{n}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    match within("many patterns", client.query(timeseries(&many))).await {
        Err(ClientError::Refused(reason)) => {
            assert!(reason.contains("the query names 1001 patterns; the gateway takes at most 1000"), "{reason}")
        }
        other => panic!("1001 patterns: {other:?}"),
    }
    // A thousand patterns are taken, and cost what one does.
    match within("nothing found", client.query(timeseries(&many[..1000]))).await {
        Err(ClientError::Refused(reason)) => {
            assert!(reason.contains(&format!("looked at {SCAN} stored events without finding one")), "{reason}")
        }
        other => panic!("a query that finds nothing: {other:?}"),
    }
    let first = within("the first page", client.query(timeseries(&["rare/*"]))).await.expect("a page");
    assert!(first.more_follows, "the page ends at the budget, with more to follow");
    let numbers: Vec<u64> = first.events.iter().map(crate::steady::number).collect();
    assert_eq!(numbers, [0, 5_000, 10_000, 15_000], "what the first 20,000 hold");
    let all = stored_numbers(&client, "rare/*", 1000).await;
    assert_eq!(all, (0..EVENTS).step_by(RARE_EVERY as usize).collect::<Vec<_>>(), "page by page, all of them");

    let status = gateway.status().await;
    assert!(status["queries_scan_spent"].as_u64() >= Some(2), "{status}");
    assert!(gateway.metrics().await.get("rivulet_queries_scan_spent_total") >= 2);
    let steady_run = steady.finish().await;
    client.close().await;
    gateway.stop();
    println!("queries: {steady_run}");
}
