//! Importing events another gateway admitted (federation, docs/FEDERATION.md). They keep their
//! ids and timestamps; each is taken once whichever links it arrives over: this gateway's own
//! events are never imported back, and others are looked up in a bounded window of recently
//! imported ids, then in the store. The batch stores the link's cursor with its events, so a
//! link resumes exactly where its durable events end.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use rivulet_core::model::EventId;
use rivulet_core::owned::Event;
use tokio::sync::oneshot;

use super::commit::Pending;
use super::publish::Durable;
use super::{Broker, BrokerError, lock};
use crate::access::Principal;
use crate::store::{Commit, Hop, PeerCursor, StoreError};

/// Ids of the events imported last, oldest first, at most `capacity`.
#[derive(Debug)]
pub(super) struct Window {
    ids: HashSet<EventId>,
    order: VecDeque<EventId>,
    capacity: usize,
}

impl Window {
    pub(super) fn new(capacity: usize) -> Self {
        Window { ids: HashSet::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    fn contains(&self, id: &EventId) -> bool {
        self.ids.contains(id)
    }

    /// Remembers `id`; false if it was already there.
    fn insert(&mut self, id: EventId) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }
}

/// What became of an imported batch.
pub struct Imported {
    /// Events taken (new here).
    pub taken: usize,
    /// Events this gateway already had (its own, or arrived over another link).
    pub duplicates: usize,
    /// Events the peer's client may not register here (its ACL), or of a type that is not a
    /// type, dropped.
    pub refused: usize,
    /// Resolves once the events and the link's cursor are durable.
    pub durable: Durable,
}

impl Broker {
    /// Imports `events` (each with the links it may still cross) that peer gateway `peer` sent
    /// as `who` (held to its `register` patterns; `None`: a peer this gateway dialed, trusted as
    /// configured), and stores `cursor` (how far the peer's admission log is taken) with them. The
    /// events keep their ids and timestamps and reach subscribers as local ones do; the batch
    /// is taken whole or not at all (a stopping gateway, a failed store).
    pub async fn import(
        &self,
        who: Option<&Principal<'_>>,
        peer: u64,
        events: Vec<(u8, Event)>,
        cursor: PeerCursor,
    ) -> Result<Imported, BrokerError> {
        let total = events.len();
        let mut refused = 0;
        let mut fresh: Vec<(u8, Event)> = Vec::with_capacity(total);
        for (ttl, event) in events {
            if event.id.server == self.server_id() || lock(&self.window).contains(&event.id) {
                continue;
            }
            if let Err(e) = event.event_type.check_type() {
                refused += 1;
                tracing::debug!("imported event of type {} refused: {e}", event.event_type);
                continue;
            }
            if let Some(who) = who
                && let Err(e) = self.check_register(who, &event.event_type)
            {
                refused += 1;
                tracing::debug!(client = %who, "imported event refused: {e}");
                continue;
            }
            fresh.push((ttl, event));
        }
        // Known to the store (imported before the window's memory, or before a restart)?
        let store = self.store.clone();
        let ids: Vec<EventId> = fresh.iter().map(|(_, event)| event.id).collect();
        let stored = tokio::task::spawn_blocking(move || {
            ids.into_iter().map(|id| store.contains(id)).collect::<Result<Vec<bool>, StoreError>>()
        })
        .await
        .map_err(|e| BrokerError::Store(StoreError::Io(format!("the store task failed: {e}"))))?
        .map_err(BrokerError::Store)?;

        let ids = self.ids.lock().await;
        self.check_writable()?;
        let stopping = || BrokerError::Unavailable("the gateway is stopping".into());
        let to_committer = ids.to_committer.clone().ok_or_else(stopping)?;
        let permit = to_committer.reserve().await.map_err(|_| stopping())?;
        self.check_writable()?;
        let mut commit = Commit { peers: vec![(peer, cursor)], ..Commit::default() };
        {
            // Under the ids lock: two links importing the same event race here, and one wins.
            let mut window = lock(&self.window);
            for ((ttl, event), stored) in fresh.into_iter().zip(stored) {
                if !stored && window.insert(event.id) {
                    commit.hops.push(Hop { ttl: ttl.saturating_sub(1), via: Some(peer) });
                    commit.events.push(Arc::new(event));
                }
            }
        }
        let taken = commit.events.len();
        self.fanout.publish(&commit.events, false);
        let (durable, done) = oneshot::channel();
        permit.send(Pending { commit, durable });
        drop(ids);
        self.counters.imported.fetch_add(taken as u64, Relaxed);
        self.counters.import_duplicates.fetch_add((total - taken - refused) as u64, Relaxed);
        let durable: Durable = Box::pin(async move {
            match done.await {
                Ok(result) => result.map_err(BrokerError::Store),
                Err(_) => Err(BrokerError::Store(StoreError::Closed("the store is closed".into()))),
            }
        });
        Ok(Imported { taken, duplicates: total - taken - refused, refused, durable })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_forgets_the_oldest_beyond_its_capacity() {
        let id = |instance| EventId { server: 2, session: 1, instance };
        let mut window = Window::new(2);
        assert!(window.insert(id(1)) && window.insert(id(2)));
        assert!(!window.insert(id(2)), "known");
        assert!(window.insert(id(3)));
        assert!(!window.contains(&id(1)) && window.contains(&id(2)) && window.contains(&id(3)));
    }
}
