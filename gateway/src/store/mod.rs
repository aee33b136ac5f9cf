//! Where the gateway keeps events: an [`EventStore`] trait, and [`RedbStore`], the default
//! backend (redb: a copy-on-write B-tree in one file, one fsync per commit).
//!
//! The broker writes in group commits: one [`EventStore::commit`] carries every event registered
//! since the last one, together with each client session's next sequence number, so a registration
//! is durable exactly when the session knows it is (see docs/PROTOCOL.md §5.1).

mod redb;

pub use self::redb::RedbStore;

use std::sync::Arc;

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

/// One group commit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Events in registration order, ids and timestamps already assigned; shared with the
    /// notifications and the latest table rather than copied for each.
    pub events: Vec<Arc<Event>>,
    /// Client session → the next sequence number it expects, after these events.
    pub sessions: Vec<(u64, u32)>,
}

impl Commit {
    pub fn new(events: impl IntoIterator<Item = Event>, sessions: Vec<(u64, u32)>) -> Commit {
        Commit { events: events.into_iter().map(Arc::new).collect(), sessions }
    }
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
    use rivulet_core::owned::Payload;
    let payload = match &event.payload {
        None => 0,
        Some(Payload::Json(text)) => text.len(),
        Some(Payload::Binary { kind, data }) => kind.len() + data.len(),
    };
    // Id, timestamps and length prefixes: a few dozen bytes at most.
    48 + event.event_type.as_ref().as_packed().len() + payload
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
    /// in the query's order; `more_follows` when a next page has more.
    fn timeseries(&self, query: &TimeseriesQuery, max_bytes: usize) -> Result<QueryPage, StoreError>;

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

    /// The highest event id stored for `server_id`, so instance numbers continue after a restart.
    fn last_id(&self, server_id: u64) -> Result<Option<EventId>, StoreError>;

    /// Drops events older than `older_than`, then the oldest until at most `max_events` remain.
    /// Returns how many went. Latest-per-type entries whose event went stay answerable.
    fn retain(&self, older_than: Option<Timestamp>, max_events: Option<u64>) -> Result<u64, StoreError>;

    fn stats(&self) -> Result<StoreStats, StoreError>;
}
