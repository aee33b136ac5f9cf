//! Where the gateway keeps events: an [`EventStore`] trait, and [`RedbStore`], the default
//! backend (redb: a copy-on-write B-tree in one file, one fsync per commit).
//!
//! The broker writes in group commits: one [`EventStore::commit`] carries every event registered
//! since the last one, together with each client session's next sequence number, so a registration
//! is durable exactly when the session knows it is (see docs/PROTOCOL.md §5.1). Each commit also
//! extends the admission log that federation links send from, with the peers' cursors stored in
//! the same transaction (docs/FEDERATION.md).

#[cfg(test)]
mod contract;
mod log;
mod query;
mod redb;

pub use self::log::LogStore;
pub use self::redb::RedbStore;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use rivulet_core::model::{EventId, Timestamp};
use rivulet_core::owned::{Event, QueryPage, TimeseriesQuery};

/// What went wrong in a store, by kind; the message says what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Reading or writing the store's file failed: a full disk, permissions, an I/O error.
    Io(String),
    /// The store holds what it cannot read: a damaged file, or one written by something else.
    Corrupt(String),
    /// The store takes nothing more: it is closed, or an earlier commit failed.
    Closed(String),
    /// The request does not fit what is stored: a query after an event that is not there.
    Invalid(String),
}

impl StoreError {
    pub fn message(&self) -> &str {
        match self {
            StoreError::Io(m) | StoreError::Corrupt(m) | StoreError::Closed(m) | StoreError::Invalid(m) => m,
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for StoreError {}

/// What one query page may cost the store: stored events looked at, and a flag its asker sets
/// when nobody waits for the answer any more (its client left).
#[derive(Debug, Default)]
pub struct Scan {
    /// At most this many stored events looked at (0: no limit).
    pub max_events: u64,
    pub cancelled: Option<Arc<AtomicBool>>,
    /// Set by the store when it stopped at `max_events`.
    pub spent: AtomicBool,
}

impl Scan {
    /// Whether the scan is to stop: cancelled (checked every 1024 events, not to cost more).
    pub fn is_cancelled(&self, looked_at: u64) -> bool {
        looked_at.is_multiple_of(1024) && self.cancelled.as_ref().is_some_and(|c| c.load(Relaxed))
    }

    /// Whether `looked_at` events are as many as it may look at.
    pub fn is_spent(&self, looked_at: u64) -> bool {
        self.max_events > 0 && looked_at >= self.max_events
    }
}

/// One group commit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Events in registration order, ids and timestamps already assigned; shared with the
    /// notifications and the latest table rather than copied for each.
    pub events: Vec<Arc<Event>>,
    /// How each event of `events` travels on to other gateways (same length; empty: every
    /// event was admitted here, with [`Hop::LOCAL`]).
    pub hops: Vec<Hop>,
    /// Client session → the next sequence number it expects, after these events.
    pub sessions: Vec<(u64, u32)>,
    /// Peer gateway (its server id) → how far its admission log has been taken, after these
    /// events: a federation link resumes there.
    pub peers: Vec<(u64, PeerCursor)>,
}

impl Commit {
    pub fn new(events: impl IntoIterator<Item = Event>, sessions: Vec<(u64, u32)>) -> Commit {
        Commit { events: events.into_iter().map(Arc::new).collect(), sessions, ..Commit::default() }
    }

    /// The hop of event `i`.
    pub fn hop(&self, i: usize) -> Hop {
        self.hops.get(i).copied().unwrap_or(Hop::LOCAL)
    }
}

/// How an admitted event travels on between gateways (federation, docs/FEDERATION.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// Links it may still cross; 0: it goes no further. For an event admitted here, the
    /// federation's TTL is applied when it is sent.
    pub ttl: u8,
    /// The peer gateway (server id) it came from; `None`: admitted here.
    pub via: Option<u64>,
}

impl Hop {
    /// An event a client of this gateway registered.
    pub const LOCAL: Hop = Hop { ttl: u8::MAX, via: None };
}

/// How far a peer gateway's admission log has been taken: the peer's store (its id, so that a
/// peer that started over with an empty store is not read from the old position) and the last
/// sequence number taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCursor {
    pub store_id: u64,
    pub seq: u64,
}

/// A page of the admission log: the events admitted after some sequence number, in admission
/// order, with their numbers and hops; `scanned_to` is the number of the last entry read
/// (events that retention deleted since are skipped, not returned).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AdmittedPage {
    pub entries: Vec<(u64, Hop, Event)>,
    pub scanned_to: u64,
}

/// Counters of a store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub events: u64,
    /// Size of the store on disk.
    pub bytes: u64,
}

/// About what `event` takes in a query answer: the page is cut to what the client can receive,
/// so a store reads no more than that (a page of huge events must not fill memory first).
pub fn page_bytes(event: &Event) -> usize {
    query::stored_page_bytes(&event.as_ref())
}

/// A new store's id: random, never 0.
pub(crate) fn new_store_id() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0; 8];
    let random = ring::rand::SystemRandom::new().fill(&mut bytes);
    let id = u64::from_le_bytes(bytes);
    if random.is_err() || id == 0 {
        // No system randomness: the clock is still unlikely to repeat between two stores.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return (now.as_nanos() as u64) | 1;
    }
    id
}

/// A durable event store. Methods block (call them from `spawn_blocking` or a writer thread);
/// implementations are shared between threads.
pub trait EventStore: Send + Sync + 'static {
    /// Writes one group commit atomically and durably: after `Ok`, every event and session in it
    /// survives a crash; after `Err`, none does.
    fn commit(&self, commit: &Commit) -> Result<(), StoreError>;

    /// The newest event of every type, to rebuild the in-memory latest table at start.
    fn latest(&self) -> Result<Vec<Event>, StoreError>;

    /// Events matching a timeseries query, one page of at most `max_results` (all when `None`)
    /// and of about `max_bytes` (at least one event: see [`page_bytes`]) after `last_event_id`,
    /// in the query's order; `more_follows` when a next page has more. Looks at as many stored
    /// events as it takes: [`EventStore::timeseries_within`] bounds that.
    fn timeseries(&self, query: &TimeseriesQuery, max_bytes: usize) -> Result<QueryPage, StoreError> {
        self.timeseries_within(query, max_bytes, &Scan::default())
    }

    /// [`EventStore::timeseries`] looking at no more stored events than `scan` allows: past it,
    /// the page found so far with `more_follows` (the next page goes on after its last event),
    /// or, with nothing found, [`StoreError::Invalid`] saying to narrow the query. A cancelled
    /// scan stops too ([`StoreError::Closed`]).
    fn timeseries_within(
        &self,
        query: &TimeseriesQuery,
        max_bytes: usize,
        scan: &Scan,
    ) -> Result<QueryPage, StoreError>;

    /// Events registered by server `server_id`, in id order after `last_event_id`; a page as
    /// [`EventStore::timeseries`] cuts it.
    fn server_events(
        &self,
        server_id: u64,
        max_results: Option<u32>,
        last_event_id: Option<EventId>,
        max_bytes: usize,
    ) -> Result<QueryPage, StoreError>;

    /// The next sequence number of a client session, if the store knows the session.
    fn session(&self, session: u64) -> Result<Option<u32>, StoreError>;

    /// A new session of gateway `server_id`, for the ids of one run: one more than any session
    /// this store gave out or holds events of, written durably before it returns (hat-event's
    /// rule, a new session per start; ids never repeat, even when a run stored nothing).
    fn begin_session(&self, server_id: u64) -> Result<u64, StoreError>;

    /// The highest event id stored for `server_id`, so instance numbers continue after a restart.
    fn last_id(&self, server_id: u64) -> Result<Option<EventId>, StoreError>;

    /// Drops events older than `older_than`, then the oldest until at most `max_events` remain.
    /// Returns how many went. Latest-per-type entries whose event went stay answerable.
    fn retain(&self, older_than: Option<Timestamp>, max_events: Option<u64>) -> Result<u64, StoreError>;

    fn stats(&self) -> Result<StoreStats, StoreError>;

    /// This store's id: random, made when the store was created, so that a peer gateway can
    /// tell a store that started over from the one it was reading.
    fn store_id(&self) -> u64;

    /// The admission log: events in the order they were committed (local and imported ones),
    /// numbered from 1 by [`EventStore::commit`], each commit's events numbered on from the last.
    /// One page after `after`: at most `max_results` entries and about `max_bytes`.
    fn admitted(&self, after: u64, max_results: usize, max_bytes: usize) -> Result<AdmittedPage, StoreError>;

    /// The number of the newest admission log entry; 0 when empty.
    fn last_admitted(&self) -> Result<u64, StoreError>;

    /// How far peer gateway `peer`'s admission log has been taken, if ever.
    fn peer(&self, peer: u64) -> Result<Option<PeerCursor>, StoreError>;

    /// Whether event `id` is stored (and not deleted by retention).
    fn contains(&self, id: EventId) -> Result<bool, StoreError>;
}
