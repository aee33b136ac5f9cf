//! What both stores share to answer a query: the page being filled, the query's filters, and
//! how a stored event is decoded and named in messages.

use std::cell::RefCell;
use std::fmt::Display;

use rivulet_core::model::{EventId, EventPayloadRef, EventRef, EventTypeRef, Timestamp};
use rivulet_core::owned::{Event, QueryPage, SubscriptionIndex, TimeseriesQuery};

/// About what an event takes in a query answer (see [`crate::store::page_bytes`]).
pub(crate) fn stored_page_bytes(event: &EventRef<'_>) -> usize {
    let payload = match &event.payload {
        None => 0,
        Some(EventPayloadRef::Json(text)) => text.len(),
        Some(EventPayloadRef::Binary { kind, data }) => kind.len() + data.len(),
    };
    // Id, timestamps and length prefixes: a few dozen bytes at most.
    48 + event.event_type.as_packed().len() + payload
}

/// How much a page may still take: a count and about a byte size, and always one event.
#[derive(Debug)]
pub(super) struct Budget {
    events: usize,
    bytes: usize,
    taken: usize,
    used: usize,
}

impl Budget {
    pub(super) fn new(max_results: Option<u32>, max_bytes: usize) -> Self {
        let events = max_results.map_or(usize::MAX, |max| max as usize);
        Budget { events, bytes: max_bytes, taken: 0, used: 0 }
    }

    /// Counts in one more event of `size` bytes if it has room; false when the page is full.
    pub(super) fn take(&mut self, size: usize) -> bool {
        let full = self.taken >= self.events || (self.taken > 0 && self.used.saturating_add(size) > self.bytes);
        if full {
            return false;
        }
        self.taken += 1;
        self.used = self.used.saturating_add(size);
        true
    }
}

/// A query page being filled, up to a count and about a byte size (at least one event).
pub(super) struct Page {
    pub(super) done: QueryPage,
    budget: Budget,
}

impl Page {
    pub(super) fn new(max_results: Option<u32>, max_bytes: usize) -> Self {
        Page { done: QueryPage::default(), budget: Budget::new(max_results, max_bytes) }
    }

    /// Adds `event` if the page has room; false (and `more_follows`) when it is full.
    pub(super) fn take(&mut self, event: Event) -> bool {
        if !self.budget.take(super::page_bytes(&event)) {
            self.done.more_follows = true;
            return false;
        }
        self.done.events.push(event);
        true
    }
}

/// A timeseries query's filters, with its patterns in an index: testing an event costs its
/// type's segments, not a test of every pattern (a query may name a thousand).
pub(super) struct Filter<'q> {
    q: &'q TimeseriesQuery,
    types: Option<SubscriptionIndex<()>>,
    /// Scratch for the index's answer.
    found: RefCell<Vec<()>>,
}

impl<'q> Filter<'q> {
    pub(super) fn new(q: &'q TimeseriesQuery) -> Self {
        let types = q.event_types.as_ref().map(|patterns| {
            let mut index = SubscriptionIndex::new();
            index.insert((), patterns);
            index
        });
        Filter { q, types, found: RefCell::new(Vec::new()) }
    }

    /// Whether a decoded event passes the query's filters (the index range already bounds one
    /// time).
    pub(super) fn matches(&self, event: &EventRef<'_>) -> bool {
        self.matches_type(event.event_type) && self.matches_times(event.timestamp, event.source_timestamp)
    }

    /// Whether the query asks for events of type `ty`.
    pub(super) fn matches_type(&self, ty: EventTypeRef<'_>) -> bool {
        self.types.as_ref().is_none_or(|index| {
            let mut found = self.found.borrow_mut();
            index.matching_type(ty, &mut found);
            !found.is_empty()
        })
    }

    /// Whether an event of these times is within the query's time ranges.
    pub(super) fn matches_times(&self, timestamp: Timestamp, source: Option<Timestamp>) -> bool {
        let q = self.q;
        let in_range = |t: Timestamp, from: Option<Timestamp>, to: Option<Timestamp>| {
            from.is_none_or(|from| t >= from) && to.is_none_or(|to| t <= to)
        };
        let source = if q.source_t_from.is_none() && q.source_t_to.is_none() {
            true
        } else {
            source.is_some_and(|t| in_range(t, q.source_t_from, q.source_t_to))
        };
        source && in_range(timestamp, q.t_from, q.t_to)
    }
}

/// Decodes one stored event: postcard of [`EventRef`], with nothing after it.
pub(super) fn decode_event(bytes: &[u8]) -> Result<EventRef<'_>, String> {
    match postcard::take_from_bytes::<EventRef<'_>>(bytes) {
        Ok((event, [])) => Ok(event),
        Ok((_, rest)) => Err(format!("{} stray bytes after the event", rest.len())),
        Err(e) => Err(format!("the value ({} bytes) is not an event: {e}", bytes.len())),
    }
}

/// An event id in messages: `server/session/instance`.
pub(super) struct ShowId(pub(super) EventId);

impl Display for ShowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.0.server, self.0.session, self.0.instance)
    }
}
