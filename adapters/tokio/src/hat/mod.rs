//! A hat-event Eventer client: what `hat.event.eventer.connect` is in Python, for Rust programs
//! and the `rivulet` CLI's `--hat`. It talks to hat's own Event Server, to any server built on
//! `hat.event.eventer.listen`, and to the gateway's hat front-end. The bytes are the core's
//! (`rivulet_core::hat`, docs/HAT.md); this module runs one connection in a task.
//!
//! - **Init**: [`connect`] sends `clientName`, `clientToken`, the subscriptions, the server id
//!   filter and the persisted flag, and returns once the server accepted them (its status comes
//!   back) or with [`HatError::Refused`] and the server's reason.
//! - **Register** with or without a response ([`HatClient::register_with_response`],
//!   [`HatClient::register`]); a `failure` answer is [`HatError::Failure`].
//! - **Query** one page ([`HatClient::query`]) or every page ([`HatClient::query_all`]).
//! - **Events** ([`HatEvents`]) in the order the server notified them. A notification that asks
//!   for an ack is acked once its events are in the [`HatEvents`] queue, so a program that stops
//!   reading holds the server back (hat's flow control) instead of filling memory.
//! - **Status** as the server last said ([`HatClient::status`], [`HatClient::status_changes`]).
//! - **Keepalive**: a ping after `ping_delay` of silence; nothing in `ping_timeout` after it
//!   closes the connection, as hat's chatter does.
//!
//! Like hat's client it does not reconnect: when the connection ends, the events end and every
//! call fails with [`HatError::Closed`]. hat has no sessions to resume, so a caller that needs
//! more reconnects and queries what it missed.

mod connection;
#[cfg(test)]
mod tests;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rivulet_core::owned::{Event, EventPath, Query, QueryPage, RegisterEvent, Status};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::client::Connect;
use connection::Command;

/// Notifications handed to [`HatEvents`] and not yet read; beyond them the client stops acking.
const EVENT_BATCHES: usize = 8;

/// Who the client is and what it subscribes to (the fields of hat's `MsgInitReq`), and its
/// limits.
#[derive(Clone)]
pub struct HatOptions {
    pub client_name: String,
    /// Checked by the server if it checks tokens (the gateway does; hat's own server does not).
    pub client_token: Option<String>,
    /// hat's patterns: `?` any one segment, a last `*` any rest. None: no events are notified.
    pub subscriptions: Vec<EventPath>,
    /// Only events registered by this server.
    pub server_id: Option<u64>,
    /// Notified only once stored (hat's server notifies both kinds of client, at different times).
    pub persisted: bool,
    /// Silence after which the client pings; zero never pings. hat's default: 20 s.
    pub ping_delay: Duration,
    /// How long after a ping something must arrive. hat's default: 20 s.
    pub ping_timeout: Duration,
    /// How long the server may take to answer the init.
    pub init_timeout: Duration,
    /// The largest frame taken from the server (a query page is one frame); a larger one closes
    /// the connection. hat itself sets no limit.
    pub max_frame: usize,
}

impl std::fmt::Debug for HatOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HatOptions")
            .field("client_name", &self.client_name)
            .field("subscriptions", &self.subscriptions)
            .field("server_id", &self.server_id)
            .field("persisted", &self.persisted)
            .field("ping_delay", &self.ping_delay)
            .field("ping_timeout", &self.ping_timeout)
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}

impl HatOptions {
    pub fn new(client_name: impl Into<String>) -> Self {
        HatOptions {
            client_name: client_name.into(),
            client_token: None,
            subscriptions: Vec::new(),
            server_id: None,
            persisted: false,
            ping_delay: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(20),
            init_timeout: Duration::from_secs(10),
            max_frame: 16 << 20,
        }
    }
}

/// Why a hat call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HatError {
    /// The server refused the init with this reason (hat's `EventerInitError`).
    Refused(String),
    /// The server answered a registration with `failure`: nothing was registered.
    Failure,
    /// The connection has ended (closed by either side, timed out, or the server's bytes made no
    /// sense); the reason was logged.
    Closed,
    /// No answer to the init within [`HatOptions::init_timeout`].
    TimedOut,
    /// The server's bytes broke the protocol before the init was answered.
    Protocol(String),
    /// What was to be sent cannot be written as a hat message (e.g. a timestamp out of range).
    Invalid(rivulet_core::hat::Error),
    Io(String),
}

impl std::fmt::Display for HatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HatError::Refused(reason) => write!(f, "refused: {reason}"),
            HatError::Failure => f.write_str("the server answered failure: nothing registered"),
            HatError::Closed => f.write_str("connection closed"),
            HatError::TimedOut => f.write_str("no answer to the init in time"),
            HatError::Protocol(why) => write!(f, "protocol error: {why}"),
            HatError::Invalid(e) => write!(f, "cannot be sent to hat: {e}"),
            HatError::Io(e) => write!(f, "i/o: {e}"),
        }
    }
}

impl std::error::Error for HatError {}

/// The handle of a connected client. Share it by reference; dropping it closes the connection.
#[derive(Debug)]
pub struct HatClient {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    task: JoinHandle<()>,
}

/// The events the server notifies, in order; ends when the connection does.
#[derive(Debug)]
pub struct HatEvents {
    batches: mpsc::Receiver<Vec<Event>>,
    current: std::vec::IntoIter<Event>,
}

/// Connects over TCP and returns once the server accepted the init.
pub async fn connect(addr: impl ToSocketAddrs, options: HatOptions) -> Result<(HatClient, HatEvents), HatError> {
    let stream = TcpStream::connect(addr).await.map_err(|e| HatError::Io(e.to_string()))?;
    // hat's messages are small and each waits for its answer: no Nagle delay.
    let _ = stream.set_nodelay(true);
    connect_stream(stream, options).await
}

/// Connects with `connector` (e.g. `tls::Connector` for a server behind TLS, as hat's
/// `connect(..., ssl=context)`), once.
pub async fn connect_via(connector: impl Connect, options: HatOptions) -> Result<(HatClient, HatEvents), HatError> {
    let stream = connector.connect().await.map_err(|e| HatError::Io(e.to_string()))?;
    connect_stream(stream, options).await
}

/// Runs the client over a stream already open to a hat server.
pub async fn connect_stream<S>(stream: S, options: HatOptions) -> Result<(HatClient, HatEvents), HatError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync + 'static,
{
    let (commands_tx, commands) = mpsc::channel(64);
    let (events_tx, batches) = mpsc::channel(EVENT_BATCHES);
    let (status_tx, status) = watch::channel(Status::default());
    let (init_tx, init) = oneshot::channel();
    let task = tokio::spawn(connection::run(Box::new(stream), options, init_tx, commands, events_tx, status_tx));
    match init.await {
        Ok(Ok(())) => {
            let client = HatClient { commands: commands_tx, status, task };
            Ok((client, HatEvents { batches, current: Vec::new().into_iter() }))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HatError::Closed),
    }
}

impl HatClient {
    /// The server's status as it last said (in its init answer or a status notification).
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// Watches the server's status; ends (`changed` fails) when the connection does.
    pub fn status_changes(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.task.is_finished()
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, HatError>>) -> Command,
    ) -> Result<T, HatError> {
        let (answer, answered) = oneshot::channel();
        self.commands.send(command(answer)).await.map_err(|_| HatError::Closed)?;
        answered.await.unwrap_or(Err(HatError::Closed))
    }

    /// Sends a registration that asks for no answer (hat's `with_response=False`); returns once
    /// it is written. Whether the server stored it is unknown: query, or use
    /// [`HatClient::register_with_response`].
    pub async fn register(&self, events: Vec<RegisterEvent>) -> Result<(), HatError> {
        self.ask(|answer| Command::Register { events, respond: false, answer }).await.map(|_| ())
    }

    /// Registers and waits for the server's answer: the events as registered (their ids and
    /// timestamps), or [`HatError::Failure`].
    pub async fn register_with_response(&self, events: Vec<RegisterEvent>) -> Result<Vec<Event>, HatError> {
        let events = self.ask(|answer| Command::Register { events, respond: true, answer }).await?;
        Ok(events.unwrap_or_default())
    }

    /// One page of a query.
    pub async fn query(&self, query: Query) -> Result<QueryPage, HatError> {
        self.ask(|answer| Command::Query { query, answer }).await
    }

    /// Every page of a query: asks again after the last event while the server says more
    /// follows.
    pub async fn query_all(&self, mut query: Query) -> Result<Vec<Event>, HatError> {
        let mut events = Vec::new();
        loop {
            let page = self.query(query.clone()).await?;
            let next = match (page.more_follows, page.events.last()) {
                (true, Some(last)) => query.after(last.id),
                _ => None,
            };
            events.extend(page.events);
            match next {
                Some(next) => query = next,
                None => return Ok(events),
            }
        }
    }

    /// Closes the connection: calls in progress fail with [`HatError::Closed`], and the events end.
    pub async fn close(self) {
        let _ = self.commands.send(Command::Close).await;
        let _ = self.task.await;
    }
}

impl HatEvents {
    /// The next event; `None` once the connection has ended and every event was read.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.current.next() {
                return Some(event);
            }
            self.current = self.batches.recv().await?.into_iter();
        }
    }

    /// The rest of the current notification, or the next one whole.
    pub async fn next_batch(&mut self) -> Option<Vec<Event>> {
        let rest: Vec<Event> = self.current.by_ref().collect();
        if !rest.is_empty() {
            return Some(rest);
        }
        self.batches.recv().await
    }
}

impl futures_core::Stream for HatEvents {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            if let Some(event) = self.current.next() {
                return Poll::Ready(Some(event));
            }
            match self.batches.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.current = batch.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
