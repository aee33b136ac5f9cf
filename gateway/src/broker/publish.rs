//! Publishing: a batch gets its ids and timestamp, goes to the subscribers that did not ask for
//! `persisted` and to the committer, all under one lock, so ids, notifications and commits share
//! one order. Every subscriber, of every front-end, sees events in id order.

use std::pin::Pin;
use std::sync::Arc;

use rivulet_core::model::{EventId, Timestamp};
use rivulet_core::owned::{Event, RegisterEvent};
use rivulet_tokio::fanout::Subscriber;
use tokio::sync::{mpsc, oneshot};

use super::commit::Pending;
use super::{Broker, BrokerError};
use crate::access::Principal;
use crate::store::{Commit, StoreError};

/// Events to publish for one principal, in order, and the session cursors to store with them:
/// `(session, next)` says that after these events the session expects sequence number `next`.
/// A cursor is durable exactly when its events are, which is what lets a protocol with sessions
/// (the native one; a federation link) resend after a lost link without storing twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub events: Vec<RegisterEvent>,
    pub sessions: Vec<(u64, u32)>,
}

/// Resolves once a published batch is durable, or with why it will not be.
pub type Durable = Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send>>;

/// A batch the broker took.
pub struct Published {
    /// The events with their ids and timestamp, when asked for (`answer`); empty otherwise.
    pub events: Vec<Event>,
    pub durable: Durable,
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published").field("events", &self.events).finish_non_exhaustive()
    }
}

/// Gives ids in the order batches reach the committer.
pub(super) struct Ids {
    pub(super) last: EventId,
    /// `None` once the broker is closed.
    pub(super) to_committer: Option<mpsc::Sender<Pending>>,
}

/// The time now as an event timestamp.
pub fn now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp::from_micros(i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX))
}

impl Broker {
    /// Publishes `batch` for `who`: ids, a timestamp, the subscribers that did not ask for
    /// `persisted` at once, and the store in the next group commit. Every event must pass
    /// [`Broker::check_event`] for `who`, or nothing of the batch is taken (a front-end that
    /// wants to refuse one event alone checks each as it arrives). With `answer`,
    /// [`Published::events`] holds the events as registered (a sequenced registration needs only
    /// its acknowledgement, and its events move into the commit without a copy).
    pub async fn publish(&self, who: &Principal<'_>, batch: Batch, answer: bool) -> Result<Published, BrokerError> {
        self.publish_noting(who, batch, answer, None, |_| {}).await
    }

    /// [`Broker::publish`] from a task that is also `own`'s only reader (a front-end whose
    /// connection loop both publishes and notifies): it does not wait for its own queue, which
    /// cannot drain while it waits ([`rivulet_tokio::fanout::Fanout::room_beside`]).
    pub async fn publish_beside(
        &self,
        who: &Principal<'_>,
        batch: Batch,
        answer: bool,
        own: Option<&Subscriber>,
    ) -> Result<Published, BrokerError> {
        self.publish_noting(who, batch, answer, own, |_| {}).await
    }

    /// [`Broker::publish`], and `note` sees the events with their ids before any subscriber
    /// does: a front-end that passes something of its own along with its clients' events (a
    /// Chaski message's uuid) files it there, where its other connections find it.
    pub async fn publish_noting(
        &self,
        who: &Principal<'_>,
        batch: Batch,
        answer: bool,
        own: Option<&Subscriber>,
        note: impl FnOnce(&[Arc<Event>]),
    ) -> Result<Published, BrokerError> {
        for event in &batch.events {
            self.check_event(who, event)?;
        }
        // Which events are volatile (routed, never stored), found before the lock is taken.
        let volatile: Vec<bool> = if self.volatile.is_empty() {
            Vec::new()
        } else {
            batch.events.iter().map(|event| self.volatile.contains(&event.event_type)).collect()
        };
        let timestamp = now();
        let mut ids = self.ids.lock().await;
        // Under the lock, one publisher at a time: while a subscriber is congested every
        // publisher waits, and the one let through checks again between the parts of its batch.
        self.fanout.room_beside(own).await;
        self.check_writable()?;
        let stopping = || BrokerError::Unavailable("the gateway is stopping".into());
        let to_committer = ids.to_committer.clone().ok_or_else(stopping)?;
        // Room in the committer's queue first: once subscribers have seen the events, handing
        // them over cannot fail.
        let permit = to_committer.reserve().await.map_err(|_| stopping())?;
        // A commit may have failed while we waited for room: then nothing more is taken, and no
        // subscriber hears of events that will not be written.
        self.check_writable()?;
        let mut next = ids.last;
        let events: Vec<Arc<Event>> = batch
            .events
            .into_iter()
            .map(|event| {
                next.instance += 1;
                Arc::new(Event {
                    id: next,
                    event_type: event.event_type,
                    timestamp,
                    source_timestamp: event.source_timestamp,
                    payload: event.payload,
                })
            })
            .collect();
        ids.last = next;
        note(&events);
        // In parts that fit between the high-water mark and the queue's limit, so that a large
        // batch does not cut off a subscriber the waiting protects.
        let limits = self.fanout.limits();
        let part = limits.events.saturating_sub(limits.high_water).max(1);
        for (n, events) in events.chunks(part).enumerate() {
            if n > 0 {
                self.fanout.room_beside(own).await;
            }
            self.fanout.publish(events, false);
        }
        let answered = if answer { events.iter().map(|event| Event::clone(event)).collect() } else { Vec::new() };
        let events = self.drop_volatile(events, &volatile);
        if events.is_empty() {
            // Volatile events only: acknowledged now that they are routed. The session cursors
            // still go to the store, in the next group commit, without waiting for it: should
            // the gateway die first, the stored cursor trails the client, whose resent
            // registrations are then taken as fresh (a gap is never a replay), and every number
            // skipped was a volatile event already routed.
            if !batch.sessions.is_empty() {
                let (unwatched, _) = oneshot::channel();
                let commit = Commit { sessions: batch.sessions, ..Commit::default() };
                permit.send(Pending { commit, durable: unwatched });
            }
            return Ok(Published { events: answered, durable: Box::pin(std::future::ready(Ok(()))) });
        }
        let (durable, done) = oneshot::channel();
        permit.send(Pending { commit: Commit { events, sessions: batch.sessions, ..Commit::default() }, durable });
        let durable: Durable = Box::pin(async move {
            match done.await {
                Ok(result) => result.map_err(BrokerError::Store),
                Err(_) => Err(BrokerError::Store(StoreError::Closed("the store is closed".into()))),
            }
        });
        Ok(Published { events: answered, durable })
    }

    /// `events` without the volatile ones (`volatile[i]` says whether `events[i]` is), which
    /// are counted: they were routed and go no further.
    fn drop_volatile(&self, mut events: Vec<Arc<Event>>, volatile: &[bool]) -> Vec<Arc<Event>> {
        if volatile.contains(&true) {
            let mut flags = volatile.iter();
            events.retain(|_| flags.next() == Some(&false));
            let routed = volatile.len() - events.len();
            self.counters.events_volatile.fetch_add(routed as u64, std::sync::atomic::Ordering::Relaxed);
        }
        events
    }

    /// After a failed commit nothing more is written until a restart: a later commit that
    /// succeeded would leave a hole behind registrations already acknowledged.
    pub(super) fn check_writable(&self) -> Result<(), BrokerError> {
        match self.store_failed.get() {
            Some(failed) => Err(BrokerError::Store(failed.clone())),
            None => Ok(()),
        }
    }

    /// After a commit: the latest table, then persisted subscribers.
    pub(super) fn committed(&self, events: &[Arc<Event>]) {
        self.latest.update(events);
        self.counters.events_in.fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.fanout.publish(events, true);
        if !events.is_empty() {
            // The store numbered them on from its last entry (`EventStore::admitted`).
            self.admitted.send_modify(|last| *last += events.len() as u64);
        }
    }
}
