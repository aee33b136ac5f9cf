//! How a server runs: [`ServerOptions`] and the fixed limits of each connection.

use std::sync::Arc;
use std::time::Duration;

use rivulet_core::session::ServerConfig;

#[cfg(doc)]
use super::Server;
use crate::fanout::Fanout;
use crate::model::Status;

/// Requests of ours (and the keepalive ping) awaiting a client's answer, per connection.
pub const INFLIGHT: usize = 8;
/// Event types declared each way, per connection.
pub const ALIASES: usize = 64;
/// A client's requests handled at once, per connection; more are refused.
pub const MAX_REQUESTS_HANDLED: usize = 256;
/// Batches of a connection's registrations taken by the handler and not yet durable: the next
/// batch is admitted while earlier ones are being written.
pub(super) const PIPELINE: usize = 32;

/// [`Server::request`] calls queued per connection before callers wait.
pub const COMMANDS: usize = 16;

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
    /// Notifications queued per connection before it is closed as too slow (in the server's own
    /// fan-out; a shared one has its own limit).
    pub notify_queue: usize,
    /// A fan-out shared with other front-ends, whose publishes reach this server's clients too;
    /// `None`: the server makes its own, fed by [`Server::notify_events`].
    pub fanout: Option<Arc<Fanout>>,
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
            fanout: None,
            shutdown_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            init_timeout: Duration::from_secs(10),
        }
    }
}
