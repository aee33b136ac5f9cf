//! Prints the byte examples and the RAM figures of docs/PROTOCOL.md:
//! `cargo run -p rivulet-core --example sizes`.
//!
//! Every frame below is produced by the crate itself (stream framing unless marked serial), so
//! the document can be checked against the code by running this again.

use core::mem::size_of;

use rivulet_core::files;

use rivulet_core::packetstream::PacketEndpoint;

use rivulet_core::driver::Driver;
use rivulet_core::model::{
    EventId, EventPayload, EventPayloadRef, EventRef, EventType, ListBuilder, QueryLatest, QueryParams, QueryResult,
    RegisterEvent, RegisterEventRef, Status, Timestamp, TypeListBuf,
};
use rivulet_core::session::message::{
    self, CAPABILITIES, IdDelta, MessageKind, NotifyBody, PROTOCOL_VERSION, RegisterBody,
};
use rivulet_core::session::{
    Accepted, Client, ClientConfig, ClientEvent, Connection, InitRequest, Limits, Machine, ServerConfig,
    ServerConnection, ServerEvent, Session, SessionTable,
};
use rivulet_core::time::Instant;
use rivulet_core::wire::{
    FrameDecoder, FrameWriter, Framing, PacketKind, PacketRepr, SerialDecoder, StreamDecoder, serial, varint,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Frames written by `write` into a fresh transmit buffer, or why writing failed.
fn frames<E: core::fmt::Debug>(
    framing: Framing,
    write: impl FnOnce(&mut FrameWriter<'_>) -> Result<(), E>,
) -> Result<Vec<u8>, String> {
    let mut buf = [0u8; 512];
    let mut out = FrameWriter::new(&mut buf, framing);
    match write(&mut out) {
        Ok(()) => Ok(out.pending().to_vec()),
        Err(e) => Err(format!("error {e:?}, wrote [{}]", hex(out.pending()))),
    }
}

fn show(label: &str, bytes: &[u8]) {
    println!("{label:<48} {}", hex(bytes));
}

fn show_frames(label: &str, result: &Result<Vec<u8>, String>) {
    match result {
        Ok(bytes) => show(label, bytes),
        Err(e) => println!("{label:<48} {e}"),
    }
}

/// Splits stream-framed bytes into bodies.
fn bodies(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut storage = [0u8; 1024];
    let mut decoder = StreamDecoder::new(&mut storage);
    decoder.push(bytes);
    let mut out = Vec::new();
    while let Ok(Some(body)) = decoder.next_body() {
        out.push(body.to_vec());
    }
    out
}

fn ty(path: &str) -> EventType {
    EventType::parse_path(path).unwrap()
}

fn packet_layer() {
    println!("== BSUInt");
    for value in [0u64, 5, 127, 128, 255, 300, 16383, 16384, 1027] {
        let mut buf = [0u8; varint::MAX_LEN];
        let n = varint::encode(value, &mut buf).unwrap();
        show(&format!("{value}"), &buf[..n]);
    }

    println!("== Packets (stream framing)");
    show_frames("EOF", &frames(Framing::Stream, |o| o.push_repr(&PacketRepr::EOF)));
    show_frames("ERQ", &frames(Framing::Stream, |o| o.push_repr(&PacketRepr::ERQ)));
    show_frames(
        "request ch1 tag 2 rq 3 flags 0 \"hi\"",
        &frames(Framing::Stream, |o| o.push_repr(&PacketRepr::request(1, 2, 3, 0, b"hi"))),
    );
    show_frames(
        "response ch1 tag 2 ok flags 2 \"ok\"",
        &frames(Framing::Stream, |o| o.push_repr(&PacketRepr::response(1, 2, true, 2, b"ok"))),
    );
    show_frames(
        "failure ch0 tag 9 \"unknown message kind 42\"",
        &frames(Framing::Stream, |o| message::push_failure(o, 0, 9, "unknown message kind 42")),
    );
    show_frames(
        "one-way ch0 tag 1 rq 4 (tag 1 is ERQ only with rq 0)",
        &frames(Framing::Stream, |o| o.push_repr(&PacketRepr::request(0, 1, 4, 1, b""))),
    );

    println!("== Serial framing");
    println!("crc16(\"123456789\") = {:04x}", serial::crc16(b"123456789"));
    let ping = frames(Framing::Stream, |o| message::push_request(o, 2, MessageKind::Ping, &())).expect("frame");
    let ping_body = &bodies(&ping)[0];
    show("ping tag 2 body", ping_body);
    println!("{:<48} {:04x}", "  crc16(seq 00 ++ body)", crc_with_seq(0, ping_body));
    show_frames(
        "ping tag 2 serial frame",
        &frames(Framing::Serial, |o| message::push_request(o, 2, MessageKind::Ping, &())),
    );
    show("EOF body", &bodies(&frames(Framing::Stream, |o| o.push_repr(&PacketRepr::EOF)).expect("frame"))[0]);
    println!("{:<48} {:04x}", "  crc16(seq 00 ++ EOF body)", crc_with_seq(0, &[0x00, 0x02, 0x00]));
    show_frames("EOF serial frame", &frames(Framing::Serial, |o| o.push_repr(&PacketRepr::EOF)));
    let status = |o: &mut FrameWriter<'_>| message::push_request(o, 0, MessageKind::Status, &Status::Stopping);
    let status_body = &bodies(&frames(Framing::Stream, status).expect("frame"))[0];
    show("Status Stopping (subject 0) body", status_body);
    println!("{:<48} {:04x}", "  crc16(seq 00 ++ body)", crc_with_seq(0, status_body));
    show_frames("Status Stopping serial frame", &frames(Framing::Serial, status));
    let serial = frames(Framing::Serial, |o| o.push_repr(&PacketRepr::EOF)).expect("frame");
    let mut storage = [0u8; 64];
    let mut decoder = SerialDecoder::new(&mut storage);
    decoder.push(&serial);
    println!("  decoded back: {:?}", decoder.next_body().map(|b| b.map(hex)));
}

/// Runs a real client and server machine against each other and prints every frame.
fn session_transcript() {
    println!("== Session: Init, Subscribe, Query, RegisterRequest, Ping (real machines)");
    let t0 = Instant::from_millis(0);
    let mut client: Client<'_> = Client::new(ClientConfig::new("dev1"), [0; 1024]);
    let mut server: ServerConnection = ServerConnection::new(t0, ServerConfig::default());
    client.subscribe(ty("sensor/*").as_ref()).unwrap();
    client.link_up(t0);

    let c2s = frames(Framing::Stream, |o| client.poll_transmit(t0, o)).expect("frame");
    show("C>S Init", &c2s);
    let mut accept = Vec::new();
    for body in bodies(&c2s) {
        if let Ok(Some(ServerEvent::Init { from, request })) = server.handle(t0, &body) {
            println!("  server sees {request:?}");
            let accepted = Accepted {
                version: PROTOCOL_VERSION,
                capabilities: CAPABILITIES,
                status: Status::Operational,
                server_id: 1,
                server_session: 7,
                session: 0x1234,
                next_seq: request.first_seq,
                limits: Limits { window: 64, aliases: 256, max_packet: 65536 },
                keepalive_ms: request.keepalive_ms,
            };
            accept = frames(Framing::Stream, |o| server.accept(from, &accepted, o)).expect("frame");
        }
    }
    show("S>C Init response (Accepted)", &accept);
    for body in bodies(&accept) {
        println!("  client: {:?}", client.handle(t0, &body));
    }

    client.subscribe(ty("alarm").as_ref()).unwrap();
    let c2s = frames(Framing::Stream, |o| client.poll_transmit(t0, o)).expect("frame");
    show("C>S Subscribe [sensor/*, alarm]", &c2s);
    let mut reply = Vec::new();
    for body in bodies(&c2s) {
        if let Ok(Some(ServerEvent::Subscribe { from, subscriptions })) = server.handle(t0, &body) {
            println!("  server sees {subscriptions:?}");
            reply = frames(Framing::Stream, |o| server.respond_raw(from, 0, &[], o)).expect("frame");
        }
    }
    show("S>C Subscribe response (ok, empty)", &reply);
    for body in bodies(&reply) {
        println!("  client: {:?}", client.handle(t0, &body));
    }

    let params = QueryParams::Latest(QueryLatest { event_types: None });
    let c2s = frames(Framing::Stream, |o| client.query(t0, &params, o).map(|_| ())).expect("frame");
    show("C>S Query latest(None)", &c2s);
    let event_type = ty("a/b");
    let event = EventRef {
        id: EventId { server: 1, session: 7, instance: 42 },
        event_type: event_type.as_ref(),
        timestamp: Timestamp { s: 1_700_000_000, us: 5 },
        source_timestamp: None,
        payload: Some(EventPayloadRef::Json("42")),
    };
    let mut list_buf = [0u8; 128];
    let mut list = ListBuilder::new(&mut list_buf);
    list.push(&event).unwrap();
    let result = QueryResult { events: list.finish(), more_follows: false };
    let mut reply = Vec::new();
    for body in bodies(&c2s) {
        if let Ok(Some(ServerEvent::Query { from, params })) = server.handle(t0, &body) {
            println!("  server sees {params:?}");
            reply = frames(Framing::Stream, |o| server.respond(from, &result, o)).expect("frame");
        }
    }
    show("S>C Query response (1 event, more=false)", &reply);
    for body in bodies(&reply) {
        println!("  client: {:?}", client.handle(t0, &body));
    }

    let mut reg_buf = [0u8; 128];
    let mut regs = ListBuilder::new(&mut reg_buf);
    let register = RegisterEventRef {
        event_type: event_type.as_ref(),
        source_timestamp: None,
        payload: Some(EventPayloadRef::Json("42")),
    };
    regs.push(&register).unwrap();
    let c2s =
        frames(Framing::Stream, |o| client.register_with_response(t0, regs.finish(), o).map(|_| ())).expect("frame");
    show("C>S RegisterRequest [a/b json 42]", &c2s);
    let mut reply = Vec::new();
    for body in bodies(&c2s) {
        if let Ok(Some(ServerEvent::RegisterRequest { from, events })) = server.handle(t0, &body) {
            println!("  server sees {events:?}");
            reply = frames(Framing::Stream, |o| server.respond(from, &result.events, o)).expect("frame");
        }
    }
    show("S>C RegisterRequest response", &reply);
    for body in bodies(&reply) {
        println!("  client: {:?}", client.handle(t0, &body));
    }

    let c2s = frames(Framing::Stream, |o| client.ping(t0, o).map(|_| ())).expect("frame");
    show("C>S Ping", &c2s);
    let mut pong = Vec::new();
    for body in bodies(&c2s) {
        println!("  server: {:?}", server.handle(t0, &body));
        pong = frames(Framing::Stream, |o| server.poll_transmit(t0, o)).expect("frame");
    }
    show("S>C Pong", &pong);
    for body in bodies(&pong) {
        println!("  client: {:?}", client.handle(t0, &body));
    }

    registrations_and_resume(client, server, event);
}

/// Everything one side transmits now.
fn transmit<M: Machine>(machine: &mut M, now: Instant) -> Vec<u8> {
    frames(Framing::Stream, |o| machine.poll_transmit(now, o)).expect("transmit")
}

fn to_server(server: &mut ServerConnection, now: Instant, bytes: &[u8]) {
    for body in bodies(bytes) {
        println!("    server <- {:<40} {:?}", hex(&body), server.handle(now, &body));
    }
}

fn to_client(client: &mut Client<'_>, now: Instant, bytes: &[u8]) {
    for body in bodies(bytes) {
        println!("    client <- {:<40} {:?}", hex(&body), client.handle(now, &body));
    }
}

/// Registrations, acks, notifications, status, a lost link and a resumed session, close.
fn registrations_and_resume(mut client: Client<'_>, mut server: ServerConnection, event: EventRef<'_>) {
    let t0 = Instant::from_millis(0);
    println!("== Session: Register, Ack, Notify, Status (real machines, server auto_ack on)");
    let seq = client.register(ty("a/b").as_ref(), None, Some(EventPayloadRef::Json("21.5")));
    println!("  client.register(a/b, json 21.5) -> seq {seq:?}");
    let c2s = transmit(&mut client, t0);
    show("C>S Declare alias 1 + Register alias 1", &c2s);
    to_server(&mut server, t0, &c2s);
    let s2c = transmit(&mut server, t0);
    show("S>C Ack 1", &s2c);
    to_client(&mut client, t0, &s2c);

    let s2c = frames(Framing::Stream, |o| server.notify(&event, o)).expect("notify");
    show("S>C Declare alias 1 + Notify alias 1 (Full id)", &s2c);
    to_client(&mut client, t0, &s2c);
    let next = EventRef {
        id: EventId { instance: 43, ..event.id },
        timestamp: Timestamp { s: 1_700_000_000, us: 6 },
        payload: None,
        ..event
    };
    let s2c = frames(Framing::Stream, |o| server.notify(&next, o)).expect("notify");
    show("S>C Notify alias 1 (Instance +1, no payload)", &s2c);
    to_client(&mut client, t0, &s2c);
    let c2s = transmit(&mut client, t0);
    show("C>S Ack 2", &c2s);
    to_server(&mut server, t0, &c2s);
    let s2c = frames(Framing::Stream, |o| server.set_status(Status::Stopping, o)).expect("status");
    show("S>C Status Stopping (subject 0)", &s2c);
    to_client(&mut client, t0, &s2c);
    let x = ty("x");
    let inline = EventRef { id: EventId { server: 2, session: 1, instance: 5 }, event_type: x.as_ref(), ..event };
    let s2c = frames(Framing::Stream, |o| {
        let body = NotifyBody {
            id: IdDelta::between(Some(next.id), inline.id),
            timestamp: inline.timestamp,
            source_timestamp: None,
            payload: None,
        };
        message::push_with_subject(o, MessageKind::Notify, 0, Some(inline.event_type), &body)
    })
    .expect("inline");
    show("S>C Notify inline type x (subject 0), Full id", &s2c);
    to_client(&mut client, t0, &s2c);

    println!("== Session: resume after a lost link (server auto_ack off)");
    let t1 = Instant::from_millis(1000);
    let config = ServerConfig { auto_ack: false, ..ServerConfig::default() };
    let mut server = ServerConnection::<8, 64>::new(t1, config);
    client.link_down();
    client.link_up(t1);
    let init = transmit(&mut client, t1);
    let mut accept = Vec::new();
    for body in bodies(&init) {
        if let Ok(Some(ServerEvent::Init { from, request })) = server.handle(t1, &body) {
            let accepted = Accepted {
                version: PROTOCOL_VERSION,
                capabilities: CAPABILITIES,
                status: Status::Operational,
                server_id: 1,
                server_session: 7,
                session: request.session.unwrap_or(0x1234),
                next_seq: request.first_seq,
                limits: Limits { window: 64, aliases: 256, max_packet: 65536 },
                keepalive_ms: request.keepalive_ms,
            };
            accept = frames(Framing::Stream, |o| server.accept(from, &accepted, o)).expect("accept");
        }
    }
    to_client(&mut client, t1, &accept);
    let seq = client.register(ty("c/d").as_ref(), None, None);
    println!("  client.register(c/d) -> seq {seq:?}");
    let c2s = transmit(&mut client, t1);
    show("C>S Declare 1, Declare 2, Register alias 2", &c2s);
    to_server(&mut server, t1, &c2s);
    println!("  (server stores seq 1 but its ack is lost with the link)");
    client.link_down();
    let seq = client.register(ty("a/b").as_ref(), None, Some(EventPayloadRef::Json("1")));
    println!("  offline: client.register(a/b) -> seq {seq:?}; outbox holds {} entries", client.outbox_len());

    let t2 = Instant::from_millis(2000);
    let mut server = ServerConnection::<8, 64>::new(t2, ServerConfig::default());
    client.link_up(t2);
    let init = transmit(&mut client, t2);
    show("C>S Init (resume session 0x1234, first_seq 1)", &init);
    let mut accept = Vec::new();
    for body in bodies(&init) {
        if let Ok(Some(ServerEvent::Init { from, request })) = server.handle(t2, &body) {
            println!("    server <- {request:?}");
            let accepted = Accepted {
                version: PROTOCOL_VERSION,
                capabilities: CAPABILITIES,
                status: Status::Operational,
                server_id: 1,
                server_session: 7,
                session: 0x1234,
                next_seq: 2, // the gateway has seq 1 stored
                limits: Limits { window: 64, aliases: 256, max_packet: 65536 },
                keepalive_ms: request.keepalive_ms,
            };
            accept = frames(Framing::Stream, |o| server.accept(from, &accepted, o)).expect("accept");
        }
    }
    show("S>C Accepted (session 0x1234, next_seq 2)", &accept);
    to_client(&mut client, t2, &accept);
    let c2s = transmit(&mut client, t2);
    show("C>S Declare 1, Declare 2, Register seq 2 alias 1", &c2s);
    to_server(&mut server, t2, &c2s);
    let s2c = transmit(&mut server, t2);
    show("S>C Ack 1", &s2c);
    to_client(&mut client, t2, &s2c);

    println!("== Close");
    client.close();
    let c2s = transmit(&mut client, t2);
    show("C>S ERQ, EOF", &c2s);
    to_server(&mut server, t2, &c2s);
    let s2c = transmit(&mut server, t2);
    show("S>C ERQ, EOF", &s2c);
    println!("    server.poll -> {:?}", server.poll(t2));
    to_client(&mut client, t2, &s2c);
    let _ = transmit(&mut client, t2);
    println!("    client.poll -> {:?}", client.poll(t2));
}

/// Frames built directly with the message helpers.
fn session_messages() {
    println!("== Session one-way messages (helpers)");
    let event_type = ty("a/b");
    show_frames(
        "Declare alias 2 = a/b",
        &frames(Framing::Stream, |o| message::push_request(o, 2, MessageKind::Declare, &event_type.as_ref())),
    );
    let first = EventId { server: 1, session: 7, instance: 42 };
    let body = NotifyBody {
        id: IdDelta::between(None, first),
        timestamp: Timestamp { s: 1_700_000_000, us: 5 },
        source_timestamp: None,
        payload: Some(EventPayloadRef::Json("42")),
    };
    show_frames(
        "Notify alias 2, first id (Full)",
        &frames(Framing::Stream, |o| message::push_with_subject(o, MessageKind::Notify, 2, None, &body)),
    );
    let next = EventId { instance: 43, ..first };
    let body = NotifyBody {
        id: IdDelta::between(Some(first), next),
        timestamp: Timestamp { s: 1_700_000_000, us: 6 },
        source_timestamp: None,
        payload: None,
    };
    show_frames(
        "Notify alias 2, next id (Instance +1), no payload",
        &frames(Framing::Stream, |o| message::push_with_subject(o, MessageKind::Notify, 2, None, &body)),
    );
    let reg = RegisterBody {
        source_timestamp: Some(Timestamp { s: 1_700_000_000, us: 0 }),
        payload: Some(EventPayloadRef::Binary { kind: "u8", data: &[0x07] }),
    };
    show_frames(
        "Register alias 2 (srcts, binary u8 [07])",
        &frames(Framing::Stream, |o| message::push_with_subject(o, MessageKind::Register, 2, None, &reg)),
    );
    let reg = RegisterBody { source_timestamp: None, payload: Some(EventPayloadRef::Json("21.5")) };
    show_frames(
        "Register alias 2 (json 21.5)",
        &frames(Framing::Stream, |o| message::push_with_subject(o, MessageKind::Register, 2, None, &reg)),
    );
    show_frames(
        "Ack count 3",
        &frames(Framing::Stream, |o| {
            o.push(0, 3, PacketKind::Request { rq_type: MessageKind::Ack as u64, flags: 1 }, |_| {
                Ok::<usize, rivulet_core::wire::Error>(0)
            })
        }),
    );
    show_frames(
        "Status Operational, subject 2",
        &frames(Framing::Stream, |o| message::push_request(o, 2, MessageKind::Status, &Status::Operational)),
    );
    show_frames(
        "Status Operational, subject 0 (as set_status)",
        &frames(Framing::Stream, |o| message::push_request(o, 0, MessageKind::Status, &Status::Operational)),
    );

    println!("== Postcard values");
    let enc = |v: &dyn erased::Ser| v.bytes();
    show("EventType a/b", &enc(&event_type));
    show("Timestamp {1700000000, 5}", &enc(&Timestamp { s: 1_700_000_000, us: 5 }));
    show("Timestamp {-1, 999999}", &enc(&Timestamp { s: -1, us: 999_999 }));
    show("EventId {1,2,3}", &enc(&EventId { server: 1, session: 2, instance: 3 }));
    show("IdDelta::Instance(-1)", &enc(&IdDelta::Instance(-1)));
    show("Status::Stopping", &enc(&Status::Stopping));
    let init = InitRequest {
        version: 1,
        capabilities: 0,
        client_name: "dev1",
        credential: Some(b"tok"),
        subscriptions: rivulet_core::model::PackedList::EMPTY,
        server_id: Some(1),
        persisted: true,
        session: Some(0x1234),
        first_seq: 5,
        limits: Limits { window: 16, aliases: 8, max_packet: 1024 },
        keepalive_ms: 20_000,
    };
    show("InitRequest (token, server 1, resume 0x1234)", &enc(&init));
    show("InitResponse::Challenge(\"n0\")", &enc(&rivulet_core::session::InitResponse::Challenge(b"n0")));
    let server_q = QueryParams::Server(rivulet_core::model::QueryServer {
        server_id: 1,
        persisted: false,
        max_results: Some(100),
        last_event_id: Some(EventId { server: 1, session: 7, instance: 42 }),
    });
    show("QueryParams::Server(1, max 100, after 1/7/42)", &enc(&server_q));
}

mod erased {
    pub trait Ser {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn bytes(&self) -> Vec<u8> {
            let mut buf = [0u8; 256];
            postcard::to_slice(self, &mut buf).map(|b| b.to_vec()).unwrap_or_default()
        }
    }
}

/// A stand-in byte stream: the driver's size without the caller's transport.
#[derive(Debug)]
struct NoIo;

fn sizes() {
    println!("== size_of on this host ({} bytes per usize)", size_of::<usize>());
    let row = |name: &str, size: usize| println!("{name:<66} {size:>6}");
    row("Client (outbox [u8; 1024], INFLIGHT=4, ALIASES=8, SUBS=128)", size_of::<Client<'static>>());
    row("  Client<[u8; 2048],4,8,128>", size_of::<Client<'static, [u8; 2048], 4, 8, 128>>());
    row("  Client<[u8; 1024],5,8,128>", size_of::<Client<'static, [u8; 1024], 5, 8, 128>>());
    row("  Client<[u8; 1024],8,8,128>", size_of::<Client<'static, [u8; 1024], 8, 8, 128>>());
    row("  Client<[u8; 1024],4,9,128>", size_of::<Client<'static, [u8; 1024], 4, 9, 128>>());
    row("  Client<[u8; 1024],4,16,128>", size_of::<Client<'static, [u8; 1024], 4, 16, 128>>());
    row("  Client<[u8; 1024],4,8,256>", size_of::<Client<'static, [u8; 1024], 4, 8, 256>>());
    row("  Client<[u8; 256],2,4,64>", size_of::<Client<'static, [u8; 256], 2, 4, 64>>());
    row("  Client<&mut [u8],4,8,128> (+ the borrowed outbox)", size_of::<Client<'static, &mut [u8], 4, 8, 128>>());
    row("Session (outbox [u8; 1024], ALIASES=8, SUBS=128)", size_of::<Session<[u8; 1024], 8, 128>>());
    row("  Session<[u8; 0],0,0>", size_of::<Session<[u8; 0], 0, 0>>());
    row("  Session<[u8; 1024],0,0> (outbox = this - Session<[u8; 0],0,0>)", size_of::<Session<[u8; 1024], 0, 0>>());
    row("  Session<[u8; 0],8,0>", size_of::<Session<[u8; 0], 8, 0>>());
    row("  Session<[u8; 0],0,128>", size_of::<Session<[u8; 0], 0, 128>>());
    row("Connection (INFLIGHT=4, ALIASES=8)", size_of::<Connection<4, 8>>());
    row("  Connection<0,0>", size_of::<Connection<0, 0>>());
    row("  Connection<1,0>", size_of::<Connection<1, 0>>());
    row("  Connection<0,1>", size_of::<Connection<0, 1>>());
    row("ClientConfig", size_of::<ClientConfig<'static>>());
    row("ServerConnection (INFLIGHT=8, ALIASES=64)", size_of::<ServerConnection>());
    row("  ServerConnection<0,0>", size_of::<ServerConnection<0, 0>>());
    row("  ServerConnection<1,0>", size_of::<ServerConnection<1, 0>>());
    row("  ServerConnection<0,1>", size_of::<ServerConnection<0, 1>>());
    row("  ServerConnection<4,16>", size_of::<ServerConnection<4, 16>>());
    row("ServerConfig", size_of::<ServerConfig>());
    row("SessionTable<64> (a server's sessions; 16 bytes each)", size_of::<SessionTable<64>>());
    row("PacketEndpoint<0,0>", size_of::<PacketEndpoint<0, 0>>());
    row("  PacketEndpoint<1,0>", size_of::<PacketEndpoint<1, 0>>());
    row("  PacketEndpoint<0,1>", size_of::<PacketEndpoint<0, 1>>());
    row("  PacketEndpoint<4,4>", size_of::<PacketEndpoint<4, 4>>());
    row("EventType (TYPE_BYTES=64)", size_of::<EventType>());
    row("Option<EventType>", size_of::<Option<EventType>>());
    row("EventPayload (PAYLOAD_BYTES=256)", size_of::<EventPayload>());
    row("Event (64, 256)", size_of::<rivulet_core::model::Event>());
    row("RegisterEvent (64, 256)", size_of::<RegisterEvent>());
    row("EventRef", size_of::<EventRef<'static>>());
    row("TypeListBuf<128>", size_of::<TypeListBuf<128>>());
    row("StreamDecoder (+ caller's receive buffer)", size_of::<StreamDecoder<'static>>());
    row("SerialDecoder (+ caller's receive buffer)", size_of::<SerialDecoder<'static>>());
    row("FrameWriter (+ caller's transmit buffer)", size_of::<FrameWriter<'static>>());
    row(
        "Driver<NoIo, StreamDecoder> (+ io + both buffers)",
        size_of::<Driver<'static, NoIo, StreamDecoder<'static>>>(),
    );
    row(
        "Driver<NoIo, SerialDecoder> (+ io + both buffers)",
        size_of::<Driver<'static, NoIo, SerialDecoder<'static>>>(),
    );
    row("ClientEvent", size_of::<ClientEvent<'static>>());
    row("ServerEvent", size_of::<ServerEvent<'static>>());
    row("files::Receiver<sha2::Sha256> (one transfer, its SHA-256 state)", size_of::<files::Receiver<Sha2>>());
}

/// `sha2`'s SHA-256 for the file receiver's size, as a device binds it.
#[derive(Clone)]
struct Sha2(sha2::Sha256);

impl files::Sha256 for Sha2 {
    fn new() -> Self {
        Sha2(sha2::Digest::new())
    }
    fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }
    fn finalize(self) -> files::Digest {
        sha2::Digest::finalize(self.0).into()
    }
}

fn main() {
    packet_layer();
    session_transcript();
    session_messages();
    sizes();
    let _ = ClientEvent::Status(Status::Standby);
}

/// The CRC a serial frame carries: over its sequence byte and the packet body.
fn crc_with_seq(seq: u8, body: &[u8]) -> u16 {
    let mut data = vec![seq];
    data.extend_from_slice(body);
    serial::crc16(&data)
}
