//! History queries (hat-event's latest / timeseries / server) and their results.

use serde::{Deserialize, Serialize};

use super::{EventId, EventList, Timestamp, TypeList};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Order {
    #[default]
    Descending,
    Ascending,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OrderBy {
    #[default]
    Timestamp,
    SourceTimestamp,
}

/// The newest event of each type matching `event_types` (all types when `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QueryLatest<'a> {
    #[serde(borrow)]
    pub event_types: Option<TypeList<'a>>,
}

/// Events in time ranges, ordered, paged by `max_results` and `last_event_id` (the last event of
/// the previous page).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QueryTimeseries<'a> {
    #[serde(borrow)]
    pub event_types: Option<TypeList<'a>>,
    pub t_from: Option<Timestamp>,
    pub t_to: Option<Timestamp>,
    pub source_t_from: Option<Timestamp>,
    pub source_t_to: Option<Timestamp>,
    pub order: Order,
    pub order_by: OrderBy,
    pub max_results: Option<u32>,
    pub last_event_id: Option<EventId>,
}

/// Events registered by one server, in id order after `last_event_id`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QueryServer {
    pub server_id: u64,
    pub persisted: bool,
    pub max_results: Option<u32>,
    pub last_event_id: Option<EventId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QueryParams<'a> {
    #[serde(borrow)]
    Latest(QueryLatest<'a>),
    #[serde(borrow)]
    Timeseries(QueryTimeseries<'a>),
    Server(QueryServer),
}

/// One page of results; `more_follows` says whether a next page (from the last event's id)
/// has more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QueryResult<'a> {
    #[serde(borrow)]
    pub events: EventList<'a>,
    pub more_follows: bool,
}
