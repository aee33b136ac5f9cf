//! A disk that fills up under the store: from a moment on, writes that need new blocks fail with
//! `ENOSPC`. redb then refuses every later write ("Previous I/O error occurred"): the store's
//! errors name the first failure; reads go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use redb::StorageBackend;
use redb::backends::FileBackend;
use rivulet_core::owned::EventPath;

use super::*;

/// The file, with writes failing once `full` is set.
#[derive(Debug)]
struct FillingDisk {
    file: FileBackend,
    full: Arc<AtomicBool>,
    /// How much of the file has blocks (was written).
    allocated: AtomicU64,
}

impl StorageBackend for FillingDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Full: blocks the file has are rewritten, new ones are not there (`ENOSPC`).
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if self.full.load(Relaxed) && offset + data.len() as u64 > self.allocated.load(Relaxed) {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        self.file.write(offset, data)?;
        self.allocated.fetch_max(offset + data.len() as u64, Relaxed);
        Ok(())
    }
}

fn event(instance: u64) -> Arc<Event> {
    Arc::new(Event {
        id: EventId { server: 1, session: 1, instance },
        event_type: EventPath::parse("a"),
        timestamp: Timestamp::from_micros(instance as i64),
        source_timestamp: None,
        payload: Some(rivulet_core::owned::Payload::Json("x".repeat(10_000))),
    })
}

/// Opens the store in `path` on a [`FillingDisk`] that is full while `full` is set.
fn open(path: &Path, full: &Arc<AtomicBool>) -> Result<RedbStore, String> {
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).unwrap();
    let allocated = AtomicU64::new(file.metadata().unwrap().len());
    let disk = FillingDisk { file: FileBackend::new(file).unwrap(), full: full.clone(), allocated };
    let db = Database::builder().create_with_backend(disk).map_err(|e| e.to_string())?;
    RedbStore::with_database(db, path).map_err(|e| e.to_string())
}

fn events(range: std::ops::Range<u64>) -> Commit {
    Commit { events: range.map(event).collect(), ..Commit::default() }
}

#[test]
fn on_a_full_disk_writes_fail_naming_the_cause_and_what_was_committed_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let full = Arc::new(AtomicBool::new(false));
    let store = open(&path, &full).unwrap();
    store.commit(&events(1..2)).unwrap();
    full.store(true, Relaxed);
    let failed = store.commit(&events(2..50)).unwrap_err();
    assert!(failed.message().contains("No space left on device"), "{failed}");
    // redb takes no more writes after that ("Previous I/O error occurred"): the store says why.
    let next = store.retain(None, Some(100)).unwrap_err();
    assert!(matches!(next, StoreError::Closed(_)), "{next:?}");
    let message = next.message();
    assert!(message.contains("the store stopped at an earlier I/O error"), "{message}");
    assert!(message.contains("cannot commit: I/O error: No space left on device"), "the cause: {message}");
    // Reads go on: the committed event, not the failed ones.
    let page = store.timeseries(&TimeseriesQuery::default(), 1 << 20).unwrap();
    assert_eq!(page.events.iter().map(|e| e.id.instance).collect::<Vec<_>>(), [1]);
    drop(store);

    // A restart on the still-full disk opens, reads, and fails its first commit the same way.
    let store = open(&path, &full).expect("opens on a full disk");
    assert_eq!(store.timeseries(&TimeseriesQuery::default(), 1 << 20).unwrap().events.len(), 1);
    assert!(store.commit(&events(2..50)).unwrap_err().message().contains("No space left on device"));
    assert_eq!(store.latest().unwrap().len(), 1);
    drop(store);
    // Room again: everything goes on.
    full.store(false, Relaxed);
    let store = open(&path, &full).unwrap();
    store.commit(&events(2..50)).unwrap();
    assert_eq!(store.timeseries(&TimeseriesQuery::default(), 1 << 30).unwrap().events.len(), 49);
}
