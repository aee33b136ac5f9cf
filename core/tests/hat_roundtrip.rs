//! The hat codec on generated values and bytes: every message written from arbitrary values
//! reads back as those values and re-encodes to the same bytes (proptest), and the `hat` fuzz
//! target's harness runs on its seed corpus, on random bytes and on edited seeds (fuzz/,
//! docs/RELIABILITY.md "Fuzzing").

#[allow(dead_code)]
#[path = "support/hat_values.rs"]
mod support;

#[allow(dead_code)]
#[path = "../../fuzz/src"]
mod fuzz {
    pub mod corpus;
    pub mod hat;
    pub mod input;
}

use proptest::prelude::*;
use rivulet_core::hat::eventer::{
    EventerMessage, EventsNotify, InitReq, InitRes, Message, MsgType, QueryLatest, QueryParams, QueryRes, QueryServer,
    QueryTimeseries, RegisterReq, RegisterRes,
};
use rivulet_core::model::{EventId, EventRef, Order, OrderBy, RegisterEventRef, Status, Timestamp};
use support::{OwnedEvent, Payload};

fn emit(message: &impl EventerMessage) -> Vec<u8> {
    let mut buf = vec![0u8; message.buffer_len().unwrap()];
    assert_eq!(message.emit(&mut buf), Ok(buf.len()));
    buf
}

/// Reads `bytes` as `msg_type` and checks that what was read writes the same bytes.
fn reparse(msg_type: MsgType, bytes: &[u8]) -> Message<'_> {
    let message = Message::parse_as(msg_type, bytes).unwrap();
    assert_eq!(emit(&message), bytes, "{msg_type:?} re-encodes to other bytes");
    message
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), Just("*".to_string()), Just("?".to_string()), ".{0,12}", "[a-z]{100,200}"]
}

fn segments() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(segment(), 0..5)
}

fn timestamp() -> impl Strategy<Value = (i64, u32)> {
    (any::<i64>(), 0u32..1_000_000)
}

fn payload() -> impl Strategy<Value = Option<Payload>> {
    proptest::option::of(prop_oneof![
        (".{0,8}", proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(k, d)| Payload::Binary(k, d)),
        ".{0,40}".prop_map(Payload::Json),
    ])
}

fn event() -> impl Strategy<Value = OwnedEvent> {
    let id = (0..=i64::MAX as u64, 0..=i64::MAX as u64, 0..=i64::MAX as u64);
    (id, segments(), timestamp(), proptest::option::of(timestamp()), payload())
        .prop_map(|(id, segments, ts, source, payload)| OwnedEvent::new(id, segments, ts, source, payload))
}

fn events() -> impl Strategy<Value = Vec<OwnedEvent>> {
    proptest::collection::vec(event(), 0..4)
}

fn types() -> impl Strategy<Value = Vec<Vec<String>>> {
    proptest::collection::vec(segments(), 0..4)
}

fn as_slices(types: &[Vec<String>]) -> Vec<Vec<&str>> {
    types.iter().map(|t| t.iter().map(String::as_str).collect()).collect()
}

fn read_types<'a>(list: impl IntoIterator<Item = rivulet_core::hat::eventer::EventTypeView<'a>>) -> Vec<Vec<&'a str>> {
    list.into_iter().map(|t| t.segments().collect()).collect()
}

fn ts(t: Option<(i64, u32)>) -> Option<Timestamp> {
    t.map(|(s, us)| Timestamp::new(s, us).unwrap())
}

fn event_id() -> impl Strategy<Value = Option<EventId>> {
    proptest::option::of((0..=i64::MAX as u64, 0..=i64::MAX as u64, 0..=i64::MAX as u64))
        .prop_map(|id| id.map(|(server, session, instance)| EventId { server, session, instance }))
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![Just(Status::Standby), Just(Status::Starting), Just(Status::Operational), Just(Status::Stopping)]
}

proptest! {
    #[test]
    fn events_round_trip_in_every_message_that_carries_them(events in events(), more: bool) {
        let refs: Vec<EventRef<'_>> = events.iter().map(OwnedEvent::as_ref).collect();
        let all: Vec<&OwnedEvent> = events.iter().collect();
        let bytes = emit(&EventsNotify { events: &refs[..] });
        let Message::EventsNotify(notify) = reparse(MsgType::EventsNotify, &bytes) else { panic!() };
        prop_assert!(support::all_match(notify.events, &all));
        let bytes = emit(&RegisterRes::Events(&refs[..]));
        let Message::RegisterRes(RegisterRes::Events(res)) = reparse(MsgType::RegisterRes, &bytes) else { panic!() };
        prop_assert!(support::all_match(res, &all));
        let bytes = emit(&QueryRes { events: &refs[..], more_follows: more });
        let Message::QueryRes(res) = reparse(MsgType::QueryRes, &bytes) else { panic!() };
        prop_assert!(support::all_match(res.events, &all) && res.more_follows == more);
    }

    #[test]
    fn register_requests_round_trip(events in events()) {
        let refs: Vec<RegisterEventRef<'_>> = events.iter().map(OwnedEvent::as_register).collect();
        let bytes = emit(&RegisterReq { events: &refs[..] });
        let Message::RegisterReq(req) = reparse(MsgType::RegisterReq, &bytes) else { panic!() };
        prop_assert_eq!(req.events.len(), events.len());
        prop_assert!(req.events.iter().zip(&events).all(|(view, e)| e.matches_register(&view)));
    }

    #[test]
    fn init_round_trips(
        name in ".{0,20}",
        token in proptest::option::of(".{0,20}"),
        subscriptions in types(),
        server_id in proptest::option::of(0..=i64::MAX as u64),
        persisted: bool,
        status in status(),
        reason in ".{0,40}",
    ) {
        let slices = as_slices(&subscriptions);
        let refs: Vec<&[&str]> = slices.iter().map(Vec::as_slice).collect();
        let init = InitReq { client_name: &name, client_token: token.as_deref(), subscriptions: &refs, server_id, persisted };
        let bytes = emit(&init);
        let Message::InitReq(read) = reparse(MsgType::InitReq, &bytes) else { panic!() };
        prop_assert_eq!((read.client_name, read.client_token, read.server_id, read.persisted), (&name[..], token.as_deref(), server_id, persisted));
        prop_assert_eq!(read_types(read.subscriptions), slices.clone());
        for res in [InitRes::Success(status), InitRes::Error(&reason)] {
            let bytes = emit(&res);
            prop_assert_eq!(reparse(MsgType::InitRes, &bytes), Message::InitRes(res));
        }
    }

    #[test]
    fn queries_round_trip(
        types in proptest::option::of(types()),
        times in proptest::collection::vec(proptest::option::of(timestamp()), 4),
        ascending: bool,
        by_source: bool,
        max_results in proptest::option::of(any::<i64>()),
        last_event_id in event_id(),
        server_id in 0..=i64::MAX as u64,
        persisted: bool,
    ) {
        let slices = types.as_deref().map(as_slices);
        let refs: Option<Vec<&[&str]>> = slices.as_ref().map(|s| s.iter().map(Vec::as_slice).collect());
        let event_types = refs.as_deref();
        let timeseries = QueryTimeseries {
            event_types,
            t_from: ts(times[0]),
            t_to: ts(times[1]),
            source_t_from: ts(times[2]),
            source_t_to: ts(times[3]),
            order: if ascending { Order::Ascending } else { Order::Descending },
            order_by: if by_source { OrderBy::SourceTimestamp } else { OrderBy::Timestamp },
            max_results,
            last_event_id,
        };
        let server = QueryServer { server_id, persisted, max_results, last_event_id };
        for query in [QueryParams::Latest(QueryLatest { event_types }), QueryParams::Timeseries(timeseries), QueryParams::Server(server)] {
            let bytes = emit(&query);
            let Message::QueryReq(read) = reparse(MsgType::QueryReq, &bytes) else { panic!() };
            let expected_list = slices.clone();
            match (read, query) {
                (QueryParams::Latest(r), QueryParams::Latest(_)) => prop_assert_eq!(r.event_types.map(read_types), expected_list),
                (QueryParams::Timeseries(r), QueryParams::Timeseries(q)) => {
                    prop_assert_eq!(r.event_types.map(read_types), expected_list);
                    prop_assert_eq!((r.t_from, r.t_to, r.source_t_from, r.source_t_to), (q.t_from, q.t_to, q.source_t_from, q.source_t_to));
                    prop_assert_eq!((r.order, r.order_by, r.max_results, r.last_event_id), (q.order, q.order_by, q.max_results, q.last_event_id));
                }
                (QueryParams::Server(r), QueryParams::Server(q)) => prop_assert_eq!(r, q),
                (r, q) => prop_assert!(false, "{:?} read as {:?}", q, r),
            }
        }
    }
}

/// The model's query becomes hat's with the same fields.
#[test]
fn model_queries_convert() {
    use rivulet_core::model::{self, EventType, ListBuilder};
    let mut buf = [0u8; 64];
    let mut list = ListBuilder::new(&mut buf);
    list.push(&EventType::<16>::parse_path("a/*").unwrap()).unwrap();
    let query = model::QueryParams::Server(model::QueryServer {
        server_id: 4,
        persisted: true,
        max_results: Some(9),
        last_event_id: None,
    });
    let hat = QueryParams::from(&query);
    assert_eq!(
        hat,
        QueryParams::Server(QueryServer { server_id: 4, persisted: true, max_results: Some(9), last_event_id: None })
    );
    let latest = model::QueryParams::Latest(model::QueryLatest { event_types: Some(list.finish()) });
    let bytes = emit(&QueryParams::from(&latest));
    let Message::QueryReq(QueryParams::Latest(read)) = reparse(MsgType::QueryReq, &bytes) else { panic!() };
    assert_eq!(read.event_types.map(read_types), Some(vec![vec!["a", "*"]]));
}

// ---------------------------------------------------------------------------------------------
// The `hat` fuzz target on stable
// ---------------------------------------------------------------------------------------------

fn fuzz_edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6)
}

#[test]
fn fuzz_hat_seed_corpus() {
    let seeds = fuzz::corpus::seeds("hat");
    assert!(seeds.len() >= 50, "the golden vectors make the seeds: {}", seeds.len());
    for seed in seeds {
        fuzz::hat::run(&seed);
    }
}

proptest! {
    #[test]
    fn fuzz_hat_random_bytes(bytes in proptest::collection::vec(prop_oneof![Just(0x80u8), 0x80u8..0x90, any::<u8>()], 0..400)) {
        fuzz::hat::run(&bytes);
    }

    #[test]
    fn fuzz_hat_edited_seeds(pick in any::<prop::sample::Index>(), edits in fuzz_edits()) {
        let seeds = fuzz::corpus::seeds("hat");
        fuzz::hat::run(&fuzz::corpus::mutate(&seeds[pick.index(seeds.len())], &edits));
    }
}
