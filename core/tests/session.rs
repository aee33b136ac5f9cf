//! In-process tests of the session machines: a [`Client`] and a "gateway" (a
//! [`ServerConnection`] plus the application around it: stored events, a session table) joined by
//! byte pipes carrying stream-framed packets, on a virtual clock. Nothing here does I/O.
//!
//! The harness pumps until nothing moves: both machines `poll`, both `poll_transmit`, the bytes
//! go through each peer's [`StreamDecoder`], every body goes to `handle`, and the gateway reacts
//! to what its connection reports the way a real gateway would (accept with the session's
//! `next_seq`, store registrations, answer queries). Events are copied into owned values so that
//! tests can look at them after the machines moved on.

use proptest::prelude::*;
use rivulet_core::model::{
    Event, EventId, EventList, EventPayload, EventPayloadRef, EventType, ListBuilder, QueryLatest, QueryParams,
    QueryResult, RegisterEventRef, Status, Timestamp, TypeList,
};
use rivulet_core::session::message::{CHANNEL_APP, CHANNEL_SESSION, FLAG_ONE_WAY, PROTOCOL_VERSION, RegisterList};
use rivulet_core::session::{
    Accepted, Arrival, Client, ClientConfig, ClientEvent, Error, Incoming, Limits, LinkEnd, MessageKind, Reply,
    RequestError, RequestId, ServerConfig, ServerConnection, ServerEvent, SessionTable,
};
use rivulet_core::time::{Duration, Instant};
use rivulet_core::wire::{self, FrameDecoder, FrameWriter, Framing, Packet, PacketKind, PacketRepr, StreamDecoder};

// ---------------------------------------------------------------------------------------------
// Owned copies of what the machines report
// ---------------------------------------------------------------------------------------------

/// Types up to 128 bytes: longer than the machines' aliased types (64), to see inline types.
type OwnedEvent = Event<128, 256>;
type TestClient<const OUTBOX: usize> = Client<'static, [u8; OUTBOX], 4, 8, 256>;
type TestServer = ServerConnection<8, 64>;

/// Transmit buffer of one `poll_transmit` / application write.
const TX_BUF: usize = 16 * 1024;
/// Receive buffer of each side's stream decoder.
const RX_BUF: usize = 16 * 1024;

/// A registration as the gateway stored it (or as the test expects it).
#[derive(Debug, Clone, PartialEq)]
struct Reg {
    ty: String,
    source_timestamp: Option<Timestamp>,
    payload: Option<EventPayload<256>>,
}

impl Reg {
    fn from_ref(event: &RegisterEventRef<'_>) -> Self {
        Reg {
            ty: event.event_type.to_string(),
            source_timestamp: event.source_timestamp,
            payload: event.payload.map(|p| p.to_owned().expect("payload fits")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Query { events: Vec<OwnedEvent>, more_follows: bool },
    Registered(Vec<OwnedEvent>),
    Pong,
    App { flags: u64, payload: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq)]
enum Failure {
    Refused(String),
    TimedOut,
    Disconnected,
}

fn own_events(list: EventList<'_>) -> Vec<OwnedEvent> {
    list.iter().map(|e| e.to_owned().expect("event fits")).collect()
}

fn own_reply(reply: Reply<'_>) -> Answer {
    match reply {
        Reply::Query(result) => Answer::Query { events: own_events(result.events), more_follows: result.more_follows },
        Reply::Registered(list) => Answer::Registered(own_events(list)),
        Reply::Pong { .. } => Answer::Pong,
        Reply::App { flags, payload } => Answer::App { flags, payload: payload.to_vec() },
    }
}

fn own_failure(error: RequestError<'_>) -> Failure {
    match error {
        RequestError::Refused(reason) => Failure::Refused(reason.to_owned()),
        RequestError::TimedOut => Failure::TimedOut,
        RequestError::Disconnected => Failure::Disconnected,
    }
}

fn type_names(list: TypeList<'_>) -> Vec<String> {
    list.iter().map(|t| t.to_string()).collect()
}

/// A [`ClientEvent`], owned.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
enum Ce {
    Connected { resumed: bool, status: Status },
    Challenge(Vec<u8>),
    Refused(String),
    Status(Status),
    Event(OwnedEvent),
    Registered(u32),
    Response(RequestId, Answer),
    Failed(RequestId, Failure),
    Request { from: Incoming, rq_type: u64, flags: u64, payload: Vec<u8> },
    Subscribed,
    SubscriptionRefused(String),
    RegistrationRefused(u32, String),
    Closing(String),
    LinkEnded(LinkEnd),
}

fn own_client(event: ClientEvent<'_>) -> Ce {
    match event {
        ClientEvent::Connected { resumed, status, .. } => Ce::Connected { resumed, status },
        ClientEvent::Challenge { nonce } => Ce::Challenge(nonce.to_vec()),
        ClientEvent::Refused { reason } => Ce::Refused(reason.to_owned()),
        ClientEvent::Status(status) => Ce::Status(status),
        ClientEvent::Event(event) => Ce::Event(event.to_owned().expect("event fits")),
        ClientEvent::Registered { below_seq } => Ce::Registered(below_seq),
        ClientEvent::Response { id, reply } => Ce::Response(id, own_reply(reply)),
        ClientEvent::RequestFailed { id, error } => Ce::Failed(id, own_failure(error)),
        ClientEvent::Request { from, rq_type, flags, payload } => {
            Ce::Request { from, rq_type, flags, payload: payload.to_vec() }
        }
        ClientEvent::Subscribed => Ce::Subscribed,
        ClientEvent::SubscriptionRefused { reason } => Ce::SubscriptionRefused(reason.to_owned()),
        ClientEvent::RegistrationRefused { seq, reason } => Ce::RegistrationRefused(seq, reason.to_owned()),
        ClientEvent::Closing { reason } => Ce::Closing(reason.to_owned()),
        ClientEvent::LinkEnded(end) => Ce::LinkEnded(end),
    }
}

/// What the gateway saw of an init.
#[derive(Debug, Clone, PartialEq)]
struct InitSeen {
    from: Incoming,
    client_name: String,
    credential: Option<Vec<u8>>,
    session: Option<u64>,
    first_seq: u32,
    subscriptions: Vec<String>,
    keepalive_ms: u32,
    window: u16,
}

/// A [`ServerEvent`], owned.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
enum Se {
    Init(InitSeen),
    Subscribe { from: Incoming, subscriptions: Vec<String> },
    Register { seq: u32, event: Reg },
    RegisterRequest { from: Incoming, events: Vec<Reg> },
    Query { from: Incoming },
    Request { from: Incoming, rq_type: u64, flags: u64, payload: Vec<u8> },
    Acked(u32),
    Response(RequestId, Answer),
    Failed(RequestId, Failure),
    LinkEnded(LinkEnd),
}

fn own_server(event: ServerEvent<'_>) -> Se {
    match event {
        ServerEvent::Init { from, request } => Se::Init(InitSeen {
            from,
            client_name: request.client_name.to_owned(),
            credential: request.credential.map(<[u8]>::to_vec),
            session: request.session,
            first_seq: request.first_seq,
            subscriptions: type_names(request.subscriptions),
            keepalive_ms: request.keepalive_ms,
            window: request.limits.window,
        }),
        ServerEvent::Subscribe { from, subscriptions } => {
            Se::Subscribe { from, subscriptions: type_names(subscriptions) }
        }
        ServerEvent::Register { seq, event } => Se::Register { seq, event: Reg::from_ref(&event) },
        ServerEvent::RegisterRequest { from, events } => {
            Se::RegisterRequest { from, events: events.iter().map(|e| Reg::from_ref(&e)).collect() }
        }
        ServerEvent::Query { from, .. } => Se::Query { from },
        ServerEvent::Request { from, rq_type, flags, payload } => {
            Se::Request { from, rq_type, flags, payload: payload.to_vec() }
        }
        ServerEvent::Acked { count } => Se::Acked(count),
        ServerEvent::Response { id, reply } => Se::Response(id, own_reply(reply)),
        ServerEvent::RequestFailed { id, error } => Se::Failed(id, own_failure(error)),
        ServerEvent::LinkEnded(end) => Se::LinkEnded(end),
    }
}

// ---------------------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------------------

/// One event a test registers; `sample(i)` is a mix of types and payload kinds.
#[derive(Debug, Clone)]
struct Sample {
    ty: EventType,
    source: Option<Timestamp>,
    json: Option<String>,
    binary: Option<Vec<u8>>,
}

fn ty(path: &str) -> EventType {
    EventType::parse_path(path).expect("valid type")
}

fn sample(i: usize) -> Sample {
    let types = ["sensor/t", "sensor/h", "door/front/open"];
    let mut s = Sample { ty: ty(types[i % 3]), source: None, json: None, binary: None };
    match i % 3 {
        0 => s.json = Some(format!("{{\"i\":{i},\"v\":{}}}", i * 7)),
        1 => s.binary = Some((i as u64).to_le_bytes().to_vec()),
        _ => s.source = Some(Timestamp { s: 1_700_000_000 + i as i64, us: (i as u32 * 1000) % 1_000_000 }),
    }
    s
}

impl Sample {
    fn payload(&self) -> Option<EventPayloadRef<'_>> {
        match (&self.json, &self.binary) {
            (Some(json), _) => Some(EventPayloadRef::Json(json)),
            (None, Some(data)) => Some(EventPayloadRef::Binary { kind: "le-u64", data }),
            (None, None) => None,
        }
    }

    fn reg(&self) -> Reg {
        Reg {
            ty: self.ty.to_string(),
            source_timestamp: self.source,
            payload: self.payload().map(|p| p.to_owned().expect("payload fits")),
        }
    }

    fn register<const O: usize>(&self, client: &mut TestClient<O>) -> Result<u32, Error> {
        client.register(self.ty.as_ref(), self.source, self.payload())
    }
}

/// An event as a gateway would notify it.
fn notification(instance: u64, path: &str, text: &str) -> OwnedEvent {
    let payload = EventPayloadRef::Json(text).to_owned().expect("payload fits");
    Event {
        id: EventId { server: 1, session: 7, instance },
        event_type: EventType::parse_path(path).expect("valid type"),
        timestamp: Timestamp { s: 1_700_000_000 + instance as i64, us: 0 },
        source_timestamp: None,
        payload: Some(payload),
    }
}

/// The body of one packet.
fn body_of(repr: &PacketRepr<'_>) -> Vec<u8> {
    let mut body = vec![0; repr.buffer_len().expect("representable")];
    repr.emit(&mut body).expect("fits");
    body
}

/// Splits stream-framed bytes into whole frames (prefix included).
fn frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, prefix) = wire::varint::decode(bytes).expect("length prefix");
        let end = prefix + len as usize;
        out.push(bytes[..end].to_vec());
        bytes = &bytes[end..];
    }
    out
}

/// Calls `f` with a fresh transmit buffer and appends what it wrote to `pipe`.
fn write_with<T>(pipe: &mut Vec<u8>, f: impl FnOnce(&mut FrameWriter<'_>) -> T) -> T {
    let mut buf = vec![0u8; TX_BUF];
    let mut writer = FrameWriter::new(&mut buf, Framing::Stream);
    let result = f(&mut writer);
    pipe.extend_from_slice(writer.pending());
    result
}

/// A small deterministic PRNG (xorshift64), so the loss tests need no extra crate.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway: a server connection and the application around it
// ---------------------------------------------------------------------------------------------

struct Gateway {
    server: Option<TestServer>,
    config: ServerConfig,
    server_id: u64,
    server_session: u64,
    status: Status,
    /// Keepalive the gateway answers with; `None` takes the client's proposal.
    keepalive_ms: Option<u32>,
    /// Durable session table: session id -> sequence number of the next registration to store.
    sessions: SessionTable<64>,
    next_session: u64,
    /// Session of the current connection, once accepted.
    session: Option<u64>,
    /// Every registration stored: (session, seq, event).
    stored: Vec<(u64, u32, Reg)>,
    /// Events with ids (stored registrations and register-with-response), for queries.
    history: Vec<OwnedEvent>,
    /// Registrations whose sequence number was not the next one of their session.
    anomalies: Vec<String>,
    /// With `auto_ack` off: registrations stored and not yet acknowledged (acknowledged one
    /// pump round later, as a gateway does once a batch is durable).
    unacked: u32,
    refuse_init: Option<&'static str>,
    refuse_subscribe: Option<&'static str>,
    /// Registrations of this type are taken but refused (not stored) with the reason.
    refuse_type: Option<(&'static str, &'static str)>,
    /// (nonce, proof): challenge every init whose credential is not the proof.
    challenge: Option<(Vec<u8>, Vec<u8>)>,
    /// Everything the connection reported, in order.
    events: Vec<Se>,
    /// Errors from `handle`, `poll_transmit` and the decoder.
    errors: Vec<Error>,
}

impl Gateway {
    fn new(config: ServerConfig) -> Self {
        Gateway {
            server: None,
            config,
            server_id: 1,
            server_session: 7,
            status: Status::Operational,
            keepalive_ms: None,
            sessions: SessionTable::new(),
            next_session: 100,
            session: None,
            stored: Vec::new(),
            history: Vec::new(),
            anomalies: Vec::new(),
            unacked: 0,
            refuse_init: None,
            refuse_subscribe: None,
            refuse_type: None,
            challenge: None,
            events: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn server(&mut self) -> &mut TestServer {
        self.server.as_mut().expect("a server connection")
    }

    fn stored_regs(&self) -> Vec<Reg> {
        self.stored.iter().map(|(_, _, reg)| reg.clone()).collect()
    }

    fn add_history(&mut self, reg: &Reg) -> OwnedEvent {
        let instance = self.history.len() as u64 + 1;
        let event = Event {
            id: EventId { server: self.server_id, session: self.server_session, instance },
            event_type: EventType::parse_path(&reg.ty).expect("valid type"),
            timestamp: Timestamp { s: 1_800_000_000 + instance as i64, us: 0 },
            source_timestamp: reg.source_timestamp,
            payload: reg.payload.clone(),
        };
        self.history.push(event.clone());
        event
    }

    /// One body from the client.
    fn receive(&mut self, now: Instant, body: &[u8], out: &mut Vec<u8>) {
        let Some(server) = self.server.as_mut() else { return };
        let event = match server.handle(now, body) {
            Ok(Some(event)) => own_server(event),
            Ok(None) => return,
            Err(error) => {
                self.errors.push(error);
                return;
            }
        };
        self.react(&event, out);
        self.events.push(event);
    }

    /// What the application does about an event.
    fn react(&mut self, event: &Se, out: &mut Vec<u8>) {
        let Some(server) = self.server.as_mut() else { return };
        match event {
            Se::Init(init) => {
                if let Some(reason) = self.refuse_init {
                    write_with(out, |w| server.refuse(init.from, reason, w)).expect("refuse");
                    return;
                }
                if let Some((nonce, proof)) = &self.challenge
                    && init.credential.as_deref() != Some(proof.as_slice())
                {
                    write_with(out, |w| server.challenge(init.from, nonce, w)).expect("challenge");
                    return;
                }
                let next_session = &mut self.next_session;
                let new_id = || {
                    *next_session += 1;
                    *next_session - 1
                };
                let (session, next_seq) =
                    self.sessions.resolve(init.session, init.first_seq, new_id).expect("room for the session");
                self.session = Some(session);
                let accepted = Accepted {
                    version: PROTOCOL_VERSION,
                    capabilities: 0,
                    status: self.status,
                    server_id: self.server_id,
                    server_session: self.server_session,
                    session,
                    next_seq,
                    limits: Limits {
                        window: self.config.window,
                        aliases: self.config.aliases,
                        max_packet: self.config.max_packet,
                    },
                    keepalive_ms: self.keepalive_ms.unwrap_or(init.keepalive_ms),
                };
                write_with(out, |w| server.accept(init.from, &accepted, w)).expect("accept");
            }
            Se::Register { seq, event } => {
                let session = self.session.expect("a register before the init was accepted");
                self.unacked += 1;
                let arrival = self.sessions.arrive(session, *seq);
                if arrival != Some(Arrival::Fresh) {
                    // Stored anyway, so a test sees what a broken machine sent.
                    self.anomalies.push(format!("session {session}: seq {seq} is {arrival:?}"));
                }
                if let Some((_, reason)) = self.refuse_type.filter(|(ty, _)| *ty == event.ty) {
                    write_with(out, |w| server.refuse_registration(*seq, reason, w)).expect("refusal");
                    return;
                }
                self.stored.push((session, *seq, event.clone()));
                self.add_history(event);
            }
            Se::Subscribe { from, .. } => {
                let result = match self.refuse_subscribe {
                    Some(reason) => write_with(out, |w| server.refuse(*from, reason, w)),
                    None => write_with(out, |w| server.respond_raw(*from, 0, &[], w)),
                };
                result.expect("subscribe answer");
            }
            Se::Query { from } => {
                let mut buf = vec![0u8; TX_BUF];
                let mut list = ListBuilder::new(&mut buf);
                for event in &self.history {
                    list.push(&event.as_ref()).expect("list fits");
                }
                let result = QueryResult { events: list.finish(), more_follows: false };
                write_with(out, |w| server.respond(*from, &result, w)).expect("query answer");
            }
            Se::RegisterRequest { from, events } => {
                let registered: Vec<OwnedEvent> = events.iter().map(|reg| self.add_history(reg)).collect();
                let mut buf = vec![0u8; TX_BUF];
                let mut list = ListBuilder::new(&mut buf);
                for event in &registered {
                    list.push(&event.as_ref()).expect("list fits");
                }
                let list: EventList<'_> = list.finish();
                let server = self.server.as_mut().expect("a server connection");
                write_with(out, |w| server.respond(*from, &list, w)).expect("register answer");
            }
            // Application requests are answered by the tests themselves.
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

struct Harness<const OUTBOX: usize = 8192> {
    now: Instant,
    client: TestClient<OUTBOX>,
    gw: Gateway,
    /// Bytes written by the client (server), not yet delivered.
    c2s: Vec<u8>,
    s2c: Vec<u8>,
    server_rx: StreamDecoder<'static>,
    client_rx: StreamDecoder<'static>,
    /// Bytes each direction still carries; the rest is lost (the link was cut). `usize::MAX`:
    /// a perfect link.
    c2s_budget: usize,
    s2c_budget: usize,
    /// What the client reported, in order.
    events: Vec<Ce>,
    client_errors: Vec<Error>,
    /// Every body delivered each way.
    to_server: Vec<Vec<u8>>,
    to_client: Vec<Vec<u8>>,
}

fn decoder() -> StreamDecoder<'static> {
    StreamDecoder::new(Box::leak(vec![0u8; RX_BUF].into_boxed_slice()))
}

fn server_config() -> ServerConfig {
    ServerConfig { aliases: 64, ..ServerConfig::default() }
}

impl<const OUTBOX: usize> Harness<OUTBOX> {
    fn new(config: ClientConfig<'static>) -> Self {
        Self::with_server(config, server_config())
    }

    fn with_server(config: ClientConfig<'static>, server: ServerConfig) -> Self {
        Harness {
            now: Instant::from_millis(1_000),
            client: Client::new(config, [0; OUTBOX]),
            gw: Gateway::new(server),
            c2s: Vec::new(),
            s2c: Vec::new(),
            server_rx: decoder(),
            client_rx: decoder(),
            c2s_budget: usize::MAX,
            s2c_budget: usize::MAX,
            events: Vec::new(),
            client_errors: Vec::new(),
            to_server: Vec::new(),
            to_client: Vec::new(),
        }
    }

    /// A new transport: a new server connection, clean pipes, `link_up`. Does not pump.
    fn link_up(&mut self) {
        self.c2s.clear();
        self.s2c.clear();
        self.server_rx.reset();
        self.client_rx.reset();
        self.c2s_budget = usize::MAX;
        self.s2c_budget = usize::MAX;
        self.gw.session = None;
        self.gw.unacked = 0;
        self.gw.server = Some(ServerConnection::new(self.now, self.gw.config));
        self.client.link_up(self.now);
    }

    fn connect(&mut self) {
        self.link_up();
        self.run();
    }

    /// The transport is gone, bytes in flight with it.
    fn link_down(&mut self) {
        self.client.link_down();
        self.gw.server = None;
        self.gw.session = None;
        self.c2s.clear();
        self.s2c.clear();
    }

    /// Pumps until nothing moves.
    fn run(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the machines never went quiet");
    }

    /// Moves the clock and pumps.
    fn tick(&mut self, by: Duration) {
        self.now = self.now + by;
        self.run();
    }

    /// One round: timers, transmits, deliveries. Returns whether anything happened.
    fn step(&mut self) -> bool {
        let now = self.now;
        let mut moved = self.poll();
        if let Some(server) = self.gw.server.as_mut()
            && !self.gw.config.auto_ack
            && self.gw.unacked > 0
        {
            server.acknowledge(self.gw.unacked); // the batch is durable now
            moved = true;
        }
        self.gw.unacked = 0;
        let client = &mut self.client;
        if let Err(error) = write_with(&mut self.c2s, |w| client.poll_transmit(now, w)) {
            self.client_errors.push(error);
        }
        if let Some(server) = self.gw.server.as_mut()
            && let Err(error) = write_with(&mut self.s2c, |w| server.poll_transmit(now, w))
        {
            self.gw.errors.push(error);
        }
        // A transmit can end the link (our EOF went out after the peer's): report it now.
        moved |= self.poll();
        moved |= self.deliver_to_server();
        moved |= self.deliver_to_client();
        moved
    }

    /// Both machines' timers, until they have nothing to say.
    fn poll(&mut self) -> bool {
        let mut moved = false;
        while let Some(event) = self.client.poll(self.now) {
            self.events.push(own_client(event.into()));
            moved = true;
        }
        if let Some(server) = self.gw.server.as_mut() {
            while let Some(event) = server.poll(self.now) {
                self.gw.events.push(own_server(event.into()));
                moved = true;
            }
        }
        moved
    }

    fn deliver_to_server(&mut self) -> bool {
        let bytes = through(&mut self.c2s, &mut self.c2s_budget);
        if bytes.is_empty() || self.gw.server.is_none() {
            return false;
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let taken = self.server_rx.push(rest);
            rest = &rest[taken..];
            loop {
                let body = match self.server_rx.next_body() {
                    Ok(Some(body)) => body.to_vec(),
                    Ok(None) => break,
                    Err(error) => {
                        self.gw.errors.push(Error::Wire(error));
                        return true;
                    }
                };
                self.to_server.push(body.clone());
                self.gw.receive(self.now, &body, &mut self.s2c);
            }
            assert!(taken > 0 || rest.is_empty(), "server decoder stalled");
        }
        true
    }

    fn deliver_to_client(&mut self) -> bool {
        let bytes = through(&mut self.s2c, &mut self.s2c_budget);
        if bytes.is_empty() {
            return false;
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let taken = self.client_rx.push(rest);
            rest = &rest[taken..];
            loop {
                let body = match self.client_rx.next_body() {
                    Ok(Some(body)) => body.to_vec(),
                    Ok(None) => break,
                    Err(error) => {
                        self.client_errors.push(Error::Wire(error));
                        return true;
                    }
                };
                self.to_client.push(body.clone());
                match self.client.handle(self.now, &body) {
                    Ok(Some(event)) => self.events.push(own_client(event)),
                    Ok(None) => {}
                    Err(error) => self.client_errors.push(error),
                }
            }
            assert!(taken > 0 || rest.is_empty(), "client decoder stalled");
        }
        true
    }

    /// Lets the client write something (a request, a response) onto the link.
    fn client_write<T>(&mut self, f: impl FnOnce(&mut TestClient<OUTBOX>, Instant, &mut FrameWriter<'_>) -> T) -> T {
        let (client, now) = (&mut self.client, self.now);
        write_with(&mut self.c2s, |w| f(client, now, w))
    }

    /// Lets the gateway write something (a notification, a response) onto the link.
    fn server_write<T>(&mut self, f: impl FnOnce(&mut TestServer, Instant, &mut FrameWriter<'_>) -> T) -> T {
        let now = self.now;
        let server = self.gw.server.as_mut().expect("a server connection");
        write_with(&mut self.s2c, |w| f(server, now, w))
    }

    fn notify(&mut self, event: &OwnedEvent) -> Result<(), Error> {
        self.server_write(|s, _, w| s.notify(&event.as_ref(), w))
    }

    fn take_events(&mut self) -> Vec<Ce> {
        std::mem::take(&mut self.events)
    }

    fn take_server_events(&mut self) -> Vec<Se> {
        std::mem::take(&mut self.gw.events)
    }

    fn delivered(&self) -> Vec<OwnedEvent> {
        self.events.iter().filter_map(|e| if let Ce::Event(e) = e { Some(e.clone()) } else { None }).collect()
    }

    /// The application requests the gateway received, in order.
    fn server_requests(&self) -> Vec<(Incoming, Vec<u8>)> {
        let requests = self.gw.events.iter();
        requests
            .filter_map(
                |e| if let Se::Request { from, payload, .. } = e { Some((*from, payload.clone())) } else { None },
            )
            .collect()
    }

    fn assert_clean(&self) {
        assert!(self.client_errors.is_empty(), "client errors: {:?}", self.client_errors);
        assert!(self.gw.errors.is_empty(), "gateway errors: {:?}", self.gw.errors);
        assert!(self.gw.anomalies.is_empty(), "gateway anomalies: {:?}", self.gw.anomalies);
    }
}

/// Takes what a pipe holds, as far as the budget goes; the rest is lost.
fn through(pipe: &mut Vec<u8>, budget: &mut usize) -> Vec<u8> {
    let mut bytes = std::mem::take(pipe);
    let keep = bytes.len().min(*budget);
    bytes.truncate(keep);
    *budget -= keep;
    bytes
}

fn decode_bodies(bodies: &[Vec<u8>]) -> Vec<PacketRepr<'_>> {
    bodies.iter().map(|b| PacketRepr::parse_bytes(b).expect("valid packet")).collect()
}

fn is_session_request(repr: &PacketRepr<'_>, kind: MessageKind) -> bool {
    repr.channel == CHANNEL_SESSION
        && matches!(repr.kind, PacketKind::Request { rq_type, .. } if rq_type == kind as u64)
}

fn config(name: &'static str) -> ClientConfig<'static> {
    ClientConfig::new(name)
}

// ---------------------------------------------------------------------------------------------
// 1. Handshake and registration
// ---------------------------------------------------------------------------------------------

#[test]
fn handshake_then_100_registrations_arrive_once_in_order() {
    let mut h = Harness::<8192>::new(config("dev-1"));
    h.connect();
    h.assert_clean();

    assert_eq!(h.take_events(), vec![Ce::Connected { resumed: false, status: Status::Operational }]);
    let session = h.gw.session.expect("gateway assigned a session");
    assert_eq!(h.client.session_id(), Some(session));
    assert!(h.client.is_connected());
    assert_eq!(h.client.status(), Status::Operational);
    let init = match h.gw.events.first() {
        Some(Se::Init(init)) => init.clone(),
        other => panic!("expected an init, got {other:?}"),
    };
    assert_eq!(init.client_name, "dev-1");
    assert_eq!(init.session, None);
    assert_eq!(init.first_seq, 0);
    assert!(h.gw.server().is_open());

    let samples: Vec<Sample> = (0..100).map(sample).collect();
    for (i, s) in samples.iter().enumerate() {
        assert_eq!(s.register(&mut h.client), Ok(i as u32));
        if i % 17 == 0 {
            h.run(); // some go out while others are still being registered
        }
    }
    h.run();
    h.assert_clean();

    let expected: Vec<Reg> = samples.iter().map(Sample::reg).collect();
    assert_eq!(h.gw.stored_regs(), expected, "every event exactly once, in order, with type and payload");
    let seqs: Vec<u32> = h.gw.stored.iter().map(|(_, seq, _)| *seq).collect();
    assert_eq!(seqs, (0..100).collect::<Vec<_>>());
    assert!(h.gw.stored.iter().all(|(s, _, _)| *s == session));
    assert_eq!(h.client.outbox_len(), 0);
    assert_eq!(h.client.outbox_bytes(), 0);
    assert_eq!(h.client.next_seq(), 100);
    assert_eq!(h.client.stats().registered, 100);
    let registered: Vec<u32> =
        h.events.iter().filter_map(|e| if let Ce::Registered(below) = e { Some(*below) } else { None }).collect();
    assert_eq!(registered.last(), Some(&100));
    assert!(registered.windows(2).all(|w| w[0] < w[1]), "acks only move forward: {registered:?}");

    // Three types: three declarations, then every registration by alias.
    let to_server = decode_bodies(&h.to_server);
    assert_eq!(to_server.iter().filter(|r| is_session_request(r, MessageKind::Declare)).count(), 3);
    let registers: Vec<_> = to_server.iter().filter(|r| is_session_request(r, MessageKind::Register)).collect();
    assert_eq!(registers.len(), 100);
    assert!(registers.iter().all(|r| (1..=3).contains(&r.tag)), "registers carry their alias");

    // A status change reaches the client.
    let mut out = Vec::new();
    let server = h.gw.server();
    write_with(&mut out, |w| server.set_status(Status::Stopping, w)).unwrap();
    h.s2c.extend(out);
    h.run();
    assert_eq!(h.take_events().last(), Some(&Ce::Status(Status::Stopping)));
    assert_eq!(h.client.status(), Status::Stopping);
}

#[test]
fn refused_init_closes_the_link() {
    let mut h = Harness::<1024>::new(config("intruder"));
    h.gw.refuse_init = Some("unknown client");
    h.connect();
    h.assert_clean();
    let events = h.take_events();
    assert_eq!(events, vec![Ce::Refused("unknown client".into()), Ce::LinkEnded(LinkEnd::Closed)]);
    assert_eq!(h.gw.events.last(), Some(&Se::LinkEnded(LinkEnd::Closed)));
    assert!(!h.client.is_connected());
    assert_eq!(h.client.session_id(), None);
}

#[test]
fn challenge_then_proof_connects() {
    let mut h = Harness::<1024>::new(ClientConfig { credential: Some(b"token"), ..config("dev") });
    h.gw.challenge = Some((b"nonce-1".to_vec(), b"proof-1".to_vec()));
    h.connect();
    assert_eq!(h.take_events(), vec![Ce::Challenge(b"nonce-1".to_vec())]);
    h.client.answer_challenge(b"proof-1").unwrap();
    h.run();
    h.assert_clean();
    assert_eq!(h.take_events(), vec![Ce::Connected { resumed: false, status: Status::Operational }]);
    let credentials: Vec<_> =
        h.gw.events
            .iter()
            .filter_map(|e| if let Se::Init(i) = e { Some(i.credential.clone()) } else { None })
            .collect();
    assert_eq!(credentials, vec![Some(b"token".to_vec()), Some(b"proof-1".to_vec())]);
    assert_eq!(h.client.answer_challenge(b"again"), Err(Error::Protocol), "no challenge pending");
}

#[test]
fn an_unanswered_init_ends_the_link() {
    let mut h = Harness::<1024>::new(ClientConfig { request_timeout: Duration::from_secs(3), ..config("dev") });
    h.link_up();
    h.c2s_budget = 0; // the init never arrives
    h.run();
    h.tick(Duration::from_millis(2_999));
    assert!(h.take_events().is_empty());
    h.tick(Duration::from_millis(1));
    assert_eq!(h.take_events(), vec![Ce::LinkEnded(LinkEnd::TimedOut)], "no request of the app failed");
    h.link_down();
    h.run();
    assert!(h.take_events().is_empty());
    h.connect();
    assert_eq!(h.take_events(), vec![Ce::Connected { resumed: false, status: Status::Operational }]);
}

// ---------------------------------------------------------------------------------------------
// 2. Header size
// ---------------------------------------------------------------------------------------------

/// Asserts `frame` is `len, alias, 0x06, kind + 1, body...` and returns the body.
fn assert_four_byte_header(frame: &[u8], alias: u8, kind: MessageKind) -> Vec<u8> {
    assert_eq!(frame[0] as usize, frame.len() - 1, "one length byte");
    let body = &frame[1..];
    assert_eq!(&body[..3], &[alias, 0x06, kind as u8 + 1], "tag = alias, flagword = one-way request, kind");
    assert_eq!(Packet::new_checked(body).unwrap().header_len(), 3);
    let repr = PacketRepr::parse_bytes(body).unwrap();
    assert_eq!(repr.channel, CHANNEL_SESSION);
    assert_eq!(repr.tag, u64::from(alias));
    assert_eq!(repr.kind, PacketKind::Request { rq_type: kind as u64, flags: FLAG_ONE_WAY });
    repr.payload.to_vec()
}

#[test]
fn notify_and_register_have_four_byte_headers_once_the_alias_is_declared() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();

    // Notify: the first declares the type, the next has a 4-byte header.
    let first = notification(1, "sensor/t", "21.5");
    let second = notification(2, "sensor/t", "21.6");
    h.notify(&first).unwrap();
    let declared = frames(&h.s2c);
    assert_eq!(declared.len(), 2, "declare, then notify");
    let declare = PacketRepr::parse_bytes(&declared[0][1..]).unwrap();
    assert_eq!(declare.tag, 1);
    assert_eq!(declare.kind, PacketKind::Request { rq_type: MessageKind::Declare as u64, flags: FLAG_ONE_WAY });
    assert_four_byte_header(&declared[1], 1, MessageKind::Notify);
    h.run();
    let before = h.s2c.len();
    h.notify(&second).unwrap();
    let sent = frames(&h.s2c[before..]);
    assert_eq!(sent.len(), 1, "no second declaration");
    let payload = assert_four_byte_header(&sent[0], 1, MessageKind::Notify);
    assert_eq!(sent[0].len(), 4 + payload.len());
    h.run();
    h.assert_clean();
    assert_eq!(h.delivered(), vec![first, second]);

    // Register: the same.
    h.client.register(ty("door/open").as_ref(), None, Some(EventPayloadRef::Json("1"))).unwrap();
    h.client_write(|c, now, w| c.poll_transmit(now, w)).unwrap();
    let sent = frames(&h.c2s);
    assert_eq!(sent.len(), 2, "declare, then register");
    assert_four_byte_header(&sent[1], 1, MessageKind::Register);
    h.run();
    h.client.register(ty("door/open").as_ref(), None, Some(EventPayloadRef::Json("0"))).unwrap();
    h.client_write(|c, now, w| c.poll_transmit(now, w)).unwrap();
    let sent = frames(&h.c2s);
    assert_eq!(sent.len(), 1);
    assert_four_byte_header(&sent[0], 1, MessageKind::Register);
    h.run();
    h.assert_clean();
    let stored: Vec<String> = h.gw.stored.iter().map(|(_, _, r)| format!("{}={:?}", r.ty, r.payload)).collect();
    assert_eq!(stored.len(), 2);
    assert_eq!(h.client.outbox_len(), 0);
}

#[test]
fn types_beyond_the_servers_alias_limit_travel_inline() {
    let server = ServerConfig { aliases: 1, ..server_config() };
    let mut h = Harness::<1024>::with_server(config("dev"), server);
    h.connect();
    let samples: Vec<Sample> = (0..6).map(sample).collect();
    for s in &samples {
        s.register(&mut h.client).unwrap();
    }
    h.run();
    h.assert_clean();
    assert_eq!(h.gw.stored_regs(), samples.iter().map(Sample::reg).collect::<Vec<_>>());
    let registers: Vec<u64> = decode_bodies(&h.to_server)
        .iter()
        .filter(|r| is_session_request(r, MessageKind::Register))
        .map(|r| r.tag)
        .collect();
    assert_eq!(registers, vec![1, 0, 0, 1, 0, 0], "alias 1, the others inline");
}

#[test]
fn types_too_long_for_an_alias_travel_inline_both_ways() {
    let mut h = Harness::<2048>::new(config("dev"));
    h.connect();
    h.take_events();
    let long = format!("{}/{}", "a".repeat(40), "b".repeat(40)); // 82 packed bytes > TYPE_BYTES
    let long_type = EventType::<128>::parse_path(&long).unwrap();
    h.client.register(long_type.as_ref(), None, Some(EventPayloadRef::Json("1"))).unwrap();
    h.client.register(long_type.as_ref(), None, Some(EventPayloadRef::Json("2"))).unwrap();
    h.run();
    h.assert_clean();
    let stored: Vec<(String, Option<EventPayload<256>>)> =
        h.gw.stored.iter().map(|(_, _, r)| (r.ty.clone(), r.payload.clone())).collect();
    let json = |t: &str| EventPayloadRef::Json(t).to_owned().ok();
    assert_eq!(stored, vec![(long.clone(), json("1")), (long.clone(), json("2"))]);
    let registers: Vec<u64> = decode_bodies(&h.to_server)
        .iter()
        .filter(|r| is_session_request(r, MessageKind::Register))
        .map(|r| r.tag)
        .collect();
    assert_eq!(registers, vec![0, 0], "subject 0: the type is inline");

    let event = Event {
        id: EventId { server: 1, session: 7, instance: 1 },
        event_type: long_type.clone(),
        timestamp: Timestamp { s: 1, us: 2 },
        source_timestamp: None,
        payload: json("3"),
    };
    h.notify(&event).unwrap();
    let sent = frames(&h.s2c);
    assert_eq!(sent.len(), 1, "no declaration");
    assert_eq!(PacketRepr::parse_bytes(&sent[0][1..]).unwrap().tag, 0, "inline");
    h.run();
    h.assert_clean();
    assert_eq!(h.delivered(), vec![event]);
}

#[test]
fn more_types_than_aliases() {
    let mut h = Harness::<4096>::new(config("dev"));
    h.connect();
    h.take_events();
    // The client holds 8 aliases: types 9 and 10 go inline.
    let samples: Vec<(String, String)> = (0..20).map(|i| (format!("kind/{}", i % 10), format!("{i}"))).collect();
    for (path, text) in &samples {
        h.client.register(ty(path).as_ref(), None, Some(EventPayloadRef::Json(text))).unwrap();
    }
    h.run();
    h.assert_clean();
    let stored: Vec<(String, Option<EventPayload<256>>)> =
        h.gw.stored.iter().map(|(_, _, r)| (r.ty.clone(), r.payload.clone())).collect();
    let expected: Vec<(String, Option<EventPayload<256>>)> =
        samples.iter().map(|(p, t)| (p.clone(), EventPayloadRef::Json(t).to_owned().ok())).collect();
    assert_eq!(stored, expected);
    let tags: Vec<u64> = decode_bodies(&h.to_server)
        .iter()
        .filter(|r| is_session_request(r, MessageKind::Register))
        .map(|r| r.tag)
        .collect();
    assert_eq!(&tags[..10], &[1, 2, 3, 4, 5, 6, 7, 8, 0, 0]);

    // The server may use as many aliases as the client holds (8) and reuses them round-robin.
    let events: Vec<OwnedEvent> =
        (1..=36).map(|i| notification(i, &format!("note/{}", (i * 7) % 12), &format!("{i}"))).collect();
    for event in &events {
        if h.notify(event) == Err(Error::NoCredit) {
            h.run();
            h.notify(event).unwrap();
        }
    }
    h.run();
    h.assert_clean();
    assert_eq!(h.delivered(), events, "every event with its own type");
    assert_eq!(h.client.stats().undeliverable, 0);
    let declares = decode_bodies(&h.to_client).iter().filter(|r| is_session_request(r, MessageKind::Declare)).count();
    assert!(declares > 12, "aliases were reused: {declares} declarations");
    let bodies = decode_bodies(&h.to_client);
    let mut notify_aliases = bodies.iter().filter(|r| is_session_request(r, MessageKind::Notify)).map(|r| r.tag);
    assert!(notify_aliases.all(|alias| (1..=8).contains(&alias)), "within the client's 8 aliases");
}

// ---------------------------------------------------------------------------------------------
// 3. Reconnect with loss
// ---------------------------------------------------------------------------------------------

#[test]
fn reconnects_with_loss_store_every_event_exactly_once() {
    let (mut resumed_links, mut lost_ack_links, mut mid_frame_cuts) = (0, 0, 0);
    for seed in 1..=400u64 {
        let mut rng = XorShift::new(seed);
        let mut h = Harness::<6144>::new(ClientConfig { window: 8, ..config("lossy") });
        if seed % 2 == 0 {
            h.gw.config.window = 1 + rng.below(8) as u16; // a small window: registrations wait for acks
        }
        if seed % 3 == 0 {
            h.gw.config.auto_ack = false; // acks follow the stores, a round later
        }
        let mut samples: Vec<Sample> = Vec::new();
        let register = |h: &mut Harness<6144>, samples: &mut Vec<Sample>, n: u64| {
            for _ in 0..n {
                let s = sample(samples.len());
                assert_eq!(s.register(&mut h.client), Ok(samples.len() as u32), "seed {seed}");
                samples.push(s);
            }
        };
        let cuts = 1 + rng.below(3);
        for link in 0..=cuts {
            let last = link == cuts;
            register(&mut h, &mut samples, rng.below(25));
            let had_session = h.client.session_id().is_some();
            h.events.clear();
            h.link_up();
            if !last {
                h.c2s_budget = rng.below(1200) as usize;
                h.s2c_budget = rng.below(200) as usize;
            }
            for _ in 0..rng.below(6) {
                h.step();
            }
            register(&mut h, &mut samples, rng.below(12));
            h.run();
            let connected: Vec<bool> = h
                .events
                .iter()
                .filter_map(|e| if let Ce::Connected { resumed, .. } = e { Some(*resumed) } else { None })
                .collect();
            if last {
                assert_eq!(connected, vec![had_session], "seed {seed}: the last link connects");
            }
            if let Some(&resumed) = connected.first() {
                assert_eq!(resumed, had_session, "seed {seed} link {link}: resumed iff the session was known");
                resumed_links += usize::from(resumed);
            }
            if !last {
                let acknowledged = h.client.next_seq() - h.client.outbox_len();
                lost_ack_links += usize::from(h.gw.stored.len() as u32 > acknowledged);
                mid_frame_cuts += usize::from(h.server_rx.buffered() > 0);
                h.link_down();
                h.run(); // nothing was in flight but registrations: nothing fails
            }
        }
        h.assert_clean();
        assert!(!h.events.iter().any(|e| matches!(e, Ce::Failed(..))), "seed {seed}");
        let expected: Vec<Reg> = samples.iter().map(Sample::reg).collect();
        let stored = h.gw.stored_regs();
        assert_eq!(stored.len(), expected.len(), "seed {seed}: none lost, none duplicated");
        assert_eq!(stored, expected, "seed {seed}");
        let sessions: std::collections::HashSet<u64> = h.gw.stored.iter().map(|(s, _, _)| *s).collect();
        assert!(sessions.len() <= 1, "seed {seed}: one durable session, got {sessions:?}");
        assert_eq!(h.client.outbox_len(), 0, "seed {seed}");
        assert_eq!(h.client.stats().registered, samples.len() as u64, "seed {seed}");
    }
    // The loop exercised what it is about.
    assert!(resumed_links > 100, "{resumed_links} resumed links");
    assert!(lost_ack_links > 50, "{lost_ack_links} links lost acks of stored events");
    assert!(mid_frame_cuts > 100, "{mid_frame_cuts} cuts in the middle of a packet");
}

#[test]
fn lost_acks_are_settled_by_the_next_init() {
    let mut h = Harness::<4096>::new(config("dev"));
    h.connect();
    let samples: Vec<Sample> = (0..10).map(sample).collect();
    for s in &samples {
        s.register(&mut h.client).unwrap();
    }
    h.s2c_budget = 0; // every ack is lost
    h.run();
    assert_eq!(h.gw.stored.len(), 10, "all stored");
    assert_eq!(h.client.outbox_len(), 10, "none acknowledged");
    h.link_down();
    h.connect();
    h.assert_clean();
    let init = h.gw.events.iter().rev().find_map(|e| if let Se::Init(i) = e { Some(i.clone()) } else { None }).unwrap();
    assert_eq!(init.first_seq, 0);
    assert_eq!(init.session, h.client.session_id());
    assert!(h.events.contains(&Ce::Connected { resumed: true, status: Status::Operational }));
    assert_eq!(h.client.outbox_len(), 0, "released by the init's next_seq");
    assert_eq!(h.client.stats().registered, 10, "counted as registered");
    assert_eq!(h.gw.stored_regs(), samples.iter().map(Sample::reg).collect::<Vec<_>>(), "not sent again");
    assert_eq!(h.client.next_seq(), 10);
}

#[test]
fn an_unknown_session_starts_over_from_first_seq() {
    let mut h = Harness::<4096>::new(config("dev"));
    h.connect();
    for i in 0..3 {
        sample(i).register(&mut h.client).unwrap();
    }
    h.run();
    let old = h.client.session_id().unwrap();
    // The gateway forgets every session (a new database).
    h.gw.sessions = SessionTable::new();
    h.link_down();
    sample(3).register(&mut h.client).unwrap();
    h.events.clear();
    h.connect();
    h.assert_clean();
    assert_eq!(h.events.first(), Some(&Ce::Connected { resumed: false, status: Status::Operational }));
    assert_ne!(h.client.session_id(), Some(old));
    assert_eq!(h.gw.stored.last().map(|(_, seq, _)| *seq), Some(3), "the new session continues at first_seq");
    assert_eq!(h.client.outbox_len(), 0);
}

// Registrations and notification ids are numbered by counting packets, so the session needs a
// packet service that loses and repeats nothing, or says so. TCP does not; the serial framing
// numbers its frames and ends the link on a gap or a repeat (core/tests/wire.rs), and
// host-tests/tests/driver.rs shows a line that loses whole frames storing each event once.

// ---------------------------------------------------------------------------------------------
// 4. Duplicates
// ---------------------------------------------------------------------------------------------

#[test]
fn a_duplicated_notification_is_delivered_once() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();
    let event = notification(40, "sensor/t", "1");
    h.notify(&event).unwrap();
    let bytes = h.s2c.clone();
    let bodies: Vec<Vec<u8>> = frames(&bytes).iter().map(|f| f[1..].to_vec()).collect();
    let notify = bodies.last().unwrap().clone();
    h.run();
    assert_eq!(h.delivered(), vec![event.clone()]);

    // The same bytes again, straight to the client.
    let now = h.now;
    assert_eq!(h.client.handle(now, &notify), Ok(None), "a replay is dropped");
    assert_eq!(h.client.stats().duplicates, 1);
    assert_eq!(h.client.stats().events, 1);
    assert_eq!(h.delivered(), vec![event]);
    // Not pumped further on purpose: the client returns a window slot for the duplicate too
    // (it cannot tell a duplicate from a replay on a new link), so the server would see one ack
    // more than it sent notifications and report `Error::Protocol`. Links must not duplicate.
}

#[test]
fn notifications_replayed_after_a_reconnect_are_dropped() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    let events: Vec<OwnedEvent> = (1..=7).map(|i| notification(i, "sensor/t", &format!("{i}"))).collect();
    for event in &events[..5] {
        h.notify(event).unwrap();
    }
    h.run();
    assert_eq!(h.delivered(), events[..5].to_vec());
    h.link_down();
    h.connect();
    // The gateway does not know what arrived: it replays from the third.
    for event in &events[2..] {
        h.notify(event).unwrap();
    }
    h.run();
    h.assert_clean();
    assert_eq!(h.delivered(), events, "each event once, in order");
    assert_eq!(h.client.stats().duplicates, 3);
    assert_eq!(h.client.stats().events, 7);
    assert_eq!(h.gw.server().credit(), u32::from(config("dev").window), "replays return their window slot");
}

// ---------------------------------------------------------------------------------------------
// 5. Credit window
// ---------------------------------------------------------------------------------------------

#[test]
fn notify_waits_for_the_clients_acks() {
    let mut h = Harness::<1024>::new(ClientConfig { window: 4, ..config("dev") });
    h.connect();
    let events: Vec<OwnedEvent> = (1..=10).map(|i| notification(i, "sensor/t", &format!("{i}"))).collect();
    assert_eq!(h.gw.server().credit(), 4);
    for event in &events[..4] {
        h.notify(event).unwrap();
    }
    assert_eq!(h.gw.server().credit(), 0);
    assert_eq!(h.notify(&events[4]), Err(Error::NoCredit));
    let before = h.s2c.len();
    assert_eq!(h.notify(&events[4]), Err(Error::NoCredit));
    assert_eq!(h.s2c.len(), before, "a refused notify writes nothing");

    h.run(); // the client takes them and acks
    assert_eq!(h.delivered(), events[..4].to_vec());
    assert!(h.gw.events.contains(&Se::Acked(4)), "{:?}", h.gw.events);
    assert_eq!(h.gw.server().credit(), 4);

    // The rest, sending whenever there is credit.
    let mut next = 4;
    while next < events.len() {
        match h.notify(&events[next]) {
            Ok(()) => next += 1,
            Err(Error::NoCredit) => h.run(),
            Err(e) => panic!("{e:?}"),
        }
    }
    h.run();
    h.assert_clean();
    assert_eq!(h.delivered(), events, "nothing lost");
    assert_eq!(h.gw.server().credit(), 4);
}

#[test]
fn held_acks_go_out_only_as_the_application_releases_them_and_pings_still_answer() {
    let mut h = Harness::<1024>::new(ClientConfig { window: 4, hold_acks: true, ..config("dev") });
    h.connect();
    let events: Vec<OwnedEvent> = (1..=6).map(|i| notification(i, "sensor/t", &format!("{i}"))).collect();
    for event in &events[..4] {
        h.notify(event).unwrap();
    }
    h.run();
    assert_eq!(h.delivered(), events[..4].to_vec(), "held acks do not hold delivery back");
    assert!(!h.gw.events.iter().any(|e| matches!(e, Se::Acked(_))), "nothing acked before a release");
    assert_eq!(h.notify(&events[4]), Err(Error::NoCredit), "the window holds the server back");

    // The link stays alive meanwhile: a ping from the server is answered.
    let ping = h.server_write(|s, now, w| s.ping(now, w)).unwrap();
    h.run();
    assert!(
        h.take_server_events().iter().any(|e| matches!(e, Se::Response(id, _) if *id == ping)),
        "the client answered the ping"
    );

    assert_eq!(h.client.release(3), 3);
    h.run();
    assert!(h.gw.events.contains(&Se::Acked(3)), "{:?}", h.gw.events);
    assert_eq!(h.gw.server().credit(), 3);
    assert_eq!(h.client.release(5), 1, "only what is held is released");
    h.run();
    assert_eq!(h.gw.server().credit(), 4);

    // Held acks end with their link: nothing is released on the next one.
    h.notify(&events[4]).unwrap();
    h.run();
    h.link_down();
    assert_eq!(h.client.release(1), 0);
    h.connect();
    assert_eq!(h.client.release(1), 0);
    h.notify(&events[5]).unwrap();
    h.run();
    assert_eq!(h.client.release(1), 1);
    h.run();
    assert_eq!(h.gw.server().credit(), 4);
    h.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// 6. Requests
// ---------------------------------------------------------------------------------------------

#[test]
fn query_answers_with_the_gateways_events() {
    let mut h = Harness::<4096>::new(config("dev"));
    h.connect();
    let samples: Vec<Sample> = (0..3).map(sample).collect();
    for s in &samples {
        s.register(&mut h.client).unwrap();
    }
    h.run();
    h.take_events();
    let params = QueryParams::Latest(QueryLatest { event_types: None });
    let id = h.client_write(|c, now, w| c.query(now, &params, w)).unwrap();
    assert_eq!(h.client.requests_in_flight(), 1);
    h.run();
    h.assert_clean();
    let events = h.take_events();
    let [Ce::Response(got, Answer::Query { events, more_follows: false })] = events.as_slice() else {
        panic!("expected a query result, got {events:?}");
    };
    assert_eq!(*got, id);
    assert_eq!(events, &h.gw.history);
    let types: Vec<String> = events.iter().map(|e| e.event_type.to_string()).collect();
    assert_eq!(types, vec!["sensor/t", "sensor/h", "door/front/open"]);
    assert_eq!(events[1].payload, samples[1].reg().payload);
    assert_eq!(h.client.requests_in_flight(), 0);
}

#[test]
fn register_with_response_returns_the_events_with_ids() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();
    let alarm = ty("alarm/fire");
    let mut buf = [0u8; 512];
    let mut list = ListBuilder::new(&mut buf);
    list.push(&RegisterEventRef {
        event_type: alarm.as_ref(),
        source_timestamp: None,
        payload: Some(EventPayloadRef::Json("true")),
    })
    .unwrap();
    list.push(&RegisterEventRef { event_type: alarm.as_ref(), source_timestamp: None, payload: None }).unwrap();
    let events: RegisterList<'_> = list.finish();
    let id = h.client_write(|c, now, w| c.register_with_response(now, events, w)).unwrap();
    h.run();
    h.assert_clean();
    let got = h.take_events();
    let [Ce::Response(got_id, Answer::Registered(registered))] = got.as_slice() else { panic!("{got:?}") };
    assert_eq!(*got_id, id);
    assert_eq!(registered.len(), 2);
    assert_eq!(registered[0].id, EventId { server: 1, session: 7, instance: 1 });
    assert_eq!(registered[1].id.instance, 2);
    assert_eq!(registered[0].event_type.as_ref(), alarm.as_ref());
    assert_eq!(registered[0].payload, EventPayloadRef::Json("true").to_owned().ok());
    assert_eq!(h.client.outbox_len(), 0, "not an outbox registration");
}

#[test]
fn application_requests_both_ways() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();

    // Client → server.
    let id = h.client_write(|c, now, w| c.request(now, 12, 3, b"status?", w)).unwrap();
    h.run();
    let requests = h.server_requests();
    assert_eq!(requests.len(), 1);
    let (from, payload) = requests[0].clone();
    assert_eq!(from.channel, CHANNEL_APP);
    assert_eq!(payload, b"status?");
    assert!(matches!(h.gw.events.last(), Some(Se::Request { rq_type: 12, flags: 3, .. })));
    h.server_write(|s, _, w| s.respond_raw(from, 5, b"fine", w)).unwrap();
    h.run();
    assert_eq!(h.take_events(), vec![Ce::Response(id, Answer::App { flags: 5, payload: b"fine".to_vec() })]);

    // Server → client.
    let id = h.server_write(|s, now, w| s.request(now, 33, 0, b"reboot", w)).unwrap();
    h.run();
    let events = h.take_events();
    let [Ce::Request { from, rq_type: 33, flags: 0, payload }] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(payload, b"reboot");
    let from = *from;
    h.client_write(|c, _, w| c.respond(from, 1, b"ok", w)).unwrap();
    h.run();
    assert_eq!(h.gw.events.last(), Some(&Se::Response(id, Answer::App { flags: 1, payload: b"ok".to_vec() })));

    // Server → client, refused.
    let id = h.server_write(|s, now, w| s.request(now, 34, 0, b"format disk", w)).unwrap();
    h.run();
    let Some(Ce::Request { from, .. }) = h.take_events().pop() else { panic!("no request") };
    h.client_write(|c, _, w| c.refuse(from, "not today", w)).unwrap();
    h.run();
    assert_eq!(h.gw.events.last(), Some(&Se::Failed(id, Failure::Refused("not today".into()))));

    // Pings both ways.
    let id = h.client_write(|c, now, w| c.ping(now, w)).unwrap();
    h.run();
    assert_eq!(h.take_events(), vec![Ce::Response(id, Answer::Pong)]);
    let id = h.server_write(|s, now, w| s.ping(now, w)).unwrap();
    h.run();
    assert_eq!(h.gw.events.last(), Some(&Se::Response(id, Answer::Pong)));
    assert!(h.client.rtt().is_some());
    h.assert_clean();
}

#[test]
fn a_refused_request_fails_with_the_reason() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();
    let id = h.client_write(|c, now, w| c.request(now, 1, 0, b"open valve", w)).unwrap();
    h.run();
    let (from, _) = h.server_requests()[0].clone();
    h.server_write(|s, _, w| s.refuse(from, "valve is locked", w)).unwrap();
    h.run();
    h.assert_clean();
    assert_eq!(h.take_events(), vec![Ce::Failed(id, Failure::Refused("valve is locked".into()))]);
    assert!(h.client.is_connected(), "a refused request does not end the link");
}

#[test]
fn out_of_order_responses_match_their_requests() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();
    let names: [&[u8]; 3] = [b"a", b"b", b"c"];
    let ids: Vec<RequestId> =
        names.iter().map(|n| h.client_write(|c, now, w| c.request(now, 7, 0, n, w)).unwrap()).collect();
    assert_eq!(h.client.requests_in_flight(), 3);
    h.run();
    let requests = h.server_requests();
    assert_eq!(requests.len(), 3);
    for at in [2, 0, 1] {
        let (from, payload) = requests[at].clone();
        let answer = [b"re:".as_slice(), &payload].concat();
        h.server_write(|s, _, w| s.respond_raw(from, 0, &answer, w)).unwrap();
    }
    h.run();
    h.assert_clean();
    let expected: Vec<Ce> = [2, 0, 1]
        .iter()
        .map(|&at| Ce::Response(ids[at], Answer::App { flags: 0, payload: [b"re:".as_slice(), names[at]].concat() }))
        .collect();
    assert_eq!(h.take_events(), expected);
    assert_eq!(h.client.requests_in_flight(), 0);
}

#[test]
fn an_unanswered_request_times_out() {
    let timeout = Duration::from_secs(3);
    let mut h = Harness::<1024>::new(ClientConfig { request_timeout: timeout, ..config("dev") });
    h.connect();
    h.take_events();
    let sent_at = h.now;
    let id = h.client_write(|c, now, w| c.request(now, 1, 0, b"?", w)).unwrap();
    h.run();
    assert_eq!(h.client.poll_timeout(), Some(sent_at + timeout));
    h.tick(Duration::from_micros(timeout.as_micros() - 1));
    assert!(h.take_events().is_empty(), "not yet");
    h.tick(Duration::from_micros(1));
    assert_eq!(h.take_events(), vec![Ce::Failed(id, Failure::TimedOut)]);
    assert_eq!(h.client.requests_in_flight(), 0);

    // A late answer matches nothing.
    let (from, _) = h.server_requests()[0].clone();
    h.server_write(|s, _, w| s.respond_raw(from, 0, b"late", w)).unwrap();
    h.run();
    h.assert_clean();
    assert!(h.take_events().is_empty(), "a late answer is dropped");
    assert!(h.client.is_connected());

    // The server's requests time out the same way.
    let id = h.server_write(|s, now, w| s.request(now, 1, 0, b"?", w)).unwrap();
    h.run();
    h.take_events(); // the client ignores it
    h.tick(server_config().request_timeout);
    assert_eq!(h.gw.events.last(), Some(&Se::Failed(id, Failure::TimedOut)));
}

#[test]
fn requests_in_flight_fail_when_the_link_drops() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();
    let params = QueryParams::Latest(QueryLatest { event_types: None });
    let query = h.client_write(|c, now, w| c.query(now, &params, w)).unwrap();
    let app = h.client_write(|c, now, w| c.request(now, 1, 0, b"x", w)).unwrap();
    h.c2s.clear(); // never arrive
    h.link_down();
    h.run();
    let mut failed: Vec<Ce> = h.take_events();
    failed.sort_by_key(|e| if let Ce::Failed(id, _) = e { id.0 } else { u64::MAX });
    assert_eq!(failed, vec![Ce::Failed(query, Failure::Disconnected), Ce::Failed(app, Failure::Disconnected)]);
    assert!(!h.client.is_connected());
    assert_eq!(h.client_write(|c, now, w| c.request(now, 1, 0, b"x", w)), Err(Error::NotConnected));
    assert_eq!(h.client_write(|c, now, w| c.query(now, &params, w)), Err(Error::NotConnected));

    // Request ids stay unique across links.
    h.connect();
    let next = h.client_write(|c, now, w| c.request(now, 1, 0, b"x", w)).unwrap();
    assert!(next.0 > app.0 && next.0 > query.0);
}

// ---------------------------------------------------------------------------------------------
// 7. Keepalive
// ---------------------------------------------------------------------------------------------

fn pings(bodies: &[Vec<u8>]) -> usize {
    decode_bodies(bodies).iter().filter(|r| is_session_request(r, MessageKind::Ping)).count()
}

#[test]
fn a_silent_server_is_declared_dead_after_twice_the_interval() {
    let keepalive = Duration::from_secs(2);
    // A request timeout shorter than the keepalive: the keepalive's own ping must not surface.
    let mut h =
        Harness::<1024>::new(ClientConfig { keepalive, request_timeout: Duration::from_secs(1), ..config("dev") });
    h.connect();
    h.take_events();
    h.s2c_budget = 0; // the server goes silent
    let start = h.now;
    assert_eq!(h.client.poll_timeout(), Some(start + keepalive));
    h.tick(Duration::from_millis(1_999));
    assert_eq!(pings(&h.to_server), 0);
    h.tick(Duration::from_millis(1));
    assert_eq!(pings(&h.to_server), 1, "one ping after the interval");
    h.tick(Duration::from_millis(1_000));
    h.tick(Duration::from_millis(999));
    assert!(h.take_events().is_empty(), "still alive, and the keepalive ping is not the app's request");
    h.tick(Duration::from_millis(1));
    assert_eq!(h.take_events(), vec![Ce::LinkEnded(LinkEnd::TimedOut)]);
    assert!(!h.client.is_connected(), "a dead link is not connected");
    h.link_down();
    h.run();
    assert!(h.take_events().is_empty(), "the keepalive ping does not fail as Disconnected either");
}

#[test]
fn a_silent_client_is_declared_dead_by_the_server() {
    let keepalive = Duration::from_secs(2);
    let server = ServerConfig { request_timeout: Duration::from_secs(1), ..server_config() };
    let mut h = Harness::<1024>::with_server(ClientConfig { keepalive, ..config("dev") }, server);
    h.connect();
    h.c2s_budget = 0; // the client goes silent
    h.tick(Duration::from_secs(2));
    assert_eq!(pings(&h.to_client), 1, "the server pings after the interval");
    h.tick(Duration::from_millis(1_999));
    assert!(!h.gw.events.iter().any(|e| matches!(e, Se::LinkEnded(_) | Se::Failed(..))), "{:?}", h.gw.events);
    assert!(h.gw.server().is_open());
    h.tick(Duration::from_millis(1));
    assert_eq!(h.gw.events.last(), Some(&Se::LinkEnded(LinkEnd::TimedOut)));
    assert!(!h.gw.server().is_open(), "a dead link is not open");
}

#[test]
fn a_responsive_peer_keeps_the_link_alive() {
    let keepalive = Duration::from_secs(1);
    let mut h =
        Harness::<1024>::new(ClientConfig { keepalive, request_timeout: Duration::from_millis(500), ..config("dev") });
    h.connect();
    h.take_events();
    for _ in 0..40 {
        h.tick(Duration::from_millis(250));
    }
    h.assert_clean();
    assert!(h.take_events().is_empty(), "no link end, no failed request");
    assert!(!h.gw.events.iter().any(|e| matches!(e, Se::LinkEnded(_) | Se::Failed(..))));
    assert!(pings(&h.to_server) + pings(&h.to_client) >= 5, "keepalive pings went out");
    assert!(h.client.rtt().is_some() || h.gw.server().rtt().is_some());
    assert!(h.client.is_connected());
}

// ---------------------------------------------------------------------------------------------
// 8. Graceful close
// ---------------------------------------------------------------------------------------------

#[test]
fn close_sends_erq_then_eof_and_both_sides_end_closed() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();
    h.take_server_events();
    h.client.close();
    assert!(!h.client.is_connected());
    h.client_write(|c, now, w| c.poll_transmit(now, w)).unwrap();
    assert_eq!(h.c2s, [3, 1, 2, 0, 3, 0, 2, 0], "ERQ then EOF");
    let delivered = h.to_client.len();
    h.run();
    h.assert_clean();
    let answer = decode_bodies(&h.to_client[delivered..]);
    assert_eq!(answer, vec![PacketRepr::ERQ, PacketRepr::EOF], "the server answers ERQ + EOF");
    assert_eq!(h.take_events(), vec![Ce::LinkEnded(LinkEnd::Closed)]);
    assert_eq!(h.take_server_events(), vec![Se::LinkEnded(LinkEnd::Closed)]);
    assert_eq!(h.client_write(|c, now, w| c.request(now, 1, 0, b"x", w)), Err(Error::Closed));

    // Events registered now wait for the next link.
    sample(0).register(&mut h.client).unwrap();
    h.run();
    assert!(h.gw.stored.is_empty());
    h.link_down();
    h.connect();
    h.assert_clean();
    assert_eq!(h.gw.stored_regs(), vec![sample(0).reg()]);
}

#[test]
fn server_initiated_close() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();
    h.gw.server().close();
    assert!(!h.gw.server().is_open());
    h.run();
    h.assert_clean();
    assert_eq!(h.take_events(), vec![Ce::LinkEnded(LinkEnd::Closed)]);
    assert_eq!(h.gw.events.last(), Some(&Se::LinkEnded(LinkEnd::Closed)));
}

#[test]
fn nothing_follows_the_servers_eof() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.gw.server().close();
    h.server_write(|s, now, w| s.poll_transmit(now, w)).unwrap();
    assert_eq!(h.s2c, [3, 1, 2, 0, 3, 0, 2, 0], "ERQ then EOF");
    let event = notification(1, "sensor/t", "1");
    assert_eq!(h.notify(&event), Err(Error::Closed));
    assert_eq!(h.server_write(|s, _, w| s.set_status(Status::Stopping, w)), Err(Error::Closed));
    assert_eq!(h.server_write(|s, now, w| s.request(now, 1, 0, b"x", w)), Err(Error::Closed));
    assert_eq!(h.s2c, [3, 1, 2, 0, 3, 0, 2, 0], "nothing after the EOF");
    h.run();
    h.assert_clean();
    assert!(h.delivered().is_empty());
    assert_eq!(h.take_events().last(), Some(&Ce::LinkEnded(LinkEnd::Closed)));
}

// ---------------------------------------------------------------------------------------------
// 9. Subscriptions
// ---------------------------------------------------------------------------------------------

fn subscribes(events: &[Se]) -> Vec<Vec<String>> {
    events
        .iter()
        .filter_map(|e| if let Se::Subscribe { subscriptions, .. } = e { Some(subscriptions.clone()) } else { None })
        .collect()
}

#[test]
fn subscriptions_follow_the_client_across_links() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.client.subscribe(ty("sensor/*").as_ref()).unwrap();
    h.connect();
    let init = match h.gw.events.first() {
        Some(Se::Init(init)) => init.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(init.subscriptions, vec!["sensor/*"]);
    assert!(subscribes(&h.take_server_events()).is_empty(), "the init carries them");

    h.client.subscribe(ty("door/?").as_ref()).unwrap();
    h.run();
    assert_eq!(subscribes(&h.take_server_events()), vec![vec!["sensor/*", "door/?"]], "the whole list");
    h.client.subscribe(ty("door/?").as_ref()).unwrap();
    h.run();
    assert!(subscribes(&h.take_server_events()).is_empty(), "already subscribed: nothing sent");

    assert!(h.client.unsubscribe(ty("sensor/*").as_ref()));
    h.run();
    assert_eq!(subscribes(&h.take_server_events()), vec![vec!["door/?"]]);
    assert!(!h.client.unsubscribe(ty("nothing").as_ref()));
    h.run();
    assert!(subscribes(&h.take_server_events()).is_empty());

    // Two changes before a transmit: one message with the final list.
    h.client.subscribe(ty("a").as_ref()).unwrap();
    h.client.subscribe(ty("b").as_ref()).unwrap();
    h.run();
    assert_eq!(subscribes(&h.take_server_events()), vec![vec!["door/?", "a", "b"]]);

    // Changes while offline travel with the next init.
    h.link_down();
    assert!(h.client.unsubscribe(ty("a").as_ref()));
    h.connect();
    let events = h.take_server_events();
    let Some(Se::Init(init)) = events.first() else { panic!("{events:?}") };
    assert_eq!(init.subscriptions, vec!["door/?", "b"]);
    assert!(subscribes(&events).is_empty());
    assert_eq!(type_names(h.client.subscriptions()), vec!["door/?", "b"]);
    h.assert_clean();
    let events = h.take_events();
    assert_eq!(events.iter().filter(|e| matches!(e, Ce::Subscribed)).count(), 3, "one per Subscribe the server took");
    assert!(events.iter().all(|e| matches!(e, Ce::Connected { .. } | Ce::Subscribed)), "{events:?}");
}

#[test]
fn a_subscription_changed_while_the_init_is_out_follows_it() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.client.subscribe(ty("old").as_ref()).unwrap();
    h.link_up();
    h.client_write(|c, now, w| c.poll_transmit(now, w)).unwrap(); // the init goes out
    h.client.subscribe(ty("new").as_ref()).unwrap();
    h.run();
    h.assert_clean();
    let events = h.take_server_events();
    let Some(Se::Init(init)) = events.first() else { panic!("{events:?}") };
    assert_eq!(init.subscriptions, vec!["old"]);
    assert_eq!(subscribes(&events), vec![vec!["old", "new"]], "sent once the link is open");
}

#[test]
fn a_refused_registration_is_reported_and_leaves_the_outbox_with_its_ack() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();
    h.gw.refuse_type = Some(("secret/door", "not allowed to register secret/door"));
    let regs: Vec<u32> = ["sensor/a", "secret/door", "sensor/b"]
        .iter()
        .map(|ty| h.client.register(self::ty(ty).as_ref(), None, None).unwrap())
        .collect();
    h.run();
    h.assert_clean();
    let events = h.take_events();
    assert!(
        events.contains(&Ce::RegistrationRefused(regs[1], "not allowed to register secret/door".into())),
        "{events:?}"
    );
    let refused_at = events.iter().position(|e| matches!(e, Ce::RegistrationRefused(..)));
    let settled_at = events.iter().position(|e| matches!(e, Ce::Registered(below) if *below > regs[1]));
    assert!(refused_at < settled_at, "the refusal comes before the ack that settles it: {events:?}");
    assert_eq!(h.client.outbox_len(), 0, "refused or stored, every registration left the outbox");
    let stored: Vec<String> = h.gw.stored_regs().into_iter().map(|r| r.ty).collect();
    assert_eq!(stored, vec!["sensor/a", "sensor/b"]);
}

#[test]
fn a_server_that_closes_with_a_reason_says_it_before_erq_and_eof() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();
    h.server_write(|s, _, w| s.close_with_reason("fell 1024 notifications behind", w)).unwrap();
    h.run();
    h.assert_clean();
    let events = h.take_events();
    assert_eq!(events.first(), Some(&Ce::Closing("fell 1024 notifications behind".into())), "{events:?}");
    assert_eq!(events.last(), Some(&Ce::LinkEnded(LinkEnd::Closed)), "then a clean close: {events:?}");
}

#[test]
fn a_refused_subscription_is_reported() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();
    h.gw.refuse_subscribe = Some("too many subscriptions");
    h.client.subscribe(ty("everything/*").as_ref()).unwrap();
    h.run();
    h.assert_clean();
    assert_eq!(h.take_events(), vec![Ce::SubscriptionRefused("too many subscriptions".into())]);
    assert!(h.client.is_connected());
    assert_eq!(h.client.subscribe(ty("a/*/b").as_ref()), Err(Error::Model(rivulet_core::model::Error::InvalidPattern)));
}

// ---------------------------------------------------------------------------------------------
// 10. Outbox
// ---------------------------------------------------------------------------------------------

#[test]
fn a_full_outbox_refuses_and_keeps_what_it_has() {
    let mut h = Harness::<160>::new(config("dev"));
    let mut samples = Vec::new();
    loop {
        let s = sample(samples.len());
        let (len, bytes, seq) = (h.client.outbox_len(), h.client.outbox_bytes(), h.client.next_seq());
        match s.register(&mut h.client) {
            Ok(got) => {
                assert_eq!(got, seq);
                samples.push(s);
            }
            Err(error) => {
                assert_eq!(error, Error::OutboxFull);
                assert_eq!(h.client.outbox_len(), len, "unchanged");
                assert_eq!(h.client.outbox_bytes(), bytes, "unchanged");
                assert_eq!(h.client.next_seq(), seq, "unchanged");
                break;
            }
        }
    }
    assert!(samples.len() >= 3, "{} fit", samples.len());
    assert_eq!(h.client.outbox_len() as usize, samples.len());
    assert!(h.client.outbox_bytes() <= 160);
    // A big event that cannot fit even in an empty outbox.
    let big = "x".repeat(200);
    assert_eq!(h.client.register(ty("big").as_ref(), None, Some(EventPayloadRef::Json(&big))), Err(Error::OutboxFull));

    // Registered offline: sent after link_up.
    h.connect();
    h.assert_clean();
    assert_eq!(h.gw.stored_regs(), samples.iter().map(Sample::reg).collect::<Vec<_>>());
    assert_eq!(h.client.outbox_len(), 0);
    assert_eq!(h.client.outbox_bytes(), 0);
    let s = sample(samples.len());
    assert_eq!(s.register(&mut h.client), Ok(samples.len() as u32), "room again");
}

// ---------------------------------------------------------------------------------------------
// 11. Garbage
// ---------------------------------------------------------------------------------------------

fn connected() -> Harness<1024> {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h
}

#[test]
fn empty_and_malformed_bodies_are_errors() {
    let mut server = TestServer::new(Instant::ZERO, server_config());
    assert_eq!(server.handle(Instant::ZERO, &[]), Err(Error::Wire(wire::Error::Truncated)));
    assert_eq!(server.handle(Instant::ZERO, &[0x80]), Err(Error::Wire(wire::Error::Truncated)));
    // Wire rq_type 0 that is not exactly EOF or ERQ.
    assert_eq!(server.handle(Instant::ZERO, &[5, 2, 0]), Err(Error::Wire(wire::Error::Malformed)));
    assert_eq!(server.handle(Instant::ZERO, &[0, 2, 0, 1]), Err(Error::Wire(wire::Error::Malformed)));
    // An init that does not decode.
    let init = body_of(&PacketRepr::request(0, 2, MessageKind::Init as u64, 0, &[0xff, 0xff, 0xff]));
    assert_eq!(server.handle(Instant::ZERO, &init), Err(Error::Decode));
    // A register before the init: the client thinks a link is open; the server closes it.
    let register = body_of(&PacketRepr::request(0, 1, MessageKind::Register as u64, FLAG_ONE_WAY, &[0, 0]));
    assert_eq!(server.handle(Instant::ZERO, &register), Ok(None));
    let mut buf = [0u8; 64];
    let mut out = FrameWriter::new(&mut buf, Framing::Stream);
    server.poll_transmit(Instant::ZERO, &mut out).unwrap();
    assert_eq!(out.pending(), [3, 1, 2, 0, 3, 0, 2, 0], "ERQ then EOF");

    let mut client = TestClient::<64>::new(config("dev"), [0; 64]);
    assert_eq!(client.handle(Instant::ZERO, &[2, 0]), Err(Error::NotConnected), "no link");
    let mut h = connected();
    let now = h.now;
    // An ack for more registrations than were sent.
    let ack = body_of(&PacketRepr::request(0, 5, MessageKind::Ack as u64, FLAG_ONE_WAY, &[]));
    assert_eq!(h.client.handle(now, &ack), Err(Error::Protocol));
    assert_eq!(h.gw.server().handle(now, &ack), Err(Error::Protocol));
    // A register with an alias never declared.
    let register = body_of(&PacketRepr::request(0, 9, MessageKind::Register as u64, FLAG_ONE_WAY, &[0, 0]));
    assert_eq!(h.gw.server().handle(now, &register), Err(Error::Protocol));
    // A notify whose body does not decode.
    let notify = body_of(&PacketRepr::request(0, 0, MessageKind::Notify as u64, FLAG_ONE_WAY, &[0xff]));
    assert_eq!(h.client.handle(now, &notify), Err(Error::Decode));
}

fn session_kind() -> impl Strategy<Value = u64> {
    prop_oneof![0..12u64, any::<u64>()]
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let parsed = PacketRepr::parse_bytes(&bytes).map(|_| ());
        let now = Instant::from_millis(5);
        let mut fresh = TestServer::new(now, server_config());
        let result = fresh.handle(now, &bytes).map(|_| ());
        if let Err(e) = parsed {
            prop_assert_eq!(result, Err(Error::Wire(e)));
        }
        let mut h = connected();
        let result = h.gw.server().handle(now, &bytes).map(|_| ());
        if let Err(e) = parsed {
            prop_assert_eq!(result, Err(Error::Wire(e)));
        }
        let result = h.client.handle(now, &bytes).map(|_| ());
        if let Err(e) = parsed {
            prop_assert_eq!(result, Err(Error::Wire(e)));
        }
        // Whatever happened, the machines keep running.
        h.tick(Duration::from_secs(60));
        let mut buf = [0u8; 256];
        let mut out = FrameWriter::new(&mut buf, Framing::Stream);
        let _ = fresh.poll_transmit(now, &mut out);
        while fresh.poll(Instant::from_millis(100_000)).is_some() {}
    }

    #[test]
    fn random_session_messages_never_panic(
        tag in 0..300u64,
        kind in session_kind(),
        one_way in any::<bool>(),
        channel in 0..3u64,
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let flags = if one_way { FLAG_ONE_WAY } else { 0 };
        let repr = PacketRepr::request(channel, tag.max(2), kind, flags, &payload);
        let Ok(len) = repr.buffer_len() else { return Ok(()) };
        let mut body = vec![0; len];
        prop_assert!(repr.emit(&mut body).is_ok());
        let mut h = connected();
        let now = h.now;
        let _ = h.gw.server().handle(now, &body);
        let _ = h.client.handle(now, &body);
        let response = body_of(&PacketRepr::response(channel, tag, one_way, 0, &payload));
        let _ = h.gw.server().handle(now, &response);
        let _ = h.client.handle(now, &response);
        h.run();
        h.tick(Duration::from_secs(60));
    }
}

// ---------------------------------------------------------------------------------------------
// 12. Evolution: unknown kinds
// ---------------------------------------------------------------------------------------------

fn failures(bodies: &[Vec<u8>]) -> Vec<(u64, u64, String)> {
    decode_bodies(bodies)
        .iter()
        .filter(|r| matches!(r.kind, PacketKind::Response { ok: false, .. }))
        .map(|r| (r.channel, r.tag, String::from_utf8_lossy(r.payload).into_owned()))
        .collect()
}

#[test]
fn the_server_refuses_an_unknown_request_kind_and_ignores_an_unknown_one_way_kind() {
    let mut h = connected();
    h.take_events();
    let now = h.now;
    let request = body_of(&PacketRepr::request(0, 77, 42, 0, b"from the future"));
    assert_eq!(h.gw.server().handle(now, &request), Ok(None));
    let one_way = body_of(&PacketRepr::request(0, 78, 43, FLAG_ONE_WAY, b"from the future"));
    assert_eq!(h.gw.server().handle(now, &one_way), Ok(None));
    let other_channel = body_of(&PacketRepr::request(5, 79, 1, 0, b""));
    assert_eq!(h.gw.server().handle(now, &other_channel), Ok(None));
    let delivered = h.to_client.len();
    h.run();
    h.assert_clean();
    assert_eq!(
        failures(&h.to_client[delivered..]),
        vec![(0, 77, "unknown message kind 42".into()), (5, 79, "unknown channel 5".into())],
        "a failure for the request, nothing for the one-way message"
    );
    assert!(h.take_events().is_empty());
    assert!(h.gw.server().is_open());
}

#[test]
fn the_client_refuses_an_unknown_request_kind_and_ignores_an_unknown_one_way_kind() {
    let mut h = connected();
    h.take_events();
    let now = h.now;
    let request = body_of(&PacketRepr::request(0, 77, 42, 0, b"from the future"));
    assert_eq!(h.client.handle(now, &request), Ok(None));
    let one_way = body_of(&PacketRepr::request(0, 78, 43, FLAG_ONE_WAY, b"from the future"));
    assert_eq!(h.client.handle(now, &one_way), Ok(None));
    let delivered = h.to_server.len();
    h.run();
    h.assert_clean();
    assert_eq!(failures(&h.to_server[delivered..]), vec![(0, 77, "unknown message kind 42".into())]);
    assert!(h.take_events().is_empty());
    assert!(h.client.is_connected());
}

#[test]
fn requests_after_the_peers_erq_are_refused() {
    let mut h = connected();
    let now = h.now;
    assert_eq!(h.gw.server().handle(now, &body_of(&PacketRepr::ERQ)), Ok(None));
    let request = body_of(&PacketRepr::request(CHANNEL_APP, 40, 1, 0, b"late"));
    assert_eq!(h.gw.server().handle(now, &request), Ok(None), "not handed to the application");
    let delivered = h.to_client.len();
    h.run();
    assert_eq!(failures(&h.to_client[delivered..]), vec![(CHANNEL_APP, 40, "requests no longer allowed".into())]);
}

// ---------------------------------------------------------------------------------------------
// Regressions found in review
// ---------------------------------------------------------------------------------------------

fn kinds_in(bytes: &[u8]) -> Vec<PacketKind> {
    frames(bytes).iter().map(|f| PacketRepr::parse_bytes(&f[1..]).unwrap().kind).collect()
}

#[test]
fn a_subscription_waits_while_the_request_table_is_full() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();
    for _ in 0..4 {
        h.client_write(|c, now, w| c.ping(now, w)).unwrap();
    }
    h.c2s.clear(); // the pings never arrive: the table stays full
    h.client.subscribe(ty("alarm/*").as_ref()).unwrap();
    sample(0).register(&mut h.client).unwrap();
    assert_eq!(h.client_write(|c, now, w| c.poll_transmit(now, w)), Ok(()), "a full table is no error");
    let sent = kinds_in(&h.c2s);
    let subscribe = PacketKind::Request { rq_type: MessageKind::Subscribe as u64, flags: 0 };
    assert!(!sent.contains(&subscribe), "no Subscribe without a free slot");
    assert!(
        sent.iter()
            .any(|k| matches!(k, PacketKind::Request { rq_type, .. } if *rq_type == MessageKind::Register as u64))
    );
    // Once the pings time out, the subscription goes.
    h.tick(config("dev").request_timeout);
    assert!(h.gw.events.iter().any(|e| matches!(e, Se::Subscribe { .. })), "sent once a slot is free");
}

#[test]
fn nothing_follows_our_eof() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();
    h.notify(&notification(1, "sensor/t", "1")).unwrap(); // crossing the close
    h.client.close();
    h.client_write(|c, now, w| c.poll_transmit(now, w)).unwrap();
    assert_eq!(kinds_in(&h.c2s).last(), Some(&PacketKind::EndOfFile));
    let sent_before = h.c2s.len();
    h.deliver_to_client(); // the notification arrives after our EOF went out
    h.client_write(|c, now, w| c.poll_transmit(now, w)).unwrap();
    assert_eq!(h.c2s.len(), sent_before, "no Ack after EOF");
    let from = Incoming { channel: 1, tag: 9 };
    assert_eq!(h.client_write(|c, _, w| c.respond(from, 0, b"late", w)), Err(Error::Closed));
}

#[test]
fn an_init_opens_a_new_link_on_a_server_that_is_closing_or_open() {
    let mut h = Harness::<1024>::new(config("dev"));
    h.connect();
    h.take_events();
    // The client starts over on the same line while the server still holds the old link open.
    h.client.link_down();
    h.client.link_up(h.now);
    h.run();
    assert!(h.gw.errors.is_empty(), "an init on an open link is no protocol error: {:?}", h.gw.errors);
    assert!(matches!(h.events.last(), Some(Ce::Connected { resumed: true, .. })));

    // A fresh server connection that got leftovers of an old link is closing; an init still opens.
    let mut server = TestServer::new(h.now, server_config());
    let mut out = [0u8; 256];
    let mut writer = FrameWriter::new(&mut out, Framing::Stream);
    let ack = PacketRepr::request(0, 3, MessageKind::Ack as u64, rivulet_core::session::message::FLAG_ONE_WAY, &[]);
    let mut body = [0u8; 16];
    let n = ack.emit(&mut body).unwrap();
    assert_eq!(server.handle(h.now, &body[..n]), Ok(None));
    server.poll_transmit(h.now, &mut writer).unwrap();
    assert_eq!(kinds_in(writer.pending()), [PacketKind::EndOfRequests, PacketKind::EndOfFile]);
    let init =
        h.to_server.iter().rev().find(|b| is_session_request(&PacketRepr::parse_bytes(b).unwrap(), MessageKind::Init));
    let init = init.expect("the client sent an init").clone();
    assert!(matches!(server.handle(h.now, &init), Ok(Some(ServerEvent::Init { .. }))));
}

#[test]
fn a_full_outbox_does_not_take_an_alias() {
    let mut h = Harness::<16>::new(config("dev"));
    let big = "x".repeat(40);
    let refused = h.client.register(ty("new/type").as_ref(), None, Some(EventPayloadRef::Json(&big)));
    assert_eq!(refused, Err(Error::OutboxFull));
    h.connect();
    let declares =
        h.to_server.iter().filter(|b| is_session_request(&PacketRepr::parse_bytes(b).unwrap(), MessageKind::Declare));
    assert_eq!(declares.count(), 0, "the refused registration declared nothing");
}

// ---------------------------------------------------------------------------------------------
// The fuzz targets on stable (fuzz/, docs/RELIABILITY.md "Fuzzing")
// ---------------------------------------------------------------------------------------------

/// The harnesses of the fuzz targets `session_messages` (every body decoder, and a client and a
/// server on an open link fed arbitrary packets) and `packetstream`: the same files
/// `cargo +nightly fuzz` builds, run here on the committed seed corpora, on random records and on
/// seeds with random edits.
#[allow(dead_code)]
#[path = "../../fuzz/src"]
mod fuzz {
    pub mod corpus;
    pub mod input;
    pub mod packetstream;
    pub mod session_messages;
}

/// Edits for [`fuzz::corpus::mutate`]: (position, operation, byte).
fn fuzz_edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6)
}

/// A record of the machines' fuzz input: a clock step, an application action, a random body, or
/// a session message of a known kind with a random payload (so the body decoders get past the
/// packet header).
fn fuzz_record() -> impl Strategy<Value = Vec<u8>> {
    let message = (0u64..3, 0u64..8, session_kind(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..48))
        .prop_map(|(channel, tag, kind, one_way, payload)| {
            let flags = if one_way { FLAG_ONE_WAY } else { 0 };
            body_of(&PacketRepr::request(channel, tag, kind, flags, &payload))
        });
    let response = (0u64..8, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..48))
        .prop_map(|(tag, ok, payload)| body_of(&PacketRepr::response(0, tag, ok, 0, &payload)));
    prop_oneof![
        1 => Just(Vec::new()),
        2 => any::<u8>().prop_map(|action| vec![action]),
        1 => proptest::collection::vec(any::<u8>(), 2..40),
        3 => message,
        2 => response,
    ]
}

fn fuzz_records(mode: u8, records: &[Vec<u8>]) -> Vec<u8> {
    let mut input = vec![mode];
    for record in records {
        let mut prefix = [0u8; wire::varint::MAX_LEN];
        let n = wire::varint::encode(record.len() as u64, &mut prefix).unwrap();
        input.extend_from_slice(&prefix[..n]);
        input.extend_from_slice(record);
    }
    input
}

#[test]
fn fuzz_session_messages_seed_corpus() {
    for seed in fuzz::corpus::seeds("session_messages") {
        fuzz::session_messages::run(&seed);
    }
}

#[test]
fn fuzz_packetstream_seed_corpus() {
    for seed in fuzz::corpus::seeds("packetstream") {
        fuzz::packetstream::run(&seed);
    }
}

proptest! {
    #[test]
    fn fuzz_session_messages_random_records(
        mode in any::<u8>(),
        records in proptest::collection::vec(fuzz_record(), 0..24),
    ) {
        fuzz::session_messages::run(&fuzz_records(mode, &records));
    }

    #[test]
    fn fuzz_session_messages_edited_seeds(pick in any::<prop::sample::Index>(), edits in fuzz_edits()) {
        let seeds = fuzz::corpus::seeds("session_messages");
        fuzz::session_messages::run(&fuzz::corpus::mutate(&seeds[pick.index(seeds.len())], &edits));
    }

    #[test]
    fn fuzz_packetstream_random_records(
        mode in any::<u8>(),
        records in proptest::collection::vec(fuzz_record(), 0..24),
    ) {
        fuzz::packetstream::run(&fuzz_records(mode, &records));
    }

    #[test]
    fn fuzz_packetstream_edited_seeds(pick in any::<prop::sample::Index>(), edits in fuzz_edits()) {
        let seeds = fuzz::corpus::seeds("packetstream");
        fuzz::packetstream::run(&fuzz::corpus::mutate(&seeds[pick.index(seeds.len())], &edits));
    }
}

/// Found by the `session_messages` fuzz target: a keepalive ping fell due while a ping of the
/// application was in flight, so it waited; the link then timed out, and the server's next
/// `poll_transmit` tried the keepalive ping on the ended link and failed with `Closed`. Nothing is
/// sent on an ended link now, and `poll_transmit` succeeds, as the client's always did.
#[test]
fn no_keepalive_ping_on_a_link_that_timed_out() {
    let mut h = connected();
    h.take_events();
    let keepalive = config("dev").keepalive;
    h.c2s_budget = 0; // the client falls silent
    h.tick(Duration::from_micros(keepalive.as_micros() - 5_000_000));
    h.server_write(|s, now, w| s.ping(now, w)).unwrap();
    h.s2c.clear(); // the application's ping is lost, and in flight for 10 s
    h.tick(Duration::from_secs(5) + Duration::from_millis(1)); // the keepalive ping waits behind it
    h.tick(keepalive + keepalive);
    assert!(h.gw.events.iter().any(|e| matches!(e, Se::LinkEnded(LinkEnd::TimedOut))), "{:?}", h.gw.events);
    assert!(h.gw.errors.is_empty(), "poll_transmit on the ended link: {:?}", h.gw.errors);
    // The input the fuzzer found: wait, wait, ping, wait, then far ahead.
    fuzz::session_messages::run(&[0x10, 0x00, 0x00, 0x01, 0x00, 0x00]);
}
