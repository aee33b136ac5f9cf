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
//! - notifications go through a [`Fanout`]: the server's own, or one it shares with other
//!   front-ends ([`ServerOptions::fanout`]). It finds each event's clients in a subscription index
//!   (the cost grows with the clients that match, not with every subscription of every client) and
//!   cuts off a client that falls a whole queue behind.
//!
//! The files, by job: [`options`] (limits), [`handler`] (what the application answers),
//! `accept` (listeners, handshakes), `links` (the accepted links by id), `connection` (one task
//! per connection: the machine, the link's events, answers), `pipeline` (a connection's
//! registrations on their way to the handler and back as acknowledgements), `sessions` (the
//! exactly-once session table).
//!
//! Queues and what happens when they are full:
//! - notifications waiting for a connection (the fan-out's queue, [`ServerOptions::notify_queue`]
//!   events each for the server's own, filled by `notify_events`, drained as the client's window
//!   gives credit): when full, that connection is closed as too slow (logged; ERQ/EOF, dropped after [`ServerOptions::shutdown_timeout`]), so
//!   one stuck client cannot hold the others back. Its queued notifications are dropped.
//! - registrations waiting for `register` (at most the configured window per connection: the
//!   client cannot send more unacknowledged ones; a client that does breaks the protocol and its
//!   link ends);
//! - a client's requests being handled (queries, register-with-response, application requests):
//!   [`MAX_REQUESTS_HANDLED`] per connection; more are refused with "too many requests in flight";
//! - [`Server::request`] calls: at most [`INFLIGHT`]` - 1` in flight per connection (one slot stays
//!   free for the keepalive ping) and [`COMMANDS`] more queued; further callers wait for room;
//! - the session table grows by one small entry per session for the life of the `Server`.

mod accept;
mod accept_errors;
mod connection;
pub mod handler;
mod links;
pub mod options;
mod pipeline;
mod sessions;

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rivulet_core::session::ServerConfig;
use rivulet_core::wire::Framing;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use self::accept::Accept;
pub use self::accept_errors::AcceptErrors;
pub use self::handler::{Admission, Admitted, ClientInfo, HandlerError, Registration, ServerHandler};
pub use self::options::{ALIASES, COMMANDS, INFLIGHT, MAX_REQUESTS_HANDLED, ServerOptions};
pub use crate::fanout::Notified;
use crate::fanout::{Fanout, FanoutLimits};
use crate::model::Status;
use crate::packet::{CallError, PacketReply};
use accept::{accept_loop, plain};
use links::{Command, Links};
use sessions::SessionCell;

/// Counters of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Notifications written to the client.
    pub notified: u64,
    /// Notifications skipped because they are larger than the client's `max_packet`.
    pub too_large: u64,
    /// Registrations stored and acknowledged.
    pub registered: u64,
    /// Registrations refused, not stored: sequenced ones by [`ServerHandler::check_register`]
    /// (acknowledged with the reason), register requests by it or by the handler's `register`
    /// (answered with the reason; a request counts once, however many events it holds).
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

/// What every connection task and the `Server` handle share.
struct Shared {
    server_id: u64,
    /// Random per `Server`: tells clients that this is a different run of the server.
    server_session: u64,
    config: ServerConfig,
    /// Where notifications come from: the server's own, or one shared with other front-ends.
    fanout: Arc<Fanout>,
    shutdown_timeout: Duration,
    handshake_timeout: Duration,
    init_timeout: Duration,
    status: watch::Sender<Status>,
    shutdown: watch::Sender<bool>,
    /// Next sequence number of each session. Its lock is held while a batch is stored, so an
    /// init reading it waits for registrations in progress (on another link of the client).
    sessions: Mutex<HashMap<u64, Arc<SessionCell>>>,
    /// Accepted links, by connection id.
    links: Mutex<Links>,
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
    keepalive_capped: AtomicU64,
    inits_refused: AtomicU64,
    accept_failed: AtomicU64,
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
    /// Registrations refused, counted as in [`ConnectionStats::refused`].
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
    /// Clients that asked for a keepalive longer than `ServerConfig::max_keepalive` (and got it).
    pub keepalive_capped: u64,
    /// Inits the server refused before asking the handler: a client name over
    /// [`MAX_CLIENT_NAME`](rivulet_core::session::MAX_CLIENT_NAME) bytes, an invalid subscription.
    pub inits_refused: u64,
    /// Times `accept` failed (out of file descriptors, say): each waits a little longer while
    /// they go on ([`AcceptErrors`]).
    pub accept_failed: u64,
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
            fanout: options.fanout.clone().unwrap_or_else(|| Fanout::new(FanoutLimits::events(options.notify_queue))),
            shutdown_timeout: options.shutdown_timeout,
            handshake_timeout: options.handshake_timeout,
            init_timeout: options.init_timeout,
            status: watch::Sender::new(options.status),
            shutdown: watch::Sender::new(false),
            sessions: Mutex::new(HashMap::new()),
            links: Mutex::new(Links::default()),
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
        lock(&self.shared.links).clients()
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
            keepalive_capped: s.keepalive_capped.load(Ordering::Relaxed),
            inits_refused: s.inits_refused.load(Ordering::Relaxed),
            accept_failed: s.accept_failed.load(Ordering::Relaxed),
        }
    }

    /// Counters of a connection with an accepted link.
    pub fn connection_stats(&self, connection: u64) -> Option<ConnectionStats> {
        lock(&self.shared.links).counters(connection).map(|counters| ConnectionStats {
            notified: counters.notified.load(Ordering::Relaxed),
            too_large: counters.too_large.load(Ordering::Relaxed),
            registered: counters.registered.load(Ordering::Relaxed),
            refused: counters.refused.load(Ordering::Relaxed),
        })
    }

    /// The fan-out this server's clients subscribe to.
    pub fn fanout(&self) -> &Arc<Fanout> {
        &self.shared.fanout
    }

    /// Notifies `events` to every client whose subscriptions match their type, whose `server_id`
    /// filter (if any) is the event's server, and whose `persisted` flag equals `persisted`
    /// (through the fan-out: its other subscribers get them too). A client whose queue is full is
    /// closed as too slow. With `with_ack`, returns once each targeted client acknowledged these
    /// notifications (or its link ended).
    pub async fn notify_events<E: Notified>(&self, events: &[E], persisted: bool, with_ack: bool) {
        if with_ack {
            self.shared.fanout.publish_acknowledged(events, persisted).await;
        } else {
            self.shared.fanout.publish(events, persisted);
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
        let commands = lock(&self.shared.links).commands(connection).ok_or(CallError::Disconnected)?;
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
