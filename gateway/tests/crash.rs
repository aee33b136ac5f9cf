//! kill -9 of the real `rivulet gateway` process.
//!
//! While a client registers as fast as it can and a persisted subscriber follows it: after a restart on the same directory and port, every
//! registration the gateway acknowledged (stored durably) is there exactly once, the client's
//! session resumes so that the rest is stored exactly once too, and the subscriber, filling the
//! gap across the restart with a query as docs/GATEWAY.md says, has every event exactly once:
//! those it got live from either gateway and those only the query gave.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rivulet_core::model::{EventId, Order};
use rivulet_tokio::model::{Event, Payload, Query, RegisterEvent, TimeseriesQuery};
use rivulet_tokio::{Backoff, Client, ClientOptions, Events, connect};
use tokio::sync::watch;

use common::{PATIENCE, Running, run};

const TYPE: &str = "crash/test";
/// Registered without pause, the gateway killed among them.
const EVENTS: u64 = 3000;
/// Registered after the subscriber is back, to come to it live from the new gateway.
const AFTER: u64 = 100;

/// Starts `rivulet gateway` in `dir` with store engine `store` and returns it with the address
/// it listens on.
fn gateway(dir: &std::path::Path, listen: &str, store: &str) -> (Running, String) {
    let gateway = Running::spawn(&["gateway", "--listen", listen, "--commit-ms", "2", "--store", store], dir, &[]);
    let addr = gateway.listening_addr();
    (gateway, addr)
}

fn number(payload: &Option<Payload>) -> u64 {
    match payload {
        Some(Payload::Json(text)) => text.parse().expect("a number"),
        other => panic!("{other:?}"),
    }
}

/// Every stored event of [`TYPE`] after `after` (from the start without it), oldest first.
fn stored_after(after: Option<EventId>) -> Query {
    Query::Timeseries(TimeseriesQuery {
        event_types: Some(vec![TYPE.into()]),
        order: Order::Ascending,
        last_event_id: after,
        ..TimeseriesQuery::default()
    })
}

/// What the persisted subscriber has.
#[derive(Default)]
struct Followed {
    /// Its events, each once, oldest first: the live ones and those the gap queries returned.
    kept: Vec<Event>,
    /// Every event notified to it, as it came.
    live: Vec<Event>,
    /// The events kept from a gap query, not live (the gap).
    filled: Vec<EventId>,
    /// Queries run after a new link.
    gap_queries: usize,
}

/// The persisted subscriber's application, as a user would write it: it keeps the events in
/// order, and each time its client links again (the gateway then notifies only what it commits
/// from that moment on) it asks for what was stored after the last event it has, keeping each
/// event once by id. The link's state goes first: a new link's events come after its change.
async fn follow(client: Arc<Client>, mut events: Events, followed: watch::Sender<Followed>) {
    let mut state = client.state_changes();
    let mut links = state.borrow_and_update().links;
    let keep = |followed: &mut Followed, event: Event| {
        let newer = followed.kept.last().is_none_or(|last| event.id > last.id);
        if newer {
            followed.kept.push(event);
        }
        newer
    };
    loop {
        tokio::select! {
            biased;
            changed = state.changed() => {
                changed.expect("the client runs");
                let now = *state.borrow_and_update();
                if now.connected && now.links > links {
                    links = now.links;
                    let after = followed.borrow().kept.last().map(|e| e.id);
                    let gap = client
                        .query_all(stored_after(after))
                        .await
                        .unwrap_or_else(|e| panic!("the gap query after {after:?} failed: {e}"));
                    followed.send_modify(|f| {
                        f.gap_queries += 1;
                        for event in gap {
                            let id = event.id;
                            if keep(f, event) {
                                f.filled.push(id);
                            }
                        }
                    });
                }
            }
            event = events.next() => {
                let Some(event) = event else { return };
                followed.send_modify(|f| {
                    f.live.push(event.clone());
                    keep(f, event);
                });
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_and_duplicates_no_acknowledged_registration_redb() {
    kill_9_loses_and_duplicates_no_acknowledged_registration("redb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_and_duplicates_no_acknowledged_registration_log() {
    kill_9_loses_and_duplicates_no_acknowledged_registration("log").await;
}

async fn kill_9_loses_and_duplicates_no_acknowledged_registration(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (first, addr) = gateway(dir.path(), "127.0.0.1:0", store);
    let options = ClientOptions {
        reconnect: Backoff { initial: Duration::from_millis(20), ..Backoff::default() },
        ..ClientOptions::new("producer")
    };
    let (client, _) = connect(addr.clone(), options).await.expect("connect");
    let client = Arc::new(client);
    // Slower to come back than the producer (0.5 to 1 s after the kill), so that the new gateway
    // usually stores events before the subscriber is there to be notified of them: with what the
    // old one stored and had not sent it yet, the gap its query has to fill.
    let after_restart = Duration::from_secs(1);
    let subscribing = ClientOptions {
        persisted: true,
        subscriptions: vec![TYPE.into()],
        reconnect: Backoff { initial: after_restart, max: after_restart },
        ..ClientOptions::new("persisted-subscriber")
    };
    let (subscriber, events) = connect(addr.clone(), subscribing).await.expect("connect the subscriber");
    let subscriber = Arc::new(subscriber);
    let (followed_tx, followed) = watch::channel(Followed::default());
    let following = tokio::spawn(follow(subscriber.clone(), events, followed_tx));

    // Register numbered events without pause; remember which number went with which seq.
    let seqs = Arc::new(Mutex::new(HashMap::new()));
    let producing = {
        let (client, seqs) = (client.clone(), seqs.clone());
        tokio::spawn(async move {
            for n in 0..EVENTS {
                let event = RegisterEvent::new(TYPE, Some(Payload::Json(n.to_string())));
                let seq = client.register(event).await.expect("queued");
                seqs.lock().unwrap().insert(seq, n);
            }
        })
    };
    // Kill mid-stream, once a good share is acknowledged and the subscriber has some of it.
    let mut subscribed = followed.clone();
    tokio::time::timeout(PATIENCE, async {
        while client.state().registered_below < 500 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        subscribed.wait_for(|f| f.live.len() >= 100).await.expect("the subscriber runs");
    })
    .await
    .expect("acknowledgements and notifications come");
    first.kill();
    let acknowledged_below = client.state().registered_below;
    let acknowledged: Vec<u64> = {
        let seqs = seqs.lock().unwrap();
        (0..acknowledged_below).map(|seq| seqs[&seq]).collect()
    };
    assert!(!acknowledged.is_empty());
    let live_before_restart = followed.borrow().live.len();

    // Same directory, same port: the clients find it again by themselves.
    let (second, _) = gateway(dir.path(), &addr, store);
    tokio::time::timeout(PATIENCE, producing).await.expect("all queued").unwrap();
    let last = seqs.lock().unwrap().keys().copied().max().expect("registered");
    tokio::time::timeout(PATIENCE, client.registered(last)).await.expect("all stored").expect("stored");
    // Once the subscriber is back, more, which it gets live.
    let mut back = subscriber.state_changes();
    tokio::time::timeout(PATIENCE, back.wait_for(|s| s.connected && s.links == 2))
        .await
        .expect("the subscriber links again")
        .expect("the subscriber runs");
    let mut last = None;
    for n in EVENTS..EVENTS + AFTER {
        last =
            Some(client.register(RegisterEvent::new(TYPE, Some(Payload::Json(n.to_string())))).await.expect("queued"));
    }
    let last = last.expect("registered");
    tokio::time::timeout(PATIENCE, client.registered(last)).await.expect("all stored").expect("stored");

    let stored =
        tokio::time::timeout(PATIENCE, client.query_all(stored_after(None))).await.expect("query").expect("answered");
    let numbers: Vec<u64> = stored.iter().map(|e| number(&e.payload)).collect();
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for n in &numbers {
        *counts.entry(*n).or_default() += 1;
    }
    for n in &acknowledged {
        assert_eq!(counts.get(n), Some(&1), "acknowledged event {n} is stored exactly once");
    }
    assert_eq!(numbers, (0..EVENTS + AFTER).collect::<Vec<_>>(), "and every registration, once, in order");

    // The subscriber: every stored event once, whatever came live and whatever the gap query
    // gave. Waits until it has the last one; a hole or a duplicate fails below.
    let newest = stored.last().expect("stored events").id;
    let mut complete = followed.clone();
    let in_time = tokio::time::timeout(PATIENCE, complete.wait_for(|f| f.kept.last().is_some_and(|e| e.id >= newest)))
        .await
        .is_ok_and(|waited| waited.is_ok());
    following.abort();
    let followed = followed.borrow();
    let kept: Vec<u64> = followed.kept.iter().map(|e| number(&e.payload)).collect();
    assert!(in_time, "the subscriber has {} events, not the last one, after {PATIENCE:?}", kept.len());
    let mut kept_counts: HashMap<u64, usize> = HashMap::new();
    for n in &kept {
        *kept_counts.entry(*n).or_default() += 1;
    }
    for n in &acknowledged {
        assert_eq!(kept_counts.get(n), Some(&1), "the subscriber has acknowledged event {n} exactly once");
    }
    let differs = kept.iter().zip(&numbers).position(|(k, n)| k != n);
    assert!(
        kept == numbers,
        "the subscriber has {} events, not every stored one once in order: first difference at {differs:?}",
        kept.len()
    );
    assert_eq!(subscriber.state().links, 2, "the subscriber linked again once, to the new gateway");
    assert_eq!(followed.gap_queries, 1, "and filled the gap once");
    // Persisted: notified only after the commit, in commit order, so what came live is stored,
    // under the same id, and came once.
    let stored_ids: HashMap<EventId, u64> = stored.iter().map(|e| (e.id, number(&e.payload))).collect();
    for event in &followed.live {
        let n = number(&event.payload);
        assert_eq!(
            stored_ids.get(&event.id),
            Some(&n),
            "event {n} was notified to a persisted subscriber as {:?}, and is stored so",
            event.id
        );
    }
    assert!(followed.live.windows(2).all(|w| w[0].id < w[1].id), "notified in commit order, each once");
    let first_session = stored[0].id.session;
    let filled_from_first = followed.filled.iter().filter(|id| id.session == first_session).count();
    println!(
        "kill -9: {} of {EVENTS} acknowledged before the kill; the persisted subscriber had {live_before_restart} \
         live before the restart, {} live in all, {} from the gap query ({filled_from_first} stored by the killed \
         gateway, {} by the new one)",
        acknowledged.len(),
        followed.live.len(),
        followed.filled.len(),
        followed.filled.len() - filled_from_first
    );
    second.kill();
}

/// Volatile events are acknowledged once routed, and their session cursor goes to the store in
/// a later group commit. A kill -9 before that commit leaves the stored cursor behind the
/// client: after the restart the client's next registrations must still be taken (as fresh,
/// the numbers skipped being volatile events already routed), and none stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_acknowledgements_ahead_of_the_stored_cursor_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    // A commit once one stored event waits, else after a minute: the volatile events' cursor
    // waits for that minute, and the kill comes first.
    let flags = |listen: &str| {
        ["gateway", "--listen", listen, "--volatile", "fast/*", "--commit-events", "1", "--commit-ms", "60000"]
            .map(String::from)
    };
    let spawn = |listen: &str| {
        let flags = flags(listen);
        let gateway = Running::spawn(&flags.each_ref().map(String::as_str), dir.path(), &[]);
        let addr = gateway.listening_addr();
        (gateway, addr)
    };
    let (first, addr) = spawn("127.0.0.1:0");
    let reconnect = Backoff { initial: Duration::from_millis(20), ..Backoff::default() };
    let (client, _) =
        connect(addr.clone(), ClientOptions { reconnect, ..ClientOptions::new("producer") }).await.expect("connect");
    let watching = ClientOptions { subscriptions: vec!["*".into()], reconnect, ..ClientOptions::new("watcher") };
    let (watcher, mut events) = connect(addr.clone(), watching).await.expect("connect the subscriber");
    let register = |ty: &str, n: u64| client.register(RegisterEvent::new(ty, Some(Payload::Json(n.to_string()))));

    let slow = register("slow/a", 0).await.expect("queued");
    tokio::time::timeout(PATIENCE, client.registered(slow)).await.expect("stored").expect("stored");
    let mut last = slow;
    for n in 1..=200 {
        last = register("fast/x", n).await.expect("queued");
    }
    // Acknowledged long before the minute after which their cursor would be written.
    tokio::time::timeout(Duration::from_secs(30), client.registered(last))
        .await
        .expect("volatile events are acknowledged once routed")
        .expect("acknowledged");
    let mut seen = Vec::new();
    while seen.len() < 201 {
        let event = tokio::time::timeout(PATIENCE, events.next()).await.expect("notified").expect("a link");
        seen.push(number(&event.payload));
    }
    assert_eq!(seen, (0..=200).collect::<Vec<_>>(), "every event routed once, in order");
    first.kill();

    let (second, _) = spawn(&addr);
    let mut back = watcher.state_changes();
    tokio::time::timeout(PATIENCE, back.wait_for(|s| s.connected && s.links == 2))
        .await
        .expect("the subscriber links again")
        .expect("the subscriber runs");
    for n in 201..=250 {
        register("fast/x", n).await.expect("queued");
    }
    let slow = register("slow/b", 251).await.expect("queued");
    tokio::time::timeout(PATIENCE, client.registered(slow))
        .await
        .expect("taken after the restart, past the stale cursor")
        .expect("stored");
    let mut after = Vec::new();
    while after.last() != Some(&251) {
        let event = tokio::time::timeout(PATIENCE, events.next()).await.expect("notified").expect("a link");
        after.push(number(&event.payload));
    }
    assert_eq!(after, (201..=251).collect::<Vec<_>>(), "every registration after the restart taken once");
    assert_eq!(client.state().links, 2, "the producer was never refused: one link per gateway");
    let all = Query::Timeseries(TimeseriesQuery { order: Order::Ascending, ..TimeseriesQuery::default() });
    let stored = tokio::time::timeout(PATIENCE, client.query_all(all)).await.expect("query").expect("answered");
    let stored: Vec<(String, u64)> = stored.iter().map(|e| (e.event_type.to_string(), number(&e.payload))).collect();
    assert_eq!(stored, [("slow/a".to_string(), 0), ("slow/b".to_string(), 251)], "only the durable ones, once");
    drop(watcher);
    second.kill();
}

/// A data directory keeps the engine it was made with: a gateway started with the other one
/// refuses to start (saying which flag serves it) rather than start empty beside it.
#[test]
fn a_store_of_the_other_engine_is_refused_not_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = gateway(dir.path(), "127.0.0.1:0", "redb");
    drop(first);
    let other = run(&["gateway", "--listen", "127.0.0.1:0", "--store", "log"], dir.path(), &[]);
    assert!(!other.status.success(), "the gateway started beside a redb store");
    let said = String::from_utf8_lossy(&other.stderr);
    assert!(said.contains("holds a redb store") && said.contains("--store redb"), "{said}");
    assert!(!dir.path().join("rivulet-data/events.log").exists(), "no log store was made");
}
