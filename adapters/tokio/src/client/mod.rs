//! A Rivulet client as an async handle: register events (kept until acknowledged, across
//! reconnects), subscribe, query history, call and serve requests, and read notified events as a
//! stream. The protocol is the core's [`rivulet_core::session::Client`]; this is its task.
//!
//! Links run over TCP ([`connect`]) or over any byte stream a [`Connect`] opens on each
//! (re)connect ([`connect_via`]; TLS is `tls::Connector`, with the `tls` feature), framed for a
//! stream or, with [`ClientOptions::framing`], for a serial line (COBS + CRC): a host with a
//! UART, or a serial line carried over TCP.
//!
//! This file is the handle and its options; `task.rs` runs the machine and its links, and
//! `subscriptions.rs` keeps subscription changes in step with the server's answers.
//!
//! Queues and what happens when they are full:
//! - commands from handles (64): callers wait for room;
//! - the outbox ([`ClientOptions::outbox`] bytes of unacknowledged registrations):
//!   [`Client::register`] waits until acknowledgements free room, and commands behind it wait too;
//! - notified events ([`ClientOptions::events`]): each is acknowledged only once it is in this
//!   queue; when the queue is full, the events the server still sends (at most its window) wait in
//!   the task unacknowledged, so the server's window holds the rest back while the task keeps
//!   answering pings. A reader that stays behind is the server's to handle (a gateway cuts it off
//!   beyond its queue limit, with the reason in [`Client::close_reason`]); the client then shows
//!   itself disconnected and opens its next link once the application has taken what the last
//!   one delivered (registrations keep queueing meanwhile).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rivulet_core::session::{RequestError, message::seq_at_or_after};
use rivulet_core::wire::Framing;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::link::Backoff;
use crate::model::{Event, EventPath, Query, QueryPage, RegisterEvent, Status};
use crate::packet::{NoHandler, PacketHandler, PacketReply, PacketRequest};

/// The default of [`ClientOptions::outbox`]: 2 MiB. Acks come after each group commit, so what is
/// in flight bounds a publisher's rate: 2 MiB holds about 1,900 registrations of 1 KiB, so that
/// a gateway's register window (4,096 by default) rather than the outbox bounds payloads up to
/// about 500 bytes (docs/BENCHMARKS.md: 256 KiB held 1 KiB publishing to ~11k msg/s).
pub const DEFAULT_OUTBOX: usize = 2048 * 1024;
/// Requests awaiting answers.
pub const INFLIGHT: usize = 64;
/// Event types declared each way.
pub const ALIASES: usize = 64;
/// Bytes of subscription patterns.
pub const SUBSCRIPTIONS: usize = 4096;
/// Commands the task carries out one after another before it writes and reads the link again.
const COMMAND_BATCH: usize = 64;
/// Refused registrations remembered for [`Client::registered`] (the newest).
pub const REFUSALS_KEPT: usize = 256;

mod subscriptions;
mod task;

/// What the server notes that does not fit [`ClientState`]: refused registrations (newest last, at
/// most [`REFUSALS_KEPT`]) and why it last closed a link.
#[derive(Debug, Default)]
struct ServerNotes {
    refusals: VecDeque<(u32, String)>,
    closing: Option<String>,
}

type SharedNotes = Arc<std::sync::Mutex<ServerNotes>>;

/// Answers a server's challenge: the proof for `nonce`.
pub type ChallengeAnswer = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// How a client presents itself, paces its links and reconnects.
#[derive(Clone)]
pub struct ClientOptions {
    pub name: String,
    /// Sent in the init (a token), unless a challenge asks for a proof instead.
    pub credential: Option<Vec<u8>>,
    pub challenge: Option<ChallengeAnswer>,
    /// Receive only events registered by this server.
    pub server_id: Option<u64>,
    /// Receive events only once the server stored them durably.
    pub persisted: bool,
    /// Subscriptions from the first init on.
    pub subscriptions: Vec<EventPath>,
    pub keepalive: std::time::Duration,
    pub request_timeout: std::time::Duration,
    /// Notifications the server may send ahead of our acknowledgements.
    pub window: u16,
    /// Largest packet we receive; the task holds two buffers of this size.
    pub max_packet: u32,
    /// Notified events waiting for the application.
    pub events: usize,
    /// Bytes of registrations kept until acknowledged ([`DEFAULT_OUTBOX`], 2 MiB, by default);
    /// a registration takes 4 bytes plus its encoded event, and one larger than the whole outbox
    /// fails with [`ClientError::TooLarge`]. Allocated zeroed when the client starts: memory
    /// the outbox never filled costs nothing.
    pub outbox: usize,
    pub reconnect: Backoff,
    /// How packets are framed on the byte stream: [`Framing::Stream`] (a length prefix; TCP, TLS)
    /// by default, or [`Framing::Serial`] (COBS + CRC-16) for a serial line or a gateway's
    /// `--serial-listen`.
    pub framing: Framing,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("name", &self.name)
            .field("server_id", &self.server_id)
            .field("persisted", &self.persisted)
            .field("subscriptions", &self.subscriptions)
            .field("window", &self.window)
            .field("max_packet", &self.max_packet)
            .field("outbox", &self.outbox)
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl ClientOptions {
    pub fn new(name: impl Into<String>) -> Self {
        ClientOptions {
            name: name.into(),
            credential: None,
            challenge: None,
            server_id: None,
            persisted: false,
            subscriptions: Vec::new(),
            keepalive: std::time::Duration::from_secs(20),
            request_timeout: std::time::Duration::from_secs(10),
            window: 64,
            max_packet: 64 * 1024,
            events: 1024,
            outbox: DEFAULT_OUTBOX,
            reconnect: Backoff::default(),
            framing: Framing::Stream,
        }
    }
}

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The server refused (the init, a subscription, a request) with this reason.
    Refused(String),
    TimedOut,
    /// The link dropped before the answer came; the client reconnects by itself.
    Disconnected,
    /// No link is up right now (requests are not queued across reconnects; registrations are).
    NotConnected,
    /// The client was closed.
    Closed,
    /// The request or event does not fit this client's packet buffer or its outbox
    /// ([`ClientOptions::max_packet`], [`ClientOptions::outbox`]).
    TooLarge,
    /// The request or event is larger than the server receives: its packets are at most this
    /// many bytes (its `--max-packet`). Not sent; the link goes on.
    OverServerLimit(u32),
    /// Not a valid event type or pattern.
    Invalid(&'static str),
    Io(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Refused(reason) => write!(f, "refused: {reason}"),
            ClientError::TimedOut => f.write_str("no answer in time"),
            ClientError::Disconnected => f.write_str("link dropped before the answer"),
            ClientError::NotConnected => f.write_str("not connected"),
            ClientError::Closed => f.write_str("client closed"),
            ClientError::TooLarge => f.write_str("too large for this client's packet buffer or outbox"),
            ClientError::OverServerLimit(max) => {
                write!(f, "larger than the server takes (its packets are at most {max} bytes)")
            }
            ClientError::Invalid(why) => write!(f, "invalid: {why}"),
            ClientError::Io(e) => write!(f, "i/o: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<RequestError<'_>> for ClientError {
    fn from(error: RequestError<'_>) -> Self {
        match error {
            RequestError::Refused(reason) => ClientError::Refused(reason.into()),
            RequestError::TimedOut => ClientError::TimedOut,
            RequestError::Disconnected => ClientError::Disconnected,
        }
    }
}

/// What the client knows of its link and session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientState {
    pub connected: bool,
    pub status: Status,
    pub session: Option<u64>,
    /// Every registration with a sequence number below this is registered.
    pub registered_below: u32,
    /// Links made so far (the first one counts).
    pub links: u64,
    /// Registrations the server refused to store (see [`Client::registered`]).
    pub refused: u64,
}

type Answer<T> = oneshot::Sender<Result<T, ClientError>>;

/// What a handle asks of the task.
enum Command {
    Register(RegisterEvent, Answer<u32>),
    RegisterWithResponse(Vec<RegisterEvent>, Answer<Vec<Event>>),
    Query(Query, Answer<QueryPage>),
    Request(PacketRequest, Answer<PacketReply>),
    Ping(Answer<std::time::Duration>),
    Subscribe(EventPath, Answer<()>),
    Unsubscribe(EventPath, Answer<bool>),
    Close,
}

/// The handle of a running client. Cheap to share by reference across tasks; dropping every
/// handle closes the client.
#[derive(Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<ClientState>,
    task: JoinHandle<()>,
    close_within: std::time::Duration,
    notes: SharedNotes,
}

/// A registration the client's task has taken ([`Client::submit`]): resolves to its sequence
/// number once it is in the outbox, or to why it will not be.
#[derive(Debug)]
pub struct Submitted(oneshot::Receiver<Result<u32, ClientError>>);

impl Future for Submitted {
    type Output = Result<u32, ClientError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|answer| answer.unwrap_or(Err(ClientError::Closed)))
    }
}

/// Notified events, in order; ends when the client is closed.
#[derive(Debug)]
pub struct Events {
    events: mpsc::Receiver<Event>,
}

impl Events {
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

impl futures_core::Stream for Events {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.events.poll_recv(cx)
    }
}

/// Opens the byte stream for each link. It runs on the first connection and again on every
/// reconnect, so each link resolves, dials and (for TLS) shakes hands afresh. Each attempt is
/// bounded by [`ClientOptions::request_timeout`].
///
/// Any `Fn() -> impl Future<Output = io::Result<S>>` is a connector; with the `tls` feature,
/// `tls::Connector` is one.
pub trait Connect: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static;

    fn connect(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl<F, Fut, S> Connect for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<S>> + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    type Stream = S;

    fn connect(&self) -> impl Future<Output = std::io::Result<S>> + Send {
        self()
    }
}

/// Connects over TCP and waits for the server to accept the init; then keeps the session up,
/// reconnecting with jittered backoff whenever the link drops. Fails if the first connection or
/// init fails.
pub async fn connect<A>(addr: A, options: ClientOptions) -> Result<(Client, Events), ClientError>
where
    A: ToSocketAddrs + Clone + Send + Sync + 'static,
{
    connect_with_handler(addr, options, NoHandler).await
}

/// [`connect`], serving the server's requests with `handler`.
pub async fn connect_with_handler<A, H>(
    addr: A,
    options: ClientOptions,
    handler: H,
) -> Result<(Client, Events), ClientError>
where
    A: ToSocketAddrs + Clone + Send + Sync + 'static,
    H: PacketHandler,
{
    let tcp = move || {
        let addr = addr.clone();
        async move {
            let stream = TcpStream::connect(addr).await?;
            // Packets are small and latency matters more than segment count.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    };
    connect_via_with_handler(tcp, options, handler).await
}

/// [`connect`] over the streams `connector` opens (TLS, say): the same reconnects, backoff and
/// session resume, whatever the stream.
pub async fn connect_via(connector: impl Connect, options: ClientOptions) -> Result<(Client, Events), ClientError> {
    connect_via_with_handler(connector, options, NoHandler).await
}

/// [`connect_via`], serving the server's requests with `handler`.
pub async fn connect_via_with_handler<C, H>(
    connector: C,
    options: ClientOptions,
    handler: H,
) -> Result<(Client, Events), ClientError>
where
    C: Connect,
    H: PacketHandler,
{
    for pattern in &options.subscriptions {
        pattern.check_pattern().map_err(|e| ClientError::Invalid(e.message()))?;
    }
    let (commands, command_rx) = mpsc::channel(64);
    let (events_tx, events) = mpsc::channel(options.events.max(1));
    let (state_tx, state) = watch::channel(ClientState::default());
    let (ready_tx, ready) = oneshot::channel();
    let close_within = options.request_timeout;
    let notes = SharedNotes::default();
    let task_notes = notes.clone();
    let task = tokio::spawn(async move {
        let mut task = task::Task::new(options, handler, command_rx, events_tx, state_tx, task_notes);
        task.run(connector, ready_tx).await;
    });
    match ready.await {
        Ok(Ok(())) => Ok((Client { commands, state, task, close_within, notes }, Events { events })),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ClientError::Closed),
    }
}

impl Client {
    async fn ask<T>(&self, command: impl FnOnce(Answer<T>) -> Command) -> Result<T, ClientError> {
        let (answer, reply) = oneshot::channel();
        self.commands.send(command(answer)).await.map_err(|_| ClientError::Closed)?;
        reply.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Queues an event for registration and returns its sequence number once it is in the outbox
    /// (online or not). It is sent, and resent after reconnects, until the server acknowledges
    /// it; [`Client::registered`] waits for that.
    pub async fn register(&self, event: RegisterEvent) -> Result<u32, ClientError> {
        self.submit(event).await?.await
    }

    /// Queues an event for registration and returns as soon as the command is in the task's
    /// queue (64 commands; it waits for room), with a [`Submitted`] that resolves to its sequence number once it is in the
    /// outbox. Submissions keep their order, so a publisher that keeps several in flight (awaiting
    /// the oldest when it has enough) has its events registered in the order it submitted them,
    /// and they share writes on the link instead of costing a round trip to the task each.
    pub async fn submit(&self, event: RegisterEvent) -> Result<Submitted, ClientError> {
        let (answer, reply) = oneshot::channel();
        self.commands.send(Command::Register(event, answer)).await.map_err(|_| ClientError::Closed)?;
        Ok(Submitted(reply))
    }

    /// Registers and waits for the events as registered, with their ids (hat's register with
    /// response). Needs a link: not kept across reconnects.
    pub async fn register_with_response(&self, events: Vec<RegisterEvent>) -> Result<Vec<Event>, ClientError> {
        self.ask(|answer| Command::RegisterWithResponse(events, answer)).await
    }

    /// Waits until the registration with sequence number `seq` is settled: `Ok` once stored,
    /// [`ClientError::Refused`] if the server would not store it (the reason says why; of the
    /// [`REFUSALS_KEPT`] newest refusals).
    pub async fn registered(&self, seq: u32) -> Result<(), ClientError> {
        let mut state = self.state.clone();
        state
            .wait_for(|s| s.session.is_some() && seq_at_or_after(s.registered_below, seq.wrapping_add(1)))
            .await
            .map_err(|_| ClientError::Closed)?;
        let notes = self.notes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match notes.refusals.iter().rev().find(|(refused, _)| *refused == seq) {
            Some((_, reason)) => Err(ClientError::Refused(reason.clone())),
            None => Ok(()),
        }
    }

    /// One page of a query.
    pub async fn query(&self, query: Query) -> Result<QueryPage, ClientError> {
        self.ask(|answer| Command::Query(query, answer)).await
    }

    /// Every page of a query, in order (the server's page size bounds each request).
    pub async fn query_all(&self, query: Query) -> Result<Vec<Event>, ClientError> {
        let mut events = Vec::new();
        let mut next = Some(query);
        while let Some(query) = next.take() {
            let page = self.query(query.clone()).await?;
            let last = page.events.last().map(|e| e.id);
            events.extend(page.events);
            if page.more_follows {
                next = last.and_then(|last| query.after(last));
            }
        }
        Ok(events)
    }

    /// An application request of user type `rq_type` to the server.
    pub async fn request(
        &self,
        rq_type: u64,
        flags: u64,
        payload: impl Into<Vec<u8>>,
    ) -> Result<PacketReply, ClientError> {
        let request = PacketRequest { rq_type, flags, payload: payload.into() };
        self.ask(|answer| Command::Request(request, answer)).await
    }

    /// The round trip to the server.
    pub async fn ping(&self) -> Result<std::time::Duration, ClientError> {
        self.ask(Command::Ping).await
    }

    /// Adds a subscription pattern, kept across reconnects.
    pub async fn subscribe(&self, pattern: impl Into<EventPath>) -> Result<(), ClientError> {
        let pattern = pattern.into();
        pattern.check_pattern().map_err(|e| ClientError::Invalid(e.message()))?;
        self.ask(|answer| Command::Subscribe(pattern, answer)).await
    }

    /// Removes a subscription pattern; returns whether it was there.
    pub async fn unsubscribe(&self, pattern: impl Into<EventPath>) -> Result<bool, ClientError> {
        let pattern = pattern.into();
        self.ask(|answer| Command::Unsubscribe(pattern, answer)).await
    }

    /// Why the server last closed a link of this client, if it notes (it fell behind, the
    /// server was shutting down...).
    pub fn close_reason(&self) -> Option<String> {
        self.notes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).closing.clone()
    }

    pub fn state(&self) -> ClientState {
        *self.state.borrow()
    }

    pub fn status(&self) -> Status {
        self.state.borrow().status
    }

    /// Follows the link, session and server status as they change.
    pub fn state_changes(&self) -> watch::Receiver<ClientState> {
        self.state.clone()
    }

    /// Closes gracefully (ERQ, then EOF, then the server's EOF) and stops reconnecting.
    /// Registrations not yet acknowledged are lost with the client.
    /// Takes at most the request timeout: a server that does not answer the close is dropped,
    /// and so is a task whose command queue stays full (submissions waiting behind a
    /// registration that waits for room in the outbox, with no server to free it).
    pub async fn close(self) {
        let deadline = tokio::time::Instant::now() + self.close_within;
        let _ = tokio::time::timeout_at(deadline, self.commands.send(Command::Close)).await;
        let mut task = self.task;
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
        }
    }
}
