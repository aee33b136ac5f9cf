//! Protocol front-ends: each speaks one protocol to its clients, owns its listeners, codec
//! glue, settings section and metrics label, and reaches the broker only through its
//! protocol-neutral API (publish, subscribe, query, call, status). A newcomer finds where each
//! protocol's bytes are parsed by this folder's names:
//!
//! - [`native`]: the Rivulet protocol (plain TCP, TLS, serial lines over TCP): its bytes are
//!   parsed by `rivulet-core` (`core/src/wire`, `core/src/session`) and served by
//!   `rivulet_tokio::server`.
//! - [`hat`]: hat-event's Eventer protocol (chatter + SBS): its bytes are parsed by
//!   `rivulet_core::hat` (`core/src/hat/`).
//! - [`kelvin`]: Kelvin's stream (JSON lines) for Kelvin apps: its bytes are parsed by
//!   `rivulet_core::kelvin` (`core/src/kelvin/`).
//! - [`streamsea`]: stream-sea's REST API (schemas, publish) on axum: its bodies are parsed by
//!   `rivulet_core::streamsea` (`core/src/streamsea/`).
//! - [`chaski`]: Chaski nodes (TCP frames and UDP status, the JSON codec): their bytes are parsed
//!   by `rivulet_core::chaski` (`core/src/chaski/`).
//!
//! `docs/GATEWAY.md`, "Adding a front-end", has the checklist.

pub mod chaski;
mod connections;
mod counters;
pub use connections::Connections;
pub mod hat;
pub mod kelvin;
pub mod native;
pub mod streamsea;

use std::net::SocketAddr;
use std::pin::Pin;

use rivulet_core::model::Status;
use rivulet_tokio::packet::{CallError, PacketReply, PacketRequest};

/// What the gateway, the broker, `rivulet status` and the metrics know of a running front-end.
pub trait Frontend: Send + Sync + 'static {
    /// Its name in status, logs and the metrics' `frontend` label: `native`, …
    fn name(&self) -> &'static str;

    /// Where it listens, one entry per listener.
    fn listeners(&self) -> Vec<Listener>;

    /// The connections it keeps, if it keeps them in a [`Connections`]: its clients, counters
    /// and stop then follow from them (the defaults below).
    fn connections(&self) -> Option<&Connections> {
        None
    }

    /// The clients connected through it now.
    fn clients(&self) -> Vec<ClientReport> {
        self.connections().map(Connections::reports).unwrap_or_default()
    }

    fn stats(&self) -> FrontendStats {
        self.connections().map(Connections::stats).unwrap_or_default()
    }

    /// Calls the request handler of its newest connected client named `client`, if it has one
    /// that serves requests (by default none does).
    fn call(&self, _client: &str, _request: PacketRequest) -> Option<Call> {
        None
    }

    /// Tells its clients the gateway's status; returns once every open link has it queued (by
    /// default its protocol has no status to tell).
    fn announce(&self, _status: Status) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }

    /// Its links to other gateways (federation), for status and metrics; none by default.
    fn links(&self) -> Vec<LinkReport> {
        Vec::new()
    }

    /// Stops accepting and closes every client gracefully (what they registered is stored
    /// first); returns once all are gone. By default, its [`Connections`] stop.
    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        match self.connections() {
            Some(connections) => connections.stop(self.name()),
            None => Box::pin(async {}),
        }
    }
}

/// A call to a client in progress.
pub type Call = Pin<Box<dyn Future<Output = Result<PacketReply, CallError>> + Send>>;

/// One listener of a front-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// What it takes: `tcp`, `tls`, `serial`, …
    pub kind: &'static str,
    pub addr: SocketAddr,
}

/// A connected client, as `rivulet status` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReport {
    /// Unique within its front-end.
    pub id: u64,
    pub name: String,
    pub peer: SocketAddr,
    pub subscriptions: Vec<String>,
    pub persisted: bool,
    pub registered: u64,
    pub refused: u64,
    pub notified: u64,
}

/// A link to another gateway, as `rivulet status` and the metrics show it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkReport {
    /// The peer's server id.
    pub peer: u64,
    pub name: String,
    /// Where the peer is: the address dialed, or where it dialed in from.
    pub addr: String,
    /// Whether this gateway dialed it.
    pub dialed: bool,
    pub up: std::time::Duration,
    /// Events sent over it and taken from it.
    pub sent: u64,
    pub received: u64,
    /// Pings answered, and their round trips.
    pub pings: u64,
    pub rtt_last: std::time::Duration,
    pub rtt_min: std::time::Duration,
    pub rtt_mean: std::time::Duration,
    pub rtt_max: std::time::Duration,
}

/// A front-end's counters since it started; each becomes a metric family with its
/// `frontend` label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrontendStats {
    /// Clients connected now.
    pub connections: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused or closed over the connection limit.
    pub over_limit: u64,
    /// Logins refused (credentials, ACLs of the init, limits).
    pub logins_refused: u64,
    /// Events written to clients.
    pub notified: u64,
    /// Registrations refused (not allowed).
    pub registrations_refused: u64,
    /// Clients cut off for falling behind.
    pub too_slow: u64,
    /// Links ended by malformed input or a protocol error.
    pub bad_input: u64,
    /// Events it could not pass on: too large for a link (federation).
    pub too_large: u64,
    /// Connections dropped in their handshake (TLS) or before logging in.
    pub handshake_failed: u64,
    /// Protocol bytes received and sent (inside TLS).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Clients that asked for a longer keepalive than the gateway's longest (`max_keepalive`).
    pub keepalive_capped: u64,
    /// Times its listeners' `accept` failed (out of file descriptors, say).
    pub accept_failed: u64,
}
