//! Target `session_messages`: every session body decoder, and a core `ServerConnection` and a
//! core `Client`, each on an open link, fed arbitrary packets through `handle`.
//!
//! Input: `mode: u8`, then stream-framed records (`BSUInt(len) ++ body`, read leniently). A
//! record of 0 bytes moves the clock 7 s (keepalive and request timeouts are reachable); one of 1
//! byte is an action of the application (ping, request, notify, register, close, a new link...);
//! anything longer is a packet body for the machine's `handle`. Mode bit 0 picks the machine
//! (0: server, 1: client); the other bits pick how its application answers (accept, challenge or
//! refuse an init; take or refuse subscriptions and registrations; auto-ack; hold acks).
//!
//! Before the records, a scripted init between the machine and a real peer machine opens the
//! link, so the records reach an open session (and a record can still re-init it).
//!
//! Asserts:
//! - every body decoder of `session::message` on every record's payload: a value that decodes
//!   re-encodes to bytes that decode to the same value; lists iterate as many items as they count;
//! - the machine: `handle` fails with the packet parser's error exactly when the body does not
//!   parse; registrations reach the server with consecutive sequence numbers; answers and
//!   failures are reported only for our requests in flight, once each; a client's `Registered`
//!   never passes its next sequence number; the server's credit follows its notifications and the
//!   client's acks; everything either machine writes parses, ERQ comes before EOF and nothing
//!   follows EOF on the same link; a link ends at most once.

use std::collections::BTreeSet;

use rivulet_core::model::{
    EventId, EventList, EventPayloadRef, EventRef, EventType, EventTypeRef, ListBuilder, QueryLatest, QueryParams,
    QueryResult, RegisterEventRef, Status, Timestamp, TypeList,
};
use rivulet_core::session::message::{
    self, INLINE_TYPE, IdDelta, NotifyBody, PROTOCOL_VERSION, RegisterBody, RegisterList, RegisteredList,
};
use rivulet_core::session::{
    Accepted, Client, ClientConfig, ClientEvent, Error, Incoming, InitRequest, InitResponse, Limits, MessageKind,
    RequestId, ServerConfig, ServerConnection, ServerEvent, TimerEvent,
};
use rivulet_core::time::{Duration, Instant};
use rivulet_core::wire::{FrameDecoder, FrameWriter, Framing, PacketKind, PacketRepr, StreamDecoder};

use super::input::{Input, records};

/// The fuzzed server: 4 requests in flight, 8 aliases each way.
pub type FuzzServer = ServerConnection<4, 8>;
/// The fuzzed client: 512 bytes of outbox, 4 requests, 4 aliases, 128 bytes of subscriptions.
pub type FuzzClient = Client<'static, [u8; 512], 4, 4, 128>;

/// Mode bit 0: which machine.
pub const MODE_CLIENT: u8 = 0x01;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let rest = input.rest();
    for record in records(rest) {
        check_bodies(record);
    }
    if mode & MODE_CLIENT == 0 {
        let (mut harness, _peer) = ServerHarness::new(mode);
        for record in records(rest) {
            harness.record(record);
        }
        harness.finish();
    } else {
        let (mut harness, _peer) = ClientHarness::new(mode);
        for record in records(rest) {
            harness.record(record);
        }
        harness.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// Body decoders
// ---------------------------------------------------------------------------------------------

/// Decodes `$bytes` as `$ty`; a value re-encodes to bytes that decode to it again.
macro_rules! round_trip {
    ($ty:ty, $bytes:expr) => {{
        let bytes: &[u8] = $bytes;
        match message::decode::<$ty>(bytes) {
            Ok(value) => {
                let mut buf = vec![0u8; bytes.len() * 2 + 64];
                let n = message::encode_into(&value, &mut buf).expect("a decoded value encodes");
                let again = message::decode::<$ty>(&buf[..n]).expect("its encoding decodes");
                assert_eq!(again, value);
                Some(value)
            }
            Err(e) => {
                assert_eq!(e, Error::Decode);
                None
            }
        }
    }};
}

/// Decodes `$bytes` as a body with subject `$subject` (an inline type first when 0).
macro_rules! subject_round_trip {
    ($ty:ty, $subject:expr, $bytes:expr) => {{
        let (subject, bytes): (u64, &[u8]) = ($subject, $bytes);
        if let Ok((inline, body)) = message::decode_subject::<$ty>(subject, bytes) {
            assert_eq!(inline.is_some(), subject == INLINE_TYPE);
            let mut buf = vec![0u8; bytes.len() * 2 + 64];
            let mut n = 0;
            if let Some(ty) = inline {
                n = message::encode_into(&ty, &mut buf).expect("a decoded type encodes");
            }
            n += message::encode_into(&body, &mut buf[n..]).expect("a decoded body encodes");
            let again = message::decode_subject::<$ty>(subject, &buf[..n]).expect("its encoding decodes");
            assert_eq!(again, (inline, body));
        }
    }};
}

/// Every session body decoder on `record`'s payload (or on the record when it is no packet).
pub fn check_bodies(record: &[u8]) {
    let (subject, payload) = match PacketRepr::parse_bytes(record) {
        Ok(repr) => (repr.tag, repr.payload),
        Err(_) => (1, record),
    };
    round_trip!(InitRequest<'_>, payload);
    round_trip!(InitResponse<'_>, payload);
    round_trip!(Accepted, payload);
    round_trip!(Limits, payload);
    round_trip!(Status, payload);
    round_trip!(IdDelta, payload);
    round_trip!(&str, payload);
    round_trip!(EventTypeRef<'_>, payload);
    round_trip!(QueryParams<'_>, payload);
    if let Some(list) = round_trip!(TypeList<'_>, payload) {
        assert_eq!(list.iter().count(), list.len());
    }
    if let Some(list) = round_trip!(RegisterList<'_>, payload) {
        assert_eq!(list.iter().count(), list.len());
    }
    if let Some(list) = round_trip!(RegisteredList<'_>, payload) {
        assert_eq!(list.iter().count(), list.len());
    }
    if let Some(result) = round_trip!(QueryResult<'_>, payload) {
        assert_eq!(result.events.iter().count(), result.events.len());
    }
    for subject in [INLINE_TYPE, subject.max(1)] {
        subject_round_trip!(RegisterBody<'_>, subject, payload);
        subject_round_trip!(NotifyBody<'_>, subject, payload);
    }
}

// ---------------------------------------------------------------------------------------------
// What either machine writes
// ---------------------------------------------------------------------------------------------

/// The peer's view of one link of the fuzzed machine.
#[derive(Debug, Default)]
struct LinkView {
    erq_sent: bool,
    eof_sent: bool,
    ends: u32,
}

impl LinkView {
    /// Checks stream-framed bytes the machine wrote; returns their bodies.
    fn sent(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let bodies = bodies(bytes);
        for body in &bodies {
            let repr = PacketRepr::parse_bytes(body).expect("every packet we send parses");
            assert!(!self.eof_sent, "{repr:?} after our EOF");
            match repr.kind {
                PacketKind::EndOfRequests => self.erq_sent = true,
                PacketKind::EndOfFile => {
                    assert!(self.erq_sent, "EOF before ERQ");
                    self.eof_sent = true;
                }
                PacketKind::Request { .. } if repr.channel == message::CHANNEL_APP => {
                    assert!(!self.erq_sent, "an application request after our ERQ");
                }
                _ => {}
            }
        }
        bodies
    }

    fn ended(&mut self) {
        self.ends += 1;
        assert_eq!(self.ends, 1, "a link ends once");
    }
}

/// Splits stream-framed bytes into bodies; they must be well framed.
pub fn bodies(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut rx = vec![0u8; bytes.len().max(1)];
    let mut decoder = StreamDecoder::new(&mut rx);
    assert_eq!(decoder.push(bytes), bytes.len());
    let mut out = Vec::new();
    while let Some(body) = decoder.next_body().expect("well framed") {
        out.push(body.to_vec());
    }
    out
}

/// Runs `write` on a fresh 4 KiB stream writer; returns its result and the bytes.
fn write<T>(write: impl FnOnce(&mut FrameWriter<'_>) -> T) -> (T, Vec<u8>) {
    let mut tx = vec![0u8; 4096];
    let mut out = FrameWriter::new(&mut tx, Framing::Stream);
    let result = write(&mut out);
    (result, out.pending().to_vec())
}

fn ty(path: &str) -> EventType<256> {
    EventType::parse_path(path).expect("a valid type")
}

/// Types the applications use: short ones take aliases, the last is too long for one.
const TYPES: [&str; 5] = [
    "sensor/a",
    "sensor/b/temp",
    "alarm/x",
    "door/front",
    "a/very/long/type/name/that/does/not/fit/the/sixty/four/bytes/of/an/alias",
];

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// A server connection on an open link and the application around it.
#[derive(Debug)]
pub struct ServerHarness {
    pub server: FuzzServer,
    pub now: Instant,
    mode: u8,
    link: LinkView,
    outstanding: BTreeSet<RequestId>,
    /// Sequence number the next registration must carry (`None` before an init is accepted).
    next_seq: Option<u32>,
    last_seq: u32,
    /// The client's window (from its init) and the notifications it has not acked.
    client_window: u16,
    in_flight: u32,
    unacked: u32,
    instance: u64,
    /// Everything the server wrote, stream-framed.
    pub sent: Vec<u8>,
}

impl ServerHarness {
    fn config(mode: u8) -> ServerConfig {
        ServerConfig {
            window: 4,
            aliases: 4,
            max_packet: 2048,
            keepalive: Duration::from_secs(20),
            max_keepalive: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
            auto_ack: mode & 0x10 == 0,
        }
    }

    /// A server whose link a real client opened; returns the client too (open as well).
    pub fn new(mode: u8) -> (Self, FuzzClient) {
        let now = Instant::from_millis(1_000);
        let mut harness = ServerHarness {
            server: FuzzServer::new(now, Self::config(mode)),
            now,
            mode: mode & !0x0c, // the scripted init is accepted
            link: LinkView::default(),
            outstanding: BTreeSet::new(),
            next_seq: None,
            last_seq: 0,
            client_window: 0,
            in_flight: 0,
            unacked: 0,
            instance: 0,
            sent: Vec::new(),
        };
        let mut client = FuzzClient::new(ClientConfig::new("fuzz-peer"), [0; 512]);
        client.subscribe(ty("sensor/*").as_ref()).expect("room");
        client.link_up(now);
        let (result, init) = write(|out| client.poll_transmit(now, out));
        result.expect("the init fits");
        for body in bodies(&init) {
            let answer = harness.record(&body);
            for reply in bodies(&answer) {
                let connected = client.handle(now, &reply).expect("the client takes the answer");
                assert!(matches!(connected, Some(ClientEvent::Connected { .. })), "{connected:?}");
            }
        }
        assert!(harness.server.is_open(), "the scripted init opened the link");
        harness.mode = mode;
        (harness, client)
    }

    /// Takes one record; returns what the server wrote because of it.
    pub fn record(&mut self, record: &[u8]) -> Vec<u8> {
        let start = self.sent.len();
        match record {
            [] => self.now = self.now + Duration::from_secs(7),
            &[action] => self.act(action),
            body => self.receive(body),
        }
        self.settle(self.now);
        self.sent[start..].to_vec()
    }

    /// Runs the timers far ahead: whatever is in flight times out, the link may end.
    pub fn finish(&mut self) {
        self.settle(self.now + Duration::from_secs(3600));
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.link.sent(bytes);
        self.sent.extend_from_slice(bytes);
    }

    fn receive(&mut self, body: &[u8]) {
        let parsed = PacketRepr::parse_bytes(body).map(|repr| {
            if repr.channel == message::CHANNEL_SESSION
                && let PacketKind::Request { rq_type, .. } = repr.kind
                && rq_type == MessageKind::Init as u64
            {
                // An init starts a new link on a server that is not awaiting one, even if its body
                // then fails to decode: forget the old link.
                self.new_link();
            }
        });
        let now = self.now;
        let event = match self.server.handle(now, body) {
            Ok(event) => event.map(|e| owned_server_event(&e)),
            Err(error) => {
                if let Err(e) = parsed {
                    assert_eq!(error, Error::Wire(e));
                } else {
                    assert!(!matches!(error, Error::Wire(_)), "{error:?} for a body that parses");
                }
                None
            }
        };
        if let Some(event) = event {
            self.react(event);
        }
    }

    fn react(&mut self, event: Se) {
        match event {
            Se::Init { from, first_seq, window, keepalive_ms } => {
                self.new_link();
                self.client_window = window;
                let (result, bytes) = match self.mode >> 2 & 3 {
                    2 => write(|out| self.server.challenge(from, b"nonce", out)),
                    3 => write(|out| self.server.refuse(from, "refused", out)),
                    _ => {
                        let accepted = Accepted {
                            version: PROTOCOL_VERSION,
                            capabilities: message::CAPABILITIES,
                            status: Status::Operational,
                            server_id: 1,
                            server_session: 7,
                            session: 100,
                            next_seq: first_seq,
                            limits: self.server.limits(),
                            keepalive_ms,
                        };
                        self.next_seq = Some(first_seq);
                        write(|out| self.server.accept(from, &accepted, out))
                    }
                };
                result.expect("an init is answered");
                self.emit(&bytes);
            }
            Se::Subscribe { from } => {
                let (result, bytes) = if self.mode & 0x20 != 0 {
                    write(|out| self.server.refuse(from, "not allowed", out))
                } else {
                    write(|out| self.server.respond_raw(from, 0, &[], out))
                };
                assert_answered(result);
                self.emit(&bytes);
            }
            Se::Register { seq } => {
                let expected = self.next_seq.expect("a registration on an open link");
                assert_eq!(seq, expected, "registrations come in sequence");
                self.next_seq = Some(seq.wrapping_add(1));
                self.last_seq = seq;
                if self.server_config().auto_ack {
                    // acknowledged by the machine itself
                } else {
                    self.unacked += 1;
                }
                if self.mode & 0x40 != 0 {
                    // A closing link still takes the client's registrations, but says nothing more.
                    let (result, bytes) = write(|out| self.server.refuse_registration(seq, "refused", out));
                    assert!(allowed(result, &[Error::Closed]), "{result:?}");
                    self.emit(&bytes);
                }
            }
            Se::RegisterRequest { from, count } => {
                let mut storage = vec![0u8; 2048];
                let mut list = ListBuilder::new(&mut storage);
                let kind = ty(TYPES[0]);
                for _ in 0..count.min(8) {
                    self.instance += 1;
                    let event = sample_event(self.instance, kind.as_ref());
                    list.push(&event).expect("room");
                }
                let events: EventList<'_> = list.finish();
                let (result, bytes) = write(|out| self.server.respond(from, &events, out));
                assert_answered(result);
                self.emit(&bytes);
            }
            Se::Query { from } => {
                let mut storage = vec![0u8; 512];
                let mut list = ListBuilder::new(&mut storage);
                let kind = ty(TYPES[1]);
                list.push(&sample_event(1, kind.as_ref())).expect("room");
                let result = QueryResult { events: list.finish(), more_follows: false };
                let (result, bytes) = write(|out| self.server.respond(from, &result, out));
                assert_answered(result);
                self.emit(&bytes);
            }
            Se::Request { from, payload } => {
                let (result, bytes) = write(|out| self.server.respond_raw(from, 3, &payload, out));
                assert_answered(result);
                self.emit(&bytes);
            }
            Se::Acked { count } => {
                assert!(count <= self.in_flight, "acked {count} of {} in flight", self.in_flight);
                self.in_flight -= count;
            }
            Se::Answer(id) => assert!(self.outstanding.remove(&id), "{id:?} answered but not in flight"),
            Se::LinkEnded => self.link.ended(),
        }
        if self.server.is_open() {
            assert_eq!(self.server.credit(), u32::from(self.client_window).saturating_sub(self.in_flight));
        }
    }

    /// What an init resets (a new link, or the same one challenged before).
    fn new_link(&mut self) {
        self.link = LinkView::default();
        self.outstanding.clear();
        self.in_flight = 0;
        self.unacked = 0;
        self.client_window = 0;
        self.next_seq = None;
    }

    fn server_config(&self) -> ServerConfig {
        Self::config(self.mode)
    }

    fn act(&mut self, action: u8) {
        let now = self.now;
        let arg = action >> 3;
        let (ok, bytes) = match action % 8 {
            0 => {
                let (result, bytes) = write(|out| self.server.ping(now, out));
                (self.track(result), bytes)
            }
            1 => {
                self.instance += 1;
                let kind = ty(TYPES[usize::from(arg) % TYPES.len()]);
                let event = sample_event(self.instance, kind.as_ref());
                let (result, bytes) = write(|out| self.server.notify(&event, out));
                match result {
                    Ok(()) => self.in_flight += 1,
                    Err(e) => assert!(
                        matches!(e, Error::NotConnected | Error::Closed | Error::NoCredit | Error::TooLarge),
                        "{e:?}"
                    ),
                }
                (true, bytes)
            }
            2 => {
                let status = [Status::Standby, Status::Starting, Status::Operational, Status::Stopping];
                let (result, bytes) = write(|out| self.server.set_status(status[usize::from(arg) % 4], out));
                (allowed(result, &[Error::NotConnected, Error::Closed]), bytes)
            }
            3 => {
                let (result, bytes) = write(|out| self.server.refuse_registration(self.last_seq, "refused", out));
                (allowed(result, &[Error::NotConnected, Error::Closed]), bytes)
            }
            4 => {
                let (result, bytes) =
                    write(|out| self.server.request(now, u64::from(arg), u64::from(action & 1), b"call", out));
                (self.track(result), bytes)
            }
            5 => {
                let (result, bytes) = write(|out| self.server.close_with_reason("bye", out));
                (allowed(result, &[]), bytes)
            }
            6 => {
                self.server.acknowledge(self.unacked.min(u32::from(arg) + 1));
                self.unacked -= self.unacked.min(u32::from(arg) + 1);
                (true, Vec::new())
            }
            _ => {
                self.server.close();
                (true, Vec::new())
            }
        };
        assert!(ok);
        self.emit(&bytes);
    }

    fn track(&mut self, result: Result<RequestId, Error>) -> bool {
        match result {
            Ok(id) => assert!(self.outstanding.insert(id), "{id:?} reused"),
            // TooLarge: the request would not fit the peer's `max_packet` (and is not sent).
            Err(e) => assert!(
                matches!(e, Error::NotConnected | Error::Closed | Error::TooManyRequests | Error::TooLarge),
                "{e:?}"
            ),
        }
        true
    }

    fn settle(&mut self, now: Instant) {
        for _ in 0..16 {
            let mut moved = false;
            while let Some(event) = self.server.poll(now) {
                moved = true;
                self.react(match event {
                    TimerEvent::RequestFailed { id, .. } => Se::Answer(id),
                    TimerEvent::LinkEnded(_) => Se::LinkEnded,
                });
            }
            let (result, bytes) = write(|out| self.server.poll_transmit(now, out));
            result.expect("transmit");
            moved |= !bytes.is_empty();
            self.emit(&bytes);
            if !moved {
                break;
            }
        }
        let _ = self.server.poll_timeout();
        let _ = self.server.stats();
    }
}

/// A [`ServerEvent`], owned.
#[derive(Debug)]
enum Se {
    Init { from: Incoming, first_seq: u32, window: u16, keepalive_ms: u32 },
    Subscribe { from: Incoming },
    Register { seq: u32 },
    RegisterRequest { from: Incoming, count: usize },
    Query { from: Incoming },
    Request { from: Incoming, payload: Vec<u8> },
    Acked { count: u32 },
    Answer(RequestId),
    LinkEnded,
}

fn owned_server_event(event: &ServerEvent<'_>) -> Se {
    match *event {
        ServerEvent::Init { from, request } => {
            assert_eq!(request.version, PROTOCOL_VERSION, "other versions are refused by the machine");
            assert_eq!(request.subscriptions.iter().count(), request.subscriptions.len());
            Se::Init {
                from,
                first_seq: request.first_seq,
                window: request.limits.window,
                keepalive_ms: request.keepalive_ms,
            }
        }
        ServerEvent::Subscribe { from, subscriptions } => {
            assert_eq!(subscriptions.iter().count(), subscriptions.len());
            Se::Subscribe { from }
        }
        ServerEvent::Register { seq, event } => {
            let _ = event.event_type.segments().count();
            Se::Register { seq }
        }
        ServerEvent::RegisterRequest { from, events } => {
            assert_eq!(events.iter().count(), events.len());
            Se::RegisterRequest { from, count: events.len() }
        }
        ServerEvent::Query { from, .. } => Se::Query { from },
        ServerEvent::Request { from, payload, .. } => Se::Request { from, payload: payload.to_vec() },
        ServerEvent::Acked { count } => Se::Acked { count },
        ServerEvent::Response { id, .. } | ServerEvent::RequestFailed { id, .. } => Se::Answer(id),
        ServerEvent::LinkEnded(_) => Se::LinkEnded,
    }
}

/// An answer to a request in hand goes out, or the link is past it (our EOF is out) or the
/// client could not receive it.
fn assert_answered(result: Result<(), Error>) {
    if let Err(e) = result {
        assert!(matches!(e, Error::Closed | Error::TooLarge), "{e:?}");
    }
}

fn allowed(result: Result<(), Error>, errors: &[Error]) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => errors.contains(&e),
    }
}

fn sample_event(instance: u64, event_type: EventTypeRef<'_>) -> EventRef<'_> {
    EventRef {
        id: EventId { server: 1, session: 7, instance },
        event_type,
        timestamp: Timestamp { s: 1_700_000_000 + instance as i64, us: 0 },
        source_timestamp: None,
        payload: Some(EventPayloadRef::Json("42")),
    }
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// A client on an open link and the application around it.
#[derive(Debug)]
pub struct ClientHarness {
    pub client: FuzzClient,
    pub now: Instant,
    mode: u8,
    link: LinkView,
    outstanding: BTreeSet<RequestId>,
    /// Everything the client wrote, stream-framed.
    pub sent: Vec<u8>,
}

impl ClientHarness {
    /// A client whose link a real server accepted; returns the server too (open as well).
    pub fn new(mode: u8) -> (Self, FuzzServer) {
        let now = Instant::from_millis(1_000);
        let config = ClientConfig { window: 4, hold_acks: mode & 0x02 != 0, ..ClientConfig::new("fuzz") };
        let mut client = FuzzClient::new(config, [0; 512]);
        client.subscribe(ty("sensor/*").as_ref()).expect("room");
        client.register(ty(TYPES[0]).as_ref(), None, Some(EventPayloadRef::Json("1"))).expect("room");
        client.link_up(now);
        let mut harness = ClientHarness {
            client,
            now,
            mode,
            link: LinkView::default(),
            outstanding: BTreeSet::new(),
            sent: Vec::new(),
        };
        let mut server = FuzzServer::new(now, ServerHarness::config(0));
        let limits = server.limits();
        let (result, init) = write(|out| harness.client.poll_transmit(now, out));
        result.expect("the init fits");
        harness.emit(&init);
        for body in bodies(&init) {
            let Ok(Some(ServerEvent::Init { from, request })) = server.handle(now, &body) else {
                panic!("the server sees the init");
            };
            let accepted = Accepted {
                version: PROTOCOL_VERSION,
                capabilities: message::CAPABILITIES,
                status: Status::Operational,
                server_id: 1,
                server_session: 7,
                session: 100,
                next_seq: request.first_seq,
                limits,
                keepalive_ms: request.keepalive_ms,
            };
            let (result, answer) = write(|out| server.accept(from, &accepted, out));
            result.expect("accept");
            for reply in bodies(&answer) {
                harness.record(&reply);
            }
        }
        assert!(harness.client.is_connected(), "the scripted init opened the link");
        (harness, server)
    }

    /// Takes one record; returns what the client wrote because of it.
    pub fn record(&mut self, record: &[u8]) -> Vec<u8> {
        let start = self.sent.len();
        match record {
            [] => self.now = self.now + Duration::from_secs(7),
            &[action] => self.act(action),
            body => self.receive(body),
        }
        self.settle(self.now);
        self.sent[start..].to_vec()
    }

    pub fn finish(&mut self) {
        self.settle(self.now + Duration::from_secs(3600));
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.link.sent(bytes);
        self.sent.extend_from_slice(bytes);
    }

    fn receive(&mut self, body: &[u8]) {
        let parsed = PacketRepr::parse_bytes(body).map(|_| ());
        let now = self.now;
        let next_seq = self.client.next_seq();
        let event = match self.client.handle(now, body) {
            Ok(event) => event.map(|e| owned_client_event(&e, next_seq)),
            Err(error) => {
                if let Err(e) = parsed {
                    assert_eq!(error, Error::Wire(e));
                } else {
                    assert!(!matches!(error, Error::Wire(_)), "{error:?} for a body that parses");
                }
                None
            }
        };
        if let Some(event) = event {
            self.react(event);
        }
    }

    fn react(&mut self, event: Ce) {
        match event {
            Ce::Challenge => self.client.answer_challenge(b"proof").expect("a challenge is answered"),
            Ce::Request(from) => {
                let (result, bytes) = if self.mode & 0x04 != 0 {
                    write(|out| self.client.refuse(from, "no", out))
                } else {
                    write(|out| self.client.respond(from, 1, b"pong", out))
                };
                if let Err(e) = result {
                    assert!(matches!(e, Error::Closed | Error::NotConnected), "{e:?}");
                }
                self.emit(&bytes);
            }
            Ce::Answer(id) => assert!(self.outstanding.remove(&id), "{id:?} answered but not in flight"),
            Ce::Event => {
                if self.mode & 0x08 != 0 {
                    assert!(self.client.release(1) <= 1);
                }
            }
            Ce::LinkEnded => self.link.ended(),
            Ce::Other => {}
        }
        assert!(self.client.requests_in_flight() <= 4);
    }

    fn act(&mut self, action: u8) {
        let now = self.now;
        let arg = action >> 4;
        let bytes = match action % 10 {
            0 => {
                let (result, bytes) = write(|out| self.client.ping(now, out));
                self.track(result);
                bytes
            }
            1 => {
                let params = QueryParams::Latest(QueryLatest { event_types: None });
                let (result, bytes) = write(|out| self.client.query(now, &params, out));
                self.track(result);
                bytes
            }
            2 => {
                let (result, bytes) = write(|out| self.client.request(now, u64::from(arg), 0, b"call", out));
                self.track(result);
                bytes
            }
            3 => {
                let next = self.client.next_seq();
                let kind = ty(TYPES[usize::from(arg) % TYPES.len()]);
                match self.client.register(kind.as_ref(), None, Some(EventPayloadRef::Json("7"))) {
                    Ok(seq) => assert_eq!(seq, next),
                    // TooLarge: over the max_packet the server announced.
                    Err(e) => assert!(matches!(e, Error::OutboxFull | Error::TooLarge), "{e:?}"),
                }
                Vec::new()
            }
            4 => {
                let pattern = ty(if arg & 1 == 0 { "alarm/?" } else { "door/*" });
                if arg & 2 == 0 {
                    let result = self.client.subscribe(pattern.as_ref());
                    assert!(matches!(result, Ok(()) | Err(Error::Model(_))), "{result:?}");
                } else {
                    self.client.unsubscribe(pattern.as_ref());
                }
                Vec::new()
            }
            5 => {
                let mut storage = [0u8; 128];
                let mut list = ListBuilder::new(&mut storage);
                let kind = ty(TYPES[2]);
                let event = RegisterEventRef { event_type: kind.as_ref(), source_timestamp: None, payload: None };
                list.push(&event).expect("room");
                let events: RegisterList<'_> = list.finish();
                let (result, bytes) = write(|out| self.client.register_with_response(now, events, out));
                self.track(result);
                bytes
            }
            6 => {
                assert!(self.client.release(u32::from(arg)) <= u32::from(arg));
                Vec::new()
            }
            7 => {
                self.client.close();
                Vec::new()
            }
            8 => {
                // A new link: the next records may answer its init.
                self.client.link_down();
                self.client.link_up(now);
                self.link = LinkView::default();
                Vec::new()
            }
            _ => {
                let result = self.client.answer_challenge(b"proof");
                assert!(matches!(result, Ok(()) | Err(Error::Protocol | Error::NotConnected)), "{result:?}");
                Vec::new()
            }
        };
        self.emit(&bytes);
    }

    fn track(&mut self, result: Result<RequestId, Error>) {
        match result {
            Ok(id) => assert!(self.outstanding.insert(id), "{id:?} reused"),
            // TooLarge: the request would not fit the peer's `max_packet` (and is not sent).
            Err(e) => assert!(
                matches!(e, Error::NotConnected | Error::Closed | Error::TooManyRequests | Error::TooLarge),
                "{e:?}"
            ),
        }
    }

    fn settle(&mut self, now: Instant) {
        for _ in 0..16 {
            let mut moved = false;
            while let Some(event) = self.client.poll(now) {
                moved = true;
                self.react(match event {
                    TimerEvent::RequestFailed { id, .. } => Ce::Answer(id),
                    TimerEvent::LinkEnded(_) => Ce::LinkEnded,
                });
            }
            let (result, bytes) = write(|out| self.client.poll_transmit(now, out));
            result.expect("transmit");
            moved |= !bytes.is_empty();
            self.emit(&bytes);
            if !moved {
                break;
            }
        }
        let _ = self.client.poll_timeout();
        let _ = self.client.stats();
    }
}

/// A [`ClientEvent`], as much as the application needs.
#[derive(Debug)]
enum Ce {
    Challenge,
    Request(Incoming),
    Answer(RequestId),
    Event,
    LinkEnded,
    Other,
}

fn owned_client_event(event: &ClientEvent<'_>, next_seq: u32) -> Ce {
    match *event {
        ClientEvent::Challenge { .. } => Ce::Challenge,
        ClientEvent::Request { from, .. } => Ce::Request(from),
        ClientEvent::Response { id, reply } => {
            if let rivulet_core::session::Reply::Query(result) = reply {
                assert_eq!(result.events.iter().count(), result.events.len());
            }
            Ce::Answer(id)
        }
        ClientEvent::RequestFailed { id, .. } => Ce::Answer(id),
        ClientEvent::Event(event) => {
            assert_eq!(event.event_type.segments().count(), event.event_type.len());
            Ce::Event
        }
        ClientEvent::Registered { below_seq } => {
            assert!(message::seq_at_or_after(next_seq, below_seq), "registered below {below_seq}, next is {next_seq}");
            Ce::Other
        }
        ClientEvent::LinkEnded(_) => Ce::LinkEnded,
        _ => Ce::Other,
    }
}
