//! The HatEventer messages other than the query request ([`super::query`]), each one type that
//! is both the view [`parse`](InitReq::parse) returns and the encoder ([`EventerMessage`]).
//! Lists are type parameters: as read they are [`List`](super::List) views; to write, anything
//! that iterates (twice: the count comes first) over what the encoders take.

use super::types::{
    Decode, EventTypes, Events, RegisterEvents, WireEvent, WireEventType, WireRegisterEvent, read_status, write_array,
    write_event, write_event_type, write_register_event, write_status,
};
use super::{EventerMessage, MsgType};
use crate::hat::Error;
use crate::hat::sbs::{self, Reader, Writer};
use crate::model::Status;

/// Reads one whole message with `read`: bytes after it are [`Error::TrailingBytes`].
fn parse_all<'a, T>(data: &'a [u8], read: impl FnOnce(&mut Reader<'a>) -> Result<T, Error>) -> Result<T, Error> {
    let mut r = Reader::new(data);
    let value = read(&mut r)?;
    r.finish()?;
    Ok(value)
}

/// Implements [`EventerMessage`] for a type with a `write` method.
macro_rules! eventer_message {
    ($msg_type:ident, [$($generics:tt)*] $ty:ty $(where $($bounds:tt)*)?) => {
        impl<$($generics)*> EventerMessage for $ty $(where $($bounds)*)? {
            fn msg_type(&self) -> MsgType {
                MsgType::$msg_type
            }
            fn buffer_len(&self) -> Result<usize, Error> {
                sbs::measure(|w| self.write(w))
            }
            fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
                sbs::emit(buf, |w| self.write(w))
            }
        }
    };
}

/// `HatEventer.MsgInitReq`, the client's first message: who it is and what it subscribes to.
/// A server id restricts notifications to that server's events; `persisted` asks for
/// notifications only once events are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct InitReq<'a, S> {
    pub client_name: &'a str,
    pub client_token: Option<&'a str>,
    /// Patterns with hat's `?` and `*`, unchecked here (hat refuses a `*` not last in its init
    /// response, not in the decoder).
    pub subscriptions: S,
    pub server_id: Option<u64>,
    pub persisted: bool,
}

impl<'a> InitReq<'a, EventTypes<'a>> {
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        parse_all(data, |r| {
            Ok(InitReq {
                client_name: r.string()?,
                client_token: r.option(Reader::string)?,
                subscriptions: Decode::decode(r)?,
                server_id: r.option(Reader::unsigned)?,
                persisted: r.boolean()?,
            })
        })
    }
}

impl<S> InitReq<'_, S>
where
    S: IntoIterator + Clone,
    S::Item: WireEventType,
{
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.string(self.client_name)?;
        w.option(self.client_token, Writer::string)?;
        write_array(w, &self.subscriptions, write_event_type)?;
        w.option(self.server_id, Writer::unsigned)?;
        w.boolean(self.persisted)
    }
}

eventer_message!(InitReq, ['a, S] InitReq<'a, S> where S: IntoIterator + Clone, S::Item: WireEventType);

/// `HatEventer.MsgInitRes`: the server's status, or why it refuses the client (then it closes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InitRes<'a> {
    Success(Status),
    Error(&'a str),
}

impl<'a> InitRes<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        parse_all(data, |r| {
            Ok(if r.choice(2)? == 0 { InitRes::Success(read_status(r)?) } else { InitRes::Error(r.string()?) })
        })
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        match *self {
            InitRes::Success(status) => {
                w.choice(0)?;
                write_status(w, status)
            }
            InitRes::Error(reason) => {
                w.choice(1)?;
                w.string(reason)
            }
        }
    }
}

eventer_message!(InitRes, ['a] InitRes<'a>);

/// `HatEventer.MsgStatusNotify`: the server's status changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StatusNotify(pub Status);

impl StatusNotify {
    pub fn parse(data: &[u8]) -> Result<Self, Error> {
        parse_all(data, |r| read_status(r).map(StatusNotify))
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        write_status(w, self.0)
    }
}

eventer_message!(StatusNotify, [] StatusNotify);

/// `HatEventer.MsgEventsNotify`: events for the client's subscriptions. Sent with `last = false`
/// when the server wants a [`EventsAck`] in the same conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EventsNotify<E> {
    pub events: E,
}

impl<'a> EventsNotify<Events<'a>> {
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        parse_all(data, |r| Ok(EventsNotify { events: Decode::decode(r)? }))
    }
}

impl<E> EventsNotify<E>
where
    E: IntoIterator + Clone,
    E::Item: WireEvent,
{
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        write_array(w, &self.events, write_event)
    }
}

eventer_message!(EventsNotify, [E] EventsNotify<E> where E: IntoIterator + Clone, E::Item: WireEvent);

/// `HatEventer.MsgEventsAck`: the client took a notification (SBS `None`: no bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EventsAck;

impl EventsAck {
    pub fn parse(data: &[u8]) -> Result<Self, Error> {
        parse_all(data, |_| Ok(EventsAck))
    }

    fn write(&self, _: &mut Writer<'_>) -> Result<(), Error> {
        Ok(())
    }
}

eventer_message!(EventsAck, [] EventsAck);

/// `HatEventer.MsgRegisterReq`: events to register. Sent with `last = true` when the client
/// wants no [`RegisterRes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RegisterReq<R> {
    pub events: R,
}

impl<'a> RegisterReq<RegisterEvents<'a>> {
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        parse_all(data, |r| Ok(RegisterReq { events: Decode::decode(r)? }))
    }
}

impl<R> RegisterReq<R>
where
    R: IntoIterator + Clone,
    R::Item: WireRegisterEvent,
{
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        write_array(w, &self.events, write_register_event)
    }
}

eventer_message!(RegisterReq, [R] RegisterReq<R> where R: IntoIterator + Clone, R::Item: WireRegisterEvent);

/// `HatEventer.MsgRegisterRes`: the registered events with their ids and timestamps, or a
/// failure (nothing was registered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RegisterRes<E> {
    Events(E),
    Failure,
}

impl<'a> RegisterRes<Events<'a>> {
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        parse_all(data, |r| {
            Ok(if r.choice(2)? == 0 { RegisterRes::Events(Decode::decode(r)?) } else { RegisterRes::Failure })
        })
    }
}

impl<E> RegisterRes<E>
where
    E: IntoIterator + Clone,
    E::Item: WireEvent,
{
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        match self {
            RegisterRes::Events(events) => {
                w.choice(0)?;
                write_array(w, events, write_event)
            }
            RegisterRes::Failure => w.choice(1),
        }
    }
}

eventer_message!(RegisterRes, [E] RegisterRes<E> where E: IntoIterator + Clone, E::Item: WireEvent);

/// `HatEventer.MsgQueryRes`: one page of results; `more_follows` when the next page (after the
/// last event's id) has more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QueryRes<E> {
    pub events: E,
    pub more_follows: bool,
}

impl<'a> QueryRes<Events<'a>> {
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        parse_all(data, |r| Ok(QueryRes { events: Decode::decode(r)?, more_follows: r.boolean()? }))
    }
}

impl<E> QueryRes<E>
where
    E: IntoIterator + Clone,
    E::Item: WireEvent,
{
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        write_array(w, &self.events, write_event)?;
        w.boolean(self.more_follows)
    }
}

eventer_message!(QueryRes, [E] QueryRes<E> where E: IntoIterator + Clone, E::Item: WireEvent);

/// A chatter `Ping` or `Pong` (SBS `None`), for code that handles every type by name; the
/// conversation machine answers and sends them itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Keepalive {
    /// A pong rather than a ping.
    pub pong: bool,
}

impl Keepalive {
    pub fn parse(pong: bool, data: &[u8]) -> Result<Self, Error> {
        parse_all(data, |_| Ok(Keepalive { pong }))
    }
}

impl EventerMessage for Keepalive {
    fn msg_type(&self) -> MsgType {
        if self.pong { MsgType::Pong } else { MsgType::Ping }
    }
    fn buffer_len(&self) -> Result<usize, Error> {
        Ok(0)
    }
    fn emit(&self, _: &mut [u8]) -> Result<usize, Error> {
        Ok(0)
    }
}
