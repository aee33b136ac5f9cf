//! [`RedbStore`]: the default [`EventStore`], on redb.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use rivulet_core::model::{EventId, EventRef, Timestamp};
use rivulet_core::owned::{Event, Order, OrderBy, QueryPage, TimeseriesQuery};

use self::admitted::{ADMITTED, PEERS, STORE_ID_KEY};
use super::new_store_id;
use super::query::{Filter, Page, ShowId, decode_event};
use super::{AdmittedPage, Commit, EventStore, PeerCursor, Scan, StoreError, StoreStats};

mod admitted;
mod ids;

/// An event id as a key: server, session, instance, big-endian.
type IdKey = [u8; 24];
/// A (source) timestamp and an event id as a key.
type TimeKey = [u8; 36];

const EVENTS: TableDefinition<&IdKey, &[u8]> = TableDefinition::new("events");
const TIME: TableDefinition<&TimeKey, ()> = TableDefinition::new("time");
const SOURCE_TIME: TableDefinition<&TimeKey, ()> = TableDefinition::new("source_time");
const LATEST: TableDefinition<&[u8], &[u8]> = TableDefinition::new("latest");
const SESSIONS: TableDefinition<u64, u32> = TableDefinition::new("sessions");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Version of the layout above, kept under `meta["format"]`; a file of another version is refused.
const FORMAT: u64 = 1;
const FORMAT_KEY: &str = "format";

/// The page cache a store keeps unless told otherwise (redb's own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// Events one retention transaction deletes at most, so that commits interleave with a long one.
const RETAIN_CHUNK: u64 = 10_000;

/// The default event store: redb in one file (a copy-on-write B-tree with checksummed commit
/// slots), one write transaction and one fsync per [`EventStore::commit`].
///
/// # Layout
///
/// Every key is big-endian, so byte order is the order queries want. An event id packs into 24
/// bytes (`server ++ session ++ instance`, `u64` each); a timestamp into 12 bytes (seconds as `i64`
/// with the sign bit flipped, then microseconds as `u32`), which orders as [`Timestamp`] does for
/// every value, including the far-off source timestamps a client may send.
///
/// | table         | key                                | value                             |
/// |---------------|------------------------------------|-----------------------------------|
/// | `events`      | id (24 B)                          | the event, postcard of `EventRef` |
/// | `time`        | timestamp (12 B) ++ id (24 B)      | `()`                              |
/// | `source_time` | source timestamp ++ id (36 B)      | `()` (only events that have one)  |
/// | `latest`      | the type's packed segments         | the newest event of that type     |
/// | `sessions`    | client session (`u64`)             | its next sequence number (`u32`)  |
/// | `meta`        | `"format"`                         | layout version, 1                 |
///
/// and the admission log with the peer cursors of federation (`admitted.rs`: tables `admitted`,
/// `peers`, `meta["store_id"]`; a file from before them gets them, empty, when opened).
///
/// `latest` holds a copy of each type's newest event (hat-event's LMDB backend keeps a separate
/// latest database the same way), not only its id: [`EventStore::retain`] then drops events from
/// the time series freely, and the latest table keeps answering for every type ever registered,
/// as the trait promises. The copy costs one more value of the event's size per type and commit.
///
/// Nothing read from the file is trusted: an undecodable value, an index entry without its event,
/// or a value filed under the wrong key gives a [`StoreError`] naming the file, table and key.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    store_id: u64,
    /// The first I/O error: after one in a commit, redb answers every later write with
    /// "Previous I/O error occurred", and this names what it was.
    failure: OnceLock<String>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the store in `path`, creating the file and its parent directory if missing.
    ///
    /// After a crash, redb repairs the file while opening it (it walks the whole file, so this
    /// takes longer on a large store); the last commit that returned `Ok` is there.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`RedbStore::open`] with a page cache of at most `cache_bytes`: redb keeps pages it wrote
    /// or read in memory up to that, so the gateway's memory follows it.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let at = |what: &str| {
            let path = path.display().to_string();
            let what = what.to_string();
            move |e: &dyn Display| StoreError::Io(format!("{path}: {what}: {e}"))
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| at("cannot create the directory")(&e))?;
        }
        let db = Database::builder().set_cache_size(cache_bytes).create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => at("cannot open the store")(
                &"another process has it open (another gateway on the same data directory?)",
            ),
            e => classify(redb::Error::from(e), format!("{}: cannot open the redb database", path.display())),
        })?;
        Self::with_database(db, path)
    }

    /// The store in `db` (whose file is `path`, for messages): its tables set up.
    fn with_database(db: Database, path: &Path) -> Result<Self, StoreError> {
        let mut store = RedbStore { db, path: path.to_path_buf(), store_id: 0, failure: OnceLock::new() };
        store.store_id = store.init()?;
        Ok(store)
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the tables (so that readers find them), checks or writes the layout version, and
    /// returns the store's id (made now for a new store).
    fn init(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(self.err("cannot start a write transaction"))?;
        let store_id = {
            let mut meta = txn.open_table(META).map_err(self.err("cannot open table `meta`"))?;
            let stored = meta.get(FORMAT_KEY).map_err(self.err("cannot read table `meta`"))?.map(|v| v.value());
            match stored {
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(StoreError::Corrupt(format!(
                        "{}: the store has layout version {other}, this gateway reads version {FORMAT}; \
                         use a gateway of that version or start with another data directory",
                        self.path.display()
                    )));
                }
                None => {
                    meta.insert(FORMAT_KEY, FORMAT).map_err(self.err("cannot write table `meta`"))?;
                }
            }
            txn.open_table(EVENTS).map_err(self.err("cannot open table `events`"))?;
            txn.open_table(TIME).map_err(self.err("cannot open table `time`"))?;
            txn.open_table(SOURCE_TIME).map_err(self.err("cannot open table `source_time`"))?;
            txn.open_table(LATEST).map_err(self.err("cannot open table `latest`"))?;
            txn.open_table(SESSIONS).map_err(self.err("cannot open table `sessions`"))?;
            txn.open_table(ADMITTED).map_err(self.err("cannot open table `admitted`"))?;
            txn.open_table(PEERS).map_err(self.err("cannot open table `peers`"))?;
            let stored = meta.get(STORE_ID_KEY).map_err(self.err("cannot read table `meta`"))?.map(|v| v.value());
            match stored {
                Some(id) => id,
                None => {
                    let id = new_store_id();
                    meta.insert(STORE_ID_KEY, id).map_err(self.err("cannot write table `meta`"))?;
                    id
                }
            }
        };
        txn.commit().map_err(self.err("cannot commit the table setup"))?;
        Ok(store_id)
    }

    /// Maps any redb (or I/O) error to a [`StoreError`] of its kind, naming the file and what
    /// was being done.
    /// An I/O error is remembered: redb's later "Previous I/O error" names it.
    fn err<E: Into<redb::Error>>(&self, what: impl Display) -> impl FnOnce(E) -> StoreError {
        move |e| {
            let context = format!("{}: {what}", self.path.display());
            match e.into() {
                redb::Error::PreviousIo => StoreError::Closed(format!(
                    "{context}: the store stopped at an earlier I/O error ({}); restart the gateway once that is \
                     mended (a full disk: free space)",
                    self.failure.get().map_or("not known", String::as_str)
                )),
                e => {
                    let error = classify(e, context);
                    if let StoreError::Io(message) = &error {
                        let _ = self.failure.set(message.clone());
                    }
                    error
                }
            }
        }
    }

    /// An event that does not encode (nothing of the commit is written).
    fn unencodable(&self, id: EventId, e: postcard::Error) -> StoreError {
        StoreError::Invalid(format!("{}: cannot encode event {}: {e}", self.path.display(), ShowId(id)))
    }

    /// A [`StoreError`] for bad data found in the file.
    fn corrupt(&self, table: &str, key: impl Display, problem: impl Display) -> StoreError {
        StoreError::Corrupt(format!(
            "{}: corrupt store: table `{table}`, key {key}: {problem} (restore a backup, or move the file away to start empty)",
            self.path.display()
        ))
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        self.db.begin_read().map_err(self.err("cannot start a read transaction"))
    }

    /// Decodes a value of `events`, checking that it is the event filed under `key`.
    fn decode<'a>(&self, key: &IdKey, bytes: &'a [u8]) -> Result<EventRef<'a>, StoreError> {
        let id = id_from_key(key);
        let event = decode_event(bytes).map_err(|problem| self.corrupt("events", ShowId(id), problem))?;
        if event.id != id {
            return Err(self.corrupt("events", ShowId(id), format_args!("the value is event {}", ShowId(event.id))));
        }
        Ok(event)
    }

    /// Decodes a value of `latest`, checking that its type is the key.
    fn decode_latest<'a>(&self, key: &[u8], bytes: &'a [u8]) -> Result<EventRef<'a>, StoreError> {
        let event = decode_event(bytes).map_err(|problem| self.corrupt("latest", ShowType(key), problem))?;
        if event.event_type.as_packed() != key {
            return Err(self.corrupt(
                "latest",
                ShowType(key),
                format_args!("the value is of type {}", event.event_type),
            ));
        }
        Ok(event)
    }

    /// The event an index entry points at (owned), checking that the entry's time is the event's.
    fn indexed(
        &self,
        events: &ReadOnlyTable<&'static IdKey, &'static [u8]>,
        by_source: bool,
        key: &TimeKey,
        filter: &Filter<'_>,
    ) -> Result<Option<Event>, StoreError> {
        let index = if by_source { "source_time" } else { "time" };
        let id_key = id_part(key);
        let guard = events
            .get(&id_key)
            .map_err(self.err("cannot read table `events`"))?
            .ok_or_else(|| self.corrupt(index, ShowTimeKey(key), "no event is stored under that id"))?;
        let event = self.decode(&id_key, guard.value())?;
        let time = if by_source { event.source_timestamp } else { Some(event.timestamp) };
        if time.map(ts_key) != Some(ts_part(key)) {
            return Err(self.corrupt(index, ShowTimeKey(key), "the event has another time"));
        }
        Ok(filter.matches(&event).then(|| Event::from(event)))
    }

    /// Position of event `id` in the `time` (or `source_time`) order, for paging after it.
    fn cursor(
        &self,
        events: &ReadOnlyTable<&'static IdKey, &'static [u8]>,
        id: EventId,
        by_source: bool,
    ) -> Result<TimeKey, StoreError> {
        let key = id_key(id);
        let guard = events.get(&key).map_err(self.err("cannot read table `events`"))?.ok_or_else(|| {
            StoreError::Invalid(format!(
                "{}: last_event_id {} is not stored (deleted by retention?); query again without it",
                self.path.display(),
                ShowId(id)
            ))
        })?;
        let event = self.decode(&key, guard.value())?;
        let time = if by_source {
            event.source_timestamp.ok_or_else(|| {
                StoreError::Invalid(format!(
                    "{}: last_event_id {} has no source timestamp, so it has no place in an order by source timestamp",
                    self.path.display(),
                    ShowId(id)
                ))
            })?
        } else {
            event.timestamp
        };
        Ok(time_key(time, id))
    }

    /// Deletes up to [`RETAIN_CHUNK`] of the oldest events (by timestamp) in one transaction,
    /// while they are older than `before` and more than `keep` remain. Returns how many went and
    /// whether the condition stopped it (rather than the chunk size).
    fn retain_chunk(&self, before: Option<TimeKey>, keep: Option<u64>) -> Result<(u64, bool), StoreError> {
        let mut txn = self.db.begin_write().map_err(self.err("cannot start a write transaction"))?;
        txn.set_durability(Durability::Immediate).map_err(self.err("cannot set the durability"))?;
        let mut removed = 0;
        let mut done = false;
        {
            let mut events = txn.open_table(EVENTS).map_err(self.err("cannot open table `events`"))?;
            let mut time = txn.open_table(TIME).map_err(self.err("cannot open table `time`"))?;
            let mut source = txn.open_table(SOURCE_TIME).map_err(self.err("cannot open table `source_time`"))?;
            while removed < RETAIN_CHUNK {
                if let Some(keep) = keep
                    && events.len().map_err(self.err("cannot count table `events`"))? <= keep
                {
                    done = true;
                    break;
                }
                let first = time.first().map_err(self.err("cannot read table `time`"))?.map(|(k, _)| *k.value());
                let Some(key) = first.filter(|key| before.is_none_or(|before| *key < before)) else {
                    done = true;
                    break;
                };
                time.remove(&key).map_err(self.err("cannot write table `time`"))?;
                let id_key = id_part(&key);
                let source_key = {
                    let old = events
                        .remove(&id_key)
                        .map_err(self.err("cannot write table `events`"))?
                        .ok_or_else(|| self.corrupt("time", ShowTimeKey(&key), "no event is stored under that id"))?;
                    self.decode(&id_key, old.value())?.source_timestamp.map(|t| time_key(t, id_from_key(&id_key)))
                };
                if let Some(source_key) = source_key {
                    source.remove(&source_key).map_err(self.err("cannot write table `source_time`"))?;
                }
                removed += 1;
            }
        }
        txn.commit().map_err(self.err("cannot commit a retention step"))?;
        Ok((removed, done))
    }
}

impl EventStore for RedbStore {
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        if commit.events.is_empty() && commit.sessions.is_empty() && commit.peers.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(self.err("cannot start a write transaction"))?;
        txn.set_durability(Durability::Immediate).map_err(self.err("cannot set the durability"))?;
        let mut skip = vec![false; commit.events.len()];
        {
            let mut events = txn.open_table(EVENTS).map_err(self.err("cannot open table `events`"))?;
            let mut time = txn.open_table(TIME).map_err(self.err("cannot open table `time`"))?;
            let mut source = txn.open_table(SOURCE_TIME).map_err(self.err("cannot open table `source_time`"))?;
            let mut latest = txn.open_table(LATEST).map_err(self.err("cannot open table `latest`"))?;
            let mut sessions = txn.open_table(SESSIONS).map_err(self.err("cannot open table `sessions`"))?;

            // The newest event of each type in this commit; on equal timestamps the later one.
            let mut newest: HashMap<&[u8], &Event> = HashMap::new();
            let mut buf = Vec::with_capacity(256);
            for (i, event) in commit.events.iter().enumerate() {
                let event: &Event = event;
                let key = id_key(event.id);
                buf.clear();
                buf = postcard::to_extend(&event.as_ref(), buf).map_err(|e| self.unencodable(event.id, e))?;
                let existed =
                    events.insert(&key, buf.as_slice()).map_err(self.err("cannot write table `events`"))?.is_some();
                if existed && commit.hop(i).via.is_some() {
                    // A copy a peer gateway sent again after the broker's window forgot the id:
                    // the same event, stored already (rewritten unchanged), indexed once.
                    skip[i] = true;
                    continue;
                }
                if existed {
                    // Dropping the transaction aborts it: nothing of this commit is written.
                    return Err(StoreError::Corrupt(format!(
                        "{}: event {} is already stored; the commit was not written",
                        self.path.display(),
                        ShowId(event.id)
                    )));
                }
                time.insert(&time_key(event.timestamp, event.id), ()).map_err(self.err("cannot write table `time`"))?;
                if let Some(t) = event.source_timestamp {
                    source.insert(&time_key(t, event.id), ()).map_err(self.err("cannot write table `source_time`"))?;
                }
                match newest.entry(event.event_type.as_ref().as_packed()) {
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
            for (ty, event) in newest {
                let replace = match latest.get(ty).map_err(self.err("cannot read table `latest`"))? {
                    None => true,
                    Some(stored) => event.timestamp >= self.decode_latest(ty, stored.value())?.timestamp,
                };
                if replace {
                    buf.clear();
                    buf = postcard::to_extend(&event.as_ref(), buf).map_err(|e| self.unencodable(event.id, e))?;
                    latest.insert(ty, buf.as_slice()).map_err(self.err("cannot write table `latest`"))?;
                }
            }
            for &(session, next) in &commit.sessions {
                sessions.insert(session, next).map_err(self.err("cannot write table `sessions`"))?;
            }
        }
        self.append_admitted(&txn, commit, &skip)?;
        txn.commit().map_err(self.err("cannot commit"))
    }

    fn latest(&self) -> Result<Vec<Event>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(LATEST).map_err(self.err("cannot open table `latest`"))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(self.err("cannot read table `latest`"))? {
            let (key, value) = entry.map_err(self.err("cannot read table `latest`"))?;
            out.push(Event::from(self.decode_latest(key.value(), value.value())?));
        }
        Ok(out)
    }

    /// Walks the `time` index (or `source_time` when ordering by source timestamp) between the
    /// query's bounds, in the query's order, from just past `last_event_id`; loads each event
    /// and keeps those that pass the other filters. Equal timestamps order by event id.
    ///
    /// - An order by source timestamp leaves out events that have none (as hat-event does), and
    ///   a source-time bound leaves them out in any order.
    /// - `last_event_id` must be stored: after retention deleted it, the query fails and says so.
    /// - After a full page the walk goes on to the next matching event for `more_follows`, within
    ///   the scan budget: a page that stopped at the budget says `more_follows` even if nothing
    ///   is left, and a page that found nothing in it is refused (`Scan`); so a query for rare
    ///   events over a long history can fail on a later page: narrow its time range.
    fn timeseries_within(&self, q: &TimeseriesQuery, max_bytes: usize, scan: &Scan) -> Result<QueryPage, StoreError> {
        if q.event_types.as_ref().is_some_and(Vec::is_empty) {
            return Ok(QueryPage::default());
        }
        let by_source = q.order_by == OrderBy::SourceTimestamp;
        let (index_name, from, to) =
            if by_source { ("source_time", q.source_t_from, q.source_t_to) } else { ("time", q.t_from, q.t_to) };
        let txn = self.read()?;
        let events = txn.open_table(EVENTS).map_err(self.err("cannot open table `events`"))?;
        let index = txn
            .open_table(if by_source { SOURCE_TIME } else { TIME })
            .map_err(self.err(format_args!("cannot open table `{index_name}`")))?;

        // Inclusive bounds on index keys.
        let mut low = from.map_or([0; 36], |t| time_key(t, EventId { server: 0, session: 0, instance: 0 }));
        let mut high = to.map_or([0xff; 36], |t| time_key(t, EventId { server: !0, session: !0, instance: !0 }));
        if let Some(last) = q.last_event_id {
            let cursor = self.cursor(&events, last, by_source)?;
            let next = match q.order {
                Order::Ascending => successor(cursor).map(|after| low = low.max(after)),
                Order::Descending => predecessor(cursor).map(|before| high = high.min(before)),
            };
            if next.is_none() {
                return Ok(QueryPage::default());
            }
        }
        if low > high {
            return Ok(QueryPage::default());
        }

        let range = index
            .range::<&TimeKey>(&low..=&high)
            .map_err(self.err(format_args!("cannot read table `{index_name}`")))?;
        let keys: Box<dyn Iterator<Item = _>> =
            if q.order == Order::Ascending { Box::new(range) } else { Box::new(range.rev()) };
        let mut page = Page::new(q.max_results, max_bytes);
        let filter = Filter::new(q);
        let mut looked_at = 0;
        for entry in keys {
            if scan.is_spent(looked_at) {
                scan.spent.store(true, std::sync::atomic::Ordering::Relaxed);
                if page.done.events.is_empty() {
                    return Err(StoreError::Invalid(format!(
                        "the query looked at {looked_at} stored events without finding one it asks for (the \
                         gateway looks at {} per page); narrow its time range or its types",
                        scan.max_events
                    )));
                }
                // What was found, and the next page goes on after it.
                page.done.more_follows = true;
                break;
            }
            looked_at += 1;
            if scan.is_cancelled(looked_at) {
                return Err(StoreError::Closed("the query was cancelled: nobody waits for it".into()));
            }
            let key = *entry.map_err(self.err(format_args!("cannot read table `{index_name}`")))?.0.value();
            if let Some(event) = self.indexed(&events, by_source, &key, &filter)?
                && !page.take(event)
            {
                break;
            }
        }
        Ok(page.done)
    }

    fn server_events(
        &self,
        server_id: u64,
        max_results: Option<u32>,
        last_event_id: Option<EventId>,
        max_bytes: usize,
    ) -> Result<QueryPage, StoreError> {
        let mut low = id_key(EventId { server: server_id, session: 0, instance: 0 });
        let high = id_key(EventId { server: server_id, session: !0, instance: !0 });
        if let Some(last) = last_event_id {
            match successor(id_key(last)) {
                Some(after) => low = low.max(after),
                None => return Ok(QueryPage::default()),
            }
        }
        if low > high {
            return Ok(QueryPage::default());
        }
        let txn = self.read()?;
        let events = txn.open_table(EVENTS).map_err(self.err("cannot open table `events`"))?;
        let mut page = Page::new(max_results, max_bytes);
        for entry in events.range::<&IdKey>(&low..=&high).map_err(self.err("cannot read table `events`"))? {
            let (key, value) = entry.map_err(self.err("cannot read table `events`"))?;
            if !page.take(Event::from(self.decode(key.value(), value.value())?)) {
                break;
            }
        }
        Ok(page.done)
    }

    fn session(&self, session: u64) -> Result<Option<u32>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(SESSIONS).map_err(self.err("cannot open table `sessions`"))?;
        let next = table.get(session).map_err(self.err("cannot read table `sessions`"))?;
        Ok(next.map(|v| v.value()))
    }

    fn last_id(&self, server_id: u64) -> Result<Option<EventId>, StoreError> {
        self.last_stored_id(server_id)
    }

    /// Deletes by age, then the oldest (by timestamp) beyond `max_events`, in transactions of at
    /// most 10 000 events. The `latest` table is left alone: it holds its own copy of each type's
    /// newest event, so [`EventStore::latest`] still returns events the time series no longer has.
    fn retain(&self, older_than: Option<Timestamp>, max_events: Option<u64>) -> Result<u64, StoreError> {
        let mut removed = 0;
        if let Some(t) = older_than {
            let before = time_key(t, EventId { server: 0, session: 0, instance: 0 });
            loop {
                let (n, done) = self.retain_chunk(Some(before), None)?;
                removed += n;
                if done {
                    break;
                }
            }
        }
        if let Some(keep) = max_events {
            loop {
                let (n, done) = self.retain_chunk(None, Some(keep))?;
                removed += n;
                if done {
                    break;
                }
            }
        }
        if removed > 0 {
            self.trim_admitted()?;
        }
        Ok(removed)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let events = {
            let txn = self.read()?;
            let table = txn.open_table(EVENTS).map_err(self.err("cannot open table `events`"))?;
            table.len().map_err(self.err("cannot count table `events`"))?
        };
        let bytes = std::fs::metadata(&self.path).map_err(self.err("cannot read the file size"))?.len();
        Ok(StoreStats { events, bytes })
    }

    fn store_id(&self) -> u64 {
        self.store_id
    }

    fn begin_session(&self, server_id: u64) -> Result<u64, StoreError> {
        let stored = self.last_id(server_id)?.map(|id| id.session);
        self.next_gateway_session(server_id, stored)
    }

    fn admitted(&self, after: u64, max_results: usize, max_bytes: usize) -> Result<AdmittedPage, StoreError> {
        self.read_admitted(after, max_results, max_bytes)
    }

    fn last_admitted(&self) -> Result<u64, StoreError> {
        self.read_last_admitted()
    }

    fn peer(&self, peer: u64) -> Result<Option<PeerCursor>, StoreError> {
        self.read_peer(peer)
    }

    fn contains(&self, id: EventId) -> Result<bool, StoreError> {
        self.has_event(id)
    }
}

/// A redb error as a [`StoreError`] of its kind: what the disk refused, what the file holds
/// that cannot be read, and a closed database; `context` says what was being done where.
fn classify(e: redb::Error, context: String) -> StoreError {
    let message = format!("{context}: {e}");
    match e {
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TableDoesNotExist(_) => StoreError::Corrupt(message),
        redb::Error::DatabaseClosed => StoreError::Closed(message),
        _ => StoreError::Io(message),
    }
}

fn id_key(id: EventId) -> IdKey {
    let mut key = [0; 24];
    key[..8].copy_from_slice(&id.server.to_be_bytes());
    key[8..16].copy_from_slice(&id.session.to_be_bytes());
    key[16..].copy_from_slice(&id.instance.to_be_bytes());
    key
}

fn id_from_key(key: &IdKey) -> EventId {
    let [s0, s1, s2, s3, s4, s5, s6, s7, e0, e1, e2, e3, e4, e5, e6, e7, i0, i1, i2, i3, i4, i5, i6, i7] = *key;
    EventId {
        server: u64::from_be_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
        session: u64::from_be_bytes([e0, e1, e2, e3, e4, e5, e6, e7]),
        instance: u64::from_be_bytes([i0, i1, i2, i3, i4, i5, i6, i7]),
    }
}

/// A timestamp as 12 bytes that order as the timestamps do.
fn ts_key(t: Timestamp) -> [u8; 12] {
    let mut key = [0; 12];
    key[..8].copy_from_slice(&((t.s as u64) ^ (1 << 63)).to_be_bytes());
    key[8..].copy_from_slice(&t.us.to_be_bytes());
    key
}

fn time_key(t: Timestamp, id: EventId) -> TimeKey {
    let mut key = [0; 36];
    key[..12].copy_from_slice(&ts_key(t));
    key[12..].copy_from_slice(&id_key(id));
    key
}

fn ts_part(key: &TimeKey) -> [u8; 12] {
    let mut ts = [0; 12];
    ts.copy_from_slice(&key[..12]);
    ts
}

fn id_part(key: &TimeKey) -> IdKey {
    let mut id = [0; 24];
    id.copy_from_slice(&key[12..]);
    id
}

/// The next key up (big-endian + 1), or `None` after the largest.
fn successor<const N: usize>(mut key: [u8; N]) -> Option<[u8; N]> {
    for byte in key.iter_mut().rev() {
        let (sum, carry) = byte.overflowing_add(1);
        *byte = sum;
        if !carry {
            return Some(key);
        }
    }
    None
}

/// The next key down, or `None` below the smallest.
fn predecessor<const N: usize>(mut key: [u8; N]) -> Option<[u8; N]> {
    for byte in key.iter_mut().rev() {
        let (difference, borrow) = byte.overflowing_sub(1);
        *byte = difference;
        if !borrow {
            return Some(key);
        }
    }
    None
}

/// A key of `latest` in messages: the type, or its bytes if they are not a type.
struct ShowType<'a>(&'a [u8]);

impl Display for ShowType<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match rivulet_core::model::EventTypeRef::from_packed(self.0) {
            Ok(ty) => write!(f, "type {ty}"),
            Err(_) => write!(f, "bytes {:02x?}", self.0),
        }
    }
}

/// A key of `time` or `source_time` in messages.
struct ShowTimeKey<'a>(&'a TimeKey);

impl Display for ShowTimeKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [s0, s1, s2, s3, s4, s5, s6, s7, u0, u1, u2, u3] = ts_part(self.0);
        let s = (u64::from_be_bytes([s0, s1, s2, s3, s4, s5, s6, s7]) ^ (1 << 63)) as i64;
        let us = u32::from_be_bytes([u0, u1, u2, u3]);
        write!(f, "time {s}.{us:06} s, event {}", ShowId(id_from_key(&id_part(self.0))))
    }
}

#[cfg(test)]
mod failing;
#[cfg(test)]
mod tests;
