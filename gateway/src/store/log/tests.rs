//! The log store's tests: the contract every store keeps (`store::contract`), segments, and
//! damaged files.

crate::store::contract::contract_tests!(crate::store::LogStore::open);

use std::path::Path;
use std::sync::Arc;

use rivulet_core::model::Timestamp;
use rivulet_core::owned::Event;

use super::{LogStore, segment};
use crate::store::contract::{event, id, json};
use crate::store::{Commit, EventStore, Hop, PeerCursor, StoreError};

/// Commit `n` of the tests: ten events of instances `10n + 1 ..= 10n + 10`, session 7 at `n + 1`.
fn batch(n: u64) -> Commit {
    let events =
        (n * 10 + 1..=n * 10 + 10).map(|i| event(id(1, 1, i), &format!("t/{}", i % 3), i as i64, None, json("1")));
    Commit::new(events, vec![(7, n as u32 + 1)])
}

fn instances(store: &LogStore) -> Vec<u64> {
    store.server_events(1, None, None, usize::MAX).unwrap().events.iter().map(|e| e.id.instance).collect()
}

fn segments(dir: &Path) -> Vec<u64> {
    segment::list(dir).unwrap()
}

/// A store in `dir/log` with three commits: its path, its one segment's path and bytes.
fn three_commits(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let path = dir.join("log");
    let store = LogStore::open(&path).unwrap();
    for n in 0..3 {
        store.commit(&batch(n)).unwrap();
    }
    drop(store);
    let file = segment::path(&path, 1);
    let whole = std::fs::read(&file).unwrap();
    (path, file, whole)
}

#[test]
fn a_write_cut_off_at_any_byte_leaves_the_commits_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (path, file, whole) = three_commits(dir.path());
    // Where each commit's frame ends: reopen after each cut and see how many are whole.
    let mut lens = Vec::new();
    for n in 0..=3 {
        let scratch = tempfile::tempdir().unwrap();
        let store = LogStore::open(scratch.path()).unwrap();
        for m in 0..n {
            store.commit(&batch(m)).unwrap();
        }
        lens.push(store.stats().unwrap().bytes);
    }
    for cut in (lens[0] as usize..whole.len()).step_by(7).chain([whole.len() - 1]) {
        std::fs::write(&file, &whole[..cut]).unwrap();
        let store = LogStore::open(&path).unwrap();
        let commits = lens.iter().filter(|len| **len as usize <= cut).count() as u64 - 1;
        let expected: Vec<u64> = (1..=commits * 10).collect();
        assert_eq!(instances(&store), expected, "cut at {cut}");
        assert_eq!(store.session(7).unwrap(), commits.checked_sub(1).map(|n| n as u32 + 1));
        assert_eq!(std::fs::metadata(&file).unwrap().len(), lens[commits as usize], "cut back to the last whole frame");
        // Commits go on after the cut.
        store.commit(&batch(commits)).unwrap();
        drop(store);
        assert_eq!(instances(&LogStore::open(&path).unwrap()).len() as u64, (commits + 1) * 10);
        std::fs::write(&file, &whole).unwrap();
    }
}

#[test]
fn damage_before_a_whole_frame_is_refused_not_cut_away() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let first_end = {
        let store = LogStore::open(&path).unwrap();
        store.commit(&batch(0)).unwrap();
        let end = store.stats().unwrap().bytes;
        store.commit(&batch(1)).unwrap();
        end
    };
    let file = segment::path(&path, 1);
    let mut bytes = std::fs::read(&file).unwrap();
    // A byte of the first commit's events: its CRC fails, the second commit is whole.
    bytes[first_end as usize - 20] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();
    let e = LogStore::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
    assert!(e.message().contains("CRC") && e.message().contains("00000000000000000001.seg"), "{e}");
}

#[test]
fn flipped_bytes_give_errors_or_a_cut_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (path, file, whole) = three_commits(dir.path());
    for at in 0..whole.len() {
        let mut bytes = whole.clone();
        bytes[at] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        match LogStore::open(&path) {
            // Only damage to the last frame is taken for a cut-off write.
            Ok(store) => assert!(instances(&store).len() >= 20, "flip at {at}"),
            Err(e) => assert!(matches!(e, StoreError::Corrupt(_)), "flip at {at}: {e:?}"),
        }
    }
    std::fs::write(&file, b"not a segment at all").unwrap();
    let e = LogStore::open(&path).unwrap_err();
    assert!(e.message().contains("not a Rivulet log segment"), "{e}");
}

#[test]
fn segments_roll_and_retention_deletes_the_oldest_keeping_sessions_latest_and_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let store = LogStore::open_with(&path, 2048).unwrap();
    let session = store.begin_session(1).unwrap();
    let peer = PeerCursor { store_id: 5, seq: 9 };
    store.commit(&Commit { peers: vec![(2, peer)], ..Commit::default() }).unwrap();
    for n in 0..40 {
        store.commit(&batch(n)).unwrap();
    }
    let rolled = segments(&path);
    assert!(rolled.len() > 5, "segments: {rolled:?}");
    let latest = store.latest().unwrap();

    // Everything before instance 301 goes: its timestamps are below 301 µs.
    let removed = store.retain(Some(Timestamp::from_micros(301)), None).unwrap();
    assert_eq!(removed, 300);
    let kept = segments(&path);
    assert!(kept.len() < rolled.len() && kept[0] > 1, "segments after retention: {kept:?}");
    assert_eq!(kept.last(), rolled.last());
    drop(store);

    let store = LogStore::open_with(&path, 2048).unwrap();
    assert_eq!(instances(&store), (301..=400).collect::<Vec<_>>());
    assert_eq!(store.session(7).unwrap(), Some(40));
    assert_eq!(store.peer(2).unwrap(), Some(peer));
    assert_eq!(store.last_admitted().unwrap(), 400);
    let mut again = store.latest().unwrap();
    let mut before = latest.clone();
    again.sort_by(|a, b| a.event_type.cmp(&b.event_type));
    before.sort_by(|a, b| a.event_type.cmp(&b.event_type));
    assert_eq!(again, before);
    assert_eq!(store.begin_session(1).unwrap(), session + 1, "the gateway's sessions go on");
    assert_eq!(store.admitted(0, 1, usize::MAX).unwrap().entries[0].0, 301);
    assert_eq!(store.stats().unwrap().events, 100);
}

#[test]
fn a_missing_segment_is_refused_and_a_segment_without_its_checkpoint_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    {
        let store = LogStore::open_with(&path, 1024).unwrap();
        for n in 0..10 {
            store.commit(&batch(n)).unwrap();
        }
    }
    let all = segments(&path);
    assert!(all.len() >= 3, "{all:?}");

    // A crash between creating the next segment and writing its checkpoint: only the header.
    let next = all.last().unwrap() + 1;
    let header = super::record::header(
        u64::from_le_bytes(std::fs::read(segment::path(&path, 1)).unwrap()[8..16].try_into().unwrap()),
        next,
    );
    std::fs::write(segment::path(&path, next), header).unwrap();
    {
        let store = LogStore::open_with(&path, 1024).unwrap();
        assert_eq!(instances(&store).len(), 100);
        store.commit(&batch(10)).unwrap();
    }
    assert_eq!(instances(&LogStore::open_with(&path, 1024).unwrap()).len(), 110);

    std::fs::remove_file(segment::path(&path, all[1])).unwrap();
    let e = LogStore::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)) && e.message().contains("missing"), "{e:?}");
}

#[test]
fn imported_copies_keep_their_hops_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let hop = Hop { ttl: 3, via: Some(42) };
    {
        let store = LogStore::open(&path).unwrap();
        let e = Arc::new(event(id(9, 1, 1), "x", 5, Some(-7), json("2")));
        store.commit(&Commit { events: vec![e], hops: vec![hop], ..Commit::default() }).unwrap();
    }
    let store = LogStore::open(&path).unwrap();
    let page = store.admitted(0, 10, usize::MAX).unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].1, hop);
    let stored: &Event = &page.entries[0].2;
    assert_eq!(stored.source_timestamp, Some(Timestamp::from_micros(-7)));
}

#[test]
fn a_segment_whose_creation_was_cut_short_is_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    drop(LogStore::open_with(&path, 1024).unwrap());
    // Nothing but an empty first segment: a store whose creation failed starts anew.
    std::fs::write(segment::path(&path, 1), b"").unwrap();
    drop(LogStore::open_with(&path, 1024).unwrap());
    {
        let store = LogStore::open_with(&path, 1024).unwrap();
        for n in 0..5 {
            store.commit(&batch(n)).unwrap();
        }
    }
    let last = *segments(&path).last().unwrap();
    for cut_short in [&b""[..], &b"RIVLOG"[..], &[0; 40][..]] {
        std::fs::write(segment::path(&path, last + 1), cut_short).unwrap();
        let store = LogStore::open_with(&path, 1024).unwrap();
        assert_eq!(instances(&store).len(), 50, "{cut_short:?}");
        assert_eq!(*segments(&path).last().unwrap(), last, "the unfinished segment is gone");
    }
}

#[test]
fn commits_without_events_do_not_pile_up_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let store = LogStore::open_with(&path, 512).unwrap();
    // Volatile-only traffic: every group commit carries a session's number and no event.
    for n in 0..2000u32 {
        store.commit(&Commit { sessions: vec![(7, n + 1)], ..Commit::default() }).unwrap();
    }
    assert!(segments(&path).len() <= 2, "segments: {:?}", segments(&path));
    drop(store);
    let store = LogStore::open_with(&path, 512).unwrap();
    assert_eq!(store.session(7).unwrap(), Some(2000));
}

#[test]
fn a_torn_commit_is_cut_even_when_a_payload_holds_a_whole_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let store = LogStore::open(&path).unwrap();
    store.commit(&batch(0)).unwrap();
    let before = store.stats().unwrap().bytes as usize;
    // A payload that is itself a whole frame (of a retention record).
    let mut frame = Vec::new();
    super::record::encode_retain((Timestamp::from_micros(1), id(1, 1, 1)), &mut frame).unwrap();
    let payload = rivulet_core::owned::Payload::Binary { kind: "x".into(), data: frame };
    let e = event(id(1, 1, 11), "t/x", 11, None, Some(payload));
    store.commit(&Commit::new([e], vec![])).unwrap();
    drop(store);
    let file = segment::path(&path, 1);
    let whole = std::fs::read(&file).unwrap();
    // The crash cut the second commit's last bytes: the frame in its payload is still whole.
    std::fs::write(&file, &whole[..whole.len() - 3]).unwrap();
    let store = LogStore::open(&path).unwrap();
    assert_eq!(instances(&store).len(), 10);
    assert_eq!(std::fs::metadata(&file).unwrap().len() as usize, before);
}

#[test]
fn after_a_restart_a_full_segment_is_closed_before_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    {
        let store = LogStore::open_with(&path, 1 << 20).unwrap();
        for n in 0..20 {
            store.commit(&batch(n)).unwrap();
        }
    }
    assert_eq!(segments(&path), [1]);
    // Reopened with segments of 2 KiB, the first is past that: the next commit starts another.
    let store = LogStore::open_with(&path, 2048).unwrap();
    store.commit(&batch(20)).unwrap();
    assert_eq!(segments(&path), [1, 2]);
    assert_eq!(instances(&store).len(), 210);
}
