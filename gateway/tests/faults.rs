//! Fault injection against the real `rivulet gateway` process (issue 6, "Robustness").
//!
//! Each test starts the binary with its metrics endpoint, runs normal clients beside the fault
//! ([`Steady`]: a producer registering numbered events at a fixed pace and a subscriber checking
//! every number), injects the fault over raw TCP or with misbehaving clients, and asserts:
//!
//! - the normal clients got every event published during the fault, in order, exactly once, on
//!   the link they started with (no drop, no reconnect), and the store holds every acknowledged
//!   registration once, in order;
//! - the subscriber kept receiving at the producer's rate throughout: at every tick of the
//!   producer it lacked at most [`STEADY_BEHIND`] of the events the gateway had acknowledged (a
//!   count, not a time), and the clients run on after the fault until that many more than it has
//!   are acknowledged, so that a short fault that stopped it fails too;
//! - the gateway handled the fault as docs/GATEWAY.md says: only the faulty connections ended,
//!   with the reason where there is one, counted in `--metrics`, and its memory did not follow;
//! - the gateway stops cleanly on SIGTERM afterwards and logged no panic.
//!
//! No assertion is about time: the waits are bounded by [`PATIENCE`] only to turn a hang into a
//! failure. The tests print what they measured (`-- --nocapture`); docs/RELIABILITY.md, "Fault
//! injection", has the figures. kill -9 mid-stream is covered by `crash.rs`, not repeated here.

mod common;

use std::fs::File;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use rivulet_core::session::{self, ClientConfig, ClientEvent};
use rivulet_core::wire::{FrameDecoder, FrameWriter, Framing, StreamDecoder, varint};
use rivulet_tokio::model::{Event, Order, Payload, Query, RegisterEvent, TimeseriesQuery};
use rivulet_tokio::{Client, ClientError, ClientOptions, Events, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use common::{PATIENCE, RIVULET};

/// How often the steady producer registers an event.
const STEADY_EVERY: Duration = Duration::from_millis(20);
/// The steady subscriber's window (notifications the gateway may send ahead of its acks) and
/// its client's queue of events for the application: together, what may be on the way to it.
const STEADY_WINDOW: u16 = 8;
const STEADY_QUEUE: usize = 8;
/// How many acknowledged events the steady subscriber may lack at any tick of the producer. Its
/// notifications are queued before the commit and the acknowledgement after it, so a subscriber
/// that keeps up lacks at most what its window and queue hold; beyond that the gateway is holding
/// its notifications back: it has stopped receiving at the producer's rate (for 16 ticks, 0.32 s).
const STEADY_BEHIND: u64 = STEADY_WINDOW as u64 + STEADY_QUEUE as u64;
/// The gateway's keepalive: it is not a setting, the core's `ServerConfig` default (20 s).
/// A link is dead after twice this without a whole packet.
const GATEWAY_KEEPALIVE: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("{what}: no result in {PATIENCE:?}"))
}

// ---------------------------------------------------------------------------------------------
// The gateway process

/// `rivulet gateway` in a temporary directory, with its metrics endpoint, its stderr in a log
/// file (read at the end for panics) and its stdout read to the end on a thread. Killed when
/// dropped (a failing test); [`Gateway::stop`] stops it with SIGTERM instead.
struct Gateway {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    metrics: SocketAddr,
    tls: Option<SocketAddr>,
}

impl Gateway {
    /// Starts the gateway with `flags` after the common ones and waits until it listens.
    fn start(flags: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self::start_in(dir, flags)
    }

    /// The same, with a TLS listener (a self-signed certificate) beside the plain one.
    fn start_with_tls(flags: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let key = rcgen::KeyPair::generate().expect("a key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        let cert = params.self_signed(&key).expect("a certificate");
        std::fs::write(dir.path().join("server.pem"), cert.pem()).expect("write the certificate");
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("write the key");
        let tls = ["--tls-listen", "127.0.0.1:0", "--tls-cert", "server.pem", "--tls-key", "server.key"];
        Self::start_in(dir, &[&tls[..], flags].concat())
    }

    fn start_in(dir: tempfile::TempDir, flags: &[&str]) -> Gateway {
        let log = File::create(dir.path().join("gateway.log")).expect("the log file");
        let mut child = Command::new(RIVULET)
            .args(["gateway", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--data", "data"])
            .args(["--commit-ms", "2"])
            .args(flags)
            .current_dir(dir.path())
            .env_remove("RIVULET_TOKEN")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn rivulet gateway");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                // The receiver goes after the start; keep reading so the gateway never blocks.
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut metrics, mut tls) = (None, None, None);
        let parse = |text: &str| text.parse::<SocketAddr>().ok();
        loop {
            let line = lines.recv_timeout(PATIENCE).expect("the gateway's start lines");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["rivulet", "gateway", "listening", "on", at, ..] => addr = parse(at),
                ["metrics:", url] => {
                    metrics = url.strip_prefix("http://").and_then(|u| u.strip_suffix("/metrics")).and_then(parse);
                }
                ["TLS:", at, ..] => tls = parse(at),
                ["stop", "with", "Ctrl-C"] => break,
                _ => {}
            }
        }
        let addr = addr.expect("a `listening on ADDR` line");
        let metrics = metrics.expect("a `metrics: http://ADDR/metrics` line");
        Gateway { child, dir, addr, metrics, tls }
    }

    /// The current counters and gauges.
    async fn metrics(&self) -> Metrics {
        let mut stream = within("metrics", TcpStream::connect(self.metrics)).await.expect("the metrics endpoint");
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: gateway\r\n\r\n").await.expect("send the scrape");
        let mut page = String::new();
        within("scrape", stream.read_to_string(&mut page)).await.expect("read the scrape");
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        Metrics(page)
    }

    /// Waits until `metric` reaches `at_least` (it only grows), and returns it.
    async fn metric_reaches(&self, metric: &str, at_least: u64) -> u64 {
        let reaching = async {
            loop {
                let value = self.metrics().await.get(metric);
                if value >= at_least {
                    return value;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        match tokio::time::timeout(PATIENCE, reaching).await {
            Ok(value) => value,
            Err(_) => panic!("{metric} did not reach {at_least} in {PATIENCE:?}; the gateway's log:\n{}", self.log()),
        }
    }

    /// What the gateway logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).expect("the gateway's log")
    }

    /// Waits until the gateway lists exactly `n` clients with an accepted link.
    async fn clients_become(&self, n: u64) {
        within(&format!("{n} clients listed"), async {
            while self.metrics().await.get("rivulet_connections") != n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Resident memory (`VmRSS`) and its peak so far (`VmHWM`), in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc/PID/status");
        let field = |name: &str| -> u64 {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {status}"));
            line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("a number of kB")
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// `rivulet status` against this gateway: its JSON.
    async fn status(&self) -> serde_json::Value {
        let (addr, dir) = (self.addr.to_string(), self.dir.path().to_path_buf());
        let stdout = tokio::task::spawn_blocking(move || common::ok(&["status", "--gateway", &addr], &dir, &[]))
            .await
            .expect("rivulet status");
        serde_json::from_str(&stdout).expect("status is JSON")
    }

    /// Stops with SIGTERM, waits for a clean exit, and checks the log for panics. Returns the log.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("run kill").success());
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "the gateway did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self.log();
        assert!(status.success(), "the gateway exited with {status}; its log:\n{log}");
        assert!(!log.contains("panicked"), "the gateway panicked; its log:\n{log}");
        log
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scrape of `/metrics`.
struct Metrics(String);

impl Metrics {
    /// A family's value: the sum of its samples (one per front-end, say).
    fn get(&self, name: &str) -> u64 {
        let of_family =
            |sample: &&str| sample.strip_prefix(name).is_some_and(|rest| rest.is_empty() || rest.starts_with('{'));
        let values: Vec<f64> = (self.0.lines())
            .filter_map(|l| l.split_once(' '))
            .filter(|(sample, _)| of_family(sample))
            .filter_map(|(_, value)| value.parse().ok())
            .collect();
        assert!(!values.is_empty(), "no metric {name} in\n{}", self.0);
        values.iter().sum::<f64>() as u64
    }
}

// ---------------------------------------------------------------------------------------------
// Normal clients beside the fault

fn numbered(ty: &str, n: u64) -> RegisterEvent {
    RegisterEvent::new(ty, Some(Payload::Json(n.to_string())))
}

fn number(event: &Event) -> u64 {
    match &event.payload {
        Some(Payload::Json(text)) => text.parse().expect("a number"),
        Some(Payload::Binary { data, .. }) => u64::from_be_bytes(data[..8].try_into().expect("8 bytes")),
        None => panic!("not a numbered event: {event:?}"),
    }
}

/// Every event of `pattern` in the store, oldest first, by the number in its payload, read in
/// pages of `page` events.
async fn stored_numbers(client: &Client, pattern: &str, page: u32) -> Vec<u64> {
    let query = Query::Timeseries(TimeseriesQuery {
        event_types: Some(vec![pattern.into()]),
        order: Order::Ascending,
        max_results: Some(page),
        ..TimeseriesQuery::default()
    });
    let events = within("query the store", client.query_all(query)).await.expect("a query answer");
    events.iter().map(number).collect()
}

/// Normal clients beside a fault: a producer registering `steady/NAME` events numbered 0, 1, 2…
/// every [`STEADY_EVERY`], and a subscriber to them that checks each number is the next one.
struct Steady {
    ty: String,
    producer: Arc<Client>,
    subscriber: Client,
    stop: watch::Sender<bool>,
    producing: JoinHandle<Produced>,
    /// How many arrived in order so far, or what went wrong.
    received: watch::Receiver<Result<u64, String>>,
}

/// What the steady producer did, and how far behind it the subscriber was at worst.
struct Produced {
    count: u64,
    /// The last registration's sequence number.
    last: Option<u32>,
    /// The most acknowledged events the subscriber lacked at a tick, and at which event.
    most_behind: (u64, u64),
}

/// What [`Steady::finish`] checked, for the test's figures.
struct SteadyRun {
    events: u64,
    most_behind: u64,
}

impl std::fmt::Display for SteadyRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} steady events (the subscriber at most {} behind)", self.events, self.most_behind)
    }
}

impl Steady {
    async fn start(gateway: &Gateway, name: &str) -> Steady {
        let ty = format!("steady/{name}");
        let subscribing = ClientOptions {
            subscriptions: vec![ty.as_str().into()],
            window: STEADY_WINDOW,
            events: STEADY_QUEUE,
            ..ClientOptions::new("steady-sub")
        };
        let (subscriber, events) =
            within("connect the subscriber", connect(gateway.addr, subscribing)).await.expect("connect");
        let (producer, _) = within("connect the producer", connect(gateway.addr, ClientOptions::new("steady-pub")))
            .await
            .expect("connect");
        let producer = Arc::new(producer);
        let (received_tx, received) = watch::channel(Ok(0));
        tokio::spawn(check_order(events, received_tx));
        let (stop, mut stopped) = watch::channel(false);
        let producing = {
            let (producer, ty, received) = (producer.clone(), ty.clone(), received.clone());
            tokio::spawn(async move {
                let mut pace = tokio::time::interval(STEADY_EVERY);
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let (mut n, mut last, mut most_behind) = (0, None, (0, 0));
                loop {
                    let stop = tokio::select! {
                        _ = pace.tick() => false,
                        _ = stopped.wait_for(|stop| *stop) => true,
                    };
                    // The producer's registrations are all steady events, numbered from seq 0.
                    let acknowledged = u64::from(producer.state().registered_below);
                    // Out of order or ended: `finish` reports that.
                    let behind = received.borrow().as_ref().map_or(0, |&got| acknowledged.saturating_sub(got));
                    if behind > most_behind.0 {
                        most_behind = (behind, n);
                    }
                    if stop {
                        break;
                    }
                    last = Some(producer.register(numbered(&ty, n)).await.expect("register"));
                    n += 1;
                }
                Produced { count: n, last, most_behind }
            })
        };
        let steady = Steady { ty, producer, subscriber, stop, producing, received };
        // The fault starts once events flow.
        steady.wait_received(10).await;
        steady
    }

    async fn wait_received(&self, n: u64) {
        let mut received = self.received.clone();
        let reached = within("steady events", received.wait_for(|r| r.as_ref().map_or(true, |&got| got >= n))).await;
        assert!(reached.expect("the checker runs").is_ok(), "{:?}", *self.received.borrow());
    }

    /// Stops the producer and checks what the module doc says; returns how many events went
    /// through and how far behind the subscriber was at worst.
    async fn finish(mut self) -> SteadyRun {
        // However short the fault was, a subscriber it stopped lacks more than STEADY_BEHIND
        // events once that many more than it has are acknowledged.
        let acknowledged = u64::from(self.producer.state().registered_below);
        let has = self.received.borrow().as_ref().map_or(acknowledged, |&got| got.max(acknowledged));
        let until = u32::try_from(has + STEADY_BEHIND + 1).expect("steady events are counted in u32");
        let mut producer = self.producer.state_changes();
        within("more steady events", producer.wait_for(|state| state.registered_below >= until))
            .await
            .expect("the producer runs");
        self.stop.send_replace(true);
        let produced = within("the producer stops", &mut self.producing).await.expect("the producer");
        let (count, (most_behind, at)) = (produced.count, produced.most_behind);
        // First, so that a subscriber still stalled fails here rather than after PATIENCE below.
        assert!(
            most_behind <= STEADY_BEHIND,
            "the steady subscriber fell {most_behind} acknowledged events behind (when event {at} was \
             due; at most {STEADY_BEHIND}): it stopped receiving at the producer's rate; received {:?}",
            *self.received.borrow()
        );
        let last = produced.last.expect("the producer registered something");
        within("all acknowledged", self.producer.registered(last)).await.expect("stored");
        self.wait_received(count).await;
        assert_eq!(*self.received.borrow(), Ok(count), "every event once, in order");
        assert_eq!(self.producer.state().links, 1, "the producer kept its link");
        assert_eq!(self.subscriber.state().links, 1, "the subscriber kept its link");
        assert_eq!(self.subscriber.close_reason(), None);
        let stored = stored_numbers(&self.producer, &self.ty, 1000).await;
        assert_eq!(stored, (0..count).collect::<Vec<_>>(), "every acknowledged event stored once, in order");
        self.subscriber.close().await;
        if let Ok(producer) = Arc::try_unwrap(self.producer) {
            producer.close().await;
        }
        SteadyRun { events: count, most_behind }
    }
}

/// Reads the steady subscriber's events and reports how many arrived as 0, 1, 2… in order.
async fn check_order(mut events: Events, received: watch::Sender<Result<u64, String>>) {
    let mut expected = 0;
    loop {
        let Some(event) = events.next().await else {
            received.send_modify(|r| *r = Err(format!("the events ended after {expected}")));
            return;
        };
        let n = number(&event);
        if n != expected {
            received.send_modify(|r| *r = Err(format!("got {n} where {expected} was next")));
            return;
        }
        expected += 1;
        received.send_modify(|r| *r = Ok(expected));
    }
}

// ---------------------------------------------------------------------------------------------
// Raw connections: bytes the core's client would never send

/// xorshift64*: random garbage, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A stream length prefix for a body of `len` bytes.
fn prefix(len: u64) -> Vec<u8> {
    let mut buf = [0u8; varint::MAX_LEN];
    let used = varint::encode(len, &mut buf).expect("a u64 fits ten bytes");
    buf[..used].to_vec()
}

/// `frames` frames with a valid-looking length prefix (1 to 1000) and a random body each.
fn junk_frames(rng: &mut Rng, frames: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for _ in 0..frames {
        let len = 1 + rng.below(1000);
        bytes.extend(prefix(len));
        bytes.extend(rng.bytes(len as usize));
    }
    bytes
}

/// A core client machine named `name` on a fresh link, and the init frame it sends first (which
/// proposes the gateway's own keepalive).
fn client_machine(name: &str) -> (session::Client<'_>, Vec<u8>) {
    client_machine_with(name, rivulet_core::time::Duration::from_secs(GATEWAY_KEEPALIVE.as_secs()))
}

/// [`client_machine`] proposing `keepalive`.
fn client_machine_with(name: &str, keepalive: rivulet_core::time::Duration) -> (session::Client<'_>, Vec<u8>) {
    let config = ClientConfig { keepalive, ..ClientConfig::new(name) };
    let mut machine = session::Client::new(config, [0; 1024]);
    let now = rivulet_core::time::Instant::ZERO;
    machine.link_up(now);
    let mut buf = [0u8; 512];
    let mut out = FrameWriter::new(&mut buf, Framing::Stream);
    machine.poll_transmit(now, &mut out).expect("an init fits 512 bytes");
    let init = out.pending().to_vec();
    (machine, init)
}

/// The valid init frame of a client named `name`.
fn init_frame(name: &str) -> Vec<u8> {
    client_machine(name).1
}

/// How the gateway answered a raw connection's init.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Accepted,
    Refused(String),
    /// Closed (or reset) without an answer.
    Closed,
}

/// The gateway's answer to `name`'s init in the bytes `received` so far, if it is there: the
/// core client reads them as it would on a real link.
fn answer_in(name: &str, received: &[u8]) -> Option<Answer> {
    let (mut machine, _) = client_machine(name);
    let mut storage = vec![0u8; received.len().max(1) + varint::MAX_LEN];
    let mut decoder = StreamDecoder::new(&mut storage);
    decoder.push(received);
    while let Ok(Some(body)) = decoder.next_body() {
        match machine.handle(rivulet_core::time::Instant::ZERO, body) {
            Ok(Some(ClientEvent::Connected { .. })) => return Some(Answer::Accepted),
            Ok(Some(ClientEvent::Refused { reason })) => return Some(Answer::Refused(reason.to_string())),
            _ => {}
        }
    }
    None
}

/// Reads until the gateway has answered `name`'s init (or closed the connection).
async fn read_answer(stream: &mut TcpStream, name: &str) -> Answer {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match within("the init's answer", stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => return Answer::Closed,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
        if let Some(answer) = answer_in(name, &received) {
            return answer;
        }
    }
}

/// Sends a valid init of `name` at once on `stream` and reads the answer.
async fn init_on(stream: &mut TcpStream, name: &str) -> Answer {
    match stream.write_all(&init_frame(name)).await {
        Ok(()) => read_answer(stream, name).await,
        Err(_) => Answer::Closed,
    }
}

/// Connects, sends a valid init of `name` at once, and reads the answer.
async fn raw_init(addr: SocketAddr, name: &str) -> (TcpStream, Answer) {
    let mut stream = TcpStream::connect(addr).await.expect("a TCP connection");
    let answer = init_on(&mut stream, name).await;
    (stream, answer)
}

/// Opens `n` connections, then sends all their inits at once (named `PREFIX-i`) and returns the
/// streams with the answers.
async fn inits_together(addr: SocketAddr, prefix: &str, n: usize) -> Vec<(TcpStream, Answer)> {
    let together = Arc::new(tokio::sync::Barrier::new(n));
    let mut connecting = JoinSet::new();
    for i in 0..n {
        let (together, name) = (together.clone(), format!("{prefix}-{i}"));
        connecting.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("a TCP connection");
            together.wait().await;
            let answer = init_on(&mut stream, &name).await;
            (stream, answer)
        });
    }
    let mut answered = Vec::new();
    while let Some(connection) = connecting.join_next().await {
        answered.push(connection.expect("a connection"));
    }
    answered
}

/// Sends `bytes` (as far as the gateway takes them) and reads until the gateway closes the
/// connection; fails the test if it never does.
async fn send_until_closed(stream: &mut TcpStream, bytes: &[u8]) {
    // A write fails once the gateway has closed (reset): that is the expected end.
    let _ = stream.write_all(bytes).await;
    let mut sink = [0u8; 4096];
    within("the gateway closes the connection", async { while let Ok(1..) = stream.read(&mut sink).await {} }).await;
}

/// A client that registers `count` events of `ty` and waits until all are stored.
async fn register_all(client: &Client, ty: &str, count: u64) {
    let mut last = None;
    for n in 0..count {
        last = Some(within("register", client.register(numbered(ty, n))).await.expect("register"));
    }
    if let Some(last) = last {
        within("registered", client.registered(last)).await.expect("stored");
    }
}

/// Connects a new client, registers a few events and closes it: nobody is holding new clients up.
async fn a_new_client_gets_through(addr: SocketAddr, name: &str) {
    let (client, _) = within("a new client", connect(addr, ClientOptions::new(name))).await.expect("connect");
    register_all(&client, &format!("new/{name}"), 5).await;
    assert_eq!(stored_numbers(&client, &format!("new/{name}"), 1000).await, vec![0, 1, 2, 3, 4]);
    client.close().await;
}

// ---------------------------------------------------------------------------------------------
// The faults

/// Garbage on twenty connections at once: random bytes, valid-looking length prefixes with junk
/// bodies, and random bytes after a valid init. Each ends only its own connection, and each is
/// counted as bad input.
///
/// The seed is one for which every stream reaches a malformed frame before anything else ends
/// its link. With other seeds a junk frame may also parse as a well-formed packet: an unknown
/// request is refused and the link goes on, a session message before the init closes the link
/// politely (neither is bad input), and a stream whose every frame is taken that way leaves the
/// connection to the keepalive. With these sizes about one stream in four does one of these.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_many_connections_ends_only_those_and_is_counted() {
    let gateway = Gateway::start(&[]);
    let steady = Steady::start(&gateway, "garbage").await;
    let (random, framed, after_init) = (8, 8, 4);
    let mut rng = Rng(0x5eed_003c);
    let mut attacks = JoinSet::new();
    for i in 0..random + framed + after_init {
        let addr = gateway.addr;
        let is_framed = (random..random + framed).contains(&i);
        let garbage = if is_framed { junk_frames(&mut rng, 64) } else { rng.bytes(64 * 1024) };
        attacks.spawn(async move {
            let mut stream = if i >= random + framed {
                let (stream, answer) = raw_init(addr, &format!("garbler-{i}")).await;
                assert_eq!(answer, Answer::Accepted, "connection {i}: the init before the junk");
                stream
            } else {
                TcpStream::connect(addr).await.expect("connect")
            };
            send_until_closed(&mut stream, &garbage).await;
        });
    }
    while let Some(attack) = attacks.join_next().await {
        attack.expect("every garbage connection was closed by the gateway");
    }
    let connections = random + framed + after_init;
    let bad = gateway.metric_reaches("rivulet_bad_input_total", connections).await;
    assert_eq!(bad, connections, "each garbage connection counted once as bad input");
    gateway.clients_become(2).await;
    a_new_client_gets_through(gateway.addr, "after-garbage").await;
    let steady_run = steady.finish().await;
    let metrics = gateway.metrics().await;
    assert_eq!(metrics.get("rivulet_bad_input_total"), connections, "and nothing else was");
    let log = gateway.stop();
    assert_eq!(log.matches("bad input, closed").count() as u64, connections, "each logged with its peer");
    println!("garbage: {connections} connections at once, {bad} counted as bad input, {steady_run}");
}

/// Length prefixes beyond `--max-packet`, one of them announcing gigabytes with megabytes
/// following: each ends its connection at the prefix, and the gateway's memory does not follow.
/// (A packet at most 14 bytes over the limit is taken: the open bug of
/// [`a_valid_packet_one_byte_over_max_packet_ends_the_link`].)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_packets_end_their_link_and_memory_does_not_follow() {
    const MAX_PACKET: u64 = 4096;
    let gateway = Gateway::start(&["--max-packet", &MAX_PACKET.to_string()]);
    let steady = Steady::start(&gateway, "oversize").await;
    let (rss_before, _) = gateway.memory_kib();
    let mut rng = Rng(0x0b16_b0d1);
    let four_gib = 4 << 30;
    // (name, after a valid init?, the bytes)
    let cases: Vec<(&str, bool, Vec<u8>)> = vec![
        ("twice the limit", false, [prefix(2 * MAX_PACKET), rng.bytes(2 * MAX_PACKET as usize)].concat()),
        ("4 GiB announced, 32 MiB sent", false, [prefix(four_gib), rng.bytes(32 << 20)].concat()),
        ("u64::MAX announced", false, [prefix(u64::MAX), rng.bytes(1 << 20)].concat()),
        ("4 GiB announced after an init", true, [prefix(four_gib), rng.bytes(32 << 20)].concat()),
    ];
    let n = cases.len() as u64;
    let mut attacks = JoinSet::new();
    for (name, init_first, bytes) in cases {
        let addr = gateway.addr;
        attacks.spawn(async move {
            let mut stream = if init_first {
                let (stream, answer) = raw_init(addr, "oversize").await;
                assert_eq!(answer, Answer::Accepted, "{name}: the init");
                stream
            } else {
                TcpStream::connect(addr).await.expect("connect")
            };
            send_until_closed(&mut stream, &bytes).await;
        });
    }
    while let Some(attack) = attacks.join_next().await {
        attack.expect("every oversize connection was closed by the gateway");
    }
    assert_eq!(gateway.metric_reaches("rivulet_bad_input_total", n).await, n, "each counted as bad input");
    let (rss_after, peak) = gateway.memory_kib();
    // A gateway that allocated what the prefix announces, or buffered what followed it, would
    // hold at least the 32 MiB sent after it. Bounded, it holds one receive buffer per
    // connection (max_packet + 16 bytes): growth stays in the noise of the allocator.
    let grown = peak.saturating_sub(rss_before);
    assert!(grown < 8 * 1024, "RSS peaked {grown} KiB above the {rss_before} KiB before the oversize packets");
    let steady_run = steady.finish().await;
    gateway.stop();
    println!(
        "oversize: {n} connections, RSS {rss_before} KiB before, {rss_after} KiB after, peak {peak} KiB; \
         {steady_run}"
    );
}

/// Open bug: `--max-packet` is enforced only by the size of the receive buffer, which has 16
/// bytes of room for the length prefix, so a packet up to 14 bytes over the limit (13 above 16 KiB,
/// where the prefix takes 3 bytes) is taken. docs/GATEWAY.md says a larger packet ends the link.
/// Here a well-formed application request one byte over the limit gets an answer instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_packet_one_byte_over_max_packet_ends_the_link() {
    const MAX_PACKET: usize = 4096;
    let gateway = Gateway::start(&["--max-packet", &MAX_PACKET.to_string()]);
    let (mut machine, init) = client_machine("edge");
    let now = rivulet_core::time::Instant::ZERO;
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
    stream.write_all(&init).await.expect("send the init");
    let mut storage = vec![0u8; 2 * MAX_PACKET];
    let mut decoder = StreamDecoder::new(&mut storage);
    let mut chunk = [0u8; 4096];
    'accepted: loop {
        let n = within("the init's answer", stream.read(&mut chunk)).await.expect("read");
        assert_ne!(n, 0, "closed before answering the init");
        decoder.push(&chunk[..n]);
        while let Ok(Some(body)) = decoder.next_body() {
            if let Ok(Some(ClientEvent::Connected { .. })) = machine.handle(now, body) {
                break 'accepted;
            }
        }
    }
    // An application request whose body is one byte over the limit. An empty one first gives the
    // header's size (its frame less the 1-byte length prefix); the gateway never sees it.
    let mut frame = vec![0u8; 2 * MAX_PACKET];
    let header = {
        let mut out = FrameWriter::new(&mut frame, Framing::Stream);
        machine.request(now, 99, 0, &[], &mut out).expect("an empty request");
        out.pending().len() - 1
    };
    let mut out = FrameWriter::new(&mut frame, Framing::Stream);
    let over = vec![0x42; MAX_PACKET + 1 - header];
    let id = machine.request(now, 99, 0, &over, &mut out).expect("the request");
    let bytes = out.pending().to_vec();
    let (body, prefix) = varint::decode(&bytes).expect("a length prefix");
    assert_eq!((body as usize, prefix + body as usize), (MAX_PACKET + 1, bytes.len()), "the packet's size");
    let _ = stream.write_all(&bytes).await;
    loop {
        let n = within("the gateway's answer or close", stream.read(&mut chunk)).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        decoder.push(&chunk[..n]);
        while let Ok(Some(body)) = decoder.next_body() {
            match machine.handle(now, body) {
                Ok(Some(ClientEvent::Response { id: answered, .. })) if answered == id => {
                    panic!("the gateway took and answered a packet of {} bytes", MAX_PACKET + 1)
                }
                Ok(Some(ClientEvent::RequestFailed { id: answered, error })) if answered == id => {
                    panic!("the gateway took a packet of {} bytes and answered {error:?}", MAX_PACKET + 1)
                }
                _ => {}
            }
        }
    }
    assert_eq!(gateway.metric_reaches("rivulet_bad_input_total", 1).await, 1, "counted as bad input");
    gateway.stop();
}

/// A slowloris that sends a valid init a byte every 50 ms, then trickles a packet that never
/// completes: the keepalive ends it (a whole packet is what counts, not a byte). A connection
/// that sends nothing is dropped when no init came in time, a silent TLS connection by the
/// handshake timeout, and nobody else waits for them.
///
/// The issue says a byte a second; at 50 ms a byte the init (about 30 bytes) arrives in under
/// two seconds instead of half a minute, the same rule applies, and the test stays short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_silent_connections_end_without_holding_others() {
    const BYTE_EVERY: Duration = Duration::from_millis(50);
    let gateway = Gateway::start_with_tls(&[]);
    let steady = Steady::start(&gateway, "slowloris").await;
    let started = Instant::now();

    let silent = {
        let addr = gateway.addr;
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            send_until_closed(&mut stream, &[]).await;
            started.elapsed()
        })
    };
    let silent_tls = {
        let addr = gateway.tls.expect("a TLS listener");
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            send_until_closed(&mut stream, &[]).await;
            started.elapsed()
        })
    };
    let (accepted_tx, mut accepted) = watch::channel(None);
    let slowloris = {
        let addr = gateway.addr;
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            for byte in init_frame("slowloris") {
                stream.write_all(&[byte]).await.expect("the gateway takes the init");
                tokio::time::sleep(BYTE_EVERY).await;
            }
            let inited = started.elapsed();
            accepted_tx.send_replace(Some(read_answer(&mut stream, "slowloris").await));
            // Then a packet announced at 4000 bytes, a byte every 50 ms: it would take 200 s.
            let (mut reader, mut writer) = stream.into_split();
            let trickle = async {
                for byte in [prefix(4000), vec![0; 4000]].concat() {
                    if writer.write_all(&[byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(BYTE_EVERY).await;
                }
            };
            let mut sink = [0u8; 1024];
            let closed = async { while let Ok(1..) = reader.read(&mut sink).await {} };
            tokio::select! {
                () = closed => {}
                () = trickle => panic!("the whole trickled packet went through"),
            }
            (inited, started.elapsed())
        })
    };

    let answer = within("the slowloris init", accepted.wait_for(Option::is_some)).await.expect("sent").clone();
    assert_eq!(answer, Some(Answer::Accepted), "a slow but valid init is a valid init");
    gateway.clients_become(3).await;
    // While the three hang on, other clients come and go.
    for i in 0..5 {
        a_new_client_gets_through(gateway.addr, &format!("meanwhile-{i}")).await;
    }
    let tls_dropped = within("the TLS handshake timeout", silent_tls).await.expect("silent TLS");
    assert!(gateway.metrics().await.get("rivulet_handshakes_failed_total") >= 1, "the silent TLS handshake");
    let (inited, slowloris_dropped) = within("the slowloris' end", slowloris).await.expect("slowloris");
    let silent_dropped = within("the silent connection's end", silent).await.expect("silent");
    gateway.clients_become(2).await;

    let metrics = gateway.metrics().await;
    assert_eq!(metrics.get("rivulet_bad_input_total"), 0, "slow is not malformed");
    // The silent TLS connection (handshake timeout) and the silent TCP one (no init in time).
    assert_eq!(metrics.get("rivulet_handshakes_failed_total"), 2);
    let steady_run = steady.finish().await;
    gateway.stop();
    println!(
        "slowloris: init took {inited:?}, dropped {slowloris_dropped:?} after the start (keepalive {GATEWAY_KEEPALIVE:?}); \
         silent TCP dropped after {silent_dropped:?}, silent TLS after {tls_dropped:?}; {steady_run}"
    );
}

/// Two hundred raw connections, each with a valid init, against `--max-connections 20` while two
/// normal clients work: at most 20 clients at once, every other connection refused and counted,
/// and once the flood ends new clients get in again.
///
/// This found a bug, fixed: the limit was checked before the handler admitted the client and
/// the link listed after, with awaits between, so inits arriving together could all pass the
/// check and go over the limit (19 clients in the 18 places left, now and then). The check and
/// the listing are now one step under the connections' lock (`adapters/tokio/src/server/`);
/// [`the_connection_limit_holds_when_inits_arrive_together`] pins it down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_held_at_the_limit_and_new_clients_get_in_after_it() {
    const LIMIT: u64 = 20;
    const FLOOD: u64 = 200;
    let gateway = Gateway::start(&["--max-connections", &LIMIT.to_string()]);
    let steady = Steady::start(&gateway, "flood").await;

    // Every connection opens first, then all send their init at once: the inits the gateway
    // takes in (up to a tenth over the limit) arrive together, as in a real flood.
    let (mut admitted, mut refused_full, mut closed) = (Vec::new(), 0, 0);
    for (stream, answer) in inits_together(gateway.addr, "flood", FLOOD as usize).await {
        match answer {
            Answer::Accepted => admitted.push(stream),
            Answer::Refused(reason) => {
                assert!(reason.contains("the server is full"), "{reason}");
                refused_full += 1;
            }
            Answer::Closed => closed += 1,
        }
    }
    let admitted_n = admitted.len() as u64;
    let during = gateway.metrics().await;
    assert_eq!(admitted_n, LIMIT - 2, "the flood fills exactly the room the two steady clients leave");
    assert_eq!(during.get("rivulet_connections"), LIMIT, "the limit holds");
    assert_eq!(during.get("rivulet_connections_refused_total"), FLOOD - admitted_n, "every other one counted");
    assert_eq!(refused_full + closed, FLOOD - admitted_n);
    // A well-behaved newcomer is refused while the flood holds the room: with the reason, or
    // closed at once while refused flood connections are still finishing their close.
    match within("a client during the flood", connect(gateway.addr, ClientOptions::new("during"))).await {
        Err(ClientError::Refused(reason)) => assert!(reason.contains("full"), "{reason}"),
        Err(closed) => assert!(matches!(closed, ClientError::Disconnected | ClientError::Io(_)), "{closed:?}"),
        Ok(_) => panic!("a client got in beyond the limit"),
    }

    // The flood ends: the first newcomer after it gets in once the gateway has seen the closes.
    drop(admitted);
    let ended = Instant::now();
    let (newcomer, _) = within("a client after the flood", async {
        loop {
            match connect(gateway.addr, ClientOptions::new("after-flood")).await {
                Ok(connected) => break connected,
                // Still full until the gateway has seen the flood's connections close.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    let recovered = ended.elapsed();
    register_all(&newcomer, "after/flood", 10).await;
    let status = gateway.status().await;
    let names: Vec<&str> =
        status["clients"].as_array().expect("clients").iter().filter_map(|c| c["name"].as_str()).collect();
    assert!(!names.iter().any(|name| name.starts_with("flood-")), "the flood is gone: {names:?}");
    for name in ["steady-sub", "steady-pub", "after-flood"] {
        assert!(names.contains(&name), "{name} is connected: {names:?}");
    }
    newcomer.close().await;
    let steady_run = steady.finish().await;
    let refused = gateway.metrics().await.get("rivulet_connections_refused_total");
    gateway.stop();
    println!(
        "flood: {FLOOD} connections against {LIMIT}: {admitted_n} admitted, {refused_full} refused as full, \
         {closed} closed at once; refused counter {refused}; a new client got in {recovered:?} after the flood; \
         {steady_run}"
    );
}

/// A client that asks for the longest keepalive there is (`u32::MAX` ms, 50 days) and goes
/// silent gets the gateway's longest (`--max-keepalive-s`), is counted, and is closed after twice
/// that: with `--max-connections 1` the place comes free for the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_cannot_ask_for_a_keepalive_longer_than_the_gateways_longest() {
    let gateway = Gateway::start(&["--max-connections", "1", "--max-keepalive-s", "1"]);
    let mut stream = within("connect", TcpStream::connect(gateway.addr)).await.expect("a TCP connection");
    let forever = rivulet_core::time::Duration::from_millis(u64::from(u32::MAX));
    let (_, init) = client_machine_with("forever", forever);
    stream.write_all(&init).await.expect("send the init");
    assert_eq!(read_answer(&mut stream, "forever").await, Answer::Accepted);
    gateway.clients_become(1).await;
    assert_eq!(gateway.metrics().await.get("rivulet_keepalive_capped_total"), 1);
    // Silent from here on (the gateway's pings go unanswered): it ends the link after about
    // 2 s, not 100 days, and the place is free again.
    let mut sink = [0u8; 1024];
    within("the gateway closing the silent client", async {
        while !matches!(stream.read(&mut sink).await, Ok(0) | Err(_)) {}
    })
    .await;
    gateway.clients_become(0).await;
    a_new_client_gets_through(gateway.addr, "next").await;
    gateway.stop();
}

/// The bug the flood found, pinned down: with one place left, eight inits arriving together
/// let in at most one client, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_holds_when_inits_arrive_together() {
    const LIMIT: usize = 100;
    const ROUNDS: usize = 20;
    let gateway = Gateway::start(&["--max-connections", &LIMIT.to_string()]);
    let mut held = Vec::new();
    for i in 0..LIMIT - 1 {
        let (stream, answer) = raw_init(gateway.addr, &format!("held-{i}")).await;
        assert_eq!(answer, Answer::Accepted, "held-{i}");
        held.push(stream);
    }
    let mut admitted_per_round = Vec::new();
    for round in 0..ROUNDS {
        let answers = inits_together(gateway.addr, &format!("round-{round}"), 8).await;
        let admitted = answers.iter().filter(|(_, answer)| *answer == Answer::Accepted).count();
        assert!(admitted <= 1, "round {round}: {admitted} clients admitted to the one place left");
        admitted_per_round.push(admitted);
        drop(answers);
        gateway.clients_become(LIMIT as u64 - 1).await;
    }
    assert!(admitted_per_round.contains(&1), "the place left was taken in some round: {admitted_per_round:?}");
    drop(held);
    gateway.stop();
}

/// Open bug: on plain TCP nothing but the keepalive ends a connection that never sends an init,
/// and any whole packet resets the keepalive, even one the link drops unanswered before an init
/// (a request on an unknown channel). Connections beyond a tenth over `--max-connections` that
/// have not sent an init are closed at once, so that many such connections, each sending a
/// packet of a few bytes every 15 s, shut every new client out for as long as they like. `ServerOptions::
/// handshake_timeout` (10 s) bounds only the TLS handshake. Here twelve of them hold a gateway
/// with `--max-connections 10` past twice the keepalive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_init_do_not_hold_the_gateway_for_good() {
    const LIMIT: usize = 10;
    let gateway = Gateway::start(&["--max-connections", &LIMIT.to_string()]);
    let mut frame = [0u8; 16];
    let mut out = FrameWriter::new(&mut frame, Framing::Stream);
    out.push_repr(&rivulet_core::wire::PacketRepr::request(7, 1, 0, 0, &[])).expect("a tiny packet");
    let packet = out.pending().to_vec();
    let mut holders = JoinSet::new();
    for _ in 0..LIMIT + LIMIT / 10 + 1 {
        let (addr, packet) = (gateway.addr, packet.clone());
        holders.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            while stream.write_all(&packet).await.is_ok() {
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
        });
    }
    // The gateway drops a connection without an accepted init after 10 s (the server's
    // `init_timeout`), whatever it sends meanwhile.
    let waited = Duration::from_secs(10 + 5);
    tokio::time::sleep(waited).await;
    let newcomer = within("a client", connect(gateway.addr, ClientOptions::new("newcomer"))).await;
    assert!(
        newcomer.is_ok(),
        "{} connections that never sent an init still shut a new client out after {waited:?}: {:?}",
        LIMIT + LIMIT / 10 + 1,
        newcomer.err()
    );
    let metrics = gateway.metrics().await;
    assert!(metrics.get("rivulet_handshakes_failed_total") >= (LIMIT + LIMIT / 10 + 1) as u64, "counted");
    holders.abort_all();
    gateway.stop();
}

/// Registers `count` events of `ty`, each a `size`-byte binary payload starting with its number,
/// and waits until all are stored.
async fn publish_blobs(addr: SocketAddr, ty: String, count: u64, size: usize) -> Client {
    let (client, _) =
        within("a publisher", connect(addr, ClientOptions::new(ty.replace('/', "-")))).await.expect("connect");
    let mut last = None;
    for n in 0..count {
        let mut data = vec![0x5a; size];
        data[..8].copy_from_slice(&n.to_be_bytes());
        let event = RegisterEvent::new(ty.as_str(), Some(Payload::Binary { kind: "blob".into(), data }));
        last = Some(within("register a blob", client.register(event)).await.expect("register"));
    }
    within("the blobs stored", client.registered(last.expect("at least one"))).await.expect("stored");
    client
}

/// Five subscribers that never read, with `--notify-queue 64`, while 50 MiB of events go to them:
/// each is cut off with the reason and counted, the others are not slowed, and the gateway's
/// memory grows by what its store caches, not by what the slow ones did not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_are_cut_off_and_memory_stays_bounded() {
    const QUEUE: u64 = 64;
    const SLOW: usize = 5;
    const WINDOW: u16 = 8;
    // 15,000 bytes rather than 16 KiB: with 16 KiB payloads the store file grew by 2.7 times the
    // data (redb's cache with it), with 15,000 by 1.4 times, which keeps the bound below tight.
    const EVENT: usize = 15_000;
    const EVENTS: u64 = 3500; // 50 MiB
    const PUBLISHERS: u64 = 4;
    let gateway = Gateway::start(&["--notify-queue", &QUEUE.to_string()]);
    let steady = Steady::start(&gateway, "slow").await;
    let mut slow = Vec::new();
    for i in 0..SLOW {
        let options = ClientOptions {
            subscriptions: vec!["bulk/*".into()],
            window: WINDOW,
            events: 8,
            ..ClientOptions::new(format!("slow-{i}"))
        };
        // Their events are kept, never read.
        slow.push(within("a slow subscriber", connect(gateway.addr, options)).await.expect("connect"));
    }
    let store_before = gateway.metrics().await.get("rivulet_store_bytes");
    let (rss_before, _) = gateway.memory_kib();

    let mut publishing = JoinSet::new();
    for p in 0..PUBLISHERS {
        publishing.spawn(publish_blobs(gateway.addr, format!("bulk/{p}"), EVENTS / PUBLISHERS, EVENT));
    }
    let mut publishers = Vec::new();
    while let Some(publisher) = publishing.join_next().await {
        publishers.push(publisher.expect("a publisher"));
    }
    for (client, _events) in &slow {
        let reason = within("the slow one is told why", async {
            loop {
                match client.close_reason() {
                    Some(reason) => break reason,
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        assert!(reason.contains(&format!("fell {QUEUE} notifications behind")), "{reason}");
    }
    let (rss_after, peak) = gateway.memory_kib();
    let metrics = gateway.metrics().await;
    let cut_off = metrics.get("rivulet_slow_clients_total");
    assert!(cut_off >= SLOW as u64, "each slow one counted when cut off: {cut_off}");
    let by_fanout = metrics.get("rivulet_subscribers_cut_off_total");
    assert!(by_fanout >= SLOW as u64, "and by the broker's fan-out: {by_fanout}");
    let store_grown = metrics.get("rivulet_store_bytes") - store_before;
    // The bound. What the slow subscribers may cost the gateway: each has at most QUEUE
    // notifications queued (the events themselves, shared between them) and WINDOW in flight,
    // plus its two link buffers (max_packet + 16 bytes each): about 6 MiB for the five. Besides,
    // redb keeps every page it writes in its cache (up to 1 GiB by default), so the gateway's
    // memory follows what it stores, by at most what the store file grew. 16 MiB more covers the
    // allocator and the other clients. An unbounded queue would hold the 50 MiB the slow ones did
    // not read on top: with `--notify-queue 1000000` instead of 64, RSS grew by 110 MiB against
    // a bound of 90 MiB, where the bounded queue grew it by 60 MiB (docs/RELIABILITY.md).
    let queues = SLOW as u64 * ((QUEUE + u64::from(WINDOW)) * EVENT as u64 + 2 * (64 * 1024 + 16));
    let bound_kib = (store_grown + queues) / 1024 + 16 * 1024;
    let grown = peak.saturating_sub(rss_before);
    assert!(
        grown <= bound_kib,
        "RSS peaked {grown} KiB above the {rss_before} KiB before; bound {bound_kib} KiB \
         (store grew {} KiB, queues {} KiB)",
        store_grown / 1024,
        queues / 1024
    );

    // Every blob is stored once: the count, and each publisher's last one is its latest.
    let steady_run = steady.finish().await;
    assert_eq!(gateway.metrics().await.get("rivulet_store_events"), EVENTS + steady_run.events);
    for (p, publisher) in publishers.iter().enumerate() {
        let ty = format!("bulk/{p}");
        let latest = Query::Latest { event_types: Some(vec![ty.as_str().into()]) };
        let latest = within("latest", publisher.query(latest)).await.expect("an answer");
        assert_eq!(latest.events.iter().map(number).collect::<Vec<_>>(), vec![EVENTS / PUBLISHERS - 1], "{ty}");
    }
    for publisher in publishers {
        publisher.close().await;
    }
    // Not closed one by one: a rivulet-tokio client whose application does not read never gets
    // past handing it the events it holds, so its close waits out the request timeout (10 s).
    drop(slow);
    gateway.stop();
    println!(
        "slow consumers: {SLOW} never reading, {} MiB published; cut off {cut_off} times; RSS {rss_before} KiB \
         before, {rss_after} KiB after, peak {peak} KiB (grew {grown} KiB, bound {bound_kib} KiB; store grew \
         {} KiB); {steady_run}",
        (EVENTS * EVENT as u64) >> 20,
        store_grown / 1024
    );
}

/// Open bug, found while checking the slow consumers' blobs: a timeseries page is read whole from
/// the store (up to `broker::PAGE_LIMIT`, 1000 events) before the server cuts the answer to what
/// fits one packet. With large events that is up to 1000 × `--max-packet` bytes held per query,
/// and a client may have 256 requests in flight: concurrent queries make the gateway's memory
/// follow them, not what it can answer. Here four queries over 500 stored events of 30 KB each
/// get two events apiece (what fits 64 KiB), while the gateway reads all 15 MB for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_queries_hold_no_more_than_they_can_answer() {
    const EVENT: usize = 30_000;
    const QUERIES: usize = 4;
    let gateway = Gateway::start(&[]);
    let mut publishing = JoinSet::new();
    for p in 0..2 {
        publishing.spawn(publish_blobs(gateway.addr, format!("big/{p}"), 250, EVENT));
    }
    while let Some(publisher) = publishing.join_next().await {
        publisher.expect("a publisher").close().await;
    }
    // Publishing had its own peak: what counts is how far the queries raise it.
    let (_, peak_before) = gateway.memory_kib();
    // Queries over 15 MB take a while in a debug build.
    let patient = ClientOptions { request_timeout: PATIENCE, ..ClientOptions::new("querier") };
    let (client, _) = within("a querier", connect(gateway.addr, patient)).await.expect("connect");
    let client = Arc::new(client);
    let mut queries = JoinSet::new();
    for _ in 0..QUERIES {
        let client = client.clone();
        queries.spawn(async move {
            let everything =
                Query::Timeseries(TimeseriesQuery { order: Order::Ascending, ..TimeseriesQuery::default() });
            within("a page", client.query(everything)).await.expect("an answer").events.len()
        });
    }
    while let Some(answered) = queries.join_next().await {
        assert!(answered.expect("a query") < 3, "at most two 30 KB events fit an answer of 64 KiB");
    }
    let (_, peak) = gateway.memory_kib();
    // Each answer is at most 64 KiB; 8 MiB covers them and the allocator many times over.
    let grown = peak.saturating_sub(peak_before);
    assert!(
        grown < 8 * 1024,
        "{QUERIES} queries answered with 64 KiB each made the gateway's RSS peak {grown} KiB higher"
    );
    gateway.stop();
}
