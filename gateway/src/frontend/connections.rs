//! What a front-end that runs its own connections (hat, Kelvin) keeps of them: the clients
//! connected now (for `rivulet status`), its counters, the signal that stops them, and its
//! accept task; and the `Frontend` answers that follow from those.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::counters::Counters;
use super::{ClientReport, FrontendStats};

#[derive(Debug)]
pub(crate) struct Connections {
    pub stats: Counters,
    /// Set once: every connection and the accept task end.
    pub shutdown: watch::Sender<bool>,
    /// The clients that are in (logged in, or for Kelvin connected), by connection id.
    clients: Mutex<BTreeMap<u64, ClientReport>>,
    accepting: Mutex<Option<JoinHandle<()>>>,
}

impl Connections {
    pub fn new() -> Self {
        Connections {
            stats: Counters::default(),
            shutdown: watch::Sender::new(false),
            clients: Mutex::new(BTreeMap::new()),
            accepting: Mutex::new(None),
        }
    }

    pub fn clients(&self) -> MutexGuard<'_, BTreeMap<u64, ClientReport>> {
        // A poisoned lock only means a panic elsewhere; the map stays consistent.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Updates the report of connection `id`, if its client is in.
    pub fn update(&self, id: u64, update: impl FnOnce(&mut ClientReport)) {
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
    pub fn set_accepting(&self, task: JoinHandle<()>) {
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
