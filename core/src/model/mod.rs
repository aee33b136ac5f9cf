//! The hat-event event model: typed events with server-assigned ids, wildcard subscriptions,
//! and history queries. Borrowed `*Ref` views decode without copies; owned forms use heapless
//! storage with capacities as const generics.

mod event;
mod event_type;
pub mod leb128;
mod list;
pub(crate) mod path;
mod query;

pub use event::{
    Event, EventId, EventPayload, EventPayloadRef, EventRef, PAYLOAD_BYTES, PAYLOAD_KIND_BYTES, RegisterEvent,
    RegisterEventRef, Status, Timestamp,
};
pub use event_type::{ANY_ONE, ANY_TAIL, EventType, EventTypeRef, SegmentBytes, Segments, TYPE_BYTES};
pub use list::{ListBuilder, ListIter, PackedList, TypeListBuf};
pub use path::PathError;
pub use query::{Order, OrderBy, QueryLatest, QueryParams, QueryResult, QueryServer, QueryTimeseries};

/// A list of event types or patterns, packed.
pub type TypeList<'a> = PackedList<'a, EventTypeRef<'a>>;
/// A list of events, packed.
pub type EventList<'a> = PackedList<'a, EventRef<'a>>;

/// What can be wrong with model data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// Bytes end in the middle of a value.
    Truncated,
    /// A segment or string is not UTF-8.
    Utf8,
    /// A wildcard where it may not be: `*` before the end of a pattern, or `?` or `*` in an
    /// event type ([`PathError`] tells which).
    InvalidPattern,
    /// A path such as `a//b` has an empty segment.
    EmptySegment,
    /// A fixed-capacity container is full.
    Capacity,
    /// Bytes that are not a valid encoding of the value.
    Malformed,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated value",
            Error::Utf8 => "invalid UTF-8",
            Error::InvalidPattern => "invalid query event type: '*' may only be the last segment",
            Error::EmptySegment => "empty segment in event type",
            Error::Capacity => "capacity exceeded",
            Error::Malformed => "malformed value",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
