//! The cross-front-end harness: events published through each front-end reach the subscribers
//! of every front-end in one order, each once; a query through each front-end finds each once;
//! a client of one front-end calls a client of another. Today the front-ends are the native
//! protocol's three listeners (plain TCP, TLS, serial lines over TCP), the hat front-end (with
//! `rivulet_tokio::hat`'s client) and `direct`, a second front-end in this file built on the
//! broker's API alone; one more publisher's link is cut
//! mid-stream, so its client resends and the gateway must store nothing twice. A new front-end
//! plugs in with an [`Endpoint`] (how its clients connect) and a [`Peer`] (what its client does).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rivulet_core::model::{EventId, Order};
use rivulet_core::owned::{Event, EventPath, Payload, Query, RegisterEvent, TimeseriesQuery};
use rivulet_core::wire::Framing;
use rivulet_gateway::access::Principal;
use rivulet_gateway::broker::{Batch, Broker};
use rivulet_gateway::config::{HatSettings, NativeSettings, Settings, TlsSettings};
use rivulet_gateway::frontend::native::{Forward, RQ_FORWARD, forward};
use rivulet_gateway::frontend::{Call, ClientReport, Frontend, FrontendStats, Listener};
use rivulet_gateway::gateway::Gateway;
use rivulet_tokio::fanout::{Delivery, Interest, Subscriber};
use rivulet_tokio::hat::{HatClient, HatEvents, HatOptions};
use rivulet_tokio::packet::{CallError, PacketHandler, PacketReply, PacketRequest};
use rivulet_tokio::{Client, ClientOptions, Events, connect_via_with_handler, tls};

mod common;

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
    /// Registers `events` in order; returns once the gateway acknowledged them as stored.
    fn publish(&mut self, events: Vec<RegisterEvent>) -> Boxed<'_, ()>;
    /// The next event its subscriptions received.
    fn next_event(&mut self) -> Boxed<'_, Event>;
    /// Every event of a query, following its pages.
    fn history(&mut self, query: Query) -> Boxed<'_, Vec<Event>>;
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

/// One front-end (or one listener of one): a name for messages and how its clients connect.
struct Endpoint {
    name: &'static str,
    connect: Box<dyn Fn(Wants) -> Boxed<'static, Box<dyn Peer>> + Send + Sync>,
}

/// A `rivulet-tokio` client: the native front-end's, over any of its listeners.
struct Native {
    client: Client,
    events: Events,
}

impl Peer for Native {
    fn publish(&mut self, events: Vec<RegisterEvent>) -> Boxed<'_, ()> {
        Box::pin(async move {
            let mut last = None;
            for event in events {
                last = Some(within("register", self.client.register(event)).await.expect("in the outbox"));
            }
            if let Some(last) = last {
                within("stored", self.client.registered(last)).await.expect("stored");
            }
        })
    }

    fn next_event(&mut self) -> Boxed<'_, Event> {
        Box::pin(async move { within("an event", self.events.next()).await.expect("the client runs") })
    }

    fn history(&mut self, query: Query) -> Boxed<'_, Vec<Event>> {
        Box::pin(async move { within("query", self.client.query_all(query)).await.expect("answered") })
    }

    fn call(&mut self, target: &str, rq_type: u64, payload: Vec<u8>) -> Boxed<'_, Result<Vec<u8>, String>> {
        let forward = Forward { client: target.to_string(), rq_type, flags: 0, payload };
        let body = forward::encode(&forward).expect("encodes");
        Box::pin(async move {
            let answer = within("a call", self.client.request(RQ_FORWARD, 0, body)).await;
            answer.map(|reply| reply.payload).map_err(|e| e.to_string())
        })
    }
}

/// A hat Eventer client (`rivulet_tokio::hat`) of the hat front-end.
struct Hat {
    client: HatClient,
    events: HatEvents,
}

impl Peer for Hat {
    fn publish(&mut self, events: Vec<RegisterEvent>) -> Boxed<'_, ()> {
        // Answered once durable: the hat front-end's default.
        Box::pin(async move {
            within("registered", self.client.register_with_response(events)).await.expect("stored");
        })
    }

    fn next_event(&mut self) -> Boxed<'_, Event> {
        Box::pin(async move { within("an event", self.events.next()).await.expect("the client runs") })
    }

    fn history(&mut self, query: Query) -> Boxed<'_, Vec<Event>> {
        Box::pin(async move { within("query", self.client.query_all(query)).await.expect("answered") })
    }

    fn call(&mut self, _target: &str, _rq_type: u64, _payload: Vec<u8>) -> Boxed<'_, Result<Vec<u8>, String>> {
        Box::pin(async { Err("hat's protocol has no requests".to_string()) })
    }
}

fn hat_endpoint(gateway: &Gateway) -> Endpoint {
    let addr = gateway.hat_addr().expect("a hat listener");
    Endpoint {
        name: "hat",
        connect: Box::new(move |wants| {
            Box::pin(async move {
                let mut options = HatOptions::new(wants.name);
                options.subscriptions = wants.subscriptions;
                options.persisted = wants.persisted;
                let (client, events) =
                    within("hat connects", rivulet_tokio::hat::connect(addr, options)).await.expect("connected");
                Box::new(Hat { client, events }) as Box<dyn Peer>
            })
        }),
    }
}

/// Answers request type 7 with `name:payload`, so a caller sees whom it reached.
struct Echo(String);

impl PacketHandler for Echo {
    async fn handle(&self, request: PacketRequest) -> Result<PacketReply, String> {
        match request.rq_type {
            7 => Ok(PacketReply::new(0, [self.0.as_bytes(), b":", &request.payload].concat())),
            other => Err(format!("no request type {other} here")),
        }
    }
}

/// The native front-end's listeners: plain TCP, TLS (trusting `ca`) and serial lines over TCP.
fn native_endpoints(gateway: &Gateway, ca: &Path) -> Vec<Endpoint> {
    let tcp = gateway.local_addr();
    let tls_addr = gateway.tls_addr().expect("a TLS listener");
    let serial = gateway.serial_addr().expect("a serial listener");
    let trust = tls::client_config(ca).expect("the test CA");
    let options = |wants: &Wants| ClientOptions {
        subscriptions: wants.subscriptions.clone(),
        persisted: wants.persisted,
        ..ClientOptions::new(wants.name.clone())
    };
    let peer = |connected: Result<(Client, Events), rivulet_tokio::ClientError>| -> Box<dyn Peer> {
        let (client, events) = connected.expect("connects");
        Box::new(Native { client, events })
    };
    vec![
        Endpoint {
            name: "tcp",
            connect: Box::new(move |wants| {
                let options = options(&wants);
                Box::pin(async move {
                    let echo = Echo(wants.name.clone());
                    peer(within("connect", rivulet_tokio::connect_with_handler(tcp, options, echo)).await)
                })
            }),
        },
        Endpoint {
            name: "tls",
            connect: Box::new(move |wants| {
                let options = options(&wants);
                let connector = tls::Connector::new(tls_addr.to_string(), "localhost", trust.clone()).expect("a name");
                Box::pin(async move {
                    let echo = Echo(wants.name.clone());
                    peer(within("connect", connect_via_with_handler(connector, options, echo)).await)
                })
            }),
        },
        Endpoint {
            name: "serial",
            connect: Box::new(move |wants| {
                let options = ClientOptions { framing: Framing::Serial, ..options(&wants) };
                Box::pin(async move {
                    let echo = Echo(wants.name.clone());
                    peer(within("connect", rivulet_tokio::connect_with_handler(serial, options, echo)).await)
                })
            }),
        },
    ]
}

/// Plain TCP whose first connection breaks after `budget` bytes written: the client reconnects,
/// resumes its session and sends again what was not acknowledged. Also the count of connections
/// its clients made.
fn cut_once_endpoint(gateway: &Gateway, budget: usize) -> (Endpoint, Arc<AtomicUsize>) {
    let addr = gateway.local_addr();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let endpoint = Endpoint {
        name: "tcp-cut",
        connect: Box::new(move |wants| {
            let connections = connections.clone();
            let connector = move || {
                let first = connections.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    let stream = tokio::net::TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    Ok(CutAfter { inner: stream, left: first.then_some(budget) })
                }
            };
            let options =
                ClientOptions { subscriptions: wants.subscriptions.clone(), ..ClientOptions::new(wants.name) };
            Box::pin(async move {
                let (client, events) = within("connect", rivulet_tokio::connect_via(connector, options)).await.unwrap();
                Box::new(Native { client, events }) as Box<dyn Peer>
            })
        }),
    };
    (endpoint, counted)
}

/// A stream whose writes fail once `left` bytes went out (`None`: never).
struct CutAfter {
    inner: tokio::net::TcpStream,
    left: Option<usize>,
}

impl tokio::io::AsyncRead for CutAfter {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CutAfter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let allowed = match self.left {
            Some(0) => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            Some(left) => left.min(buf.len()),
            None => buf.len(),
        };
        let polled = Pin::new(&mut self.inner).poll_write(cx, &buf[..allowed]);
        if let (Poll::Ready(Ok(n)), Some(left)) = (&polled, self.left) {
            self.left = Some(left - n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A second front-end, on the broker's API alone: its clients publish, subscribe, query and
/// call through `Broker` calls, and answer calls with [`Echo`]. Two front-ends then share one
/// fan-out, and `Broker::call` searches both.
struct Direct {
    broker: Arc<Broker>,
    /// The names of its connected clients, for calls.
    clients: Mutex<Vec<String>>,
}

impl Frontend for Direct {
    fn name(&self) -> &'static str {
        "direct"
    }

    fn listeners(&self) -> Vec<Listener> {
        Vec::new()
    }

    fn clients(&self) -> Vec<ClientReport> {
        Vec::new()
    }

    fn stats(&self) -> FrontendStats {
        FrontendStats::default()
    }

    fn call(&self, client: &str, request: PacketRequest) -> Option<Call> {
        let name = self.clients.lock().unwrap().iter().find(|name| *name == client)?.clone();
        Some(Box::pin(async move { Echo(name).handle(request).await.map_err(CallError::Refused) }))
    }

    fn announce(&self, _: rivulet_core::model::Status) -> Boxed<'_, ()> {
        Box::pin(async {})
    }

    fn stop(&self) -> Boxed<'_, ()> {
        Box::pin(async {})
    }
}

/// A client of [`Direct`].
struct DirectPeer {
    broker: Arc<Broker>,
    name: String,
    subscriber: Subscriber,
}

impl DirectPeer {
    fn principal(&self) -> Principal<'_> {
        Principal { name: &self.name, frontend: "direct", peer: None }
    }
}

impl Peer for DirectPeer {
    fn publish(&mut self, events: Vec<RegisterEvent>) -> Boxed<'_, ()> {
        Box::pin(async move {
            let batch = Batch { events, sessions: Vec::new() };
            let published = self.broker.publish(&self.principal(), batch, false).await.expect("taken");
            within("stored", published.durable).await.expect("stored");
        })
    }

    fn next_event(&mut self) -> Boxed<'_, Event> {
        Box::pin(async move {
            match within("an event", self.subscriber.next(true)).await {
                Delivery::Event(event) => {
                    self.subscriber.delivered();
                    self.subscriber.acknowledged(1);
                    (*event).clone()
                }
                Delivery::CutOff => panic!("{} was cut off", self.name),
            }
        })
    }

    fn history(&mut self, mut query: Query) -> Boxed<'_, Vec<Event>> {
        Box::pin(async move {
            let mut all = Vec::new();
            loop {
                let page = self.broker.query(&self.principal(), query.clone(), usize::MAX).await.expect("answered");
                all.extend(page.events);
                match (page.more_follows, all.last().and_then(|last: &Event| query.after(last.id))) {
                    (true, Some(next)) => query = next,
                    _ => return all,
                }
            }
        })
    }

    fn call(&mut self, target: &str, rq_type: u64, payload: Vec<u8>) -> Boxed<'_, Result<Vec<u8>, String>> {
        let target = target.to_string();
        Box::pin(async move {
            let request = PacketRequest { rq_type, flags: 0, payload };
            let answer = self.broker.call(&self.principal(), &target, request).await;
            answer.map(|reply| reply.payload).map_err(|e| e.to_string())
        })
    }
}

/// `direct` attached to `gateway`'s broker; it is a front-end for as long as the `Arc` lives.
fn direct_endpoint(gateway: &Gateway) -> (Arc<dyn Frontend>, Endpoint) {
    let direct = Arc::new(Direct { broker: gateway.broker().clone(), clients: Mutex::new(Vec::new()) });
    let attached: Arc<dyn Frontend> = direct.clone();
    gateway.broker().attach(&attached);
    let endpoint = Endpoint {
        name: "direct",
        connect: Box::new(move |wants| {
            let direct = direct.clone();
            Box::pin(async move {
                let who = Principal { name: &wants.name, frontend: "direct", peer: None };
                let interest =
                    Interest { patterns: wants.subscriptions.clone(), server_id: None, persisted: wants.persisted };
                let subscriber = direct.broker.subscribe(&who, interest).expect("subscribed");
                direct.clients.lock().unwrap().push(wants.name.clone());
                Box::new(DirectPeer { broker: direct.broker.clone(), name: wants.name, subscriber }) as Box<dyn Peer>
            })
        }),
    };
    (attached, endpoint)
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
    let settings = Settings { native, hat, data: dir.join("data"), ..Settings::default() };
    Gateway::start(&settings).await.expect("the gateway starts")
}

fn numbered(ty: &str, n: u64) -> RegisterEvent {
    RegisterEvent::new(ty, Some(Payload::Json(n.to_string())))
}

/// (publisher's front-end, number) of an event `numbered` made under `x/<front-end>`.
fn origin(event: &Event) -> (String, u64) {
    let from = event.event_type.segments().nth(1).expect("x/<front-end>").to_string();
    match &event.payload {
        Some(Payload::Json(text)) => (from, text.parse().expect("a number")),
        other => panic!("not a numbered event: {other:?}"),
    }
}

/// Checks what one subscriber received: every published event once, in id order, and each
/// publisher's events in the order it registered them.
fn check_received(who: &str, events: &[Event], endpoints: &[&str]) {
    assert!(events.windows(2).all(|w| w[0].id < w[1].id), "{who}: in id order");
    let mut by_origin: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in events {
        let (from, n) = origin(event);
        by_origin.entry(from).or_default().push(n);
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
    let pattern = vec![EventPath::parse("x/*")];

    // On every front-end: a subscriber, a persisted subscriber and a publisher.
    let mut subscribers = Vec::new();
    let mut publishers = Vec::new();
    for endpoint in &endpoints {
        for persisted in [false, true] {
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
        let events = (0..EACH).map(|n| numbered(&format!("x/{name}"), n)).collect();
        peer.publish(events)
    });
    futures_join(publishing).await;
    assert!(cut_connections.load(Ordering::SeqCst) >= 2, "the cut publisher linked again");

    let total = EACH as usize * names.len();
    let mut orders: Vec<(bool, Vec<EventId>)> = Vec::new();
    for (name, peer) in &mut subscribers {
        let mut received = Vec::with_capacity(total);
        while received.len() < total {
            received.push(peer.next_event().await);
        }
        check_received(name, &received, &names);
        orders.push((name.ends_with("persisted"), received.iter().map(|e| e.id).collect()));
    }
    // One order for everyone: every subscriber saw the same ids in the same order.
    let first = &orders[0].1;
    assert!(orders.iter().all(|(_, ids)| ids == first), "the same order on every front-end, persisted or not");

    // Stored once each, whichever front-end is asked.
    let query = Query::Timeseries(TimeseriesQuery {
        event_types: Some(pattern.clone()),
        order: Order::Ascending,
        max_results: Some(50),
        ..TimeseriesQuery::default()
    });
    for (name, peer) in &mut publishers {
        let stored = peer.history(query.clone()).await;
        check_received(&format!("a query through {name}"), &stored, &names);
        assert_eq!(&stored.iter().map(|e| e.id).collect::<Vec<_>>(), first, "{name}: the ids the subscribers saw");
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
