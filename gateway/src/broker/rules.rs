//! Rules on what an event holds, which every registration passes whichever front-end it came
//! through: a front-end that defines such a rule (stream-sea's schemas) adds it, and the broker
//! applies it with the ACL check, so a device, a hat client or a Kelvin app is held to it too.

use std::sync::{Arc, PoisonError};

use rivulet_core::owned::RegisterEvent;

use super::{Broker, BrokerError};
use crate::access::Principal;

/// A rule on events' contents.
pub trait PayloadRule: Send + Sync + 'static {
    /// Why `event` may not be registered, if it may not (its type has passed the ACL).
    fn check(&self, event: &RegisterEvent) -> Result<(), String>;
}

impl Broker {
    /// Adds a rule every registration from now on passes.
    pub fn add_rule(&self, rule: Arc<dyn PayloadRule>) {
        self.rules.write().unwrap_or_else(PoisonError::into_inner).push(rule);
    }

    /// Whether `who` may register `event`: its type ([`Broker::check_register`]) and every
    /// rule on its contents. Cheap enough to call per event as it arrives.
    pub fn check_event(&self, who: &Principal<'_>, event: &RegisterEvent) -> Result<(), BrokerError> {
        self.check_register(who, &event.event_type)?;
        let rules = self.rules.read().unwrap_or_else(PoisonError::into_inner);
        for rule in rules.iter() {
            rule.check(event).map_err(BrokerError::Invalid)?;
        }
        Ok(())
    }
}
