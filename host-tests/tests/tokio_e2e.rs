//! `rivulet_tokio` clients against a `rivulet_tokio::server` over loopback TCP, with an in-memory
//! store behind the server (`rivulet_host_tests::MemoryStore`): every session message kind, with
//! several clients at once, as an application sees them through the async API.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rivulet_core::model::{EventId, Order, OrderBy, Timestamp};
use rivulet_host_tests::memory::{WAIT, drain_events, eventually, serve, stop, take_events};
use rivulet_host_tests::{MemoryStore, within};
use rivulet_tokio::model::{Event, EventPath, Payload, Query, RegisterEvent, Status, TimeseriesQuery};
use rivulet_tokio::packet::{CallError, PacketReply, PacketRequest};
use rivulet_tokio::server::{Admission, Server, ServerOptions};
use rivulet_tokio::{Backoff, Client, ClientError, ClientOptions, Events, Submitted, connect, connect_with_handler};

const SERVER_ID: u64 = 7;

fn options(name: &str) -> ClientOptions {
    let reconnect = Backoff { initial: Duration::from_millis(20), max: Duration::from_millis(200) };
    ClientOptions { reconnect, ..ClientOptions::new(name) }
}

fn subscribed(name: &str, patterns: &[&str]) -> ClientOptions {
    ClientOptions { subscriptions: patterns.iter().map(|p| EventPath::from(*p)).collect(), ..options(name) }
}

async fn client(server: &Server, options: ClientOptions) -> (Client, Events) {
    let name = options.name.clone();
    within("connect", connect(server.local_addr(), options)).await.unwrap_or_else(|e| panic!("{name} refused: {e}"))
}

fn json(event_type: &str, text: &str) -> RegisterEvent {
    RegisterEvent::new(event_type, Some(Payload::Json(text.into())))
}

fn server_options() -> ServerOptions {
    ServerOptions { server_id: SERVER_ID, ..ServerOptions::default() }
}

/// Registers `events` one by one and waits until the last is acknowledged; returns the seqs.
async fn register_all(client: &Client, events: impl IntoIterator<Item = RegisterEvent>) -> Vec<u32> {
    let mut seqs = Vec::new();
    for event in events {
        seqs.push(within("register", client.register(event)).await.expect("queued"));
    }
    if let Some(&last) = seqs.last() {
        within("the last registration acknowledged", client.registered(last)).await.expect("registered");
    }
    seqs
}

/// The connection id of the (only) accepted client called `name`.
fn connection(server: &Server, name: &str) -> u64 {
    let all = server.connections();
    let mut found = all.iter().filter(|c| c.client_name == name);
    let id = found.next().unwrap_or_else(|| panic!("{name} not connected: {all:?}")).id;
    assert!(found.next().is_none(), "{name} connected twice: {all:?}");
    id
}

fn types(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.event_type.to_string()).collect()
}

/// The events of `all` whose type is in `wanted`, in order.
fn of_types(all: &[Event], wanted: &[&str]) -> Vec<Event> {
    all.iter().filter(|e| wanted.contains(&e.event_type.to_string().as_str())).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_admits_refuses_and_challenges_clients_connecting_at_once() {
    fn prove(nonce: &[u8]) -> Vec<u8> {
        nonce.iter().rev().map(|b| b ^ 0x20).collect()
    }
    let nonces: Mutex<HashMap<u64, Vec<u8>>> = Mutex::new(HashMap::new());
    let store = Arc::new(MemoryStore::new(SERVER_ID).with_admission(move |client| match client.client_name.as_str() {
        "intruder" => Admission::Refuse("intruders are not admitted".into()),
        name if name.starts_with("token") => match client.credential.as_deref() {
            Some(b"letmein") => Admission::Accept,
            _ => Admission::Refuse("bad token".into()),
        },
        name if name.starts_with("vault") => {
            let mut nonces = nonces.lock().unwrap();
            match (&client.credential, nonces.get(&client.id)) {
                (Some(proof), Some(nonce)) if *proof == prove(nonce) => Admission::Accept,
                (Some(_), Some(_)) => Admission::Refuse("wrong proof".into()),
                _ => {
                    let nonce = format!("nonce of connection {}", client.id).into_bytes();
                    nonces.insert(client.id, nonce.clone());
                    Admission::Challenge(nonce)
                }
            }
        }
        _ => Admission::Accept,
    }));
    let server = serve(&store, server_options()).await;
    let addr = server.local_addr();
    let with_token = |name: &str, token: &[u8]| ClientOptions { credential: Some(token.to_vec()), ..options(name) };
    let answering = |name: &str, answer: fn(&[u8]) -> Vec<u8>| ClientOptions {
        challenge: Some(Arc::new(move |nonce: &[u8]| answer(nonce))),
        ..options(name)
    };
    let (plain1, plain2, intruder, vault, unanswered, wrong, token, bad_token) = within("every connect", async {
        tokio::join!(
            connect(addr, options("plain-1")),
            connect(addr, options("plain-2")),
            connect(addr, options("intruder")),
            connect(addr, answering("vault-ok", prove)),
            connect(addr, options("vault-no-answer")),
            connect(addr, answering("vault-wrong", |nonce| nonce.to_vec())),
            connect(addr, with_token("token-ok", b"letmein")),
            connect(addr, with_token("token-bad", b"guess")),
        )
    })
    .await;

    assert_eq!(intruder.err(), Some(ClientError::Refused("intruders are not admitted".into())));
    assert_eq!(wrong.err(), Some(ClientError::Refused("wrong proof".into())));
    assert_eq!(bad_token.err(), Some(ClientError::Refused("bad token".into())));
    assert!(matches!(unanswered, Err(ClientError::Refused(_))), "a challenge with no answer: {unanswered:?}");

    let admitted = [plain1, plain2, vault, token].map(|c| c.expect("admitted").0);
    let sessions: BTreeSet<u64> = admitted.iter().map(|c| c.state().session.expect("a session")).collect();
    assert_eq!(sessions.len(), 4, "every client has its own session");
    for client in &admitted {
        let state = client.state();
        assert!(state.connected && state.links == 1, "{state:?}");
        within("ping", client.ping()).await.expect("the link works");
    }

    let connections = server.connections();
    let names: BTreeSet<&str> = connections.iter().map(|c| c.client_name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["plain-1", "plain-2", "token-ok", "vault-ok"]));
    let vault = connections.iter().find(|c| c.client_name == "vault-ok").expect("listed");
    let nonce = format!("nonce of connection {}", vault.id).into_bytes();
    assert_eq!(vault.credential, Some(prove(&nonce)), "the proof was the credential of the second init");
    let sessions_listed: BTreeSet<u64> = connections.iter().map(|c| c.session).collect();
    assert_eq!(sessions_listed, sessions, "the server and the clients agree on the sessions");
    // Inits: one each, two for a challenge answered (rightly or not).
    assert_eq!(store.connects().len(), 10);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_reach_every_client() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let server = serve(&store, ServerOptions { status: Status::Starting, ..server_options() }).await;
    let (a, b, c) =
        tokio::join!(client(&server, options("a")), client(&server, options("b")), client(&server, options("c")));
    let clients = [&a.0, &b.0, &c.0];
    for client in clients {
        assert_eq!(client.status(), Status::Starting, "the status of the init's answer");
    }
    for status in [Status::Operational, Status::Stopping] {
        server.set_status(status).await;
        for client in clients {
            let mut changes = client.state_changes();
            within("the new status", changes.wait_for(|s| s.status == status)).await.expect("client runs");
            assert_eq!(client.state().status, status);
        }
    }
    let (late, _) = client(&server, options("late")).await;
    assert_eq!(late.status(), Status::Stopping, "a later init gets the current status");
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_gets_exactly_what_its_patterns_match() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    // A registration is acknowledged once every notification of it was: a barrier.
    store.set_notify_with_ack(true);
    let server = serve(&store, server_options()).await;
    let all_types = [
        "sensor/room1/temp",
        "sensor/room2/temp",
        "sensor/room1/humidity",
        "sensor",
        "sensor/room1/temp/raw",
        "alarm/fire",
        "alarm/fire/east",
        "alarm",
        "other/x",
        "other/x/y",
    ];
    let (a, b, c, d, e, producer) = tokio::join!(
        client(&server, subscribed("a", &["sensor/?/temp"])),
        client(&server, subscribed("b", &["sensor/*"])),
        client(&server, subscribed("c", &["alarm/?", "sensor/room1/*"])),
        client(&server, subscribed("d", &["*"])),
        client(&server, subscribed("e", &["other/x"])),
        client(&server, options("producer")),
    );
    let (mut a, mut b, mut c, mut d, mut e, mut producer) = (a, b, c, d, e, producer);

    register_all(&producer.0, all_types.iter().map(|t| json(t, "1"))).await;
    let stored = store.events();
    assert_eq!(types(&stored), all_types);
    let expected: [(&mut (Client, Events), &[&str]); 5] = [
        (&mut a, &["sensor/room1/temp", "sensor/room2/temp"]),
        (
            &mut b,
            &["sensor/room1/temp", "sensor/room2/temp", "sensor/room1/humidity", "sensor", "sensor/room1/temp/raw"],
        ),
        (&mut c, &["sensor/room1/temp", "sensor/room1/humidity", "sensor/room1/temp/raw", "alarm/fire"]),
        (&mut d, &all_types),
        (&mut e, &["other/x"]),
    ];
    for (client, wanted) in expected {
        let got = drain_events(&mut client.1).await;
        assert_eq!(got, of_types(&stored, wanted), "{:?}", client.0.state());
    }

    // Patterns change on the open links.
    assert!(b.0.unsubscribe("sensor/*").await.expect("runs"));
    b.0.subscribe("alarm/*").await.expect("a valid pattern");
    assert!(c.0.unsubscribe("alarm/?").await.expect("runs"));
    assert!(c.0.unsubscribe("sensor/room1/*").await.expect("runs"));
    assert!(!c.0.unsubscribe("never/subscribed").await.expect("runs"), "not there");
    e.0.subscribe("other/?/y").await.expect("a valid pattern");
    assert_eq!(e.0.subscribe("other/*/y").await, Err(ClientError::Invalid("'*' may only be the last segment")));
    let invalid = connect(server.local_addr(), subscribed("invalid", &["a/*/b"])).await;
    assert_eq!(invalid.err(), Some(ClientError::Invalid("'*' may only be the last segment")));
    let listed = |name: &str| -> BTreeSet<String> {
        let all = server.connections();
        let info = all.iter().find(|i| i.client_name == name).expect("listed");
        info.subscriptions.iter().map(ToString::to_string).collect()
    };
    eventually("the server has the new patterns", || {
        listed("b") == BTreeSet::from(["alarm/*".to_string()])
            && listed("c").is_empty()
            && listed("e") == BTreeSet::from(["other/x".to_string(), "other/?/y".to_string()])
    })
    .await;

    register_all(&producer.0, all_types.iter().map(|t| json(t, "2"))).await;
    let stored: Vec<Event> = store.events().split_off(all_types.len());
    let expected: [(&mut (Client, Events), &[&str]); 5] = [
        (&mut a, &["sensor/room1/temp", "sensor/room2/temp"]),
        (&mut b, &["alarm/fire", "alarm/fire/east", "alarm"]),
        (&mut c, &[]),
        (&mut d, &all_types),
        (&mut e, &["other/x", "other/x/y"]),
    ];
    for (client, wanted) in expected {
        let got = drain_events(&mut client.1).await;
        assert_eq!(got, of_types(&stored, wanted), "{:?}", client.0.state());
    }
    assert_eq!(drain_events(&mut producer.1).await, [], "the producer subscribed to nothing");
    stop(server).await;
}

/// The payload of the `n`-th plant event: JSON, binary of several sizes and kinds, or none.
fn plant_payload(n: usize) -> Option<Payload> {
    match n % 4 {
        0 => Some(Payload::Json(format!("{{\"n\":{n},\"unit\":\"C\"}}"))),
        1 => Some(Payload::Binary { kind: "raw".into(), data: (0..(n % 50) as u8).collect() }),
        2 => None,
        _ => Some(Payload::Binary { kind: "empty".into(), data: Vec::new() }),
    }
}

fn plant_event(n: usize) -> RegisterEvent {
    const TYPES: [&str; 3] = ["plant/boiler/temp", "plant/boiler/pressure", "plant/pump/state"];
    let source_timestamp = n.is_multiple_of(2).then(|| Timestamp { s: 1_000 + n as i64, us: (n * 7) as u32 });
    RegisterEvent { event_type: TYPES[n % 3].into(), source_timestamp, payload: plant_payload(n) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_carry_ids_payloads_and_order_of_many_events_and_types() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let server = serve(&store, server_options()).await;
    let (all, boiler, pump, many, p1, p2) = tokio::join!(
        client(&server, subscribed("all", &["plant/*"])),
        client(&server, subscribed("boiler", &["plant/boiler/?"])),
        client(&server, subscribed("pump", &["plant/pump/state"])),
        client(&server, subscribed("many", &["many/?"])),
        client(&server, options("producer-1")),
        client(&server, options("producer-2")),
    );
    let (mut all, mut boiler, mut pump, mut many) = (all, boiler, pump, many);
    // Two producers at once; one of them also uses more types than either side has aliases (64),
    // so types are sent inline and the server's aliases are replaced round-robin.
    let first: Vec<RegisterEvent> = (0..150).map(plant_event).collect();
    let second: Vec<RegisterEvent> = (150..300)
        .map(|n| if n % 2 == 0 { plant_event(n) } else { json(&format!("many/t{}", n % 97), &n.to_string()) })
        .collect();
    let (seqs1, seqs2) = tokio::join!(register_all(&p1.0, first.clone()), register_all(&p2.0, second.clone()));
    assert_eq!(seqs1, (0..150).collect::<Vec<u32>>());
    assert_eq!(seqs2, (0..150).collect::<Vec<u32>>());

    // Stored as registered, each once, in each client's order.
    let stored = store.stored();
    assert_eq!(stored.len(), 300);
    for (producer, sent) in [(&p1.0, &first), (&p2.0, &second)] {
        let session = producer.state().session.expect("a session");
        let mine: Vec<_> = stored.iter().filter(|s| s.session == session).collect();
        assert_eq!(mine.iter().map(|s| s.seq).collect::<Vec<_>>(), (0..150).map(Some).collect::<Vec<_>>());
        let as_sent: Vec<RegisterEvent> = mine
            .iter()
            .map(|s| RegisterEvent {
                event_type: s.event.event_type.clone(),
                source_timestamp: s.event.source_timestamp,
                payload: s.event.payload.clone(),
            })
            .collect();
        assert_eq!(&as_sent, sent);
    }

    let events = store.events();
    let matching = |f: fn(&str) -> bool| events.iter().filter(|e| f(&e.event_type.to_string())).cloned().collect();
    let expected: [(&mut (Client, Events), Vec<Event>); 4] = [
        (&mut all, matching(|t| t.starts_with("plant/"))),
        (&mut boiler, matching(|t| t.starts_with("plant/boiler/"))),
        (&mut pump, matching(|t| t == "plant/pump/state")),
        (&mut many, matching(|t| t.starts_with("many/"))),
    ];
    for (client, wanted) in expected {
        let got = take_events(&mut client.1, wanted.len()).await;
        // Whole events: ids, types, timestamps, source timestamps and payloads.
        assert_eq!(got, wanted, "{:?}", client.0.state());
        assert!(got.windows(2).all(|w| w[0].id < w[1].id), "in id order");
    }
    for client in [&mut all, &mut boiler, &mut pump, &mut many] {
        assert_eq!(drain_events(&mut client.1).await, [], "nothing more");
    }
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_window_and_a_client_that_stops_reading_lose_nothing() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let server = serve(&store, server_options()).await;
    let (window, queue) = (4u16, 8usize);
    let (fast, one, slow, producer) = tokio::join!(
        client(&server, ClientOptions { window: 2, ..subscribed("fast", &["feed/*"]) }),
        client(&server, ClientOptions { window: 1, ..subscribed("one", &["feed/*"]) }),
        client(&server, ClientOptions { window, events: queue, ..subscribed("slow", &["feed/*"]) }),
        client(&server, options("producer")),
    );
    let (mut fast, mut one, mut slow) = (fast, one, slow);
    let slow_id = connection(&server, "slow");

    // Far more than any window; `slow` reads nothing meanwhile.
    register_all(&producer.0, (0..300).map(|n| json(&format!("feed/{}", n % 2), &n.to_string()))).await;
    let events = store.events();
    assert_eq!(events.len(), 300);
    assert_eq!(take_events(&mut fast.1, 300).await, events, "window 2: everything, in order");
    assert_eq!(take_events(&mut one.1, 300).await, events, "window 1: everything, in order");

    // The unread client pushed back: the server sent it no more than its window beyond what it
    // acknowledged, and it acknowledges only what its queue (plus one in hand) took.
    let sent = server.connection_stats(slow_id).expect("still connected").notified;
    assert!(sent <= u64::from(window) + queue as u64 + 1, "{sent} notifications sent to a client that reads none");
    assert_eq!(take_events(&mut slow.1, 300).await, events, "nothing lost while it did not read");
    assert_eq!(connection(&server, "slow"), slow_id, "never closed as too slow");
    assert_eq!(server.connection_stats(slow_id).expect("connected").notified, 300);
    for client in [&mut fast, &mut one, &mut slow] {
        assert_eq!(drain_events(&mut client.1).await, [], "nothing twice");
    }
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_page_latest_timeseries_and_server_history() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let server = serve(&store, server_options()).await;
    let (producer, _) = client(&server, options("producer")).await;
    const TYPES: [&str; 4] = ["q/a", "q/b/x", "q/b/y", "q/c"];
    register_all(
        &producer,
        (0..60).map(|n| RegisterEvent {
            event_type: TYPES[n % 4].into(),
            // Source time runs backwards: ordering by it reverses the order.
            source_timestamp: Some(Timestamp { s: 5_000 - n as i64, us: 0 }),
            payload: Some(Payload::Json(n.to_string())),
        }),
    )
    .await;
    let with_response = producer.register_with_response(vec![json("q/d", "60"), json("q/d", "61")]).await;
    assert_eq!(with_response.expect("registered").len(), 2);
    let all = store.events();
    assert_eq!(all.len(), 62);

    let (c1, c2, c3) =
        tokio::join!(client(&server, options("c1")), client(&server, options("c2")), client(&server, options("c3")));
    let (c1, c2, c3) = (c1.0, c2.0, c3.0);
    let timeseries = |q: TimeseriesQuery| Query::Timeseries(q);
    let t = |i: usize| all[i].timestamp;

    // Three clients query at once.
    let (latest, latest_b, descending, first_page) = tokio::join!(
        c1.query_all(Query::Latest { event_types: None }),
        c2.query_all(Query::Latest { event_types: Some(vec!["q/b/?".into()]) }),
        c3.query_all(timeseries(TimeseriesQuery { max_results: Some(7), ..TimeseriesQuery::default() })),
        c1.query(timeseries(TimeseriesQuery { max_results: Some(7), ..TimeseriesQuery::default() })),
    );
    let newest_of = |ty: &str| all.iter().rev().find(|e| e.event_type == EventPath::from(ty)).cloned().expect("one");
    let mut expected: Vec<Event> = ["q/a", "q/b/x", "q/b/y", "q/c", "q/d"].map(newest_of).into();
    expected.sort_by_key(|e| e.id);
    assert_eq!(latest.expect("answered"), expected);
    assert_eq!(latest_b.expect("answered"), ["q/b/x", "q/b/y"].map(newest_of));
    let mut newest_first = all.clone();
    newest_first.reverse();
    assert_eq!(descending.expect("answered"), newest_first, "9 pages of 7, newest first, each event once");
    let first_page = first_page.expect("answered");
    assert_eq!(first_page.events, newest_first[..7]);
    assert!(first_page.more_follows);

    let (ascending_a, by_source, server_all, other_server, unknown_last) = tokio::join!(
        c2.query_all(timeseries(TimeseriesQuery {
            event_types: Some(vec!["q/a".into()]),
            t_from: Some(t(10)),
            t_to: Some(t(50)),
            order: Order::Ascending,
            max_results: Some(4),
            ..TimeseriesQuery::default()
        })),
        c3.query_all(timeseries(TimeseriesQuery {
            source_t_from: Some(Timestamp { s: 4_960, us: 0 }),
            order: Order::Ascending,
            order_by: OrderBy::SourceTimestamp,
            max_results: Some(6),
            ..TimeseriesQuery::default()
        })),
        c1.query_all(Query::Server {
            server_id: SERVER_ID,
            persisted: false,
            max_results: Some(9),
            last_event_id: None
        }),
        c2.query_all(Query::Server { server_id: 99, persisted: false, max_results: Some(9), last_event_id: None }),
        c3.query(Query::Server {
            server_id: SERVER_ID,
            persisted: false,
            max_results: None,
            last_event_id: Some(EventId { server: SERVER_ID, session: 1, instance: 10_000 }),
        }),
    );
    let expected: Vec<Event> = all
        .iter()
        .filter(|e| e.event_type == EventPath::from("q/a") && e.timestamp >= t(10) && e.timestamp <= t(50))
        .cloned()
        .collect();
    assert!(expected.len() > 4, "more than one page");
    assert_eq!(ascending_a.expect("answered"), expected);
    let mut expected: Vec<Event> = all
        .iter()
        .filter(|e| e.source_timestamp.is_some_and(|s| s >= Timestamp { s: 4_960, us: 0 }))
        .cloned()
        .collect();
    expected.reverse(); // source time runs backwards
    assert_eq!(expected.len(), 41);
    assert_eq!(by_source.expect("answered"), expected);
    assert_eq!(server_all.expect("answered"), all, "in id order");
    assert_eq!(other_server.expect("answered"), []);
    assert_eq!(unknown_last, Err(ClientError::Refused("unknown last_event_id".into())));
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_acknowledged_only_once_stored_and_stored_once() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let server = serve(&store, server_options()).await;
    let (a, b, c) =
        tokio::join!(client(&server, options("a")), client(&server, options("b")), client(&server, options("c")));
    let clients = [&a.0, &b.0, &c.0];

    // The store is stuck: registering still works (fire and forget), acknowledging does not.
    store.hold_registrations(true);
    let registering = clients.map(|client| async move {
        let mut seqs = Vec::new();
        for n in 0..40 {
            seqs.push(client.register(json("reg/x", &n.to_string())).await.expect("queued"));
        }
        seqs
    });
    let [s1, s2, s3] = registering;
    let (s1, s2, s3) = within("registering", async { tokio::join!(s1, s2, s3) }).await;
    for seqs in [&s1, &s2, &s3] {
        assert_eq!(seqs, &(0..40).collect::<Vec<u32>>());
    }
    let not_yet = tokio::time::timeout(Duration::from_millis(200), a.0.registered(0)).await;
    assert!(not_yet.is_err(), "acknowledged before it was stored");
    for client in clients {
        assert_eq!(client.state().registered_below, 0);
    }
    assert!(store.is_empty());

    store.hold_registrations(false);
    for client in clients {
        let session = client.state().session.expect("a session");
        within("acknowledged", client.registered(39)).await.expect("registered");
        // Acknowledged means stored: all of them, in order, once.
        let mine: Vec<_> = store.stored().into_iter().filter(|s| s.session == session).collect();
        assert_eq!(mine.iter().map(|s| s.seq).collect::<Vec<_>>(), (0..40).map(Some).collect::<Vec<_>>());
        let payloads: Vec<_> = mine.iter().map(|s| s.event.payload.clone()).collect();
        assert_eq!(payloads, (0..40).map(|n| Some(Payload::Json(n.to_string()))).collect::<Vec<_>>());
        assert_eq!(store.next_seq(session), Some(40));
        assert_eq!(client.state().registered_below, 40);
    }

    // With response: the ids come back, nothing is sequenced, and each is stored once.
    let (r1, r2, r3) = tokio::join!(
        a.0.register_with_response(vec![json("rr/a", "1"), json("rr/a", "2")]),
        b.0.register_with_response(vec![json("rr/b", "1")]),
        c.0.register_with_response(Vec::new()),
    );
    let (r1, r2, r3) = (r1.expect("registered"), r2.expect("registered"), r3.expect("registered"));
    assert_eq!(types(&r1), ["rr/a", "rr/a"]);
    assert_eq!(
        r1.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
        [Some(Payload::Json("1".into())), Some(Payload::Json("2".into()))]
    );
    assert_eq!(types(&r2), ["rr/b"]);
    assert_eq!(r3, []);
    let stored = store.stored();
    for event in r1.iter().chain(&r2) {
        let found: Vec<_> = stored.iter().filter(|s| s.event == *event).collect();
        assert_eq!(found.len(), 1, "{event:?} stored once, as answered");
        assert_eq!(found[0].seq, None);
    }
    assert_eq!(stored.len(), 123);
    for client in clients {
        assert_eq!(client.state().registered_below, 40, "register with response is not sequenced");
    }
    stop(server).await;
}

/// `submit` keeps registrations in flight without a round trip each: they take consecutive
/// sequence numbers in the order submitted, also when the outbox is full and the later ones wait
/// parked for acknowledgements, and each is stored once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_registrations_keep_their_order_through_a_full_outbox() {
    const COUNT: usize = 100;
    const IN_FLIGHT: usize = 16;
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let server = serve(&store, server_options()).await;
    let (client, _events) = client(&server, options("pipelined")).await;
    // Each a fiftieth of the client's outbox: 100 are twice what it holds.
    let payload = |n: usize| format!("\"{n:03}{}\"", "x".repeat(rivulet_tokio::client::DEFAULT_OUTBOX / 50));
    store.hold_registrations(true);
    let in_outbox = AtomicUsize::new(0);
    let submitting = async {
        let (mut in_flight, mut seqs) = (VecDeque::new(), Vec::new());
        for n in 0..COUNT {
            if in_flight.len() == IN_FLIGHT {
                let oldest: Submitted = in_flight.pop_front().expect("in flight");
                seqs.push(oldest.await.expect("in the outbox"));
                in_outbox.fetch_add(1, Ordering::SeqCst);
            }
            in_flight.push_back(client.submit(json("pipe/x", &payload(n))).await.expect("taken"));
        }
        for submitted in in_flight {
            seqs.push(submitted.await.expect("in the outbox"));
        }
        seqs
    };
    let releasing = async {
        eventually("the outbox filling up", || in_outbox.load(Ordering::SeqCst) >= 45).await;
        // Nothing is acknowledged while the store holds: the outbox holds 49 of these (each is a
        // fiftieth of it, plus its header), and the rest must wait for room, in order.
        assert!(in_outbox.load(Ordering::SeqCst) <= 50, "more than the outbox holds");
        store.hold_registrations(false);
    };
    let (seqs, ()) = within("submitting", async { tokio::join!(submitting, releasing) }).await;
    assert_eq!(seqs, (0..COUNT as u32).collect::<Vec<_>>(), "consecutive, in the order submitted");
    within("the last acknowledged", client.registered(COUNT as u32 - 1)).await.expect("registered");
    let stored = store.stored();
    assert_eq!(stored.iter().map(|s| s.seq).collect::<Vec<_>>(), (0..COUNT as u32).map(Some).collect::<Vec<_>>());
    let payloads: Vec<_> = stored.iter().map(|s| s.event.payload.clone()).collect();
    assert_eq!(payloads, (0..COUNT).map(|n| Some(Payload::Json(payload(n)))).collect::<Vec<_>>());
    stop(server).await;
}

/// Closing does not wait for room that cannot come: with the server gone, the outbox full, a
/// registration waiting for room and the command queue full behind it, `close` still returns
/// (within the request timeout), where sending it the close would wait for the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_returns_with_the_outbox_and_the_command_queue_full() {
    // The outbox holds 49 of these; one more waits for room; the command queue holds 64.
    const STUCK: usize = 49 + 1 + 64;
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let server = serve(&store, server_options()).await;
    let quick = ClientOptions { request_timeout: Duration::from_millis(300), ..options("stuck") };
    let (client, _events) = client(&server, quick).await;
    stop(server).await;
    eventually("the link seen gone", || !client.state().connected).await;

    let (client, submitted) = (Arc::new(client), Arc::new(AtomicUsize::new(0)));
    let submitter = tokio::spawn({
        let (client, submitted) = (client.clone(), submitted.clone());
        async move {
            let payload = format!("\"{}\"", "x".repeat(rivulet_tokio::client::DEFAULT_OUTBOX / 50));
            loop {
                client.submit(json("stuck/x", &payload)).await.expect("taken");
                submitted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    eventually("the command queue full", || submitted.load(Ordering::SeqCst) >= STUCK).await;
    submitter.abort();
    let _ = submitter.await;
    let client = Arc::try_unwrap(client).expect("the submitter's handle is gone");
    within("close", client.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_both_ways_and_pings_return() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let server = serve(&store, server_options()).await;
    let addr = server.local_addr();
    let reverser = |request: PacketRequest| async move {
        Ok(PacketReply::new(request.rq_type, request.payload.iter().rev().copied().collect::<Vec<u8>>()))
    };
    let picky = |request: PacketRequest| async move {
        match request.rq_type {
            7 => Err("b is busy".to_string()),
            _ => Ok(PacketReply::new(0, request.payload)),
        }
    };
    let (a, b, c) = within("connect", async {
        tokio::join!(
            connect_with_handler(addr, options("a"), reverser),
            connect_with_handler(addr, options("b"), picky),
            connect(addr, options("c")),
        )
    })
    .await;
    let (a, b, c) = (Arc::new(a.expect("a").0), Arc::new(b.expect("b").0), Arc::new(c.expect("c").0));

    // Client to server, from all three at once, many in flight on each link.
    let mut calls = tokio::task::JoinSet::new();
    for (name, client) in [("a", &a), ("b", &b), ("c", &c)] {
        for n in 0..20u64 {
            let client = client.clone();
            calls.spawn(async move {
                let payload = format!("{n}");
                let reply = client.request(1, n, payload.clone()).await.expect("echoed");
                assert_eq!(reply, PacketReply::new(n + 1, format!("{name}:{payload}")));
            });
        }
        let client = client.clone();
        calls.spawn(async move {
            assert_eq!(client.request(3, 0, "no").await, Err(ClientError::Refused("refused on purpose: no".into())));
            assert_eq!(client.request(99, 0, "").await, Err(ClientError::Refused("unknown request type 99".into())));
            let rtt = client.ping().await.expect("pong");
            assert!(rtt < WAIT, "{rtt:?}");
        });
    }
    while let Some(done) = within("every call", calls.join_next()).await {
        done.expect("a call task panicked");
    }
    let count = within("count", a.request(2, 0, "")).await.expect("answered");
    assert_eq!(count.payload, b"0");

    // Server to client: answered by the client's handler, refused by it, or by a client that
    // serves nothing.
    let (ia, ib, ic) = (connection(&server, "a"), connection(&server, "b"), connection(&server, "c"));
    let server_ref = &server;
    let (ra, rb_refused, rb, rc) = within("server requests", async {
        tokio::join!(
            server_ref.request(ia, 5, 0, b"abc".to_vec()),
            server_ref.request(ib, 7, 0, b"x".to_vec()),
            server_ref.request(ib, 1, 9, b"x".to_vec()),
            server_ref.request(ic, 1, 0, b"x".to_vec()),
        )
    })
    .await;
    assert_eq!(ra, Ok(PacketReply::new(5, b"cba".to_vec())));
    assert_eq!(rb_refused, Err(CallError::Refused("b is busy".into())));
    assert_eq!(rb, Ok(PacketReply::new(0, b"x".to_vec())));
    assert_eq!(rc, Err(CallError::Refused("no request handler".into())));
    let mut calls = tokio::task::JoinSet::new();
    let server = Arc::new(server);
    for n in 0..30u8 {
        let server = server.clone();
        calls.spawn(async move {
            let reply = server.request(ia, u64::from(n), 0, vec![n, n + 1, n + 2]).await;
            assert_eq!(reply, Ok(PacketReply::new(u64::from(n), vec![n + 2, n + 1, n])));
        });
    }
    while let Some(done) = within("every server call", calls.join_next()).await {
        done.expect("a call task panicked");
    }
    drop((a, b, c));
    stop(Arc::into_inner(server).expect("one handle")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_client_sees_events_only_once_persisted() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    store.set_auto_persist(false);
    store.set_notify_with_ack(true);
    let server = serve(&store, server_options()).await;
    let durable_options = ClientOptions { persisted: true, ..subscribed("durable", &["log/*"]) };
    let (live, durable, producer) = tokio::join!(
        client(&server, subscribed("live", &["log/*"])),
        client(&server, durable_options),
        client(&server, options("producer")),
    );
    let (mut live, mut durable) = (live, durable);
    let persisted_query =
        Query::Server { server_id: SERVER_ID, persisted: true, max_results: None, last_event_id: None };

    register_all(&producer.0, (0..10).map(|n| json("log/line", &n.to_string()))).await;
    let events = store.events();
    assert_eq!(drain_events(&mut live.1).await, events, "at once");
    assert_eq!(drain_events(&mut durable.1).await, [], "not persisted yet");
    assert_eq!(producer.0.query_all(persisted_query.clone()).await.expect("answered"), []);

    within("persist", store.persist()).await;
    assert_eq!(drain_events(&mut durable.1).await, events, "once persisted");
    assert_eq!(drain_events(&mut live.1).await, [], "the live client had them already");
    assert_eq!(producer.0.query_all(persisted_query).await.expect("answered"), events);

    // Persisted right away: each client gets each event once, in its own order.
    store.set_auto_persist(true);
    register_all(&producer.0, (10..15).map(|n| json("log/line", &n.to_string()))).await;
    let more = store.events().split_off(10);
    assert_eq!(drain_events(&mut live.1).await, more);
    assert_eq!(drain_events(&mut durable.1).await, more);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_id_filter_picks_the_events_of_one_server() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    store.set_notify_with_ack(true);
    let server = serve(&store, server_options()).await;
    let (any, local, remote, producer) = tokio::join!(
        client(&server, subscribed("any", &["fleet/*"])),
        client(&server, ClientOptions { server_id: Some(SERVER_ID), ..subscribed("local", &["fleet/*"]) }),
        client(&server, ClientOptions { server_id: Some(99), ..subscribed("remote", &["fleet/*"]) }),
        client(&server, options("producer")),
    );
    let (mut any, mut local, mut remote) = (any, local, remote);
    // Events of this server (registered here) and of server 99 (passed on, as from a peer
    // server), interleaved.
    let mut remote_events = Vec::new();
    for n in 0..10u64 {
        register_all(&producer.0, [json("fleet/truck", &n.to_string())]).await;
        let event = Event {
            id: EventId { server: 99, session: 3, instance: n + 1 },
            event_type: "fleet/ship".into(),
            timestamp: Timestamp { s: 1_800_000_000 + n as i64, us: 0 },
            source_timestamp: None,
            payload: Some(Payload::Json(n.to_string())),
        };
        within("notify", server.notify_events(std::slice::from_ref(&event), false, true)).await;
        remote_events.push(event);
    }
    let local_events = store.events();
    let mut both = Vec::new();
    for (l, r) in local_events.iter().zip(&remote_events) {
        both.extend([l.clone(), r.clone()]);
    }
    assert_eq!(drain_events(&mut any.1).await, both);
    assert_eq!(drain_events(&mut local.1).await, local_events);
    assert_eq!(drain_events(&mut remote.1).await, remote_events);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_graceful_and_the_others_carry_on() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let server = serve(&store, server_options()).await;
    let (a, b, c) = tokio::join!(
        client(&server, ClientOptions { request_timeout: Duration::from_secs(60), ..subscribed("a", &["chat/*"]) }),
        client(&server, subscribed("b", &["chat/*"])),
        client(&server, subscribed("c", &["chat/*"])),
    );
    let (mut a_events, mut b, mut c) = (a.1, b, c);
    let a_session = a.0.state().session;
    // A close the server does not answer would wait the 60 s request timeout: far beyond WAIT.
    within("close", a.0.close()).await;
    assert_eq!(within("the end of a's events", a_events.next()).await, None, "the stream ends with the client");
    eventually("the server saw a leave", || store.disconnects().iter().any(|c| c.client_name == "a")).await;
    assert_eq!(store.disconnects().len(), 1);
    let gone = &store.disconnects()[0];
    assert_eq!(Some(gone.session), a_session);
    eventually("a is no longer listed", || server.connections().iter().all(|c| c.client_name != "a")).await;
    assert_eq!(server.connections().len(), 2);

    // The others carry on.
    within("ping", b.0.ping()).await.expect("b's link is up");
    register_all(&b.0, [json("chat/room", "still here")]).await;
    let said = store.events();
    assert_eq!(take_events(&mut b.1, 1).await, said);
    assert_eq!(take_events(&mut c.1, 1).await, said);
    within("close b", b.0.close()).await;
    within("close c", c.0.close()).await;
    eventually("every client left", || store.disconnects().len() == 3).await;
    assert!(server.connections().is_empty());
    stop(server).await;
}

/// An application that reads nothing for ten keepalive intervals: the client keeps answering
/// pings while it holds back the acks of what the application has not taken, so the server's
/// window (and queue) holds the rest and the link never drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_for_many_keepalives_loses_nothing() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let server = serve(&store, server_options()).await;
    let keepalive = Duration::from_millis(100);
    let slow = ClientOptions { keepalive, window: 4, events: 8, ..subscribed("slow", &["feed/*"]) };
    let (slow, producer) = tokio::join!(client(&server, slow), client(&server, options("producer")));
    let mut slow = slow;
    register_all(&producer.0, (0..100).map(|n| json("feed/a", &n.to_string()))).await;
    // The application is busy for ten keepalive intervals.
    tokio::time::sleep(keepalive * 10).await;
    assert!(server.connections().iter().any(|c| c.client_name == "slow"), "the server dropped the client");
    assert_eq!(take_events(&mut slow.1, 100).await, store.events());
    assert_eq!(slow.0.state().links, 1);
    stop(server).await;
}

/// A client whose application reads nothing is cut off by the server (its queue overflows). The
/// client shows the link gone at once and closes promptly; it opens the next link once the
/// application has taken what the last one delivered, and loses none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_off_for_not_reading_shows_it_and_reconnects_once_it_reads() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let server = serve(&store, ServerOptions { notify_queue: 8, ..server_options() }).await;
    let sleepy = ClientOptions { window: 4, events: 4, ..subscribed("sleepy", &["feed/*"]) };
    let (sleepy, mut events) = client(&server, sleepy).await;
    let (producer, _) = client(&server, options("producer")).await;
    // One at a time until the client's queue (4) and its window (4) are full and the server
    // holds the rest, then a burst beyond the server's queue (8).
    for n in 0..12 {
        register_all(&producer, [json("feed/a", &n.to_string())]).await;
    }
    eventually("the client's queue and window full", || {
        server.connection_stats(connection(&server, "sleepy")).is_some_and(|s| s.notified >= 8)
    })
    .await;
    register_all(&producer, (12..40).map(|n| json("feed/a", &n.to_string()))).await;
    eventually("the server cuts the sleepy client off", || !sleepy.state().connected).await;
    let reason = sleepy.close_reason().expect("told why");
    assert!(reason.contains("notifications behind"), "{reason}");
    assert_eq!(sleepy.state().links, 1, "no new link while the application owes the last one's events");

    // Once the application reads, it gets every event the first link delivered, in order, and
    // the client links again by itself.
    let mut got = Vec::new();
    within("a second link once the application reads", async {
        while !(sleepy.state().links == 2 && sleepy.state().connected) {
            got.extend(drain_events(&mut events).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    got.extend(drain_events(&mut events).await);
    let stored = store.events();
    assert!(got.len() >= 8, "its queue's and its window's worth: {}", got.len());
    assert_eq!(got, stored[..got.len()].to_vec(), "a prefix of what was stored, in order, once");
    within("close", sleepy.close()).await;
    stop(server).await;
}
