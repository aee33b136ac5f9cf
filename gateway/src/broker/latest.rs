//! The newest event of each type, in memory: rebuilt from the store at start, updated after
//! each commit (so `query latest` right after an acknowledged registration sees it), and never
//! touched by retention.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rivulet_core::owned::{Event, EventPath};

#[derive(Debug, Default)]
pub(super) struct Latest {
    by_type: Mutex<BTreeMap<EventPath, Arc<Event>>>,
}

impl Latest {
    pub(super) fn new(events: Vec<Event>) -> Latest {
        let by_type = events.into_iter().map(|event| (event.event_type.clone(), Arc::new(event))).collect();
        Latest { by_type: Mutex::new(by_type) }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<EventPath, Arc<Event>>> {
        // A poisoned lock only means a panic elsewhere; the map stays consistent.
        self.by_type.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps each type's newest of `events` by the store's rule: the latest timestamp, and on
    /// equal timestamps the event committed later (events imported from other gateways keep
    /// their own timestamps, so commit order is not time order).
    pub(super) fn update(&self, events: &[Arc<Event>]) {
        let mut newest: HashMap<&EventPath, &Arc<Event>> = HashMap::new();
        for event in events {
            match newest.entry(&event.event_type) {
                Entry::Occupied(mut entry) => {
                    if event.timestamp >= entry.get().timestamp {
                        entry.insert(event);
                    }
                }
                Entry::Vacant(entry) => {
                    entry.insert(event);
                }
            }
        }
        let mut latest = self.lock();
        for (event_type, event) in newest {
            if latest.get(event_type).is_none_or(|known| event.timestamp >= known.timestamp) {
                latest.insert(event_type.clone(), event.clone());
            }
        }
    }

    /// The newest event of every type one of `patterns` matches (every type when `None`).
    pub(super) fn matching(&self, patterns: Option<&[EventPath]>) -> Vec<Event> {
        self.lock()
            .values()
            .filter(|event| patterns.is_none_or(|patterns| patterns.iter().any(|p| p.matches(&event.event_type))))
            .map(|event| Event::clone(event))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rivulet_core::model::{EventId, Timestamp};

    fn event(server: u64, instance: u64, s: i64) -> Arc<Event> {
        Arc::new(Event {
            id: EventId { server, session: 1, instance },
            event_type: EventPath::parse("a"),
            timestamp: Timestamp { s, us: 0 },
            source_timestamp: None,
            payload: None,
        })
    }

    #[test]
    fn the_latest_is_the_latest_in_time_then_the_later_committed_as_the_store_keeps_it() {
        let latest = Latest::default();
        // An imported event with an older timestamp, committed after a newer local one.
        latest.update(&[event(1, 1, 20), event(9, 1, 10)]);
        assert_eq!(latest.matching(None)[0].id, event(1, 1, 20).id, "time, not commit order");
        // Equal timestamps: the later committed wins, whatever the server ids.
        latest.update(&[event(0, 7, 20)]);
        assert_eq!(latest.matching(None)[0].id, event(0, 7, 20).id);
        latest.update(&[event(5, 1, 30), event(2, 1, 30)]);
        assert_eq!(latest.matching(None)[0].id, event(2, 1, 30).id, "later in the same commit");
    }
}
