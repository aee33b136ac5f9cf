//! The values inside HatEventer messages: timestamps, ids, event types, payloads, events.
//!
//! Reading gives views that borrow the message bytes ([`EventView`], [`EventTypeView`],
//! [`List`]); writing takes anything that implements [`WireEventType`], [`WireEvent`] or
//! [`WireRegisterEvent`]: the core model's `EventRef` / `RegisterEventRef` / `EventTypeRef`, the
//! views themselves, segment slices.

use core::fmt;
use core::marker::PhantomData;

use crate::hat::Error;
use crate::hat::sbs::{Reader, Writer};
use crate::model::{
    self, EventId, EventPayloadRef, EventRef, EventType, EventTypeRef, Order, OrderBy, RegisterEventRef, Status,
    Timestamp,
};

/// A value read from SBS bytes, borrowing them.
pub trait Decode<'a>: Sized {
    /// The fewest bytes one value takes, against which an array's count is checked.
    const MIN_LEN: usize;
    fn decode(r: &mut Reader<'a>) -> Result<Self, Error>;
}

impl<'a> Decode<'a> for &'a str {
    const MIN_LEN: usize = 1;
    fn decode(r: &mut Reader<'a>) -> Result<Self, Error> {
        r.string()
    }
}

/// An SBS `Array(T)` as read: checked whole when read, then iterated without copies.
pub struct List<'a, T> {
    /// The elements' bytes, after the count.
    bytes: &'a [u8],
    len: usize,
    item: PhantomData<fn() -> T>,
}

impl<T> Clone for List<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for List<'_, T> {}

impl<'a, T: Decode<'a>> List<'a, T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> ListIter<'a, T> {
        ListIter { rest: Reader::new(self.bytes), left: self.len, item: PhantomData }
    }
}

impl<'a, T: Decode<'a>> Decode<'a> for List<'a, T> {
    const MIN_LEN: usize = 1;
    fn decode(r: &mut Reader<'a>) -> Result<Self, Error> {
        let len = r.count(T::MIN_LEN)?;
        let start = r.remaining();
        for _ in 0..len {
            T::decode(r)?;
        }
        let used = start.len() - r.remaining().len();
        Ok(List { bytes: start.get(..used).unwrap_or(&[]), len, item: PhantomData })
    }
}

impl<'a, T: Decode<'a>> IntoIterator for List<'a, T> {
    type Item = T;
    type IntoIter = ListIter<'a, T>;
    fn into_iter(self) -> ListIter<'a, T> {
        self.iter()
    }
}

/// Equal when the elements are: two encodings of one list (an overlong integer, a `02` boolean)
/// compare equal.
impl<'a, T: Decode<'a> + PartialEq> PartialEq for List<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}
impl<'a, T: Decode<'a> + Eq> Eq for List<'a, T> {}

impl<'a, T: Decode<'a> + fmt::Debug> fmt::Debug for List<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(feature = "defmt")]
impl<T> defmt::Format for List<'_, T> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "[{=usize} items]", self.len)
    }
}

/// Elements of a [`List`]; the list was checked when read, so none fails.
#[derive(Debug, Clone)]
pub struct ListIter<'a, T> {
    rest: Reader<'a>,
    left: usize,
    item: PhantomData<fn() -> T>,
}

impl<'a, T: Decode<'a>> Iterator for ListIter<'a, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.left = self.left.checked_sub(1)?;
        T::decode(&mut self.rest).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// hat's `EventType = Array(String)`, as read: its segments borrow the message.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EventTypeView<'a>(List<'a, &'a str>);

impl<'a> EventTypeView<'a> {
    pub fn segments(&self) -> ListIter<'a, &'a str> {
        self.0.iter()
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same segments as the model's event type of at most `N` packed bytes.
    pub fn to_owned<const N: usize>(&self) -> Result<EventType<N>, model::Error> {
        EventType::from_segments(self.segments())
    }
}

impl<'a> Decode<'a> for EventTypeView<'a> {
    const MIN_LEN: usize = 1;
    fn decode(r: &mut Reader<'a>) -> Result<Self, Error> {
        List::decode(r).map(EventTypeView)
    }
}

impl fmt::Debug for EventTypeView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// An event type as the encoders write it (`Array(String)`): its segments, in order.
pub trait WireEventType {
    fn segments(&self) -> impl Iterator<Item = &str> + Clone;
}

impl WireEventType for EventTypeRef<'_> {
    fn segments(&self) -> impl Iterator<Item = &str> + Clone {
        EventTypeRef::segments(self)
    }
}

impl WireEventType for EventTypeView<'_> {
    fn segments(&self) -> impl Iterator<Item = &str> + Clone {
        EventTypeView::segments(self)
    }
}

impl<const N: usize> WireEventType for EventType<N> {
    fn segments(&self) -> impl Iterator<Item = &str> + Clone {
        EventType::segments(self)
    }
}

impl WireEventType for [&str] {
    fn segments(&self) -> impl Iterator<Item = &str> + Clone {
        self.iter().copied()
    }
}

impl<T: WireEventType + ?Sized> WireEventType for &T {
    fn segments(&self) -> impl Iterator<Item = &str> + Clone {
        (**self).segments()
    }
}

/// An event as the encoders write it (hat's `Event` record).
pub trait WireEvent {
    fn id(&self) -> EventId;
    fn event_type(&self) -> impl WireEventType;
    fn timestamp(&self) -> Timestamp;
    fn source_timestamp(&self) -> Option<Timestamp>;
    fn payload(&self) -> Option<EventPayloadRef<'_>>;
}

/// The encoders' traits for a struct with the model's field names: `event_type`,
/// `source_timestamp`, `payload`, and for an event `id` and `timestamp`.
macro_rules! wire_fields {
    (event $ty:ty) => {
        impl WireEvent for $ty {
            fn id(&self) -> EventId {
                self.id
            }
            fn event_type(&self) -> impl WireEventType {
                self.event_type
            }
            fn timestamp(&self) -> Timestamp {
                self.timestamp
            }
            fn source_timestamp(&self) -> Option<Timestamp> {
                self.source_timestamp
            }
            fn payload(&self) -> Option<EventPayloadRef<'_>> {
                self.payload
            }
        }
    };
    (register $ty:ty) => {
        impl WireRegisterEvent for $ty {
            fn event_type(&self) -> impl WireEventType {
                self.event_type
            }
            fn source_timestamp(&self) -> Option<Timestamp> {
                self.source_timestamp
            }
            fn payload(&self) -> Option<EventPayloadRef<'_>> {
                self.payload
            }
        }
    };
}

wire_fields!(event EventRef<'_>);
wire_fields!(event EventView<'_>);
wire_fields!(register RegisterEventRef<'_>);
wire_fields!(register RegisterEventView<'_>);

impl<T: WireEvent + ?Sized> WireEvent for &T {
    fn id(&self) -> EventId {
        (**self).id()
    }
    fn event_type(&self) -> impl WireEventType {
        (**self).event_type()
    }
    fn timestamp(&self) -> Timestamp {
        (**self).timestamp()
    }
    fn source_timestamp(&self) -> Option<Timestamp> {
        (**self).source_timestamp()
    }
    fn payload(&self) -> Option<EventPayloadRef<'_>> {
        (**self).payload()
    }
}

/// What a client asks to register as the encoders write it (hat's `RegisterEvent` record).
pub trait WireRegisterEvent {
    fn event_type(&self) -> impl WireEventType;
    fn source_timestamp(&self) -> Option<Timestamp>;
    fn payload(&self) -> Option<EventPayloadRef<'_>>;
}

impl<T: WireRegisterEvent + ?Sized> WireRegisterEvent for &T {
    fn event_type(&self) -> impl WireEventType {
        (**self).event_type()
    }
    fn source_timestamp(&self) -> Option<Timestamp> {
        (**self).source_timestamp()
    }
    fn payload(&self) -> Option<EventPayloadRef<'_>> {
        (**self).payload()
    }
}

/// A hat `Event` as read: the model's ids, timestamps and payload, and the type's segments
/// borrowing the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EventView<'a> {
    pub id: EventId,
    pub event_type: EventTypeView<'a>,
    pub timestamp: Timestamp,
    pub source_timestamp: Option<Timestamp>,
    pub payload: Option<EventPayloadRef<'a>>,
}

impl<'a> Decode<'a> for EventView<'a> {
    /// id (3), type (1), timestamp (2), two optionals (1 each).
    const MIN_LEN: usize = 8;
    fn decode(r: &mut Reader<'a>) -> Result<Self, Error> {
        Ok(EventView {
            id: read_event_id(r)?,
            event_type: EventTypeView::decode(r)?,
            timestamp: read_timestamp(r)?,
            source_timestamp: r.option(read_timestamp)?,
            payload: r.option(read_payload)?,
        })
    }
}

/// A hat `RegisterEvent` as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RegisterEventView<'a> {
    pub event_type: EventTypeView<'a>,
    pub source_timestamp: Option<Timestamp>,
    pub payload: Option<EventPayloadRef<'a>>,
}

impl<'a> Decode<'a> for RegisterEventView<'a> {
    const MIN_LEN: usize = 3;
    fn decode(r: &mut Reader<'a>) -> Result<Self, Error> {
        Ok(RegisterEventView {
            event_type: EventTypeView::decode(r)?,
            source_timestamp: r.option(read_timestamp)?,
            payload: r.option(read_payload)?,
        })
    }
}

/// `Array(EventType)` as read (subscriptions, a query's types).
pub type EventTypes<'a> = List<'a, EventTypeView<'a>>;
/// `Array(Event)` as read.
pub type Events<'a> = List<'a, EventView<'a>>;
/// `Array(RegisterEvent)` as read.
pub type RegisterEvents<'a> = List<'a, RegisterEventView<'a>>;

/// hat's `Timestamp = {s: Integer, us: Integer}`. Microseconds outside `0..1_000_000` are
/// [`Error::Range`]: hat never writes them, and the model orders time by `(s, us)`.
pub(crate) fn read_timestamp(r: &mut Reader<'_>) -> Result<Timestamp, Error> {
    let s = r.integer()?;
    let us = u32::try_from(r.integer()?).map_err(|_| Error::Range)?;
    Timestamp::new(s, us).map_err(|_| Error::Range)
}

pub(crate) fn write_timestamp(w: &mut Writer<'_>, t: Timestamp) -> Result<(), Error> {
    if t.us >= 1_000_000 {
        return Err(Error::Range);
    }
    w.integer(t.s)?;
    w.integer(i64::from(t.us))
}

/// hat's `EventId = {server, session, instance}`, each an Integer; negative is [`Error::Range`]
/// (the model's ids are unsigned, and hat counts them from 1).
pub(crate) fn read_event_id(r: &mut Reader<'_>) -> Result<EventId, Error> {
    Ok(EventId { server: r.unsigned()?, session: r.unsigned()?, instance: r.unsigned()? })
}

pub(crate) fn write_event_id(w: &mut Writer<'_>, id: EventId) -> Result<(), Error> {
    w.unsigned(id.server)?;
    w.unsigned(id.session)?;
    w.unsigned(id.instance)
}

/// `Status = Choice {standby, starting, operational, stopping}`, in that order.
pub(crate) fn read_status(r: &mut Reader<'_>) -> Result<Status, Error> {
    Ok(match r.choice(4)? {
        0 => Status::Standby,
        1 => Status::Starting,
        2 => Status::Operational,
        _ => Status::Stopping,
    })
}

pub(crate) fn write_status(w: &mut Writer<'_>, status: Status) -> Result<(), Error> {
    w.choice(match status {
        Status::Standby => 0,
        Status::Starting => 1,
        Status::Operational => 2,
        Status::Stopping => 3,
    })
}

/// `Order = Choice {descending, ascending}`.
pub(crate) fn read_order(r: &mut Reader<'_>) -> Result<Order, Error> {
    Ok(if r.choice(2)? == 0 { Order::Descending } else { Order::Ascending })
}

pub(crate) fn write_order(w: &mut Writer<'_>, order: Order) -> Result<(), Error> {
    w.choice(match order {
        Order::Descending => 0,
        Order::Ascending => 1,
    })
}

/// `OrderBy = Choice {timestamp, sourceTimestamp}`.
pub(crate) fn read_order_by(r: &mut Reader<'_>) -> Result<OrderBy, Error> {
    Ok(if r.choice(2)? == 0 { OrderBy::Timestamp } else { OrderBy::SourceTimestamp })
}

pub(crate) fn write_order_by(w: &mut Writer<'_>, order_by: OrderBy) -> Result<(), Error> {
    w.choice(match order_by {
        OrderBy::Timestamp => 0,
        OrderBy::SourceTimestamp => 1,
    })
}

/// `EventPayload = Choice {binary: {type: String, data: Bytes}, json: String}`. The JSON text is
/// passed through as it is, unchecked (hat parses it with `json.loads`; the model keeps text).
pub(crate) fn read_payload<'a>(r: &mut Reader<'a>) -> Result<EventPayloadRef<'a>, Error> {
    Ok(if r.choice(2)? == 0 {
        EventPayloadRef::Binary { kind: r.string()?, data: r.bytes()? }
    } else {
        EventPayloadRef::Json(r.string()?)
    })
}

pub(crate) fn write_payload(w: &mut Writer<'_>, payload: EventPayloadRef<'_>) -> Result<(), Error> {
    match payload {
        EventPayloadRef::Binary { kind, data } => {
            w.choice(0)?;
            w.string(kind)?;
            w.bytes(data)
        }
        EventPayloadRef::Json(text) => {
            w.choice(1)?;
            w.string(text)
        }
    }
}

pub(crate) fn write_event_type(w: &mut Writer<'_>, event_type: &impl WireEventType) -> Result<(), Error> {
    w.count(event_type.segments().count())?;
    event_type.segments().try_for_each(|segment| w.string(segment))
}

pub(crate) fn write_event(w: &mut Writer<'_>, event: &impl WireEvent) -> Result<(), Error> {
    write_event_id(w, event.id())?;
    write_event_type(w, &event.event_type())?;
    write_timestamp(w, event.timestamp())?;
    w.option(event.source_timestamp(), write_timestamp)?;
    w.option(event.payload(), write_payload)
}

pub(crate) fn write_register_event(w: &mut Writer<'_>, event: &impl WireRegisterEvent) -> Result<(), Error> {
    write_event_type(w, &event.event_type())?;
    w.option(event.source_timestamp(), write_timestamp)?;
    w.option(event.payload(), write_payload)
}

/// Writes `Array(T)` of what `items` yields, each with `write`. `items` is walked twice: once
/// for the count, which comes first.
pub(crate) fn write_array<I: IntoIterator + Clone>(
    w: &mut Writer<'_>,
    items: &I,
    mut write: impl FnMut(&mut Writer<'_>, &I::Item) -> Result<(), Error>,
) -> Result<(), Error> {
    w.count(items.clone().into_iter().count())?;
    items.clone().into_iter().try_for_each(|item| write(w, &item))
}
