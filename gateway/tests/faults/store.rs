//! A store that fails: a full disk under the gateway.

use rivulet_core::model::Status;
use rivulet_tokio::model::{Order, Payload, Query, RegisterEvent, TimeseriesQuery};
use rivulet_tokio::{ClientError, ClientOptions, connect};

use crate::gateway::{Gateway, within};
use crate::steady::number;

/// The disk fills up (`ulimit -f`: writes past 2 MiB fail) while a client registers 50 KB
/// events. The commit that fails is refused with its cause; from then on the gateway takes no
/// events (a hole behind acknowledged ones must not be), says so in `rivulet status`
/// (`standby`, `store_failed` with the cause), in `rivulet_store_failed` and the log, and tells
/// connected clients (status `standby`), while queries still answer with everything that was
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_registrations_says_why_and_reads_go_on() {
    let gateway = Gateway::start_with_file_limit(2048, &[]);
    let watching = ClientOptions { subscriptions: vec!["other/*".into()], ..ClientOptions::new("watcher") };
    let (watcher, _events) = within("a watcher", connect(gateway.addr, watching)).await.expect("connect");
    let (client, _) = within("a client", connect(gateway.addr, ClientOptions::new("filler"))).await.expect("connect");
    assert_eq!(gateway.metrics().await.get("rivulet_store_failed"), 0);

    let mut acknowledged = 0u64;
    let refusal = loop {
        assert!(acknowledged < 200, "2 MiB held more than 200 events of 50 KB");
        let mut data = vec![0x5a; 50_000];
        data[..8].copy_from_slice(&acknowledged.to_be_bytes());
        let event = RegisterEvent::new("fill/blob", Some(Payload::Binary { kind: "blob".into(), data }));
        // As `rivulet pub` registers: answered once stored, or refused with the reason. (A
        // sequenced registration stays in the client's outbox instead, resent on every link.)
        match within("registered", client.register_with_response(vec![event])).await {
            Ok(_) => acknowledged += 1,
            Err(ClientError::Refused(reason)) => break reason,
            Err(other) => panic!("after {acknowledged} events: {other:?}"),
        }
    };
    assert!(refusal.contains("File too large"), "the cause, to the client: {refusal}");
    assert!(acknowledged > 0, "some went in before the disk was full");

    let mut states = watcher.state_changes();
    within("the watcher told", states.wait_for(|s| s.status == Status::Standby)).await.expect("the watcher runs");
    assert_eq!(gateway.metrics().await.get("rivulet_store_failed"), 1);
    let status = gateway.status().await;
    assert_eq!(status["status"], "standby", "{status}");
    let failed = status["store_failed"].as_str().unwrap_or_else(|| panic!("store_failed in {status}"));
    assert!(failed.contains("File too large"), "{failed}");

    // Reads: every acknowledged event, none of the refused.
    let all = Query::Timeseries(TimeseriesQuery {
        event_types: Some(vec!["fill/*".into()]),
        order: Order::Ascending,
        ..TimeseriesQuery::default()
    });
    let stored = within("a query", client.query_all(all)).await.expect("queries are answered");
    assert_eq!(stored.iter().map(number).collect::<Vec<_>>(), (0..acknowledged).collect::<Vec<_>>());
    let latest = Query::Latest { event_types: Some(vec!["fill/*".into()]) };
    let latest = within("latest", client.query(latest)).await.expect("latest is answered");
    assert_eq!(latest.events.iter().map(number).collect::<Vec<_>>(), [acknowledged - 1]);

    // Later registrations are refused at once, with the cause.
    match within("refused", client.register_with_response(vec![RegisterEvent::new("fill/small", None)])).await {
        Err(ClientError::Refused(reason)) => assert!(reason.contains("the store failed"), "{reason}"),
        other => panic!("a registration after the failure: {other:?}"),
    }
    client.close().await;
    watcher.close().await;
    let log = gateway.stop();
    assert!(log.contains("group commit of") && log.contains("File too large"), "the log names it:\n{log}");
}
