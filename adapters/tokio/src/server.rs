//! A Rivulet session server (hat-event's eventer server) on tokio: accepts clients, hands their
//! registrations, queries and requests to a [`ServerHandler`], and notifies them of events the
//! application passes to [`Server::notify_events`]. The protocol is the core's
//! [`ServerConnection`]; this module runs one per connection, in its own task, over TCP or over
//! whatever stream an [`Accept`] makes of the TCP connection (TLS: `tls::Acceptor`, with the
//! `tls` feature).
//!
//! What the handler owns and what this module owns:
//! - the handler decides admission, stores registrations, answers queries and requests; it is
//!   called outside the connection's machine, so a slow handler never stops keepalives;
//! - this module keeps each client's session (`session id → next sequence number`, in memory,
//!   asking [`ServerHandler::resume`] about sessions it does not know) and acknowledges a
//!   registration only once [`ServerHandler::register`] returned `Ok` for it. If `register` fails,
//!   the error is logged and the link is closed: the client keeps the registrations and sends them
//!   again on its next link. Together that stores each acknowledged registration exactly once (see
//!   `docs/PROTOCOL.md` §5.1), as long as `register` stores what it is given before returning.
//! - events registered here are **not** notified by themselves: the application (often the
//!   handler's `register`) calls [`Server::notify_events`].
//! - [`Server::notify_events`] finds the clients of each event in a [`SubscriptionIndex`] kept
//!   beside the list of links, under its lock: the cost grows with the clients that match, not
//!   with every subscription of every client.
//!
//! Queues and what happens when they are full:
//! - notifications waiting for a connection ([`ServerOptions::notify_queue`] events each, filled
//!   by `notify_events`, drained as the client's window gives credit): when full, that connection
//!   is closed as too slow (logged; ERQ/EOF, dropped after [`ServerOptions::shutdown_timeout`]), so
//!   one stuck client cannot hold the others back. Its queued notifications are dropped.
//! - registrations waiting for `register` (at most the configured window per connection: the
//!   client cannot send more unacknowledged ones; a client that does breaks the protocol and its
//!   link ends);
//! - a client's requests being handled (queries, register-with-response, application requests):
//!   [`MAX_REQUESTS_HANDLED`] per connection; more are refused with "too many requests in flight";
//! - [`Server::request`] calls: at most [`INFLIGHT`]` - 1` in flight per connection (one slot stays
//!   free for the keepalive ping) and [`COMMANDS`] more queued; further callers wait for room;
//! - the session table grows by one small entry per session for the life of the `Server`.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use rivulet_core::driver::{Driver, DriverError};
use rivulet_core::model::{EventList, QueryResult};
use rivulet_core::owned::SubscriptionIndex;
use rivulet_core::session::message::{PROTOCOL_VERSION, seq_at_or_after};
use rivulet_core::session::{
    self, Accepted, Incoming, InitRequest, LinkEnd, Reply, RequestId, ServerConfig, ServerConnection, ServerEvent,
};
use rivulet_core::wire::{FrameWriter, Framing};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::link::{self, LineDecoder, LinkError, TokioClock, TokioDriver, WriteError, write_with_room};
use crate::model::{Event, EventPath, Query, QueryPage, RegisterEvent, Status, pack_list};
use crate::packet::{CallError, PacketReply, PacketRequest};

/// Requests of ours (and the keepalive ping) awaiting a client's answer, per connection.
pub const INFLIGHT: usize = 8;
/// Event types declared each way, per connection.
pub const ALIASES: usize = 64;
/// A client's requests handled at once, per connection; more are refused.
pub const MAX_REQUESTS_HANDLED: usize = 256;
/// Batches of a connection's registrations taken by the handler and not yet durable: the next
/// batch is admitted while earlier ones are being written.
const PIPELINE: usize = 32;

/// [`Server::request`] calls queued per connection before callers wait.
pub const COMMANDS: usize = 16;

type Machine = ServerConnection<INFLIGHT, ALIASES>;

/// What a handler that panicked answers, as cs.packetstream does.
const HANDLER_PANICKED: &str = "exception during handler";

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Limits and pacing of each connection. `auto_ack` is ignored: registrations are
    /// acknowledged only once the handler stored them.
    pub config: ServerConfig,
    /// This server's id in event ids, announced to clients.
    pub server_id: u64,
    /// Announced in every `Accepted` until [`Server::set_status`] changes it.
    pub status: Status,
    /// Notifications queued per connection before it is closed as too slow.
    pub notify_queue: usize,
    /// How long a closing connection waits for its handlers and for the client's EOF.
    pub shutdown_timeout: Duration,
    /// Clients with an accepted link at once; a further init is refused with a reason. TCP
    /// connections that have not yet been admitted count too, with a tenth more room, beyond
    /// which they are closed at once.
    pub max_connections: usize,
    /// How long an accepted connection may take to become a stream (a TLS handshake) before it
    /// is dropped, so a peer that connects and stays silent does not hold a task for long.
    pub handshake_timeout: Duration,
    /// How long a TCP (or TLS) connection may go without an accepted init before it is dropped:
    /// connections that never log in must not hold places under `max_connections`. A serial
    /// line has no such limit: it waits for its device as long as the device is away.
    pub init_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            config: ServerConfig::default(),
            server_id: 0,
            status: Status::Operational,
            notify_queue: 1024,
            shutdown_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            init_timeout: Duration::from_secs(10),
        }
    }
}

/// One accepted client, as the handler and [`Server::connections`] see it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The connection's id, unique within a [`Server`].
    pub id: u64,
    pub client_name: String,
    /// The TCP peer's address, over TLS too.
    pub peer: SocketAddr,
    /// The client's durable session (new, or resumed).
    pub session: u64,
    pub subscriptions: Vec<EventPath>,
    /// Notify only events whose id has this server.
    pub server_id: Option<u64>,
    /// Notify only events passed to `notify_events` with `persisted = true` (or only those with
    /// `false`, when this is `false`).
    pub persisted: bool,
    /// The client's token, or its proof after a challenge.
    pub credential: Option<Vec<u8>>,
    /// The largest packet the client takes: a handler need not read a query page larger than
    /// this, since it is cut to fit anyway.
    pub max_packet: u32,
}

impl ClientInfo {
    /// Whether a notification of `event` goes to this client. `notify_events` gets the same
    /// answer from the subscription index plus [`ClientInfo::takes_from`], without the scan.
    fn wants(&self, event: &Event) -> bool {
        self.takes_from(event.id.server) && self.subscriptions.iter().any(|pattern| pattern.matches(&event.event_type))
    }

    /// The `server_id` filter alone.
    fn takes_from(&self, server: u64) -> bool {
        self.server_id.is_none_or(|id| id == server)
    }
}

impl std::fmt::Debug for ClientInfo {
    // The credential stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientInfo")
            .field("id", &self.id)
            .field("client_name", &self.client_name)
            .field("peer", &self.peer)
            .field("session", &self.session)
            .field("subscriptions", &self.subscriptions)
            .field("server_id", &self.server_id)
            .field("persisted", &self.persisted)
            .field("credential", &self.credential.as_ref().map(|c| format!("<{} bytes>", c.len())))
            .finish()
    }
}

/// The answer to a client's init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Accept,
    /// Refuse with this reason; the link closes.
    Refuse(String),
    /// Ask for a proof over this nonce: the client inits again with the proof as its credential.
    Challenge(Vec<u8>),
}

/// Registrations a handler took (see [`ServerHandler::admit`]). The events themselves are not
/// handed back: the link acknowledges sequence numbers, and copying every event for that would
/// cost the gateway's hot path an allocation per event.
pub struct Admitted {
    /// Resolves once they are durable, or with the reason they will not be.
    pub durable: std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted").finish_non_exhaustive()
    }
}

/// An event a client registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub session: u64,
    /// Its sequence number in the session; `None` for register-with-response, which is not
    /// sequenced (and not resent after a lost link).
    pub seq: Option<u32>,
    pub event: RegisterEvent,
}

/// What the server asks of the application. Each call runs in its own task, so a panic is
/// contained: a request is then refused with "exception during handler".
pub trait ServerHandler: Send + Sync + 'static {
    /// Admits a client. Called on each init (again after a challenge).
    fn connect(&self, client: &ClientInfo) -> impl Future<Output = Admission> + Send {
        let _ = client;
        async { Admission::Accept }
    }

    /// The client's link ended (closed, broken, or replaced by a new init on the same
    /// connection). Called once per accepted link; when the connection ends, only after every
    /// `register` call of it returned.
    fn disconnect(&self, client: &ClientInfo) -> impl Future<Output = ()> + Send {
        let _ = client;
        async {}
    }

    /// Whether `client` may subscribe to `patterns` (its whole new list). A refusal reaches the
    /// client with the reason, and its previous list stays. The init's list is the handler's to
    /// check in [`ServerHandler::connect`].
    fn subscribe(
        &self,
        client: &ClientInfo,
        patterns: &[EventPath],
    ) -> impl Future<Output = Result<(), String>> + Send {
        let _ = (client, patterns);
        async { Ok(()) }
    }

    /// Whether `client` may register `event`; checked on the connection before anything is
    /// stored, so keep it cheap. A refused registration is not stored: the client is told why
    /// and it leaves the client's outbox (a register-with-response fails whole).
    fn check_register(&self, client: &ClientInfo, event: &RegisterEvent) -> Result<(), String> {
        let _ = (client, event);
        Ok(())
    }

    /// Stores registrations (in order) and returns them as registered events (ids and
    /// timestamps). Only after this returns `Ok` are they acknowledged to the client; an `Err`
    /// closes the link and the client sends them again on its next one.
    fn register(
        &self,
        client: &ClientInfo,
        registrations: Vec<Registration>,
    ) -> impl Future<Output = Result<Vec<Event>, String>> + Send;

    /// Takes registrations (in order) for storing and returns a future that resolves once they
    /// are durable; a connection's registrations are acknowledged only then, so the next batch
    /// need not wait for this one's write (a store that commits in groups can take several
    /// batches per commit). The default stores with
    /// [`ServerHandler::register`] and is durable at once.
    ///
    /// The durable futures of one handler must resolve in the order their batches were admitted,
    /// and once one fails every later one must fail too: an acknowledged registration must never
    /// sit behind one that was lost.
    fn admit(
        &self,
        client: &ClientInfo,
        registrations: Vec<Registration>,
    ) -> impl Future<Output = Result<Admitted, String>> + Send {
        async move {
            self.register(client, registrations).await?;
            Ok(Admitted { durable: Box::pin(async { Ok(()) }) })
        }
    }

    /// Answers a query with one page. An answer larger than the client can receive is cut to
    /// the events that fit, with `more_follows = true` (for `Latest`, which does not page, that
    /// says the answer is incomplete).
    fn query(&self, client: &ClientInfo, query: Query) -> impl Future<Output = Result<QueryPage, String>> + Send {
        let _ = (client, query);
        async { Err("queries are not served here".into()) }
    }

    /// Answers an application request (channel 1).
    fn request(
        &self,
        client: &ClientInfo,
        request: PacketRequest,
    ) -> impl Future<Output = Result<PacketReply, String>> + Send {
        let _ = (client, request);
        async { Err("no request handler".into()) }
    }

    /// Where a session this process does not know resumes: the next sequence number the store
    /// expects (a store that survived a restart), or `None` to start a new session.
    fn resume(&self, session: u64) -> impl Future<Output = Option<u32>> + Send {
        let _ = session;
        async { None }
    }
}

/// A shared handler serves too, so the application can keep a handle on it (to notify, say).
impl<H: ServerHandler> ServerHandler for Arc<H> {
    fn connect(&self, client: &ClientInfo) -> impl Future<Output = Admission> + Send {
        H::connect(self, client)
    }
    fn disconnect(&self, client: &ClientInfo) -> impl Future<Output = ()> + Send {
        H::disconnect(self, client)
    }
    fn subscribe(
        &self,
        client: &ClientInfo,
        patterns: &[EventPath],
    ) -> impl Future<Output = Result<(), String>> + Send {
        H::subscribe(self, client, patterns)
    }
    fn check_register(&self, client: &ClientInfo, event: &RegisterEvent) -> Result<(), String> {
        H::check_register(self, client, event)
    }
    fn register(
        &self,
        client: &ClientInfo,
        registrations: Vec<Registration>,
    ) -> impl Future<Output = Result<Vec<Event>, String>> + Send {
        H::register(self, client, registrations)
    }
    fn admit(
        &self,
        client: &ClientInfo,
        registrations: Vec<Registration>,
    ) -> impl Future<Output = Result<Admitted, String>> + Send {
        H::admit(self, client, registrations)
    }
    fn query(&self, client: &ClientInfo, query: Query) -> impl Future<Output = Result<QueryPage, String>> + Send {
        H::query(self, client, query)
    }
    fn request(
        &self,
        client: &ClientInfo,
        request: PacketRequest,
    ) -> impl Future<Output = Result<PacketReply, String>> + Send {
        H::request(self, client, request)
    }
    fn resume(&self, session: u64) -> impl Future<Output = Option<u32>> + Send {
        H::resume(self, session)
    }
}

/// Counters of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Notifications written to the client.
    pub notified: u64,
    /// Notifications skipped because they are larger than the client's `max_packet`.
    pub too_large: u64,
    /// Registrations stored and acknowledged.
    pub registered: u64,
    /// Registrations refused by [`ServerHandler::check_register`] (acknowledged, not stored).
    pub refused: u64,
}

#[derive(Debug, Default)]
struct Counters {
    notified: AtomicU64,
    too_large: AtomicU64,
    registered: AtomicU64,
    refused: AtomicU64,
}

/// A running server. Dropping it stops it like [`Server::shutdown`], without waiting.
pub struct Server {
    local_addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    accepting: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("local_addrs", &self.local_addrs).finish_non_exhaustive()
    }
}

/// Binds `addr` and serves clients over plain TCP with `handler` until [`Server::shutdown`].
pub async fn listen(
    addr: impl ToSocketAddrs,
    options: ServerOptions,
    handler: impl ServerHandler,
) -> std::io::Result<Server> {
    Server::from_listener(TcpListener::bind(addr).await?, options, handler)
}

/// Makes the stream a connection runs over from the accepted TCP connection: a TLS handshake,
/// say. It runs in the connection's own task, within [`ServerOptions::handshake_timeout`], so a
/// slow or failing handshake holds up no other client; a failure is logged with the peer's
/// address and counted in [`ServerStats::handshake_failed`].
///
/// Any `Fn(TcpStream) -> impl Future<Output = io::Result<S>>` accepts; with the `tls` feature,
/// `tls::Acceptor` does.
pub trait Accept: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static;

    fn accept(&self, stream: TcpStream) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl<F, Fut, S> Accept for F
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<S>> + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    type Stream = S;

    fn accept(&self, stream: TcpStream) -> impl Future<Output = std::io::Result<S>> + Send {
        self(stream)
    }
}

/// Plain TCP: the accepted connection is the stream.
async fn plain(stream: TcpStream) -> std::io::Result<TcpStream> {
    Ok(stream)
}

/// What every connection task and the `Server` handle share.
struct Shared {
    server_id: u64,
    /// Random per `Server`: tells clients that this is a different run of the server.
    server_session: u64,
    config: ServerConfig,
    notify_queue: usize,
    shutdown_timeout: Duration,
    handshake_timeout: Duration,
    init_timeout: Duration,
    status: watch::Sender<Status>,
    shutdown: watch::Sender<bool>,
    /// Next sequence number of each session. Its lock is held while a batch is stored, so an
    /// init reading it waits for registrations in progress (on another link of the client).
    sessions: Mutex<HashMap<u64, Arc<SessionCell>>>,
    /// Accepted links, by connection id, and who subscribed to what.
    connections: Mutex<Connections>,
    next_id: AtomicU64,
    max_connections: usize,
    stats: ServerCounters,
}

/// Server-wide counters; see [`ServerStats`].
#[derive(Debug, Default)]
struct ServerCounters {
    accepted: AtomicU64,
    over_limit: AtomicU64,
    notified: AtomicU64,
    refused: AtomicU64,
    too_slow: AtomicU64,
    bad_input: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    handshake_failed: AtomicU64,
}

/// Counters of a whole server since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// TCP connections accepted.
    pub accepted: u64,
    /// Connections refused or closed over [`ServerOptions::max_connections`].
    pub over_limit: u64,
    /// Notifications written to clients.
    pub notified: u64,
    /// Registrations refused by [`ServerHandler::check_register`].
    pub refused: u64,
    /// Clients closed for falling behind their notification queue.
    pub too_slow: u64,
    /// Links ended by bad bytes or a protocol error.
    pub bad_input: u64,
    /// Connections dropped because their handshake (see [`Accept`]) failed or timed out, or
    /// because no init was accepted within [`ServerOptions::init_timeout`]: clients that do not
    /// trust our certificate, plain TCP on a TLS port, scanners, idlers.
    pub handshake_failed: u64,
    /// Protocol bytes received from and sent to clients (inside TLS, where it is used).
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The accepted links and the index of their subscriptions, under one lock so that the index
/// always says what the entries' `info.subscriptions` say. Change them only through the methods.
#[derive(Default)]
struct Connections {
    entries: HashMap<u64, Entry>,
    index: SubscriptionIndex<u64>,
}

impl Connections {
    fn insert(&mut self, id: u64, entry: Entry) {
        self.index.insert(id, &entry.info.subscriptions);
        self.entries.insert(id, entry);
    }

    fn remove(&mut self, id: u64) {
        self.index.remove(id);
        self.entries.remove(&id);
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// A listed link's new `info` (its subscriptions changed); nothing if it is not listed.
    fn update(&mut self, id: u64, info: Arc<ClientInfo>) {
        if let Some(entry) = self.entries.get_mut(&id) {
            self.index.insert(id, &info.subscriptions);
            entry.info = info;
        }
    }
}

/// What the `Server` handle knows of an accepted link.
struct Entry {
    info: Arc<ClientInfo>,
    notify: mpsc::Sender<Arc<Event>>,
    /// Notifications ever queued to this connection (a position comparable with `settled`).
    queued: u64,
    settled: watch::Receiver<u64>,
    commands: mpsc::Sender<Command>,
    too_slow: Arc<watch::Sender<bool>>,
    counters: Arc<Counters>,
}

/// A poisoned lock only means a panic elsewhere; the maps stay consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A random id (sessions, the server session): std's per-process random hashing keys over a
/// counter and the time. Unpredictable enough to tell sessions apart; not a secret.
fn random_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}

impl Server {
    /// Serves clients accepted on `listener` over plain TCP with `handler`. Must be called within
    /// a tokio runtime.
    pub fn from_listener(
        listener: TcpListener,
        options: ServerOptions,
        handler: impl ServerHandler,
    ) -> std::io::Result<Self> {
        Self::from_listener_with(listener, options, handler, plain)
    }

    /// Serves clients accepted on `listener` with `handler`, each over the stream `accept` makes
    /// of its TCP connection (TLS: `tls::Acceptor`). [`ClientInfo::peer`] stays the TCP peer.
    /// Must be called within a tokio runtime.
    pub fn from_listener_with(
        listener: TcpListener,
        options: ServerOptions,
        handler: impl ServerHandler,
        accept: impl Accept,
    ) -> std::io::Result<Self> {
        Self::builder(options, handler).listener_with(listener, accept)?.start()
    }

    /// A server on several listeners (plain TCP and TLS, say) that share one set of clients,
    /// sessions and notifications. Must be called within a tokio runtime.
    pub fn builder<H: ServerHandler>(options: ServerOptions, handler: H) -> ServerBuilder<H> {
        let config = ServerConfig { auto_ack: false, ..options.config };
        let shared = Arc::new(Shared {
            server_id: options.server_id,
            server_session: random_id(),
            config,
            notify_queue: options.notify_queue.max(1),
            shutdown_timeout: options.shutdown_timeout,
            handshake_timeout: options.handshake_timeout,
            init_timeout: options.init_timeout,
            status: watch::Sender::new(options.status),
            shutdown: watch::Sender::new(false),
            sessions: Mutex::new(HashMap::new()),
            connections: Mutex::new(Connections::default()),
            next_id: AtomicU64::new(1),
            max_connections: options.max_connections.max(1),
            stats: ServerCounters::default(),
        });
        ServerBuilder { shared, handler: Arc::new(handler), local_addrs: Vec::new(), accepting: Vec::new() }
    }

    /// The address of the first listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs[0]
    }

    /// The addresses of every listener, in the order they were added.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The clients with an accepted link, by connection id.
    pub fn connections(&self) -> Vec<ClientInfo> {
        let mut all: Vec<ClientInfo> =
            lock(&self.shared.connections).entries.values().map(|e| (*e.info).clone()).collect();
        all.sort_by_key(|info| info.id);
        all
    }

    /// Counters of the whole server.
    pub fn stats(&self) -> ServerStats {
        let s = &self.shared.stats;
        ServerStats {
            accepted: s.accepted.load(Ordering::Relaxed),
            over_limit: s.over_limit.load(Ordering::Relaxed),
            notified: s.notified.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            too_slow: s.too_slow.load(Ordering::Relaxed),
            bad_input: s.bad_input.load(Ordering::Relaxed),
            handshake_failed: s.handshake_failed.load(Ordering::Relaxed),
            bytes_in: s.bytes_in.load(Ordering::Relaxed),
            bytes_out: s.bytes_out.load(Ordering::Relaxed),
        }
    }

    /// Counters of a connection with an accepted link.
    pub fn connection_stats(&self, connection: u64) -> Option<ConnectionStats> {
        lock(&self.shared.connections).entries.get(&connection).map(|entry| ConnectionStats {
            notified: entry.counters.notified.load(Ordering::Relaxed),
            too_large: entry.counters.too_large.load(Ordering::Relaxed),
            registered: entry.counters.registered.load(Ordering::Relaxed),
            refused: entry.counters.refused.load(Ordering::Relaxed),
        })
    }

    /// Notifies `events` to every client whose subscriptions match their type, whose `server_id`
    /// filter (if any) is the event's server, and whose `persisted` flag equals `persisted`. A
    /// client whose queue is full is closed as too slow. With `with_ack`, returns once each
    /// targeted client acknowledged these notifications (or its link ended).
    pub async fn notify_events<E: Notified>(&self, events: &[E], persisted: bool, with_ack: bool) {
        // Each event is shared once (copied into an `Arc` only if someone wants it).
        let mut shared_events: Vec<Option<Arc<Event>>> = vec![None; events.len()];
        let mut waits = Vec::new();
        {
            // One lock over the whole fan-out keeps each queue in the order of the calls.
            let mut connections = lock(&self.shared.connections);
            let Connections { entries, index } = &mut *connections;
            // (connection, event index) for every subscription match, grouped by connection with
            // its events in order: the index finds them without testing every pattern.
            let (mut targets, mut matched) = (Vec::new(), Vec::new());
            for (at, event) in events.iter().enumerate() {
                index.matching(&event.event().event_type, &mut matched);
                targets.extend(matched.iter().map(|&id| (id, at)));
            }
            targets.sort_unstable();
            for group in targets.chunk_by(|a, b| a.0 == b.0) {
                let Some(entry) = group.first().and_then(|&(id, _)| entries.get_mut(&id)) else { continue };
                if entry.info.persisted != persisted || *entry.too_slow.borrow() {
                    continue;
                }
                let mut queued_any = false;
                for &(_, at) in group {
                    let (Some(event), Some(slot)) = (events.get(at), shared_events.get_mut(at)) else { continue };
                    if !entry.info.takes_from(event.event().id.server) {
                        continue;
                    }
                    debug_assert!(entry.info.wants(event.event()), "the index matched what the subscriptions do not");
                    let event = slot.get_or_insert_with(|| event.share()).clone();
                    match entry.notify.try_send(event) {
                        Ok(()) => {
                            entry.queued += 1;
                            queued_any = true;
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            log::warn!(
                                "closing connection {} ({}, {}): too slow, {} notifications queued",
                                entry.info.id,
                                entry.info.client_name,
                                entry.info.peer,
                                self.shared.notify_queue
                            );
                            entry.too_slow.send_replace(true);
                            self.shared.stats.too_slow.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        // The task has ended; its entry goes with it.
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
                if with_ack && queued_any && !*entry.too_slow.borrow() {
                    waits.push((entry.settled.clone(), entry.queued));
                }
            }
        }
        for (mut settled, target) in waits {
            // An error means the connection ended: nothing more to wait for.
            let _ = settled.wait_for(|&s| s >= target).await;
        }
    }

    /// Announces `status` in every later `Accepted` and to every open link.
    pub async fn set_status(&self, status: Status) {
        self.shared.status.send_replace(status);
    }

    /// The status announced to clients now.
    pub fn status(&self) -> Status {
        *self.shared.status.borrow()
    }

    /// Sends an application request to the client of `connection` and waits for its answer. An
    /// unknown connection (or one that ends first) is [`CallError::Disconnected`].
    pub async fn request(
        &self,
        connection: u64,
        rq_type: u64,
        flags: u64,
        payload: Vec<u8>,
    ) -> Result<PacketReply, CallError> {
        let commands = lock(&self.shared.connections).entries.get(&connection).map(|entry| entry.commands.clone());
        let commands = commands.ok_or(CallError::Disconnected)?;
        let (reply, answer) = oneshot::channel();
        commands
            .send(Command::Request { rq_type, flags, payload, reply })
            .await
            .map_err(|_| CallError::Disconnected)?;
        answer.await.unwrap_or(Err(CallError::Disconnected))
    }

    /// Stops accepting and closes every connection gracefully: each waits for its handlers to
    /// answer, sends ERQ then EOF and waits for the client's EOF, all within
    /// [`ServerOptions::shutdown_timeout`], and is then dropped. Returns once all have ended (a
    /// `register` call in progress is waited for: it may be storing).
    /// Takes `&self`, so a server shared with its handler (to notify) can be shut down; a second
    /// call returns at once.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let accepting = std::mem::take(&mut *lock(&self.accepting));
        for task in accepting {
            if let Err(e) = task.await {
                log::error!("server accept task failed: {e}");
            }
        }
    }
}

/// Listeners for one [`Server`]; see [`Server::builder`]. Each starts accepting when added.
pub struct ServerBuilder<H> {
    shared: Arc<Shared>,
    handler: Arc<H>,
    local_addrs: Vec<SocketAddr>,
    accepting: Vec<JoinHandle<()>>,
}

impl<H: ServerHandler> ServerBuilder<H> {
    /// Accepts plain TCP clients on `listener`.
    pub fn listener(self, listener: TcpListener) -> std::io::Result<Self> {
        self.listener_with(listener, plain)
    }

    /// Accepts clients on `listener` over the stream `accept` makes of each connection.
    pub fn listener_with(self, listener: TcpListener, accept: impl Accept) -> std::io::Result<Self> {
        self.add(listener, accept, Framing::Stream)
    }

    /// Accepts serial lines carried over TCP on `listener` (a UART bridged to a socket, as QEMU's
    /// `-serial tcp:...` does): COBS + CRC framing, and the connection outlives its links. A
    /// corrupted frame, a timeout or a close ends the link, not the line: the device's next init
    /// on the same line starts a new one.
    pub fn serial_listener(self, listener: TcpListener) -> std::io::Result<Self> {
        self.add(listener, plain, Framing::Serial)
    }

    fn add(mut self, listener: TcpListener, accept: impl Accept, framing: Framing) -> std::io::Result<Self> {
        self.local_addrs.push(listener.local_addr()?);
        let task = accept_loop(listener, self.shared.clone(), self.handler.clone(), Arc::new(accept), framing);
        self.accepting.push(tokio::spawn(task));
        Ok(self)
    }

    /// The running server; an error without a listener (a server must listen somewhere).
    pub fn start(self) -> std::io::Result<Server> {
        if self.local_addrs.is_empty() {
            let no_listener = "a server needs at least one listener";
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, no_listener));
        }
        Ok(Server { local_addrs: self.local_addrs, shared: self.shared, accepting: Mutex::new(self.accepting) })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

async fn accept_loop<H: ServerHandler, A: Accept>(
    listener: TcpListener,
    shared: Arc<Shared>,
    handler: Arc<H>,
    accept: Arc<A>,
    framing: Framing,
) {
    let mut stop = shared.shutdown.subscribe();
    let mut tasks = JoinSet::new();
    while !*stop.borrow_and_update() {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    // Connections not yet admitted hold buffers too: past a tenth more than the
                    // limit, close at once (the others get a refusal with a reason at init).
                    if tasks.len() > shared.max_connections + shared.max_connections / 10 {
                        shared.stats.over_limit.fetch_add(1, Ordering::Relaxed);
                        log::warn!("connection from {peer} closed: {} connections open", tasks.len());
                        continue;
                    }
                    if let Err(e) = stream.set_nodelay(true) {
                        log::debug!("set_nodelay for {peer}: {e}");
                    }
                    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                    let (shared, handler, accept) = (shared.clone(), handler.clone(), accept.clone());
                    tasks.spawn(handshake_then_serve(stream, peer, id, shared, handler, accept, framing));
                }
                Err(e) => {
                    // Out of file descriptors, say: let connections end before trying again.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = tasks.join_next() => {
                if let Err(e) = done {
                    log::error!("connection task failed: {e}");
                }
            }
            _ = stop.changed() => {}
        }
    }
    drop(listener);
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            log::error!("connection task failed: {e}");
        }
    }
}

/// A command from the `Server` handle to one connection.
enum Command {
    Request { rq_type: u64, flags: u64, payload: Vec<u8>, reply: oneshot::Sender<Result<PacketReply, CallError>> },
}

/// Registrations for the connection's store worker, in the order the client sent them.
enum Work {
    Register {
        generation: u64,
        client: Arc<ClientInfo>,
        registration: Registration,
    },
    RegisterRequest {
        generation: u64,
        client: Arc<ClientInfo>,
        from: Incoming,
        events: Vec<RegisterEvent>,
    },
    /// A registration the handler does not allow, answered in its place among the others.
    Refused {
        generation: u64,
        seq: u32,
        reason: String,
    },
}

/// What the store worker and the request handlers report back to the connection task.
enum Outcome {
    Stored { generation: u64, count: u32 },
    Refused { generation: u64, seq: u32, reason: String },
    StoreFailed { generation: u64, reason: String },
    Answer { generation: u64, from: Incoming, answer: Answer },
}

enum Answer {
    Query(Result<QueryPage, String>),
    Registered(Result<Vec<Event>, String>),
    App(Result<PacketReply, String>),
}

/// An init, owned.
struct Init {
    client_name: String,
    credential: Option<Vec<u8>>,
    subscriptions: Vec<EventPath>,
    server_id: Option<u64>,
    persisted: bool,
    session: Option<u64>,
    first_seq: u32,
    keepalive_ms: u32,
    max_packet: u32,
}

impl From<&InitRequest<'_>> for Init {
    fn from(request: &InitRequest<'_>) -> Self {
        Init {
            client_name: request.client_name.into(),
            credential: request.credential.map(<[u8]>::to_vec),
            subscriptions: request.subscriptions.iter().map(EventPath::from).collect(),
            server_id: request.server_id,
            persisted: request.persisted,
            session: request.session,
            first_seq: request.first_seq,
            keepalive_ms: request.keepalive_ms,
            max_packet: request.limits.max_packet,
        }
    }
}

/// A machine event, owned so the machine is free again.
enum Owned {
    Init(Incoming, Init),
    Subscribe(Incoming, Vec<EventPath>),
    Register(u32, RegisterEvent),
    RegisterRequest(Incoming, Vec<RegisterEvent>),
    Query(Incoming, Query),
    Request(Incoming, PacketRequest),
    Acked(u32),
    Answer(RequestId, Result<PacketReply, CallError>),
    Ended(LinkEnd),
    Other,
}

fn own(event: ServerEvent<'_>) -> Owned {
    match event {
        ServerEvent::Init { from, request } => Owned::Init(from, Init::from(&request)),
        ServerEvent::Subscribe { from, subscriptions } => {
            Owned::Subscribe(from, subscriptions.iter().map(EventPath::from).collect())
        }
        ServerEvent::Register { seq, event } => Owned::Register(seq, event.into()),
        ServerEvent::RegisterRequest { from, events } => {
            Owned::RegisterRequest(from, events.iter().map(RegisterEvent::from).collect())
        }
        ServerEvent::Query { from, params } => Owned::Query(from, Query::from(&params)),
        ServerEvent::Request { from, rq_type, flags, payload } => {
            Owned::Request(from, PacketRequest { rq_type, flags, payload: payload.to_vec() })
        }
        ServerEvent::Acked { count } => Owned::Acked(count),
        ServerEvent::Response { id, reply: Reply::App { flags, payload } } => {
            Owned::Answer(id, Ok(PacketReply::new(flags, payload)))
        }
        ServerEvent::Response { .. } => Owned::Other,
        ServerEvent::RequestFailed { id, error } => Owned::Answer(id, Err(error.into())),
        ServerEvent::LinkEnded(end) => Owned::Ended(end),
    }
}

/// What woke the connection task.
enum Woke {
    Link(Result<Option<Owned>, LinkError>),
    Notify(Arc<Event>),
    Outcome(Outcome),
    Command(Command),
    Status,
    Close(Closing, String),
    Deadline,
    /// No init accepted in time.
    InitTimeout,
}

/// What a client hears when the server shuts down.
const SHUTTING_DOWN: &str = "the server is shutting down";

/// How a connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Shutting down: let handlers answer and registrations be stored, then close.
    Drain,
    /// Too slow, or the store failed: close at once.
    Now,
}

/// Which notifications are settled (acknowledged, skipped or dropped with the link), counted in
/// queue order so that `notify_events(with_ack)` knows when its own are done.
struct Settle {
    settled: u64,
    /// One entry per notification in flight: how many skipped ones follow it in the queue.
    in_flight: VecDeque<u64>,
    tx: watch::Sender<u64>,
}

impl Settle {
    fn sent(&mut self) {
        self.in_flight.push_back(0);
    }

    fn skipped(&mut self) {
        match self.in_flight.back_mut() {
            Some(after) => *after += 1,
            None => self.advance(1),
        }
    }

    fn acked(&mut self, count: u32) {
        let mut done = 0;
        for _ in 0..count {
            match self.in_flight.pop_front() {
                Some(after) => done += 1 + after,
                None => break,
            }
        }
        self.advance(done);
    }

    /// The link is gone: whatever was in flight will never be acknowledged.
    fn forget(&mut self) {
        let done = self.in_flight.drain(..).map(|after| 1 + after).sum();
        self.advance(done);
    }

    fn advance(&mut self, done: u64) {
        if done > 0 {
            self.settled += done;
            self.tx.send_replace(self.settled);
        }
    }
}

/// Makes the connection's stream with `accept`, then serves it. Shutting down abandons a
/// handshake in progress.
async fn handshake_then_serve<H: ServerHandler, A: Accept>(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    handler: Arc<H>,
    accept: Arc<A>,
    framing: Framing,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let handshake = tokio::time::timeout(shared.handshake_timeout, accept.accept(stream));
    let made = tokio::select! {
        made = handshake => made,
        _ = shutdown.wait_for(|stop| *stop) => return,
    };
    let failure = match made {
        Ok(Ok(stream)) => {
            let counted = Counted { inner: stream, shared: shared.clone() };
            return serve_connection(Box::new(counted), peer, id, shared, handler, framing).await;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("none within {:?}", shared.handshake_timeout),
    };
    shared.stats.handshake_failed.fetch_add(1, Ordering::Relaxed);
    log::info!("connection {id} from {peer}: handshake failed: {failure}");
}

/// A client's stream that adds what passes through it to the server's byte counters (after TLS:
/// the protocol's own bytes).
struct Counted<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before) as u64;
        self.shared.stats.bytes_in.fetch_add(read, Ordering::Relaxed);
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(written)) = &polled {
            self.shared.stats.bytes_out.fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve_connection<H: ServerHandler>(
    stream: link::Stream,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    handler: Arc<H>,
    framing: Framing,
) {
    let (mut rx, mut tx) = link::buffers(framing, shared.config.max_packet as usize);
    let tx_capacity = tx.len();
    let clock = TokioClock::new();
    let conn = Machine::new(rivulet_core::driver::Clock::now(&clock), shared.config);
    let driver =
        Driver::new(FromTokio::new(stream), LineDecoder::new(framing, &mut rx), FrameWriter::new(&mut tx, framing));
    let window = usize::from(shared.config.window).max(1);
    let (work, work_rx) = mpsc::channel(window + MAX_REQUESTS_HANDLED);
    let (outcomes_tx, outcomes) = mpsc::channel(window + MAX_REQUESTS_HANDLED + PIPELINE);
    let worker = tokio::spawn(store_worker(handler.clone(), shared.clone(), work_rx, outcomes_tx.clone()));
    let (notify_tx, notify_rx) = mpsc::channel(shared.notify_queue);
    let (commands_tx, commands_rx) = mpsc::channel(COMMANDS);
    let too_slow = Arc::new(watch::Sender::new(false));
    let shared_init_timeout = shared.init_timeout;
    let mut task = Task {
        id,
        peer,
        status_rx: shared.status.subscribe(),
        shutdown_rx: shared.shutdown.subscribe(),
        too_slow_rx: too_slow.subscribe(),
        too_slow,
        shared,
        handler,
        clock,
        conn,
        driver,
        generation: 0,
        client: None,
        peer_max_packet: 0,
        notify_tx,
        notify_rx,
        settle: Settle { settled: 0, in_flight: VecDeque::new(), tx: watch::Sender::new(0) },
        commands_tx,
        commands_rx,
        calls: HashMap::new(),
        work,
        outcomes_tx,
        outcomes,
        worker,
        handling: 0,
        unstored: 0,
        closing: None,
        close_sent: false,
        close_reason: None,
        deadline: None,
        counters: Arc::new(Counters::default()),
        tx_capacity,
        scratch: Vec::new(),
        serial: framing == Framing::Serial,
        init_by: (framing == Framing::Stream).then(|| tokio::time::Instant::now() + shared_init_timeout),
    };
    let result = task.run().await;
    task.finish(result).await;
}

/// One connection: its machine, driver and everything in flight on it.
struct Task<'b, H> {
    id: u64,
    peer: SocketAddr,
    shared: Arc<Shared>,
    handler: Arc<H>,
    clock: TokioClock,
    conn: Machine,
    driver: TokioDriver<'b, link::Stream>,
    /// Counts links (inits) on this connection, so answers meant for an earlier one are dropped.
    generation: u64,
    /// The client of the accepted link.
    client: Option<Arc<ClientInfo>>,
    /// The largest packet the client takes.
    peer_max_packet: u32,
    /// Kept so the queue never reads as closed while the task runs.
    notify_tx: mpsc::Sender<Arc<Event>>,
    notify_rx: mpsc::Receiver<Arc<Event>>,
    settle: Settle,
    commands_tx: mpsc::Sender<Command>,
    commands_rx: mpsc::Receiver<Command>,
    calls: HashMap<RequestId, oneshot::Sender<Result<PacketReply, CallError>>>,
    work: mpsc::Sender<Work>,
    outcomes_tx: mpsc::Sender<Outcome>,
    outcomes: mpsc::Receiver<Outcome>,
    worker: JoinHandle<()>,
    /// Client requests being handled.
    handling: usize,
    /// Registrations of the current link handed to the worker and not yet stored.
    unstored: u32,
    status_rx: watch::Receiver<Status>,
    shutdown_rx: watch::Receiver<bool>,
    too_slow: Arc<watch::Sender<bool>>,
    too_slow_rx: watch::Receiver<bool>,
    closing: Option<Closing>,
    close_sent: bool,
    /// Told to the client when the close goes out.
    close_reason: Option<String>,
    /// When a closing connection is dropped even if the client has not closed.
    deadline: Option<tokio::time::Instant>,
    counters: Arc<Counters>,
    tx_capacity: usize,
    /// Where query answers are tried for size.
    scratch: Vec<u8>,
    /// A serial line: links end, the line stays (see [`ServerBuilder::serial_listener`]).
    serial: bool,
    /// When a stream connection without an accepted init is dropped; `None` once one is accepted.
    init_by: Option<tokio::time::Instant>,
}

impl<H: ServerHandler> Task<'_, H> {
    async fn run(&mut self) -> Result<(), LinkError> {
        if *self.shutdown_rx.borrow_and_update() {
            self.begin_close(Closing::Drain, SHUTTING_DOWN.into());
        }
        loop {
            let drained = self.handling == 0 && self.unstored == 0;
            if !self.close_sent && (self.closing == Some(Closing::Now) || (self.closing.is_some() && drained)) {
                self.close_sent = true;
                let reason = self.close_reason.take().unwrap_or_default();
                // Before the link is open (or once closing) this only closes.
                match write_with_room(&mut self.driver, |out| self.conn.close_with_reason(&reason, out)).await {
                    Err(WriteError::Link(e)) => return Err(e),
                    Err(_) => self.conn.close(),
                    Ok(()) => {}
                }
            }
            let can_notify = self.client.is_some() && self.closing.is_none() && self.conn.credit() > 0;
            let can_call = self.calls.len() < INFLIGHT - 1;
            let open = self.closing.is_none();
            let deadline = self.deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let woke = tokio::select! {
                step = self.driver.step(&mut self.conn, &self.clock) => Woke::Link(step.map(|e| e.map(own))),
                Some(event) = self.notify_rx.recv(), if can_notify => Woke::Notify(event),
                Some(outcome) = self.outcomes.recv() => Woke::Outcome(outcome),
                Some(command) = self.commands_rx.recv(), if can_call => Woke::Command(command),
                Ok(()) = self.status_rx.changed() => Woke::Status,
                Ok(()) = self.shutdown_rx.changed(), if open => Woke::Close(Closing::Drain, SHUTTING_DOWN.into()),
                Ok(()) = self.too_slow_rx.changed(), if open => Woke::Close(Closing::Now, format!(
                    "fell {} notifications behind; the server closes clients that do not keep up",
                    self.shared.notify_queue
                )),
                () = tokio::time::sleep_until(deadline), if !open => Woke::Deadline,
                () = tokio::time::sleep_until(self.init_by.unwrap_or(deadline)), if self.init_by.is_some() => Woke::InitTimeout,
            };
            match woke {
                Woke::Link(Ok(Some(Owned::Ended(end)))) => {
                    log::debug!("connection {} from {}: link ended ({end:?})", self.id, self.peer);
                    if !self.serial || self.closing == Some(Closing::Drain) {
                        return Ok(());
                    }
                    self.restart_line().await;
                }
                Woke::Link(Ok(Some(event))) => self.on_event(event).await?,
                Woke::Link(Ok(None)) => {}
                Woke::Link(Err(e @ (DriverError::Frame(_) | DriverError::Session(_)))) if self.serial => {
                    // A bad frame or message on a serial line costs the link, not the line.
                    self.shared.stats.bad_input.fetch_add(1, Ordering::Relaxed);
                    log::info!(
                        "serial line {} from {}: link ended by bad input ({e}); waiting for a new init",
                        self.id,
                        self.peer
                    );
                    self.restart_line().await;
                }
                Woke::Link(Err(e)) => return Err(e),
                Woke::Notify(event) => {
                    self.notify(event).await?;
                    // Send what else is queued while the client's window lasts.
                    while self.conn.credit() > 0 {
                        match self.notify_rx.try_recv() {
                            Ok(event) => self.notify(event).await?,
                            Err(_) => break,
                        }
                    }
                }
                Woke::Outcome(outcome) => self.on_outcome(outcome).await?,
                Woke::Command(command) => self.on_command(command).await?,
                Woke::Status => {
                    let status = *self.status_rx.borrow_and_update();
                    if self.client.is_some() {
                        match write_with_room(&mut self.driver, |out| self.conn.set_status(status, out)).await {
                            Err(WriteError::Link(e)) => return Err(e),
                            Err(e) => log::debug!("connection {}: status not sent: {e:?}", self.id),
                            Ok(()) => {}
                        }
                    }
                }
                Woke::Close(why, reason) => self.begin_close(why, reason),
                Woke::Deadline => {
                    log::info!("connection {} from {}: dropped, the client did not close in time", self.id, self.peer);
                    return Ok(());
                }
                Woke::InitTimeout => {
                    self.shared.stats.handshake_failed.fetch_add(1, Ordering::Relaxed);
                    log::info!("connection {} from {}: dropped, no init accepted in time", self.id, self.peer);
                    return Ok(());
                }
            }
        }
    }

    /// Starts closing: at once, or (shutting down) once handlers answered and registrations are
    /// stored. Either way the connection is dropped at the deadline.
    /// The close itself (with `reason` told to the client) goes out at the top of the loop.
    fn begin_close(&mut self, why: Closing, reason: String) {
        if self.closing.is_none() {
            self.deadline = Some(tokio::time::Instant::now() + self.shared.shutdown_timeout);
            self.close_reason = Some(reason);
        }
        if self.closing != Some(Closing::Now) {
            self.closing = Some(why);
        }
    }

    /// A serial line's link is over: forget it, keep the line, and wait for the device's next
    /// init on it. Answers meant for the old link are dropped by generation.
    async fn restart_line(&mut self) {
        self.end_link().await;
        self.generation += 1;
        self.unstored = 0;
        self.peer_max_packet = 0;
        let now = rivulet_core::driver::Clock::now(&self.clock);
        self.conn = Machine::new(now, self.shared.config);
        self.driver.reset_link();
        self.closing = None;
        self.close_sent = false;
        self.close_reason = None;
        self.deadline = None;
        self.too_slow.send_replace(false);
        self.too_slow_rx.borrow_and_update();
    }

    /// Why a new request of the client is not taken, if it is not.
    fn busy(&self) -> Option<&'static str> {
        if self.closing.is_some() {
            Some("the server is closing this connection")
        } else if self.handling >= MAX_REQUESTS_HANDLED {
            Some("too many requests in flight")
        } else {
            None
        }
    }

    async fn on_event(&mut self, event: Owned) -> Result<(), LinkError> {
        match event {
            Owned::Init(from, init) => self.on_init(from, init).await,
            Owned::Subscribe(from, patterns) => self.on_subscribe(from, patterns).await,
            Owned::Register(seq, event) => {
                self.on_register(seq, event);
                Ok(())
            }
            Owned::RegisterRequest(from, events) => {
                let client = self.client.clone();
                match (self.busy(), client) {
                    (Some(reason), _) => self.refuse(from, reason).await,
                    (None, None) => self.refuse(from, "not connected").await,
                    (None, Some(client)) => {
                        let refusal = events.iter().find_map(|e| self.handler.check_register(&client, e).err());
                        if let Some(reason) = refusal {
                            return self.refuse(from, &reason).await;
                        }
                        let work = Work::RegisterRequest { generation: self.generation, client, from, events };
                        match self.work.try_send(work) {
                            Ok(()) => {
                                self.handling += 1;
                                Ok(())
                            }
                            Err(_) => self.refuse(from, "too many requests in flight").await,
                        }
                    }
                }
            }
            Owned::Query(from, query) => {
                let handler = self.handler.clone();
                self.spawn_handler(from, move |client| async move {
                    Answer::Query(guarded(async move { handler.query(&client, query).await }).await)
                })
                .await
            }
            Owned::Request(from, request) => {
                let handler = self.handler.clone();
                self.spawn_handler(from, move |client| async move {
                    Answer::App(guarded(async move { handler.request(&client, request).await }).await)
                })
                .await
            }
            Owned::Acked(count) => {
                self.settle.acked(count);
                Ok(())
            }
            Owned::Answer(id, answer) => {
                if let Some(reply) = self.calls.remove(&id) {
                    let _ = reply.send(answer);
                }
                Ok(())
            }
            Owned::Ended(_) | Owned::Other => Ok(()),
        }
    }

    /// Runs a handler for a client request in its own task; its answer comes back as an outcome.
    async fn spawn_handler<F, Fut>(&mut self, from: Incoming, call: F) -> Result<(), LinkError>
    where
        F: FnOnce(Arc<ClientInfo>) -> Fut,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        let client = self.client.clone();
        let client = match (self.busy(), client) {
            (Some(reason), _) => return self.refuse(from, reason).await,
            (None, None) => return self.refuse(from, "not connected").await,
            (None, Some(client)) => client,
        };
        self.handling += 1;
        let (outcomes, generation, answering) = (self.outcomes_tx.clone(), self.generation, call(client));
        tokio::spawn(async move {
            let answer = answering.await;
            let _ = outcomes.send(Outcome::Answer { generation, from, answer }).await;
        });
        Ok(())
    }

    async fn on_init(&mut self, from: Incoming, init: Init) -> Result<(), LinkError> {
        if self.client.is_some() {
            // The client started over on this connection: the machine already dropped the old link.
            self.end_link().await;
        }
        self.generation += 1;
        self.unstored = 0;
        if self.closing.is_some() {
            return self.refuse(from, "the server is closing this connection").await;
        }
        if let Some(bad) = init.subscriptions.iter().find(|p| p.check_pattern().is_err()) {
            let reason = format!("invalid subscription {bad}: '*' may only be the last segment");
            return self.refuse(from, &reason).await;
        }
        // This connection's earlier link, if any, is off the list by now. An early refusal: the
        // limit itself is enforced where the link is listed, after the handler admitted it.
        if lock(&self.shared.connections).len() >= self.shared.max_connections {
            return self.refuse_full(from).await;
        }
        let (session, next_seq) = self.resolve_session(init.session, init.first_seq).await;
        let client = Arc::new(ClientInfo {
            id: self.id,
            client_name: init.client_name,
            peer: self.peer,
            session,
            subscriptions: init.subscriptions,
            server_id: init.server_id,
            persisted: init.persisted,
            credential: init.credential,
            max_packet: init.max_packet,
        });
        let handler = self.handler.clone();
        let asking = client.clone();
        let admission = tokio::spawn(async move { handler.connect(&asking).await })
            .await
            .unwrap_or_else(|_| Admission::Refuse(HANDLER_PANICKED.into()));
        match admission {
            Admission::Accept => {
                // Counted and listed under one lock: inits admitted at the same time cannot all
                // pass the check above and together go over the limit.
                if !self.list(client.clone()) {
                    return self.refuse_full(from).await;
                }
                let keepalive_ms = match init.keepalive_ms {
                    0 => u32::try_from(self.shared.config.keepalive.as_millis()).unwrap_or(u32::MAX),
                    proposed => proposed,
                };
                let accepted = Accepted {
                    version: PROTOCOL_VERSION,
                    capabilities: 0,
                    status: *self.status_rx.borrow_and_update(),
                    server_id: self.shared.server_id,
                    server_session: self.shared.server_session,
                    session,
                    next_seq,
                    limits: self.conn.limits(),
                    keepalive_ms,
                };
                match write_with_room(&mut self.driver, |out| self.conn.accept(from, &accepted, out)).await {
                    Ok(()) => {}
                    Err(WriteError::Link(e)) => return Err(e),
                    Err(e) => {
                        log::warn!("connection {}: accept not sent: {e:?}", self.id);
                        self.unlist();
                        self.begin_close(Closing::Now, "the server could not answer the init".into());
                        return Ok(());
                    }
                }
                lock(&self.shared.sessions).entry(session).or_insert_with(|| SessionCell::new(next_seq));
                self.peer_max_packet = init.max_packet;
                log::info!(
                    "connection {} from {}: {} accepted, session {session:#x} at seq {next_seq}",
                    self.id,
                    self.peer,
                    client.client_name
                );
                self.client = Some(client);
                self.init_by = None;
                Ok(())
            }
            Admission::Refuse(reason) => {
                log::info!("connection {} from {}: {} refused: {reason}", self.id, self.peer, client.client_name);
                self.refuse(from, &reason).await
            }
            Admission::Challenge(nonce) => {
                match write_with_room(&mut self.driver, |out| self.conn.challenge(from, &nonce, out)).await {
                    Err(WriteError::Link(e)) => Err(e),
                    Err(e) => {
                        log::warn!("connection {}: challenge not sent: {e:?}", self.id);
                        Ok(())
                    }
                    Ok(()) => Ok(()),
                }
            }
        }
    }

    /// The session an init continues and its next sequence number: a known one (waiting for
    /// registrations of it being stored right now), one the handler resumes, or a new one.
    async fn resolve_session(&self, requested: Option<u64>, first_seq: u32) -> (u64, u32) {
        if let Some(session) = requested.filter(|&s| s != 0) {
            let known = lock(&self.shared.sessions).get(&session).cloned();
            if let Some(cell) = known {
                // What is durable: the client sends the rest again, and registrations taken but
                // not yet durable are acknowledged only once they are (see `store_worker`).
                return (session, cell.durable());
            }
            let handler = self.handler.clone();
            let resumed = tokio::spawn(async move { handler.resume(session).await }).await.unwrap_or_else(|_| {
                log::warn!("resume handler panicked; session {session:#x} starts over");
                None
            });
            if let Some(next_seq) = resumed {
                let cell =
                    lock(&self.shared.sessions).entry(session).or_insert_with(|| SessionCell::new(next_seq)).clone();
                return (session, cell.durable());
            }
        }
        let sessions = lock(&self.shared.sessions);
        loop {
            let session = random_id();
            if session != 0 && !sessions.contains_key(&session) {
                return (session, first_seq);
            }
        }
    }

    /// Refuses an init because the server has `max_connections` clients; counted.
    async fn refuse_full(&mut self, from: Incoming) -> Result<(), LinkError> {
        self.shared.stats.over_limit.fetch_add(1, Ordering::Relaxed);
        let reason = format!("the server is full ({} clients connected); try again later", self.shared.max_connections);
        self.refuse(from, &reason).await
    }

    /// Makes the accepted link visible to the `Server` handle (notifications, requests), if the
    /// server has room for another client; `false` when it has not.
    fn list(&mut self, client: Arc<ClientInfo>) -> bool {
        let entry = Entry {
            info: client,
            notify: self.notify_tx.clone(),
            queued: self.settle.settled,
            settled: self.settle.tx.subscribe(),
            commands: self.commands_tx.clone(),
            too_slow: self.too_slow.clone(),
            counters: self.counters.clone(),
        };
        let mut connections = lock(&self.shared.connections);
        if connections.len() >= self.shared.max_connections {
            return false;
        }
        connections.insert(self.id, entry);
        true
    }

    /// Takes the link off the list, and settles and fails everything meant for it.
    fn unlist(&mut self) {
        lock(&self.shared.connections).remove(self.id);
        // Nothing is queued any more (the entry is gone): what is left will never be acked.
        self.settle.forget();
        while self.notify_rx.try_recv().is_ok() {
            self.settle.skipped();
        }
        for (_, reply) in self.calls.drain() {
            let _ = reply.send(Err(CallError::Disconnected));
        }
    }

    async fn end_link(&mut self) {
        self.unlist();
        self.disconnect().await;
    }

    async fn disconnect(&mut self) {
        if let Some(client) = self.client.take() {
            let handler = self.handler.clone();
            if tokio::spawn(async move { handler.disconnect(&client).await }).await.is_err() {
                log::warn!("connection {}: disconnect handler panicked", self.id);
            }
        }
    }

    async fn on_subscribe(&mut self, from: Incoming, patterns: Vec<EventPath>) -> Result<(), LinkError> {
        if let Some(bad) = patterns.iter().find(|p| p.check_pattern().is_err()) {
            let reason = format!("invalid subscription {bad}: '*' may only be the last segment");
            return self.refuse(from, &reason).await;
        }
        let Some(client) = self.client.clone() else { return self.refuse(from, "not connected").await };
        let (handler, asking, wanted) = (self.handler.clone(), client.clone(), patterns.clone());
        let allowed = guarded(async move { handler.subscribe(&asking, &wanted).await }).await;
        if let Err(reason) = allowed {
            log::info!("connection {}: subscriptions of {} refused: {reason}", self.id, client.client_name);
            return self.refuse(from, &reason).await;
        }
        // Listed first, so that events notified after the client sees the answer match.
        let client = Arc::new(ClientInfo { subscriptions: patterns, ..(*client).clone() });
        lock(&self.shared.connections).update(self.id, client.clone());
        self.client = Some(client);
        self.answer(from, |conn, out| conn.respond_raw(from, 0, &[], out)).await
    }

    fn on_register(&mut self, seq: u32, event: RegisterEvent) {
        let Some(client) = self.client.clone() else { return };
        let work = match self.handler.check_register(&client, &event) {
            Ok(()) => {
                let registration = Registration { session: client.session, seq: Some(seq), event };
                Work::Register { generation: self.generation, client, registration }
            }
            Err(reason) => {
                log::info!(
                    "connection {}: {} may not register {}: {reason}",
                    self.id,
                    client.client_name,
                    event.event_type
                );
                Work::Refused { generation: self.generation, seq, reason }
            }
        };
        match self.work.try_send(work) {
            Ok(()) => self.unstored += 1,
            Err(_) => {
                // Cannot happen: the machine holds the client to the window the queue is sized for.
                log::warn!("connection {}: registration queue full; closing", self.id);
                self.begin_close(Closing::Now, "registration queue full".into());
            }
        }
    }

    async fn on_outcome(&mut self, outcome: Outcome) -> Result<(), LinkError> {
        match outcome {
            Outcome::Stored { generation, count } if generation == self.generation => {
                self.unstored = self.unstored.saturating_sub(count);
                self.conn.acknowledge(count);
                self.counters.registered.fetch_add(u64::from(count), Ordering::Relaxed);
            }
            Outcome::StoreFailed { generation, reason } if generation == self.generation => {
                log::warn!("connection {} from {}: register failed, closing: {reason}", self.id, self.peer);
                self.unstored = 0;
                let reason = format!("the server could not store registrations ({reason}); send them again");
                self.begin_close(Closing::Now, reason);
            }
            Outcome::Refused { generation, seq, reason } if generation == self.generation => {
                self.unstored = self.unstored.saturating_sub(1);
                let written =
                    write_with_room(&mut self.driver, |out| self.conn.refuse_registration(seq, &reason, out)).await;
                match written {
                    Err(WriteError::Link(e)) => return Err(e),
                    Err(e) => log::debug!("connection {}: refusal of seq {seq} not sent: {e:?}", self.id),
                    Ok(()) => {}
                }
                self.conn.acknowledge(1);
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                self.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Stored { .. } | Outcome::StoreFailed { .. } | Outcome::Refused { .. } => {}
            Outcome::Answer { generation, from, answer } => {
                self.handling = self.handling.saturating_sub(1);
                if generation == self.generation {
                    return self.write_answer(from, answer).await;
                }
            }
        }
        Ok(())
    }

    async fn write_answer(&mut self, from: Incoming, answer: Answer) -> Result<(), LinkError> {
        match answer {
            Answer::Query(Ok(page)) => self.respond_page(from, page).await,
            Answer::Registered(Ok(events)) => {
                let mut buf = Vec::new();
                let list: EventList<'_> = pack_list(events.iter().map(Event::as_ref), &mut buf);
                let written = write_with_room(&mut self.driver, |out| self.conn.respond(from, &list, out)).await;
                self.after_respond(from, written, "registered events larger than max_packet").await
            }
            Answer::App(Ok(reply)) => {
                let written = write_with_room(&mut self.driver, |out| {
                    self.conn.respond_raw(from, reply.flags, &reply.payload, out)
                })
                .await;
                self.after_respond(from, written, "response larger than max_packet").await
            }
            Answer::Query(Err(reason)) | Answer::Registered(Err(reason)) | Answer::App(Err(reason)) => {
                self.refuse(from, &reason).await
            }
        }
    }

    /// A response that does not fit the client is refused instead: the client still gets an answer.
    async fn after_respond(
        &mut self,
        from: Incoming,
        written: Result<(), WriteError>,
        too_large: &str,
    ) -> Result<(), LinkError> {
        match written {
            Ok(()) => Ok(()),
            Err(WriteError::Link(e)) => Err(e),
            Err(WriteError::TooLarge | WriteError::Session(session::Error::TooLarge)) => {
                log::warn!("connection {}: {too_large}", self.id);
                self.refuse(from, too_large).await
            }
            Err(WriteError::Session(e)) => {
                log::debug!("connection {}: answer to tag {} dropped: {e}", self.id, from.tag);
                Ok(())
            }
        }
    }

    /// Answers a query with as much of the page as the client can receive.
    async fn respond_page(&mut self, from: Incoming, page: QueryPage) -> Result<(), LinkError> {
        let events = &page.events;
        let mut buf = Vec::new();
        let whole = QueryResult {
            events: pack_list(events.iter().map(Event::as_ref), &mut buf),
            more_follows: page.more_follows,
        };
        let written = write_with_room(&mut self.driver, |out| self.conn.respond(from, &whole, out)).await;
        match written {
            Ok(()) => return Ok(()),
            Err(WriteError::Link(e)) => return Err(e),
            Err(WriteError::TooLarge | WriteError::Session(session::Error::TooLarge)) => {}
            Err(WriteError::Session(e)) => {
                log::debug!("connection {}: query answer dropped: {e}", self.id);
                return Ok(());
            }
        }
        // Too large: find the longest prefix that fits, trying sizes on a scratch buffer as large
        // as the transmit buffer (`respond` changes nothing in the machine).
        if self.scratch.len() != self.tx_capacity {
            self.scratch = vec![0; self.tx_capacity];
        }
        let (mut fits, mut too_long) = (0, events.len());
        while too_long - fits > 1 {
            let n = fits + (too_long - fits) / 2;
            let cut = QueryResult {
                events: pack_list(events.iter().take(n).map(Event::as_ref), &mut buf),
                more_follows: true,
            };
            let mut probe = FrameWriter::new(&mut self.scratch, Framing::Stream);
            if self.conn.respond(from, &cut, &mut probe).is_ok() {
                fits = n;
            } else {
                too_long = n;
            }
        }
        if fits == 0 {
            log::warn!("connection {}: a queried event is larger than the client's max_packet", self.id);
            return self.refuse(from, "event larger than max_packet").await;
        }
        let cut = QueryResult {
            events: pack_list(events.iter().take(fits).map(Event::as_ref), &mut buf),
            more_follows: true,
        };
        let written = write_with_room(&mut self.driver, |out| self.conn.respond(from, &cut, out)).await;
        self.after_respond(from, written, "query page larger than max_packet").await
    }

    async fn on_command(&mut self, command: Command) -> Result<(), LinkError> {
        let Command::Request { rq_type, flags, payload, reply } = command;
        // The core does not check our requests against the client's max_packet: a request that
        // large would end the client's link.
        if self.peer_max_packet > 0 && payload.len() >= self.peer_max_packet as usize {
            let _ = reply.send(Err(CallError::TooLarge));
            return Ok(());
        }
        let now = rivulet_core::driver::Clock::now(&self.clock);
        let sent = write_with_room(&mut self.driver, |out| self.conn.request(now, rq_type, flags, &payload, out)).await;
        match sent {
            Ok(id) => {
                self.calls.insert(id, reply);
            }
            Err(WriteError::Link(e)) => {
                let _ = reply.send(Err(CallError::Disconnected));
                return Err(e);
            }
            Err(WriteError::TooLarge | WriteError::Session(session::Error::Wire(_))) => {
                let _ = reply.send(Err(CallError::TooLarge));
            }
            Err(WriteError::Session(_)) => {
                let _ = reply.send(Err(CallError::Disconnected));
            }
        }
        Ok(())
    }

    async fn notify(&mut self, event: Arc<Event>) -> Result<(), LinkError> {
        match write_with_room(&mut self.driver, |out| self.conn.notify(&Event::as_ref(&event), out)).await {
            Ok(()) => {
                self.settle.sent();
                self.counters.notified.fetch_add(1, Ordering::Relaxed);
                self.shared.stats.notified.fetch_add(1, Ordering::Relaxed);
            }
            Err(WriteError::Link(e)) => return Err(e),
            Err(WriteError::TooLarge | WriteError::Session(session::Error::TooLarge)) => {
                log::warn!(
                    "connection {}: event {:?} ({}) is larger than the client's max_packet; not notified",
                    self.id,
                    event.id,
                    event.event_type
                );
                self.counters.too_large.fetch_add(1, Ordering::Relaxed);
                self.settle.skipped();
            }
            Err(WriteError::Session(e)) => {
                log::debug!("connection {}: notification dropped: {e}", self.id);
                self.settle.skipped();
            }
        }
        Ok(())
    }

    async fn refuse(&mut self, from: Incoming, reason: &str) -> Result<(), LinkError> {
        self.answer(from, |conn, out| conn.refuse(from, reason, out)).await
    }

    /// Writes an answer; only a broken link is an error. An answer the link no longer takes (it
    /// is closing) is dropped.
    async fn answer(
        &mut self,
        from: Incoming,
        mut write: impl FnMut(&mut Machine, &mut FrameWriter<'_>) -> Result<(), session::Error>,
    ) -> Result<(), LinkError> {
        match write_with_room(&mut self.driver, |out| write(&mut self.conn, out)).await {
            Ok(()) => Ok(()),
            Err(WriteError::Link(e)) => Err(e),
            Err(e) => {
                log::debug!("connection {}: answer to tag {} dropped: {e:?}", self.id, from.tag);
                Ok(())
            }
        }
    }

    async fn finish(mut self, result: Result<(), LinkError>) {
        match &result {
            Ok(()) => log::debug!("connection {} from {} closed", self.id, self.peer),
            // The client dropped the connection without the close handshake.
            Err(DriverError::Closed) => log::debug!("connection {} from {} dropped by the client", self.id, self.peer),
            // The same over TLS: the client closed TCP without TLS's close_notify.
            Err(DriverError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                log::debug!("connection {} from {} dropped by the client ({e})", self.id, self.peer);
            }
            Err(e @ (DriverError::Frame(_) | DriverError::Session(_))) => {
                self.shared.stats.bad_input.fetch_add(1, Ordering::Relaxed);
                log::warn!("connection {} from {}: bad input, closed: {e}", self.id, self.peer);
            }
            Err(e) => log::warn!("connection {} from {} failed: {e}", self.id, self.peer),
        }
        self.unlist();
        // The worker stops after the batch in progress; `disconnect` comes after it.
        self.outcomes.close();
        if let Err(e) = (&mut self.worker).await {
            log::error!("connection {}: store worker failed: {e}", self.id);
        }
        self.disconnect().await;
        if result.is_ok() {
            // Our EOF, if still buffered; never past a closing connection's deadline.
            let until = self.deadline.unwrap_or_else(|| tokio::time::Instant::now() + self.shared.shutdown_timeout);
            let _ = tokio::time::timeout_at(until, self.driver.flush()).await;
            // Then close our side: over TLS that sends close_notify, so the client sees a close
            // and not a cut connection; over TCP it is the FIN that dropping would send.
            let _ = tokio::time::timeout_at(until, self.driver.io().inner_mut().shutdown()).await;
        }
    }
}

/// Runs a handler call in its own task, so a panic becomes a refusal.
async fn guarded<T: Send + 'static>(
    call: impl Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    tokio::spawn(call).await.unwrap_or_else(|_| Err(HANDLER_PANICKED.into()))
}

/// A client session's registrations as the server has them: the next sequence number handed to
/// the handler (`admitted`, under a lock that keeps two links of a session in order) and the next
/// one not yet durable (`durable`). Resume answers `durable`; a resent registration below
/// `admitted` is not stored again, and acknowledged only once `durable` passes it.
struct SessionCell {
    admitted: tokio::sync::Mutex<u32>,
    progress: watch::Sender<Progress>,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    durable: u32,
    /// A durable write failed: nothing taken after it becomes durable (the handler's promise).
    failed: bool,
    /// Batches taken and not yet resolved.
    in_flight: u32,
}

impl SessionCell {
    fn new(next_seq: u32) -> Arc<Self> {
        Arc::new(SessionCell {
            admitted: tokio::sync::Mutex::new(next_seq),
            progress: watch::Sender::new(Progress { durable: next_seq, failed: false, in_flight: 0 }),
        })
    }

    fn durable(&self) -> u32 {
        self.progress.borrow().durable
    }

    /// A batch taken up to `next` (exclusive) resolved: durable, or not.
    fn resolved(&self, next: u32, durable: bool) {
        self.progress.send_modify(|p| {
            p.in_flight = p.in_flight.saturating_sub(1);
            if !durable {
                p.failed = true;
            } else if seq_at_or_after(next, p.durable) {
                p.durable = next;
            }
        });
    }

    /// Resolves once registrations up to `next` (exclusive) are durable.
    fn wait_durable(self: Arc<Self>, next: u32) -> Durable {
        Box::pin(async move {
            let mut progress = self.progress.subscribe();
            let reached = progress
                .wait_for(|p| p.failed || seq_at_or_after(p.durable, next))
                .await
                .map(|p| !p.failed)
                .unwrap_or(false);
            if reached { Ok(()) } else { Err("an earlier write of these registrations failed".to_string()) }
        })
    }
}

type Durable = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A batch the handler took (or found taken), waiting to be durable before it is acknowledged;
/// or a refused registration, answered in its place after the batches before it.
struct InFlight {
    generation: u64,
    count: u32,
    durable: Durable,
    refusal: Option<(u32, String)>,
}

/// An event [`Server::notify_events`] takes: an [`Event`], copied into an `Arc` for the queues
/// once someone wants it, or an `Arc<Event>` already shared, queued without a copy.
pub trait Notified {
    fn event(&self) -> &Event;
    fn share(&self) -> Arc<Event>;
}

impl Notified for Event {
    fn event(&self) -> &Event {
        self
    }
    fn share(&self) -> Arc<Event> {
        Arc::new(self.clone())
    }
}

impl Notified for Arc<Event> {
    fn event(&self) -> &Event {
        self
    }
    fn share(&self) -> Arc<Event> {
        self.clone()
    }
}

/// Hands a connection's registrations to the handler in order, batching what is queued, and
/// acknowledges each batch once durable, in order. Up to [`PIPELINE`] batches are taken before
/// the first is durable, so a store that commits in groups is not waited on batch by batch, and
/// the connection task keeps serving the link meanwhile.
async fn store_worker<H: ServerHandler>(
    handler: Arc<H>,
    shared: Arc<Shared>,
    mut work: mpsc::Receiver<Work>,
    outcomes: mpsc::Sender<Outcome>,
) {
    let mut carried: Option<Work> = None;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    // A link whose store failed is closing; its later registrations are sent again on the next.
    let mut failed: Option<u64> = None;
    loop {
        enum Woke {
            Work(Option<Work>),
            Durable(Result<(), String>),
            Gone,
        }
        let woke = if let Some(item) = carried.take() {
            Woke::Work(Some(item))
        } else {
            let room = in_flight.len() < PIPELINE;
            let front = in_flight.front_mut().map(|f| f.durable.as_mut());
            let waiting = front.is_some();
            tokio::select! {
                item = work.recv(), if room => Woke::Work(item),
                done = async { front?.await.into() }, if waiting => match done {
                    Some(done) => Woke::Durable(done),
                    None => continue,
                },
                () = outcomes.closed() => Woke::Gone,
            }
        };
        let outcome = match woke {
            Woke::Gone | Woke::Work(None) => break,
            Woke::Durable(done) => {
                let Some(batch) = in_flight.pop_front() else { continue };
                let generation = batch.generation;
                if failed == Some(generation) {
                    continue; // after a failure nothing more is acknowledged on that link
                }
                match (done, batch.refusal) {
                    (Ok(()), None) => Outcome::Stored { generation, count: batch.count },
                    (Ok(()), Some((seq, reason))) => Outcome::Refused { generation, seq, reason },
                    (Err(reason), _) => {
                        failed = Some(generation);
                        Outcome::StoreFailed { generation, reason }
                    }
                }
            }
            Woke::Work(Some(Work::Register { generation, mut client, registration })) => {
                let mut batch = vec![registration];
                while let Ok(next) = work.try_recv() {
                    match next {
                        Work::Register { generation: g, client: c, registration } if g == generation => {
                            batch.push(registration);
                            client = c;
                        }
                        other => {
                            carried = Some(other);
                            break;
                        }
                    }
                }
                if failed == Some(generation) {
                    continue;
                }
                let count = u32::try_from(batch.len()).unwrap_or(u32::MAX);
                match admit(&handler, &shared, client, batch).await {
                    Ok(durable) => {
                        in_flight.push_back(InFlight { generation, count, durable, refusal: None });
                        continue;
                    }
                    Err(reason) => {
                        failed = Some(generation);
                        Outcome::StoreFailed { generation, reason }
                    }
                }
            }
            Woke::Work(Some(Work::Refused { generation, seq, reason })) => {
                // In its place among the acknowledgements: after what was taken before it.
                let durable: Durable = Box::pin(async { Ok(()) });
                in_flight.push_back(InFlight { generation, count: 1, durable, refusal: Some((seq, reason)) });
                continue;
            }
            Woke::Work(Some(Work::RegisterRequest { generation, client, from, events })) => {
                // Not sequenced: it does not wait for the registrations before it, nor they for it.
                let (handler, outcomes) = (handler.clone(), outcomes.clone());
                tokio::spawn(async move {
                    let session = client.session;
                    let registrations =
                        events.into_iter().map(|event| Registration { session, seq: None, event }).collect();
                    let answer = guarded(async move { handler.register(&client, registrations).await }).await;
                    let _ =
                        outcomes.send(Outcome::Answer { generation, from, answer: Answer::Registered(answer) }).await;
                });
                continue;
            }
        };
        if outcomes.send(outcome).await.is_err() {
            break;
        }
    }
    // Whatever was taken still becomes durable (or not): the session's progress must say so.
    for batch in in_flight {
        let _ = batch.durable.await;
    }
}

/// Takes one batch of a session's registrations, under the session's admission lock. Those below
/// the session's `admitted` number were taken through another link of the client (one it has
/// since left, its acks lost): they are not stored again, and their acknowledgement waits until
/// they are durable. Returns what resolves once the whole batch is durable.
async fn admit<H: ServerHandler>(
    handler: &Arc<H>,
    shared: &Shared,
    client: Arc<ClientInfo>,
    batch: Vec<Registration>,
) -> Result<Durable, String> {
    let first = batch.first().and_then(|r| r.seq).unwrap_or(0);
    let last = batch.last().and_then(|r| r.seq).unwrap_or(first);
    let cell = lock(&shared.sessions).entry(client.session).or_insert_with(|| SessionCell::new(first)).clone();
    let mut admitted = cell.admitted.lock().await;
    let progress = *cell.progress.borrow();
    if progress.failed {
        if progress.in_flight > 0 {
            return Err("an earlier write of this session failed; the client sends again later".into());
        }
        // Everything taken has resolved: take again from what is durable.
        *admitted = progress.durable;
        cell.progress.send_modify(|p| p.failed = false);
    }
    let fresh: Vec<Registration> =
        batch.into_iter().filter(|r| r.seq.is_none_or(|seq| seq_at_or_after(seq, *admitted))).collect();
    let Some(fresh_last) = fresh.last().and_then(|r| r.seq) else {
        drop(admitted);
        return Ok(cell.wait_durable(last.wrapping_add(1)));
    };
    let handler = handler.clone();
    let taken = guarded(async move { handler.admit(&client, fresh).await }).await?;
    let next = fresh_last.wrapping_add(1);
    *admitted = next;
    cell.progress.send_modify(|p| p.in_flight = p.in_flight.saturating_add(1));
    drop(admitted);
    let written = taken.durable;
    Ok(Box::pin(async move {
        let result = written.await;
        cell.resolved(next, result.is_ok());
        result
    }))
}
