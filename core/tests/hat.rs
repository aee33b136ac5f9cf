//! The hat codec against the real library's bytes: every golden vector of
//! `shared/reference/peers.md` §2, and every vector of `tests/data/hat_vectors.txt`, which
//! `host-tests/peers/hat_vectors.py` makes with hat-event's own encoder (host-tests checks that
//! it still does). Each is decoded and compared with the value it encodes, and the value is
//! encoded here and compared with the bytes: both directions.

#[path = "support/hat_values.rs"]
mod support;

use std::collections::BTreeMap;

use rivulet_core::hat::chatter::{ChatterDecoder, Header, Msg};
use rivulet_core::hat::eventer::{
    self, EventerMessage, EventsAck, EventsNotify, InitReq, InitRes, Message, MsgType, QueryLatest, QueryParams,
    QueryRes, QueryServer, QueryTimeseries, RegisterReq, RegisterRes, StatusNotify,
};
use rivulet_core::hat::sbs::{Reader, Writer};
use rivulet_core::model::{EventId, EventRef, Order, OrderBy, RegisterEventRef, Status, Timestamp};
use rivulet_core::wire::FrameDecoder;
use support::{OwnedEvent, Payload, all_match, hex, segments_of};

fn emit(message: &dyn EventerMessage) -> Vec<u8> {
    let mut buf = vec![0u8; message.buffer_len().unwrap()];
    assert_eq!(message.emit(&mut buf), Ok(buf.len()));
    buf
}

fn emit_frame(header: Header, message: &impl EventerMessage) -> Vec<u8> {
    let mut buf = vec![0u8; eventer::frame_len(&header, message).unwrap()];
    assert_eq!(eventer::emit_frame(&header, message, &mut buf), Ok(buf.len()));
    buf
}

/// The frame bodies of a stream, through the decoder.
fn bodies(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut storage = vec![0u8; stream.len() + 16];
    let mut decoder = ChatterDecoder::new(&mut storage);
    assert_eq!(decoder.push(stream), stream.len());
    let mut out = Vec::new();
    while let Some(body) = decoder.next_body().unwrap() {
        out.push(body.to_vec());
    }
    assert_eq!(decoder.buffered(), 0, "a whole number of frames");
    out
}

fn header(id: i64, first: i64, owner: bool, last: bool) -> Header {
    Header { id, first, owner, token: true, last }
}

// ---------------------------------------------------------------------------------------------
// peers.md §2, "Captured frames"
// ---------------------------------------------------------------------------------------------

const CAPTURED_INIT_REQ: &str = "01418181010100954861744576656e7465722e4d7367496e6974526571a58b706565722d636c69656e74\
                                 8183746f6b82828474657374812a82856f74686572813f8000";
const CAPTURED_INIT_RES: &str = "011e 81 81 00 01 01 95 4861744576656e7465722e4d7367496e6974526573 82 8081";
const CAPTURED_STATUS: &str = "0122 89 89 01 01 01 9a 4861744576656e7465722e4d73675374617475734e6f74696679 81 82";
const PING_7: &str = "011687870101008f486174436861747465722e50696e6780";
const PONG_7: &str = "011683870001018f486174436861747465722e506f6e6780";
const EVENTS_NOTIFY_BODY: &str = "81 | 81 82 83 | 82 81 61 81 62 | 06 2a 4f 62 80 85 | 80 | 81 81 82 34 32";

const SUBSCRIPTIONS: [&[&str]; 2] = [&["test", "*"], &["other", "?"]];

#[test]
fn captured_init_req_both_ways() {
    let frame = hex(CAPTURED_INIT_REQ);
    let body = &bodies(&frame)[0];
    let msg = Msg::parse(body).unwrap();
    assert_eq!(msg.header, header(1, 1, true, false));
    assert_eq!(msg.data.len(), 37);
    let Message::InitReq(init) = Message::parse(msg.msg_type, msg.data).unwrap() else { panic!("{msg:?}") };
    assert_eq!(
        (init.client_name, init.client_token, init.server_id, init.persisted),
        ("peer-client", Some("tok"), None, false)
    );
    let subscriptions: Vec<Vec<&str>> = init.subscriptions.iter().map(|t| t.segments().collect()).collect();
    assert_eq!(subscriptions, [["test", "*"], ["other", "?"]]);
    let ours = InitReq {
        client_name: "peer-client",
        client_token: Some("tok"),
        subscriptions: SUBSCRIPTIONS,
        server_id: None,
        persisted: false,
    };
    assert_eq!(emit_frame(header(1, 1, true, false), &ours), frame);
    assert_eq!(emit_frame(msg.header, &init), frame, "the view re-emits itself");
}

#[test]
fn captured_init_res_and_status_notify_both_ways() {
    let res = hex(CAPTURED_INIT_RES);
    let body = bodies(&res).remove(0);
    let msg = Msg::parse(&body).unwrap();
    assert_eq!(msg.header, header(1, 1, false, true));
    assert_eq!(Message::parse(msg.msg_type, msg.data), Ok(Message::InitRes(InitRes::Success(Status::Starting))));
    assert_eq!(emit_frame(msg.header, &InitRes::Success(Status::Starting)), res);

    let status = hex(CAPTURED_STATUS);
    let body = bodies(&status).remove(0);
    let msg = Msg::parse(&body).unwrap();
    assert_eq!(msg.header, header(9, 9, true, true));
    assert_eq!(StatusNotify::parse(msg.data), Ok(StatusNotify(Status::Operational)));
    assert_eq!(emit_frame(msg.header, &StatusNotify(Status::Operational)), status);
}

#[test]
fn ping_7_and_its_pong_both_ways() {
    let stream = [hex(PING_7), hex(PONG_7)].concat();
    let bodies = bodies(&stream);
    let ping = Msg::parse(&bodies[0]).unwrap();
    let pong = Msg::parse(&bodies[1]).unwrap();
    assert_eq!((ping.header, ping.msg_type, ping.data), (header(7, 7, true, false), "HatChatter.Ping", &[][..]));
    assert_eq!((pong.header, pong.msg_type, pong.data), (header(3, 7, false, true), "HatChatter.Pong", &[][..]));
    for (msg, frame) in [(ping, PING_7), (pong, PONG_7)] {
        let message = Message::parse(msg.msg_type, msg.data).unwrap();
        assert_eq!(emit_frame(msg.header, &message), hex(frame));
    }
}

#[test]
fn events_notify_body_both_ways() {
    let body = hex(EVENTS_NOTIFY_BODY);
    let event = OwnedEvent::new(
        (1, 2, 3),
        segments_of(&["a", "b"]),
        (1_700_000_000, 5),
        None,
        Some(Payload::Json("42".into())),
    );
    let parsed = EventsNotify::parse(&body).unwrap();
    assert!(all_match(parsed.events, &[&event]));
    assert_eq!(emit(&EventsNotify { events: [event.as_ref()] }), body);
}

// ---------------------------------------------------------------------------------------------
// tests/data/hat_vectors.txt (the real library's encoder)
// ---------------------------------------------------------------------------------------------

struct Vectors {
    integers: Vec<(i64, Vec<u8>)>,
    messages: BTreeMap<String, Vec<u8>>,
    frames: BTreeMap<String, Vec<u8>>,
}

fn vectors() -> Vectors {
    let text = include_str!("data/hat_vectors.txt");
    let mut vectors = Vectors { integers: Vec::new(), messages: BTreeMap::new(), frames: BTreeMap::new() };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut fields = line.split(' ');
        let (kind, name, bytes) = (fields.next().unwrap(), fields.next().unwrap(), hex(fields.next().unwrap_or("")));
        match kind {
            "integer" => vectors.integers.push((name.parse().unwrap(), bytes)),
            "message" => assert!(vectors.messages.insert(name.into(), bytes).is_none(), "{name} twice"),
            "frame" => assert!(vectors.frames.insert(name.into(), bytes).is_none(), "{name} twice"),
            _ => panic!("unknown kind in {line:?}"),
        }
    }
    assert!(vectors.integers.len() >= 10 && vectors.messages.len() >= 30 && vectors.frames.len() >= 8);
    vectors
}

/// E1..E5 of hat_vectors.py.
fn events() -> Vec<OwnedEvent> {
    let json = |text: &str| Some(Payload::Json(text.into()));
    vec![
        OwnedEvent::new((1, 2, 3), segments_of(&["a", "b"]), (1_700_000_000, 5), None, json("42")),
        OwnedEvent::new(
            (7, 123_456_789, 1 << 40),
            segments_of(&["sensor", "room 1", "temp"]),
            (-1, 999_999),
            Some((-62_135_596_800, 0)),
            Some(Payload::Binary("u8".into(), (0..=255).collect())),
        ),
        OwnedEvent::new(
            (1 << 62, 0, 1),
            vec![],
            (0, 0),
            Some((1 << 40, 1)),
            json(r#"{"k": [1, 2.5, "x"], "n": null}"#),
        ),
        OwnedEvent::new(
            (3, 4, 5),
            vec!["x".repeat(300), "k\u{e4}se".into(), "\u{1f600}".into(), String::new()],
            (-(1 << 62), 123_456),
            None,
            None,
        ),
        OwnedEvent::new(
            (9, 9, 9),
            segments_of(&["?", "*"]),
            (1, 1),
            None,
            Some(Payload::Binary(String::new(), vec![])),
        ),
    ]
}

/// R1..R4 of hat_vectors.py, as events whose id and timestamp are not written.
fn register_events() -> Vec<OwnedEvent> {
    let at = |source: Option<(i64, u32)>, segments: Vec<String>, payload| {
        OwnedEvent::new((0, 0, 0), segments, (0, 0), source, payload)
    };
    vec![
        at(None, segments_of(&["a", "b"]), None),
        at(
            Some((-5, 500_000)),
            segments_of(&["sensor", "x"]),
            Some(Payload::Binary("raw".into(), vec![0, 0xff, 0x80])),
        ),
        at(None, segments_of(&["j"]), Some(Payload::Json(r#"[true, false, null, "str\u00e9", -1.5e+300]"#.into()))),
        at(None, vec!["long".into(), "y".repeat(200)], Some(Payload::Json(format!("\"{}\"", "z".repeat(150))))),
    ]
}

const NO_TYPES: Option<&[&[&str]]> = None;

fn ts(s: i64, us: u32) -> Option<Timestamp> {
    Some(Timestamp::new(s, us).unwrap())
}

/// Every message of hat_vectors.py, built here from the same values and encoded by us.
fn our_messages(events: &[OwnedEvent], registers: &[OwnedEvent]) -> BTreeMap<String, Vec<u8>> {
    let e: Vec<EventRef<'_>> = events.iter().map(OwnedEvent::as_ref).collect();
    let r: Vec<RegisterEventRef<'_>> = registers.iter().map(OwnedEvent::as_register).collect();
    let long_name = "c".repeat(200);
    let long_token = "\u{fc}".repeat(100);
    let long_segment = "b".repeat(130);
    let long_subscription: [&str; 2] = ["a", &long_segment];
    let statuses = [
        ("standby", Status::Standby),
        ("starting", Status::Starting),
        ("operational", Status::Operational),
        ("stopping", Status::Stopping),
    ];
    fn init<'s>(
        subscriptions: &'s [&'s [&'s str]],
        server_id: Option<u64>,
        persisted: bool,
    ) -> InitReq<'s, &'s [&'s [&'s str]]> {
        InitReq { client_name: "peer-client", client_token: Some("tok"), subscriptions, server_id, persisted }
    }
    let timeseries = QueryTimeseries {
        event_types: NO_TYPES,
        t_from: None,
        t_to: None,
        source_t_from: None,
        source_t_to: None,
        order: Order::Descending,
        order_by: OrderBy::Timestamp,
        max_results: None,
        last_event_id: None,
    };
    let mut out: Vec<(String, Vec<u8>)> = vec![
        ("MsgInitReq.captured".into(), emit(&init(&SUBSCRIPTIONS, None, false))),
        ("MsgInitReq.full".into(), emit(&init(&[&["test", "*"], &["other", "?"], &[], &["*"]], Some(5), true))),
        (
            "MsgInitReq.minimal".into(),
            emit(&InitReq {
                client_name: "",
                client_token: None,
                subscriptions: NO_TYPES.unwrap_or(&[]),
                server_id: None,
                persisted: false,
            }),
        ),
        (
            "MsgInitReq.long".into(),
            emit(&InitReq {
                client_name: &long_name,
                client_token: Some(&long_token),
                subscriptions: [&long_subscription[..]],
                server_id: Some(1 << 62),
                persisted: false,
            }),
        ),
        ("MsgInitRes.error".into(), emit(&InitRes::Error("invalid query event type"))),
        ("MsgEventsNotify.one".into(), emit(&EventsNotify { events: &e[..1] })),
        ("MsgEventsNotify.all".into(), emit(&EventsNotify { events: &e[..] })),
        ("MsgEventsNotify.empty".into(), emit(&EventsNotify { events: &e[..0] })),
        ("MsgEventsAck.ack".into(), emit(&EventsAck)),
        ("MsgRegisterReq.one".into(), emit(&RegisterReq { events: &r[..1] })),
        ("MsgRegisterReq.all".into(), emit(&RegisterReq { events: &r[..] })),
        ("MsgRegisterReq.empty".into(), emit(&RegisterReq { events: &r[..0] })),
        ("MsgRegisterRes.events".into(), emit(&RegisterRes::Events(&e[..2]))),
        ("MsgRegisterRes.no-events".into(), emit(&RegisterRes::Events(&e[..0]))),
        ("MsgRegisterRes.failure".into(), emit(&RegisterRes::<&[EventRef<'_>]>::Failure)),
        ("MsgQueryReq.latest-all".into(), emit(&QueryParams::Latest(QueryLatest { event_types: NO_TYPES }))),
        (
            "MsgQueryReq.latest-types".into(),
            emit(&QueryParams::Latest(QueryLatest { event_types: Some(&[&["a", "*"][..], &[]][..]) })),
        ),
        ("MsgQueryReq.timeseries-defaults".into(), emit(&QueryParams::Timeseries(timeseries))),
        (
            "MsgQueryReq.timeseries-full".into(),
            emit(&QueryParams::Timeseries(QueryTimeseries {
                event_types: Some(&[&["a", "?", "c"][..], &["*"]][..]),
                t_from: ts(-100, 1),
                t_to: ts(100, 999_999),
                source_t_from: ts(-(1 << 40), 0),
                source_t_to: ts(1 << 40, 500_000),
                order: Order::Ascending,
                order_by: OrderBy::SourceTimestamp,
                max_results: Some(100),
                last_event_id: Some(EventId { server: 1, session: 2, instance: 3 }),
            })),
        ),
        (
            "MsgQueryReq.timeseries-negative-max".into(),
            emit(&QueryParams::Timeseries(QueryTimeseries {
                event_types: Some(&[][..]),
                max_results: Some(-1),
                ..timeseries
            })),
        ),
        (
            "MsgQueryReq.server-minimal".into(),
            emit(&QueryParams::<&[&[&str]]>::Server(QueryServer { server_id: 3, ..QueryServer::default() })),
        ),
        (
            "MsgQueryReq.server-full".into(),
            emit(&QueryParams::<&[&[&str]]>::Server(QueryServer {
                server_id: 1 << 40,
                persisted: true,
                max_results: Some(1 << 33),
                last_event_id: Some(EventId { server: 1 << 40, session: 7, instance: 1 << 50 }),
            })),
        ),
        ("MsgQueryRes.more".into(), emit(&QueryRes { events: [e[0], e[2]], more_follows: true })),
        ("MsgQueryRes.empty".into(), emit(&QueryRes { events: &e[..0], more_follows: false })),
    ];
    for (name, status) in statuses {
        out.push((format!("MsgInitRes.success-{name}"), emit(&InitRes::Success(status))));
        out.push((format!("MsgStatusNotify.{name}"), emit(&StatusNotify(status))));
    }
    out.into_iter().map(|(name, bytes)| (format!("HatEventer.{name}"), bytes)).collect()
}

#[test]
fn library_integers_both_ways() {
    for (value, bytes) in vectors().integers {
        let mut buf = [0u8; 16];
        let mut w = Writer::new(&mut buf);
        w.integer(value).unwrap();
        let n = w.len();
        assert_eq!(&buf[..n], &bytes[..], "encode {value}");
        let mut r = Reader::new(&bytes);
        assert_eq!(r.integer(), Ok(value), "decode {value}");
        assert!(r.finish().is_ok());
    }
}

/// Every message vector: decodes, re-encodes to its bytes, and is exactly what we encode from
/// the same values.
#[test]
fn library_messages_both_ways() {
    let vectors = vectors();
    let (events, registers) = (events(), register_events());
    let ours = our_messages(&events, &registers);
    assert_eq!(ours.keys().collect::<Vec<_>>(), vectors.messages.keys().collect::<Vec<_>>(), "the same set");
    for (name, bytes) in &vectors.messages {
        let msg_type = &name[..name.rfind('.').unwrap()];
        let message = Message::parse(msg_type, bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(&emit(&message), bytes, "{name}: re-encoded");
        assert_eq!(&ours[name], bytes, "{name}: encoded from the values");
    }
}

/// What the events and requests decode to, field by field.
#[test]
fn library_messages_decode_to_their_values() {
    let vectors = vectors();
    let (events, registers) = (events(), register_events());
    let all: Vec<&OwnedEvent> = events.iter().collect();
    let parse = |name: &str| Message::parse(&name[..name.rfind('.').unwrap()], &vectors.messages[name]).unwrap();
    let Message::EventsNotify(notify) = parse("HatEventer.MsgEventsNotify.all") else { panic!() };
    assert!(all_match(notify.events, &all));
    let Message::RegisterRes(RegisterRes::Events(res)) = parse("HatEventer.MsgRegisterRes.events") else { panic!() };
    assert!(all_match(res, &all[..2]));
    let Message::QueryRes(res) = parse("HatEventer.MsgQueryRes.more") else { panic!() };
    assert!(all_match(res.events, &[all[0], all[2]]) && res.more_follows);
    let Message::RegisterReq(req) = parse("HatEventer.MsgRegisterReq.all") else { panic!() };
    assert_eq!(req.events.len(), 4);
    assert!(req.events.iter().zip(&registers).all(|(v, r)| r.matches_register(&v)));

    let Message::InitReq(init) = parse("HatEventer.MsgInitReq.full") else { panic!() };
    let subscriptions: Vec<Vec<&str>> = init.subscriptions.iter().map(|t| t.segments().collect()).collect();
    assert_eq!(subscriptions, [vec!["test", "*"], vec!["other", "?"], vec![], vec!["*"]]);
    assert_eq!((init.server_id, init.persisted), (Some(5), true));
    let Message::InitReq(init) = parse("HatEventer.MsgInitReq.long") else { panic!() };
    assert_eq!(
        (init.client_name.len(), init.client_token.map(str::len), init.server_id),
        (200, Some(200), Some(1 << 62))
    );

    let Message::QueryReq(QueryParams::Timeseries(q)) = parse("HatEventer.MsgQueryReq.timeseries-full") else {
        panic!()
    };
    let types: Vec<Vec<&str>> = q.event_types.unwrap().iter().map(|t| t.segments().collect()).collect();
    assert_eq!(types, [vec!["a", "?", "c"], vec!["*"]]);
    assert_eq!(
        (q.t_from, q.t_to, q.source_t_from, q.source_t_to),
        (ts(-100, 1), ts(100, 999_999), ts(-(1 << 40), 0), ts(1 << 40, 500_000))
    );
    assert_eq!((q.order, q.order_by, q.max_results), (Order::Ascending, OrderBy::SourceTimestamp, Some(100)));
    assert_eq!(q.last_event_id, Some(EventId { server: 1, session: 2, instance: 3 }));
    let Message::QueryReq(QueryParams::Timeseries(q)) = parse("HatEventer.MsgQueryReq.timeseries-negative-max") else {
        panic!()
    };
    assert_eq!((q.event_types.map(|t| t.len()), q.max_results), (Some(0), Some(-1)));
    let Message::QueryReq(QueryParams::Server(q)) = parse("HatEventer.MsgQueryReq.server-minimal") else { panic!() };
    assert_eq!(q, QueryServer { server_id: 3, persisted: false, max_results: None, last_event_id: None });
}

/// Every frame vector: through the decoder, `Msg` and the message, and back byte for byte.
#[test]
fn library_frames_both_ways() {
    let expected = [
        ("init-req", header(1, 1, true, false), MsgType::InitReq),
        ("init-res", header(1, 1, false, true), MsgType::InitRes),
        ("status-notify", header(9, 9, true, true), MsgType::StatusNotify),
        ("events-notify-ll2", header(2, 2, true, false), MsgType::EventsNotify),
        ("events-ack", header(5, 2, false, true), MsgType::EventsAck),
        ("register-req", header(1 << 31, 1 << 31, true, true), MsgType::RegisterReq),
        ("ping", header(7, 7, true, false), MsgType::Ping),
        ("pong", header(3, 7, false, true), MsgType::Pong),
    ];
    let vectors = vectors();
    assert_eq!(vectors.frames.len(), expected.len());
    assert_eq!(vectors.frames["events-notify-ll2"][0], 2, "a body over 255 bytes takes two length bytes");
    assert_eq!(&vectors.frames["init-req"], &hex(CAPTURED_INIT_REQ), "the captured frame, byte for byte");
    for (name, header, msg_type) in expected {
        let frame = &vectors.frames[name];
        let body = &bodies(frame)[0];
        let msg = Msg::parse(body).unwrap();
        assert_eq!((msg.header, msg.msg_type), (header, msg_type.name()), "{name}");
        let message = Message::parse(msg.msg_type, msg.data).unwrap();
        assert_eq!(&emit_frame(header, &message), frame, "{name}");
        assert_eq!(msg.frame_len(), Ok(frame.len()));
    }
}
