//! The newest event of each type, in memory: rebuilt from the store at start, updated after
//! each commit (so `query latest` right after an acknowledged registration sees it), and never
//! touched by retention.

use std::collections::BTreeMap;
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

    /// Keeps each type's newest of `events` (by timestamp, as the store does, then id: events
    /// imported from other gateways have other servers' ids).
    pub(super) fn update(&self, events: &[Arc<Event>]) {
        let mut latest = self.lock();
        // Newest first, so a type registered many times in one commit is copied once.
        for event in events.iter().rev() {
            let newer = latest
                .get(&event.event_type)
                .is_none_or(|known| (known.timestamp, known.id) < (event.timestamp, event.id));
            if newer {
                latest.insert(event.event_type.clone(), event.clone());
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
