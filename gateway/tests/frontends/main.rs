//! The cross-front-end harness: events published through each front-end reach the subscribers
//! of every front-end in one order, each once; a query through each front-end that has queries
//! finds each once; a client of one front-end calls a client of another. The front-ends: the
//! native protocol's three listeners (plain TCP, TLS, serial lines over TCP), hat (with
//! `rivulet_tokio::hat`'s client), Kelvin (with `rivulet_tokio::kelvin`'s), stream-sea (its REST
//! API and websocket), and `direct`, a second front-end built on the broker's API alone. One
//! more publisher's link is cut mid-stream, so its client resends and the gateway must store
//! nothing twice. A new front-end plugs in with an [`Endpoint`] (how its clients connect) and a
//! [`Peer`] (what its client does), in a module of its own here.
//!
//! Every publisher registers under one event type, [`HARNESS_TYPE`]: a stream-sea stream is one
//! type, and Kelvin apps see only types under `kelvin/`. Who published an event, and its number,
//! are in its JSON payload.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rivulet_core::model::{EventId, Order};
use rivulet_core::owned::{Event, EventPath, Payload, Query, RegisterEvent, TimeseriesQuery};
use rivulet_gateway::config::{
    HatSettings, KelvinSettings, NativeSettings, Settings, StreamMapping, StreamSeaSettings, TlsSettings,
};
use rivulet_gateway::gateway::Gateway;
use serde_json::{Value, json};

#[path = "../common/mod.rs"]
mod common;
mod direct;
mod hat;
mod kelvin;
mod native;
mod streamsea;

use direct::direct_endpoint;
use hat::hat_endpoint;
use kelvin::kelvin_endpoint;
use native::{cut_once_endpoint, native_endpoints};
use streamsea::streamsea_endpoint;

/// Turns a hang into a failure; never reached when things work.
const PATIENCE: Duration = Duration::from_secs(60);
/// Events each front-end's publisher registers.
const EACH: u64 = 60;

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("{what}: nothing in {PATIENCE:?}"))
}

/// A client of one front-end, as the harness drives it.
trait Peer: Send {
    /// Registers `events` in order; returns once the gateway acknowledged them as stored (or,
    /// for a protocol without acknowledgements, once written).
    fn publish(&mut self, events: Vec<RegisterEvent>) -> Boxed<'_, ()>;
    /// The next event its subscriptions received.
    fn next_event(&mut self) -> Boxed<'_, Received>;
    /// Every event of a query, following its pages; `None` for a protocol without queries.
    fn history(&mut self, query: Query) -> Boxed<'_, Option<Vec<Event>>>;
    /// Calls request `rq_type` of the client called `target`, through the gateway.
    fn call(&mut self, target: &str, rq_type: u64, payload: Vec<u8>) -> Boxed<'_, Result<Vec<u8>, String>>;
}

/// What a client asks of its front-end when it connects.
#[derive(Clone)]
struct Wants {
    name: String,
    subscriptions: Vec<EventPath>,
    persisted: bool,
}

/// What a subscriber received: who published it and its number, and the event's id where the
/// protocol shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    id: Option<EventId>,
    from: String,
    n: u64,
}

impl Received {
    fn of(event: &Event) -> Self {
        let Some(Payload::Json(text)) = &event.payload else { panic!("not a harness event: {event:?}") };
        Received::from_json(Some(event.id), &serde_json::from_str(text).expect("JSON"))
    }

    /// `{"from", "n"}`, or a Kelvin app's envelope of one (in its `payload`).
    fn from_json(id: Option<EventId>, value: &Value) -> Self {
        let numbered = if value.get("from").is_some() { value } else { &value["payload"] };
        let from = numbered["from"].as_str().unwrap_or_else(|| panic!("not a harness event: {value}"));
        let n = numbered["n"].as_u64().unwrap_or_else(|| panic!("not a harness event: {value}"));
        Received { id, from: from.to_string(), n }
    }
}

/// One front-end (or one listener of one): a name for messages and how its clients connect.
struct Endpoint {
    name: &'static str,
    /// Whether its clients choose between every event and only stored ones (`persisted`).
    persistence: bool,
    connect: Box<dyn Fn(Wants) -> Boxed<'static, Box<dyn Peer>> + Send + Sync>,
}

/// A gateway with every front-end listening on loopback, its store in `dir`.
async fn gateway(dir: &Path) -> Gateway {
    common::certificates(dir);
    let tls = TlsSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    let native = NativeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(tls),
        serial_listen: "127.0.0.1:0".parse().ok(),
    };
    let hat = HatSettings { listen: "127.0.0.1:0".parse().ok(), ..HatSettings::default() };
    let kelvin = KelvinSettings { listen: "127.0.0.1:0".parse().ok(), ..KelvinSettings::default() };
    let streamsea = StreamSeaSettings {
        listen: "127.0.0.1:0".parse().ok(),
        streams: vec![stream()],
        ..StreamSeaSettings::default()
    };
    let settings = Settings { native, hat, kelvin, streamsea, data: dir.join("data"), ..Settings::default() };
    Gateway::start(&settings).await.expect("the gateway starts")
}

/// The event type every publisher registers under: a Kelvin asset's datastream.
const HARNESS_TYPE: &str = "kelvin/ad/harness/value";

/// The stream-sea stream that is [`HARNESS_TYPE`].
fn stream() -> StreamMapping {
    StreamMapping { name: "harness".into(), event_type: HARNESS_TYPE.into() }
}

/// Event `n` of the publisher on front-end `from`.
fn numbered(from: &str, n: u64) -> RegisterEvent {
    RegisterEvent::new(HARNESS_TYPE, Some(Payload::Json(json!({ "from": from, "n": n }).to_string())))
}

/// Checks what one subscriber received: every published event once, in id order where ids are
/// shown, and each publisher's events in the order it registered them.
fn check_received(who: &str, events: &[Received], endpoints: &[&str]) {
    let ids: Vec<EventId> = events.iter().filter_map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{who}: in id order");
    let mut by_origin: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in events {
        by_origin.entry(event.from.clone()).or_default().push(event.n);
    }
    for endpoint in endpoints {
        let got = by_origin.remove(*endpoint).unwrap_or_default();
        assert_eq!(got, (0..EACH).collect::<Vec<_>>(), "{who}: what {endpoint} published, each once, in order");
    }
    assert!(by_origin.is_empty(), "{who}: nothing else: {by_origin:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_front_end_reaches_every_other_in_one_order_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path()).await;
    let mut endpoints = native_endpoints(&gateway, &dir.path().join("ca.pem"));
    let (_direct, direct) = direct_endpoint(&gateway);
    endpoints.push(direct);
    endpoints.push(hat_endpoint(&gateway));
    endpoints.push(kelvin_endpoint(&gateway));
    endpoints.push(streamsea_endpoint(&gateway, stream()));
    let pattern = vec![EventPath::parse("kelvin/*")];

    // On every front-end: a subscriber, a persisted one where its clients may choose, and a publisher.
    let mut subscribers = Vec::new();
    let mut publishers = Vec::new();
    for endpoint in &endpoints {
        let choices: &[bool] = if endpoint.persistence { &[false, true] } else { &[false] };
        for &persisted in choices {
            let name = format!("{}-sub{}", endpoint.name, if persisted { "-persisted" } else { "" });
            let wants = Wants { name: name.clone(), subscriptions: pattern.clone(), persisted };
            subscribers.push((name, (endpoint.connect)(wants).await));
        }
        let wants = Wants { name: format!("{}-pub", endpoint.name), subscriptions: Vec::new(), persisted: false };
        publishers.push((endpoint.name, (endpoint.connect)(wants).await));
    }
    // One more, whose link breaks a few registrations in: it resends what had no ack.
    let (cut, cut_connections) = cut_once_endpoint(&gateway, 300);
    let wants = Wants { name: "tcp-cut-pub".into(), subscriptions: Vec::new(), persisted: false };
    publishers.push((cut.name, (cut.connect)(wants).await));
    let names: Vec<&str> = publishers.iter().map(|(name, _)| *name).collect();

    // Every publisher at once, each through its own front-end.
    let publishing = publishers.iter_mut().map(|(name, peer)| {
        let events = (0..EACH).map(|n| numbered(name, n)).collect();
        peer.publish(events)
    });
    futures_join(publishing).await;
    assert!(cut_connections.load(Ordering::SeqCst) >= 2, "the cut publisher linked again");

    let total = EACH as usize * names.len();
    let mut orders: Vec<(String, Vec<Received>)> = Vec::new();
    for (name, peer) in &mut subscribers {
        let mut received = Vec::with_capacity(total);
        while received.len() < total {
            received.push(peer.next_event().await);
        }
        check_received(name, &received, &names);
        orders.push((name.clone(), received));
    }
    // One order for everyone: every subscriber saw the same events in the same order, which is
    // id order (the ids are compared where the protocol shows them).
    let (first_name, first) = &orders[0];
    let ids: Vec<EventId> = first.iter().map(|e| e.id.expect("a native client sees ids")).collect();
    let without_ids = |events: &[Received]| events.iter().map(|e| (e.from.clone(), e.n)).collect::<Vec<_>>();
    for (name, received) in &orders {
        assert_eq!(without_ids(received), without_ids(first), "{name} and {first_name}: the same order");
        let shown: Vec<(usize, EventId)> = received.iter().enumerate().filter_map(|(i, e)| Some((i, e.id?))).collect();
        assert!(shown.iter().all(|&(i, id)| ids[i] == id), "{name}: the same ids as {first_name}");
    }

    // Stored once each, whichever front-end is asked (that has queries).
    let query = Query::Timeseries(TimeseriesQuery {
        event_types: Some(pattern.clone()),
        order: Order::Ascending,
        max_results: Some(50),
        ..TimeseriesQuery::default()
    });
    for (name, peer) in &mut publishers {
        let Some(stored) = peer.history(query.clone()).await else { continue };
        let stored: Vec<Received> = stored.iter().map(Received::of).collect();
        check_received(&format!("a query through {name}"), &stored, &names);
        assert_eq!(&stored, first, "{name}: the events, in the order, with the ids the subscribers saw");
    }
    drop((subscribers, publishers));
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_one_front_end_calls_a_client_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path()).await;
    let mut endpoints = native_endpoints(&gateway, &dir.path().join("ca.pem"));
    let (_direct, direct) = direct_endpoint(&gateway);
    endpoints.push(direct);
    let mut peers = Vec::new();
    for endpoint in &endpoints {
        let wants = Wants { name: format!("dev-{}", endpoint.name), subscriptions: Vec::new(), persisted: false };
        peers.push((endpoint.name, (endpoint.connect)(wants).await));
    }
    let names: BTreeSet<&str> = endpoints.iter().map(|e| e.name).collect();
    for (caller, peer) in &mut peers {
        for target in &names {
            let answer = peer.call(&format!("dev-{target}"), 7, caller.as_bytes().to_vec()).await;
            assert_eq!(answer, Ok(format!("dev-{target}:{caller}").into_bytes()), "{caller} calls {target}");
        }
        let nobody = peer.call("nobody", 7, Vec::new()).await.expect_err("no such client");
        assert!(nobody.contains("no client \"nobody\" is connected"), "{nobody}");
    }
    drop(peers);
    gateway.stop().await;
}

/// Runs the futures at once and waits for all.
async fn futures_join<'a>(futures: impl IntoIterator<Item = Boxed<'a, ()>>) {
    let tasks: Vec<Boxed<'a, ()>> = futures.into_iter().collect();
    let mut pending: Vec<Boxed<'a, ()>> = tasks;
    std::future::poll_fn(move |cx| {
        pending.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pending.is_empty() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
}
