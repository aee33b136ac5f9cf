//! `HatEventer.MsgQueryReq`: hat's `QueryParams`, every field as hat has it.
//!
//! ```text
//! QueryParams = Choice { latest: {eventTypes: Optional(Array(EventType))};
//!   timeseries: {eventTypes: Optional(Array(EventType)); tFrom, tTo, sourceTFrom, sourceTTo:
//!                Optional(Timestamp); order: Order; orderBy: OrderBy; maxResults: Optional(Integer);
//!                lastEventId: Optional(EventId)};
//!   server: {serverId: Integer; persisted: Boolean; maxResults: Optional(Integer);
//!            lastEventId: Optional(EventId)} }
//! ```
//!
//! `maxResults` is kept as hat's integer, negative included (hat's lmdb backend takes any and
//! returns nothing below 1); `serverId` is a server id as in the model, so negative is
//! [`Error::Range`].

use super::types::{
    EventTypes, WireEventType, read_event_id, read_order, read_order_by, read_timestamp, write_array, write_event_id,
    write_event_type, write_order, write_order_by, write_timestamp,
};
use super::{EventerMessage, MsgType};
use crate::hat::Error;
use crate::hat::sbs::{self, Reader, Writer};
use crate::model::{self, EventId, Order, OrderBy, Timestamp, TypeList};

/// The newest event of each type matching `event_types` (every type when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QueryLatest<T> {
    pub event_types: Option<T>,
}

/// Events in time ranges, in `order` by `order_by`, at most `max_results`, after
/// `last_event_id` (the last of the previous page). hat's defaults are descending by timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QueryTimeseries<T> {
    pub event_types: Option<T>,
    pub t_from: Option<Timestamp>,
    pub t_to: Option<Timestamp>,
    pub source_t_from: Option<Timestamp>,
    pub source_t_to: Option<Timestamp>,
    pub order: Order,
    pub order_by: OrderBy,
    pub max_results: Option<i64>,
    pub last_event_id: Option<EventId>,
}

/// Events registered by server `server_id`, in id order after `last_event_id`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QueryServer {
    pub server_id: u64,
    pub persisted: bool,
    pub max_results: Option<i64>,
    pub last_event_id: Option<EventId>,
}

/// `HatEventer.MsgQueryReq`. `T` lists event types: [`EventTypes`] as read, or anything that
/// iterates over [`WireEventType`]s to write (the model's [`TypeList`], a slice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QueryParams<T> {
    Latest(QueryLatest<T>),
    Timeseries(QueryTimeseries<T>),
    Server(QueryServer),
}

impl<'a> QueryParams<EventTypes<'a>> {
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(data);
        let types = |r: &mut Reader<'a>| r.option(super::types::Decode::decode);
        let params = match r.choice(3)? {
            0 => QueryParams::Latest(QueryLatest { event_types: types(&mut r)? }),
            1 => QueryParams::Timeseries(QueryTimeseries {
                event_types: types(&mut r)?,
                t_from: r.option(read_timestamp)?,
                t_to: r.option(read_timestamp)?,
                source_t_from: r.option(read_timestamp)?,
                source_t_to: r.option(read_timestamp)?,
                order: read_order(&mut r)?,
                order_by: read_order_by(&mut r)?,
                max_results: r.option(Reader::integer)?,
                last_event_id: r.option(read_event_id)?,
            }),
            _ => QueryParams::Server(QueryServer {
                server_id: r.unsigned()?,
                persisted: r.boolean()?,
                max_results: r.option(Reader::integer)?,
                last_event_id: r.option(read_event_id)?,
            }),
        };
        r.finish()?;
        Ok(params)
    }
}

impl<T> QueryParams<T>
where
    T: IntoIterator + Clone,
    T::Item: WireEventType,
{
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        let types = |w: &mut Writer<'_>, types: &Option<T>| {
            w.option(types.as_ref(), |w, types| write_array(w, types, write_event_type))
        };
        match self {
            QueryParams::Latest(q) => {
                w.choice(0)?;
                types(w, &q.event_types)
            }
            QueryParams::Timeseries(q) => {
                w.choice(1)?;
                types(w, &q.event_types)?;
                for t in [q.t_from, q.t_to, q.source_t_from, q.source_t_to] {
                    w.option(t, write_timestamp)?;
                }
                write_order(w, q.order)?;
                write_order_by(w, q.order_by)?;
                w.option(q.max_results, Writer::integer)?;
                w.option(q.last_event_id, write_event_id)
            }
            QueryParams::Server(q) => {
                w.choice(2)?;
                w.unsigned(q.server_id)?;
                w.boolean(q.persisted)?;
                w.option(q.max_results, Writer::integer)?;
                w.option(q.last_event_id, write_event_id)
            }
        }
    }
}

impl<T> EventerMessage for QueryParams<T>
where
    T: IntoIterator + Clone,
    T::Item: WireEventType,
{
    fn msg_type(&self) -> MsgType {
        MsgType::QueryReq
    }
    fn buffer_len(&self) -> Result<usize, Error> {
        sbs::measure(|w| self.write(w))
    }
    fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        sbs::emit(buf, |w| self.write(w))
    }
}

/// The model's query as hat's: what a Rivulet client sends to a hat server.
impl<'a> From<&model::QueryParams<'a>> for QueryParams<TypeList<'a>> {
    fn from(params: &model::QueryParams<'a>) -> Self {
        match *params {
            model::QueryParams::Latest(q) => QueryParams::Latest(QueryLatest { event_types: q.event_types }),
            model::QueryParams::Timeseries(q) => QueryParams::Timeseries(QueryTimeseries {
                event_types: q.event_types,
                t_from: q.t_from,
                t_to: q.t_to,
                source_t_from: q.source_t_from,
                source_t_to: q.source_t_to,
                order: q.order,
                order_by: q.order_by,
                max_results: q.max_results.map(i64::from),
                last_event_id: q.last_event_id,
            }),
            model::QueryParams::Server(q) => QueryParams::Server(QueryServer {
                server_id: q.server_id,
                persisted: q.persisted,
                max_results: q.max_results.map(i64::from),
                last_event_id: q.last_event_id,
            }),
        }
    }
}
