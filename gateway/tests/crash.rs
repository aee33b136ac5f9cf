//! kill -9 of the real `rivulet gateway` process while a client registers as fast as it can:
//! after a restart on the same directory and port, every registration the gateway acknowledged
//! (stored durably) is there exactly once, and the client's session resumes so that the rest is
//! stored exactly once too.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use rivulet_core::model::Order;
use rivulet_tokio::model::{Payload, Query, RegisterEvent, TimeseriesQuery};
use rivulet_tokio::{ClientOptions, connect};

use common::{PATIENCE, Running};

/// Starts `rivulet gateway` in `dir` and returns it with the address it listens on.
fn gateway(dir: &std::path::Path, listen: &str) -> (Running, String) {
    let gateway = Running::spawn(&["gateway", "--listen", listen, "--commit-ms", "2"], dir, &[]);
    let addr = gateway.listening_addr();
    (gateway, addr)
}

fn number(payload: &Option<Payload>) -> u64 {
    match payload {
        Some(Payload::Json(text)) => text.parse().expect("a number"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_and_duplicates_no_acknowledged_registration() {
    let dir = tempfile::tempdir().unwrap();
    let (first, addr) = gateway(dir.path(), "127.0.0.1:0");
    let options = ClientOptions {
        reconnect: rivulet_tokio::Backoff { initial: Duration::from_millis(20), ..rivulet_tokio::Backoff::default() },
        ..ClientOptions::new("producer")
    };
    let (client, _) = connect(addr.clone(), options).await.expect("connect");
    let client = std::sync::Arc::new(client);

    // Register numbered events without pause; remember which number went with which seq.
    let seqs = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
    let producing = {
        let (client, seqs) = (client.clone(), seqs.clone());
        tokio::spawn(async move {
            for n in 0..3000u64 {
                let event = RegisterEvent::new("crash/test", Some(Payload::Json(n.to_string())));
                let seq = client.register(event).await.expect("queued");
                seqs.lock().unwrap().insert(seq, n);
            }
        })
    };
    // Kill mid-stream, once a good share is acknowledged.
    tokio::time::timeout(PATIENCE, async {
        while client.state().registered_below < 500 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("acknowledgements come");
    first.kill();
    let acknowledged_below = client.state().registered_below;
    let acknowledged: Vec<u64> = {
        let seqs = seqs.lock().unwrap();
        (0..acknowledged_below).map(|seq| seqs[&seq]).collect()
    };
    assert!(!acknowledged.is_empty());

    // Same directory, same port: the client finds it again by itself.
    let (second, _) = gateway(dir.path(), &addr);
    tokio::time::timeout(PATIENCE, producing).await.expect("all queued").unwrap();
    let last = seqs.lock().unwrap().keys().copied().max().expect("registered");
    tokio::time::timeout(PATIENCE, client.registered(last)).await.expect("all stored").expect("stored");

    let query = Query::Timeseries(TimeseriesQuery { order: Order::Ascending, ..TimeseriesQuery::default() });
    let stored = tokio::time::timeout(PATIENCE, client.query_all(query)).await.expect("query").expect("answered");
    let numbers: Vec<u64> = stored.iter().map(|e| number(&e.payload)).collect();
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for n in &numbers {
        *counts.entry(*n).or_default() += 1;
    }
    for n in &acknowledged {
        assert_eq!(counts.get(n), Some(&1), "acknowledged event {n} is stored exactly once");
    }
    assert_eq!(numbers, (0..3000).collect::<Vec<_>>(), "and every registration, once, in order");
    second.kill();
}
