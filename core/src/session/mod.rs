//! The Rivulet session: [`message`]s carried in packets, and the two sans-IO machines that
//! speak them, [`Client`] and [`ServerConnection`].
//!
//! The machines never touch I/O or clocks. A driver feeds them received packet bodies with
//! `handle(now, body)`, lets them write what they owe with `poll_transmit(now, out)`, runs
//! their timers with `poll(now)` at `poll_timeout()`, and reports link changes. What the
//! application asks for (a query, a request, a response) is written at once into the caller's
//! [`FrameWriter`](crate::wire::FrameWriter).
//!
//! The client keeps a durable [`Session`] (outbox, subscriptions, declared types, tag counter)
//! apart from the per-link [`Connection`]: dropping a link fails its in-flight requests but keeps
//! every unacknowledged registration for the next link, which re-declares types and
//! subscriptions and replays the outbox. The outbox lives in storage the caller gives
//! ([`OutboxStorage`]), so its size is the caller's choice.
//!
//! On the server side, [`SessionTable`] and [`Arrival`] hold the rule that makes registrations
//! exactly-once across links: where an init's session resumes, and which registrations to store.

mod client;
mod keepalive;
mod link;
pub mod message;
mod outbox;
pub(crate) mod requests;
mod resume;
mod server;

pub use client::{Client, ClientConfig, ClientEvent, ClientStats, Connection, Session};
pub use message::{
    Accepted, ClientNameTooLong, InitRequest, InitResponse, Limits, MAX_CLIENT_NAME, MessageKind, client_name_error,
};
pub use outbox::OutboxStorage;
pub use requests::{RequestId, RequestKind};
pub use resume::{Arrival, SessionTable, TableError};
pub use server::{ServerConfig, ServerConnection, ServerEvent, ServerStats};

use crate::time::Instant;
use crate::wire::FrameWriter;

use crate::time::Duration;
use crate::{model, wire};

/// What can go wrong in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// Packet layer error (bad bytes, or no room in the transmit buffer).
    Wire(wire::Error),
    /// Model error (capacity of a type or list, bad pattern).
    Model(model::Error),
    /// A message body did not decode.
    Decode,
    /// A message body could not be encoded.
    Encode,
    /// The peer broke the protocol (a message out of place, an unknown alias, a window overrun).
    Protocol,
    /// No open link to send this on.
    NotConnected,
    /// The in-flight request table is full.
    TooManyRequests,
    /// The outbox has no room for another registration.
    OutboxFull,
    /// The peer's receive window is full: wait for its acks.
    NoCredit,
    /// The packet would be larger than the peer said it can receive.
    TooLarge,
    /// The link is closing or closed.
    Closed,
}

impl From<wire::Error> for Error {
    fn from(e: wire::Error) -> Self {
        Error::Wire(e)
    }
}

impl From<model::PathError> for Error {
    fn from(e: model::PathError) -> Self {
        Error::Model(e.into())
    }
}

impl From<model::Error> for Error {
    fn from(e: model::Error) -> Self {
        Error::Model(e)
    }
}

impl Error {
    /// True when the transmit buffer was full: flush it and try again.
    pub fn is_buffer_full(&self) -> bool {
        matches!(self, Error::Wire(wire::Error::BufferTooSmall))
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Wire(e) => write!(f, "packet: {e}"),
            Error::Model(e) => write!(f, "model: {e}"),
            Error::Decode => f.write_str("message body does not decode"),
            Error::Encode => f.write_str("message body cannot be encoded"),
            Error::Protocol => f.write_str("peer broke the protocol"),
            Error::NotConnected => f.write_str("not connected"),
            Error::TooManyRequests => f.write_str("too many requests in flight"),
            Error::OutboxFull => f.write_str("outbox full"),
            Error::NoCredit => f.write_str("peer's receive window is full"),
            Error::TooLarge => f.write_str("packet larger than the peer can receive"),
            Error::Closed => f.write_str("link closed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RequestError<'a> {
    /// The peer answered with a failure and this reason.
    Refused(&'a str),
    /// No answer within the request timeout.
    TimedOut,
    /// The link went down first.
    Disconnected,
}

/// A successful answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Reply<'a> {
    Query(model::QueryResult<'a>),
    Registered(model::EventList<'a>),
    Pong { rtt: Duration },
    App { flags: u64, payload: &'a [u8] },
}

/// A request the peer sent, to be answered with `respond`/`refuse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Incoming {
    pub channel: u64,
    pub tag: u64,
}

/// What a machine's timers (and a dropped link) produce: owned, so a driver can return it
/// while still using the machine. Converts into [`ClientEvent`] and [`ServerEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TimerEvent {
    RequestFailed { id: RequestId, error: RequestError<'static> },
    LinkEnded(LinkEnd),
}

impl From<TimerEvent> for ClientEvent<'_> {
    fn from(event: TimerEvent) -> Self {
        match event {
            TimerEvent::RequestFailed { id, error } => ClientEvent::RequestFailed { id, error },
            TimerEvent::LinkEnded(end) => ClientEvent::LinkEnded(end),
        }
    }
}

impl From<TimerEvent> for ServerEvent<'_> {
    fn from(event: TimerEvent) -> Self {
        match event {
            TimerEvent::RequestFailed { id, error } => ServerEvent::RequestFailed { id, error },
            TimerEvent::LinkEnded(end) => ServerEvent::LinkEnded(end),
        }
    }
}

/// Why a link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinkEnd {
    /// Both sides sent EOF after ERQ: a clean close.
    Closed,
    /// Nothing received for twice the keepalive interval (or no answer to the init in time).
    TimedOut,
}

/// What a driver needs of a machine; implemented by [`Client`] and [`ServerConnection`].
pub trait Machine {
    type Event<'a>: From<TimerEvent>
    where
        Self: 'a;
    fn handle<'a>(&'a mut self, now: Instant, body: &'a [u8]) -> Result<Option<Self::Event<'a>>, Error>;
    fn poll(&mut self, now: Instant) -> Option<TimerEvent>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn poll_transmit(&mut self, now: Instant, out: &mut FrameWriter<'_>) -> Result<(), Error>;
}

impl<O: OutboxStorage, const INFLIGHT: usize, const ALIASES: usize, const SUBS: usize> Machine
    for Client<'_, O, INFLIGHT, ALIASES, SUBS>
{
    type Event<'a>
        = ClientEvent<'a>
    where
        Self: 'a;
    fn handle<'a>(&'a mut self, now: Instant, body: &'a [u8]) -> Result<Option<ClientEvent<'a>>, Error> {
        Client::handle(self, now, body)
    }
    fn poll(&mut self, now: Instant) -> Option<TimerEvent> {
        Client::poll(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Client::poll_timeout(self)
    }
    fn poll_transmit(&mut self, now: Instant, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        Client::poll_transmit(self, now, out)
    }
}

impl<const INFLIGHT: usize, const ALIASES: usize> Machine for ServerConnection<INFLIGHT, ALIASES> {
    type Event<'a> = ServerEvent<'a>;
    fn handle<'a>(&'a mut self, now: Instant, body: &'a [u8]) -> Result<Option<ServerEvent<'a>>, Error> {
        ServerConnection::handle(self, now, body)
    }
    fn poll(&mut self, now: Instant) -> Option<TimerEvent> {
        ServerConnection::poll(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        ServerConnection::poll_timeout(self)
    }
    fn poll_transmit(&mut self, now: Instant, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        ServerConnection::poll_transmit(self, now, out)
    }
}
