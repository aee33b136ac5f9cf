//! Owned, heap-backed forms of the event model (feature `alloc`), for host code: no capacities
//! to pick, and conversions to and from the borrowed `*Ref` views the machines speak. They are
//! built on the same packed bytes, so matching and encoding are the model's own, not copies.
//!
//! [`SubscriptionIndex`] finds the subscribers of an event type among many patterns.

mod index;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::model::path::{self, Grammar};
use crate::model::{
    EventId, EventPayloadRef, EventRef, EventTypeRef, ListBuilder, PackedList, PathError, QueryLatest, QueryParams,
    QueryServer, QueryTimeseries, RegisterEventRef, Timestamp, leb128,
};

pub use crate::model::{Order, OrderBy, Status};
pub use index::SubscriptionIndex;

/// An event type, or a subscription pattern with `?` (any one segment) and `*` (any tail):
/// hat's list of string segments.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EventPath {
    /// The segments packed as the wire carries them (LEB128 length, UTF-8 bytes).
    packed: Vec<u8>,
}

impl EventPath {
    pub fn new<S: AsRef<str>>(segments: impl IntoIterator<Item = S>) -> Self {
        let mut path = EventPath::default();
        for segment in segments {
            path.push(segment.as_ref());
        }
        path
    }

    /// Splits `a/b/c` at `/` (so segments cannot contain `/`; use [`EventPath::new`] for those),
    /// whatever the segments: `a//b` has an empty one. [`EventPath::parse_type`] and
    /// [`EventPath::parse_pattern`] check what people write.
    pub fn parse(path: &str) -> Self {
        if path.is_empty() { EventPath::default() } else { EventPath::new(path.split('/')) }
    }

    /// Parses an event type as people write it, `sensor/room1/temp`: segments between single
    /// `/`, none `?` or `*`. The error says how to write it instead.
    pub fn parse_type(text: &str) -> Result<Self, PathError> {
        Self::parse_as(text, Grammar::Type)
    }

    /// Parses a pattern as people write it, `sensor/?/temp` or `sensor/*`: segments between
    /// single `/`, `?` for any one, `*` for any rest (last only). The error says how to write it
    /// instead.
    pub fn parse_pattern(text: &str) -> Result<Self, PathError> {
        Self::parse_as(text, Grammar::Pattern)
    }

    fn parse_as(text: &str, grammar: Grammar) -> Result<Self, PathError> {
        let mut path = EventPath::default();
        path::parse(text, grammar, |segment| {
            path.push(segment);
            Ok(())
        })?;
        Ok(path)
    }

    fn push(&mut self, segment: &str) {
        let mut len = [0u8; leb128::MAX_LEN];
        let used = leb128::encode(segment.len(), &mut len);
        self.packed.extend_from_slice(len.get(..used).unwrap_or(&[]));
        self.packed.extend_from_slice(segment.as_bytes());
    }

    pub fn as_ref(&self) -> EventTypeRef<'_> {
        // Built from whole UTF-8 segments only, so there is nothing to check again (a router
        // takes this view several times per event).
        EventTypeRef::from_checked(&self.packed)
    }

    /// The segments packed as the wire carries them: their byte length is what the type costs
    /// in a message or a queue.
    pub fn as_packed(&self) -> &[u8] {
        &self.packed
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.as_ref().segments()
    }

    /// Whether this pattern matches `event_type` (hat's rules).
    pub fn matches(&self, event_type: &EventPath) -> bool {
        self.as_ref().matches(event_type.as_ref())
    }

    /// Whether some event type matches both this pattern and `other`.
    pub fn overlaps(&self, other: &EventPath) -> bool {
        self.as_ref().overlaps(other.as_ref())
    }

    /// Whether these segments make a pattern: `*` only last.
    pub fn check_pattern(&self) -> Result<(), PathError> {
        self.as_ref().check_pattern()
    }

    /// Whether these segments make an event type: no `?` or `*`.
    pub fn check_type(&self) -> Result<(), PathError> {
        self.as_ref().check_type()
    }
}

impl From<EventTypeRef<'_>> for EventPath {
    fn from(ty: EventTypeRef<'_>) -> Self {
        EventPath { packed: ty.as_packed().to_vec() }
    }
}

impl From<&str> for EventPath {
    fn from(path: &str) -> Self {
        EventPath::parse(path)
    }
}

impl fmt::Display for EventPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_ref(), f)
    }
}

impl fmt::Debug for EventPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.as_ref(), f)
    }
}

/// An event's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Bytes of an application-defined `kind`.
    Binary { kind: String, data: Vec<u8> },
    /// JSON text.
    Json(String),
}

impl Payload {
    pub fn as_ref(&self) -> EventPayloadRef<'_> {
        match self {
            Payload::Binary { kind, data } => EventPayloadRef::Binary { kind, data },
            Payload::Json(text) => EventPayloadRef::Json(text),
        }
    }
}

impl From<EventPayloadRef<'_>> for Payload {
    fn from(payload: EventPayloadRef<'_>) -> Self {
        match payload {
            EventPayloadRef::Binary { kind, data } => Payload::Binary { kind: kind.into(), data: data.into() },
            EventPayloadRef::Json(text) => Payload::Json(text.into()),
        }
    }
}

/// A registered event, as notified or queried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub event_type: EventPath,
    pub timestamp: Timestamp,
    pub source_timestamp: Option<Timestamp>,
    pub payload: Option<Payload>,
}

impl Event {
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            id: self.id,
            event_type: self.event_type.as_ref(),
            timestamp: self.timestamp,
            source_timestamp: self.source_timestamp,
            payload: self.payload.as_ref().map(Payload::as_ref),
        }
    }
}

impl From<EventRef<'_>> for Event {
    fn from(event: EventRef<'_>) -> Self {
        Event {
            id: event.id,
            event_type: event.event_type.into(),
            timestamp: event.timestamp,
            source_timestamp: event.source_timestamp,
            payload: event.payload.map(Payload::from),
        }
    }
}

/// An event to register; the server gives it an id and a timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterEvent {
    pub event_type: EventPath,
    pub source_timestamp: Option<Timestamp>,
    pub payload: Option<Payload>,
}

impl RegisterEvent {
    pub fn new(event_type: impl Into<EventPath>, payload: Option<Payload>) -> Self {
        RegisterEvent { event_type: event_type.into(), source_timestamp: None, payload }
    }

    pub fn as_ref(&self) -> RegisterEventRef<'_> {
        RegisterEventRef {
            event_type: self.event_type.as_ref(),
            source_timestamp: self.source_timestamp,
            payload: self.payload.as_ref().map(Payload::as_ref),
        }
    }
}

impl From<RegisterEventRef<'_>> for RegisterEvent {
    fn from(event: RegisterEventRef<'_>) -> Self {
        RegisterEvent {
            event_type: event.event_type.into(),
            source_timestamp: event.source_timestamp,
            payload: event.payload.map(Payload::from),
        }
    }
}

/// A history query (hat's latest, timeseries and server queries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The newest event of each type matching `event_types` (all types when `None`).
    Latest {
        event_types: Option<Vec<EventPath>>,
    },
    Timeseries(TimeseriesQuery),
    /// Events registered by one server, in id order after `last_event_id`.
    Server {
        server_id: u64,
        persisted: bool,
        max_results: Option<u32>,
        last_event_id: Option<EventId>,
    },
}

/// Events in time ranges, ordered, in pages of `max_results` after `last_event_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeseriesQuery {
    pub event_types: Option<Vec<EventPath>>,
    pub t_from: Option<Timestamp>,
    pub t_to: Option<Timestamp>,
    pub source_t_from: Option<Timestamp>,
    pub source_t_to: Option<Timestamp>,
    pub order: Order,
    pub order_by: OrderBy,
    pub max_results: Option<u32>,
    pub last_event_id: Option<EventId>,
}

impl Query {
    /// The same query for the page after `last`, if the query pages (latest does not).
    pub fn after(&self, last: EventId) -> Option<Query> {
        match self {
            Query::Latest { .. } => None,
            Query::Timeseries(q) => Some(Query::Timeseries(TimeseriesQuery { last_event_id: Some(last), ..q.clone() })),
            Query::Server { server_id, persisted, max_results, .. } => Some(Query::Server {
                server_id: *server_id,
                persisted: *persisted,
                max_results: *max_results,
                last_event_id: Some(last),
            }),
        }
    }

    /// Packs the type lists into `buf` (cleared first) and gives the borrowed form.
    pub fn to_params<'b>(&self, buf: &'b mut Vec<u8>) -> QueryParams<'b> {
        let types = match self {
            Query::Latest { event_types } => event_types.as_deref(),
            Query::Timeseries(q) => q.event_types.as_deref(),
            Query::Server { .. } => None,
        };
        let list = types.map(|types| pack_types(types, buf));
        match self {
            Query::Latest { .. } => QueryParams::Latest(QueryLatest { event_types: list }),
            Query::Timeseries(q) => QueryParams::Timeseries(QueryTimeseries {
                event_types: list,
                t_from: q.t_from,
                t_to: q.t_to,
                source_t_from: q.source_t_from,
                source_t_to: q.source_t_to,
                order: q.order,
                order_by: q.order_by,
                max_results: q.max_results,
                last_event_id: q.last_event_id,
            }),
            Query::Server { server_id, persisted, max_results, last_event_id } => QueryParams::Server(QueryServer {
                server_id: *server_id,
                persisted: *persisted,
                max_results: *max_results,
                last_event_id: *last_event_id,
            }),
        }
    }
}

impl From<&QueryParams<'_>> for Query {
    fn from(params: &QueryParams<'_>) -> Self {
        let types =
            |list: Option<PackedList<'_, EventTypeRef<'_>>>| list.map(|l| l.iter().map(EventPath::from).collect());
        match *params {
            QueryParams::Latest(q) => Query::Latest { event_types: types(q.event_types) },
            QueryParams::Timeseries(q) => Query::Timeseries(TimeseriesQuery {
                event_types: types(q.event_types),
                t_from: q.t_from,
                t_to: q.t_to,
                source_t_from: q.source_t_from,
                source_t_to: q.source_t_to,
                order: q.order,
                order_by: q.order_by,
                max_results: q.max_results,
                last_event_id: q.last_event_id,
            }),
            QueryParams::Server(q) => Query::Server {
                server_id: q.server_id,
                persisted: q.persisted,
                max_results: q.max_results,
                last_event_id: q.last_event_id,
            },
        }
    }
}

/// One page of query results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryPage {
    pub events: Vec<Event>,
    /// A next page (the same query after the last event's id) has more.
    pub more_follows: bool,
}

/// Packs items into a list in `buf` (cleared first), sized once from each item's encoded size.
/// An item postcard cannot encode (none of the model's can fail) leaves the list empty.
pub fn pack_list<'b, T: serde::Serialize, I: serde::Deserialize<'b>>(
    items: impl Iterator<Item = T> + Clone,
    buf: &'b mut Vec<u8>,
) -> PackedList<'b, I> {
    buf.clear();
    let sizes: Result<usize, _> = items
        .clone()
        .map(|item| postcard::experimental::serialized_size(&item))
        .try_fold(0usize, |sum, size| size.map(|size| sum.saturating_add(size)));
    let Ok(size) = sizes else { return PackedList::EMPTY };
    buf.resize(size, 0);
    let mut builder = ListBuilder::new(buf.as_mut_slice());
    if !items.clone().all(|item| builder.push(&item).is_ok()) {
        return PackedList::EMPTY;
    }
    let len = builder.bytes().len();
    buf.truncate(len);
    // The bytes were just built from whole items: they always check.
    PackedList::from_bytes(buf).unwrap_or(PackedList::EMPTY)
}

fn pack_types<'b>(types: &[EventPath], buf: &'b mut Vec<u8>) -> PackedList<'b, EventTypeRef<'b>> {
    pack_list(types.iter().map(EventPath::as_ref), buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventType;

    /// The owned and the heapless forms read text by the same grammar, to the same bytes.
    #[test]
    fn text_reads_as_the_model_reads_it() {
        for text in ["sensor/room1/temp", "sensor/?/temp", "sensor/*", "*", "a/*/b", "a//b", "", "/", "a?/b*"] {
            let as_type = EventPath::parse_type(text);
            assert_eq!(
                as_type.as_ref().map(EventPath::as_ref),
                EventType::<64>::parse_type(text).as_ref().map(EventType::as_ref),
                "{text:?}"
            );
            let as_pattern = EventPath::parse_pattern(text);
            let heapless = EventType::<64>::parse_pattern(text);
            assert_eq!(
                as_pattern.as_ref().map(EventPath::as_ref),
                heapless.as_ref().map(EventType::as_ref),
                "{text:?}"
            );
            if let Ok(path) = &as_pattern {
                assert_eq!(path.to_string(), text, "prints back");
                assert_eq!(*path, EventPath::parse(text), "as the unchecked reading");
            }
        }
        assert_eq!(EventPath::parse_type("sensor/room1/temp"), Ok(EventPath::new(["sensor", "room1", "temp"])));
        assert_eq!(EventPath::parse_type("sensor/?"), Err(PathError::Wildcard));
        assert_eq!(EventPath::parse_pattern("a/*/b"), Err(PathError::TailNotLast));
        assert_eq!(EventPath::parse_pattern(""), Err(PathError::Empty));
        assert_eq!(EventPath::parse("a//b").segments().collect::<Vec<_>>(), ["a", "", "b"], "parse takes anything");
    }

    #[test]
    fn segments_check_as_types_and_patterns() {
        assert_eq!(EventPath::new(["a", "*", "b"]).check_pattern(), Err(PathError::TailNotLast));
        assert_eq!(EventPath::new(["a", "?"]).check_type(), Err(PathError::Wildcard));
        assert_eq!(EventPath::new(["a", "?", "*"]).check_pattern(), Ok(()));
        assert_eq!(EventPath::new(["a", ""]).check_type(), Ok(()), "built segments may be empty");
    }
}
