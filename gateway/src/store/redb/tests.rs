//! The redb store's tests: the contract every store keeps (`store::contract`), and every kind of
//! bad file or bad data it must refuse with an error, not a panic.

use rivulet_core::owned::EventPath;

use super::*;
use crate::store::contract::{commit, event, id, json, ts};

crate::store::contract::contract_tests!(crate::store::RedbStore::open);

#[test]
fn corrupt_values_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
    commit(
        &store,
        vec![event(id(1, 1, 1), "a", 1, Some(1), json("1")), event(id(1, 1, 2), "b", 2, None, json("2"))],
        vec![],
    );
    let write = |f: &dyn Fn(&redb::WriteTransaction)| {
        let txn = store.db.begin_write().unwrap();
        f(&txn);
        txn.commit().unwrap();
    };
    // Garbage in place of event 1/1/2.
    write(&|txn| {
        let mut events = txn.open_table(EVENTS).unwrap();
        events.insert(&id_key(id(1, 1, 2)), [0xff, 0xfe, 0x00, 0x13].as_slice()).unwrap();
    });
    let check = |e: StoreError, what: &[&str]| {
        for w in what {
            assert!(e.message().contains(w), "{e:?} should mention {w}");
        }
        assert!(e.message().contains("s.redb"), "{e:?} should name the file");
    };
    check(store.timeseries(&TimeseriesQuery::default(), usize::MAX).unwrap_err(), &["`events`", "1/1/2", "corrupt"]);
    check(store.server_events(1, None, None, usize::MAX).unwrap_err(), &["`events`", "1/1/2"]);
    // The first event alone still reads.
    let q = TimeseriesQuery { order_by: OrderBy::SourceTimestamp, ..Default::default() };
    assert_eq!(store.timeseries(&q, usize::MAX).unwrap().events.len(), 1);

    // A valid event under another id, and a valid event with bytes after it.
    write(&|txn| {
        let mut events = txn.open_table(EVENTS).unwrap();
        let other = postcard::to_stdvec(&event(id(1, 1, 3), "b", 2, None, None).as_ref()).unwrap();
        events.insert(&id_key(id(1, 1, 2)), other.as_slice()).unwrap();
    });
    check(store.server_events(1, None, None, usize::MAX).unwrap_err(), &["1/1/2", "is event 1/1/3"]);
    write(&|txn| {
        let mut events = txn.open_table(EVENTS).unwrap();
        let mut long = postcard::to_stdvec(&event(id(1, 1, 2), "b", 2, None, None).as_ref()).unwrap();
        long.push(0);
        events.insert(&id_key(id(1, 1, 2)), long.as_slice()).unwrap();
    });
    check(store.server_events(1, None, None, usize::MAX).unwrap_err(), &["1/1/2", "stray bytes"]);

    // An index entry without its event (event 1/1/2 repaired first).
    write(&|txn| {
        let mut events = txn.open_table(EVENTS).unwrap();
        let good = postcard::to_stdvec(&event(id(1, 1, 2), "b", 2, None, json("2")).as_ref()).unwrap();
        events.insert(&id_key(id(1, 1, 2)), good.as_slice()).unwrap();
        let mut time = txn.open_table(TIME).unwrap();
        time.insert(&time_key(ts(5), id(9, 9, 9)), ()).unwrap();
    });
    let q = TimeseriesQuery { t_from: Some(ts(3)), ..Default::default() };
    check(store.timeseries(&q, usize::MAX).unwrap_err(), &["`time`", "9/9/9", "no event"]);
    check(store.retain(Some(ts(10)), None).unwrap_err(), &["`time`", "9/9/9"]);
    assert_eq!(store.stats().unwrap().events, 2, "a failed retention step deletes nothing");

    // Garbage in the latest table: reading it and committing to that type fail cleanly.
    write(&|txn| {
        let mut latest = txn.open_table(LATEST).unwrap();
        latest.insert(EventPath::parse("a").as_ref().as_packed(), [1u8, 2, 3].as_slice()).unwrap();
    });
    check(store.latest().unwrap_err(), &["`latest`", "type a"]);
    let e = store.commit(&Commit::new(vec![event(id(1, 1, 7), "a", 9, None, None)], vec![]));
    check(e.unwrap_err(), &["`latest`", "type a"]);

    // A layout version this code does not know.
    write(&|txn| {
        txn.open_table(META).unwrap().insert(FORMAT_KEY, 99).unwrap();
    });
    let path = store.path().to_path_buf();
    drop(store);
    let e = RedbStore::open(&path).unwrap_err();
    assert!(e.message().contains("layout version 99"), "{e}");
    assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
}

#[test]
fn a_file_that_is_not_a_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    std::fs::write(&path, vec![0x5a; 10_000]).unwrap();
    let e = RedbStore::open(&path).unwrap_err();
    assert!(e.message().contains("s.redb") && e.message().contains("cannot open"), "{e}");
}

#[test]
fn keys_order_as_their_values() {
    let times = [
        Timestamp { s: i64::MIN, us: 0 },
        Timestamp { s: -1, us: 999_999 },
        Timestamp { s: 0, us: 0 },
        Timestamp { s: 0, us: 1 },
        Timestamp { s: 1, us: 0 },
        Timestamp { s: i64::MAX, us: 999_999 },
    ];
    for pair in times.windows(2) {
        assert!(ts_key(pair[0]) < ts_key(pair[1]), "{pair:?}");
    }
    let ids = [id(0, 0, 1), id(0, 1, 0), id(1, 0, 0), id(u64::MAX, 0, 0)];
    for pair in ids.windows(2) {
        assert!(id_key(pair[0]) < id_key(pair[1]));
    }
    for i in ids {
        assert_eq!(id_from_key(&id_key(i)), i);
        assert_eq!(id_part(&time_key(times[3], i)), id_key(i));
    }
    assert_eq!(successor([0, 0xff]), Some([1, 0]));
    assert_eq!(successor([0xff, 0xff]), None);
    assert_eq!(predecessor([1, 0]), Some([0, 0xff]));
    assert_eq!(predecessor([0, 0]), None);
}
