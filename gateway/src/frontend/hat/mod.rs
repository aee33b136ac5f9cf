//! The hat front-end: hat-event's Eventer protocol (chatter framing, SBS messages) for
//! `hat.event.eventer` clients, at `--hat-listen` (hat's usual port is 23012). The bytes are
//! parsed by `rivulet_core::hat` (`core/src/hat/`, docs/HAT.md); this module owns the listener,
//! one task per connection (`connection.rs`; the mapping to the broker's model is the core's
//! `hat::owned`) and the metrics label `hat`.
//!
//! A hat client logs in with its init: `clientName` must be a configured client and
//! `clientToken` its token (the 64 hex digits `rivulet credential` printed). Over plain TCP the
//! token travels in clear, so that listener stays on loopback unless `--insecure`; hat's
//! chatter also runs over TLS (`connect(..., ssl=context)`), which `--hat-tls-listen` serves.
//! Without `[[clients]]` everyone is let in. A client's subscriptions, registrations and
//! queries then pass the same ACL checks as any client's.

mod connection;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rivulet_core::model::Status;
use rivulet_tokio::server::AcceptErrors;
use rivulet_tokio::{Accept, tls};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::connections::Connections;
use super::{Frontend, Listener};
use crate::broker::Broker;
use crate::config::{HatRespond, Settings};

/// Its name in status, logs and metrics.
pub const NAME: &str = "hat";

/// A connection without an accepted init after this long is closed (over TLS, the handshake
/// counts in).
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
    /// The connections, their counters, shutdown and accept task.
    conns: Connections,
}

/// The hat front-end's listeners, with the TLS certificate read before anything starts.
pub struct HatConfig {
    plain: Option<SocketAddr>,
    tls: Option<(SocketAddr, Arc<tls::rustls::ServerConfig>)>,
}

/// A running hat front-end.
pub struct HatFrontend {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
}

impl HatFrontend {
    /// The listeners `settings` ask for, `None` when the front-end is off; errors for PEM files
    /// that cannot serve.
    pub fn configure(settings: &Settings) -> Result<Option<HatConfig>, String> {
        let tls = match &settings.hat.tls {
            Some(tls) => Some((tls.listen, tls::server_config_from_pem(&tls.cert, &tls.key)?)),
            None => None,
        };
        let config = HatConfig { plain: settings.hat.listen, tls };
        Ok((config.plain.is_some() || config.tls.is_some()).then_some(config))
    }

    /// Listens where `config` says and serves hat clients with `broker` (attached to it).
    pub async fn start(config: HatConfig, settings: &Settings, broker: &Arc<Broker>) -> Result<Arc<Self>, String> {
        let bind = async |addr: SocketAddr, flag: &str| {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e} (is a hat server running? try another {flag})"))?;
            let addr = listener.local_addr().map_err(|e| format!("the address of the hat listener: {e}"))?;
            Ok::<_, String>((listener, addr))
        };
        let mut listeners = Vec::new();
        let plain = match config.plain {
            Some(addr) => {
                let (listener, addr) = bind(addr, "--hat-listen").await?;
                listeners.push(Listener { kind: "tcp", addr });
                Some(listener)
            }
            None => None,
        };
        let tls = match config.tls {
            Some((addr, tls)) => {
                let (listener, addr) = bind(addr, "--hat-tls-listen").await?;
                listeners.push(Listener { kind: "tls", addr });
                Some((listener, tls::Acceptor::new(tls)))
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            broker: broker.clone(),
            ping_delay: settings.hat.ping_delay,
            ping_timeout: settings.hat.ping_timeout,
            max_frame: settings.hat.max_frame,
            max_connections: settings.max_connections,
            respond: settings.hat.respond,
            status: watch::Sender::new(broker.status()),
            conns: Connections::new(),
        });
        shared.conns.set_accepting(tokio::spawn(accept_loop(plain, tls, shared.clone())));
        let frontend = Arc::new(HatFrontend { shared, listeners });
        let attached: Arc<dyn Frontend> = frontend.clone();
        broker.attach(&attached);
        Ok(frontend)
    }
}

impl Drop for HatFrontend {
    fn drop(&mut self) {
        self.shared.conns.shutdown.send_replace(true);
    }
}

/// The next connection on `listener`; never, without one.
async fn next_on(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Accepts connections on both listeners until shutdown, each in a task of its own (a TLS one
/// shakes hands there); then waits for them to end.
async fn accept_loop(plain: Option<TcpListener>, tls: Option<(TcpListener, tls::Acceptor)>, shared: Arc<Shared>) {
    let mut stop = shared.conns.shutdown.subscribe();
    let mut tasks = JoinSet::new();
    let mut next_id = 1u64;
    let mut errors = AcceptErrors::default();
    while !*stop.borrow_and_update() {
        let (accepted, acceptor) = tokio::select! {
            accepted = next_on(plain.as_ref()) => (accepted, None),
            accepted = next_on(tls.as_ref().map(|(listener, _)| listener)) => {
                (accepted, tls.as_ref().map(|(_, acceptor)| acceptor.clone()))
            }
            Some(done) = tasks.join_next() => {
                if let Err(e) = done {
                    tracing::error!("hat connection task failed: {e}");
                }
                continue;
            }
            _ = stop.changed() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: let connections end before trying again.
                errors.failed("hat", &e, &shared.conns.stats.accept_failed, &mut stop).await;
                continue;
            }
        };
        errors.succeeded("hat");
        shared.conns.stats.accepted.fetch_add(1, Relaxed);
        // Connections not yet logged in count too, with a tenth more room.
        if tasks.len() > shared.max_connections + shared.max_connections / 10 {
            shared.conns.stats.over_limit.fetch_add(1, Relaxed);
            tracing::warn!(%peer, "hat connection closed: {} connections open", tasks.len());
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        let shared = shared.clone();
        tasks.spawn(async move {
            let stream: Box<dyn connection::Stream> = match acceptor {
                None => Box::new(stream),
                Some(acceptor) => match tokio::time::timeout(INIT_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => Box::new(tls),
                    Ok(Err(e)) => return tls_failed(&shared, peer, &e.to_string()),
                    Err(_) => return tls_failed(&shared, peer, &format!("no handshake in {INIT_TIMEOUT:?}")),
                },
            };
            connection::serve(stream, peer, id, shared).await;
        });
    }
    drop((plain, tls));
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!("hat connection task failed: {e}");
        }
    }
}

fn tls_failed(shared: &Shared, peer: SocketAddr, why: &str) {
    shared.conns.stats.tls_failed.fetch_add(1, Relaxed);
    tracing::info!(%peer, "hat TLS connection closed: {why}");
}

impl Frontend for HatFrontend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn listeners(&self) -> Vec<Listener> {
        self.listeners.clone()
    }

    fn connections(&self) -> Option<&Connections> {
        Some(&self.shared.conns)
    }

    fn announce(&self, status: Status) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.shared.status.send_replace(status);
        Box::pin(async {})
    }
}
