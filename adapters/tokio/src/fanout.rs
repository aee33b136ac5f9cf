//! Fan-out of events to subscribers, knowing no wire format: who gets an event (a subscription
//! index over every subscriber's patterns, then its server-id and persisted filters), each
//! subscriber's events in the order they were published, and the slow-consumer policy: a
//! subscriber whose queue is full is cut off, told why and counted, so nobody else slows down.
//!
//! A [`crate::Server`] makes one of its own, or shares one ([`crate::server::ServerOptions::fanout`]):
//! a gateway owns one and every protocol front-end subscribes to it, so one publish reaches
//! clients of every protocol in the same order.
//!
//! A subscriber reports what became of its events ([`Subscriber::delivered`],
//! [`Subscriber::skipped`], [`Subscriber::acknowledged`]) so that a publisher can wait until
//! every subscriber it reached has taken them ([`Fanout::publish_acknowledged`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rivulet_core::owned::{Event, EventPath, SubscriptionIndex};
use tokio::sync::{mpsc, watch};

/// What a subscriber wants: events whose type one of `patterns` matches, registered by server
/// `server_id` (any when `None`), and published with the same `persisted` flag (a subscriber
/// that asked for persisted events gets them only once they are durable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    pub patterns: Vec<EventPath>,
    pub server_id: Option<u64>,
    pub persisted: bool,
}

impl Interest {
    /// Whether an event of this server, published with this flag, is wanted (the patterns aside:
    /// the index answers those).
    fn takes(&self, server: u64, persisted: bool) -> bool {
        self.persisted == persisted && self.server_id.is_none_or(|id| id == server)
    }
}

/// An event [`Fanout::publish`] takes: an [`Event`], copied into an `Arc` for the queues once
/// someone wants it, or an `Arc<Event>` already shared, queued without a copy.
pub trait Notified {
    fn event(&self) -> &Event;
    fn share(&self) -> Arc<Event>;
}

impl Notified for Event {
    fn event(&self) -> &Event {
        self
    }
    fn share(&self) -> Arc<Event> {
        Arc::new(self.clone())
    }
}

impl Notified for Arc<Event> {
    fn event(&self) -> &Event {
        self
    }
    fn share(&self) -> Arc<Event> {
        self.clone()
    }
}

/// Counters of a fan-out since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanoutStats {
    /// Subscribers now.
    pub subscribers: usize,
    /// Events put in subscribers' queues.
    pub queued: u64,
    /// Subscribers cut off for falling a whole queue behind.
    pub cut_off: u64,
}

/// The subscribers and the index of their patterns, under one lock: a publish sees one
/// consistent set, and its events enter every queue in the same order.
pub struct Fanout {
    table: Mutex<Table>,
    /// Events queued per subscriber before it is cut off.
    queue: usize,
    next_id: AtomicU64,
    queued: AtomicU64,
    cut_off: AtomicU64,
    /// Bumped whenever a subscriber comes, goes or changes its patterns (a gateway's federation
    /// tells its peers what its subscribers want).
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout").field("queue", &self.queue).field("stats", &self.stats()).finish()
    }
}

#[derive(Default)]
struct Table {
    entries: HashMap<u64, Entry>,
    index: SubscriptionIndex<u64>,
}

/// What the fan-out keeps of one subscriber.
struct Entry {
    interest: Interest,
    /// Names the subscriber in logs (a connection and its client, say).
    label: String,
    queue: mpsc::Sender<Arc<Event>>,
    /// Events ever queued to it: a position comparable with what it reports settled.
    queued: u64,
    settled: watch::Receiver<u64>,
    cut_off: watch::Sender<bool>,
}

/// A poisoned lock only means a panic elsewhere; the table stays consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Fanout {
    /// A fan-out that cuts off a subscriber once `queue` events wait for it (at least one).
    pub fn new(queue: usize) -> Arc<Fanout> {
        Arc::new(Fanout {
            table: Mutex::new(Table::default()),
            queue: queue.max(1),
            next_id: AtomicU64::new(1),
            queued: AtomicU64::new(0),
            cut_off: AtomicU64::new(0),
            changes: watch::Sender::new(0),
        })
    }

    /// Every pattern some subscriber holds, each once, in order.
    pub fn patterns(&self) -> Vec<EventPath> {
        let table = lock(&self.table);
        let all: std::collections::BTreeSet<&EventPath> =
            table.entries.values().flat_map(|entry| &entry.interest.patterns).collect();
        all.into_iter().cloned().collect()
    }

    /// Changes whenever the subscribers' patterns may have changed (see [`Fanout::patterns`]).
    pub fn watch_patterns(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// Events queued per subscriber before it is cut off.
    pub fn queue_limit(&self) -> usize {
        self.queue
    }

    pub fn stats(&self) -> FanoutStats {
        FanoutStats {
            subscribers: lock(&self.table).entries.len(),
            queued: self.queued.load(Relaxed),
            cut_off: self.cut_off.load(Relaxed),
        }
    }

    /// A new subscriber with `interest`; it gets what is published from now on, until it is
    /// dropped or cut off. `label` names it in the log line of a cut-off.
    pub fn subscribe(self: &Arc<Self>, interest: Interest, label: String) -> Subscriber {
        let id = self.next_id.fetch_add(1, Relaxed);
        let (queue, events) = mpsc::channel(self.queue);
        let (settled_tx, settled) = watch::channel(0);
        let (cut_off, cut_off_rx) = watch::channel(false);
        let mut table = lock(&self.table);
        table.index.insert(id, &interest.patterns);
        table.entries.insert(id, Entry { interest, label, queue, queued: 0, settled, cut_off });
        drop(table);
        self.changed();
        Subscriber {
            id,
            fanout: self.clone(),
            events,
            cut_off: cut_off_rx,
            acks: AckTracker { settled: 0, in_flight: VecDeque::new(), tx: settled_tx },
        }
    }

    /// Queues `events` to every subscriber that wants them (see [`Interest`]), in order. A
    /// subscriber whose queue is full is cut off (logged and counted) and gets nothing more.
    pub fn publish<E: Notified>(&self, events: &[E], persisted: bool) {
        self.fan_out(events, persisted, None);
    }

    /// As [`Fanout::publish`] (queued now), returning what resolves once every subscriber these
    /// events went to has settled them (acknowledged, skipped, or dropped with the subscriber).
    pub fn publish_acknowledged<E: Notified>(
        &self,
        events: &[E],
        persisted: bool,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut waits = Vec::new();
        self.fan_out(events, persisted, Some(&mut waits));
        async move {
            for (mut settled, target) in waits {
                // An error means the subscriber is gone: nothing more to wait for.
                let _ = settled.wait_for(|&s| s >= target).await;
            }
        }
    }

    fn fan_out<E: Notified>(
        &self,
        events: &[E],
        persisted: bool,
        mut waits: Option<&mut Vec<(watch::Receiver<u64>, u64)>>,
    ) {
        // Each event is shared once (copied into an `Arc` only if someone wants it).
        let mut shared: Vec<Option<Arc<Event>>> = vec![None; events.len()];
        // One lock over the whole fan-out keeps each queue in the order of the calls.
        let mut table = lock(&self.table);
        let Table { entries, index } = &mut *table;
        // (subscriber, event index) for every pattern match, grouped by subscriber with its
        // events in order: the index finds them without testing every pattern.
        let (mut targets, mut matched) = (Vec::new(), Vec::new());
        for (at, event) in events.iter().enumerate() {
            index.matching(&event.event().event_type, &mut matched);
            targets.extend(matched.iter().map(|&id| (id, at)));
        }
        targets.sort_unstable();
        let mut queued_total = 0;
        for group in targets.chunk_by(|a, b| a.0 == b.0) {
            let Some(entry) = group.first().and_then(|&(id, _)| entries.get_mut(&id)) else { continue };
            if entry.interest.persisted != persisted || *entry.cut_off.borrow() {
                continue;
            }
            let mut queued_any = false;
            for &(_, at) in group {
                let (Some(event), Some(slot)) = (events.get(at), shared.get_mut(at)) else { continue };
                if !entry.interest.takes(event.event().id.server, persisted) {
                    continue;
                }
                debug_assert!(
                    entry.interest.patterns.iter().any(|p| p.matches(&event.event().event_type)),
                    "the index matched what the patterns do not"
                );
                let event = slot.get_or_insert_with(|| event.share()).clone();
                match entry.queue.try_send(event) {
                    Ok(()) => {
                        entry.queued += 1;
                        queued_total += 1;
                        queued_any = true;
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        log::warn!("cutting off {}: too slow, {} events queued and not taken", entry.label, self.queue);
                        entry.cut_off.send_replace(true);
                        self.cut_off.fetch_add(1, Relaxed);
                        break;
                    }
                    // The subscriber is being dropped; its entry goes with it.
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
            if let Some(waits) = waits.as_deref_mut()
                && queued_any
                && !*entry.cut_off.borrow()
            {
                waits.push((entry.settled.clone(), entry.queued));
            }
        }
        self.queued.fetch_add(queued_total, Relaxed);
    }

    fn set_patterns(&self, id: u64, patterns: &[EventPath]) {
        let mut table = lock(&self.table);
        let Table { entries, index } = &mut *table;
        if let Some(entry) = entries.get_mut(&id) {
            index.insert(id, patterns);
            entry.interest.patterns = patterns.to_vec();
        }
        drop(table);
        self.changed();
    }

    fn remove(&self, id: u64) {
        let mut table = lock(&self.table);
        table.index.remove(id);
        table.entries.remove(&id);
        drop(table);
        self.changed();
    }
}

/// What [`Subscriber::next`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Event(Arc<Event>),
    /// The fan-out cut the subscriber off: it gets nothing more.
    CutOff,
}

/// One subscriber's end of a [`Fanout`]: its queue of events, whether it was cut off, and what
/// it reports of their fate. Dropping it unsubscribes.
pub struct Subscriber {
    id: u64,
    fanout: Arc<Fanout>,
    events: mpsc::Receiver<Arc<Event>>,
    cut_off: watch::Receiver<bool>,
    acks: AckTracker,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").field("id", &self.id).field("cut_off", &self.is_cut_off()).finish()
    }
}

impl Subscriber {
    /// Unique within its fan-out.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next event, waiting for one.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        self.events.recv().await
    }

    /// The next event (only with `take`: a client without room for one waits for the cut-off
    /// alone), or the cut-off, which comes first once it happened.
    pub async fn next(&mut self, take: bool) -> Delivery {
        let Subscriber { events, cut_off, .. } = self;
        tokio::select! {
            biased;
            // Only whether it resolved matters: the guard it returns must not live on.
            () = async { drop(cut_off.wait_for(|&cut| cut).await) } => Delivery::CutOff,
            Some(event) = events.recv(), if take => Delivery::Event(event),
            // The queue's sender lives as long as `self`, so `None` never comes; if it did, the
            // cut-off is all that is left to wait for.
            else => std::future::pending().await,
        }
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        self.events.try_recv().ok()
    }

    /// Replaces the patterns; events published after this returns match the new ones.
    pub fn set_patterns(&self, patterns: &[EventPath]) {
        self.fanout.set_patterns(self.id, patterns);
    }

    pub fn is_cut_off(&self) -> bool {
        *self.cut_off.borrow()
    }

    /// What to tell a client that was cut off.
    pub fn cut_off_reason(&self) -> String {
        format!("fell {} notifications behind; the server closes clients that do not keep up", self.fanout.queue)
    }

    /// An event taken from the queue went to the client, which will acknowledge it.
    pub fn delivered(&mut self) {
        self.acks.delivered();
    }

    /// An event taken from the queue did not go to the client (too large for it, say).
    pub fn skipped(&mut self) {
        self.acks.skipped();
    }

    /// The client acknowledged its `count` oldest delivered events.
    pub fn acknowledged(&mut self, count: u32) {
        self.acks.acknowledged(count);
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.fanout.remove(self.id);
    }
}

/// Which events are settled (acknowledged, skipped, or dropped with the subscriber), counted in
/// queue order so that [`Fanout::publish_acknowledged`] knows when its own are done.
struct AckTracker {
    settled: u64,
    /// One entry per delivered event awaiting its ack: how many skipped ones follow it.
    in_flight: VecDeque<u64>,
    tx: watch::Sender<u64>,
}

impl AckTracker {
    fn delivered(&mut self) {
        self.in_flight.push_back(0);
    }

    fn skipped(&mut self) {
        match self.in_flight.back_mut() {
            Some(after) => *after += 1,
            None => self.advance(1),
        }
    }

    fn acknowledged(&mut self, count: u32) {
        let mut done = 0;
        for _ in 0..count {
            match self.in_flight.pop_front() {
                Some(after) => done += 1 + after,
                None => break,
            }
        }
        self.advance(done);
    }

    fn advance(&mut self, done: u64) {
        if done > 0 {
            self.settled += done;
            self.tx.send_replace(self.settled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rivulet_core::model::{EventId, Timestamp};

    fn event(instance: u64, server: u64, ty: &str) -> Event {
        Event {
            id: EventId { server, session: 1, instance },
            event_type: EventPath::parse(ty),
            timestamp: Timestamp::from_micros(0),
            source_timestamp: None,
            payload: None,
        }
    }

    fn interest(patterns: &[&str]) -> Interest {
        Interest { patterns: patterns.iter().map(|p| EventPath::parse(p)).collect(), ..Interest::default() }
    }

    fn drain(subscriber: &mut Subscriber) -> Vec<u64> {
        std::iter::from_fn(|| subscriber.try_recv()).map(|e| e.id.instance).collect()
    }

    #[test]
    fn each_subscriber_gets_what_it_wants_in_publish_order() {
        let fanout = Fanout::new(16);
        let mut a = fanout.subscribe(interest(&["a/*"]), "a".into());
        let mut b = fanout.subscribe(Interest { server_id: Some(2), ..interest(&["*"]) }, "b".into());
        let mut persisted = fanout.subscribe(Interest { persisted: true, ..interest(&["*"]) }, "p".into());
        fanout.publish(&[event(1, 1, "a/x"), event(2, 2, "b"), event(3, 2, "a/y")], false);
        fanout.publish(&[event(4, 1, "a")], false);
        assert_eq!(drain(&mut a), [1, 3, 4]);
        assert_eq!(drain(&mut b), [2, 3], "only server 2's");
        assert!(drain(&mut persisted).is_empty(), "nothing durable was published");
        fanout.publish(&[event(1, 1, "a/x")], true);
        assert_eq!(drain(&mut persisted), [1]);
        assert!(drain(&mut a).is_empty());
        assert_eq!(fanout.stats(), FanoutStats { subscribers: 3, queued: 6, cut_off: 0 });
    }

    #[test]
    fn new_patterns_apply_to_later_events_and_dropping_unsubscribes() {
        let fanout = Fanout::new(16);
        let mut a = fanout.subscribe(interest(&["a"]), "a".into());
        a.set_patterns(&[EventPath::parse("b")]);
        fanout.publish(&[event(1, 1, "a"), event(2, 1, "b")], false);
        assert_eq!(drain(&mut a), [2]);
        drop(a);
        assert_eq!(fanout.stats().subscribers, 0);
    }

    #[tokio::test]
    async fn a_full_queue_cuts_off_that_subscriber_only() {
        let fanout = Fanout::new(2);
        let mut slow = fanout.subscribe(interest(&["*"]), "slow".into());
        let mut fast = fanout.subscribe(interest(&["*"]), "fast".into());
        for n in 1..=3 {
            fanout.publish(&[event(n, 1, "t")], false);
            assert_eq!(drain(&mut fast), [n]);
        }
        assert!(slow.is_cut_off());
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), slow.next(true)).await;
        assert_eq!(next.expect("resolves"), Delivery::CutOff, "the cut-off comes before what was queued");
        assert!(slow.cut_off_reason().contains("fell 2 notifications behind"));
        assert_eq!(drain(&mut slow), [1, 2], "what was queued stays; nothing after the cut");
        fanout.publish(&[event(4, 1, "t")], false);
        assert_eq!(drain(&mut fast), [4]);
        assert!(drain(&mut slow).is_empty());
        assert_eq!(fanout.stats().cut_off, 1);
    }

    #[tokio::test]
    async fn publish_acknowledged_waits_for_acks_and_skips() {
        let fanout = Fanout::new(16);
        let mut sub = fanout.subscribe(interest(&["*"]), "s".into());
        let events = [event(1, 1, "t"), event(2, 1, "t"), event(3, 1, "t")];
        let mut waiting = Box::pin(fanout.publish_acknowledged(&events, false));
        let wait = std::time::Duration::from_millis(20);
        assert!(tokio::time::timeout(wait, &mut waiting).await.is_err(), "nothing taken yet");
        for _ in 0..3 {
            sub.try_recv().expect("queued");
        }
        sub.delivered();
        sub.skipped();
        sub.delivered();
        sub.acknowledged(1);
        assert!(tokio::time::timeout(wait, &mut waiting).await.is_err(), "the third is not acknowledged");
        sub.acknowledged(1);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.expect("settled");
        // A subscriber that goes away settles everything it held.
        let mut waiting = Box::pin(fanout.publish_acknowledged(&[event(4, 1, "t")], false));
        assert!(tokio::time::timeout(wait, &mut waiting).await.is_err(), "queued, not taken");
        drop(sub);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.expect("settled by the drop");
    }
}
