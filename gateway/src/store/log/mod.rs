//! [`LogStore`]: an [`EventStore`] that appends each group commit to a segment file as one
//! frame (one write, one fsync) and keeps its indexes in memory.
//!
//! Where the time of a durable event went with redb (three B-tree inserts, page reads and
//! copy-on-write pages per event) is one sequential write here; Kafka, JetStream's file store
//! and hat-event's LMDB backend do variants of the same. The price is memory: the time,
//! source-time and id orders and a slot per event (about 240 bytes per stored event), rebuilt by
//! reading every segment when the store opens. docs/GATEWAY.md "Stores" has the measured costs.

mod index;
mod record;
mod recovery;
mod segment;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rivulet_core::model::{EventId, Timestamp};
use rivulet_core::owned::{Event, Order, OrderBy, QueryPage, TimeseriesQuery};

use self::index::{Index, Place, Segment, next_id, next_key, previous_key};
use self::record::{Checkpoint, EncodeError};
use self::segment::Active;
use super::query::{Budget, Filter, ShowId, decode_event};
use super::{AdmittedPage, Commit, EventStore, PeerCursor, Scan, StoreError, StoreStats, new_store_id};

/// A segment is closed and a new one started once a commit would take it past this.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// How long opening waits for the store's lock: a process that held it may be exiting (and a
/// process forked to run another program holds it until that program starts).
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// Events less than this apart in a segment are read in one read (the bytes between are
/// read and dropped), in reads of at most [`READ_RUN`].
const READ_GAP: u64 = 4096;
const READ_RUN: u64 = 1 << 20;

/// Index entries a query walks per taking of the index's lock.
const WALK_CHUNK: usize = 4096;

/// Events one retention step deletes at most, so that commits and queries interleave with a
/// long one.
const RETAIN_CHUNK: u64 = 10_000;

/// The append-only segment log store: a directory of segment files (`record.rs` has their
/// layout) and a lock file that keeps a second process out.
///
/// - A commit is one frame with a CRC, appended and `fdatasync`ed before [`EventStore::commit`]
///   returns; readers see it only after that.
/// - Opening reads every segment; a frame cut off at the end of the newest segment (a crash
///   during a write that was never acknowledged) is cut away, anything else damaged is refused.
/// - Retention writes a record of what it deleted; a segment goes (file deleted) when it and
///   every older one hold no event any more. Each segment starts with a checkpoint of the
///   sessions, peer cursors and latest events, so nothing else is lost with it.
pub struct LogStore {
    dir: PathBuf,
    store_id: u64,
    segment_bytes: u64,
    index: RwLock<Index>,
    writer: Mutex<Writer>,
    /// Held (locked) while the store is open.
    _lock: File,
}

/// What appends: the active segment, and the first I/O error, after which nothing more is.
#[derive(Debug)]
struct Writer {
    active: Active,
    /// The active segment's length after its checkpoint: a segment is closed only if it holds
    /// more than that.
    checkpoint_end: u64,
    failure: Option<String>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens the store in directory `dir`, creating it if missing.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, DEFAULT_SEGMENT_BYTES)
    }

    /// [`LogStore::open`] closing segments at `segment_bytes` (at most 1 GiB).
    pub fn open_with(dir: &Path, segment_bytes: u64) -> Result<Self, StoreError> {
        let io = |what: &str| {
            let context = format!("{}: {what}", dir.display());
            move |e: std::io::Error| StoreError::Io(format!("{context}: {e}"))
        };
        std::fs::create_dir_all(dir).map_err(io("cannot create the directory"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io("cannot open the lock file"))?;
        lock_within(&lock, LOCK_PATIENCE).map_err(|e| match e {
            TryLockError::WouldBlock => StoreError::Io(format!(
                "{}: cannot open the store: another process has it open (another gateway on the same data directory?)",
                dir.display()
            )),
            TryLockError::Error(e) => io("cannot lock the store")(e),
        })?;
        let numbers = segment::list(dir).map_err(io("cannot list the segments"))?;
        let (store_id, index, writer) = match numbers.first() {
            None => Self::create(dir)?,
            Some(_) => Self::recover(dir, &numbers)?,
        };
        Ok(LogStore {
            dir: dir.to_path_buf(),
            store_id,
            segment_bytes: segment_bytes.clamp(1, 1 << 30),
            index: RwLock::new(index),
            writer: Mutex::new(writer),
            _lock: lock,
        })
    }

    /// A new store: segment 1 with an empty checkpoint.
    fn create(dir: &Path) -> Result<(u64, Index, Writer), StoreError> {
        let store_id = new_store_id();
        let mut index = Index::default();
        let active = Active::create(dir, store_id, 1).map_err(|e| io_error(dir, 1, "cannot create", e))?;
        let (writer, segment) = Self::start_segment(dir, &index.checkpoint(), active)?;
        index.segments.insert(1, segment);
        Ok((store_id, index, writer))
    }

    /// Writes `checkpoint` at the start of `active`: the writer appending to it, and its entry for
    /// the index (which the caller adds; no lock is held across the fsync).
    fn start_segment(
        dir: &Path,
        checkpoint: &Checkpoint<Arc<Event>>,
        mut active: Active,
    ) -> Result<(Writer, Segment), StoreError> {
        let no = active.no;
        let mut buf = Vec::new();
        record::encode_checkpoint(checkpoint, &mut buf).map_err(|e| unencodable(dir, e))?;
        active.append(&buf).map_err(|e| io_error(dir, no, "cannot write the checkpoint of", e))?;
        let file = Arc::new(active.reader().map_err(|e| io_error(dir, no, "cannot open", e))?);
        let segment = Segment { file, bytes: active.len, live: 0 };
        Ok((Writer { checkpoint_end: active.len, active, failure: None, buf }, segment))
    }

    fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer, if no I/O error stopped it.
    fn writer(&self) -> Result<MutexGuard<'_, Writer>, StoreError> {
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(failure) = &writer.failure {
            return Err(StoreError::Closed(format!(
                "{}: the store stopped at an earlier I/O error ({failure}); restart the gateway once that is mended \
                 (a full disk: free space)",
                self.dir.display()
            )));
        }
        Ok(writer)
    }

    /// Appends the frames in `writer.buf` durably, starting a new segment first if they would
    /// take the active one past its size. Returns the segment and offset they went to.
    fn append(&self, writer: &mut Writer) -> Result<(u64, u64), StoreError> {
        let incoming = writer.buf.len() as u64;
        let full = writer.active.len + incoming > self.segment_bytes;
        // Offsets within a segment are `u32`; a segment is never let past that.
        if writer.active.len > writer.checkpoint_end && (full || writer.active.len + incoming > u64::from(u32::MAX)) {
            self.roll(writer)?;
        }
        let no = writer.active.no;
        match writer.active.append(&writer.buf) {
            Ok(start) => {
                if let Some(segment) = self.index_mut().segments.get_mut(&no) {
                    segment.bytes = writer.active.len;
                }
                Ok((no, start))
            }
            Err(e) => Err(self.fail(writer, io_error(&self.dir, no, "cannot append to", e))),
        }
    }

    /// Closes the active segment and starts the next.
    fn roll(&self, writer: &mut Writer) -> Result<(), StoreError> {
        let no = writer.active.no + 1;
        let active = match Active::create(&self.dir, self.store_id, no) {
            Ok(active) => active,
            Err(e) => return Err(self.fail(writer, io_error(&self.dir, no, "cannot create", e))),
        };
        let checkpoint = self.index().checkpoint();
        match Self::start_segment(&self.dir, &checkpoint, active) {
            Ok((next, segment)) => {
                self.index_mut().segments.insert(no, segment);
                writer.active = next.active;
                writer.checkpoint_end = next.checkpoint_end;
                self.sweep(writer);
                Ok(())
            }
            Err(e) => Err(self.fail(writer, e)),
        }
    }

    /// Deletes the oldest segments that hold no event any more (their sessions, cursors and
    /// latest events are in the checkpoints after them), oldest first, stopping at a file that
    /// will not go: the segments left are always consecutive, and it is tried again later.
    fn sweep(&self, writer: &Writer) {
        let empty = self.index().empty_prefix(writer.active.no);
        let mut deleted = false;
        for no in empty {
            match std::fs::remove_file(segment::path(&self.dir, no)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(
                        "{}; trying again after the next retention or segment",
                        io_error(&self.dir, no, "cannot delete", e)
                    );
                    break;
                }
                _ => {
                    self.index_mut().segments.remove(&no);
                    deleted = true;
                }
            }
        }
        if deleted && let Err(e) = segment::sync_dir(&self.dir) {
            tracing::warn!("{}: cannot sync the directory after deleting segments: {e}", self.dir.display());
        }
    }

    /// Remembers an I/O error: the store takes no more writes.
    fn fail(&self, writer: &mut Writer, error: StoreError) -> StoreError {
        if let StoreError::Io(message) = &error {
            writer.failure.get_or_insert_with(|| message.clone());
        }
        error
    }

    /// Reads the events at `places` (checking each is the id given, when one is), in their
    /// order; events close together in a segment (commits are) come in one read.
    fn read_all(&self, places: &[(Option<EventId>, Place)]) -> Result<Vec<Event>, StoreError> {
        let mut order: Vec<usize> = (0..places.len()).collect();
        order.sort_unstable_by_key(|&i| places.get(i).map(|(_, p)| (p.segment, p.offset)));
        let mut events: Vec<Option<Event>> = places.iter().map(|_| None).collect();
        let mut rest = order.as_slice();
        while let Some((&first, _)) = rest.split_first() {
            let Some((_, head)) = places.get(first) else { break };
            let start = u64::from(head.offset);
            let mut end = start + u64::from(head.len);
            let mut run = 1;
            for &i in rest.iter().skip(1) {
                let Some((_, next)) = places.get(i) else { break };
                let (from, to) = (u64::from(next.offset), u64::from(next.offset) + u64::from(next.len));
                if next.segment != head.segment || from > end + READ_GAP || to - start > READ_RUN {
                    break;
                }
                end = end.max(to);
                run += 1;
            }
            let bytes = segment::read_at(&head.file, start, (end - start) as usize)
                .map_err(|e| io_error(&self.dir, head.segment, "cannot read", e))?;
            let (taken, later) = rest.split_at(run);
            for &i in taken {
                let Some((id, place)) = places.get(i) else { continue };
                let from = (u64::from(place.offset) - start) as usize;
                let at = u64::from(place.offset);
                let event = bytes
                    .get(from..from + place.len as usize)
                    .ok_or_else(|| corrupt(&self.dir, place.segment, at, "an event past the end of its read"))
                    .and_then(|bytes| decode_event(bytes).map_err(|why| corrupt(&self.dir, place.segment, at, why)))?;
                if let Some(id) = id.filter(|id| *id != event.id) {
                    let why = format!("event {} is where event {} should be", ShowId(event.id), ShowId(id));
                    return Err(corrupt(&self.dir, place.segment, at, why));
                }
                if let Some(slot) = events.get_mut(i) {
                    *slot = Some(Event::from(event));
                }
            }
            rest = later;
        }
        Ok(events.into_iter().flatten().collect())
    }

    fn read_page(&self, found: Vec<(Option<EventId>, Place)>, more_follows: bool) -> Result<QueryPage, StoreError> {
        Ok(QueryPage { events: self.read_all(&found)?, more_follows })
    }

    /// One retention step: deletes up to [`RETAIN_CHUNK`] of the oldest events while they are
    /// older than `before` or more than `keep` remain. How many went.
    fn retain_step(&self, before: Option<Timestamp>, keep: Option<u64>) -> Result<u64, StoreError> {
        let mut writer = self.writer()?;
        let Some((through, _)) = self.index().retention_point(before, keep, RETAIN_CHUNK) else {
            self.sweep(&writer);
            return Ok(0);
        };
        writer.buf.clear();
        record::encode_retain(through, &mut writer.buf).map_err(|e| unencodable(&self.dir, e.into()))?;
        self.append(&mut writer)?;
        let removed = self.index_mut().delete_through(through);
        self.sweep(&writer);
        Ok(removed)
    }
}

/// Locks `file`, trying again for up to `patience` while another holder has it.
fn lock_within(file: &File, patience: std::time::Duration) -> Result<(), TryLockError> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn io_error(dir: &Path, no: u64, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} segment {}: {e}", segment::path(dir, no).display()))
}

fn corrupt(dir: &Path, no: u64, offset: u64, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!(
        "{}: corrupt store: at offset {offset}: {why} (restore a backup, or move the directory away to start empty)",
        segment::path(dir, no).display()
    ))
}

fn unencodable(dir: &Path, e: EncodeError) -> StoreError {
    StoreError::Invalid(match e {
        EncodeError::Event(id, e) => format!("{}: cannot encode event {}: {e}", dir.display(), ShowId(id)),
        EncodeError::Oversize(n) => {
            format!("{}: a commit of {n} bytes is more than one record holds (1 GiB)", dir.display())
        }
    })
}

impl EventStore for LogStore {
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        if commit.events.is_empty() && commit.sessions.is_empty() && commit.peers.is_empty() {
            return Ok(());
        }
        let mut writer = self.writer()?;
        let mut skip = vec![false; commit.events.len()];
        {
            let index = self.index();
            let mut seen = HashSet::with_capacity(commit.events.len());
            for (i, event) in commit.events.iter().enumerate() {
                if !index.by_id.contains_key(&event.id) && seen.insert(event.id) {
                    continue;
                }
                if commit.hop(i).via.is_none() {
                    return Err(StoreError::Corrupt(format!(
                        "{}: event {} is already stored; the commit was not written",
                        self.dir.display(),
                        ShowId(event.id)
                    )));
                }
                // A copy a peer gateway sent again after the broker's window forgot the id:
                // stored already, so stored once.
                skip[i] = true;
            }
        }
        writer.buf.clear();
        let placed = record::encode_commit(commit, &skip, &mut writer.buf).map_err(|e| unencodable(&self.dir, e))?;
        let (no, start) = self.append(&mut writer)?;
        let no = u32::try_from(no)
            .map_err(|_| StoreError::Closed(format!("{}: segment numbers past 2^32", self.dir.display())))?;
        let mut index = self.index_mut();
        let written = commit.events.iter().enumerate().filter(|(i, _)| !skip.get(*i).copied().unwrap_or(false));
        for ((i, event), placed) in written.zip(placed) {
            let at = start + placed.offset as u64;
            let event_ref = Event::as_ref(event);
            index.add(&event_ref, commit.hop(i), no, at as u32, placed.len as u32);
            if index.is_latest(&event_ref) {
                index.set_latest(event.clone());
            }
        }
        index.sessions.extend(commit.sessions.iter().copied());
        index.peers.extend(commit.peers.iter().copied());
        Ok(())
    }

    fn latest(&self) -> Result<Vec<Event>, StoreError> {
        Ok(self.index().latest.values().map(|event| Event::clone(event)).collect())
    }

    /// Walks the time (or source-time) order in memory between the query's bounds, from just
    /// past `last_event_id`, filtering on the type and times kept there; then reads the page's
    /// events. The rules are [`super::RedbStore`]'s: events without a source timestamp have no
    /// place in an order by it, `last_event_id` must be stored, the scan budget bounds the walk.
    fn timeseries_within(&self, q: &TimeseriesQuery, max_bytes: usize, scan: &Scan) -> Result<QueryPage, StoreError> {
        if q.event_types.as_ref().is_some_and(Vec::is_empty) {
            return Ok(QueryPage::default());
        }
        let by_source = q.order_by == OrderBy::SourceTimestamp;
        let (from, to) = if by_source { (q.source_t_from, q.source_t_to) } else { (q.t_from, q.t_to) };
        let filter = Filter::new(q);
        let (mut low, mut high) = {
            let index = self.index();
            let mut low = from
                .map_or((Timestamp { s: i64::MIN, us: 0 }, EventId { server: 0, session: 0, instance: 0 }), |t| {
                    (t, EventId { server: 0, session: 0, instance: 0 })
                });
            let mut high = (
                to.unwrap_or(Timestamp { s: i64::MAX, us: u32::MAX }),
                EventId { server: !0, session: !0, instance: !0 },
            );
            if let Some(last) = q.last_event_id {
                let not_stored = || {
                    StoreError::Invalid(format!(
                        "{}: last_event_id {} is not stored (deleted by retention?); query again without it",
                        self.dir.display(),
                        ShowId(last)
                    ))
                };
                let slot = index.by_id.get(&last).and_then(|seq| index.slot(*seq)).ok_or_else(not_stored)?;
                let time = if by_source {
                    slot.source.ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "{}: last_event_id {} has no source timestamp, so it has no place in an order by source timestamp",
                        self.dir.display(),
                        ShowId(last)
                    ))
                })?
                } else {
                    slot.timestamp
                };
                let next = match q.order {
                    Order::Ascending => next_key((time, last)).map(|after| low = low.max(after)),
                    Order::Descending => previous_key((time, last)).map(|before| high = high.min(before)),
                };
                if next.is_none() {
                    return Ok(QueryPage::default());
                }
            }
            (low, high)
        };
        let mut budget = Budget::new(q.max_results, max_bytes);
        let mut type_matches = std::collections::HashMap::new();
        let mut found = Vec::new();
        let mut more_follows = false;
        let mut looked_at = 0;
        // The walk takes the index's lock for WALK_CHUNK entries at a time, so that commits
        // (which wait for the lock) do not wait for a long query.
        'walk: while low <= high {
            let index = self.index();
            let order = if by_source { &index.by_source } else { &index.by_time };
            let range = order.range(low..=high);
            let keys: Box<dyn Iterator<Item = _>> =
                if q.order == Order::Ascending { Box::new(range) } else { Box::new(range.rev()) };
            let mut walked = 0;
            for (&key, &seq) in keys {
                if walked == WALK_CHUNK {
                    // Go on from this key, after letting commits in.
                    match q.order {
                        Order::Ascending => low = key,
                        Order::Descending => high = key,
                    }
                    continue 'walk;
                }
                walked += 1;
                let id = key.1;
                if scan.is_spent(looked_at) {
                    scan.spent.store(true, std::sync::atomic::Ordering::Relaxed);
                    if found.is_empty() {
                        return Err(StoreError::Invalid(format!(
                            "the query looked at {looked_at} stored events without finding one it asks for (the \
                             gateway looks at {} per page); narrow its time range or its types",
                            scan.max_events
                        )));
                    }
                    more_follows = true;
                    break 'walk;
                }
                looked_at += 1;
                if scan.is_cancelled(looked_at) {
                    return Err(StoreError::Closed("the query was cancelled: nobody waits for it".into()));
                }
                let Some(slot) = index.slot(seq) else { continue };
                let wanted = *type_matches
                    .entry(slot.type_no)
                    .or_insert_with(|| index.type_of(slot).is_some_and(|ty| filter.matches_type(ty)));
                if !wanted || !filter.matches_times(slot.timestamp, slot.source) {
                    continue;
                }
                if !budget.take(slot.size as usize) {
                    more_follows = true;
                    break 'walk;
                }
                found.extend(index.place(seq).map(|place| (Some(id), place)));
            }
            break;
        }
        self.read_page(found, more_follows)
    }

    fn server_events(
        &self,
        server_id: u64,
        max_results: Option<u32>,
        last_event_id: Option<EventId>,
        max_bytes: usize,
    ) -> Result<QueryPage, StoreError> {
        let mut low = EventId { server: server_id, session: 0, instance: 0 };
        let high = EventId { server: server_id, session: !0, instance: !0 };
        if let Some(last) = last_event_id {
            match next_id(last) {
                Some(after) => low = low.max(after),
                None => return Ok(QueryPage::default()),
            }
        }
        if low > high {
            return Ok(QueryPage::default());
        }
        let index = self.index();
        let mut budget = Budget::new(max_results, max_bytes);
        let mut found = Vec::new();
        let mut more_follows = false;
        for (&id, &seq) in index.by_id.range(low..=high) {
            let Some(slot) = index.slot(seq) else { continue };
            if !budget.take(slot.size as usize) {
                more_follows = true;
                break;
            }
            found.extend(index.place(seq).map(|place| (Some(id), place)));
        }
        drop(index);
        self.read_page(found, more_follows)
    }

    fn session(&self, session: u64) -> Result<Option<u32>, StoreError> {
        Ok(self.index().sessions.get(&session).copied())
    }

    fn begin_session(&self, server_id: u64) -> Result<u64, StoreError> {
        let mut writer = self.writer()?;
        let session = {
            let index = self.index();
            let stored = index.last_id(server_id).map(|id| id.session);
            let given = index.gateway_sessions.get(&server_id).copied();
            given.max(stored).map_or(1, |last| last.saturating_add(1))
        };
        writer.buf.clear();
        record::encode_session(server_id, session, &mut writer.buf).map_err(|e| unencodable(&self.dir, e.into()))?;
        self.append(&mut writer)?;
        self.index_mut().gateway_sessions.insert(server_id, session);
        Ok(session)
    }

    fn last_id(&self, server_id: u64) -> Result<Option<EventId>, StoreError> {
        Ok(self.index().last_id(server_id))
    }

    /// Deletes by age and beyond the count together, the oldest first, in steps of at most
    /// 10 000 events; then deletes the oldest segments that hold no event any more.
    fn retain(&self, older_than: Option<Timestamp>, max_events: Option<u64>) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let n = self.retain_step(older_than, max_events)?;
            removed += n;
            if n < RETAIN_CHUNK {
                return Ok(removed);
            }
        }
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let index = self.index();
        Ok(StoreStats { events: index.live, bytes: index.segments.values().map(|s| s.bytes).sum() })
    }

    fn store_id(&self) -> u64 {
        self.store_id
    }

    fn admitted(&self, after: u64, max_results: usize, max_bytes: usize) -> Result<AdmittedPage, StoreError> {
        let index = self.index();
        let mut budget = Budget::new(Some(u32::try_from(max_results).unwrap_or(u32::MAX)), max_bytes);
        let mut scanned_to = after;
        let mut found = Vec::new();
        for seq in index.seqs_from(after.saturating_add(1)) {
            let Some(slot) = index.slot(seq) else { break };
            if !slot.live {
                scanned_to = seq;
                continue;
            }
            if !budget.take(slot.size as usize) {
                break;
            }
            scanned_to = seq;
            found.extend(index.place(seq).map(|place| (seq, index.hop(seq), place)));
        }
        drop(index);
        let places: Vec<_> = found.iter().map(|(_, _, place)| (None, place.clone())).collect();
        let events = self.read_all(&places)?;
        let entries = found.into_iter().zip(events).map(|((seq, hop, _), event)| (seq, hop, event)).collect();
        Ok(AdmittedPage { entries, scanned_to })
    }

    fn last_admitted(&self) -> Result<u64, StoreError> {
        Ok(self.index().last_seq)
    }

    fn peer(&self, peer: u64) -> Result<Option<PeerCursor>, StoreError> {
        Ok(self.index().peers.get(&peer).copied())
    }

    fn contains(&self, id: EventId) -> Result<bool, StoreError> {
        Ok(self.index().by_id.contains_key(&id))
    }
}
