//! The hat front-end: hat-event's Eventer protocol (chatter framing, SBS messages) for
//! `hat.event.eventer` clients, at `--hat-listen` (hat's usual port is 23012). The bytes are
//! parsed by `rivulet_core::hat` (`core/src/hat/`, docs/HAT.md); this module owns the listener,
//! one task per connection (`connection.rs`), the mapping to the broker's model (`convert.rs`)
//! and the metrics label `hat`.
//!
//! A hat client logs in with its init: `clientName` must be a configured client and
//! `clientToken` its token (the 64 hex digits `rivulet credential` printed), in clear, so the
//! listener stays on loopback unless `--insecure`; without `[[clients]]` everyone is let in. Its
//! subscriptions, registrations and queries then pass the same ACL checks as any client's.

mod connection;
mod convert;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rivulet_core::model::Status;
use rivulet_tokio::packet::PacketRequest;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Call, ClientReport, Frontend, FrontendStats, Listener};
use crate::broker::Broker;
use crate::config::{HatRespond, Settings};

/// Its name in status, logs and metrics.
pub const NAME: &str = "hat";

/// A connection without an accepted init after this long is closed.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection waits for its registrations in progress to be stored.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Registrations and queries of one connection in progress at once; beyond that its requests
/// wait in the socket.
const IN_FLIGHT: usize = 256;
/// Bytes of events one notification carries at most (it waits for its ack before the next).
const NOTIFY_BYTES: usize = 64 * 1024;

/// What every connection of the front-end shares.
struct Shared {
    broker: Arc<Broker>,
    ping_delay: Duration,
    ping_timeout: Duration,
    max_frame: usize,
    max_connections: usize,
    respond: HatRespond,
    status: watch::Sender<Status>,
    shutdown: watch::Sender<bool>,
    /// The clients with an accepted init, by connection id.
    clients: Mutex<BTreeMap<u64, ClientReport>>,
    stats: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    over_limit: AtomicU64,
    logins_refused: AtomicU64,
    notified: AtomicU64,
    registrations_refused: AtomicU64,
    too_slow: AtomicU64,
    bad_input: AtomicU64,
    init_timeouts: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Shared {
    fn clients(&self) -> MutexGuard<'_, BTreeMap<u64, ClientReport>> {
        // A poisoned lock only means a panic elsewhere; the map stays consistent.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running hat front-end.
pub struct HatFrontend {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accepting: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl HatFrontend {
    /// Listens at `addr` and serves hat clients with `broker` (attached to it).
    pub async fn start(addr: SocketAddr, settings: &Settings, broker: &Arc<Broker>) -> Result<Arc<Self>, String> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e} (is a hat server running? try --hat-listen)"))?;
        let addr = listener.local_addr().map_err(|e| format!("the address of the hat listener: {e}"))?;
        let shared = Arc::new(Shared {
            broker: broker.clone(),
            ping_delay: settings.hat.ping_delay,
            ping_timeout: settings.hat.ping_timeout,
            max_frame: settings.hat.max_frame,
            max_connections: settings.max_connections,
            respond: settings.hat.respond,
            status: watch::Sender::new(broker.status()),
            shutdown: watch::Sender::new(false),
            clients: Mutex::new(BTreeMap::new()),
            stats: Counters::default(),
        });
        let accepting = tokio::spawn(accept_loop(listener, shared.clone()));
        let frontend = Arc::new(HatFrontend { shared, addr, accepting: Mutex::new(Some(accepting)) });
        let attached: Arc<dyn Frontend> = frontend.clone();
        broker.attach(&attached);
        Ok(frontend)
    }

    /// Where hat clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HatFrontend {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// Accepts connections until shutdown, each in a task of its own; then waits for them to end.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.shutdown.subscribe();
    let mut tasks = JoinSet::new();
    let mut next_id = 1u64;
    while !*stop.borrow_and_update() {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.stats.accepted.fetch_add(1, Relaxed);
                    // Connections not yet logged in count too, with a tenth more room.
                    if tasks.len() > shared.max_connections + shared.max_connections / 10 {
                        shared.stats.over_limit.fetch_add(1, Relaxed);
                        tracing::warn!(%peer, "hat connection closed: {} connections open", tasks.len());
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let id = next_id;
                    next_id += 1;
                    tasks.spawn(connection::serve(stream, peer, id, shared.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, say: let connections end before trying again.
                    tracing::warn!("hat accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = tasks.join_next() => {
                if let Err(e) = done {
                    tracing::error!("hat connection task failed: {e}");
                }
            }
            _ = stop.changed() => {}
        }
    }
    drop(listener);
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!("hat connection task failed: {e}");
        }
    }
}

impl Frontend for HatFrontend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn listeners(&self) -> Vec<Listener> {
        vec![Listener { kind: "tcp", addr: self.addr }]
    }

    fn clients(&self) -> Vec<ClientReport> {
        self.shared.clients().values().cloned().collect()
    }

    fn stats(&self) -> FrontendStats {
        let s = &self.shared.stats;
        FrontendStats {
            connections: self.shared.clients().len() as u64,
            accepted: s.accepted.load(Relaxed),
            over_limit: s.over_limit.load(Relaxed),
            logins_refused: s.logins_refused.load(Relaxed),
            notified: s.notified.load(Relaxed),
            registrations_refused: s.registrations_refused.load(Relaxed),
            too_slow: s.too_slow.load(Relaxed),
            bad_input: s.bad_input.load(Relaxed),
            handshake_failed: s.init_timeouts.load(Relaxed),
            bytes_in: s.bytes_in.load(Relaxed),
            bytes_out: s.bytes_out.load(Relaxed),
        }
    }

    /// hat clients answer no requests.
    fn call(&self, _client: &str, _request: PacketRequest) -> Option<Call> {
        None
    }

    fn announce(&self, status: Status) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.shared.status.send_replace(status);
        Box::pin(async {})
    }

    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.shared.shutdown.send_replace(true);
        let accepting = self.accepting.lock().unwrap_or_else(PoisonError::into_inner).take();
        Box::pin(async move {
            if let Some(Err(e)) = match accepting {
                Some(task) => Some(task.await),
                None => None,
            } {
                tracing::error!("hat accept task failed: {e}");
            }
        })
    }
}
