//! Integration tests of the event model: postcard round trips of every message value, decoding
//! hostile bytes, the owned containers' capacity rules and hat-event's subscription wildcards
//! (`shared/reference/peers.md` "Subscription wildcards").

use proptest::prelude::*;
use rivulet_core::model::{
    ANY_ONE, ANY_TAIL, Error, Event, EventId, EventList, EventPayload, EventPayloadRef, EventRef, EventType,
    EventTypeRef, ListBuilder, Order, OrderBy, PAYLOAD_KIND_BYTES, PackedList, PathError, QueryLatest, QueryParams,
    QueryResult, QueryServer, QueryTimeseries, RegisterEvent, RegisterEventRef, Status, TYPE_BYTES, Timestamp,
    TypeList, TypeListBuf,
};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

type Ty = EventType<256>;

fn ty(segments: &[&str]) -> Ty {
    Ty::from_segments(segments.iter().copied()).unwrap()
}

/// Encodes with postcard into a fixed buffer and returns the bytes.
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = [0u8; 8192];
    postcard::to_slice(value, &mut buf).unwrap().to_vec()
}

/// Decodes and checks that every byte was used.
fn decode_all<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> T {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).unwrap();
    assert!(rest.is_empty(), "{} bytes left over", rest.len());
    value
}

/// A payload with owned storage, for proptest.
#[derive(Debug, Clone)]
enum Payload {
    Binary(String, Vec<u8>),
    Json(String),
}

impl Payload {
    fn as_ref(&self) -> EventPayloadRef<'_> {
        match self {
            Payload::Binary(kind, data) => EventPayloadRef::Binary { kind, data },
            Payload::Json(text) => EventPayloadRef::Json(text),
        }
    }
}

/// An event with owned storage, for proptest.
#[derive(Debug, Clone)]
struct EventParts {
    id: EventId,
    event_type: Ty,
    timestamp: Timestamp,
    source_timestamp: Option<Timestamp>,
    payload: Option<Payload>,
}

impl EventParts {
    fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            id: self.id,
            event_type: self.event_type.as_ref(),
            timestamp: self.timestamp,
            source_timestamp: self.source_timestamp,
            payload: self.payload.as_ref().map(Payload::as_ref),
        }
    }

    fn register(&self) -> RegisterEventRef<'_> {
        RegisterEventRef {
            event_type: self.event_type.as_ref(),
            source_timestamp: self.source_timestamp,
            payload: self.payload.as_ref().map(Payload::as_ref),
        }
    }
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_]{0,6}",
        1 => Just(ANY_ONE.to_string()),
        1 => Just(ANY_TAIL.to_string()),
        1 => ".{0,4}",
    ]
}

fn event_type() -> impl Strategy<Value = Ty> {
    proptest::collection::vec(segment(), 0..6)
        .prop_map(|segs| Ty::from_segments(segs.iter().map(String::as_str)).unwrap())
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (any::<i64>(), 0u32..1_000_000).prop_map(|(s, us)| Timestamp::new(s, us).unwrap())
}

fn event_id() -> impl Strategy<Value = EventId> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(server, session, instance)| EventId {
        server,
        session,
        instance,
    })
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        ("[a-z./]{0,32}", proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(k, d)| Payload::Binary(k, d)),
        ".{0,40}".prop_map(Payload::Json),
    ]
}

fn event_parts() -> impl Strategy<Value = EventParts> {
    (event_id(), event_type(), timestamp(), proptest::option::of(timestamp()), proptest::option::of(payload()))
        .prop_map(|(id, event_type, timestamp, source_timestamp, payload)| EventParts {
            id,
            event_type,
            timestamp,
            source_timestamp,
            payload,
        })
}

fn order() -> impl Strategy<Value = Order> {
    prop_oneof![Just(Order::Descending), Just(Order::Ascending)]
}

fn order_by() -> impl Strategy<Value = OrderBy> {
    prop_oneof![Just(OrderBy::Timestamp), Just(OrderBy::SourceTimestamp)]
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![Just(Status::Standby), Just(Status::Starting), Just(Status::Operational), Just(Status::Stopping)]
}

/// Packs `types` into a `TypeListBuf`.
fn type_list(types: &[Ty]) -> TypeListBuf<1024> {
    let mut list = TypeListBuf::new();
    for t in types {
        list.push(t.as_ref()).unwrap();
    }
    list
}

/// Bytes a value takes in a `TypeListBuf` (its postcard encoding).
fn packed_size(t: EventTypeRef<'_>) -> usize {
    encode(&t).len()
}

// ---------------------------------------------------------------------------------------------
// 5. postcard round trips
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn event_ref_round_trip(parts in event_parts()) {
        let event = parts.as_ref();
        let bytes = encode(&event);
        prop_assert_eq!(decode_all::<EventRef<'_>>(&bytes), event);
    }

    /// The owned event has the same encoding as the borrowed one: a device can send either and
    /// the receiver can read either.
    #[test]
    fn owned_event_round_trip_and_matches_borrowed_encoding(parts in event_parts()) {
        let event = parts.as_ref();
        let owned: Event<256, 512> = event.to_owned().unwrap();
        prop_assert_eq!(owned.as_ref(), event);
        let bytes = encode(&owned);
        prop_assert_eq!(&bytes, &encode(&event));
        prop_assert_eq!(&decode_all::<Event<256, 512>>(&bytes), &owned);
        prop_assert_eq!(decode_all::<EventRef<'_>>(&bytes), event);
    }

    #[test]
    fn register_event_round_trip(parts in event_parts()) {
        let register = parts.register();
        let bytes = encode(&register);
        prop_assert_eq!(decode_all::<RegisterEventRef<'_>>(&bytes), register);
        let owned: RegisterEvent<256, 512> = decode_all(&bytes);
        prop_assert_eq!(owned.as_ref(), register);
        prop_assert_eq!(encode(&owned), bytes);
    }

    #[test]
    fn query_latest_round_trip(types in proptest::option::of(proptest::collection::vec(event_type(), 0..5))) {
        let list = types.as_deref().map(type_list);
        let params = QueryParams::Latest(QueryLatest { event_types: list.as_ref().map(TypeListBuf::list) });
        let bytes = encode(&params);
        let back: QueryParams<'_> = decode_all(&bytes);
        prop_assert_eq!(back, params);
        let QueryParams::Latest(latest) = back else { panic!("variant changed: {back:?}") };
        match (latest.event_types, types) {
            (None, None) => {}
            (Some(decoded), Some(types)) => {
                prop_assert_eq!(decoded.len(), types.len());
                prop_assert!(decoded.iter().eq(types.iter().map(Ty::as_ref)));
            }
            (decoded, types) => prop_assert!(false, "{decoded:?} vs {types:?}"),
        }
    }

    #[test]
    fn query_timeseries_round_trip(
        types in proptest::option::of(proptest::collection::vec(event_type(), 0..4)),
        t_from in proptest::option::of(timestamp()),
        t_to in proptest::option::of(timestamp()),
        source_t_from in proptest::option::of(timestamp()),
        source_t_to in proptest::option::of(timestamp()),
        order in order(),
        order_by in order_by(),
        max_results in proptest::option::of(any::<u32>()),
        last_event_id in proptest::option::of(event_id()),
    ) {
        let list = types.as_deref().map(type_list);
        let params = QueryParams::Timeseries(QueryTimeseries {
            event_types: list.as_ref().map(TypeListBuf::list),
            t_from,
            t_to,
            source_t_from,
            source_t_to,
            order,
            order_by,
            max_results,
            last_event_id,
        });
        let bytes = encode(&params);
        prop_assert_eq!(decode_all::<QueryParams<'_>>(&bytes), params);
    }

    #[test]
    fn query_server_round_trip(
        server_id: u64,
        persisted: bool,
        max_results in proptest::option::of(any::<u32>()),
        last_event_id in proptest::option::of(event_id()),
    ) {
        let params = QueryParams::Server(QueryServer { server_id, persisted, max_results, last_event_id });
        let bytes = encode(&params);
        prop_assert_eq!(decode_all::<QueryParams<'_>>(&bytes), params);
    }

    #[test]
    fn query_result_round_trip(events in proptest::collection::vec(event_parts(), 0..6), more_follows: bool) {
        let mut storage = [0u8; 8192];
        let mut builder = ListBuilder::new(&mut storage);
        for event in &events {
            builder.push(&event.as_ref()).unwrap();
        }
        prop_assert_eq!(builder.items(), events.len());
        let result = QueryResult { events: builder.finish(), more_follows };
        prop_assert_eq!(result.events.len(), events.len());
        prop_assert!(result.events.iter().eq(events.iter().map(EventParts::as_ref)));

        let bytes = encode(&result);
        let back: QueryResult<'_> = decode_all(&bytes);
        prop_assert_eq!(back, result);
        prop_assert_eq!(back.more_follows, more_follows);
        prop_assert_eq!(back.events.len(), events.len());
        prop_assert_eq!(back.events.is_empty(), events.is_empty());
        prop_assert!(back.events.iter().eq(events.iter().map(EventParts::as_ref)));
        prop_assert!(back.events.into_iter().eq(events.iter().map(EventParts::as_ref)));
    }

    #[test]
    fn status_round_trip(status in status()) {
        let bytes = encode(&status);
        prop_assert_eq!(bytes.len(), 1);
        prop_assert_eq!(decode_all::<Status>(&bytes), status);
    }

    #[test]
    fn timestamp_round_trip(ts in timestamp()) {
        prop_assert_eq!(decode_all::<Timestamp>(&encode(&ts)), ts);
    }

    #[test]
    fn timestamp_micros(micros: i64) {
        let ts = Timestamp::from_micros(micros);
        prop_assert!(ts.us < 1_000_000);
        prop_assert_eq!(ts.as_micros(), i128::from(micros));
        prop_assert_eq!(Timestamp::new(ts.s, ts.us), Ok(ts));
    }

    /// Timestamps order like the instants they stand for (queries compare them).
    #[test]
    fn timestamp_order_follows_micros(a: i64, b: i64) {
        let (ta, tb) = (Timestamp::from_micros(a), Timestamp::from_micros(b));
        prop_assert_eq!(ta.cmp(&tb), a.cmp(&b));
    }
}

#[test]
fn status_variants_are_distinct_on_the_wire() {
    let all = [Status::Standby, Status::Starting, Status::Operational, Status::Stopping];
    let encodings: Vec<Vec<u8>> = all.iter().map(encode).collect();
    for (i, a) in encodings.iter().enumerate() {
        for b in &encodings[i + 1..] {
            assert_ne!(a, b);
        }
    }
    assert_eq!(Status::default(), Status::Standby);
}

#[test]
fn timestamp_edges() {
    assert_eq!(Timestamp::from_micros(-1), Timestamp { s: -1, us: 999_999 });
    assert_eq!(Timestamp::from_micros(1_500_000), Timestamp { s: 1, us: 500_000 });
    assert_eq!(Timestamp::from_micros(i64::MIN).as_micros(), i128::from(i64::MIN));
    assert_eq!(Timestamp::from_micros(i64::MAX).as_micros(), i128::from(i64::MAX));
    assert_eq!(Timestamp::new(0, 1_000_000), Err(Error::Malformed));
    assert_eq!(Timestamp::new(-5, 999_999), Ok(Timestamp { s: -5, us: 999_999 }));
}

#[test]
fn event_to_owned_respects_capacities() {
    let data = [7u8; 40];
    let t = ty(&["a", "b"]);
    let event = EventRef {
        id: EventId::default(),
        event_type: t.as_ref(),
        timestamp: Timestamp::default(),
        source_timestamp: None,
        payload: Some(EventPayloadRef::Binary { kind: "raw", data: &data }),
    };
    assert!(event.to_owned::<4, 64>().is_ok());
    assert_eq!(event.to_owned::<3, 64>(), Err(Error::Capacity), "type needs 4 bytes");
    assert_eq!(event.to_owned::<4, 39>(), Err(Error::Capacity), "data needs 40 bytes");

    let long_kind = "k".repeat(PAYLOAD_KIND_BYTES + 1);
    let payload = EventPayloadRef::Binary { kind: &long_kind, data: &[] };
    assert_eq!(payload.to_owned::<8>(), Err(Error::Capacity));
    let kind = "k".repeat(PAYLOAD_KIND_BYTES);
    assert!(EventPayloadRef::Binary { kind: &kind, data: &[] }.to_owned::<8>().is_ok());
    assert_eq!(EventPayloadRef::Json("123456789").to_owned::<8>(), Err(Error::Capacity));
    let json: EventPayload<8> = EventPayloadRef::Json("12345678").to_owned().unwrap();
    assert_eq!(json.as_ref(), EventPayloadRef::Json("12345678"));

    // An event too large for the receiver's owned capacity is a decode error, not a panic or a
    // silent truncation.
    let bytes = encode(&event);
    assert!(postcard::from_bytes::<Event<4, 39>>(&bytes).is_err());
    assert!(postcard::from_bytes::<Event<3, 64>>(&bytes).is_err());
    assert_eq!(postcard::from_bytes::<Event<4, 40>>(&bytes).map(|e| e.as_ref() == event), Ok(true));
}

// ---------------------------------------------------------------------------------------------
// 5. Hostile bytes
// ---------------------------------------------------------------------------------------------

/// Decodes `bytes` as every model value; whatever decodes must re-encode to bytes that decode to
/// the same value. Nothing may panic.
fn decode_everything(bytes: &[u8]) {
    /// Decodes `$bytes` as `$ty`; if that works, the value must re-encode to bytes that decode to
    /// an equal value.
    macro_rules! check {
        ($ty:ty, $bytes:expr) => {{
            let value = postcard::from_bytes::<$ty>($bytes).ok();
            if let Some(value) = &value {
                let again = encode(value);
                assert_eq!(&postcard::from_bytes::<$ty>(&again).unwrap(), value);
            }
            value
        }};
    }
    if let Some(event) = check!(EventRef<'_>, bytes) {
        let _ = event.event_type.segments().count();
        let _ = event.to_owned::<TYPE_BYTES, 256>();
    }
    check!(Event, bytes);
    check!(Event<2, 2>, bytes);
    check!(RegisterEventRef<'_>, bytes);
    check!(RegisterEvent, bytes);
    if let Some(params) = check!(QueryParams<'_>, bytes) {
        let types = match params {
            QueryParams::Latest(q) => q.event_types,
            QueryParams::Timeseries(q) => q.event_types,
            QueryParams::Server(_) => None,
        };
        for t in types.iter().flat_map(|list| list.iter()) {
            // A valid pattern read as an event type matches itself.
            if t.check_pattern().is_ok() {
                assert!(t.matches(t), "{t:?}");
            }
        }
    }
    if let Some(result) = check!(QueryResult<'_>, bytes) {
        assert_eq!(result.events.iter().count(), result.events.len());
    }
    if let Some(list) = check!(EventList<'_>, bytes) {
        assert_eq!(list.iter().count(), list.len());
    }
    if let Some(list) = check!(TypeList<'_>, bytes) {
        assert_eq!(list.iter().count(), list.len());
    }
    check!(Status, bytes);
    check!(Timestamp, bytes);
    check!(EventId, bytes);
    if let Some(t) = check!(EventTypeRef<'_>, bytes) {
        let _ = t.to_string();
    }
    check!(EventType<4>, bytes);
    if let Ok(t) = EventTypeRef::from_packed(bytes) {
        assert_eq!(t.segments().count(), t.len());
        let _ = t.to_string();
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        decode_everything(&bytes);
    }

    /// Valid encodings with a few bytes changed or cut reach deeper into the decoders.
    #[test]
    fn damaged_encodings_never_panic(
        events in proptest::collection::vec(event_parts(), 1..3),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut storage = [0u8; 4096];
        let mut builder = ListBuilder::new(&mut storage);
        for event in &events {
            builder.push(&event.as_ref()).unwrap();
        }
        let result = QueryResult { events: builder.finish(), more_follows: true };
        for mut bytes in [encode(&result), encode(&events[0].as_ref()), encode(&events[0].register())] {
            for (at, value) in &edits {
                let i = at.index(bytes.len());
                bytes[i] = *value;
            }
            decode_everything(&bytes);
            decode_everything(&bytes[..cut.index(bytes.len() + 1)]);
        }
    }
}

#[test]
fn packed_types_reject_bad_bytes() {
    assert_eq!(EventTypeRef::from_packed(&[0x03, b'a', b'b']), Err(Error::Truncated));
    assert_eq!(EventTypeRef::from_packed(&[0x02, 0xff, 0xfe]), Err(Error::Utf8));
    // Non-ASCII segments are checked one by one: `é` whole is fine, cut across two segments not.
    let accented = [0x02, 0xc3, 0xa9, 0x01, b'a'];
    assert_eq!(EventTypeRef::from_packed(&accented).map(|t| t.segments().collect::<Vec<_>>()), Ok(vec!["é", "a"]));
    assert_eq!(EventTypeRef::from_packed(&[0x01, 0xc3, 0x01, 0xa9]), Err(Error::Utf8));
    assert_eq!(EventTypeRef::from_packed(&[0x80]), Err(Error::Truncated));
    assert_eq!(EventTypeRef::from_packed(&[0x80; 6]), Err(Error::Malformed));
    // An overlong length (`81 00` for 1) would make equal types compare unequal.
    assert_eq!(EventTypeRef::from_packed(&[0x81, 0x00, b'a']), Err(Error::Malformed));
    assert_eq!(EventTypeRef::from_packed(&[0x00, 0x01, b'a']).map(|t| t.len()), Ok(2));
    // A list whose bytes are not whole items.
    let mut list = TypeListBuf::<64>::new();
    list.push(ty(&["a", "b"]).as_ref()).unwrap();
    let bytes = encode(&list.list());
    assert!(postcard::from_bytes::<TypeList<'_>>(&bytes[..bytes.len() - 1]).is_err());
    let mut cut = bytes.clone();
    cut[0] -= 1; // the byte string now ends mid-item
    assert!(postcard::from_bytes::<TypeList<'_>>(&cut[..cut.len() - 1]).is_err());
    assert_eq!(PackedList::<EventTypeRef<'_>>::from_bytes(&[0x02, 0x01]), Err(Error::Malformed));
}

// ---------------------------------------------------------------------------------------------
// 5. Owned containers
// ---------------------------------------------------------------------------------------------

#[test]
fn type_list_buf_push_contains_remove() {
    let (ab, ac, star) = (ty(&["a", "b"]), ty(&["a", "c"]), ty(&["*"]));
    let empty = ty(&[]);
    let mut list = TypeListBuf::<64>::new();
    assert!(list.is_empty());
    assert!(!list.contains(ab.as_ref()));

    for t in [&ab, &ac, &ab, &star, &empty, &ab] {
        list.push(t.as_ref()).unwrap();
    }
    assert_eq!(list.len(), 6);
    assert!(list.contains(ab.as_ref()) && list.contains(star.as_ref()) && list.contains(empty.as_ref()));
    assert!(!list.contains(ty(&["a"]).as_ref()));
    assert!(list.list().iter().eq([&ab, &ac, &ab, &star, &empty, &ab].map(Ty::as_ref)));

    assert_eq!(list.remove(ab.as_ref()), 3, "every copy goes");
    assert_eq!(list.len(), 3);
    assert!(!list.contains(ab.as_ref()));
    assert!(list.list().iter().eq([&ac, &star, &empty].map(Ty::as_ref)), "the rest keep their order");
    assert_eq!(list.remove(ab.as_ref()), 0);
    assert_eq!(list.remove(empty.as_ref()), 1);
    assert!(list.list().iter().eq([&ac, &star].map(Ty::as_ref)));
    assert_eq!(format!("{list:?}"), r#"[["a", "c"], ["*"]]"#);

    list.clear();
    assert!(list.is_empty() && list.list().is_empty());
    assert_eq!(list, TypeListBuf::default());
}

#[test]
fn type_list_buf_capacity_error_leaves_the_list_unchanged() {
    let mut list = TypeListBuf::<10>::new();
    let ab = ty(&["a", "b"]); // packed 4 bytes, 5 in the list
    list.push(ab.as_ref()).unwrap();
    list.push(ab.as_ref()).unwrap();
    let before = list.clone();
    assert_eq!(list.push(ty(&[]).as_ref()), Err(Error::Capacity));
    assert_eq!(list, before);
    assert_eq!(list.len(), 2);
    assert!(list.list().iter().eq([ab.as_ref(), ab.as_ref()]));

    list.remove(ab.as_ref());
    let mut small = TypeListBuf::<10>::new();
    assert_eq!(small.push(ty(&["0123456789"]).as_ref()), Err(Error::Capacity));
    assert!(small.is_empty() && small.list().as_bytes().is_empty());
    small.push(ty(&["01234567"]).as_ref()).unwrap(); // 1 + 1 + 8 = 10 bytes: exactly full
    assert_eq!(small.len(), 1);
    assert_eq!(small.push(ty(&[]).as_ref()), Err(Error::Capacity));
    assert_eq!(small.len(), 1);
}

#[derive(Debug, Clone)]
enum ListOp {
    Push(Ty),
    Remove(Ty),
    Clear,
}

fn small_type() -> impl Strategy<Value = Ty> {
    proptest::collection::vec("[ab*?]{0,3}", 0..4)
        .prop_map(|s| Ty::from_segments(s.iter().map(String::as_str)).unwrap())
}

proptest! {
    /// `TypeListBuf` behaves like a `Vec` of types with a byte budget.
    #[test]
    fn type_list_buf_matches_a_vec_model(ops in proptest::collection::vec(
        prop_oneof![
            6 => small_type().prop_map(ListOp::Push),
            3 => small_type().prop_map(ListOp::Remove),
            1 => Just(ListOp::Clear),
        ],
        0..40,
    )) {
        const N: usize = 48;
        let mut list = TypeListBuf::<N>::new();
        let mut model: Vec<Ty> = Vec::new();
        for op in ops {
            match op {
                ListOp::Push(t) => {
                    let used: usize = model.iter().map(|m| packed_size(m.as_ref())).sum();
                    let fits = used + packed_size(t.as_ref()) <= N;
                    let before = list.clone();
                    let pushed = list.push(t.as_ref());
                    if fits {
                        prop_assert_eq!(pushed, Ok(()));
                        model.push(t);
                    } else {
                        prop_assert_eq!(pushed, Err(Error::Capacity));
                        prop_assert_eq!(&list, &before);
                    }
                }
                ListOp::Remove(t) => {
                    let expected = model.iter().filter(|m| **m == t.as_ref()).count();
                    model.retain(|m| *m != t.as_ref());
                    prop_assert_eq!(list.remove(t.as_ref()), expected);
                }
                ListOp::Clear => {
                    list.clear();
                    model.clear();
                }
            }
            prop_assert_eq!(list.len(), model.len());
            prop_assert!(list.list().iter().eq(model.iter().map(Ty::as_ref)));
            for m in &model {
                prop_assert!(list.contains(m.as_ref()));
            }
            // What a server stores is what goes on the wire.
            let bytes = encode(&list.list());
            let decoded: TypeList<'_> = decode_all(&bytes);
            prop_assert_eq!(decoded, list.list());
            prop_assert_eq!(decoded.len(), model.len());
        }
    }

    #[test]
    fn list_builder_capacity_error_leaves_the_list_unchanged(
        events in proptest::collection::vec(event_parts(), 1..8),
        capacity in 0usize..1500,
    ) {
        let mut storage = vec![0u8; capacity];
        let mut builder = ListBuilder::new(&mut storage);
        let mut pushed = Vec::new();
        for event in &events {
            let before = builder.bytes().to_vec();
            match builder.push(&event.as_ref()) {
                Ok(()) => pushed.push(event.as_ref()),
                Err(error) => {
                    prop_assert_eq!(error, Error::Capacity);
                    prop_assert_eq!(builder.bytes(), &before[..]);
                    prop_assert!(before.len() + encode(&event.as_ref()).len() > capacity);
                }
            }
            prop_assert_eq!(builder.items(), pushed.len());
        }
        let list: EventList<'_> = builder.finish();
        prop_assert_eq!(list.len(), pushed.len());
        prop_assert!(list.iter().eq(pushed.iter().copied()));
        prop_assert_eq!(EventList::from_bytes(builder.bytes()), Ok(list));
    }
}

#[test]
fn event_type_capacity() {
    let mut t = EventType::<8>::new();
    t.push("abcdefg").unwrap(); // 1 + 7 bytes: full
    let before = t.clone();
    assert_eq!(t.push(""), Err(Error::Capacity));
    assert_eq!(t, before);
    assert_eq!(t.segments().collect::<Vec<_>>(), ["abcdefg"]);

    let mut t = EventType::<8>::new();
    t.push("ab").unwrap();
    assert_eq!(t.push("abcdefgh"), Err(Error::Capacity), "the segment alone is too long");
    assert_eq!(t.push("abcde"), Err(Error::Capacity), "one byte over");
    assert_eq!(t.segments().collect::<Vec<_>>(), ["ab"], "a failed push leaves no length byte behind");
    t.push("abcd").unwrap();
    assert_eq!(t.to_string(), "ab/abcd");

    assert_eq!(EventType::<4>::from_segments(["a", "b", "c"]), Err(Error::Capacity));
    assert_eq!(EventType::<4>::parse_path("abcd"), Err(Error::Capacity));
    assert_eq!(ty(&["abc", "d"]).as_ref().to_owned::<5>(), Err(Error::Capacity));
    assert_eq!(ty(&["abc", "d"]).as_ref().to_owned::<6>().map(|t| t.to_string()), Ok("abc/d".to_string()));

    // The default capacity holds 63 bytes of text in one segment.
    let mut t = EventType::<TYPE_BYTES>::new();
    assert_eq!(t.push(&"x".repeat(TYPE_BYTES)), Err(Error::Capacity));
    t.push(&"x".repeat(TYPE_BYTES - 1)).unwrap();
}

#[test]
fn event_type_long_segments_use_multi_byte_lengths() {
    let long = "é".repeat(100); // 200 bytes: a two-byte LEB128 length
    let t = EventType::<512>::from_segments([long.as_str(), "tail"]).unwrap();
    assert_eq!(&t.as_ref().as_packed()[..2], &[0xc8, 0x01]);
    assert_eq!(t.segments().collect::<Vec<_>>(), [long.as_str(), "tail"]);
    let back: EventType<512> = decode_all(&encode(&t));
    assert_eq!(back, t);
    assert_eq!(EventTypeRef::from_packed(t.as_ref().as_packed()), Ok(t.as_ref()));
}

#[test]
fn event_type_paths() {
    let t = EventType::<64>::parse_path("sensor/room1/temp").unwrap();
    assert_eq!(t.segments().collect::<Vec<_>>(), ["sensor", "room1", "temp"]);
    assert_eq!(t.to_string(), "sensor/room1/temp");
    assert_eq!(format!("{t:?}"), r#"["sensor", "room1", "temp"]"#);
    assert_eq!(t.as_ref().len(), 3);
    assert_eq!(t, ty(&["sensor", "room1", "temp"]).as_ref());
    assert_eq!(EventType::<64>::parse_path(""), Ok(EventType::new()));
    assert!(EventType::<64>::parse_path("").unwrap().as_ref().is_empty());
    assert_eq!(EventTypeRef::EMPTY, EventType::<64>::new().as_ref());
    for bad in ["a//b", "/a", "a/", "/"] {
        assert_eq!(EventType::<64>::parse_path(bad), Err(Error::EmptySegment), "{bad}");
    }
    // Empty segments can still be built explicitly (hat allows them).
    assert_eq!(ty(&["a", "", "b"]).as_ref().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// 5. Subscription wildcards (peers.md)
// ---------------------------------------------------------------------------------------------

/// Every example of peers.md "Subscription wildcards": (subscription, event type, matches).
const WILDCARD_TABLE: &[(&[&str], &[&str], bool)] = &[
    (&["a", "*"], &["a"], true),
    (&["a", "*"], &["a", "b", "c"], true),
    (&["a", "*"], &[], false),
    (&["*"], &[], true),
    (&["*"], &["x"], true),
    (&["*"], &["x", "y", "z"], true),
    (&["?", "*"], &[], false),
    (&["?", "*"], &["x"], true),
    (&["?", "*"], &["x", "y", "z"], true),
    (&["a", "b", "*"], &["a", "b"], true),
    (&["a", "b", "*"], &["a"], false),
    (&[], &[], true),
    (&[], &["a"], false),
    (&["a"], &["a"], true),
    (&["a"], &["a", "b"], false),
    (&["a"], &["b"], false),
    (&["?"], &[], false),
    (&["?"], &["x"], true),
    (&["?"], &["x", "y"], false),
    (&["a", "?"], &["a", "*"], true),
    (&["a", "b"], &["a", "?"], false),
    (&["a", "?", "c"], &["a", "b", "c"], true),
    (&["a", "?", "c"], &["a", "c"], false),
];

#[test]
fn wildcard_table_direct() {
    for &(pattern, event, expected) in WILDCARD_TABLE {
        let p = ty(pattern);
        assert_eq!(p.as_ref().check_pattern(), Ok(()), "{pattern:?}");
        assert_eq!(p.matches(ty(event).as_ref()), expected, "{pattern:?} vs {event:?}");
        assert_eq!(p.as_ref().matches(ty(event).as_ref()), expected, "{pattern:?} vs {event:?}");
    }
}

/// A subscription stored as a packed list, sent over the wire and matched by iterating it.
#[test]
fn wildcard_table_through_type_lists() {
    for &(pattern, event, expected) in WILDCARD_TABLE {
        let mut subs = TypeListBuf::<64>::new();
        subs.push(ty(pattern).as_ref()).unwrap();
        let event = ty(event);
        let stored = subs.list().iter().any(|p| p.matches(event.as_ref()));
        assert_eq!(stored, expected, "{pattern:?} vs {event:?} (stored)");

        let bytes = encode(&subs.list());
        let received: TypeList<'_> = decode_all(&bytes);
        let over_wire = received.iter().any(|p| p.matches(event.as_ref()));
        assert_eq!(over_wire, expected, "{pattern:?} vs {event:?} (received)");
    }
}

#[test]
fn subscription_lists() {
    let events: Vec<Ty> =
        [&[][..], &["a"], &["a", "b"], &["c", "x"], &["c"], &["d", "e", "f"]].iter().map(|s| ty(s)).collect();
    let matching = |subs: &TypeListBuf<128>| -> Vec<bool> {
        let list = subs.list();
        events.iter().map(|e| list.iter().any(|p| p.matches(e.as_ref()))).collect()
    };
    // An empty subscription list matches nothing, `()` included.
    assert_eq!(matching(&TypeListBuf::new()), [false; 6]);

    let mut subs = TypeListBuf::<128>::new();
    subs.push(ty(&["a", "b"]).as_ref()).unwrap();
    subs.push(ty(&["c", "?"]).as_ref()).unwrap();
    assert_eq!(matching(&subs), [false, false, true, true, false, false]);
    subs.push(ty(&[]).as_ref()).unwrap();
    assert_eq!(matching(&subs), [true, false, true, true, false, false]);
    subs.push(ty(&["d", "*"]).as_ref()).unwrap();
    assert_eq!(matching(&subs), [true, false, true, true, false, true]);
    subs.remove(ty(&["c", "?"]).as_ref());
    assert_eq!(matching(&subs), [true, false, true, false, false, true]);
    subs.push(ty(&["*"]).as_ref()).unwrap();
    assert_eq!(matching(&subs), [true; 6]);
}

#[test]
fn star_only_last() {
    for bad in [&["*", "a"][..], &["a", "*", "b"], &["*", "*"], &["?", "*", "?"]] {
        assert_eq!(ty(bad).as_ref().check_pattern(), Err(PathError::TailNotLast), "{bad:?}");
    }
    for good in [&[][..], &["*"], &["a", "*"], &["?", "?", "*"], &["a", "b"]] {
        assert_eq!(ty(good).as_ref().check_pattern(), Ok(()), "{good:?}");
    }
}

/// hat's matching, written independently: `?` one segment, trailing `*` any tail.
fn reference_match(pattern: &[String], event: &[String]) -> bool {
    match (pattern.split_first(), event.split_first()) {
        (None, None) => true,
        (Some((p, rest)), _) if p == ANY_TAIL && rest.is_empty() => true,
        (Some((p, prest)), Some((e, erest))) => (p == ANY_ONE || p == e) && reference_match(prest, erest),
        _ => false,
    }
}

proptest! {
    #[test]
    fn matching_agrees_with_reference_through_lists(
        patterns in proptest::collection::vec(proptest::collection::vec("[ab?]{1}|\\*", 0..4), 0..4),
        event in proptest::collection::vec("[ab?*]{1}", 0..5),
    ) {
        let patterns: Vec<Vec<String>> = patterns
            .into_iter()
            .filter(|p| p.iter().position(|s| s == ANY_TAIL).is_none_or(|i| i + 1 == p.len()))
            .collect();
        let mut subs = TypeListBuf::<512>::new();
        for p in &patterns {
            let t = Ty::from_segments(p.iter().map(String::as_str)).unwrap();
            prop_assert_eq!(t.as_ref().check_pattern(), Ok(()));
            subs.push(t.as_ref()).unwrap();
        }
        let e = Ty::from_segments(event.iter().map(String::as_str)).unwrap();
        let expected = patterns.iter().any(|p| reference_match(p, &event));
        prop_assert_eq!(subs.list().iter().any(|p| p.matches(e.as_ref())), expected);
    }
}

// ---------------------------------------------------------------------------------------------
// The fuzz target on stable (fuzz/, docs/RELIABILITY.md "Fuzzing")
// ---------------------------------------------------------------------------------------------

/// The harness of the fuzz target `event_types`: the same file `cargo +nightly fuzz` builds, run
/// here on the committed seed corpus, on random input and on seeds with random edits.
#[allow(dead_code)]
#[path = "../../fuzz/src"]
mod fuzz {
    pub mod corpus;
    pub mod event_types;
    pub mod input;
}

#[test]
fn fuzz_event_types_seed_corpus() {
    for seed in fuzz::corpus::seeds("event_types") {
        fuzz::event_types::run(&seed);
    }
}

proptest! {
    #[test]
    fn fuzz_event_types_random_input(
        split in any::<u8>(),
        pattern in proptest::collection::vec(segment(), 0..5),
        event in proptest::collection::vec(segment(), 0..5),
        noise in proptest::collection::vec(any::<u8>(), 0..40),
        packed in any::<bool>(),
    ) {
        // Packed segments (the wire form) or a path; `noise` stands for whatever the fuzzer sends.
        let encode_side = |segments: &[String]| -> Vec<u8> {
            if packed {
                Ty::from_segments(segments.iter().map(String::as_str)).unwrap().as_ref().as_packed().to_vec()
            } else {
                segments.join("/").into_bytes()
            }
        };
        let a = encode_side(&pattern);
        let b = encode_side(&event);
        let cut = if split == 0 { a.len() } else { usize::from(split) };
        let input = [vec![cut as u8], a, b, noise].concat();
        fuzz::event_types::run(&input);
    }

    #[test]
    fn fuzz_event_types_edited_seeds(
        pick in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6),
    ) {
        let seeds = fuzz::corpus::seeds("event_types");
        fuzz::event_types::run(&fuzz::corpus::mutate(&seeds[pick.index(seeds.len())], &edits));
    }
}
