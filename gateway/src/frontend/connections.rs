//! What a front-end that runs its own connections (hat, Kelvin) keeps of them: the clients
//! connected now (for `rivulet status`), its counters, the signal that stops them, and its
//! accept task; and the `Frontend` answers that follow from those.

use rivulet_tokio::server::AcceptErrors;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rivulet_tokio::fanout::{Delivery, Subscriber};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::counters::Counters;
use super::{ClientReport, FrontendStats};

/// The connections of a front-end that runs its own (hat, Kelvin, stream-sea, Chaski); its
/// `Frontend` answers clients, counters and stop from here ([`crate::frontend::Frontend::connections`]).
#[derive(Debug)]
pub struct Connections {
    pub(crate) stats: Counters,
    /// Set once: every connection and the accept task end.
    pub(crate) shutdown: watch::Sender<bool>,
    /// The clients that are in (logged in, or for Kelvin connected), by connection id.
    clients: Mutex<BTreeMap<u64, ClientReport>>,
    accepting: Mutex<Option<JoinHandle<()>>>,
}

impl Connections {
    pub(crate) fn new() -> Self {
        Connections {
            stats: Counters::default(),
            shutdown: watch::Sender::new(false),
            clients: Mutex::new(BTreeMap::new()),
            accepting: Mutex::new(None),
        }
    }

    pub(crate) fn clients(&self) -> MutexGuard<'_, BTreeMap<u64, ClientReport>> {
        // A poisoned lock only means a panic elsewhere; the map stays consistent.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Updates the report of connection `id`, if its client is in.
    pub(crate) fn update(&self, id: u64, update: impl FnOnce(&mut ClientReport)) {
        if let Some(report) = self.clients().get_mut(&id) {
            update(report);
        }
    }

    pub fn reports(&self) -> Vec<ClientReport> {
        self.clients().values().cloned().collect()
    }

    pub fn stats(&self) -> FrontendStats {
        self.stats.snapshot(self.clients().len() as u64)
    }

    /// The task that accepts connections, awaited by [`Connections::stop`].
    pub(crate) fn set_accepting(&self, task: JoinHandle<()>) {
        *self.accepting.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    /// Stops accepting and every connection; resolves once the accept task (which waits for its
    /// connections) has ended.
    pub fn stop(&self, name: &'static str) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.shutdown.send_replace(true);
        let accepting = self.accepting.lock().unwrap_or_else(PoisonError::into_inner).take();
        Box::pin(async move {
            if let Some(Err(e)) = match accepting {
                Some(task) => Some(task.await),
                None => None,
            } {
                tracing::error!("{name} accept task failed: {e}");
            }
        })
    }
}

/// Accepts connections on `listener` until `shared`'s [`Connections`] shut down, each served by
/// `serve` in a task of its own (with its id), at most `max` at once (more are closed and
/// counted); then waits for them to end. `name` is the front-end's, for logs.
pub(crate) async fn accept_loop<S, F, Fut>(
    listener: TcpListener,
    shared: Arc<S>,
    conns: fn(&S) -> &Connections,
    max: usize,
    name: &'static str,
    serve: F,
) where
    S: Send + Sync + 'static,
    F: Fn(TcpStream, SocketAddr, u64, Arc<S>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut stop = conns(&shared).shutdown.subscribe();
    let mut tasks = JoinSet::new();
    let mut next_id = 1u64;
    let mut errors = AcceptErrors::default();
    while !*stop.borrow_and_update() {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(done) = tasks.join_next() => {
                if let Err(e) = done {
                    tracing::error!("{name} connection task failed: {e}");
                }
                continue;
            }
            _ = stop.changed() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: let connections end before trying again.
                errors.failed(name, &e, &conns(&shared).stats.accept_failed, &mut stop).await;
                continue;
            }
        };
        errors.succeeded(name);
        let stats = &conns(&shared).stats;
        stats.accepted.fetch_add(1, Relaxed);
        if tasks.len() >= max {
            stats.over_limit.fetch_add(1, Relaxed);
            tracing::warn!(%peer, "{name} connection closed: {} connections open", tasks.len());
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        tasks.spawn(serve(stream, peer, id, shared.clone()));
    }
    drop(listener);
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!("{name} connection task failed: {e}");
        }
    }
}

/// The next event (when `take`) or the cut-off of a connection's subscriber; never, without one.
pub(crate) async fn next_delivery(subscriber: &mut Option<Subscriber>, take: bool) -> Delivery {
    match subscriber {
        Some(subscriber) => subscriber.next(take).await,
        None => std::future::pending().await,
    }
}

/// Writes the bytes of an event delivered to `subscriber`; `None` if it is cut off meanwhile: a
/// client that reads nothing leaves the write pending, and its cut-off ends the wait.
pub(crate) async fn write_delivery(
    stream: &mut (impl tokio::io::AsyncWrite + Unpin),
    bytes: &[u8],
    subscriber: &mut Subscriber,
) -> Option<std::io::Result<()>> {
    use tokio::io::AsyncWriteExt;
    tokio::select! {
        written = stream.write_all(bytes) => Some(written),
        _ = subscriber.next(false) => None,
    }
}
