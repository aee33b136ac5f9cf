//! The admission log and peer cursors of [`RedbStore`] (federation, docs/FEDERATION.md):
//!
//! | table      | key                  | value                                                    |
//! |------------|----------------------|----------------------------------------------------------|
//! | `admitted` | sequence number      | event id (24 B) ++ ttl (1 B) ++ from a peer (1 B) ++ its server id (8 B) |
//! | `peers`    | peer's server id     | its store id (8 B) ++ the last of its numbers taken (8 B) |
//! | `meta`     | `"store_id"`         | this store's id, random at creation                      |
//! | `meta`     | `"admitted"`         | the number of the last entry ever made (kept when retention empties the log) |
//!
//! The log holds ids, not copies: an entry whose event retention deleted is skipped when read,
//! and retention trims such entries from the front.

use redb::{ReadableTable, TableDefinition};
use rivulet_core::model::EventId;
use rivulet_core::owned::Event;

use super::{EVENTS, IdKey, META, RedbStore, ShowId, id_key};
use crate::store::{AdmittedPage, Hop, PeerCursor, StoreError};

type Entry = [u8; 34];

pub(super) const ADMITTED: TableDefinition<u64, &Entry> = TableDefinition::new("admitted");
pub(super) const PEERS: TableDefinition<u64, &[u8; 16]> = TableDefinition::new("peers");
pub(super) const STORE_ID_KEY: &str = "store_id";
const LAST_KEY: &str = "admitted";

/// Entries retention trims from the front of the log per step, at most.
const TRIM_CHUNK: usize = 10_000;

fn entry(id: EventId, hop: Hop) -> Entry {
    let mut entry = [0; 34];
    entry[..24].copy_from_slice(&id_key(id));
    entry[24] = hop.ttl;
    if let Some(via) = hop.via {
        entry[25] = 1;
        entry[26..].copy_from_slice(&via.to_be_bytes());
    }
    entry
}

fn from_entry(entry: &Entry) -> (IdKey, Hop) {
    let mut key = [0; 24];
    key.copy_from_slice(&entry[..24]);
    let mut via = [0; 8];
    via.copy_from_slice(&entry[26..]);
    let via = (entry[25] == 1).then(|| u64::from_be_bytes(via));
    (key, Hop { ttl: entry[24], via })
}

fn cursor_bytes(cursor: PeerCursor) -> [u8; 16] {
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&cursor.store_id.to_be_bytes());
    bytes[8..].copy_from_slice(&cursor.seq.to_be_bytes());
    bytes
}

fn cursor_from(bytes: &[u8; 16]) -> PeerCursor {
    let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p] = *bytes;
    PeerCursor {
        store_id: u64::from_be_bytes([a, b, c, d, e, f, g, h]),
        seq: u64::from_be_bytes([i, j, k, l, m, n, o, p]),
    }
}

impl RedbStore {
    /// Appends a commit's events to the log, numbered on from its last entry, and stores its
    /// peer cursors; inside the commit's transaction.
    /// `skip[i]`: event `i` was already stored (a copy a peer sent again), so it gets no entry.
    pub(super) fn append_admitted(
        &self,
        txn: &redb::WriteTransaction,
        commit: &crate::store::Commit,
        skip: &[bool],
    ) -> Result<(), StoreError> {
        let mut log = txn.open_table(ADMITTED).map_err(self.err("cannot open table `admitted`"))?;
        let mut meta = txn.open_table(META).map_err(self.err("cannot open table `meta`"))?;
        let mut seq = self.last_number(&meta, &log)?;
        for (i, event) in commit.events.iter().enumerate() {
            if skip.get(i).copied().unwrap_or(false) {
                continue;
            }
            seq += 1;
            log.insert(seq, &entry(event.id, commit.hop(i))).map_err(self.err("cannot write table `admitted`"))?;
        }
        meta.insert(LAST_KEY, seq).map_err(self.err("cannot write table `meta`"))?;
        let mut peers = txn.open_table(PEERS).map_err(self.err("cannot open table `peers`"))?;
        for &(peer, cursor) in &commit.peers {
            peers.insert(peer, &cursor_bytes(cursor)).map_err(self.err("cannot write table `peers`"))?;
        }
        Ok(())
    }

    /// Drops entries from the front of the log whose events are gone (after retention).
    pub(super) fn trim_admitted(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(self.err("cannot start a write transaction"))?;
        {
            let events = txn.open_table(EVENTS).map_err(self.err("cannot open table `events`"))?;
            let mut log = txn.open_table(ADMITTED).map_err(self.err("cannot open table `admitted`"))?;
            for _ in 0..TRIM_CHUNK {
                let first = log.first().map_err(self.err("cannot read table `admitted`"))?;
                let Some((seq, key)) = first.map(|(seq, entry)| (seq.value(), from_entry(entry.value()).0)) else {
                    break;
                };
                if events.get(&key).map_err(self.err("cannot read table `events`"))?.is_some() {
                    break;
                }
                log.remove(seq).map_err(self.err("cannot write table `admitted`"))?;
            }
        }
        txn.commit().map_err(self.err("cannot commit a retention step"))
    }

    pub(super) fn read_admitted(&self, after: u64, max: usize, max_bytes: usize) -> Result<AdmittedPage, StoreError> {
        let txn = self.read()?;
        let events = txn.open_table(EVENTS).map_err(self.err("cannot open table `events`"))?;
        let log = txn.open_table(ADMITTED).map_err(self.err("cannot open table `admitted`"))?;
        let mut page = AdmittedPage { entries: Vec::new(), scanned_to: after };
        let mut bytes = 0usize;
        let start = after.saturating_add(1);
        for item in log.range(start..).map_err(self.err("cannot read table `admitted`"))? {
            let (seq, value) = item.map_err(self.err("cannot read table `admitted`"))?;
            let (key, hop) = from_entry(value.value());
            let Some(stored) = events.get(&key).map_err(self.err("cannot read table `events`"))? else {
                page.scanned_to = seq.value();
                continue;
            };
            let event = Event::from(self.decode(&key, stored.value())?);
            let size = crate::store::page_bytes(&event);
            if page.entries.len() >= max || (!page.entries.is_empty() && bytes.saturating_add(size) > max_bytes) {
                break;
            }
            bytes = bytes.saturating_add(size);
            page.scanned_to = seq.value();
            page.entries.push((seq.value(), hop, event));
        }
        Ok(page)
    }

    pub(super) fn read_last_admitted(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let log = txn.open_table(ADMITTED).map_err(self.err("cannot open table `admitted`"))?;
        let meta = txn.open_table(META).map_err(self.err("cannot open table `meta`"))?;
        self.last_number(&meta, &log)
    }

    /// The number of the last entry ever made: kept in `meta`, so that numbers go on growing
    /// after retention emptied the log (a peer's cursor stays valid); the log's last entry for a
    /// store from before that key.
    fn last_number(
        &self,
        meta: &impl ReadableTable<&'static str, u64>,
        log: &impl ReadableTable<u64, &'static Entry>,
    ) -> Result<u64, StoreError> {
        let kept = meta.get(LAST_KEY).map_err(self.err("cannot read table `meta`"))?.map(|v| v.value());
        let last = last(log).map_err(self.err("cannot read table `admitted`"))?;
        Ok(kept.unwrap_or(0).max(last))
    }

    pub(super) fn read_peer(&self, peer: u64) -> Result<Option<PeerCursor>, StoreError> {
        let txn = self.read()?;
        let peers = txn.open_table(PEERS).map_err(self.err("cannot open table `peers`"))?;
        let cursor = peers.get(peer).map_err(self.err("cannot read table `peers`"))?;
        Ok(cursor.map(|bytes| cursor_from(bytes.value())))
    }

    pub(super) fn has_event(&self, id: EventId) -> Result<bool, StoreError> {
        let txn = self.read()?;
        let events = txn.open_table(EVENTS).map_err(self.err("cannot open table `events`"))?;
        let found = events.get(&id_key(id)).map_err(self.err(format_args!("cannot read event {}", ShowId(id))))?;
        Ok(found.is_some())
    }
}

/// The number of the last entry of the log; 0 when empty.
fn last<T: ReadableTable<u64, &'static Entry>>(log: &T) -> Result<u64, redb::StorageError> {
    Ok(log.last()?.map_or(0, |(seq, _)| seq.value()))
}
