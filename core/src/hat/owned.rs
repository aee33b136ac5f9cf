//! hat's messages as the owned model (feature `alloc`), and back, for host code on either side
//! of a hat connection: the gateway's hat front-end reads hat's views into the broker's model,
//! the tokio hat client writes the model as hat's messages. Event types are hat's lists of
//! segments, payloads keep their kind (binary with its type string, JSON as its text), and hat's
//! raw `maxResults` integers become page sizes (negative asks for none).

use alloc::vec::Vec;

use super::eventer::{
    EventTypeView, EventTypes, EventView, QueryLatest, QueryParams, QueryServer, QueryTimeseries, RegisterEventView,
};
use crate::model::EventTypeRef;
use crate::owned::{Event, EventPath, Payload, Query, RegisterEvent, TimeseriesQuery};

/// A hat event type (a list of segments) as a path.
pub fn event_path(view: &EventTypeView<'_>) -> EventPath {
    EventPath::new(view.segments())
}

/// hat's subscription or query list as paths.
pub fn event_paths(list: &EventTypes<'_>) -> Vec<EventPath> {
    list.iter().map(|view| event_path(&view)).collect()
}

/// Paths as a list hat's encoders write (an init's subscriptions, a query's types).
pub fn wire_types(paths: &[EventPath]) -> Vec<EventTypeRef<'_>> {
    paths.iter().map(EventPath::as_ref).collect()
}

/// A registration as read.
pub fn register_event(view: &RegisterEventView<'_>) -> RegisterEvent {
    RegisterEvent {
        event_type: event_path(&view.event_type),
        source_timestamp: view.source_timestamp,
        payload: view.payload.map(Payload::from),
    }
}

/// An event as read (notified, registered, or in a query page).
pub fn event(view: &EventView<'_>) -> Event {
    Event {
        id: view.id,
        event_type: event_path(&view.event_type),
        timestamp: view.timestamp,
        source_timestamp: view.source_timestamp,
        payload: view.payload.map(Payload::from),
    }
}

/// hat's `maxResults` (any integer) as a page size: negative asks for none.
pub fn page_size(max_results: Option<i64>) -> Option<u32> {
    max_results.map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

/// A hat query as the model's.
pub fn query(params: &QueryParams<EventTypes<'_>>) -> Query {
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

/// The model's query as hat's, ready to write.
pub fn query_params(query: &Query) -> QueryParams<Vec<EventTypeRef<'_>>> {
    match query {
        Query::Latest { event_types } => {
            QueryParams::Latest(QueryLatest { event_types: event_types.as_deref().map(wire_types) })
        }
        Query::Timeseries(q) => QueryParams::Timeseries(QueryTimeseries {
            event_types: q.event_types.as_deref().map(wire_types),
            t_from: q.t_from,
            t_to: q.t_to,
            source_t_from: q.source_t_from,
            source_t_to: q.source_t_to,
            order: q.order,
            order_by: q.order_by,
            max_results: q.max_results.map(i64::from),
            last_event_id: q.last_event_id,
        }),
        Query::Server { server_id, persisted, max_results, last_event_id } => QueryParams::Server(QueryServer {
            server_id: *server_id,
            persisted: *persisted,
            max_results: max_results.map(i64::from),
            last_event_id: *last_event_id,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hat::eventer::{EventerMessage, EventsNotify, InitReq, RegisterReq};
    use crate::model::{EventId, EventPayloadRef, EventRef, EventType, Order, OrderBy, RegisterEventRef, Timestamp};
    use alloc::vec;

    fn encoded(message: &impl EventerMessage) -> Vec<u8> {
        let mut buf = vec![0; message.buffer_len().unwrap()];
        let len = message.emit(&mut buf).unwrap();
        buf.truncate(len);
        buf
    }

    #[test]
    fn subscriptions_keep_every_segment_and_hats_rules() {
        let paths = [EventPath::new(["a", "*"]), EventPath::default(), EventPath::new(["x", "?", "y/z"])];
        let init = InitReq {
            client_name: "c",
            client_token: None,
            subscriptions: wire_types(&paths),
            server_id: None,
            persisted: false,
        };
        let bytes = encoded(&init);
        let parsed = event_paths(&InitReq::parse(&bytes).unwrap().subscriptions);
        assert_eq!(parsed, paths);
        assert!(parsed[0].matches(&EventPath::new(["a"])), "('a', '*') matches ('a',)");
        assert!(parsed[1].matches(&EventPath::default()) && !parsed[1].matches(&EventPath::new(["a"])));
    }

    #[test]
    fn registrations_and_events_keep_type_timestamps_and_payload_kind() {
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
        let expected: Vec<RegisterEvent> = events.iter().copied().map(RegisterEvent::from).collect();
        assert_eq!(owned, expected);

        let id = EventId { server: 1, session: 2, instance: 3 };
        let notified = EventRef {
            id,
            event_type: binary.as_ref(),
            timestamp: at,
            source_timestamp: None,
            payload: events[1].payload,
        };
        let bytes = encoded(&EventsNotify { events: &[notified][..] });
        let parsed = EventsNotify::parse(&bytes).unwrap();
        let owned: Vec<Event> = parsed.events.iter().map(|view| event(&view)).collect();
        assert_eq!(owned, [Event::from(notified)]);
    }

    #[test]
    fn queries_make_the_round_trip_and_page_sizes_are_clamped() {
        let last = EventId { server: 3, session: 1, instance: 9 };
        let queries = [
            Query::Latest { event_types: None },
            Query::Latest { event_types: Some(vec![EventPath::new(["a", "?"])]) },
            Query::Timeseries(TimeseriesQuery {
                event_types: Some(vec![EventPath::new(["b", "*"]), EventPath::default()]),
                t_from: Some(Timestamp { s: 1, us: 2 }),
                t_to: Some(Timestamp { s: 3, us: 4 }),
                source_t_from: Some(Timestamp { s: 5, us: 6 }),
                source_t_to: None,
                order: Order::Ascending,
                order_by: OrderBy::SourceTimestamp,
                max_results: Some(7),
                last_event_id: Some(last),
            }),
            Query::Server { server_id: 3, persisted: true, max_results: None, last_event_id: Some(last) },
        ];
        for q in &queries {
            let bytes = encoded(&query_params(q));
            assert_eq!(&query(&QueryParams::parse(&bytes).unwrap()), q);
        }
        let negative = QueryParams::<Vec<EventTypeRef<'_>>>::Server(QueryServer {
            server_id: 3,
            persisted: true,
            max_results: Some(-4),
            last_event_id: None,
        });
        let bytes = encoded(&negative);
        let read = query(&QueryParams::parse(&bytes).unwrap());
        let expected = Query::Server { server_id: 3, persisted: true, max_results: Some(0), last_event_id: None };
        assert_eq!(read, expected, "a negative maxResults asks for none");
        assert_eq!(page_size(Some(i64::MAX)), Some(u32::MAX));
    }
}
