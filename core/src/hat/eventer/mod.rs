//! hat-event's Eventer messages (module `HatEventer` of its SBS repository), each carried as the
//! data of a chatter [`Msg`](super::chatter::Msg) whose type is the message's name.
//!
//! Every message is one type that is both a zero-copy view and an encoder: `X::parse(data)` reads
//! it, borrowing strings, bytes and lists from `data`, and [`EventerMessage`] writes it
//! (`buffer_len`, then `emit` into a caller's buffer). The model's types stand in for hat's where
//! they exist: [`Status`](crate::model::Status), [`Order`](crate::model::Order),
//! [`OrderBy`](crate::model::OrderBy), [`EventId`](crate::model::EventId),
//! [`Timestamp`](crate::model::Timestamp) and [`EventPayloadRef`](crate::model::EventPayloadRef);
//! events are written from the model's [`EventRef`](crate::model::EventRef) (or anything that
//! is a [`WireEvent`]) and read as [`EventView`]s.
//!
//! | message | sent by | data |
//! |---|---|---|
//! | [`InitReq`] | client, first, `last = false` | name, token, subscriptions, server id, persisted |
//! | [`InitRes`] | server, in the init's conversation | `Success(Status)` or `Error(reason)` |
//! | [`StatusNotify`] | server, new conversation, `last = true` | `Status` |
//! | [`EventsNotify`] | server, new conversation, `last = !with_ack` | `Array(Event)` |
//! | [`EventsAck`] | client, in the notify's conversation | none |
//! | [`RegisterReq`] | client, `last = !with_response` | `Array(RegisterEvent)` |
//! | [`RegisterRes`] | server, in the request's conversation | events, or failure |
//! | [`QueryParams`] (`MsgQueryReq`) | client, `last = false` | latest / timeseries / server |
//! | [`QueryRes`] | server, in the query's conversation | `Array(Event)`, more follows |

mod messages;
mod query;
mod types;

pub use messages::{
    EventsAck, EventsNotify, InitReq, InitRes, Keepalive, QueryRes, RegisterReq, RegisterRes, StatusNotify,
};
pub use query::{QueryLatest, QueryParams, QueryServer, QueryTimeseries};
pub use types::{
    Decode, EventTypeView, EventTypes, EventView, Events, List, ListIter, RegisterEventView, RegisterEvents, WireEvent,
    WireEventType, WireRegisterEvent,
};

use super::Error;
use super::chatter::{self, Header};

/// The type names a hat Eventer connection carries, as `Msg.data.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MsgType {
    InitReq,
    InitRes,
    StatusNotify,
    EventsNotify,
    EventsAck,
    RegisterReq,
    RegisterRes,
    QueryReq,
    QueryRes,
    Ping,
    Pong,
}

impl MsgType {
    pub const ALL: [MsgType; 11] = [
        MsgType::InitReq,
        MsgType::InitRes,
        MsgType::StatusNotify,
        MsgType::EventsNotify,
        MsgType::EventsAck,
        MsgType::RegisterReq,
        MsgType::RegisterRes,
        MsgType::QueryReq,
        MsgType::QueryRes,
        MsgType::Ping,
        MsgType::Pong,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            MsgType::InitReq => "HatEventer.MsgInitReq",
            MsgType::InitRes => "HatEventer.MsgInitRes",
            MsgType::StatusNotify => "HatEventer.MsgStatusNotify",
            MsgType::EventsNotify => "HatEventer.MsgEventsNotify",
            MsgType::EventsAck => "HatEventer.MsgEventsAck",
            MsgType::RegisterReq => "HatEventer.MsgRegisterReq",
            MsgType::RegisterRes => "HatEventer.MsgRegisterRes",
            MsgType::QueryReq => "HatEventer.MsgQueryReq",
            MsgType::QueryRes => "HatEventer.MsgQueryRes",
            MsgType::Ping => chatter::PING,
            MsgType::Pong => chatter::PONG,
        }
    }

    /// The type of a name; `None` for one hat's eventer does not know (it closes the connection).
    pub fn from_name(name: &str) -> Option<MsgType> {
        MsgType::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// A message that can be written as a chatter `Msg`'s data.
pub trait EventerMessage {
    fn msg_type(&self) -> MsgType;
    /// Bytes [`EventerMessage::emit`] writes.
    fn buffer_len(&self) -> Result<usize, Error>;
    /// Writes the SBS encoding to the front of `buf`; returns its length.
    fn emit(&self, buf: &mut [u8]) -> Result<usize, Error>;
}

/// Bytes of the chatter frame that carries `message` under `header`.
pub fn frame_len(header: &Header, message: &impl EventerMessage) -> Result<usize, Error> {
    let body = chatter::body_len(header, message.msg_type().name(), message.buffer_len()?)?;
    Ok(chatter::frame_len(body))
}

/// Writes the whole chatter frame carrying `message` under `header` to the front of `buf`, the
/// message encoded in place; returns the frame's length.
pub fn emit_frame(header: &Header, message: &impl EventerMessage, buf: &mut [u8]) -> Result<usize, Error> {
    let data_len = message.buffer_len()?;
    chatter::emit_frame_with(
        header,
        message.msg_type().name(),
        data_len,
        |w| match w.reserve(data_len)? {
            Some(room) => {
                if message.emit(room)? == data_len {
                    Ok(())
                } else {
                    Err(Error::Length)
                }
            }
            None => Ok(()),
        },
        buf,
    )
}

/// Any message, as read: what a receiver dispatches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Message<'a> {
    InitReq(InitReq<'a, EventTypes<'a>>),
    InitRes(InitRes<'a>),
    StatusNotify(StatusNotify),
    EventsNotify(EventsNotify<Events<'a>>),
    EventsAck(EventsAck),
    RegisterReq(RegisterReq<RegisterEvents<'a>>),
    RegisterRes(RegisterRes<Events<'a>>),
    QueryReq(QueryParams<EventTypes<'a>>),
    QueryRes(QueryRes<Events<'a>>),
    Keepalive(Keepalive),
}

impl<'a> Message<'a> {
    /// Reads the data of a message of type `msg_type` (a `Msg.data.type`).
    pub fn parse(msg_type: &str, data: &'a [u8]) -> Result<Self, Error> {
        let msg_type = MsgType::from_name(msg_type).ok_or(Error::UnknownType)?;
        Self::parse_as(msg_type, data)
    }

    /// Reads `data` as a message of type `msg_type`.
    pub fn parse_as(msg_type: MsgType, data: &'a [u8]) -> Result<Self, Error> {
        Ok(match msg_type {
            MsgType::InitReq => Message::InitReq(InitReq::parse(data)?),
            MsgType::InitRes => Message::InitRes(InitRes::parse(data)?),
            MsgType::StatusNotify => Message::StatusNotify(StatusNotify::parse(data)?),
            MsgType::EventsNotify => Message::EventsNotify(EventsNotify::parse(data)?),
            MsgType::EventsAck => Message::EventsAck(EventsAck::parse(data)?),
            MsgType::RegisterReq => Message::RegisterReq(RegisterReq::parse(data)?),
            MsgType::RegisterRes => Message::RegisterRes(RegisterRes::parse(data)?),
            MsgType::QueryReq => Message::QueryReq(QueryParams::parse(data)?),
            MsgType::QueryRes => Message::QueryRes(QueryRes::parse(data)?),
            MsgType::Ping => Message::Keepalive(Keepalive::parse(false, data)?),
            MsgType::Pong => Message::Keepalive(Keepalive::parse(true, data)?),
        })
    }

    fn as_dyn(&self) -> &dyn EventerMessage {
        match self {
            Message::InitReq(m) => m,
            Message::InitRes(m) => m,
            Message::StatusNotify(m) => m,
            Message::EventsNotify(m) => m,
            Message::EventsAck(m) => m,
            Message::RegisterReq(m) => m,
            Message::RegisterRes(m) => m,
            Message::QueryReq(m) => m,
            Message::QueryRes(m) => m,
            Message::Keepalive(m) => m,
        }
    }
}

impl EventerMessage for Message<'_> {
    fn msg_type(&self) -> MsgType {
        self.as_dyn().msg_type()
    }
    fn buffer_len(&self) -> Result<usize, Error> {
        self.as_dyn().buffer_len()
    }
    fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.as_dyn().emit(buf)
    }
}
