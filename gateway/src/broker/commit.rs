//! Group commits: batches wait for the committer, which writes them together (one store
//! transaction and one fsync) once `max_events` wait or `max_delay` after the first, then, in
//! commit order, updates the latest table, notifies persisted subscribers and tells each batch's
//! publisher that it is durable.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::Broker;
use crate::store::{Commit, EventStore, StoreError};

/// When a group commit is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitPolicy {
    /// Write once this many events wait.
    pub max_events: usize,
    /// Write at the latest this long after the first waiting event arrived.
    pub max_delay: Duration,
}

impl Default for CommitPolicy {
    fn default() -> Self {
        CommitPolicy { max_events: 1000, max_delay: Duration::from_millis(5) }
    }
}

/// A batch waiting for the committer, and who to tell once it is durable.
pub(super) struct Pending {
    pub(super) commit: Commit,
    pub(super) durable: oneshot::Sender<Result<(), StoreError>>,
}

/// Gathers batches into group commits: writes when `max_events` wait or `max_delay` after the
/// first, then (in commit order) updates the latest table, notifies persisted subscribers and
/// tells every batch's registrant. Ends once the broker is closed and every batch is written.
pub(super) async fn committer(
    store: Arc<dyn EventStore>,
    policy: CommitPolicy,
    mut batches: mpsc::Receiver<Pending>,
    broker: Weak<Broker>,
) {
    while let Some(first) = batches.recv().await {
        let deadline = tokio::time::Instant::now() + policy.max_delay;
        let mut group = vec![first];
        let mut events: usize = group.iter().map(|p| p.commit.events.len()).sum();
        while events < policy.max_events {
            match tokio::time::timeout_at(deadline, batches.recv()).await {
                Ok(Some(pending)) => {
                    events += pending.commit.events.len();
                    group.push(pending);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let mut commit = Commit::default();
        for pending in &mut group {
            commit.events.append(&mut pending.commit.events);
            for &(session, next) in &pending.commit.sessions {
                match commit.sessions.iter_mut().find(|(s, _)| *s == session) {
                    Some(entry) => entry.1 = next,
                    None => commit.sessions.push((session, next)),
                }
            }
        }
        let broker = broker.upgrade();
        if let Some(reason) = broker.as_ref().and_then(|b| b.store_failed.get()) {
            // An earlier commit failed: writing this one would leave a hole behind acknowledged
            // registrations.
            for pending in group {
                let _ = pending.durable.send(Err(reason.clone()));
            }
            continue;
        }
        let writer = store.clone();
        let started = Instant::now();
        let (result, commit) = match tokio::task::spawn_blocking(move || (writer.commit(&commit), commit)).await {
            Ok((result, commit)) => (result, commit),
            Err(e) => (Err(StoreError::Io(format!("the store task failed: {e}"))), Commit::default()),
        };
        match (&result, &broker) {
            (Ok(()), Some(broker)) => {
                broker.counters.commits.fetch_add(1, Relaxed);
                broker.counters.commit_latency.observe(started.elapsed());
                broker.committed(&commit.events);
            }
            (Err(e), _) => {
                tracing::error!("group commit of {events} events failed: {e}; no more registrations until a restart");
                if let Some(broker) = &broker {
                    broker.counters.commit_failures.fetch_add(1, Relaxed);
                    let _ = broker
                        .store_failed
                        .set(StoreError::Closed(format!("the store failed (store: {e}); restart the gateway")));
                }
            }
            (Ok(()), None) => {}
        }
        for pending in group {
            let _ = pending.durable.send(result.clone());
        }
    }
}
