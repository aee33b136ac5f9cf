//! Fan-out of events to subscribers, knowing no wire format: who gets an event (a subscription
//! index over every subscriber's patterns, then its server-id and persisted filters), each
//! subscriber's events in the order they were published, and the slow-consumer policy: a
//! subscriber whose queue is full, in events or in bytes, or that holds the most when all queues
//! together are full ([`FanoutLimits`], `budget.rs`), is cut off, told why and counted, so
//! nobody else slows down and the gateway's memory stays bounded.
//!
//! A [`crate::Server`] makes one of its own, or shares one ([`crate::server::ServerOptions::fanout`]):
//! a gateway owns one and every protocol front-end subscribes to it, so one publish reaches
//! clients of every protocol in the same order.
//!
//! Publishers that would rather wait than see a subscriber cut off wait for room
//! ([`Fanout::room`], `flow.rs`): while a subscriber is past its high-water mark, until it took
//! half of it, or is cut off for taking nothing for [`FanoutLimits::stall`].
//!
//! A subscriber reports what became of its events ([`Subscriber::delivered`],
//! [`Subscriber::skipped`], [`Subscriber::acknowledged`]) so that a publisher can wait until
//! every subscriber it reached has taken them ([`Fanout::publish_acknowledged`]).

mod acks;
mod budget;
mod flow;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rivulet_core::owned::{Event, EventPath, SubscriptionIndex};
use tokio::sync::{mpsc, watch};

use acks::AckTracker;
pub use budget::{CutOff, FanoutLimits, footprint};
use budget::{Pool, Queued};

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
    /// Subscribers cut off (see [`CutOff`]).
    pub cut_off: u64,
    /// Bytes queued for all subscribers now ([`footprint`]s, an event once per queue).
    pub queued_bytes: u64,
}

/// The subscribers and the index of their patterns, under one lock: a publish sees one
/// consistent set, and its events enter every queue in the same order.
pub struct Fanout {
    table: Mutex<Table>,
    /// The limits, the bytes queued for all and the congested subscribers.
    pool: Pool,
    next_id: AtomicU64,
    queued: AtomicU64,
    cut_off: AtomicU64,
    /// Bumped whenever a subscriber comes, goes or changes its patterns (a gateway's federation
    /// tells its peers what its subscribers want).
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout").field("limits", &self.pool.limits).field("stats", &self.stats()).finish()
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
    /// Bytes in its queue, and whether it was cut off.
    bytes: Arc<Queued>,
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
    /// A fan-out that cuts off a subscriber once `limits` are reached (at least one event).
    pub fn new(limits: FanoutLimits) -> Arc<Fanout> {
        Arc::new(Fanout {
            table: Mutex::new(Table::default()),
            pool: Pool::new(FanoutLimits {
                events: limits.events.max(1),
                // Publishers wait before the count limit cuts a subscriber off.
                high_water: limits.high_water.min(limits.events / 2).max(1),
                ..limits
            }),
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

    pub fn limits(&self) -> FanoutLimits {
        self.pool.limits
    }

    pub fn stats(&self) -> FanoutStats {
        FanoutStats {
            subscribers: lock(&self.table).entries.len(),
            queued: self.queued.load(Relaxed),
            cut_off: self.cut_off.load(Relaxed),
            queued_bytes: self.pool.total.load(Relaxed),
        }
    }

    /// A new subscriber with `interest`; it gets what is published from now on, until it is
    /// dropped or cut off. `label` names it in the log line of a cut-off.
    pub fn subscribe(self: &Arc<Self>, interest: Interest, label: String) -> Subscriber {
        let id = self.next_id.fetch_add(1, Relaxed);
        let (queue, events) = mpsc::channel(self.pool.limits.events);
        let (settled_tx, settled) = watch::channel(0);
        let (cut_off, cut_off_rx) = watch::channel(false);
        let bytes = Queued::new();
        let mut table = lock(&self.table);
        table.index.insert(id, &interest.patterns);
        let entry = Entry { interest, label, queue, bytes: bytes.clone(), queued: 0, settled, cut_off };
        table.entries.insert(id, entry);
        drop(table);
        self.changed();
        Subscriber { id, fanout: self.clone(), events, bytes, cut_off: cut_off_rx, acks: AckTracker::new(settled_tx) }
    }

    /// Queues `events` to every subscriber that wants them (see [`Interest`]), in order. A
    /// subscriber whose queue is full is cut off (logged and counted) and gets nothing more; so
    /// is the one holding the most bytes when all queues together are full.
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
            let Some(&(id, _)) = group.first() else { continue };
            let mut queued_any = false;
            for &(_, at) in group {
                let Some(entry) = entries.get(&id) else { break };
                if entry.interest.persisted != persisted || *entry.cut_off.borrow() {
                    break;
                }
                let (Some(event), Some(slot)) = (events.get(at), shared.get_mut(at)) else { continue };
                if !entry.interest.takes(event.event().id.server, persisted) {
                    continue;
                }
                debug_assert!(
                    entry.interest.patterns.iter().any(|p| p.matches(&event.event().event_type)),
                    "the index matched what the patterns do not"
                );
                let size = footprint(event.event());
                let limits = &self.pool.limits;
                if !entry.bytes.fits(size, limits.bytes) {
                    self.cut(entry, CutOff::Bytes(limits.bytes));
                    break;
                }
                if self.pool.total.load(Relaxed).saturating_add(size) > limits.total_bytes {
                    // Whoever holds the most gives way: a reader that keeps up holds little.
                    let largest = entries.values().max_by_key(|e| e.bytes.bytes());
                    if let Some(largest) = largest.filter(|e| e.bytes.bytes() > 0) {
                        self.cut(largest, CutOff::Total(limits.total_bytes));
                    }
                    let Some(entry) = entries.get(&id) else { break };
                    if *entry.cut_off.borrow() {
                        break;
                    }
                }
                let Some(entry) = entries.get_mut(&id) else { break };
                let event = slot.get_or_insert_with(|| event.share()).clone();
                // Counted before it is in the queue: the subscriber may take it at once.
                entry.bytes.add(size, &self.pool);
                match entry.queue.try_send(event) {
                    Ok(()) => {
                        entry.queued += 1;
                        queued_total += 1;
                        queued_any = true;
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        entry.bytes.undo(size, &self.pool);
                        self.cut(entry, CutOff::Events(self.pool.limits.events));
                        break;
                    }
                    // The subscriber is being dropped; its entry goes with it.
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        entry.bytes.undo(size, &self.pool);
                        break;
                    }
                }
            }
            let Some(entry) = entries.get(&id) else { continue };
            if let Some(waits) = waits.as_deref_mut()
                && queued_any
                && !*entry.cut_off.borrow()
            {
                waits.push((entry.settled.clone(), entry.queued));
            }
        }
        self.queued.fetch_add(queued_total, Relaxed);
    }

    /// Cuts a subscriber off (once): it is told, its queued bytes leave the total, logged and
    /// counted.
    fn cut(&self, entry: &Entry, why: CutOff) {
        if entry.bytes.cut(why, &self.pool) {
            log::warn!("cutting off {}: too slow, it {why}", entry.label);
            entry.cut_off.send_replace(true);
            self.cut_off.fetch_add(1, Relaxed);
        }
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
        if let Some(entry) = table.entries.remove(&id) {
            // What it had not taken goes with it.
            entry.bytes.release(&self.pool);
        }
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
    bytes: Arc<Queued>,
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
        self.events.recv().await.inspect(|event| self.taken(event))
    }

    /// An event left the queue: its bytes leave the budgets.
    fn taken(&self, event: &Event) {
        self.bytes.take(footprint(event), &self.fanout.pool);
    }

    /// The next event (only with `take`: a client without room for one waits for the cut-off
    /// alone), or the cut-off, which comes first once it happened.
    pub async fn next(&mut self, take: bool) -> Delivery {
        let Subscriber { events, cut_off, .. } = self;
        let event = tokio::select! {
            biased;
            // Only whether it resolved matters: the guard it returns must not live on.
            () = async { drop(cut_off.wait_for(|&cut| cut).await) } => return Delivery::CutOff,
            Some(event) = events.recv(), if take => event,
            // The queue's sender lives as long as `self`, so `None` never comes; if it did, the
            // cut-off is all that is left to wait for.
            else => std::future::pending().await,
        };
        self.taken(&event);
        Delivery::Event(event)
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        self.events.try_recv().ok().inspect(|event| self.taken(event))
    }

    /// Replaces the patterns; events published after this returns match the new ones.
    pub fn set_patterns(&self, patterns: &[EventPath]) {
        self.fanout.set_patterns(self.id, patterns);
    }

    pub fn is_cut_off(&self) -> bool {
        *self.cut_off.borrow()
    }

    /// Why it was cut off, if it was.
    pub fn cut_off_why(&self) -> Option<CutOff> {
        self.bytes.cut_off()
    }

    /// What to tell a client that was cut off.
    pub fn cut_off_reason(&self) -> String {
        let why = self.cut_off_why().unwrap_or(CutOff::Events(self.fanout.pool.limits.events));
        format!("{why}; the server closes clients that do not keep up")
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

#[cfg(test)]
mod tests;
