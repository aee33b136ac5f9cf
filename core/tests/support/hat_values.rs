//! Owned events and register events for the hat codec's tests (the core has no owned form
//! without `alloc`), and the checks that compare what was read with them.

use rivulet_core::hat::eventer::{EventView, RegisterEventView};
use rivulet_core::model::{EventId, EventPayloadRef, EventRef, EventType, RegisterEventRef, Timestamp};

/// Packed bytes enough for the longest type of the vectors (a 300-byte segment).
pub type Ty = EventType<1024>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Binary(String, Vec<u8>),
    Json(String),
}

impl Payload {
    pub fn as_ref(&self) -> EventPayloadRef<'_> {
        match self {
            Payload::Binary(kind, data) => EventPayloadRef::Binary { kind, data },
            Payload::Json(text) => EventPayloadRef::Json(text),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEvent {
    pub id: EventId,
    pub segments: Vec<String>,
    pub ty: Ty,
    pub timestamp: Timestamp,
    pub source_timestamp: Option<Timestamp>,
    pub payload: Option<Payload>,
}

pub fn segments_of(segments: &[&str]) -> Vec<String> {
    segments.iter().map(|s| s.to_string()).collect()
}

impl OwnedEvent {
    pub fn new(
        id: (u64, u64, u64),
        segments: Vec<String>,
        timestamp: (i64, u32),
        source_timestamp: Option<(i64, u32)>,
        payload: Option<Payload>,
    ) -> Self {
        let ty = Ty::from_segments(segments.iter().map(String::as_str)).expect("room for the type");
        OwnedEvent {
            id: EventId { server: id.0, session: id.1, instance: id.2 },
            segments,
            ty,
            timestamp: Timestamp::new(timestamp.0, timestamp.1).expect("a valid timestamp"),
            source_timestamp: source_timestamp.map(|(s, us)| Timestamp::new(s, us).expect("a valid timestamp")),
            payload,
        }
    }

    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            id: self.id,
            event_type: self.ty.as_ref(),
            timestamp: self.timestamp,
            source_timestamp: self.source_timestamp,
            payload: self.payload.as_ref().map(Payload::as_ref),
        }
    }

    /// The same event as a register request (id and timestamp dropped).
    pub fn as_register(&self) -> RegisterEventRef<'_> {
        RegisterEventRef {
            event_type: self.ty.as_ref(),
            source_timestamp: self.source_timestamp,
            payload: self.payload.as_ref().map(Payload::as_ref),
        }
    }

    /// Whether `view` reads as this event, field by field.
    pub fn matches(&self, view: &EventView<'_>) -> bool {
        view.id == self.id
            && view.event_type.segments().eq(self.segments.iter().map(String::as_str))
            && view.timestamp == self.timestamp
            && view.source_timestamp == self.source_timestamp
            && view.payload == self.payload.as_ref().map(Payload::as_ref)
    }

    /// Whether `view` reads as this event's register request.
    pub fn matches_register(&self, view: &RegisterEventView<'_>) -> bool {
        view.event_type.segments().eq(self.segments.iter().map(String::as_str))
            && view.source_timestamp == self.source_timestamp
            && view.payload == self.payload.as_ref().map(Payload::as_ref)
    }
}

/// Whether `views` read as `events`, in order.
pub fn all_match<'a>(views: impl IntoIterator<Item = EventView<'a>>, events: &[&OwnedEvent]) -> bool {
    let views: Vec<_> = views.into_iter().collect();
    views.len() == events.len() && views.iter().zip(events).all(|(v, e)| e.matches(v))
}

pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}
