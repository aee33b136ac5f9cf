//! A query page's scan budget and its cancellation (`Scan`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use rivulet_core::owned::EventPath;

use super::*;

/// 5,000 events of type `a`, the one at 4,000 of type `b`, one microsecond apart.
fn store(dir: &Path) -> RedbStore {
    let store = RedbStore::open(&dir.join("events.redb")).unwrap();
    let events = (0..5000)
        .map(|n| {
            Arc::new(Event {
                id: EventId { server: 1, session: 1, instance: n },
                event_type: EventPath::parse(if n == 4000 { "b" } else { "a" }),
                timestamp: Timestamp::from_micros(n as i64),
                source_timestamp: None,
                payload: None,
            })
        })
        .collect();
    store.commit(&Commit { events, ..Commit::default() }).unwrap();
    store
}

fn of(ty: &str) -> TimeseriesQuery {
    TimeseriesQuery { event_types: Some(vec![EventPath::parse(ty)]), order: Order::Ascending, ..Default::default() }
}

#[test]
fn a_page_looks_at_no_more_than_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let budget = || Scan { max_events: 3000, ..Scan::default() };

    let scan = budget();
    let nothing = store.timeseries_within(&of("b"), usize::MAX, &scan).unwrap_err();
    assert!(matches!(nothing, StoreError::Invalid(_)), "{nothing:?}");
    assert!(nothing.message().contains("looked at 3000 stored events without finding one"), "{nothing}");
    assert!(scan.spent.load(Relaxed));
    // From a later time the same event is in reach.
    let later = TimeseriesQuery { t_from: Some(Timestamp::from_micros(2000)), ..of("b") };
    let found = store.timeseries_within(&later, usize::MAX, &budget()).unwrap();
    assert_eq!(found.events.iter().map(|e| e.id.instance).collect::<Vec<_>>(), [4000]);

    // Found some: the page so far, more to follow after its last.
    let scan = budget();
    let page = store.timeseries_within(&of("a"), usize::MAX, &scan).unwrap();
    assert_eq!((page.events.len(), page.more_follows), (3000, true));
    assert!(scan.spent.load(Relaxed));
    // A page full before the budget is not spent.
    let scan = budget();
    let small = TimeseriesQuery { max_results: Some(10), ..of("a") };
    let page = store.timeseries_within(&small, usize::MAX, &scan).unwrap();
    assert_eq!((page.events.len(), page.more_follows), (10, true));
    assert!(!scan.spent.load(Relaxed));
}

#[test]
fn a_cancelled_scan_stops() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let scan = Scan { cancelled: Some(Arc::new(AtomicBool::new(true))), ..Scan::default() };
    let stopped = store.timeseries_within(&of("b"), usize::MAX, &scan).unwrap_err();
    assert!(matches!(stopped, StoreError::Closed(_)) && stopped.message().contains("cancelled"), "{stopped:?}");
    let going = Scan { cancelled: Some(Arc::new(AtomicBool::new(false))), ..Scan::default() };
    assert_eq!(store.timeseries_within(&of("b"), usize::MAX, &going).unwrap().events.len(), 1);
}
