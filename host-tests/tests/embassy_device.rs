//! `rivulet-embassy`'s device on the host: its runner runs in a tokio task (embassy-time on its
//! `std` clock) and dials `rivulet-tokio`'s server over loopback TCP through
//! embedded-io-adapters. The server keeps its events in `MemoryStore`, and `ServerThread` kills it
//! as a crash would and starts it again on the same port. A last test runs the device over an
//! in-memory serial line, with damaged frames, against the core's `ServerConnection`.
//!
//! Time is real; the timeouts (`within`, `eventually`) only turn a hang into a failure.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embedded_io_adapters::tokio_1::FromTokio;
use rivulet_core::driver::{Clock, Driver, DriverError};
use rivulet_core::model::{EventPayloadRef, EventRef, EventType, Status};
use rivulet_core::session::{ServerConfig, ServerConnection, ServerEvent};
use rivulet_core::wire::{FrameWriter, SerialDecoder};
use rivulet_embassy::{
    Backoff, Config, Connect, Device, Error, Framing, LinkStatus, REQUEST_QUEUE_FULL, Runner, Serial, State,
};
use rivulet_host_tests::memory::eventually;
use rivulet_host_tests::{Corrupting, Gateway, Loopback, MemoryStore, ServerThread, StoredEvent, TokioClock, within};
use rivulet_tokio::model::{Event, Payload, RegisterEvent};
use rivulet_tokio::packet::CallError;
use rivulet_tokio::server::ServerOptions;
use rivulet_tokio::{ClientOptions, connect};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SERVER_ID: u64 = 7;

type Line = FromTokio<Corrupting<tokio::io::DuplexStream>>;

/// A device and its runner's thread; the runner stops when this is dropped.
struct Running {
    device: &'static Device<'static>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `runner` in a thread of its own, on a one-thread tokio runtime (for the loopback sockets
/// and pipes), as an embassy executor thread would: the runner's future is not `Send`, so it
/// stays on the thread it started on.
fn run<
    C: Connect + Send + 'static,
    const E: usize,
    const R: usize,
    const O: usize,
    const I: usize,
    const A: usize,
    const S: usize,
>(
    device: Device<'static>,
    mut runner: Runner<'static, C, CriticalSectionRawMutex, E, R, O, I, A, S>,
) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async move {
            tokio::select! {
                _ = runner.run() => {}
                _ = stopped => {}
            }
        });
    });
    Running { device: leak(device), stop: Some(stop), thread: Some(thread) }
}

/// Memory that lives as long as the test process: what a firmware keeps in `static`s.
fn leak<T>(value: T) -> &'static mut T {
    Box::leak(Box::new(value))
}

fn buffer() -> &'static mut [u8] {
    Box::leak(vec![0u8; 2048].into_boxed_slice())
}

fn config(name: &'static str) -> Config<'static> {
    let backoff =
        Backoff { initial: embassy_time::Duration::from_millis(20), max: embassy_time::Duration::from_millis(150) };
    Config {
        backoff,
        seed: name.len() as u64 + 1,
        connect_timeout: embassy_time::Duration::from_secs(5),
        ..Config::new(name)
    }
}

/// A device over loopback TCP with `EVENTS` and `REQUESTS` queues and the core's default capacities.
fn start_tcp<const EVENTS: usize, const REQUESTS: usize>(config: Config<'static>, addr: SocketAddr) -> Running {
    let state: &'static State<CriticalSectionRawMutex, EVENTS, REQUESTS> = leak(State::new());
    let (device, runner) = rivulet_embassy::new(state, config, Loopback(addr), buffer(), buffer());
    run(device, runner)
}

async fn start_server(addr: SocketAddr, store: &Arc<MemoryStore>) -> ServerThread {
    let options = ServerOptions { server_id: SERVER_ID, ..ServerOptions::default() };
    within("server start", ServerThread::start(addr, options, store.clone())).await.expect("bind")
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

/// Waits until the device's status satisfies `check`.
async fn status_until(device: &Device<'_>, what: &str, check: impl Fn(&LinkStatus) -> bool) -> LinkStatus {
    let mut watcher = device.status_watcher().expect("a watcher slot");
    within(what, watcher.wait_for(check)).await
}

async fn register_numbered(device: &Device<'_>, prefix: &str, n: u32) -> Result<u32, Error> {
    let text = n.to_string();
    let event_type = format!("{prefix}/p{}", n % 3);
    device.register(event_type.as_str(), None, Some(EventPayloadRef::Json(&text))).await
}

fn number(event: &Event) -> u32 {
    match &event.payload {
        Some(Payload::Json(n)) => n.parse().expect("a number"),
        other => panic!("not one of ours: {other:?}"),
    }
}

/// The device's next event, in the tokio model so it compares with the store's.
async fn next_event(device: &Device<'_>) -> Event {
    let event = within("an event", device.next_event()).await;
    Event::from(event.as_ref())
}

fn of_session(store: &MemoryStore, session: u64) -> Vec<StoredEvent> {
    store.stored().into_iter().filter(|s| s.session == session).collect()
}

/// Checks that `session` stored exactly the numbers `0..count`, in order, as seqs `0..count`.
fn assert_stored_once(store: &MemoryStore, session: u64, count: u32) {
    let mine = of_session(store, session);
    let seqs: Vec<Option<u32>> = mine.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, (0..count).map(Some).collect::<Vec<_>>(), "each registration stored once, in order");
    let numbers: Vec<u32> = mine.iter().map(|s| number(&s.event)).collect();
    assert_eq!(numbers, (0..count).collect::<Vec<_>>());
}

/// Each time the device's acknowledged mark moves, every registration below it must be stored,
/// once. Ends when the mark reaches `until`; returns how many marks it checked.
fn check_acknowledged(device: &'static Device<'static>, store: Arc<MemoryStore>, until: u32) -> JoinHandle<usize> {
    let mut watcher = device.status_watcher().expect("a watcher slot");
    tokio::spawn(async move {
        let (mut highest, mut checked, mut session) = (0, 0, None);
        loop {
            let status = watcher.get();
            if status.session.is_some() {
                assert!(session.is_none() || session == status.session, "the session changed");
                session = status.session;
            }
            let below = status.registered_below;
            assert!(below >= highest, "the acknowledged mark went back from {highest} to {below}");
            if below > highest {
                let session = session.expect("acknowledged within a session");
                let seqs: Vec<u32> = of_session(&store, session).iter().filter_map(|s| s.seq).collect();
                let acknowledged: Vec<u32> = seqs.into_iter().filter(|&seq| seq < below).collect();
                assert_eq!(acknowledged, (0..below).collect::<Vec<_>>(), "acknowledged below {below}: stored once");
                highest = below;
                checked += 1;
            }
            if below >= until {
                return checked;
            }
            watcher.wait_for_change().await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_a_server_crash_once_each_and_subscriptions_come_back() {
    const COUNT: u32 = 120;
    const GATE: u32 = 80;
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let first = start_server(any_port(), &store).await;
    let addr = first.addr();
    let running = start_tcp::<4, 2>(config("device"), addr);
    let device = running.device;
    // Subscribed once, on the first link: the runner declares it again at every init.
    device.subscribe("stream/*").await.expect("a valid pattern");
    let status = status_until(device, "connected", |s| s.connected).await;
    let session = status.session.expect("a session");
    let checker = check_acknowledged(device, store.clone(), COUNT);

    // Paced, so the crash comes in the middle; from GATE on it waits until the server is back.
    let (gate, mut gate_open) = tokio::sync::watch::channel(false);
    let producing = tokio::spawn(async move {
        for n in 0..COUNT {
            if n == GATE {
                gate_open.wait_for(|open| *open).await.expect("the test runs");
            }
            let seq = within("register", register_numbered(device, "stream", n)).await;
            assert_eq!(seq, Ok(n), "queued, online or offline");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    // The events notified back reach the application in order, each once.
    let reading = tokio::spawn(async move {
        let mut received: Vec<Event> = Vec::new();
        while received.last().is_none_or(|e| number(e) < COUNT - 1) {
            received.push(next_event(device).await);
        }
        received
    });

    eventually("thirty stored", || store.len() >= 30).await;
    first.kill().await;
    status_until(device, "the link seen gone", |s| !s.connected).await;
    let at_crash = device.status();
    let acknowledged_at_crash = at_crash.registered_below;
    // Down: the device keeps registering, and what it registers waits in the outbox.
    let down = status_until(device, "registrations queued while down", |s| s.outbox_len > at_crash.outbox_len).await;
    assert_eq!(down.registered_below, acknowledged_at_crash, "nothing acknowledged while down");
    let stored_by_the_first = store.len();

    let second = start_server(addr, &store).await;
    let back = status_until(device, "back", |s| s.connected && s.links == 2).await;
    assert!(back.resumed && back.session == Some(session), "the session resumed: {back:?}");
    gate.send_replace(true);
    within("the producer", producing).await.expect("the producer ran");
    status_until(device, "all acknowledged", |s| s.registered_below == COUNT).await;
    let checked = within("the acknowledgement checks", checker).await.expect("every acknowledgement was stored");
    assert!(checked > 1, "acknowledgements came in steps");

    assert_stored_once(&store, session, COUNT);
    let stored = store.stored();
    assert_eq!(stored.iter().filter(|s| s.epoch == 1).count(), stored_by_the_first, "the dead server stored no more");
    assert_eq!(stored.iter().map(|s| s.epoch).collect::<BTreeSet<_>>(), BTreeSet::from([1, 2]));
    // Notifications the dead server owed are gone with it; everything stored after the restart
    // came back through the subscription the application never renewed.
    let received = within("the notifications", reading).await.expect("the reader ran");
    assert!(received.windows(2).all(|w| w[0].id < w[1].id), "in order, without duplicates");
    let events: Vec<Event> = stored.iter().map(|s| s.event.clone()).collect();
    assert!(received.iter().all(|e| events.contains(e)), "only stored events, as stored");
    let after_restart: Vec<&Event> = stored.iter().filter(|s| s.epoch == 2).map(|s| &s.event).collect();
    assert!(after_restart.len() >= (COUNT - GATE) as usize);
    assert!(after_restart.iter().all(|e| received.contains(e)), "every event stored after the restart arrived");
    let patterns: Vec<String> =
        second.server().connections().iter().flat_map(|c| c.subscriptions.iter().map(ToString::to_string)).collect();
    assert_eq!(patterns, ["stream/*"]);
    second.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stalls_past_twice_the_keepalive_loses_nothing_and_keeps_its_link() {
    const COUNT: u32 = 30;
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let server = start_server(any_port(), &store).await;
    // The server takes the device's keepalive: pings after 200 ms of silence, gives up after 400.
    let keepalive = Duration::from_millis(200);
    let slow = Config { keepalive: embassy_time::Duration::from_millis(200), ..config("slow") };
    let running = start_tcp::<4, 2>(slow, server.addr());
    let device = running.device;
    device.subscribe("burst/?").await.expect("a valid pattern");
    eventually("the subscription is taken", || {
        server.server().connections().iter().any(|c| c.client_name == "slow" && !c.subscriptions.is_empty())
    })
    .await;

    let (producer, _) = within("connect", connect(server.addr(), ClientOptions::new("producer"))).await.expect("up");
    for n in 0..COUNT {
        let event = RegisterEvent::new(format!("burst/{n}").as_str(), Some(Payload::Json(n.to_string())));
        producer.register(event).await.expect("queued");
    }
    within("all stored", producer.registered(COUNT - 1)).await.expect("registered");
    // The queue (the window, 4) fills; then nobody reads for five keepalive intervals. The server
    // holds the rest back, while the runner keeps answering its pings.
    status_until(device, "the queue full", |s| s.client.events == 4).await;
    tokio::time::sleep(keepalive * 5).await;
    let stalled = device.status();
    assert!(stalled.connected && stalled.links == 1, "the link held: {stalled:?}");
    assert_eq!(stalled.client.events, 4, "no more than the window was sent ahead: {stalled:?}");

    let mut received = Vec::new();
    for _ in 0..COUNT {
        received.push(next_event(device).await);
    }
    let numbers: Vec<u32> = received.iter().map(number).collect();
    assert_eq!(numbers, (0..COUNT).collect::<Vec<_>>(), "every event, in order, once");
    assert_eq!(received, store.events(), "as stored");
    let status = device.status();
    assert!(status.connected && status.links == 1 && status.events_dropped == 0, "{status:?}");
    assert_eq!(device.try_next_event(), None, "nothing twice");
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_requests_are_answered_and_one_beyond_the_queue_is_refused_at_once() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let server = start_server(any_port(), &store).await;
    let running = start_tcp::<4, 2>(config("responder"), server.addr());
    let device = running.device;
    status_until(device, "connected", |s| s.connected).await;
    let connection = server.server().connections().first().expect("the device").id;

    // Three requests at once into a queue of two that nobody reads yet: one is refused at once.
    let server = Arc::new(server);
    let mut asking = tokio::task::JoinSet::new();
    for n in 0..3u64 {
        let server = server.clone();
        asking.spawn(async move { server.server().request(connection, 5, n, format!("ping {n}").into_bytes()).await });
    }
    let first = within("the first answer", asking.join_next()).await.expect("three asked").expect("asked");
    assert_eq!(first, Err(CallError::Refused(REQUEST_QUEUE_FULL.into())), "refused at once, with the reason");
    assert_eq!(device.status().requests_refused, 1);

    // The application answers the two it has: one with a reply, one with a refusal.
    let one = within("a request", device.next_request()).await;
    assert_eq!(one.rq_type, 5);
    let mut reply = one.payload.to_vec();
    reply.reverse();
    device.respond(one.from, one.flags + 10, &reply).await.expect("answered");
    let two = within("a request", device.next_request()).await;
    device.refuse(two.from, "not now").await.expect("refused");
    let mut answers = Vec::new();
    while let Some(answer) = within("the answers", asking.join_next()).await {
        answers.push(answer.expect("asked"));
    }
    let expected_reply = rivulet_tokio::packet::PacketReply::new(one.flags + 10, reply);
    assert!(answers.contains(&Ok(expected_reply)), "{answers:?}");
    assert!(answers.contains(&Err(CallError::Refused("not now".into()))), "{answers:?}");

    // A request whose link ended cannot be answered any more.
    let late = {
        let server = server.clone();
        tokio::spawn(async move { server.server().request(connection, 6, 0, b"late".to_vec()).await })
    };
    let request = within("a late request", device.next_request()).await;
    // A graceful shutdown: ERQ and EOF to the device, which closes its side too.
    within("the shutdown", server.server().shutdown()).await;
    status_until(device, "the link seen gone", |s| !s.connected).await;
    assert_eq!(device.respond(request.from, 0, b"too late").await, Err(Error::LinkEnded));
    assert_eq!(within("the late caller", late).await.expect("asked"), Err(CallError::Disconnected));
    Arc::try_unwrap(server).expect("no other handle").kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_says_so_and_loses_nothing() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let first = start_server(any_port(), &store).await;
    let addr = first.addr();
    first.kill().await; // the device starts with its gateway down

    // A 256-byte outbox: a dozen small registrations.
    let state: &'static State<CriticalSectionRawMutex, 4, 2> = leak(State::new());
    let (device, runner) = rivulet_embassy::new_with_capacities::<_, _, _, _, 256, 4, 8, 128>(
        state,
        config("small"),
        Loopback(addr),
        buffer(),
        buffer(),
    );
    let running = run(device, runner);
    let device = running.device;
    let mut queued = 0;
    let full_at = loop {
        match within("register offline", register_numbered(device, "full", queued)).await {
            Ok(seq) => {
                assert_eq!(seq, queued);
                queued += 1;
            }
            Err(Error::OutboxFull) => break queued,
            Err(e) => panic!("{e}"),
        }
        assert!(queued < 1000, "the outbox never filled");
    };
    assert!(full_at > 3, "the outbox took {full_at}");
    let status = device.status();
    assert_eq!((status.outbox_len, status.registered_below), (full_at, 0), "{status:?}");
    assert_eq!(register_numbered(device, "full", full_at).await, Err(Error::OutboxFull), "still full, still refused");
    assert_eq!(device.status().outbox_len, full_at, "the refusal queued nothing");

    // The next ones wait for room, which only acknowledgements make.
    const MORE: u32 = 20;
    let waiting = tokio::spawn(async move {
        for n in full_at..full_at + MORE {
            assert_eq!(register_numbered_when_room(device, n).await, Ok(n));
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "registering waits for room while the gateway is down");
    assert_eq!(device.status().outbox_len, full_at);

    let second = start_server(addr, &store).await;
    within("the waiting registrations", waiting).await.expect("registered");
    let done = status_until(device, "all acknowledged", |s| s.registered_below == full_at + MORE).await;
    assert_stored_once(&store, done.session.expect("a session"), full_at + MORE);
    assert_eq!(store.len(), (full_at + MORE) as usize, "nothing else, nothing twice");
    second.kill().await;
}

async fn register_numbered_when_room(device: &Device<'_>, n: u32) -> Result<u32, Error> {
    let text = n.to_string();
    let event_type = format!("full/p{}", n % 3);
    within("room", device.register_when_room(event_type.as_str(), None, Some(EventPayloadRef::Json(&text)))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_are_seen() {
    let store = Arc::new(MemoryStore::new(SERVER_ID));
    let first = start_server(any_port(), &store).await;
    let addr = first.addr();
    let running = start_tcp::<4, 2>(config("watched"), addr);
    let device = running.device;
    let mut watcher = device.status_watcher().expect("a watcher slot");
    let up = within("connected", watcher.wait_for(|s| s.connected)).await;
    assert_eq!((up.links, up.resumed, up.server_status), (1, false, Status::Operational), "{up:?}");
    let session = up.session.expect("a session");
    // The store resumes a session it stored for.
    assert_eq!(register_numbered(device, "watched", 0).await, Ok(0));
    let stored = within("stored", watcher.wait_for(|s| s.registered_below == 1)).await;
    assert_eq!((stored.outbox_len, stored.client.registered), (0, 1), "{stored:?}");

    first.server().set_status(Status::Stopping).await;
    let stopping = within("the server's status", watcher.wait_for(|s| s.server_status == Status::Stopping)).await;
    assert!(stopping.connected);

    first.kill().await;
    let down = within("the link gone", watcher.wait_for(|s| !s.connected)).await;
    assert_eq!(down.session, Some(session), "the session outlives the link");
    within("failed attempts", watcher.wait_for(|s| s.connect_failures >= 2)).await;

    let second = start_server(addr, &store).await;
    let back = within("back", watcher.wait_for(|s| s.connected)).await;
    assert_eq!((back.links, back.resumed, back.session), (2, true, Some(session)), "{back:?}");
    assert_eq!(back.server_status, Status::Operational, "the new server's status came with the init");
    assert!(watcher.get().connected);
    // Watchers are a bounded resource: each holds a slot until dropped.
    let others: Vec<_> = std::iter::from_fn(|| device.status_watcher()).take(10).collect();
    assert_eq!(others.len(), rivulet_embassy::STATUS_WATCHERS - 1);
    drop(others);
    assert!(device.status_watcher().is_some());
    second.kill().await;
}

/// One serial line, many links: serves inits (resuming sessions with `Gateway`), stores
/// registrations, and notifies every stored event from the first on each new link (the device
/// drops the replays as duplicates). A bad frame ends the link and the next starts on the same
/// line, as a gateway's serial listener would. Returns when the line hangs up.
async fn serve_serial_line(line: tokio::io::DuplexStream) -> (Gateway, u64) {
    let (mut rx, mut tx) = (vec![0u8; 2048], vec![0u8; 2048]);
    let mut driver =
        Driver::new(FromTokio::new(line), SerialDecoder::new(&mut rx), FrameWriter::new(&mut tx, Framing::Serial));
    let mut gateway = Gateway::default();
    let clock = TokioClock::new();
    loop {
        let mut conn = ServerConnection::<8, 64>::new(clock.now(), ServerConfig::default());
        let mut session = 0;
        let mut outgoing: VecDeque<usize> = VecDeque::new();
        let ended = loop {
            while let Some(&at) = outgoing.front() {
                let stored = &gateway.stored[at];
                let ty = EventType::<64>::parse_path(&stored.event_type).expect("a type");
                let event = EventRef {
                    id: stored.id,
                    event_type: ty.as_ref(),
                    timestamp: gateway.timestamp(),
                    source_timestamp: None,
                    payload: stored.payload.as_deref().map(EventPayloadRef::Json),
                };
                match conn.notify(&event, driver.tx()) {
                    Ok(()) => {
                        outgoing.pop_front();
                    }
                    Err(e) if e.is_buffer_full() => {
                        if driver.flush().await.is_err() {
                            break;
                        }
                    }
                    Err(_) => break, // no credit, or closing: the rest waits
                }
            }
            enum Then {
                Accept(rivulet_core::session::Incoming, rivulet_core::session::Accepted),
                Store(u32, String, Option<String>),
                Nothing,
            }
            let then = match driver.step(&mut conn, &clock).await {
                Ok(Some(ServerEvent::Init { from, request })) => Then::Accept(from, gateway.accept(&request)),
                Ok(Some(ServerEvent::Register { seq, event })) => {
                    let payload = match event.payload {
                        Some(EventPayloadRef::Json(text)) => Some(text.to_string()),
                        _ => None,
                    };
                    Then::Store(seq, event.event_type.to_string(), payload)
                }
                Ok(Some(ServerEvent::LinkEnded(_))) => break Ok(()),
                Ok(_) => Then::Nothing,
                Err(e) => break Err(e),
            };
            match then {
                Then::Accept(from, accepted) => {
                    session = accepted.session;
                    conn.accept(from, &accepted, driver.tx()).expect("the answer fits");
                    outgoing = (0..gateway.stored.len()).collect();
                }
                Then::Store(seq, event_type, payload) => {
                    gateway.store(session, seq, event_type, payload);
                    outgoing.push_back(gateway.stored.len() - 1);
                }
                Then::Nothing => {}
            }
        };
        match ended {
            Ok(()) | Err(DriverError::Frame(_)) => driver.reset_link(),
            Err(DriverError::Closed) => return (gateway, driver.stats().bad_frames),
            Err(e) => panic!("server: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_damaged_serial_line_links_resume_and_nothing_is_lost() {
    const COUNT: u32 = 60;
    let (device_end, server_end) = tokio::io::duplex(1024);
    // Some of the device's writes arrive with a flipped byte: the gateway drops those frames.
    let line: Line = FromTokio::new(Corrupting::new(device_end, vec![4, 9, 15]));
    let serving = tokio::spawn(serve_serial_line(server_end));
    let state: &'static State<CriticalSectionRawMutex, 4, 2> = leak(State::new());
    let (device, runner) = rivulet_embassy::new(state, config("uart"), Serial::new(line), buffer(), buffer());
    let running = run(device, runner);
    let device = running.device;

    let registering = tokio::spawn(async move {
        for n in 0..COUNT {
            assert_eq!(register_numbered(device, "uart", n).await, Ok(n));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut received = Vec::new();
    for _ in 0..COUNT {
        received.push(within("an event over the line", device.next_event()).await);
    }
    within("the registrations", registering).await.expect("registered");
    let status = status_until(device, "all acknowledged", |s| s.registered_below == COUNT).await;
    assert!(status.links >= 2 && status.resumed, "damage cost links, and each resumed: {status:?}");
    assert!(status.client.duplicates > 0, "events notified again on a new link were dropped: {status:?}");

    drop(running); // hang up the line
    let (gateway, bad_frames) = within("the server", serving).await.expect("served");
    assert!(bad_frames >= 1, "the damage was detected");
    assert_eq!(gateway.stored.len(), COUNT as usize, "every registration stored, none twice");
    for (n, stored) in gateway.stored.iter().enumerate() {
        assert_eq!((stored.seq as usize, stored.payload.clone()), (n, Some(n.to_string())));
    }
    let ids: Vec<_> = received.iter().map(|e| e.id).collect();
    let stored_ids: Vec<_> = gateway.stored.iter().map(|s| s.id).collect();
    assert_eq!(ids, stored_ids, "every stored event notified once, in order, over the line");
}
