//! Subscription changes on an open link, one at a time, so that each answer of the server
//! belongs to exactly one change; without a link, a change goes with the next init.

use std::collections::VecDeque;

use super::task::SessionMachine;
use super::{Answer, ClientError};
use crate::model::EventPath;

/// A change of the subscription list, waiting for its turn on an open link.
pub(super) enum SubscriptionChange {
    Add(EventPath, Answer<()>),
    Remove(EventPath, Answer<bool>),
}

/// Subscription changes on an open link, one at a time, so that each of the server's answers
/// belongs to exactly one change: a refused pattern is taken back out of the list and its caller
/// gets the reason.
#[derive(Default)]
pub(super) struct Subscriptions {
    /// The pattern the server's next answer is about, with its caller if it was added.
    waiting: Option<(EventPath, Option<Answer<()>>)>,
    queued: VecDeque<SubscriptionChange>,
    /// Answers to lists re-sent after a refusal (without the refused pattern), to skip.
    reverts: u32,
}

impl Subscriptions {
    pub(super) fn change(&mut self, machine: &mut SessionMachine, change: SubscriptionChange) {
        self.queued.push_back(change);
        self.start_next(machine);
    }

    /// Applies queued changes until one goes to the server.
    fn start_next(&mut self, machine: &mut SessionMachine) {
        while self.waiting.is_none() {
            let Some(change) = self.queued.pop_front() else { return };
            match change {
                SubscriptionChange::Add(pattern, answer) => {
                    if machine.subscriptions().iter().any(|known| known == pattern.as_ref()) {
                        drop(answer.send(Ok(())));
                    } else if machine.subscribe(pattern.as_ref()).is_err() {
                        drop(answer.send(Err(ClientError::TooLarge)));
                    } else {
                        self.waiting = Some((pattern, Some(answer)));
                    }
                }
                SubscriptionChange::Remove(pattern, answer) => {
                    let removed = machine.unsubscribe(pattern.as_ref());
                    let _ = answer.send(Ok(removed));
                    if removed {
                        // Its answer is awaited all the same: it belongs to this change.
                        self.waiting = Some((pattern, None));
                    }
                }
            }
        }
    }

    /// The server answered a subscription list: `refusal` is its reason if it refused.
    pub(super) fn answered(&mut self, machine: &mut SessionMachine, refusal: Option<String>) {
        if self.reverts > 0 {
            self.reverts -= 1;
            return;
        }
        match (self.waiting.take(), refusal) {
            (Some((pattern, Some(answer))), Some(reason)) => {
                log::warn!("server refused subscription {pattern}: {reason}");
                machine.unsubscribe(pattern.as_ref());
                self.reverts += 1;
                drop(answer.send(Err(ClientError::Refused(reason))));
            }
            (Some((_, Some(answer))), None) => drop(answer.send(Ok(()))),
            (Some((pattern, None)), Some(reason)) => log::warn!("server refused our list without {pattern}: {reason}"),
            (Some((_, None)), None) | (None, _) => {}
        }
        self.start_next(machine);
    }

    /// The link ended: every change stands in the list, and goes with the next init.
    pub(super) fn link_ended(&mut self, machine: &mut SessionMachine) {
        self.reverts = 0;
        if let Some((_, Some(answer))) = self.waiting.take() {
            drop(answer.send(Ok(())));
        }
        for change in self.queued.drain(..) {
            apply_offline(machine, change);
        }
    }
}

/// A subscription change without a link: it goes with the next init.
pub(super) fn apply_offline(machine: &mut SessionMachine, change: SubscriptionChange) {
    match change {
        SubscriptionChange::Add(pattern, answer) => {
            drop(answer.send(machine.subscribe(pattern.as_ref()).map_err(|_| ClientError::TooLarge)));
        }
        SubscriptionChange::Remove(pattern, answer) => drop(answer.send(Ok(machine.unsubscribe(pattern.as_ref())))),
    }
}
