//! `rivulet_tokio` clients across server crashes and restarts: a server in its own thread and
//! runtime (`ServerThread`) is killed mid-stream, as a crashed process would be, and started
//! again on the same port over the same store (`MemoryStore`, which outlives it like a database).
//! The clients reconnect by themselves, resume their sessions and lose or duplicate nothing.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rivulet_host_tests::memory::{eventually, next_event, take_events};
use rivulet_host_tests::{MemoryStore, ServerThread, StoredEvent, within};
use rivulet_tokio::model::{Event, EventPath, Payload, Query, RegisterEvent};
use rivulet_tokio::server::ServerOptions;
use rivulet_tokio::{Backoff, Client, ClientError, ClientOptions, Events, connect};
use tokio::sync::watch;

const SERVER_ID: u64 = 7;

fn options(name: &str) -> ClientOptions {
    let reconnect = Backoff { initial: Duration::from_millis(20), max: Duration::from_millis(150) };
    ClientOptions { reconnect, ..ClientOptions::new(name) }
}

fn server_options() -> ServerOptions {
    ServerOptions { server_id: SERVER_ID, ..ServerOptions::default() }
}

async fn start(addr: SocketAddr, store: &Arc<MemoryStore>) -> ServerThread {
    within("server start", ServerThread::start(addr, server_options(), store.clone())).await.expect("bind")
}

async fn client(addr: SocketAddr, options: ClientOptions) -> (Client, Events) {
    within("connect", connect(addr, options)).await.expect("admitted")
}

fn numbered(prefix: &str, n: u32) -> RegisterEvent {
    RegisterEvent::new(format!("{prefix}/p{}", n % 3).as_str(), Some(Payload::Json(n.to_string())))
}

fn number(event: &Event) -> u32 {
    match &event.payload {
        Some(Payload::Json(n)) => n.parse().expect("a number"),
        other => panic!("not one of ours: {other:?}"),
    }
}

/// The registrations of `session` in the store, in the order stored.
fn of_session(store: &MemoryStore, session: u64) -> Vec<StoredEvent> {
    store.stored().into_iter().filter(|s| s.session == session).collect()
}

/// Every acknowledged registration of `session` is stored, once: checked each time the client's
/// acknowledged mark moves (so at the very moment an acknowledgement arrives). Ends when the
/// mark reaches `until`; returns how many distinct marks it checked.
fn check_acknowledged(client: &Client, store: Arc<MemoryStore>, until: u32) -> tokio::task::JoinHandle<usize> {
    let mut changes = client.state_changes();
    let session = client.state().session.expect("connected");
    tokio::spawn(async move {
        let mut highest = 0;
        let mut checked = 0;
        loop {
            let state = *changes.borrow_and_update();
            assert_eq!(state.session, Some(session), "the session changed");
            let below = state.registered_below;
            assert!(below >= highest, "the acknowledged mark went back from {highest} to {below}");
            if below > highest {
                let seqs: Vec<u32> = of_session(&store, session).iter().filter_map(|s| s.seq).collect();
                let acknowledged: Vec<u32> = seqs.iter().copied().filter(|&seq| seq < below).collect();
                assert_eq!(acknowledged, (0..below).collect::<Vec<_>>(), "acknowledged below {below}: stored once");
                highest = below;
                checked += 1;
            }
            if below >= until || changes.changed().await.is_err() {
                return checked;
            }
        }
    })
}

/// Checks that `session` stored exactly the numbers `0..count`, in order, as seqs `0..count`.
fn assert_stored_once(store: &MemoryStore, session: u64, count: u32) {
    let mine = of_session(store, session);
    let seqs: Vec<Option<u32>> = mine.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, (0..count).map(Some).collect::<Vec<_>>(), "each registration stored once, in order");
    let numbers: Vec<u32> = mine.iter().map(|s| number(&s.event)).collect();
    assert_eq!(numbers, (0..count).collect::<Vec<_>>());
    assert_eq!(store.next_seq(session), Some(count));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_server_loses_and_duplicates_nothing_and_subscriptions_come_back() {
    const COUNT: u32 = 300;
    const GATE: u32 = 200;
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let first = start("127.0.0.1:0".parse().expect("an address"), &store).await;
    let addr = first.addr();

    let (subscriber, mut notified) = client(addr, options("subscriber")).await;
    // Subscribed on the open link, not in the options: the client keeps it for later links.
    subscriber.subscribe("stream/?").await.expect("a valid pattern");
    let listed = |server: &rivulet_tokio::Server| {
        server
            .connections()
            .iter()
            .any(|c| c.client_name == "subscriber" && c.subscriptions == [EventPath::from("stream/?")])
    };
    eventually("the subscription is taken", || listed(first.server())).await;
    let (producer, _) = client(addr, options("producer")).await;
    let producer = Arc::new(producer);
    let session = producer.state().session.expect("a session");
    let checker = check_acknowledged(&producer, store.clone(), COUNT);

    // The stream: paced, so the crash comes in its middle; from GATE on it waits for the test.
    let (gate, mut gate_open) = watch::channel(false);
    let producing = tokio::spawn({
        let producer = producer.clone();
        async move {
            for n in 0..COUNT {
                if n == GATE {
                    gate_open.wait_for(|open| *open).await.expect("the test runs");
                }
                let seq = producer.register(numbered("stream", n)).await.expect("queued, online or not");
                assert_eq!(seq, n);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
    });

    eventually("a hundred stored", || store.len() >= 100).await;
    first.kill().await;
    eventually("the clients see the link gone", || !producer.state().connected && !subscriber.state().connected).await;
    // Read once the link is gone: acks the dead server had written still arrive before its end.
    let acknowledged_at_crash = producer.state().registered_below;
    tokio::time::sleep(Duration::from_millis(300)).await; // down; the producer keeps registering
    assert_eq!(producer.state().registered_below, acknowledged_at_crash, "nothing acknowledged while down");
    let down_for = store.len();

    let second = start(addr, &store).await;
    // The subscriber comes back with its subscription, the application doing nothing.
    eventually("the subscriber is back with its pattern", || listed(second.server())).await;
    let stored_before_back = store.len();
    gate.send_replace(true);
    within("the producer's stream", producing).await.expect("the producer ran");
    within("every registration acknowledged", producer.registered(COUNT - 1)).await.expect("registered");
    let checked = within("the acknowledgement checks", checker).await.expect("every acknowledgement was stored");
    assert!(checked > 1, "acknowledgements came in steps");

    // (a) Each of the 300 stored exactly once, across the crash.
    assert_stored_once(&store, session, COUNT);
    let stored = store.stored();
    assert_eq!(stored.len(), COUNT as usize);
    let epochs: BTreeSet<u64> = stored.iter().map(|s| s.epoch).collect();
    assert_eq!(epochs, BTreeSet::from([1, 2]), "stored partly before the crash, partly after");
    assert!(stored.iter().filter(|s| s.epoch == 1).count() == down_for, "the dead server stored nothing more");

    // (b) Everything stored once the subscriber was back reached it; nothing twice, in order.
    let last_id = stored.last().expect("stored").event.id;
    let mut received = Vec::new();
    while received.last().is_none_or(|e: &Event| e.id != last_id) {
        received.push(next_event(&mut notified).await);
    }
    assert!(received.windows(2).all(|w| w[0].id < w[1].id), "in order, without duplicates");
    let events: Vec<Event> = stored.iter().map(|s| s.event.clone()).collect();
    assert!(received.iter().all(|e| events.contains(e)), "only stored events, as stored");
    let after_back = &events[stored_before_back..];
    assert!(after_back.len() >= (COUNT - GATE) as usize);
    assert!(after_back.iter().all(|e| received.contains(e)), "every event after the subscriber came back");

    // (c) Both reconnected by themselves; the producer's session resumed.
    let state = producer.state();
    assert!(state.connected && state.links >= 2, "{state:?}");
    assert_eq!(state.session, Some(session), "the session resumed");
    let state = subscriber.state();
    assert!(state.connected && state.links >= 2, "{state:?}");
    second.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_made_while_the_server_is_down_are_stored_once_it_is_back() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let first = start("127.0.0.1:0".parse().expect("an address"), &store).await;
    let addr = first.addr();
    let options = ClientOptions { subscriptions: vec!["burst/*".into()], ..options("device") };
    let (device, mut notified) = client(addr, options).await;
    for n in 0..5 {
        device.register(numbered("burst", n)).await.expect("queued");
    }
    within("online registrations", device.registered(4)).await.expect("registered");
    let online = take_events(&mut notified, 5).await;
    let session = device.state().session.expect("a session");

    first.kill().await;
    eventually("the device sees the link gone", || !device.state().connected).await;
    // A burst while nobody listens: each goes to the outbox.
    for n in 5..105 {
        let seq = within("register offline", device.register(numbered("burst", n))).await.expect("queued offline");
        assert_eq!(seq, n);
    }
    // Down for several reconnection attempts.
    let pending = tokio::time::timeout(Duration::from_millis(600), device.registered(104)).await;
    assert!(pending.is_err(), "acknowledged with no server");
    let state = device.state();
    assert_eq!((state.connected, state.registered_below, state.links), (false, 5, 1), "{state:?}");
    assert_eq!(store.len(), 5);
    // What needs the server fails at once; a subscription waits for the next link.
    let latest = Query::Latest { event_types: None };
    assert_eq!(within("query offline", device.query(latest)).await, Err(ClientError::NotConnected));
    assert_eq!(within("ping offline", device.ping()).await, Err(ClientError::NotConnected));
    let with_response = device.register_with_response(vec![numbered("burst", 999)]);
    assert_eq!(within("register with response offline", with_response).await, Err(ClientError::NotConnected));
    device.subscribe("late/?").await.expect("kept for the next link");

    let second = start(addr, &store).await;
    within("the burst acknowledged", device.registered(104)).await.expect("registered");
    assert_stored_once(&store, session, 105);
    let stored = store.stored();
    assert!(stored[5..].iter().all(|s| s.epoch == 2));
    // Its subscription came back with it: its own burst is notified to it, once, in order.
    let burst = take_events(&mut notified, 100).await;
    let events: Vec<Event> = stored.iter().map(|s| s.event.clone()).collect();
    assert_eq!(online, events[..5]);
    assert_eq!(burst, events[5..]);
    let state = device.state();
    assert!(state.connected && state.links >= 2 && state.session == Some(session), "{state:?}");
    let patterns: BTreeSet<String> =
        second.server().connections()[0].subscriptions.iter().map(ToString::to_string).collect();
    assert_eq!(patterns, BTreeSet::from(["burst/*".to_string(), "late/?".to_string()]));
    second.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closes_promptly_while_its_server_is_down() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let server = start("127.0.0.1:0".parse().expect("an address"), &store).await;
    // Backing off long between attempts: close must not wait for the next one.
    let reconnect = Backoff { initial: Duration::from_secs(60), max: Duration::from_secs(60) };
    // A close that only ended by its timeout (the request timeout) would overrun `within`.
    let options = ClientOptions { reconnect, request_timeout: Duration::from_secs(60), ..options("device") };
    let (device, mut notified) = client(server.addr(), options).await;
    device.register(numbered("gone", 0)).await.expect("queued");
    server.kill().await;
    eventually("the device sees the link gone", || !device.state().connected).await;
    device.register(numbered("gone", 1)).await.expect("queued offline");
    within("close while down", device.close()).await;
    assert_eq!(within("the end of the events", notified.next()).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_producers_survive_repeated_crashes_and_a_graceful_restart() {
    // Each producer's stream outlives the three restarts below.
    const COUNT: u32 = 768;
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let mut server = start("127.0.0.1:0".parse().expect("an address"), &store).await;
    let addr = server.addr();
    let mut producers = Vec::new();
    for name in ["p1", "p2", "p3"] {
        let (producer, _) = client(addr, options(name)).await;
        producers.push(Arc::new(producer));
    }
    let checkers: Vec<_> = producers.iter().map(|p| check_acknowledged(p, store.clone(), COUNT)).collect();
    let sessions: Vec<u64> = producers.iter().map(|p| p.state().session.expect("a session")).collect();
    let mut producing = tokio::task::JoinSet::new();
    for producer in &producers {
        let producer = producer.clone();
        producing.spawn(async move {
            for n in 0..COUNT {
                producer.register(numbered("multi", n)).await.expect("queued");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }

    // Two crashes and a graceful shutdown, each with the stream in full flow and every producer
    // on the current server (so each sees every server: a producer still backing off when the
    // others' resent outboxes pass the mark would otherwise skip one).
    for (at, graceful) in [(100, false), (250, false), (400, true)] {
        eventually("every producer connected", || server.server().connections().len() == producers.len()).await;
        eventually("enough stored", || store.len() >= at).await;
        if graceful {
            within("a graceful shutdown", server.shutdown()).await;
        } else {
            server.kill().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        server = start(addr, &store).await;
    }
    while let Some(done) = within("the producers", producing.join_next()).await {
        done.expect("a producer ran");
    }
    for producer in &producers {
        within("all acknowledged", producer.registered(COUNT - 1)).await.expect("registered");
    }
    for checker in checkers {
        within("the acknowledgement checks", checker).await.expect("every acknowledgement was stored");
    }
    for (producer, session) in producers.iter().zip(sessions) {
        assert_stored_once(&store, session, COUNT);
        let state = producer.state();
        assert!(state.links >= 4, "a link to each of the four servers: {state:?}");
        assert_eq!(state.session, Some(session), "resumed each time");
    }
    assert_eq!(store.len(), 3 * COUNT as usize);
    assert_eq!(store.stored().iter().map(|s| s.epoch).max(), Some(4));
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_makes_register_wait_and_loses_nothing() {
    // A 256th of the default outbox (`rivulet_tokio::client::DEFAULT_OUTBOX`) each: three times what it holds.
    const SIZE: usize = rivulet_tokio::client::DEFAULT_OUTBOX / 256;
    const COUNT: u32 = 3 * 256;
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let first = start("127.0.0.1:0".parse().expect("an address"), &store).await;
    let addr = first.addr();
    let (device, _) = client(addr, options("device")).await;
    let device = Arc::new(device);
    device.register(numbered("big", 0)).await.expect("queued");
    within("the first acknowledged", device.registered(0)).await.expect("registered");
    let session = device.state().session.expect("a session");
    first.kill().await;
    eventually("the device sees the link gone", || !device.state().connected).await;

    let queued = Arc::new(std::sync::atomic::AtomicU32::new(1));
    let registering = tokio::spawn({
        let (device, queued) = (device.clone(), queued.clone());
        async move {
            for n in 1..COUNT {
                let data = vec![n as u8; SIZE];
                let event = RegisterEvent {
                    event_type: "big/blob".into(),
                    source_timestamp: None,
                    payload: Some(Payload::Binary { kind: n.to_string(), data }),
                };
                assert_eq!(device.register(event).await, Ok(n));
                queued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    // Offline, nothing is acknowledged: the outbox fills, and then register waits for room.
    let outbox_holds = 256;
    let queued_now = || queued.load(std::sync::atomic::Ordering::SeqCst);
    eventually("the outbox nearly full", || queued_now() >= outbox_holds * 9 / 10).await;
    assert!(!registering.is_finished(), "register waits for room");
    let waiting_at = queued_now();
    assert!(waiting_at <= outbox_holds + 1, "{waiting_at} queued in an outbox of {outbox_holds} such events");

    let second = start(addr, &store).await;
    within("every registration queued", registering).await.expect("registering ran");
    within("every registration acknowledged", device.registered(COUNT - 1)).await.expect("registered");
    let mine = of_session(&store, session);
    assert_eq!(mine.iter().map(|s| s.seq).collect::<Vec<_>>(), (0..COUNT).map(Some).collect::<Vec<_>>());
    for stored in &mine[1..] {
        let Some(Payload::Binary { kind, data }) = &stored.event.payload else { panic!("{stored:?}") };
        let n: u32 = kind.parse().expect("a number");
        assert_eq!((Some(n), data.len(), data[0]), (stored.seq, SIZE, n as u8));
    }
    second.kill().await;
}

/// The outbox holds what `ClientOptions::outbox` says: an event larger than all of it fails at
/// once; offline, a 4 KiB outbox takes three events of 1.3 KiB and the fourth waits for room,
/// which the next server's acknowledgements make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_holds_what_its_option_says() {
    const OUTBOX: usize = 4096;
    let blob = |size: usize| {
        RegisterEvent::new("big/blob", Some(Payload::Binary { kind: "x".into(), data: vec![size as u8; size] }))
    };
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let first = start("127.0.0.1:0".parse().expect("an address"), &store).await;
    let addr = first.addr();
    let (device, _) = client(addr, ClientOptions { outbox: OUTBOX, ..options("small") }).await;
    assert_eq!(within("register", device.register(blob(OUTBOX))).await, Err(ClientError::TooLarge));
    first.kill().await;
    eventually("the device sees the link gone", || !device.state().connected).await;

    for n in 0..3 {
        assert_eq!(within("room in the outbox", device.register(blob(1300))).await, Ok(n));
    }
    let waited = tokio::time::timeout(Duration::from_millis(300), device.register(blob(1300))).await;
    assert!(waited.is_err(), "the fourth waits for room: {waited:?}");
    let second = start(addr, &store).await;
    // The fourth was taken all the same: it goes in once acknowledgements make room.
    within("the fourth acknowledged", device.registered(3)).await.expect("registered");
    // A new session: the store had nothing of the first one to resume it by.
    let session = device.state().session.expect("a session");
    let seqs: Vec<Option<u32>> = of_session(&store, session).iter().map(|s| s.seq).collect();
    assert_eq!(seqs, (0..4).map(Some).collect::<Vec<_>>());
    second.kill().await;
}
