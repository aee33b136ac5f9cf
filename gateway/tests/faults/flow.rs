//! Flow control with the default settings: a subscriber that reads slower than its publishers
//! write holds them back and loses nothing; one that reads nothing is cut off after the stall
//! time, and the publishers and every other client go on.

use std::time::Duration;

use rivulet_tokio::model::{Payload, RegisterEvent};
use rivulet_tokio::{Backoff, ClientOptions, connect};
use tokio::task::JoinSet;

use crate::gateway::{Gateway, within};
use crate::steady::*;

/// Flat-out publishers, their events together far more than a queue holds.
const PUBLISHERS: u64 = 20;
const EACH: u64 = 5000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_publishers_back_and_a_stuck_one_is_cut_off() {
    let gateway = Gateway::start(&["--notify-queue", "4096", "--notify-stall-ms", "1000"]);
    let steady = Steady::start(&gateway, "flow").await;
    // Reads an event, then pauses a millisecond every 500: about three times slower than the
    // publishers write.
    let reading = ClientOptions { subscriptions: vec!["flood/*".into()], ..ClientOptions::new("slow-reader") };
    let (reader, mut events) = within("the reader", connect(gateway.addr, reading)).await.expect("connect");
    // Takes 8 events and stops; once cut off it stays away.
    let away = Backoff { initial: Duration::from_secs(3600), max: Duration::from_secs(3600) };
    let stuck_options = ClientOptions {
        subscriptions: vec!["flood/*".into()],
        events: 8,
        reconnect: away,
        ..ClientOptions::new("stuck")
    };
    let (stuck, _unread) = within("the stuck one", connect(gateway.addr, stuck_options)).await.expect("connect");
    let counting = tokio::spawn(async move {
        let mut next = vec![0u64; PUBLISHERS as usize];
        let mut got = 0u64;
        while got < PUBLISHERS * EACH {
            let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(60), events.next()).await else { break };
            let publisher: usize = event.event_type.to_string().trim_start_matches("flood/").parse().expect("flood/N");
            assert_eq!(number(&event), next[publisher], "publisher {publisher}'s events in order, once");
            next[publisher] += 1;
            got += 1;
            if got.is_multiple_of(500) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        got
    });
    let mut publishing = JoinSet::new();
    for p in 0..PUBLISHERS {
        let addr = gateway.addr;
        publishing.spawn(async move {
            let options = ClientOptions::new(format!("publisher-{p}"));
            let (client, _) = within("a publisher", connect(addr, options)).await.expect("connect");
            let mut last = 0;
            for n in 0..EACH {
                let event = RegisterEvent::new(format!("flood/{p}").as_str(), Some(Payload::Json(n.to_string())));
                last = within("register", client.register(event)).await.expect("queued");
            }
            within("stored", client.registered(last)).await.expect("stored");
            client.close().await;
        });
    }
    while let Some(done) = publishing.join_next().await {
        done.expect("a publisher");
    }
    let got = within("the reader's events", counting).await.expect("the reader");
    assert_eq!(got, PUBLISHERS * EACH, "the slow reader lost nothing");
    assert_eq!(reader.state().links, 1, "and kept its link");
    assert!(reader.close_reason().is_none());
    let why = told_why(&stuck).await;
    assert!(why.starts_with("took no notification for 1000 ms"), "{why}");
    let metrics = gateway.metrics().await;
    assert_eq!(metrics.get("rivulet_subscribers_cut_off_total"), 1, "the stuck one alone");
    let steady_run = steady.finish().await;
    gateway.stop();
    println!("flow control: {} events to a slow reader, none lost; the stuck one: {why}; {steady_run}", got);
}
