//! Group commits: batches wait for the committer, which writes them together (one store
//! transaction and one fsync) once `max_events` wait or `max_delay` after the first, then, in
//! commit order, updates the latest table, notifies persisted subscribers and tells each batch's
//! publisher that it is durable.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rivulet_core::model::Status;
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

/// Adds `batch` to the group commit `into`: its events (with their hops), and its session and
/// peer cursors, a later one of the same session or peer replacing an earlier.
fn merge(into: &mut Commit, batch: &mut Commit) {
    let hops = (0..batch.events.len()).map(|i| batch.hop(i));
    if into.hops.is_empty() && batch.hops.is_empty() {
        // Local events only, so far: no hops to keep (each is `Hop::LOCAL`).
    } else {
        let before = (0..into.events.len()).map(|i| into.hop(i)).collect::<Vec<_>>();
        into.hops = before.into_iter().chain(hops).collect();
    }
    into.events.append(&mut batch.events);
    for &(session, next) in &batch.sessions {
        match into.sessions.iter_mut().find(|(s, _)| *s == session) {
            Some(entry) => entry.1 = next,
            None => into.sessions.push((session, next)),
        }
    }
    for &(peer, cursor) in &batch.peers {
        match into.peers.iter_mut().find(|(p, _)| *p == peer) {
            Some(entry) => entry.1 = cursor,
            None => into.peers.push((peer, cursor)),
        }
    }
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
            merge(&mut commit, &mut pending.commit);
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
                tracing::error!(
                    "group commit of {events} events failed: {e}; no more registrations until a restart, the \
                     status is now standby (queries are still answered)"
                );
                if let Some(broker) = &broker {
                    broker.counters.commit_failures.fetch_add(1, Relaxed);
                    let failed = StoreError::Closed(format!("the store failed (store: {e}); restart the gateway"));
                    if broker.store_failed.set(failed).is_ok() {
                        // Clients learn that this gateway takes no events: hat's clients, say,
                        // go to another server.
                        broker.set_status(Status::Standby).await;
                    }
                }
            }
            (Ok(()), None) => {}
        }
        for pending in group {
            let _ = pending.durable.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Hop, PeerCursor};
    use rivulet_core::owned::{Event, EventPath};

    fn events(n: u64) -> Vec<std::sync::Arc<Event>> {
        (0..n)
            .map(|instance| {
                std::sync::Arc::new(Event {
                    id: rivulet_core::model::EventId { server: 1, session: 1, instance },
                    event_type: EventPath::parse("a"),
                    timestamp: Default::default(),
                    source_timestamp: None,
                    payload: None,
                })
            })
            .collect()
    }

    #[test]
    fn a_group_keeps_each_events_hop_and_the_last_cursor_of_each_session_and_peer() {
        let imported = Hop { ttl: 3, via: Some(9) };
        let cursor = |seq| PeerCursor { store_id: 5, seq };
        let mut local = Commit { events: events(2), sessions: vec![(7, 1)], ..Commit::default() };
        let mut from_peer =
            Commit { events: events(1), hops: vec![imported], peers: vec![(9, cursor(4))], ..Commit::default() };
        let mut later =
            Commit { events: events(1), sessions: vec![(7, 2)], peers: vec![(9, cursor(6))], ..Commit::default() };
        let mut group = Commit::default();
        for batch in [&mut local, &mut from_peer, &mut later] {
            merge(&mut group, batch);
        }
        assert_eq!(group.events.len(), 4);
        assert_eq!(group.hops, vec![Hop::LOCAL, Hop::LOCAL, imported, Hop::LOCAL]);
        assert_eq!(group.sessions, vec![(7, 2)]);
        assert_eq!(group.peers, vec![(9, cursor(6))]);
    }
}
