//! Volatile event types: routed to the subscribers that are connected and never stored, like
//! NATS core or MQTT QoS 0. A registration of one is acknowledged once routed, so the group
//! commit (an fsync) is not on its path. What that gives up is written in docs/GATEWAY.md
//! ("Volatile events"): no history, no latest, no persisted subscribers, no federation.

use rivulet_core::owned::{EventPath, SubscriptionIndex};

/// The patterns of the volatile event types (`--volatile`, `volatile = [...]`).
#[derive(Debug, Default)]
pub(super) struct Volatile {
    patterns: Vec<EventPath>,
    /// `None` when there are none: the common case costs one branch per batch.
    index: Option<SubscriptionIndex<()>>,
}

impl Volatile {
    pub(super) fn new(patterns: Vec<EventPath>) -> Volatile {
        let index = (!patterns.is_empty()).then(|| {
            let mut index = SubscriptionIndex::new();
            index.insert((), &patterns);
            index
        });
        Volatile { patterns, index }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.index.is_none()
    }

    /// Whether events of `event_type` are volatile.
    pub(super) fn contains(&self, event_type: &EventPath) -> bool {
        self.index.as_ref().is_some_and(|index| {
            // A vector of `()` never allocates.
            let mut found = Vec::new();
            index.matching(event_type, &mut found);
            !found.is_empty()
        })
    }

    pub(super) fn patterns(&self) -> &[EventPath] {
        &self.patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_matching_a_pattern_are_volatile_and_no_others() {
        let patterns = ["telemetry/*", "site/?/vibration"].map(|p| EventPath::parse_pattern(p).unwrap());
        let volatile = Volatile::new(patterns.to_vec());
        for volatile_type in ["telemetry/a", "telemetry/a/b", "site/3/vibration"] {
            assert!(volatile.contains(&EventPath::parse(volatile_type)), "{volatile_type}");
        }
        for stored in ["site/3/temp", "site/3/vibration/x", "alarm/telemetry/a"] {
            assert!(!volatile.contains(&EventPath::parse(stored)), "{stored}");
        }
        assert!(Volatile::new(Vec::new()).is_empty());
        assert!(!Volatile::new(Vec::new()).contains(&EventPath::parse("a")));
    }
}
