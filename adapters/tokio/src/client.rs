//! A Rivulet client as an async handle: register events (kept until acknowledged, across
//! reconnects), subscribe, query history, call and serve requests, and read notified events as a
//! stream. The protocol is the core's [`rivulet_core::session::Client`]; this is its task.
//!
//! Links run over TCP ([`connect`]) or over any byte stream a [`Connect`] opens on each
//! (re)connect ([`connect_via`]; TLS is `tls::Connector`, with the `tls` feature).
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

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use embedded_io_adapters::tokio_1::FromTokio;
use rivulet_core::driver::{Clock, Driver, DriverError};
use rivulet_core::session::{self, ClientConfig, ClientEvent, Incoming, Reply, RequestError, RequestId};
use rivulet_core::time::Instant;
use rivulet_core::wire::{FrameWriter, Framing};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::link::{self, Backoff, Jitter, LineDecoder, LinkError, TokioClock, WriteError, write_with_room};
use crate::model::{Event, EventPath, Query, QueryPage, RegisterEvent, Status, pack_list};
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

/// What the server said that does not fit [`ClientState`]: refused registrations (newest last, at
/// most [`REFUSALS_KEPT`]) and why it last closed a link.
#[derive(Debug, Default)]
struct Said {
    refusals: VecDeque<(u32, String)>,
    closing: Option<String>,
}

type SharedSaid = Arc<std::sync::Mutex<Said>>;

type CoreClient = session::Client<'static, Box<[u8]>, INFLIGHT, ALIASES, SUBSCRIPTIONS>;

/// The core client behind a type without lifetime parameters: with one, the compiler cannot
/// prove the task's future `Send` (rust-lang/rust#110338).
struct Machine(CoreClient);

impl std::ops::Deref for Machine {
    type Target = CoreClient;
    fn deref(&self) -> &CoreClient {
        &self.0
    }
}

impl std::ops::DerefMut for Machine {
    fn deref_mut(&mut self) -> &mut CoreClient {
        &mut self.0
    }
}

impl session::Machine for Machine {
    type Event<'a> = ClientEvent<'a>;
    fn handle<'a>(&'a mut self, now: Instant, body: &'a [u8]) -> Result<Option<ClientEvent<'a>>, session::Error> {
        self.0.handle(now, body)
    }
    fn poll(&mut self, now: Instant) -> Option<session::TimerEvent> {
        self.0.poll(now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn poll_transmit(&mut self, now: Instant, out: &mut FrameWriter<'_>) -> Result<(), session::Error> {
        self.0.poll_transmit(now, out)
    }
}

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
    /// The request or event does not fit in a packet or the outbox.
    TooLarge,
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
            ClientError::TooLarge => f.write_str("too large for a packet or the outbox"),
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
    said: SharedSaid,
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
    let said = SharedSaid::default();
    let task_said = said.clone();
    let task = tokio::spawn(async move {
        let mut task = Task {
            options,
            handler: Arc::new(handler),
            commands: command_rx,
            events: events_tx,
            state: state_tx,
            said: task_said,
            undelivered: VecDeque::new(),
        };
        task.run(connector, ready_tx).await;
    });
    match ready.await {
        Ok(Ok(())) => Ok((Client { commands, state, task, close_within, said }, Events { events })),
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
            .wait_for(|s| {
                s.session.is_some() && session::message::seq_at_or_after(s.registered_below, seq.wrapping_add(1))
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        let said = self.said.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match said.refusals.iter().rev().find(|(refused, _)| *refused == seq) {
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

    /// Why the server last closed a link of this client, if it said (it fell behind, the
    /// server was shutting down...).
    pub fn close_reason(&self) -> Option<String> {
        self.said.lock().unwrap_or_else(std::sync::PoisonError::into_inner).closing.clone()
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

/// The running client: its handles' commands, the machine and the current link.
struct Task<H> {
    options: ClientOptions,
    handler: Arc<H>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    state: watch::Sender<ClientState>,
    said: SharedSaid,
    /// Events the machine delivered that are not yet in the application's queue (at most a
    /// window: their acks are held). What a link leaves here goes to the application before the
    /// next link opens, since the next init announces a whole window again.
    undelivered: VecDeque<Event>,
}

/// Requests awaiting answers, by what the answer becomes.
enum Waiting {
    Registered(Answer<Vec<Event>>),
    Query(Answer<QueryPage>),
    App(Answer<PacketReply>),
    Ping(Answer<std::time::Duration>),
}

impl Waiting {
    fn fail(self, error: ClientError) {
        // The asker may have given up waiting: nobody to tell then.
        match self {
            Waiting::Registered(a) => drop(a.send(Err(error))),
            Waiting::Query(a) => drop(a.send(Err(error))),
            Waiting::App(a) => drop(a.send(Err(error))),
            Waiting::Ping(a) => drop(a.send(Err(error))),
        }
    }
}

/// What a link's loop woke up for, owned so the machine is free again.
enum Woke {
    Link(Result<Option<Owned>, LinkError>),
    Command(Option<Command>),
    Answer(u64, Incoming, Result<PacketReply, String>),
    EventTaken(Option<mpsc::OwnedPermit<Event>>),
}

enum Owned {
    Connected { resumed: bool, status: Status, registered_below: u32 },
    Challenge(Vec<u8>),
    Refused(String),
    Status(Status),
    Event(Event),
    Registered(u32),
    Response(RequestId, Reply<'static>, Option<OwnedReply>),
    Failed(RequestId, ClientError),
    Request(Incoming, PacketRequest),
    Subscribed,
    SubscriptionRefused(String),
    RegistrationRefused(u32, String),
    Closing(String),
    Ended,
}

/// The parts of a reply that borrow the packet, copied out.
enum OwnedReply {
    Query(QueryPage),
    Registered(Vec<Event>),
    App(PacketReply),
}

fn own(event: ClientEvent<'_>) -> Owned {
    match event {
        ClientEvent::Connected { resumed, status, registered_below } => {
            Owned::Connected { resumed, status, registered_below }
        }
        ClientEvent::Challenge { nonce } => Owned::Challenge(nonce.to_vec()),
        ClientEvent::Refused { reason } => Owned::Refused(reason.into()),
        ClientEvent::Status(status) => Owned::Status(status),
        ClientEvent::Event(event) => Owned::Event(event.into()),
        ClientEvent::Registered { below_seq } => Owned::Registered(below_seq),
        ClientEvent::Response { id, reply } => {
            let owned = match reply {
                Reply::Query(result) => Some(OwnedReply::Query(QueryPage {
                    events: result.events.iter().map(Event::from).collect(),
                    more_follows: result.more_follows,
                })),
                Reply::Registered(list) => Some(OwnedReply::Registered(list.iter().map(Event::from).collect())),
                Reply::App { flags, payload } => Some(OwnedReply::App(PacketReply::new(flags, payload))),
                Reply::Pong { .. } => None,
            };
            let kept = match reply {
                Reply::Pong { rtt } => Reply::Pong { rtt },
                _ => Reply::App { flags: 0, payload: &[] },
            };
            Owned::Response(id, kept, owned)
        }
        ClientEvent::RequestFailed { id, error } => Owned::Failed(id, error.into()),
        ClientEvent::Request { from, rq_type, flags, payload } => {
            Owned::Request(from, PacketRequest { rq_type, flags, payload: payload.to_vec() })
        }
        ClientEvent::Subscribed => Owned::Subscribed,
        ClientEvent::SubscriptionRefused { reason } => Owned::SubscriptionRefused(reason.into()),
        ClientEvent::RegistrationRefused { seq, reason } => Owned::RegistrationRefused(seq, reason.into()),
        ClientEvent::Closing { reason } => Owned::Closing(reason.into()),
        ClientEvent::LinkEnded(_) => Owned::Ended,
    }
}

/// A change of the subscription list, waiting for its turn on an open link.
enum SubscriptionChange {
    Add(EventPath, Answer<()>),
    Remove(EventPath, Answer<bool>),
}

/// Subscription changes on an open link, one at a time, so that each of the server's answers
/// belongs to exactly one change: a refused pattern is taken back out of the list and its caller
/// gets the reason.
#[derive(Default)]
struct Subscriptions {
    /// The pattern the server's next answer is about, with its caller if it was added.
    waiting: Option<(EventPath, Option<Answer<()>>)>,
    queued: VecDeque<SubscriptionChange>,
    /// Answers to lists re-sent after a refusal (without the refused pattern), to skip.
    reverts: u32,
}

impl Subscriptions {
    fn change(&mut self, machine: &mut Machine, change: SubscriptionChange) {
        self.queued.push_back(change);
        self.start_next(machine);
    }

    /// Applies queued changes until one goes to the server.
    fn start_next(&mut self, machine: &mut Machine) {
        while self.waiting.is_none() {
            let Some(change) = self.queued.pop_front() else { return };
            match change {
                SubscriptionChange::Add(pattern, answer) => {
                    if machine.subscriptions().iter().any(|known| known == pattern.as_ref()) {
                        drop(answer.send(Ok(())));
                    } else if machine.subscribe(pattern.as_ref()).is_err() {
                        drop(answer.send(Err(ClientError::TooLarge)));
                    } else {
                        self.waiting = Some((pattern, Some(answer)));
                    }
                }
                SubscriptionChange::Remove(pattern, answer) => {
                    let removed = machine.unsubscribe(pattern.as_ref());
                    let _ = answer.send(Ok(removed));
                    if removed {
                        // Its answer is awaited all the same: it belongs to this change.
                        self.waiting = Some((pattern, None));
                    }
                }
            }
        }
    }

    /// The server answered a subscription list: `refusal` is its reason if it refused.
    fn answered(&mut self, machine: &mut Machine, refusal: Option<String>) {
        if self.reverts > 0 {
            self.reverts -= 1;
            return;
        }
        match (self.waiting.take(), refusal) {
            (Some((pattern, Some(answer))), Some(reason)) => {
                log::warn!("server refused subscription {pattern}: {reason}");
                machine.unsubscribe(pattern.as_ref());
                self.reverts += 1;
                drop(answer.send(Err(ClientError::Refused(reason))));
            }
            (Some((_, Some(answer))), None) => drop(answer.send(Ok(()))),
            (Some((pattern, None)), Some(reason)) => log::warn!("server refused our list without {pattern}: {reason}"),
            (Some((_, None)), None) | (None, _) => {}
        }
        self.start_next(machine);
    }

    /// The link ended: every change stands in the list, and goes with the next init.
    fn link_ended(&mut self, machine: &mut Machine) {
        self.reverts = 0;
        if let Some((_, Some(answer))) = self.waiting.take() {
            drop(answer.send(Ok(())));
        }
        for change in self.queued.drain(..) {
            apply_offline(machine, change);
        }
    }
}

/// A subscription change without a link: it goes with the next init.
fn apply_offline(machine: &mut Machine, change: SubscriptionChange) {
    match change {
        SubscriptionChange::Add(pattern, answer) => {
            drop(answer.send(machine.subscribe(pattern.as_ref()).map_err(|_| ClientError::TooLarge)));
        }
        SubscriptionChange::Remove(pattern, answer) => drop(answer.send(Ok(machine.unsubscribe(pattern.as_ref())))),
    }
}

/// How a link ended.
enum LinkOutcome {
    /// The link dropped: reconnect. `was_open` says the server had accepted the init.
    Dropped { was_open: bool },
    /// The server refused the init.
    Refused(String),
    /// The application closed the client.
    Closed,
}

impl<H: PacketHandler> Task<H> {
    async fn run<C: Connect>(&mut self, connector: C, ready: oneshot::Sender<Result<(), ClientError>>) {
        let options = self.options.clone();
        // The machine's configuration borrows the name and credential for the whole session. They
        // are leaked once per client (a few bytes): with a borrowed lifetime in the machine the
        // compiler cannot prove the task's future `Send` (rust-lang/rust#110338).
        let name: &'static str = Box::leak(options.name.clone().into_boxed_str());
        let credential: Option<&'static [u8]> = options.credential.clone().map(|c| &*Box::leak(c.into_boxed_slice()));
        let mut config = ClientConfig::new(name);
        config.credential = credential;
        config.server_id = options.server_id;
        config.persisted = options.persisted;
        config.keepalive = core_duration(options.keepalive);
        config.request_timeout = core_duration(options.request_timeout);
        config.window = options.window;
        config.max_packet = options.max_packet;
        config.hold_acks = true;
        // Zeroed, so the pages the outbox never reaches are never touched; the machine's own
        // tables (about 17 KiB) go on the heap too, to keep the task's future small.
        let outbox = vec![0; options.outbox].into_boxed_slice();
        let mut machine = Box::new(Machine(CoreClient::new(config, outbox)));
        for pattern in &options.subscriptions {
            if machine.subscribe(pattern.as_ref()).is_err() {
                let _ = ready.send(Err(ClientError::TooLarge));
                return;
            }
        }
        let (mut rx, mut tx) = link::buffers(Framing::Stream, options.max_packet as usize);
        let mut ready = Some(ready);
        let mut jitter = Jitter::new();
        let mut attempt = 0u32;
        let mut parked: VecDeque<(RegisterEvent, Answer<u32>)> = VecDeque::new();
        loop {
            // The first connection is awaited by `connect`; later ones serve commands meanwhile.
            let connecting = tokio::time::timeout(options.request_timeout, connector.connect());
            let connected = if ready.is_some() {
                connecting.await
            } else {
                match self.offline(&mut machine, &mut parked, connecting).await {
                    Some(result) => result,
                    None => return,
                }
            };
            let connected = connected.map_err(|_| std::io::ErrorKind::TimedOut.into()).and_then(|r| r);
            let stream: link::Stream = match connected {
                Ok(stream) => Box::new(stream),
                Err(e) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(ClientError::Io(e.to_string())));
                        return;
                    }
                    log::debug!("reconnect failed: {e}");
                    let delay = options.reconnect.delay(attempt, &mut jitter);
                    attempt = attempt.saturating_add(1);
                    if self.offline(&mut machine, &mut parked, tokio::time::sleep(delay)).await.is_none() {
                        return;
                    }
                    continue;
                }
            };
            let outcome = self.run_link(stream, &mut machine, &mut rx, &mut tx, &mut parked, &mut ready).await;
            machine.link_down();
            self.update_state(&machine, false);
            match outcome {
                LinkOutcome::Closed => return,
                LinkOutcome::Refused(reason) => {
                    log::warn!("server refused the init: {reason}");
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(ClientError::Refused(reason)));
                    }
                    return;
                }
                LinkOutcome::Dropped { was_open } => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(ClientError::Disconnected));
                        return;
                    }
                    if !self.hand_over(&mut machine, &mut parked).await {
                        return;
                    }
                    // A link that worked starts the backoff over; one that never opened grows it.
                    attempt = if was_open { 0 } else { attempt.saturating_add(1) };
                    let delay = options.reconnect.delay(attempt, &mut jitter);
                    if self.offline(&mut machine, &mut parked, tokio::time::sleep(delay)).await.is_none() {
                        return;
                    }
                }
            }
        }
    }

    fn update_state(&self, machine: &Machine, connected: bool) {
        self.state.send_modify(|state| {
            state.connected = connected;
            state.status = machine.status();
            state.session = machine.session_id();
            state.links = machine.stats().links;
        });
    }

    /// Waits for `until` between links. Meanwhile registrations and subscriptions still go to
    /// the machine, and anything that needs the server fails at once. `None` when the client was
    /// closed.
    async fn offline<T>(
        &mut self,
        machine: &mut Machine,
        parked: &mut VecDeque<(RegisterEvent, Answer<u32>)>,
        until: impl Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(until);
        loop {
            let command = tokio::select! {
                done = &mut until => return Some(done),
                command = self.commands.recv(), if parked.is_empty() => command,
                permit = self.events.clone().reserve_owned(), if !self.undelivered.is_empty() => {
                    self.deliver_one(permit.ok());
                    continue;
                }
            };
            if !self.offline_command(machine, parked, command) {
                return None;
            }
        }
    }

    /// Gives the application what the last link delivered, serving commands meanwhile. False
    /// when the client was closed.
    async fn hand_over(&mut self, machine: &mut Machine, parked: &mut VecDeque<(RegisterEvent, Answer<u32>)>) -> bool {
        while !self.undelivered.is_empty() {
            tokio::select! {
                permit = self.events.clone().reserve_owned() => self.deliver_one(permit.ok()),
                command = self.commands.recv(), if parked.is_empty() => {
                    if !self.offline_command(machine, parked, command) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Moves the oldest undelivered event into the application's queue; without a permit (the
    /// application dropped its `Events`) nobody is left to give them to.
    fn deliver_one(&mut self, permit: Option<mpsc::OwnedPermit<Event>>) {
        match permit {
            Some(permit) => {
                if let Some(event) = self.undelivered.pop_front() {
                    permit.send(event);
                }
            }
            None => self.undelivered.clear(),
        }
    }

    /// Carries out a command between links; false when the client is to close.
    fn offline_command(
        &mut self,
        machine: &mut Machine,
        parked: &mut VecDeque<(RegisterEvent, Answer<u32>)>,
        command: Option<Command>,
    ) -> bool {
        {
            let Some(command) = command else { return false }; // every handle is gone
            match command {
                Command::Close => return false,
                Command::Register(event, answer) => register(machine, parked, event, answer),
                Command::Subscribe(pattern, answer) => apply_offline(machine, SubscriptionChange::Add(pattern, answer)),
                Command::Unsubscribe(pattern, answer) => {
                    apply_offline(machine, SubscriptionChange::Remove(pattern, answer));
                }
                Command::RegisterWithResponse(_, answer) => {
                    let _ = answer.send(Err(ClientError::NotConnected));
                }
                Command::Query(_, answer) => {
                    let _ = answer.send(Err(ClientError::NotConnected));
                }
                Command::Request(_, answer) => {
                    let _ = answer.send(Err(ClientError::NotConnected));
                }
                Command::Ping(answer) => {
                    let _ = answer.send(Err(ClientError::NotConnected));
                }
            }
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_link(
        &mut self,
        stream: link::Stream,
        machine: &mut Machine,
        rx: &mut [u8],
        tx: &mut [u8],
        parked: &mut VecDeque<(RegisterEvent, Answer<u32>)>,
        ready: &mut Option<oneshot::Sender<Result<(), ClientError>>>,
    ) -> LinkOutcome {
        let clock = TokioClock::new();
        let generation = machine.stats().links + 1;
        machine.link_up(clock.now());
        let mut driver = Driver::new(
            FromTokio::new(stream),
            LineDecoder::new(Framing::Stream, rx),
            FrameWriter::new(tx, Framing::Stream),
        );
        let mut waiting: HashMap<RequestId, Waiting> = HashMap::new();
        let (answer_tx, mut answers) = mpsc::channel::<(u64, Incoming, Result<PacketReply, String>)>(INFLIGHT);
        let mut closing = false;
        let mut opened = false;
        let mut subscriptions = Subscriptions::default();
        let outcome = loop {
            let commands_open = parked.is_empty() && !closing;
            let woke = tokio::select! {
                step = driver.step(machine, &clock) => Woke::Link(step.map(|e| e.map(own))),
                permit = self.events.clone().reserve_owned(), if !self.undelivered.is_empty() => Woke::EventTaken(permit.ok()),
                command = self.commands.recv(), if commands_open => Woke::Command(command),
                Some((generation, from, answer)) = answers.recv() => Woke::Answer(generation, from, answer),
            };
            match woke {
                Woke::EventTaken(permit) => {
                    // No permit: the application dropped its `Events`; nobody is left to give them to.
                    // Every undelivered event is this link's: the last link's were handed over first.
                    let count = if permit.is_some() { 1 } else { self.undelivered.len() };
                    self.deliver_one(permit);
                    machine.release(u32::try_from(count).unwrap_or(u32::MAX));
                }
                Woke::Link(Ok(None)) => {}
                Woke::Link(Err(DriverError::Session(e))) => {
                    log::warn!("link dropped: the server broke the protocol ({e})");
                    break LinkOutcome::Dropped { was_open: opened };
                }
                Woke::Link(Err(e)) => {
                    log::debug!("link dropped: {e}");
                    break if closing { LinkOutcome::Closed } else { LinkOutcome::Dropped { was_open: opened } };
                }
                Woke::Link(Ok(Some(event))) => match event {
                    Owned::Ended => {
                        break if closing { LinkOutcome::Closed } else { LinkOutcome::Dropped { was_open: opened } };
                    }
                    Owned::Refused(reason) => break LinkOutcome::Refused(reason),
                    Owned::Connected { resumed, status, registered_below } => {
                        log::debug!("connected (resumed: {resumed}, status {status:?})");
                        opened = true;
                        self.state.send_modify(|s| s.registered_below = registered_below);
                        self.update_state(machine, true);
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Ok(()));
                        }
                        retry_parked(machine, parked);
                    }
                    Owned::Challenge(nonce) => {
                        let proof = self.options.challenge.as_ref().map(|answer| answer(&nonce));
                        match proof.map(|proof| machine.answer_challenge(&proof)) {
                            Some(Ok(())) => {}
                            _ => break LinkOutcome::Refused("challenged, and no answer to give".into()),
                        }
                    }
                    Owned::Status(status) => self.state.send_modify(|s| s.status = status),
                    Owned::Event(event) if self.undelivered.is_empty() => match self.events.try_send(event) {
                        Err(mpsc::error::TrySendError::Full(event)) => self.undelivered.push_back(event),
                        // Queued, or nobody reads events any more: either way it is taken.
                        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                            machine.release(1);
                        }
                    },
                    Owned::Event(event) => self.undelivered.push_back(event),
                    Owned::Registered(below) => {
                        self.state.send_modify(|s| s.registered_below = below);
                        retry_parked(machine, parked);
                    }
                    Owned::Response(id, pong, reply) => match (waiting.remove(&id), reply, pong) {
                        (Some(Waiting::Query(a)), Some(OwnedReply::Query(page)), _) => drop(a.send(Ok(page))),
                        (Some(Waiting::Registered(a)), Some(OwnedReply::Registered(events)), _) => {
                            drop(a.send(Ok(events)))
                        }
                        (Some(Waiting::App(a)), Some(OwnedReply::App(reply)), _) => drop(a.send(Ok(reply))),
                        (Some(Waiting::Ping(a)), None, Reply::Pong { rtt }) => {
                            drop(a.send(Ok(std::time::Duration::from_micros(rtt.as_micros()))))
                        }
                        (Some(other), _, _) => other.fail(ClientError::Refused("answer of another kind".into())),
                        (None, _, _) => {}
                    },
                    Owned::Failed(id, error) => {
                        if let Some(w) = waiting.remove(&id) {
                            w.fail(error);
                        }
                    }
                    Owned::Request(from, request) => {
                        let (handler, answer_tx) = (self.handler.clone(), answer_tx.clone());
                        tokio::spawn(async move {
                            let handling = tokio::spawn(async move { handler.handle(request).await });
                            let answer = handling.await.unwrap_or_else(|_| Err("exception during handler".into()));
                            let _ = answer_tx.send((generation, from, answer)).await;
                        });
                    }
                    Owned::Subscribed => subscriptions.answered(machine, None),
                    Owned::Closing(reason) => {
                        log::warn!("the server is closing the link: {reason}");
                        self.said.lock().unwrap_or_else(std::sync::PoisonError::into_inner).closing = Some(reason);
                    }
                    Owned::SubscriptionRefused(reason) => subscriptions.answered(machine, Some(reason)),
                    Owned::RegistrationRefused(seq, reason) => {
                        log::warn!("server refused registration {seq}: {reason}");
                        let mut said = self.said.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        if said.refusals.len() == REFUSALS_KEPT {
                            said.refusals.pop_front();
                        }
                        said.refusals.push_back((seq, reason));
                        self.state.send_modify(|s| s.refused += 1);
                    }
                },
                Woke::Answer(answer_generation, from, answer) => {
                    if answer_generation != generation {
                        continue; // the request came on a link that is gone
                    }
                    let written = write_with_room(&mut driver, |out| match &answer {
                        Ok(reply) => machine.respond(from, reply.flags, &reply.payload, out),
                        Err(reason) => machine.refuse(from, reason, out),
                    })
                    .await;
                    if let Err(WriteError::Link(e)) = written {
                        log::debug!("link dropped: {e}");
                        break LinkOutcome::Dropped { was_open: opened };
                    }
                }
                Woke::Command(first) => {
                    // Whatever else is queued goes too (up to a batch), so that a burst of
                    // registrations leaves in one write rather than one write each.
                    let (mut next, mut taken) = (first, 0);
                    let dropped = loop {
                        match next {
                            None | Some(Command::Close) => {
                                closing = true;
                                machine.close();
                            }
                            Some(Command::Subscribe(pattern, answer)) if opened => {
                                subscriptions.change(machine, SubscriptionChange::Add(pattern, answer));
                            }
                            Some(Command::Unsubscribe(pattern, answer)) if opened => {
                                subscriptions.change(machine, SubscriptionChange::Remove(pattern, answer));
                            }
                            Some(command) => {
                                // Its own time: a write before it in the batch may have waited.
                                let now = clock.now();
                                let done = self.command(command, machine, &mut driver, now, &mut waiting, parked).await;
                                if let Err(e) = done {
                                    log::debug!("link dropped: {e}");
                                    break true;
                                }
                            }
                        }
                        taken += 1;
                        if closing || !parked.is_empty() || taken == COMMAND_BATCH {
                            break false;
                        }
                        match self.commands.try_recv() {
                            Ok(command) => next = Some(command),
                            Err(_) => break false,
                        }
                    };
                    if dropped {
                        break LinkOutcome::Dropped { was_open: opened };
                    }
                }
            }
        };
        for (_, w) in waiting.drain() {
            w.fail(ClientError::Disconnected);
        }
        if let LinkOutcome::Closed = outcome {
            // Close our side: over TLS that sends close_notify, so the server sees a close and not
            // a cut connection; over TCP it is the FIN that dropping would send.
            let closing = driver.io().inner_mut().shutdown();
            let _ = tokio::time::timeout(self.options.request_timeout, closing).await;
        }
        subscriptions.link_ended(machine);
        // What is left in `undelivered` was delivered by the machine, so it is never notified
        // again: `hand_over` gives it to the application before the next link.
        outcome
    }

    /// Carries out one command on an open link.
    async fn command(
        &mut self,
        command: Command,
        machine: &mut Machine,
        driver: &mut link::TokioDriver<'_, link::Stream>,
        now: Instant,
        waiting: &mut HashMap<RequestId, Waiting>,
        parked: &mut VecDeque<(RegisterEvent, Answer<u32>)>,
    ) -> Result<(), LinkError> {
        let mut buf = Vec::new();
        let (sent, w) = match command {
            Command::Register(event, answer) => {
                register(machine, parked, event, answer);
                return Ok(());
            }
            // Before the init is accepted: the change goes with the init or right after it.
            Command::Subscribe(pattern, answer) => {
                apply_offline(machine, SubscriptionChange::Add(pattern, answer));
                return Ok(());
            }
            Command::Unsubscribe(pattern, answer) => {
                apply_offline(machine, SubscriptionChange::Remove(pattern, answer));
                return Ok(());
            }
            Command::Close => return Ok(()),
            Command::RegisterWithResponse(events, answer) => {
                let list = pack_list(events.iter().map(RegisterEvent::as_ref), &mut buf);
                let sent = write_with_room(driver, |out| machine.register_with_response(now, list, out)).await;
                (sent, Waiting::Registered(answer))
            }
            Command::Query(query, answer) => {
                let params = query.to_params(&mut buf);
                (write_with_room(driver, |out| machine.query(now, &params, out)).await, Waiting::Query(answer))
            }
            Command::Request(request, answer) => {
                let PacketRequest { rq_type, flags, payload } = &request;
                let sent = write_with_room(driver, |out| machine.request(now, *rq_type, *flags, payload, out)).await;
                (sent, Waiting::App(answer))
            }
            Command::Ping(answer) => {
                (write_with_room(driver, |out| machine.ping(now, out)).await, Waiting::Ping(answer))
            }
        };
        match sent {
            Ok(id) => {
                waiting.insert(id, w);
                Ok(())
            }
            Err(WriteError::Link(e)) => {
                w.fail(ClientError::Disconnected);
                Err(e)
            }
            Err(WriteError::TooLarge) | Err(WriteError::Session(session::Error::Wire(_))) => {
                w.fail(ClientError::TooLarge);
                Ok(())
            }
            Err(WriteError::Session(session::Error::NotConnected)) => {
                w.fail(ClientError::NotConnected);
                Ok(())
            }
            Err(WriteError::Session(session::Error::TooManyRequests)) => {
                w.fail(ClientError::Refused("too many requests in flight".into()));
                Ok(())
            }
            Err(WriteError::Session(_)) => {
                w.fail(ClientError::Closed);
                Ok(())
            }
        }
    }
}

fn core_duration(d: std::time::Duration) -> rivulet_core::time::Duration {
    rivulet_core::time::Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Puts a registration in the outbox, or parks it (in order) until acknowledgements make room.
fn register(
    machine: &mut Machine,
    parked: &mut VecDeque<(RegisterEvent, Answer<u32>)>,
    event: RegisterEvent,
    answer: Answer<u32>,
) {
    if !parked.is_empty() {
        parked.push_back((event, answer));
        return;
    }
    let e = event.as_ref();
    match machine.register(e.event_type, e.source_timestamp, e.payload) {
        Ok(seq) => drop(answer.send(Ok(seq))),
        Err(session::Error::OutboxFull) if machine.outbox_len() > 0 => parked.push_back((event, answer)),
        Err(_) => drop(answer.send(Err(ClientError::TooLarge))),
    }
}

/// Moves parked registrations into the outbox while it has room.
fn retry_parked(machine: &mut Machine, parked: &mut VecDeque<(RegisterEvent, Answer<u32>)>) {
    while let Some((event, answer)) = parked.pop_front() {
        let e = event.as_ref();
        match machine.register(e.event_type, e.source_timestamp, e.payload) {
            Ok(seq) => drop(answer.send(Ok(seq))),
            Err(session::Error::OutboxFull) if machine.outbox_len() > 0 => {
                parked.push_front((event, answer));
                return;
            }
            Err(_) => drop(answer.send(Err(ClientError::TooLarge))),
        }
    }
}
