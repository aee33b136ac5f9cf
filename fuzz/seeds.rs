//! Writes the seed corpora of the fuzz targets into `corpus/<target>/seed-*`:
//!
//!     cargo test --manifest-path fuzz/Cargo.toml --test seeds
//!
//! Seeds are the golden vectors (the cs.packetstream capture of `shared/reference/peers.md` §1,
//! as `core/tests/wire.rs` holds it) and the bytes the real machines write to each other in a
//! session like the one `cargo run -p rivulet-core --example sizes` prints, each in the input
//! format of its target. Files not named `seed-*` (crash regressions) are kept. Every seed is run
//! through its target's harness here, so a seed that trips an assertion fails this test.

use std::path::{Path, PathBuf};

use rivulet_core::model::{
    EventId, EventList, EventPayloadRef, EventRef, EventType, ListBuilder, QueryResult, Status, Timestamp,
};
use rivulet_core::session::{
    Accepted, Client, ClientConfig, ClientEvent, Limits, ServerConfig, ServerConnection, ServerEvent,
};
use rivulet_core::session::{Incoming, message};
use rivulet_core::time::Instant;
use rivulet_core::wire::{FrameWriter, Framing, PacketRepr};
use rivulet_fuzz::input::stream_of;
use rivulet_fuzz::session_messages::{ClientHarness, MODE_CLIENT, ServerHarness, bodies};

type Seeds = Vec<(String, Vec<u8>)>;
/// A target, its seeds and its harness.
type Corpus = (&'static str, Seeds, fn(&[u8]));

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}

/// The 1024 payload bytes of the captured large request (`core/tests/wire.rs`).
fn big_payload() -> Vec<u8> {
    (0..1024u32).map(|i| (i * 7 + 3) as u8).collect()
}

/// peers.md §1, client to server, as stream frames.
fn golden_client_frames() -> Vec<Vec<u8>> {
    let mut big = hex("88 03 07 02 02");
    big.extend(big_payload());
    let mut frames: Vec<Vec<u8>> = ["08 02 02 01 68656c6c6f", "09 03 02 02 616263646566", "04 04 02 03 78"]
        .iter()
        .chain(&["08 05 16 04 3132333435", "03 06 02 01"])
        .map(|h| hex(h))
        .collect();
    frames.push(big);
    frames.push(hex("03 01 02 00"));
    frames.push(hex("03 00 02 00"));
    frames
}

/// peers.md §1, server to client, as stream frames.
fn golden_server_frames() -> Vec<Vec<u8>> {
    [
        "07 02 04 68656c6c6f",
        "08 03 04 666564636261",
        "1a 04 00 657863657074696f6e20647572696e672068616e646c6572",
        "03 05 34 35",
        "02 06 04",
        "03 01 02 00",
        "03 00 02 00",
    ]
    .iter()
    .map(|h| hex(h))
    .collect()
}

/// A frame's body (after its length prefix).
fn body_of_frame(frame: &[u8]) -> Vec<u8> {
    bodies(frame).remove(0)
}

fn ty(path: &str) -> EventType<256> {
    EventType::parse_path(path).unwrap()
}

fn write<T>(f: impl FnOnce(&mut FrameWriter<'_>) -> T) -> (T, Vec<u8>) {
    let mut buf = vec![0u8; 8192];
    let mut out = FrameWriter::new(&mut buf, Framing::Stream);
    let result = f(&mut out);
    (result, out.pending().to_vec())
}

/// A session between a real client and server: init, subscribe, registrations (aliased and
/// inline), query, register-with-response, ping, notifications, status, close. Returns the
/// bodies each way.
fn transcript() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let t = Instant::from_millis(0);
    let mut c2s = Vec::new();
    let mut s2c = Vec::new();
    let mut client: Client<'_> = Client::new(ClientConfig::new("dev1"), [0; 1024]);
    let mut server: ServerConnection = ServerConnection::new(t, ServerConfig::default());
    client.subscribe(ty("sensor/*").as_ref()).unwrap();
    client.register(ty("a/b").as_ref(), None, Some(EventPayloadRef::Json("21.5"))).unwrap();
    let long = "x/".repeat(40) + "end";
    client.register(ty(&long).as_ref(), Some(Timestamp { s: 5, us: 6 }), None).unwrap();
    client.link_up(t);
    let event_type = ty("a/b");
    let event = EventRef {
        id: EventId { server: 1, session: 7, instance: 42 },
        event_type: event_type.as_ref(),
        timestamp: Timestamp { s: 1_700_000_000, us: 5 },
        source_timestamp: None,
        payload: Some(EventPayloadRef::Binary { kind: "u8", data: &[7] }),
    };
    let mut list_buf = [0u8; 256];
    let mut list = ListBuilder::new(&mut list_buf);
    list.push(&event).unwrap();
    let events: EventList<'_> = list.finish();

    for round in 0..6 {
        let (result, bytes) = write(|o| client.poll_transmit(t, o));
        result.unwrap();
        let mut replies = Vec::new();
        for body in bodies(&bytes) {
            c2s.push(body.clone());
            let ask = ask(server.handle(t, &body));
            let limits = Limits { window: 64, aliases: 1, max_packet: 65536 };
            let (_, reply) = write(|o| answer(&mut server, ask, events, limits, o));
            replies.extend(reply);
        }
        let (_, more) = write(|o| {
            server.poll_transmit(t, o)?;
            if round == 1 {
                server.notify(&event, o)?;
                server.notify(&EventRef { id: EventId { instance: 43, ..event.id }, ..event }, o)?;
                server.set_status(Status::Stopping, o)?;
                server.ping(t, o)?;
                server.request(t, 3, 1, b"call", o)?;
            }
            if round == 4 {
                server.close_with_reason("stopping", o)?;
            }
            server.poll_transmit(t, o)
        });
        replies.extend(more);
        for body in bodies(&replies) {
            s2c.push(body.clone());
            if let Ok(Some(ClientEvent::Request { from, .. })) = client.handle(t, &body) {
                let (_, answer) = write(|o| client.respond(from, 1, b"answer", o));
                for body in bodies(&answer) {
                    c2s.push(body.clone());
                    let _ = server.handle(t, &body);
                }
            }
        }
        if round == 1 {
            let (_, bytes) = write(|o| {
                client.query(t, &rivulet_core::model::QueryParams::Latest(Default::default()), o)?;
                client.ping(t, o)?;
                client.request(t, 1, 0, b"app", o)?;
                let mut reg_buf = [0u8; 128];
                let mut regs = ListBuilder::new(&mut reg_buf);
                regs.push(&rivulet_core::model::RegisterEventRef {
                    event_type: event_type.as_ref(),
                    source_timestamp: None,
                    payload: Some(EventPayloadRef::Json("1")),
                })
                .unwrap();
                client.register_with_response(t, regs.finish(), o).map(|_| ())
            });
            let mut replies = Vec::new();
            for body in bodies(&bytes) {
                c2s.push(body.clone());
                let ask = ask(server.handle(t, &body));
                let limits = server.limits();
                let (_, reply) = write(|o| match ask {
                    Ask::Other => server.poll_transmit(t, o),
                    ask => answer(&mut server, ask, events, limits, o),
                });
                replies.extend(reply);
            }
            for body in bodies(&replies) {
                s2c.push(body.clone());
                let _ = client.handle(t, &body);
            }
        }
        if round == 3 {
            client.close();
        }
    }
    (c2s, s2c)
}

/// Seeds of the `packet` target: packet bodies.
fn packet_seeds(c2s: &[Vec<u8>], s2c: &[Vec<u8>]) -> Seeds {
    let mut seeds = Seeds::new();
    for (i, frame) in golden_client_frames().iter().enumerate() {
        seeds.push((format!("golden-c2s-{i:02}"), body_of_frame(frame)));
    }
    for (i, frame) in golden_server_frames().iter().enumerate() {
        seeds.push((format!("golden-s2c-{i:02}"), body_of_frame(frame)));
    }
    for (i, body) in c2s.iter().enumerate() {
        seeds.push((format!("session-c2s-{i:02}"), body.clone()));
    }
    for (i, body) in s2c.iter().enumerate() {
        seeds.push((format!("session-s2c-{i:02}"), body.clone()));
    }
    let mut channel = vec![0u8; 16];
    let n = PacketRepr::request(1, 300, 2, 5, b"ch1").emit(&mut channel).unwrap();
    seeds.push(("channel-1-request".into(), channel[..n].to_vec()));
    seeds.push(("redundant-groups".into(), hex("80 05 80 81 03 80 00 01 02")));
    seeds
}

/// `capacity - 1`, then the read sizes (each `r + 1`).
fn stream_header(capacity: usize, reads: &[u8]) -> Vec<u8> {
    let mut header = vec![(capacity - 1) as u8, reads.len() as u8];
    header.extend_from_slice(reads);
    header
}

fn stream_seeds(c2s: &[Vec<u8>], s2c: &[Vec<u8>]) -> Seeds {
    let golden_c2s: Vec<u8> = golden_client_frames().concat();
    let golden_s2c: Vec<u8> = golden_server_frames().concat();
    let cases: [(&str, usize, &[u8], Vec<u8>); 8] = [
        ("golden-c2s-whole", 256, &[], golden_c2s.clone()),
        ("golden-c2s-bytewise", 256, &[0], golden_c2s),
        ("golden-s2c-small-buffer", 30, &[6, 2], golden_s2c.clone()),
        ("golden-s2c-tiny-buffer", 3, &[0], golden_s2c),
        ("session-c2s", 256, &[16, 1, 200], stream_of(c2s)),
        ("session-s2c", 200, &[63], stream_of(s2c)),
        ("redundant-prefix", 64, &[1], hex("80 80 03 06 02 01 03 06 02 01")),
        ("overlong-prefix", 64, &[], hex("80 80 80 80 80 80 80 80 80 80 80 03 06 02 01")),
    ];
    cases
        .into_iter()
        .map(|(name, cap, reads, bytes)| (name.into(), [stream_header(cap, reads), bytes].concat()))
        .collect()
}

/// `capacity - 1` (u16 LE), then the read sizes.
fn serial_header(capacity: usize, reads: &[u8]) -> Vec<u8> {
    let mut header = ((capacity - 1) as u16).to_le_bytes().to_vec();
    header.push(reads.len() as u8);
    header.extend_from_slice(reads);
    header
}

fn serial_line<B: AsRef<[u8]>>(bodies: &[B]) -> Vec<u8> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = FrameWriter::new(&mut buf, Framing::Serial);
    for body in bodies {
        out.push_repr(&PacketRepr::parse_bytes(body.as_ref()).unwrap()).unwrap();
    }
    out.pending().to_vec()
}

fn serial_seeds(c2s: &[Vec<u8>], s2c: &[Vec<u8>]) -> Seeds {
    let golden: Vec<Vec<u8>> = golden_client_frames().iter().map(|f| body_of_frame(f)).collect();
    let c2s_line = serial_line(c2s);
    let mut damaged = c2s_line.clone();
    let at = damaged.len() / 3;
    damaged[at] ^= 0x5a;
    let mut lost = serial_line(&s2c[..s2c.len().min(6)]);
    let first_end = lost.iter().position(|&b| b == 0).unwrap();
    lost.drain(..=first_end); // the first frame lost whole: the next is out of sequence only if expected
    let mut junk = hex("13 37 00 00 ff ff ff 00");
    junk.extend(serial_line(&s2c[..2]));
    let cases: [(&str, usize, &[u8], Vec<u8>); 7] = [
        ("golden-c2s", 1100, &[], serial_line(&golden)),
        ("session-c2s", 1024, &[40, 3], c2s_line),
        ("session-s2c", 300, &[0], serial_line(s2c)),
        ("session-c2s-damaged", 1024, &[], damaged),
        ("session-s2c-first-lost", 512, &[9], lost),
        ("junk-then-frames", 64, &[2], junk),
        ("oversize-then-frame", 16, &[], [vec![0x41; 40], serial_line(&s2c[..1])].concat()),
    ];
    cases
        .into_iter()
        .map(|(name, cap, reads, bytes)| (name.into(), [serial_header(cap, reads), bytes].concat()))
        .collect()
}

/// Packets in both directions as the server harness and its peer client exchange them, from a
/// scenario of client operations and server actions.
fn server_seed(mode: u8, scenario: &[Step]) -> Vec<u8> {
    let (mut h, mut client) = ServerHarness::new(mode);
    let mut records: Vec<Vec<u8>> = Vec::new();
    for step in scenario {
        let mut pending = match step {
            Step::Peer(op) => {
                let now = h.now;
                let (_, mut bytes) = write(|o| op(&mut PeerOps::Client(&mut client), now, o));
                let (_, more) = write(|o| client.poll_transmit(now, o));
                bytes.extend(more);
                bodies(&bytes)
            }
            Step::Action(action) => {
                records.push(vec![*action]);
                let out = h.record(&[*action]);
                deliver_to_client(&mut client, h.now, &out)
            }
            Step::Wait => {
                records.push(Vec::new());
                let out = h.record(&[]);
                deliver_to_client(&mut client, h.now, &out)
            }
        };
        // Pump until quiet: what the client sends goes to the harness, its answers back.
        for _ in 0..8 {
            let (_, more) = write(|o| client.poll_transmit(h.now, o));
            pending.extend(bodies(&more));
            if pending.is_empty() {
                break;
            }
            let mut next = Vec::new();
            for body in pending.drain(..) {
                records.push(body.clone());
                let out = h.record(&body);
                next.extend(deliver_to_client(&mut client, h.now, &out));
            }
            pending = next;
        }
    }
    [vec![mode], stream_of(&records)].concat()
}

/// Hands the server harness's bytes to the peer client, which answers requests; returns what
/// the client wrote.
fn deliver_to_client(
    client: &mut rivulet_fuzz::session_messages::FuzzClient,
    now: Instant,
    bytes: &[u8],
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for body in bodies(bytes) {
        if let Ok(Some(ClientEvent::Request { from, .. })) = client.handle(now, &body) {
            let (_, answer) = write(|o| client.respond(from, 0, b"ok", o));
            out.extend(bodies(&answer));
        }
    }
    out
}

/// Packets as the client harness and its peer server exchange them.
fn client_seed(mode: u8, scenario: &[Step]) -> Vec<u8> {
    let (mut h, mut server) = ClientHarness::new(mode);
    let mut records: Vec<Vec<u8>> = Vec::new();
    // What the client sent after its init (declarations, registrations) reaches the server.
    let after_init: Vec<Vec<u8>> = bodies(&h.sent).into_iter().skip(1).collect();
    let mut pending = serve(&mut server, h.now, &after_init);
    for step in scenario.iter().chain(&[Step::Wait]) {
        let bytes = match step {
            Step::Peer(op) => {
                let now = h.now;
                let (_, bytes) = write(|o| op(&mut PeerOps::Server(&mut server), now, o));
                bodies(&bytes)
            }
            Step::Action(action) => {
                records.push(vec![*action]);
                let out = h.record(&[*action]);
                serve(&mut server, h.now, &bodies(&out))
            }
            Step::Wait => {
                records.push(Vec::new());
                let out = h.record(&[]);
                serve(&mut server, h.now, &bodies(&out))
            }
        };
        pending.extend(bytes);
        for _ in 0..8 {
            let (_, more) = write(|o| server.poll_transmit(h.now, o));
            pending.extend(bodies(&more));
            if pending.is_empty() {
                break;
            }
            let mut answers = Vec::new();
            for body in pending.drain(..) {
                records.push(body.clone());
                let out = h.record(&body);
                answers.extend(bodies(&out));
            }
            pending = serve(&mut server, h.now, &answers);
        }
    }
    [vec![mode | MODE_CLIENT], stream_of(&records)].concat()
}

/// The peer server takes what the client harness wrote and answers like a gateway.
fn serve(
    server: &mut rivulet_fuzz::session_messages::FuzzServer,
    now: Instant,
    from_client: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let event_type = ty("sensor/a");
    let event = EventRef {
        id: EventId { server: 1, session: 7, instance: 9 },
        event_type: event_type.as_ref(),
        timestamp: Timestamp { s: 1, us: 2 },
        source_timestamp: None,
        payload: Some(EventPayloadRef::Json("9")),
    };
    let mut list_buf = [0u8; 128];
    let mut list = ListBuilder::new(&mut list_buf);
    list.push(&event).unwrap();
    let events: EventList<'_> = list.finish();
    for body in from_client {
        let ask = ask(server.handle(now, body));
        let limits = server.limits();
        let (_, bytes) = write(|o| answer(server, ask, events, limits, o));
        out.extend(bodies(&bytes));
    }
    out
}

/// A server event, owned, so that the server can answer it.
enum Ask {
    Init { from: Incoming, first_seq: u32, keepalive_ms: u32 },
    Subscribe(Incoming),
    Query(Incoming),
    RegisterRequest(Incoming),
    Request(Incoming, Vec<u8>),
    Other,
}

fn ask(event: Result<Option<ServerEvent<'_>>, rivulet_core::session::Error>) -> Ask {
    match event {
        Ok(Some(ServerEvent::Init { from, request })) => {
            Ask::Init { from, first_seq: request.first_seq, keepalive_ms: request.keepalive_ms }
        }
        Ok(Some(ServerEvent::Subscribe { from, .. })) => Ask::Subscribe(from),
        Ok(Some(ServerEvent::Query { from, .. })) => Ask::Query(from),
        Ok(Some(ServerEvent::RegisterRequest { from, .. })) => Ask::RegisterRequest(from),
        Ok(Some(ServerEvent::Request { from, payload, .. })) => Ask::Request(from, payload.to_vec()),
        _ => Ask::Other,
    }
}

/// Answers like a gateway: accepts inits with `limits`, takes subscriptions, answers queries and
/// register requests with `events`, echoes application requests.
fn answer<const I: usize, const A: usize>(
    server: &mut ServerConnection<I, A>,
    ask: Ask,
    events: EventList<'_>,
    limits: Limits,
    out: &mut FrameWriter<'_>,
) -> Result<(), rivulet_core::session::Error> {
    match ask {
        Ask::Init { from, first_seq, keepalive_ms } => {
            let accepted = Accepted {
                version: message::PROTOCOL_VERSION,
                capabilities: message::CAPABILITIES,
                status: Status::Operational,
                server_id: 1,
                server_session: 7,
                session: 0x1234,
                next_seq: first_seq,
                limits,
                keepalive_ms,
            };
            server.accept(from, &accepted, out)
        }
        Ask::Subscribe(from) => server.respond_raw(from, 0, &[], out),
        Ask::Query(from) => server.respond(from, &QueryResult { events, more_follows: false }, out),
        Ask::RegisterRequest(from) => server.respond(from, &events, out),
        Ask::Request(from, payload) => server.respond_raw(from, 2, &payload, out),
        Ask::Other => Ok(()),
    }
}

/// The peer machine an operation runs on.
enum PeerOps<'a> {
    Client(&'a mut rivulet_fuzz::session_messages::FuzzClient),
    Server(&'a mut rivulet_fuzz::session_messages::FuzzServer),
}

type PeerOp = fn(&mut PeerOps<'_>, Instant, &mut FrameWriter<'_>) -> Result<(), rivulet_core::session::Error>;

enum Step {
    /// The peer machine does something; what it writes goes to the harness.
    Peer(PeerOp),
    /// A 1-byte record: an action of the harness's application.
    Action(u8),
    /// An empty record: the clock moves 7 s.
    Wait,
}

fn client_op(
    f: impl FnOnce(&mut rivulet_fuzz::session_messages::FuzzClient) -> Result<(), rivulet_core::session::Error>,
    peer: &mut PeerOps<'_>,
) -> Result<(), rivulet_core::session::Error> {
    match peer {
        PeerOps::Client(client) => f(client),
        PeerOps::Server(_) => unreachable!("a client operation on the server"),
    }
}

fn server_op(
    f: impl FnOnce(&mut rivulet_fuzz::session_messages::FuzzServer) -> Result<(), rivulet_core::session::Error>,
    peer: &mut PeerOps<'_>,
) -> Result<(), rivulet_core::session::Error> {
    match peer {
        PeerOps::Server(server) => f(server),
        PeerOps::Client(_) => unreachable!("a server operation on the client"),
    }
}

fn session_seeds() -> Seeds {
    use Step::{Action, Peer, Wait};
    let register: PeerOp = |p, _, _| {
        client_op(
            |c| {
                c.register(ty("sensor/a").as_ref(), None, Some(EventPayloadRef::Json("1")))?;
                c.register(ty("sensor/b/temp").as_ref(), Some(Timestamp { s: 9, us: 1 }), None)?;
                let long = "y/".repeat(35) + "z";
                c.register(ty(&long).as_ref(), None, Some(EventPayloadRef::Binary { kind: "raw", data: &[0, 1] }))
                    .map(|_| ())
            },
            p,
        )
    };
    let subscribe: PeerOp = |p, _, _| client_op(|c| c.subscribe(ty("alarm/?").as_ref()), p);
    let query: PeerOp = |p, now, o| {
        client_op(|c| c.query(now, &rivulet_core::model::QueryParams::Latest(Default::default()), o).map(|_| ()), p)
    };
    let ping: PeerOp = |p, now, o| client_op(|c| c.ping(now, o).map(|_| ()), p);
    let request: PeerOp = |p, now, o| client_op(|c| c.request(now, 4, 0, b"app call", o).map(|_| ()), p);
    let register_with_response: PeerOp = |p, now, o| {
        client_op(
            |c| {
                let mut buf = [0u8; 128];
                let mut list = ListBuilder::new(&mut buf);
                list.push(&rivulet_core::model::RegisterEventRef {
                    event_type: ty("door/front").as_ref(),
                    source_timestamp: None,
                    payload: Some(EventPayloadRef::Json("open")),
                })
                .unwrap();
                c.register_with_response(now, list.finish(), o).map(|_| ())
            },
            p,
        )
    };
    let close: PeerOp = |p, _, _| {
        client_op(
            |c| {
                c.close();
                Ok(())
            },
            p,
        )
    };
    let relink: PeerOp = |p, now, _| {
        client_op(
            |c| {
                c.link_down();
                c.link_up(now);
                Ok(())
            },
            p,
        )
    };
    let notify: PeerOp = |p, _, o| {
        server_op(
            |s| {
                let a = ty("sensor/a");
                let long = ty(&("w/".repeat(40) + "v"));
                for (instance, kind) in [(50, &a), (51, &a), (52, &long)] {
                    let event = EventRef {
                        id: EventId { server: 1, session: 7, instance },
                        event_type: kind.as_ref(),
                        timestamp: Timestamp { s: 100, us: instance as u32 },
                        source_timestamp: Some(Timestamp { s: 99, us: 0 }),
                        payload: Some(EventPayloadRef::Json("{}")),
                    };
                    s.notify(&event, o)?;
                }
                Ok(())
            },
            p,
        )
    };
    let status: PeerOp = |p, _, o| server_op(|s| s.set_status(Status::Stopping, o), p);
    let server_request: PeerOp = |p, now, o| server_op(|s| s.request(now, 2, 0, b"to device", o).map(|_| ()), p);
    let server_ping: PeerOp = |p, now, o| server_op(|s| s.ping(now, o).map(|_| ()), p);
    let refuse: PeerOp = |p, _, o| server_op(|s| s.refuse_registration(0, "not allowed", o), p);
    let server_close: PeerOp = |p, _, o| server_op(|s| s.close_with_reason("going away", o), p);

    let server_scenario = [
        Peer(register),
        Peer(subscribe),
        Peer(query),
        Peer(register_with_response),
        Peer(ping),
        Peer(request),
        Action(1),      // notify sensor/a
        Action(1 | 32), // notify a long type (inline)
        Action(2),      // status
        Action(0),      // ping
        Action(4 | 8),  // request
        Wait,
        Peer(close),
    ];
    let server_no_auto_ack = [Peer(register), Action(6 | 16), Action(3), Wait, Wait, Wait, Action(5), Peer(close)];
    let server_relink = [Peer(register), Peer(relink), Peer(register), Action(7)];
    let client_scenario = [
        Peer(notify),
        Peer(status),
        Peer(server_request),
        Peer(server_ping),
        Peer(refuse),
        Action(0), // ping
        Action(1), // query
        Action(2), // request
        Action(3), // register
        Action(5), // register with response
        Action(4), // subscribe
        Wait,
        Peer(server_close),
    ];
    let client_hold = [Peer(notify), Action(86), Action(3), Action(7), Wait, Wait, Wait]; // 86: release 5
    let client_relink = [Action(3), Action(8), Wait, Peer(notify), Action(0), Wait, Wait, Wait, Wait];
    vec![
        ("server-session".into(), server_seed(0x00, &server_scenario)),
        ("server-refusing".into(), server_seed(0x20 | 0x40, &server_scenario)),
        ("server-no-auto-ack".into(), server_seed(0x10, &server_no_auto_ack)),
        ("server-challenge-relink".into(), server_seed(0x08, &server_relink)),
        ("server-refuse-relink".into(), server_seed(0x0c, &server_relink)),
        ("client-session".into(), client_seed(0x00, &client_scenario)),
        ("client-refusing".into(), client_seed(0x04, &client_scenario)),
        ("client-hold-acks".into(), client_seed(0x02 | 0x08, &client_hold)),
        ("client-relink".into(), client_seed(0x00, &client_relink)),
    ]
}

fn event_type_seeds() -> Seeds {
    let packed = |path: &str| ty(path).as_ref().as_packed().to_vec();
    let pair = |a: &[u8], b: &[u8]| [vec![a.len() as u8], a.to_vec(), b.to_vec()].concat();
    vec![
        ("packed-pattern-and-type".into(), pair(&packed("sensor/?/*"), &packed("sensor/room1/temp"))),
        ("packed-question".into(), pair(&packed("a/?"), &packed("a/*"))),
        ("packed-star-inside".into(), pair(&packed("a/*/b"), &packed("a/x/b"))),
        ("packed-empty".into(), pair(&[], &packed("x"))),
        ("paths".into(), pair(b"sensor/*", b"sensor/room1/temp")),
        ("path-empty-segment".into(), pair(b"a//b", b"a/b")),
        ("long-segment".into(), pair(&packed(&"s".repeat(200)), &packed("?"))),
        ("utf8".into(), pair(&packed("k\u{e4}se/\u{1f600}"), "k\u{e4}se/*".as_bytes())),
    ]
}

/// Federation messages as a gateway sends them (first byte: 0 hello, 1 start, 2 adverts,
/// 3 events).
fn federation_seeds() -> Seeds {
    use rivulet_core::model::{EventId, Timestamp};
    use rivulet_core::owned::{Event, Payload};
    use rivulet_fuzz::gateway::federation::{
        Advert, Adverts, Events, Hello, LatestAsk, LatestFound, Routed, Start, encode,
    };
    let advert = |origin: u64, patterns: &[&str]| Advert {
        origin,
        name: format!("g{origin}"),
        version: 1_796_000_000_000_000 + origin,
        ttl: 64,
        period_s: 30,
        listen: Some("127.0.0.1:7780".into()),
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
    };
    let hello = Hello { version: 1, server_id: 2, name: "g2".into(), store_id: u64::MAX - 5, max_packet: 65_536 };
    let start = Start { holds: Some((77, 40)), adverts: vec![advert(2, &["t/*", "sensor/?/temp"]), advert(3, &[])] };
    let event = |instance: u64, ty: &str, payload: Option<Payload>| Event {
        id: EventId { server: 3, session: 2, instance },
        event_type: ty.into(),
        timestamp: Timestamp { s: 1_796_657_508, us: 827_128 },
        source_timestamp: (instance % 2 == 0).then_some(Timestamp { s: -5, us: 1 }),
        payload,
    };
    let events = [
        event(1, "t/3", Some(Payload::Json("1".into()))),
        event(2, "sensor/a/temp", Some(Payload::Binary { kind: "raw".into(), data: vec![0, 1, 2, 255] })),
        event(3, "a", None),
    ];
    let routed: Vec<Routed<'_>> = events.iter().map(|e| Routed { ttl: 63, event: e.as_ref() }).collect();
    let batch = encode(&Events { upto: 9, events: routed }).unwrap();
    let tagged = |tag: u8, body: Vec<u8>| [vec![tag], body].concat();
    vec![
        ("hello".into(), tagged(0, encode(&hello).unwrap())),
        ("start".into(), tagged(1, encode(&start).unwrap())),
        ("start-first-link".into(), tagged(1, encode(&Start { holds: None, adverts: vec![] }).unwrap())),
        ("adverts".into(), tagged(2, encode(&Adverts { adverts: vec![advert(4, &["x/*"])] }).unwrap())),
        (
            "advert-bad-pattern".into(),
            tagged(2, encode(&Adverts { adverts: vec![advert(5, &["a//b", "*/x"])] }).unwrap()),
        ),
        ("events".into(), tagged(3, batch.clone())),
        ("events-empty".into(), tagged(3, encode(&Events { upto: 1, events: vec![] }).unwrap())),
        ("events-trailing".into(), tagged(3, [batch, b"tail".to_vec()].concat())),
        (
            "latest-ask".into(),
            tagged(
                4,
                encode(&LatestAsk { patterns: vec!["x/*".into(), "a//b".into()], ttl: 7, visited: vec![1, 2] })
                    .unwrap(),
            ),
        ),
        (
            "latest-found".into(),
            tagged(5, encode(&LatestFound { events: events.iter().map(Event::as_ref).collect() }).unwrap()),
        ),
    ]
}

/// `RQ_FORWARD` payloads as `rivulet request` encodes them (postcard of the gateway's `Forward`).
fn forward_seeds() -> Seeds {
    use rivulet_fuzz::gateway::forward::{Forward, encode};
    let forward = |client: &str, rq_type: u64, flags: u64, payload: &[u8]| {
        encode(&Forward { client: client.into(), rq_type, flags, payload: payload.to_vec() }).unwrap()
    };
    // `rivulet request --client lamp --rq-type 4 on`, byte for byte: the wire format is pinned.
    let lamp = forward("lamp", 4, 0, b"on");
    assert_eq!(lamp, hex("04 6c616d70 04 00 02 6f6e"));
    vec![
        ("rivulet-request".into(), lamp.clone()),
        ("empty".into(), forward("", 0, 0, &[])),
        ("large-numbers".into(), forward("sensor-1", u64::MAX, 1 << 63, &big_payload())),
        ("utf8-client".into(), forward("k\u{fc}che/licht", 0x7200, 3, br#"{"on":true}"#)),
        ("trailing-bytes".into(), [lamp.clone(), b"tail".to_vec()].concat()),
        ("redundant-varint".into(), hex("04 6c616d70 8400 00 02 6f6e")),
        // For the second reading of the input: rq_type, flags, cut, client name, payload.
        ("fields".into(), [&4u64.to_le_bytes()[..], &7u64.to_le_bytes(), &[4], b"lamp", b"on"].concat()),
    ]
}

/// Request heads a `--metrics` endpoint reads: real scrapes, other paths and methods, and heads
/// it refuses.
fn metrics_http_seeds() -> Seeds {
    use rivulet_fuzz::gateway::http::MAX_HEAD;
    let padded = |len: usize| {
        let mut head = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        head.resize(len - 4, b'p');
        head.extend_from_slice(b"\r\n\r\n");
        head
    };
    let seeds: [(&str, &[u8]); 10] = [
        // Captured from `curl http://127.0.0.1:PORT/metrics` (curl 7.88.1).
        ("curl", b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:33797\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"),
        // What Prometheus 2.x sends: Go's net/http writes Host and User-Agent, then the rest.
        (
            "prometheus",
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9464\r\nUser-Agent: Prometheus/2.53.0\r\nAccept: \
              application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
              text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\nAccept-Encoding: gzip\r\n\
              X-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n",
        ),
        // gateway/tests/faults.rs's scrape.
        ("tests-scrape", b"GET /metrics HTTP/1.1\r\nHost: gateway\r\n\r\n"),
        ("not-found", b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("post-with-body", b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"),
        ("http-1.0-lf", b"GET /metrics HTTP/1.0\n\r\n\r\n"),
        ("one-word", b"GET\r\n\r\n"),
        ("unfinished", b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
        ("not-utf8", b"GET /m\xe9trics HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("empty-line", b"\r\n\r\n"),
    ];
    let mut seeds: Seeds = seeds.iter().map(|(name, bytes)| ((*name).into(), bytes.to_vec())).collect();
    seeds.push(("longest".into(), padded(MAX_HEAD)));
    seeds.push(("too-long".into(), padded(MAX_HEAD + 1)));
    seeds
}

/// The hat codec's golden vectors (core/tests/data/hat_vectors.txt, from the real library's
/// encoder, and the captured frames it holds), each after the harness's two settings bytes:
/// message data, frame bodies, single frames and the whole stream of frames in small reads.
fn hat_seeds() -> Seeds {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/data/hat_vectors.txt"))
            .expect("the hat vectors");
    let mut seeds = Seeds::new();
    let mut stream = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(' ').collect();
        let bytes = hex(fields.get(2).copied().unwrap_or(""));
        match fields[0] {
            "message" => seeds.push((format!("message-{}", fields[1]), [vec![255, 255], bytes].concat())),
            "frame" => {
                let body_at = 1 + usize::from(bytes[0]);
                seeds.push((format!("body-{}", fields[1]), [vec![255, 255], bytes[body_at..].to_vec()].concat()));
                seeds.push((format!("frame-{}", fields[1]), [vec![100, 6], bytes.clone()].concat()));
                stream.extend(bytes);
            }
            _ => {}
        }
    }
    seeds.push(("stream-small-reads".into(), [vec![200, 2], stream.clone()].concat()));
    seeds.push(("stream-small-buffer".into(), [vec![0, 255], stream].concat()));
    seeds
}

/// The Kelvin codec's golden vectors (core/tests/data/kelvin_vectors.txt, from the real SDK):
/// each input line alone, and all of them as one stream, read in small and large pieces.
fn kelvin_seeds() -> Seeds {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/data/kelvin_vectors.txt"))
            .expect("the Kelvin vectors");
    let inputs: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("in ")).collect();
    let mut seeds: Seeds = inputs
        .iter()
        .enumerate()
        .map(|(i, line)| (format!("line-{i:02}"), [&[255, 255], line.as_bytes()].concat()))
        .collect();
    let stream: Vec<u8> = inputs.iter().flat_map(|line| [line.as_bytes(), b"\n"].concat()).collect();
    seeds.push(("stream-small-reads".into(), [vec![255, 2], stream.clone()].concat()));
    seeds.push(("stream-short-limit".into(), [vec![40, 255], stream].concat()));
    seeds
}

/// Chaski frames and datagrams as chaski-confluent 0.1a5 writes them with the JSON codec
/// (core/tests/data/chaski_vectors.txt): each frame's data as one JSON value, each datagram, and
/// all frames as one stream, in small reads, in large reads, and under a small frame limit.
fn chaski_seeds() -> Seeds {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/data/chaski_vectors.txt"))
            .expect("the Chaski vectors");
    let mut seeds = Seeds::new();
    let mut stream = Vec::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        let (Some(kind), Some(name), Some(hex)) = (words.next(), words.next(), words.next()) else { continue };
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        match kind {
            "frame" => {
                seeds.push((format!("data-{name}"), [&[1][..], &bytes[8..]].concat()));
                stream.extend_from_slice(&bytes);
            }
            _ => seeds.push((format!("{kind}-{name}"), [&[1][..], &bytes].concat())),
        }
    }
    // Stream mode: buffer size (u16 LE, 16 + n % 1024), limit byte (4n + 8), read size byte.
    seeds.push(("stream-small-reads".into(), [&[0, 0xef, 3, 255, 7][..], &stream].concat()));
    seeds.push(("stream-large-reads".into(), [&[0, 0xef, 3, 255, 63][..], &stream].concat()));
    seeds.push(("stream-short-limit".into(), [&[0, 0xef, 3, 40, 63][..], &stream].concat()));
    seeds
}

/// What stream-sea-client 0.7.0 sent (core/tests/data/streamsea_vectors.txt): each websocket
/// message and REST body, and each schema with a conforming payload after it.
fn streamsea_seeds() -> Seeds {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/data/streamsea_vectors.txt"))
            .expect("the stream-sea vectors");
    let mut seeds = Seeds::new();
    for (i, line) in text.lines().enumerate() {
        let Some((kind, body)) = line.split_once(' ') else { continue };
        seeds.push((format!("{kind}-{i:02}"), [&[0][..], body.as_bytes()].concat()));
        if kind == "define" && body.len() < 255 {
            let payload = r#"{"n":1}"#;
            seeds.push((
                format!("{kind}-{i:02}-checked"),
                [&[body.len() as u8][..], body.as_bytes(), payload.as_bytes()].concat(),
            ));
        }
    }
    seeds
}

/// A whole transfer to a receiver (offer, chunks out of order and again, done), one with a
/// wrong digest, and a list and a read: each request a record of its type's pick and body.
fn files_seeds() -> Seeds {
    use rivulet_core::files::{Chunk, Done, FileRequest, Offer, Read, Sha256};
    let record = |request: FileRequest<'_>| {
        let mut body = vec![0u8; 1024];
        let len = request.encode(&mut body).unwrap();
        [vec![(request.rq_type() - rivulet_core::files::RQ_FILE_OFFER) as u8], body[..len].to_vec()].concat()
    };
    let file: Vec<u8> = (0..700u32).map(|i| (i * 7) as u8).collect();
    let mut hash = rivulet_fuzz::files::Fnv::new();
    hash.update(&file);
    let sha256 = hash.finalize();
    let transfer = |sha256| {
        let mut records = vec![record(FileRequest::Offer(Offer { name: "fw.bin", size: 700, sha256 }))];
        for offset in [256usize, 0, 0, 256, 512] {
            let data = &file[offset..(offset + 256).min(700)];
            records.push(record(FileRequest::Chunk(Chunk { name: "fw.bin", offset: offset as u64, data })));
        }
        records.push(record(FileRequest::Done(Done { name: "fw.bin" })));
        records
    };
    let others =
        vec![record(FileRequest::List), record(FileRequest::Read(Read { name: "fw.bin", offset: 0, len: 4096 }))];
    vec![
        ("transfer".into(), rivulet_fuzz::input::stream_of(&transfer(sha256))),
        ("mismatch".into(), rivulet_fuzz::input::stream_of(&transfer([9; 32]))),
        ("list-read".into(), rivulet_fuzz::input::stream_of(&others)),
    ]
}

fn write_corpus(dir: &Path, target: &str, seeds: &Seeds) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")) {
            std::fs::remove_file(path).unwrap();
        }
    }
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}

#[test]
fn write_seed_corpora() {
    let (c2s, s2c) = transcript();
    let corpora: Vec<Corpus> = vec![
        ("packet", packet_seeds(&c2s, &s2c), rivulet_fuzz::packet::run),
        ("stream_frames", stream_seeds(&c2s, &s2c), rivulet_fuzz::stream_frames::run),
        ("serial_frames", serial_seeds(&c2s, &s2c), rivulet_fuzz::serial_frames::run),
        ("session_messages", session_seeds(), rivulet_fuzz::session_messages::run),
        ("event_types", event_type_seeds(), rivulet_fuzz::event_types::run),
        (
            "packetstream",
            vec![
                ("golden-c2s".into(), [vec![0x01], golden_client_frames().concat()].concat()),
                (
                    "golden-s2c".into(),
                    [vec![0x02], vec![1, 0, 1, 0, 1, 0, 1, 0], golden_server_frames().concat()].concat(),
                ),
                (
                    "golden-both".into(),
                    [vec![0x03], golden_client_frames().concat(), golden_server_frames().concat()].concat(),
                ),
            ],
            rivulet_fuzz::packetstream::run,
        ),
        ("forward", forward_seeds(), rivulet_fuzz::forward::run),
        ("federation", federation_seeds(), rivulet_fuzz::federation::run),
        ("metrics_http", metrics_http_seeds(), rivulet_fuzz::metrics_http::run),
        ("hat", hat_seeds(), rivulet_fuzz::hat::run),
        ("kelvin", kelvin_seeds(), rivulet_fuzz::kelvin::run),
        ("streamsea", streamsea_seeds(), rivulet_fuzz::streamsea::run),
        ("chaski", chaski_seeds(), rivulet_fuzz::chaski::run),
        ("files", files_seeds(), rivulet_fuzz::files::run),
    ];
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, seeds, run) in &corpora {
        for (name, bytes) in seeds {
            let result = std::panic::catch_unwind(|| run(bytes));
            assert!(result.is_ok(), "seed {target}/{name} fails its own harness");
        }
        write_corpus(&dir, target, seeds);
        println!("{target}: {} seeds", seeds.len());
    }
}
