//! Events as hat-event defines them: the server gives each registered event an [`EventId`] and a
//! timestamp; the registering client may add a source timestamp and a payload.

use serde::{Deserialize, Serialize};

use super::{Error, EventType, EventTypeRef, TYPE_BYTES};

/// Default capacity of an owned payload's data.
pub const PAYLOAD_BYTES: usize = 256;
/// Capacity of the name of a binary payload's kind (hat: `binary.type`).
pub const PAYLOAD_KIND_BYTES: usize = 32;

/// Unique id of an event: the server that registered it, that server's session (a new one per
/// start) and an instance number that increases within the session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EventId {
    pub server: u64,
    pub session: u64,
    pub instance: u64,
}

/// Seconds since the Unix epoch (may be negative) and microseconds in `0..1_000_000`; decoding
/// refuses anything else, so that ordering by `(s, us)` is ordering in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(try_from = "WireTimestamp")]
pub struct Timestamp {
    pub s: i64,
    pub us: u32,
}

/// A timestamp as decoded, before its range is checked.
#[derive(Deserialize)]
struct WireTimestamp {
    s: i64,
    us: u32,
}

impl TryFrom<WireTimestamp> for Timestamp {
    type Error = &'static str;
    fn try_from(t: WireTimestamp) -> Result<Self, Self::Error> {
        Timestamp::new(t.s, t.us).map_err(|_| "timestamp microseconds out of range")
    }
}

impl Timestamp {
    /// Builds a timestamp, rejecting `us >= 1_000_000`.
    pub fn new(s: i64, us: u32) -> Result<Self, Error> {
        if us >= 1_000_000 { Err(Error::Malformed) } else { Ok(Timestamp { s, us }) }
    }

    pub fn from_micros(micros: i64) -> Self {
        Timestamp { s: micros.div_euclid(1_000_000), us: micros.rem_euclid(1_000_000) as u32 }
    }

    pub fn as_micros(&self) -> i128 {
        i128::from(self.s) * 1_000_000 + i128::from(self.us)
    }
}

/// Server status, as hat-event reports it to clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Status {
    #[default]
    Standby,
    Starting,
    Operational,
    Stopping,
}

/// A borrowed payload: binary data with a kind name, or JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EventPayloadRef<'a> {
    Binary {
        kind: &'a str,
        #[serde(serialize_with = "as_bytes")]
        data: &'a [u8],
    },
    Json(&'a str),
}

/// Writes a byte slice in one piece. postcard encodes bytes and a sequence of `u8` the same way
/// (a varint length, then the bytes), so the wire does not change; only the per-byte calls go.
fn as_bytes<S: serde::Serializer>(data: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(data)
}

impl EventPayloadRef<'_> {
    pub fn to_owned<const N: usize>(&self) -> Result<EventPayload<N>, Error> {
        Ok(match *self {
            EventPayloadRef::Binary { kind, data } => EventPayload::Binary {
                kind: heapless::String::try_from(kind).map_err(|_| Error::Capacity)?,
                data: heapless::Vec::from_slice(data).map_err(|_| Error::Capacity)?,
            },
            EventPayloadRef::Json(text) => {
                EventPayload::Json(heapless::String::try_from(text).map_err(|_| Error::Capacity)?)
            }
        })
    }
}

/// An owned payload of at most `N` bytes of data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventPayload<const N: usize = PAYLOAD_BYTES> {
    Binary {
        kind: heapless::String<PAYLOAD_KIND_BYTES>,
        #[serde(serialize_with = "as_bytes")]
        data: heapless::Vec<u8, N>,
    },
    Json(heapless::String<N>),
}

impl<const N: usize> EventPayload<N> {
    pub fn as_ref(&self) -> EventPayloadRef<'_> {
        match self {
            EventPayload::Binary { kind, data } => EventPayloadRef::Binary { kind, data },
            EventPayload::Json(text) => EventPayloadRef::Json(text),
        }
    }
}

/// A borrowed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EventRef<'a> {
    pub id: EventId,
    #[serde(borrow)]
    pub event_type: EventTypeRef<'a>,
    pub timestamp: Timestamp,
    pub source_timestamp: Option<Timestamp>,
    #[serde(borrow)]
    pub payload: Option<EventPayloadRef<'a>>,
}

impl EventRef<'_> {
    pub fn to_owned<const T: usize, const P: usize>(&self) -> Result<Event<T, P>, Error> {
        Ok(Event {
            id: self.id,
            event_type: self.event_type.to_owned()?,
            timestamp: self.timestamp,
            source_timestamp: self.source_timestamp,
            payload: self.payload.as_ref().map(EventPayloadRef::to_owned).transpose()?,
        })
    }
}

/// An owned event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event<const T: usize = TYPE_BYTES, const P: usize = PAYLOAD_BYTES> {
    pub id: EventId,
    pub event_type: EventType<T>,
    pub timestamp: Timestamp,
    pub source_timestamp: Option<Timestamp>,
    pub payload: Option<EventPayload<P>>,
}

impl<const T: usize, const P: usize> Event<T, P> {
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            id: self.id,
            event_type: self.event_type.as_ref(),
            timestamp: self.timestamp,
            source_timestamp: self.source_timestamp,
            payload: self.payload.as_ref().map(EventPayload::as_ref),
        }
    }
}

/// What a client asks the server to register; the server adds id and timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RegisterEventRef<'a> {
    #[serde(borrow)]
    pub event_type: EventTypeRef<'a>,
    pub source_timestamp: Option<Timestamp>,
    #[serde(borrow)]
    pub payload: Option<EventPayloadRef<'a>>,
}

/// An owned register request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterEvent<const T: usize = TYPE_BYTES, const P: usize = PAYLOAD_BYTES> {
    pub event_type: EventType<T>,
    pub source_timestamp: Option<Timestamp>,
    pub payload: Option<EventPayload<P>>,
}

impl<const T: usize, const P: usize> RegisterEvent<T, P> {
    pub fn as_ref(&self) -> RegisterEventRef<'_> {
        RegisterEventRef {
            event_type: self.event_type.as_ref(),
            source_timestamp: self.source_timestamp,
            payload: self.payload.as_ref().map(EventPayload::as_ref),
        }
    }
}
