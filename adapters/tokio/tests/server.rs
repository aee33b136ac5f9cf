//! `rivulet_tokio::server` end to end: real TCP, each client the core's `Client` machine under a
//! core `Driver` in its own task, the test steering it with actions and reading what it saw.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use rivulet_core::driver::{Clock, Driver};
use rivulet_core::model::{EventId, EventPayloadRef, Timestamp};
use rivulet_core::session::{self, ClientConfig, ClientEvent, Incoming, LinkEnd, Reply, RequestError};
use rivulet_core::time::Instant;
use rivulet_core::wire::{FrameWriter, Framing, StreamDecoder};
use rivulet_tokio::TokioClock;
use rivulet_tokio::model::{Event, EventPath, Payload, Query, QueryPage, RegisterEvent, Status, TimeseriesQuery};
use rivulet_tokio::packet::{PacketReply, PacketRequest};
use rivulet_tokio::server::{
    Admission, ClientInfo, HandlerError, Registration, Server, ServerHandler, ServerOptions, listen,
};
use rivulet_tokio::{ClientError, ClientOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

// ---- the application side: a store in memory ----

#[derive(Default)]
struct State {
    registered: Mutex<Vec<Registration>>,
    connects: Mutex<Vec<ClientInfo>>,
    disconnects: Mutex<Vec<ClientInfo>>,
    /// What queries page through, in id order.
    history: Vec<Event>,
    /// Fail the next registration of type `fail/now` (once).
    fail_next: AtomicBool,
    instance: AtomicU64,
}

struct Handler(Arc<State>);

impl ServerHandler for Handler {
    async fn connect(&self, client: &ClientInfo) -> Admission {
        self.0.connects.lock().unwrap().push(client.clone());
        match client.client_name.as_str() {
            "intruder" => Admission::Refuse("no intruders".into()),
            "challenged" if client.credential.as_deref() != Some(b"proof") => Admission::Challenge(b"nonce".to_vec()),
            _ => Admission::Accept,
        }
    }

    async fn disconnect(&self, client: &ClientInfo) {
        self.0.disconnects.lock().unwrap().push(client.clone());
    }

    async fn subscribe(&self, _client: &ClientInfo, patterns: &[EventPath]) -> Result<(), HandlerError> {
        match patterns.iter().find(|p| p.segments().next() == Some("secret")) {
            Some(p) => Err(HandlerError::Refused(format!("not allowed to subscribe to {p}"))),
            None => Ok(()),
        }
    }

    fn check_register(&self, _client: &ClientInfo, event: &RegisterEvent) -> Result<(), HandlerError> {
        match event.event_type.segments().next() {
            Some("secret") => Err(HandlerError::Refused(format!("not allowed to register {}", event.event_type))),
            _ => Ok(()),
        }
    }

    async fn register(
        &self,
        _client: &ClientInfo,
        registrations: Vec<Registration>,
    ) -> Result<Vec<Event>, HandlerError> {
        if registrations.iter().any(|r| r.event.event_type == EventPath::from("fail/now"))
            && self.0.fail_next.swap(false, Ordering::SeqCst)
        {
            return Err(HandlerError::Failed("store is full".into()));
        }
        let events = registrations
            .iter()
            .map(|r| Event {
                id: EventId { server: 7, session: 1, instance: self.0.instance.fetch_add(1, Ordering::SeqCst) },
                event_type: r.event.event_type.clone(),
                timestamp: Timestamp { s: 1_700_000_000, us: 0 },
                source_timestamp: r.event.source_timestamp,
                payload: r.event.payload.clone(),
            })
            .collect();
        self.0.registered.lock().unwrap().extend(registrations);
        Ok(events)
    }

    async fn query(&self, _client: &ClientInfo, query: Query) -> Result<QueryPage, HandlerError> {
        let Query::Timeseries(q) = query else { return Err(HandlerError::Refused("timeseries only".into())) };
        // Everything after the last id, unpaged: the server must cut it to fit.
        let events =
            self.0.history.iter().filter(|e| q.last_event_id.is_none_or(|last| e.id > last)).cloned().collect();
        Ok(QueryPage { events, more_follows: false })
    }

    async fn request(&self, client: &ClientInfo, request: PacketRequest) -> Result<PacketReply, HandlerError> {
        match request.rq_type {
            1 => Ok(PacketReply::new(request.flags + 1, [client.client_name.as_bytes(), &request.payload].concat())),
            _ => panic!("a handler bug"),
        }
    }
}

fn event(server: u64, instance: u64, event_type: &str, payload: &str) -> Event {
    Event {
        id: EventId { server, session: 1, instance },
        event_type: EventPath::from(event_type),
        timestamp: Timestamp { s: 1_700_000_000, us: instance as u32 },
        source_timestamp: None,
        payload: Some(Payload::Json(payload.into())),
    }
}

async fn start(state: &Arc<State>, options: ServerOptions) -> Server {
    listen("127.0.0.1:0", options, Handler(state.clone())).await.expect("bind")
}

// ---- the client side: a core client in a task ----

type TestClient = session::Client<'static>;

/// The core client behind a type without lifetime parameters: with one, the compiler cannot
/// prove the task's future `Send` (rust-lang/rust#110338).
struct Machine(TestClient);

impl session::Machine for Machine {
    type Event<'a> = ClientEvent<'a>;
    fn handle<'a>(&'a mut self, now: Instant, body: &'a [u8]) -> Result<Option<ClientEvent<'a>>, session::Error> {
        self.0.handle(now, body)
    }
    fn poll(&mut self, now: Instant) -> Option<session::TimerEvent> {
        self.0.poll(now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn poll_transmit(&mut self, now: Instant, out: &mut FrameWriter<'_>) -> Result<(), session::Error> {
        self.0.poll_transmit(now, out)
    }
}
type TestDriver = Driver<'static, FromTokio<TcpStream>, StreamDecoder<'static>>;
type Action = Box<dyn FnOnce(&mut Peer) + Send>;

/// What a client saw, owned.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Connected { resumed: bool, status: Status },
    Challenge(Vec<u8>),
    Refused(String),
    Status(Status),
    Event(Event),
    Registered(u32),
    Queried(Vec<Event>, bool),
    App(u64, Vec<u8>),
    Failed(String),
    Request(Incoming, u64, Vec<u8>),
    Ended(LinkEnd),
    Dropped(String),
}

fn seen(event: ClientEvent<'_>) -> Option<Seen> {
    Some(match event {
        ClientEvent::Connected { resumed, status, .. } => Seen::Connected { resumed, status },
        ClientEvent::Challenge { nonce } => Seen::Challenge(nonce.to_vec()),
        ClientEvent::Refused { reason } => Seen::Refused(reason.into()),
        ClientEvent::Status(status) => Seen::Status(status),
        ClientEvent::Event(event) => Seen::Event(event.into()),
        ClientEvent::Registered { below_seq } => Seen::Registered(below_seq),
        ClientEvent::Response { reply: Reply::Query(result), .. } => {
            Seen::Queried(result.events.iter().map(Event::from).collect(), result.more_follows)
        }
        ClientEvent::Response { reply: Reply::App { flags, payload }, .. } => Seen::App(flags, payload.to_vec()),
        ClientEvent::Response { .. } => return None,
        ClientEvent::RequestFailed { error: RequestError::Refused(reason), .. } => Seen::Failed(reason.into()),
        ClientEvent::RequestFailed { error, .. } => Seen::Failed(format!("{error:?}")),
        ClientEvent::Request { from, rq_type, payload, .. } => Seen::Request(from, rq_type, payload.to_vec()),
        ClientEvent::SubscriptionRefused { reason } => Seen::Failed(reason.into()),
        ClientEvent::RegistrationRefused { reason, .. } => Seen::Failed(reason.into()),
        ClientEvent::Subscribed | ClientEvent::Closing { .. } => return None,
        ClientEvent::LinkEnded(end) => Seen::Ended(end),
    })
}

struct Peer {
    client: Machine,
    driver: TestDriver,
    clock: TokioClock,
    /// Stepping the driver (false after the link ended, or to play a client that stopped reading).
    running: bool,
}

fn driver(stream: TcpStream) -> TestDriver {
    // 1 KiB each way, as on a small device; leaked, this is a test.
    let rx = Box::leak(vec![0u8; 1024].into_boxed_slice());
    let tx = Box::leak(vec![0u8; 1024].into_boxed_slice());
    Driver::new(FromTokio::new(stream), StreamDecoder::new(rx), FrameWriter::new(tx, Framing::Stream))
}

impl Peer {
    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn register(&mut self, event_type: &str, json: &str) {
        let ty = EventPath::from(event_type);
        self.client.0.register(ty.as_ref(), None, Some(EventPayloadRef::Json(json))).expect("outbox has room");
    }

    fn relink(&mut self, stream: TcpStream) {
        self.client.0.link_down();
        while self.client.0.poll(self.now()).is_some() {}
        self.driver = driver(stream);
        self.client.0.link_up(self.now());
        self.running = true;
    }
}

async fn drive(mut peer: Peer, mut actions: mpsc::UnboundedReceiver<Action>, out: mpsc::UnboundedSender<Seen>) {
    loop {
        if !peer.running {
            match actions.recv().await {
                Some(action) => action(&mut peer),
                None => return,
            }
            continue;
        }
        let step = tokio::select! {
            action = actions.recv() => match action {
                Some(action) => {
                    action(&mut peer);
                    continue;
                }
                None => return,
            },
            step = peer.driver.step(&mut peer.client, &peer.clock) => step.map(|e| e.and_then(seen)),
        };
        let seen = match step {
            Ok(Some(seen)) => seen,
            Ok(None) => continue,
            Err(e) => Seen::Dropped(e.to_string()),
        };
        match &seen {
            // Answer the server's requests by echoing them, flags = rq_type.
            Seen::Request(from, rq_type, payload) => {
                peer.client.0.respond(*from, *rq_type, payload, peer.driver.tx()).expect("answer fits");
            }
            Seen::Ended(_) | Seen::Dropped(_) => peer.running = false,
            _ => {}
        }
        let _ = out.send(seen);
    }
}

/// A client running in its own task.
struct Remote {
    actions: mpsc::UnboundedSender<Action>,
    seen: mpsc::UnboundedReceiver<Seen>,
    backlog: VecDeque<Seen>,
}

impl Remote {
    async fn connect(addr: SocketAddr, config: ClientConfig<'static>, subscriptions: &[&str]) -> Remote {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut client = TestClient::new(config, [0; 1024]);
        for pattern in subscriptions {
            client.subscribe(EventPath::from(*pattern).as_ref()).expect("room for the pattern");
        }
        let clock = TokioClock::new();
        client.link_up(clock.now());
        let peer = Peer { client: Machine(client), driver: driver(stream), clock, running: true };
        let (actions, actions_rx) = mpsc::unbounded_channel();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(drive(peer, actions_rx, seen_tx));
        Remote { actions, seen, backlog: VecDeque::new() }
    }

    fn act(&self, action: impl FnOnce(&mut Peer) + Send + 'static) {
        self.actions.send(Box::new(action)).expect("peer task runs");
    }

    async fn relink(&self, addr: SocketAddr) {
        let stream = TcpStream::connect(addr).await.expect("connect");
        self.act(move |peer| peer.relink(stream));
    }

    /// Waits for what the client sees next that matches; keeps the rest for later.
    async fn expect(&mut self, what: &str, matches: impl Fn(&Seen) -> bool) -> Seen {
        if let Some(at) = self.backlog.iter().position(&matches) {
            return self.backlog.remove(at).expect("found");
        }
        loop {
            match tokio::time::timeout(WAIT, self.seen.recv()).await {
                Ok(Some(seen)) if matches(&seen) => return seen,
                Ok(Some(seen)) => self.backlog.push_back(seen),
                Ok(None) => panic!("peer task ended waiting for {what}; saw {:?}", self.backlog),
                Err(_) => panic!("timed out waiting for {what}; saw {:?}", self.backlog),
            }
        }
    }

    async fn connected(&mut self) -> bool {
        match self.expect("connected", |s| matches!(s, Seen::Connected { .. })).await {
            Seen::Connected { resumed, .. } => resumed,
            _ => unreachable!(),
        }
    }

    /// Everything seen and not yet taken.
    fn take_all(&mut self) -> Vec<Seen> {
        while let Ok(seen) = self.seen.try_recv() {
            self.backlog.push_back(seen);
        }
        self.backlog.drain(..).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        self.take_all()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Event(event) => Some(event),
                _ => None,
            })
            .collect()
    }
}

/// Polls `check` until it holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---- tests ----

#[tokio::test]
async fn registrations_are_acknowledged_once_stored_and_resume_across_connections() {
    let state = Arc::new(State::default());
    let server = start(&state, ServerOptions { server_id: 7, ..ServerOptions::default() }).await;
    let addr = server.local_addr();
    let mut device = Remote::connect(addr, ClientConfig::new("device"), &[]).await;
    assert!(!device.connected().await, "a fresh session");

    device.act(|p| (1..=3).for_each(|n| p.register("sensor/a", &n.to_string())));
    device.expect("all three acknowledged", |s| matches!(s, Seen::Registered(3))).await;
    {
        let registered = state.registered.lock().unwrap();
        assert_eq!(registered.iter().map(|r| r.seq).collect::<Vec<_>>(), [Some(0), Some(1), Some(2)]);
        let payloads: Vec<_> = registered.iter().map(|r| r.event.payload.clone()).collect();
        assert_eq!(payloads, ["1", "2", "3"].map(|p| Some(Payload::Json(p.into()))));
    }
    let connections = server.connections();
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0].client_name, "device");
    let session = connections[0].session;
    assert!(state.registered.lock().unwrap().iter().all(|r| r.session == session));
    assert_eq!(server.connection_stats(connections[0].id).map(|s| s.registered), Some(3));

    // A new TCP connection resumes the session: nothing stored twice, numbering continues.
    device.relink(addr).await;
    assert!(device.connected().await, "the session resumed");
    device.act(|p| p.register("sensor/a", "4"));
    device.expect("the fourth acknowledged", |s| matches!(s, Seen::Registered(4))).await;
    let seqs: Vec<_> = state.registered.lock().unwrap().iter().map(|r| (r.session, r.seq)).collect();
    assert_eq!(seqs, (0..4).map(|n| (session, Some(n))).collect::<Vec<_>>());
    eventually("the first link is reported gone", || state.disconnects.lock().unwrap().len() == 1).await;
    assert_eq!(server.connections().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn notifications_reach_only_matching_clients() {
    let state = Arc::new(State::default());
    let server = start(&state, ServerOptions::default()).await;
    let addr = server.local_addr();
    let mut sensors = Remote::connect(addr, ClientConfig::new("sensors"), &["sensor/*"]).await;
    let only_7 = ClientConfig { server_id: Some(7), ..ClientConfig::new("alarms") };
    let mut alarms = Remote::connect(addr, only_7, &["alarm/?"]).await;
    sensors.connected().await;
    alarms.connected().await;

    let events = [
        event(7, 1, "sensor/a", "1"),
        event(7, 2, "alarm/x", "2"),
        event(8, 3, "alarm/y", "3"), // another server's
        event(7, 4, "other/z", "4"),
        event(7, 5, "sensor/b/c", "5"),
    ];
    server.notify_events(&events, true, true).await; // persisted: nobody asked for those
    // With the ack, every notification is in the clients' hands when this returns.
    tokio::time::timeout(WAIT, server.notify_events(&events, false, true)).await.expect("acknowledged");
    assert_eq!(sensors.events(), [events[0].clone(), events[4].clone()]);
    assert_eq!(alarms.events(), [events[1].clone()]);

    // A subscription changed on the open link applies to the next notifications.
    sensors.act(|p| p.client.0.subscribe(EventPath::from("alarm/*").as_ref()).expect("room"));
    let id = server.connections().iter().find(|c| c.client_name == "sensors").expect("listed").id;
    eventually("the new subscription is taken", || {
        server.connections().iter().any(|c| c.id == id && c.subscriptions.contains(&EventPath::from("alarm/*")))
    })
    .await;
    let more = [event(8, 6, "alarm/y", "6")];
    tokio::time::timeout(WAIT, server.notify_events(&more, false, true)).await.expect("acknowledged");
    assert_eq!(sensors.events(), more);
    assert_eq!(alarms.events(), []);
    assert_eq!(server.connection_stats(id).map(|s| s.notified), Some(3));

    // Status changes reach open links.
    server.set_status(Status::Stopping).await;
    sensors.expect("the new status", |s| *s == Seen::Status(Status::Stopping)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn query_pages_are_cut_to_the_clients_max_packet() {
    let history = (1..=60).map(|n| event(7, n, "sensor/temperature", &format!("{{\"value\":{n},\"unit\":\"C\"}}")));
    let state = Arc::new(State { history: history.collect(), ..State::default() });
    let server = start(&state, ServerOptions::default()).await;
    let mut device = Remote::connect(server.local_addr(), ClientConfig::new("device"), &[]).await;
    device.connected().await;

    let mut received: Vec<Event> = Vec::new();
    let mut pages = 0;
    loop {
        let query = Query::Timeseries(TimeseriesQuery {
            last_event_id: received.last().map(|e| e.id),
            ..TimeseriesQuery::default()
        });
        device.act(move |p| {
            let mut buf = Vec::new();
            let now = p.now();
            p.client.0.query(now, &query.to_params(&mut buf), p.driver.tx()).expect("connected");
        });
        let Seen::Queried(events, more) = device.expect("a page", |s| matches!(s, Seen::Queried(..))).await else {
            unreachable!()
        };
        assert!(!events.is_empty(), "every page moves on");
        pages += 1;
        received.extend(events);
        if !more {
            break;
        }
    }
    assert_eq!(received, state.history, "every event once, in order");
    assert!(pages > 3, "a 1000-byte max_packet takes many pages, got {pages}");
    server.shutdown().await;
}

#[tokio::test]
async fn admission_refuses_and_challenges() {
    let state = Arc::new(State::default());
    let server = start(&state, ServerOptions::default()).await;
    let addr = server.local_addr();

    let mut intruder = Remote::connect(addr, ClientConfig::new("intruder"), &[]).await;
    intruder.expect("the refusal", |s| *s == Seen::Refused("no intruders".into())).await;
    intruder.expect("the link's end", |s| matches!(s, Seen::Ended(_) | Seen::Dropped(_))).await;
    assert!(server.connections().is_empty());

    let mut challenged = Remote::connect(addr, ClientConfig::new("challenged"), &[]).await;
    challenged.expect("a challenge", |s| *s == Seen::Challenge(b"nonce".to_vec())).await;
    challenged.act(|p| p.client.0.answer_challenge(b"proof").expect("challenged"));
    challenged.connected().await;
    let connections = server.connections();
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0].credential.as_deref(), Some(&b"proof"[..]));
    assert!(!format!("{:?}", connections[0]).contains("proof"), "credentials stay out of logs");
    // Three inits: the intruder's, the challenged one's twice. Only one was accepted.
    assert_eq!(state.connects.lock().unwrap().len(), 3);
    server.shutdown().await;
    assert_eq!(state.disconnects.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn requests_go_both_ways() {
    let state = Arc::new(State::default());
    let server = start(&state, ServerOptions::default()).await;
    let mut device = Remote::connect(server.local_addr(), ClientConfig::new("device"), &[]).await;
    device.connected().await;

    device.act(|p| {
        let now = p.now();
        p.client.0.request(now, 1, 41, b"-hi", p.driver.tx()).expect("connected");
    });
    let reply = device.expect("the answer", |s| matches!(s, Seen::App(..))).await;
    assert_eq!(reply, Seen::App(42, b"device-hi".to_vec()));
    device.act(|p| {
        let now = p.now();
        p.client.0.request(now, 2, 0, b"", p.driver.tx()).expect("connected");
    });
    let failed = device.expect("the failure", |s| matches!(s, Seen::Failed(_))).await;
    assert_eq!(failed, Seen::Failed("exception during handler".into()));

    let id = server.connections()[0].id;
    let reply = server.request(id, 5, 0, b"ping".to_vec()).await.expect("the client answers");
    assert_eq!(reply, PacketReply::new(5, b"ping".to_vec()));
    assert!(server.request(id + 100, 5, 0, Vec::new()).await.is_err(), "no such connection");
    server.shutdown().await;
}

#[tokio::test]
async fn a_failed_store_closes_the_link_and_the_client_sends_again() {
    let state = Arc::new(State { fail_next: AtomicBool::new(true), ..State::default() });
    let server = start(&state, ServerOptions::default()).await;
    let addr = server.local_addr();
    let mut device = Remote::connect(addr, ClientConfig::new("device"), &[]).await;
    device.connected().await;

    device.act(|p| p.register("fail/now", "1"));
    device.expect("the link closed", |s| *s == Seen::Ended(LinkEnd::Closed)).await;
    assert!(state.registered.lock().unwrap().is_empty());

    device.relink(addr).await;
    device.connected().await;
    device.expect("stored on the next link", |s| matches!(s, Seen::Registered(1))).await;
    assert_eq!(state.registered.lock().unwrap().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_slow_client_is_closed_and_bad_bytes_end_only_their_connection() {
    let state = Arc::new(State::default());
    let options = ServerOptions { notify_queue: 4, shutdown_timeout: Duration::from_millis(300), ..Default::default() };
    let server = start(&state, options).await;
    let addr = server.local_addr();
    let mut stuck = Remote::connect(addr, ClientConfig::new("stuck"), &["sensor/*"]).await;
    let mut healthy = Remote::connect(addr, ClientConfig::new("healthy"), &["sensor/*"]).await;
    stuck.connected().await;
    healthy.connected().await;
    stuck.act(|p| p.running = false); // stops reading: no more acks

    let mut garbage = TcpStream::connect(addr).await.expect("connect");
    garbage.write_all(&[0xff; 64]).await.expect("write");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, garbage.read(&mut buf)).await.expect("the server hangs up");
    assert!(matches!(read, Ok(0) | Err(_)), "nothing but the end: {read:?}");

    // The stuck client takes its window (16), then its queue (4) fills.
    let events: Vec<Event> = (1..=30).map(|n| event(7, n, "sensor/a", &n.to_string())).collect();
    for event in &events {
        server.notify_events(std::slice::from_ref(event), false, false).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eventually("the stuck client is dropped", || server.connections().iter().all(|c| c.client_name != "stuck")).await;
    let mut received = Vec::new();
    while received.len() < events.len() {
        let Seen::Event(event) = healthy.expect("an event", |s| matches!(s, Seen::Event(_))).await else {
            unreachable!()
        };
        received.push(event);
    }
    assert_eq!(received, events, "the healthy client got everything");
    assert_eq!(server.connections().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_every_link_cleanly() {
    let state = Arc::new(State::default());
    // A link that did not close cleanly would hold shutdown for an hour, far past `WAIT`.
    let options = ServerOptions { shutdown_timeout: Duration::from_secs(3600), ..ServerOptions::default() };
    let server = start(&state, options).await;
    let addr = server.local_addr();
    let mut a = Remote::connect(addr, ClientConfig::new("a"), &[]).await;
    let mut b = Remote::connect(addr, ClientConfig::new("b"), &[]).await;
    a.connected().await;
    b.connected().await;

    tokio::time::timeout(WAIT, server.shutdown()).await.expect("the clients closed; no timeout was needed");
    a.expect("a clean close", |s| *s == Seen::Ended(LinkEnd::Closed)).await;
    b.expect("a clean close", |s| *s == Seen::Ended(LinkEnd::Closed)).await;
    assert_eq!(state.disconnects.lock().unwrap().len(), 2);
    assert!(TcpStream::connect(addr).await.is_err(), "no longer listening");
}

#[tokio::test]
async fn refused_registrations_and_subscriptions_say_why_and_store_nothing() {
    let state = Arc::new(State::default());
    let server = start(&state, ServerOptions::default()).await;
    let (client, _events) =
        rivulet_tokio::connect(server.local_addr(), ClientOptions::new("dev")).await.expect("connect");
    let json = |ty: &str| RegisterEvent::new(ty, Some(Payload::Json("1".into())));

    let before = client.register(json("sensor/a")).await.unwrap();
    let refused = client.register(json("secret/door")).await.unwrap();
    let after = client.register(json("sensor/b")).await.unwrap();
    assert_eq!(client.registered(before).await, Ok(()));
    assert_eq!(
        client.registered(refused).await,
        Err(ClientError::Refused("not allowed to register secret/door".into()))
    );
    assert_eq!(client.registered(after).await, Ok(()));
    let stored: Vec<String> = state.registered.lock().unwrap().iter().map(|r| r.event.event_type.to_string()).collect();
    assert_eq!(stored, vec!["sensor/a", "sensor/b"], "the refused one is not stored, the others are, in order");
    assert_eq!(client.state().refused, 1);
    let id = server.connections()[0].id;
    assert_eq!(server.connection_stats(id).map(|s| (s.registered, s.refused)), Some((2, 1)));

    let with_response = client.register_with_response(vec![json("sensor/c"), json("secret/x")]).await;
    assert_eq!(with_response, Err(ClientError::Refused("not allowed to register secret/x".into())));
    assert_eq!(state.registered.lock().unwrap().len(), 2, "a refused register-with-response stores none");

    client.subscribe("sensor/*").await.expect("allowed");
    assert_eq!(
        client.subscribe("secret/*").await,
        Err(ClientError::Refused("not allowed to subscribe to secret/*".into()))
    );
    assert_eq!(server.connections()[0].subscriptions, vec![EventPath::from("sensor/*")], "the previous list stays");
    assert!(client.state().connected, "refusals keep the link");
    client.close().await;
    server.shutdown().await;
}

/// A handler that takes batches at once and makes them durable later, in order, like a store
/// that commits in groups; the first batch holding `fail/durable` fails, and every batch after
/// it too (the handler's promise), until it is dropped.
struct Committing {
    stored: Arc<Mutex<Vec<String>>>,
    poisoned: Arc<AtomicBool>,
}

impl ServerHandler for Committing {
    async fn register(
        &self,
        _client: &ClientInfo,
        _registrations: Vec<Registration>,
    ) -> Result<Vec<Event>, HandlerError> {
        Err(HandlerError::Refused("register-with-response is not served here".into()))
    }

    async fn admit(
        &self,
        _client: &ClientInfo,
        registrations: Vec<Registration>,
    ) -> Result<rivulet_tokio::server::Admitted, HandlerError> {
        let texts: Vec<String> = registrations.iter().map(|r| format!("{:?}", r.event.payload)).collect();
        let failing = registrations.iter().any(|r| r.event.event_type == EventPath::from("fail/durable"));
        let (stored, poisoned) = (self.stored.clone(), self.poisoned.clone());
        let durable = async move {
            tokio::time::sleep(Duration::from_millis(20)).await; // a group commit
            if failing || poisoned.load(Ordering::SeqCst) {
                poisoned.store(true, Ordering::SeqCst);
                return Err(HandlerError::Failed("disk full".into()));
            }
            stored.lock().unwrap().extend(texts);
            Ok(())
        };
        Ok(rivulet_tokio::server::Admitted { durable: Box::pin(durable) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_after_it_was_taken_is_never_acknowledged_nor_what_follows() {
    let stored = Arc::new(Mutex::new(Vec::new()));
    let handler = Committing { stored: stored.clone(), poisoned: Arc::new(AtomicBool::new(false)) };
    let server = listen("127.0.0.1:0", ServerOptions::default(), handler).await.expect("bind");
    let (client, _events) = rivulet_tokio::connect(server.local_addr(), ClientOptions::new("dev")).await.unwrap();
    let json = |ty: &str, n: u32| RegisterEvent::new(ty, Some(Payload::Json(n.to_string())));
    let mut seqs = Vec::new();
    for n in 0..5 {
        seqs.push(client.register(json("ok/a", n)).await.unwrap());
    }
    tokio::time::timeout(WAIT, client.registered(seqs[4])).await.expect("in time").expect("stored");
    // Taken one after another while the first is still being written: then it fails.
    let failing = client.register(json("fail/durable", 5)).await.unwrap();
    let mut after = Vec::new();
    for n in 6..30 {
        after.push(client.register(json("ok/b", n)).await.unwrap());
    }
    eventually("the link closes on the failed write", || server.connections().is_empty()).await;
    let state = client.state();
    assert!(
        !session::message::seq_at_or_after(state.registered_below, failing.wrapping_add(1)),
        "the failed registration was not acknowledged: {state:?}"
    );
    let expected: Vec<String> = (0..5).map(|n| format!("{:?}", Some(Payload::Json(n.to_string())))).collect();
    assert_eq!(*stored.lock().unwrap(), expected, "only what was acknowledged is stored");
    assert!(client.state().registered_below <= failing, "nothing after it was acknowledged either");
    client.close().await;
    server.shutdown().await;
}
