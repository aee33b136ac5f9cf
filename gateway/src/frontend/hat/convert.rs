//! hat's views as the broker's owned model, and back: event types are hat's lists of segments,
//! payloads keep their kind (binary with its type string, JSON as its text), and hat's raw
//! `maxResults` integers become the broker's page sizes.

use rivulet_core::hat::eventer::{EventTypeView, EventTypes, QueryParams, RegisterEventView};
use rivulet_core::owned::{EventPath, Payload, Query, RegisterEvent, TimeseriesQuery};

/// A hat event type (a list of segments) as a path.
pub(super) fn event_path(view: &EventTypeView<'_>) -> EventPath {
    EventPath::new(view.segments())
}

/// hat's subscription or query list as paths.
pub(super) fn event_paths(list: &EventTypes<'_>) -> Vec<EventPath> {
    list.iter().map(|view| event_path(&view)).collect()
}

/// A registration as the broker takes it.
pub(super) fn register_event(view: &RegisterEventView<'_>) -> RegisterEvent {
    RegisterEvent {
        event_type: event_path(&view.event_type),
        source_timestamp: view.source_timestamp,
        payload: view.payload.map(Payload::from),
    }
}

/// hat's `maxResults` (any integer) as a page size: negative asks for none.
fn page_size(max_results: Option<i64>) -> Option<u32> {
    max_results.map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

/// A hat query as the broker's.
pub(super) fn query(params: &QueryParams<EventTypes<'_>>) -> Query {
    match params {
        QueryParams::Latest(q) => Query::Latest { event_types: q.event_types.as_ref().map(event_paths) },
        QueryParams::Timeseries(q) => Query::Timeseries(TimeseriesQuery {
            event_types: q.event_types.as_ref().map(event_paths),
            t_from: q.t_from,
            t_to: q.t_to,
            source_t_from: q.source_t_from,
            source_t_to: q.source_t_to,
            order: q.order,
            order_by: q.order_by,
            max_results: page_size(q.max_results),
            last_event_id: q.last_event_id,
        }),
        QueryParams::Server(q) => Query::Server {
            server_id: q.server_id,
            persisted: q.persisted,
            max_results: page_size(q.max_results),
            last_event_id: q.last_event_id,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rivulet_core::hat::eventer::{EventerMessage, InitReq, QueryLatest, QueryServer, RegisterReq};
    use rivulet_core::model::{EventId, EventPayloadRef, EventType, RegisterEventRef, Timestamp};

    fn encoded(message: &impl EventerMessage) -> Vec<u8> {
        let mut buf = vec![0; message.buffer_len().unwrap()];
        let len = message.emit(&mut buf).unwrap();
        buf.truncate(len);
        buf
    }

    #[test]
    fn subscriptions_keep_every_segment_and_hats_rules() {
        let subscriptions: [&[&str]; 3] = [&["a", "*"], &[], &["x", "?", "y/z"]];
        let init = InitReq {
            client_name: "c",
            client_token: None,
            subscriptions: subscriptions.iter().copied(),
            server_id: None,
            persisted: false,
        };
        let bytes = encoded(&init);
        let parsed = InitReq::parse(&bytes).unwrap();
        let paths = event_paths(&parsed.subscriptions);
        assert_eq!(paths, [EventPath::new(["a", "*"]), EventPath::default(), EventPath::new(["x", "?", "y/z"])]);
        assert!(paths[0].matches(&EventPath::new(["a"])), "('a', '*') matches ('a',)");
        assert!(paths[1].matches(&EventPath::default()) && !paths[1].matches(&EventPath::new(["a"])));
    }

    #[test]
    fn registrations_keep_type_timestamps_and_payload_kind() {
        let (json, binary) =
            (EventType::<32>::from_segments(["t", "j"]).unwrap(), EventType::<32>::from_segments(["t", "b"]).unwrap());
        let at = Timestamp { s: -5, us: 7 };
        let events = [
            RegisterEventRef {
                event_type: json.as_ref(),
                source_timestamp: Some(at),
                payload: Some(EventPayloadRef::Json("[1, 2]")),
            },
            RegisterEventRef {
                event_type: binary.as_ref(),
                source_timestamp: None,
                payload: Some(EventPayloadRef::Binary { kind: "blob", data: &[0, 255] }),
            },
        ];
        let bytes = encoded(&RegisterReq { events: &events[..] });
        let parsed = RegisterReq::parse(&bytes).unwrap();
        let owned: Vec<RegisterEvent> = parsed.events.iter().map(|view| register_event(&view)).collect();
        assert_eq!(
            owned,
            [
                RegisterEvent {
                    event_type: EventPath::new(["t", "j"]),
                    source_timestamp: Some(at),
                    payload: Some(Payload::Json("[1, 2]".into())),
                },
                RegisterEvent {
                    event_type: EventPath::new(["t", "b"]),
                    source_timestamp: None,
                    payload: Some(Payload::Binary { kind: "blob".into(), data: vec![0, 255] }),
                },
            ]
        );
    }

    #[test]
    fn queries_keep_their_fields_and_page_sizes_are_clamped() {
        let latest = QueryParams::<EventTypes<'_>>::Latest(QueryLatest { event_types: None });
        assert_eq!(query(&latest), Query::Latest { event_types: None });
        let last = EventId { server: 3, session: 1, instance: 9 };
        let server = QueryParams::<EventTypes<'_>>::Server(QueryServer {
            server_id: 3,
            persisted: true,
            max_results: Some(-4),
            last_event_id: Some(last),
        });
        let expected = Query::Server { server_id: 3, persisted: true, max_results: Some(0), last_event_id: Some(last) };
        assert_eq!(query(&server), expected, "a negative maxResults asks for none");
        assert_eq!(page_size(Some(i64::MAX)), Some(u32::MAX));
        assert_eq!(page_size(None), None);
    }
}
