//! What every [`EventStore`] must do, as tests each store runs on itself: commits and reopening,
//! ids and sessions, latest per type, query paging and budgets, retention, the admission log,
//! a second open, and kill -9 in the middle of commits. A store's tests call
//! [`contract_tests!`] with its `open`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use rivulet_core::model::{EventId, Order, Timestamp};
use rivulet_core::owned::{Event, EventPath, OrderBy, Payload, TimeseriesQuery};

use super::{AdmittedPage, Commit, EventStore, Scan, StoreError};

/// How a test opens the store at a path (a file or a directory, as the store keeps itself).
pub(crate) type Open<S> = fn(&Path) -> Result<S, StoreError>;

pub(crate) fn id(server: u64, session: u64, instance: u64) -> EventId {
    EventId { server, session, instance }
}

pub(crate) fn ts(micros: i64) -> Timestamp {
    Timestamp::from_micros(micros)
}

pub(crate) fn event(id: EventId, ty: &str, t: i64, source: Option<i64>, payload: Option<Payload>) -> Event {
    Event { id, event_type: EventPath::parse(ty), timestamp: ts(t), source_timestamp: source.map(ts), payload }
}

pub(crate) fn json(text: &str) -> Option<Payload> {
    Some(Payload::Json(text.into()))
}

pub(crate) fn commit(store: &impl EventStore, events: Vec<Event>, sessions: Vec<(u64, u32)>) {
    store.commit(&Commit::new(events, sessions)).unwrap();
}

pub(crate) fn by_type(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by(|a, b| a.event_type.cmp(&b.event_type));
    events
}

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub(crate) fn open_creates_the_directory_and_round_trips_after_reopen<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/events.redb");
    let events = vec![
        event(id(1, 1, 1), "sensor/room1/temp", 1_000_000, None, json("21.5")),
        event(
            id(1, 1, 2),
            "sensor/room1/raw",
            2_000_000,
            Some(-5_000_001),
            Some(Payload::Binary { kind: "blob".into(), data: vec![0, 1, 2, 255] }),
        ),
        event(id(1, 1, 3), "sensor/room2/temp", 3_000_000, Some(2_500_000), None),
        event(id(2, 7, 9), "other", 4_000_000, None, json("{}")),
    ];
    {
        let store = open(&path).unwrap();
        assert_eq!(store.last_id(1).unwrap(), None);
        commit(&store, events.clone(), vec![(42, 3), (43, 1)]);
        commit(&store, vec![], vec![(43, 2)]);
    }
    let store = open(&path).unwrap();
    assert_eq!(store.server_events(1, None, None, usize::MAX).unwrap().events, events[..3]);
    assert_eq!(store.server_events(2, None, None, usize::MAX).unwrap().events, events[3..]);
    assert_eq!(by_type(store.latest().unwrap()), by_type(events.clone()));
    assert_eq!(store.session(42).unwrap(), Some(3));
    assert_eq!(store.session(43).unwrap(), Some(2));
    assert_eq!(store.session(44).unwrap(), None);
    assert_eq!(store.last_id(1).unwrap(), Some(id(1, 1, 3)));
    assert_eq!(store.last_id(2).unwrap(), Some(id(2, 7, 9)));
    assert_eq!(store.last_id(3).unwrap(), None);
    let stats = store.stats().unwrap();
    assert_eq!(stats.events, 4);
    assert!(stats.bytes > 0);
    let all = store.timeseries(&TimeseriesQuery { order: Order::Ascending, ..Default::default() }, usize::MAX).unwrap();
    assert_eq!(all.events, events);
    assert!(!all.more_follows);
}

pub(crate) fn last_id_is_the_highest_id_of_the_server<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s.redb")).unwrap();
    commit(
        &store,
        vec![
            event(id(1, 5, 100), "a", 10, None, None),
            event(id(1, 6, 1), "a", 5, None, None),
            event(id(0, 9, 9), "a", 5, None, None),
            event(id(2, 0, 0), "a", 5, None, None),
        ],
        vec![],
    );
    assert_eq!(store.last_id(1).unwrap(), Some(id(1, 6, 1)));
    assert_eq!(store.last_id(u64::MAX).unwrap(), None);
}

pub(crate) fn each_start_gets_a_new_session_even_when_the_last_stored_nothing<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = open(&path).unwrap();
    assert_eq!(store.begin_session(1).unwrap(), 1, "a new store starts at 1");
    assert_eq!(store.begin_session(1).unwrap(), 2, "a run that stored nothing keeps its number");
    assert_eq!(store.begin_session(7).unwrap(), 1, "each server id counts on its own");
    commit(&store, vec![event(id(1, 9, 4), "a", 10, None, None)], vec![]);
    assert_eq!(store.begin_session(1).unwrap(), 10, "past what is stored");
    drop(store);
    let store = open(&path).unwrap();
    assert_eq!(store.begin_session(1).unwrap(), 11, "and durably");
}

pub(crate) fn a_commit_with_a_stored_id_is_refused_whole<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s.redb")).unwrap();
    commit(&store, vec![event(id(1, 1, 1), "a", 10, None, None)], vec![(1, 1)]);
    let again = Commit::new(
        vec![event(id(1, 1, 2), "b", 11, None, None), event(id(1, 1, 1), "a", 12, None, None)],
        vec![(1, 3)],
    );
    let e = store.commit(&again).unwrap_err();
    assert!(e.message().contains("1/1/1") && e.message().contains("already stored"), "{e}");
    assert!(matches!(e, StoreError::Corrupt(_)), "a second event of an id is a damaged store: {e:?}");
    assert_eq!(store.server_events(1, None, None, usize::MAX).unwrap().events.len(), 1);
    assert_eq!(store.session(1).unwrap(), Some(1));
    assert_eq!(store.latest().unwrap().len(), 1);
}

pub(crate) fn latest_keeps_the_newest_per_type<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s.redb")).unwrap();
    // Within one commit: the newest timestamp wins, the later event on a tie.
    commit(
        &store,
        vec![
            event(id(1, 1, 1), "t/a", 10, None, json("1")),
            event(id(1, 1, 2), "t/a", 30, None, json("2")),
            event(id(1, 1, 3), "t/a", 20, None, json("3")),
            event(id(1, 1, 4), "t/b", 5, None, json("4")),
            event(id(1, 1, 5), "t/b", 5, None, json("5")),
        ],
        vec![],
    );
    let latest = by_type(store.latest().unwrap());
    assert_eq!(latest.iter().map(|e| e.id.instance).collect::<Vec<_>>(), [2, 5]);
    // Across commits: an older event does not replace; an equal or newer one does.
    commit(&store, vec![event(id(1, 1, 6), "t/a", 29, None, None)], vec![]);
    commit(&store, vec![event(id(1, 1, 7), "t/b", 5, None, None)], vec![]);
    commit(&store, vec![event(id(1, 1, 8), "t/c", -3, None, None)], vec![]);
    let latest = by_type(store.latest().unwrap());
    assert_eq!(latest.iter().map(|e| e.id.instance).collect::<Vec<_>>(), [2, 7, 8]);
    assert_eq!(latest[0].payload, json("2"));
}

/// Every page of `q` in turn; checks that each page but the last is full and says more follows.
fn all_pages(store: &impl EventStore, q: &TimeseriesQuery) -> Vec<Event> {
    let mut out = Vec::new();
    let mut q = q.clone();
    for _ in 0..100_000 {
        let page = store.timeseries(&q, usize::MAX).unwrap();
        if let Some(max) = q.max_results {
            assert!(page.events.len() <= max as usize);
            if page.more_follows {
                assert_eq!(page.events.len(), max as usize, "a page that says more follows is full");
            }
        }
        out.extend(page.events);
        if !page.more_follows {
            return out;
        }
        q.last_event_id = out.last().map(|e| e.id);
    }
    panic!("paging did not end");
}

/// The same query answered by filtering and sorting every event.
fn brute_force(events: &[Event], q: &TimeseriesQuery) -> Vec<Event> {
    let within = |t: Timestamp, from: Option<Timestamp>, to: Option<Timestamp>| {
        from.is_none_or(|f| t >= f) && to.is_none_or(|to| t <= to)
    };
    let mut out: Vec<(Timestamp, EventId, &Event)> = events
        .iter()
        .filter(|e| q.event_types.as_ref().is_none_or(|ps| ps.iter().any(|p| p.matches(&e.event_type))))
        .filter(|e| within(e.timestamp, q.t_from, q.t_to))
        .filter(|e| match e.source_timestamp {
            Some(s) => within(s, q.source_t_from, q.source_t_to),
            None => q.source_t_from.is_none() && q.source_t_to.is_none() && q.order_by == OrderBy::Timestamp,
        })
        .map(|e| {
            let key = match q.order_by {
                OrderBy::Timestamp => e.timestamp,
                OrderBy::SourceTimestamp => e.source_timestamp.unwrap_or_default(),
            };
            (key, e.id, e)
        })
        .collect();
    out.sort_by_key(|&(t, id, _)| (t, id));
    if q.order == Order::Descending {
        out.reverse();
    }
    out.into_iter().map(|(_, _, e)| e.clone()).collect()
}

const TYPES: [&str; 8] = ["a/b/c", "a/b", "a/x", "s/1/t", "s/2/t", "s/2/u", "z", "a/b/c/d"];

/// 10 000 events over 2 servers and 3 sessions, with many equal timestamps, negative ones,
/// and source timestamps on about 60 %.
fn many_events() -> Vec<Event> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut instance = [[0u64; 3]; 2];
    (0..10_000)
        .map(|i| {
            let server = rng.below(2);
            let session = rng.below(3);
            instance[server as usize][session as usize] += 1;
            let t = (rng.below(2000) as i64 - 300) * 1_000_000 + rng.below(3) as i64 * 7;
            let source = (rng.below(10) < 6).then(|| (rng.below(2000) as i64 - 1000) * 1_000_000);
            let payload = match i % 3 {
                0 => json(&format!("{{\"i\":{i}}}")),
                1 => Some(Payload::Binary { kind: "k".into(), data: vec![i as u8; 7] }),
                _ => None,
            };
            let ty = TYPES[rng.below(TYPES.len() as u64) as usize];
            event(id(server + 1, session + 1, instance[server as usize][session as usize]), ty, t, source, payload)
        })
        .collect()
}

pub(crate) fn timeseries_paging_returns_each_matching_event_once<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s.redb")).unwrap();
    let events = many_events();
    for chunk in events.chunks(1000) {
        commit(&store, chunk.to_vec(), vec![]);
    }
    let patterns = |ps: &[&str]| Some(ps.iter().map(|p| EventPath::parse(p)).collect::<Vec<_>>());
    let filters = [
        TimeseriesQuery::default(),
        TimeseriesQuery { event_types: patterns(&["a/*"]), ..Default::default() },
        TimeseriesQuery { event_types: patterns(&["?/2/?", "z"]), ..Default::default() },
        TimeseriesQuery { event_types: patterns(&[]), ..Default::default() },
        TimeseriesQuery { event_types: patterns(&["nothing/*"]), ..Default::default() },
        // Bounds equal to stored timestamps, to see both ends are inclusive.
        TimeseriesQuery { t_from: Some(ts(-100_000_000)), t_to: Some(ts(500_000_007)), ..Default::default() },
        TimeseriesQuery { source_t_from: Some(ts(0)), ..Default::default() },
        TimeseriesQuery { event_types: patterns(&["s/*"]), source_t_to: Some(ts(-3_000_000)), ..Default::default() },
        TimeseriesQuery {
            event_types: patterns(&["a/b/*", "s/?/t"]),
            t_from: Some(ts(0)),
            t_to: Some(ts(1_000_000_000)),
            source_t_from: Some(ts(-500_000_000)),
            source_t_to: Some(ts(500_000_000)),
            ..Default::default()
        },
        TimeseriesQuery { t_from: Some(ts(10)), t_to: Some(ts(5)), ..Default::default() },
    ];
    let mut checked = 0;
    for filter in &filters {
        for order in [Order::Ascending, Order::Descending] {
            for order_by in [OrderBy::Timestamp, OrderBy::SourceTimestamp] {
                let expected = brute_force(&events, &TimeseriesQuery { order, order_by, ..filter.clone() });
                for max_results in [None, Some(997), Some(250)] {
                    let q = TimeseriesQuery { order, order_by, max_results, ..filter.clone() };
                    let got = all_pages(&store, &q);
                    assert_eq!(got.len(), expected.len(), "{q:?}");
                    assert!(got == expected, "{q:?}: pages differ from the brute-force answer");
                    checked += got.len();
                }
            }
        }
    }
    assert!(checked > 100_000, "the filters select something ({checked})");
    // A page size that divides the count: the last full page says nothing follows.
    let q = TimeseriesQuery { order: Order::Ascending, max_results: Some(1000), ..Default::default() };
    let mut page = store.timeseries(&q, usize::MAX).unwrap();
    for _ in 0..9 {
        assert!(page.more_follows);
        let last = page.events.last().map(|e| e.id);
        page = store.timeseries(&TimeseriesQuery { last_event_id: last, ..q.clone() }, usize::MAX).unwrap();
    }
    assert_eq!(page.events.len(), 1000);
    assert!(!page.more_follows);
}

pub(crate) fn a_page_stops_near_its_byte_budget_but_holds_at_least_one_event<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s.redb")).unwrap();
    let blob = |n: u64| Some(Payload::Binary { kind: "b".into(), data: vec![n as u8; 10_000] });
    let events: Vec<Event> = (1..=20).map(|n| event(id(1, 1, n), "big/blob", n as i64, None, blob(n))).collect();
    commit(&store, events.clone(), vec![]);
    let all = TimeseriesQuery { order: Order::Ascending, ..TimeseriesQuery::default() };
    let page = store.timeseries(&all, 35_000).unwrap();
    assert_eq!(page.events, events[..3].to_vec(), "three of about 10 KB fit 35 KB");
    assert!(page.more_follows);
    let tiny = store.timeseries(&all, 1).unwrap();
    assert_eq!(tiny.events, events[..1].to_vec(), "one event even over the budget: the page moves on");
    assert!(tiny.more_follows);
    let by_server = store.server_events(1, None, None, 25_000).unwrap();
    assert_eq!(by_server.events.len(), 2);
    assert!(by_server.more_follows);
    // Paging by the last id still returns each event once.
    let mut seen = Vec::new();
    let mut query = all.clone();
    loop {
        let page = store.timeseries(&query, 35_000).unwrap();
        seen.extend(page.events.iter().cloned());
        if !page.more_follows {
            break;
        }
        query.last_event_id = page.events.last().map(|e| e.id);
    }
    assert_eq!(seen, events);
}

pub(crate) fn timeseries_after_an_unknown_id_says_so<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s.redb")).unwrap();
    commit(&store, vec![event(id(1, 1, 1), "a", 1, None, None)], vec![]);
    let q = TimeseriesQuery { last_event_id: Some(id(1, 1, 2)), ..Default::default() };
    let e = store.timeseries(&q, usize::MAX).unwrap_err();
    assert!(e.message().contains("1/1/2") && e.message().contains("not stored"), "{e}");
    assert!(matches!(e, StoreError::Invalid(_)), "the query's mistake, not the store's: {e:?}");
    let q =
        TimeseriesQuery { last_event_id: Some(id(1, 1, 1)), order_by: OrderBy::SourceTimestamp, ..Default::default() };
    let e = store.timeseries(&q, usize::MAX).unwrap_err();
    assert!(e.message().contains("no source timestamp"), "{e}");
    // max_results 0: an empty page that says whether anything matches.
    let page = store.timeseries(&TimeseriesQuery { max_results: Some(0), ..Default::default() }, usize::MAX).unwrap();
    assert!(page.events.is_empty() && page.more_follows);
}

pub(crate) fn server_events_page_in_id_order<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s.redb")).unwrap();
    let events = many_events();
    commit(&store, events.clone(), vec![]);
    for server in [1, 2] {
        let mut expected: Vec<Event> = events.iter().filter(|e| e.id.server == server).cloned().collect();
        expected.sort_by_key(|e| e.id);
        for max in [None, Some(7), Some(1000)] {
            let mut got = Vec::new();
            let mut last = None;
            loop {
                let page = store.server_events(server, max, last, usize::MAX).unwrap();
                if page.more_follows {
                    assert_eq!(Some(page.events.len() as u32), max);
                }
                got.extend(page.events);
                last = got.last().map(|e| e.id);
                if !page.more_follows {
                    break;
                }
            }
            assert!(got == expected, "server {server}, max {max:?}");
        }
    }
    // A last id of another server: before it, the whole server; after it, nothing.
    assert_eq!(store.server_events(2, Some(3), Some(id(1, 9, 9)), usize::MAX).unwrap().events[0].id.server, 2);
    assert!(store.server_events(1, None, Some(id(2, 0, 0)), usize::MAX).unwrap().events.is_empty());
    assert!(
        store
            .server_events(u64::MAX, None, Some(id(u64::MAX, u64::MAX, u64::MAX)), usize::MAX)
            .unwrap()
            .events
            .is_empty()
    );
    assert!(store.server_events(3, None, None, usize::MAX).unwrap().events.is_empty());
}

pub(crate) fn retain_by_age_then_by_count<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s.redb")).unwrap();
    // 100 events, one per second, half with a source timestamp; type `old` only at the start.
    let events: Vec<Event> = (0..100)
        .map(|i| {
            let ty = if i < 3 { "old" } else { "new" };
            event(id(1, 1, i + 1), ty, i as i64 * 1_000_000, (i % 2 == 0).then_some(i as i64), json("x"))
        })
        .collect();
    commit(&store, events.clone(), vec![]);

    assert_eq!(store.retain(Some(ts(40_000_000)), None).unwrap(), 40);
    let remaining =
        store.timeseries(&TimeseriesQuery { order: Order::Ascending, ..Default::default() }, usize::MAX).unwrap();
    assert_eq!(remaining.events, events[40..]);
    let by_source =
        TimeseriesQuery { order: Order::Ascending, order_by: OrderBy::SourceTimestamp, ..Default::default() };
    let expected: Vec<Event> = events[40..].iter().filter(|e| e.source_timestamp.is_some()).cloned().collect();
    assert_eq!(store.timeseries(&by_source, usize::MAX).unwrap().events, expected);
    assert_eq!(store.stats().unwrap().events, 60);
    // The latest of a type whose events all went is still answered.
    let latest = by_type(store.latest().unwrap());
    assert_eq!(latest.iter().map(|e| e.id.instance).collect::<Vec<_>>(), [100, 3]);

    assert_eq!(store.retain(None, Some(25)).unwrap(), 35);
    let remaining = store.server_events(1, None, None, usize::MAX).unwrap();
    assert_eq!(remaining.events, events[75..]);
    assert_eq!(store.timeseries(&by_source, usize::MAX).unwrap().events.len(), 12);
    assert_eq!(store.retain(Some(ts(0)), Some(25)).unwrap(), 0);
    assert_eq!(store.retain(Some(ts(1_000_000_000)), Some(0)).unwrap(), 25);
    assert_eq!(store.stats().unwrap().events, 0);
    assert!(store.timeseries(&by_source, usize::MAX).unwrap().events.is_empty());
    assert_eq!(store.latest().unwrap().len(), 2);
    assert_eq!(store.last_id(1).unwrap(), None);
}

pub(crate) fn retain_more_than_one_chunk<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s.redb")).unwrap();
    let events: Vec<Event> = (0..25_000).map(|i| event(id(1, 1, i + 1), "a", i as i64, Some(i as i64), None)).collect();
    commit(&store, events, vec![]);
    assert_eq!(store.retain(Some(ts(22_000)), None).unwrap(), 22_000);
    assert_eq!(store.retain(None, Some(10)).unwrap(), 2990);
    let left = store.server_events(1, None, None, usize::MAX).unwrap().events;
    assert_eq!(left.first().map(|e| e.id.instance), Some(24_991));
    assert_eq!(left.len(), 10);
}

pub(crate) fn a_second_open_of_the_same_file_is_refused<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let first = open(&path).unwrap();
    let Err(e) = open(&path) else { panic!("a second open of the same store succeeded") };
    assert!(e.message().contains("another process has it open"), "{e}");
    drop(first);
    open(&path).unwrap();
}

const CRASH_ENV: &str = "RIVULET_STORE_CRASH_CHILD";
const CRASH_BATCH: u64 = 50;
const CRASH_SESSION: u64 = 7;

/// The child of [`kill_9_loses_no_acknowledged_commit`]: when `RIVULET_STORE_CRASH_CHILD`
/// names a store, commits batches of [`CRASH_BATCH`] events forever, printing
/// `acked N` (N = the batch's last instance) after each commit returns. Otherwise does nothing.
pub(crate) fn crash_child_process<S: EventStore>(open: Open<S>) {
    let Some(path) = std::env::var_os(CRASH_ENV) else { return };
    let store = open(Path::new(&path)).unwrap();
    let mut next = store.last_id(1).unwrap().map_or(1, |id| id.instance + 1);
    let mut out = std::io::stdout().lock();
    loop {
        let events = (next..next + CRASH_BATCH)
            .map(|i| event(id(1, 1, i), &format!("crash/{}", i % 7), i as i64 * 1000, Some(-(i as i64)), json("0")));
        let batches = ((next - 1) / CRASH_BATCH + 1) as u32;
        store.commit(&Commit::new(events, vec![(CRASH_SESSION, batches)])).unwrap();
        next += CRASH_BATCH;
        writeln!(out, "acked {}", next - 1).unwrap();
        out.flush().unwrap();
    }
}

/// Runs [`crash_child_process`] in a child process, SIGKILLs it mid-stream, then checks the
/// store: every acknowledged batch is there whole, no batch is there in part, the session
/// number matches, and every latest entry is a stored event, the newest of its type. Three
/// rounds, each continuing the store the previous one crashed.
pub(crate) fn kill_9_loses_no_acknowledged_commit<S: EventStore>(open: Open<S>, module: &str) {
    if std::env::var_os(CRASH_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let test = format!("{}::crash_child_process", module.split_once("::").map_or(module, |(_, rest)| rest));
    let mut acked = 0;
    for round in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &test, "--nocapture", "--test-threads=1"])
            .env(CRASH_ENV, &path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        let mut ack = |line: &str| {
            if let Some(n) = line.strip_prefix("acked ") {
                let n: u64 = n.parse().unwrap();
                assert!(n > acked, "acks increase");
                acked = n;
                return true;
            }
            false
        };
        for line in lines.by_ref() {
            if ack(&line.unwrap()) {
                seen += 1;
                if seen == 5 + round * 4 {
                    break;
                }
            }
        }
        // Let it run on a moment so that the kill lands at some point of a commit.
        std::thread::sleep(std::time::Duration::from_millis(1 + round * 3));
        child.kill().unwrap();
        for line in lines {
            ack(&line.unwrap());
        }
        let status = child.wait().unwrap();
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "the child died of the kill, not on its own: {status}");
        }
        assert!(acked >= (5 + round * 4) * CRASH_BATCH, "the child acknowledged batches");

        let store = open(&path).unwrap();
        let stored = store.server_events(1, None, None, usize::MAX).unwrap().events;
        let last = stored.len() as u64;
        assert!(last >= acked, "acknowledged {acked}, stored {last}");
        assert_eq!(last % CRASH_BATCH, 0, "no batch is stored in part");
        for (i, e) in stored.iter().enumerate() {
            assert_eq!(e.id, id(1, 1, i as u64 + 1));
        }
        assert_eq!(store.session(CRASH_SESSION).unwrap(), Some((last / CRASH_BATCH) as u32));
        assert_eq!(store.last_id(1).unwrap().map(|id| id.instance), Some(last));
        assert_eq!(store.stats().unwrap().events, last);
        let everything = |order_by| TimeseriesQuery { order_by, ..Default::default() };
        assert_eq!(store.timeseries(&everything(OrderBy::Timestamp), usize::MAX).unwrap().events.len() as u64, last);
        assert_eq!(
            store.timeseries(&everything(OrderBy::SourceTimestamp), usize::MAX).unwrap().events.len() as u64,
            last
        );
        let latest = store.latest().unwrap();
        assert_eq!(latest.len(), 7);
        for l in latest {
            let newest = stored.iter().rev().find(|e| e.event_type == l.event_type);
            assert_eq!(Some(&l), newest, "latest of {} is the newest stored event", l.event_type);
        }
    }
}

pub(crate) fn the_admission_log_numbers_each_commit_on_with_hops_and_keeps_peer_cursors<S: EventStore>(open: Open<S>) {
    use crate::store::{Hop, PeerCursor};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let store = open(&path).unwrap();
    assert_eq!((store.last_admitted().unwrap(), store.peer(2).unwrap()), (0, None));
    commit(&store, vec![event(id(1, 1, 1), "a", 10, None, None), event(id(1, 1, 2), "a", 11, None, None)], vec![]);
    let imported = Hop { ttl: 5, via: Some(2) };
    let from_peer = Commit {
        hops: vec![imported],
        peers: vec![(2, PeerCursor { store_id: 77, seq: 40 })],
        ..Commit::new([event(id(2, 3, 9), "b", 5, None, json("1"))], vec![])
    };
    store.commit(&from_peer).unwrap();
    // A commit of a cursor alone (nothing of the peer's log was wanted) is written too.
    store.commit(&Commit { peers: vec![(2, PeerCursor { store_id: 77, seq: 41 })], ..Commit::default() }).unwrap();

    let page = store.admitted(0, 10, usize::MAX).unwrap();
    let seen: Vec<(u64, Hop, EventId)> = page.entries.iter().map(|(seq, hop, e)| (*seq, *hop, e.id)).collect();
    assert_eq!(seen, vec![(1, Hop::LOCAL, id(1, 1, 1)), (2, Hop::LOCAL, id(1, 1, 2)), (3, imported, id(2, 3, 9))]);
    assert_eq!(page.scanned_to, 3);
    let page = store.admitted(1, 1, usize::MAX).unwrap();
    assert_eq!((page.entries.len(), page.scanned_to), (1, 2), "a page of one after entry 1");
    assert_eq!(store.admitted(3, 10, usize::MAX).unwrap(), AdmittedPage { entries: vec![], scanned_to: 3 });
    assert_eq!(store.last_admitted().unwrap(), 3);
    assert_eq!(store.peer(2).unwrap(), Some(PeerCursor { store_id: 77, seq: 41 }));
    assert!(store.contains(id(2, 3, 9)).unwrap() && !store.contains(id(2, 3, 10)).unwrap());

    // Retention: the log skips what went, and trims it from the front.
    let store_id = store.store_id();
    assert_eq!(store.retain(Some(ts(11)), None).unwrap(), 2, "the events at 5 and 10 go");
    let page = store.admitted(0, 10, usize::MAX).unwrap();
    assert_eq!(page.entries.iter().map(|(seq, _, _)| *seq).collect::<Vec<_>>(), vec![2]);
    assert_eq!(page.scanned_to, 3, "the entry of a deleted event is passed over");
    drop(store);
    let store = open(&path).unwrap();
    assert_eq!(store.store_id(), store_id, "a store keeps its id");
    assert_eq!(store.last_admitted().unwrap(), 3);
    let other = open(&dir.path().join("other.redb")).unwrap();
    assert_ne!(other.store_id(), store_id, "another store has another id");
}

pub(crate) fn admission_numbers_go_on_growing_after_retention_empties_the_log<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let store = open(&path).unwrap();
    commit(&store, vec![event(id(1, 1, 1), "a", 10, None, None), event(id(1, 1, 2), "a", 11, None, None)], vec![]);
    assert_eq!(store.retain(Some(ts(100)), None).unwrap(), 2);
    assert_eq!(store.admitted(0, 10, usize::MAX).unwrap().entries, vec![], "every entry trimmed");
    // A peer holds the log up to 2: the next event is 3, there and after a restart.
    assert_eq!(store.last_admitted().unwrap(), 2);
    drop(store);
    let store = open(&path).unwrap();
    commit(&store, vec![event(id(1, 2, 3), "a", 200, None, None)], vec![]);
    let page = store.admitted(2, 10, usize::MAX).unwrap();
    assert_eq!(page.entries.iter().map(|(seq, _, e)| (*seq, e.id)).collect::<Vec<_>>(), vec![(3, id(1, 2, 3))]);
}

pub(crate) fn a_copy_a_peer_sends_again_is_stored_once_not_a_failed_commit<S: EventStore>(open: Open<S>) {
    use crate::store::Hop;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("events.redb")).unwrap();
    let imported = |hops| Commit { hops, ..Commit::new([event(id(2, 1, 1), "a", 10, None, json("1"))], vec![]) };
    let hop = Hop { ttl: 3, via: Some(2) };
    store.commit(&imported(vec![hop])).unwrap();
    store.commit(&imported(vec![Hop { via: Some(3), ..hop }])).unwrap();
    assert_eq!(store.admitted(0, 10, usize::MAX).unwrap().entries.len(), 1, "one entry in the log");
    assert_eq!(store.stats().unwrap().events, 1);
    // A local event stored twice is still a corrupt commit: the broker never does that.
    let local = Commit::new([event(id(2, 1, 1), "a", 10, None, json("1"))], vec![]);
    assert!(matches!(store.commit(&local), Err(StoreError::Corrupt(_))));
}
/// 5,000 events of type `a`, the one at 4,000 of type `b`, one microsecond apart.
fn store<S: EventStore>(open: Open<S>, dir: &Path) -> S {
    let store = open(&dir.join("events.redb")).unwrap();
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

pub(crate) fn a_page_looks_at_no_more_than_its_budget<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let store = store(open, dir.path());
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

pub(crate) fn a_cancelled_scan_stops<S: EventStore>(open: Open<S>) {
    let dir = tempfile::tempdir().unwrap();
    let store = store(open, dir.path());
    let scan = Scan { cancelled: Some(Arc::new(AtomicBool::new(true))), ..Scan::default() };
    let stopped = store.timeseries_within(&of("b"), usize::MAX, &scan).unwrap_err();
    assert!(matches!(stopped, StoreError::Closed(_)) && stopped.message().contains("cancelled"), "{stopped:?}");
    let going = Scan { cancelled: Some(Arc::new(AtomicBool::new(false))), ..Scan::default() };
    assert_eq!(store.timeseries_within(&of("b"), usize::MAX, &going).unwrap().events.len(), 1);
}

/// The contract's tests for the store `$open` opens (`fn(&Path) -> Result<_, StoreError>`), in a
/// module `contract`.
macro_rules! contract_tests {
    ($open:path) => {
        mod contract {
            #[test]
            fn open_creates_the_directory_and_round_trips_after_reopen() {
                $crate::store::contract::open_creates_the_directory_and_round_trips_after_reopen($open);
            }

            #[test]
            fn last_id_is_the_highest_id_of_the_server() {
                $crate::store::contract::last_id_is_the_highest_id_of_the_server($open);
            }

            #[test]
            fn each_start_gets_a_new_session_even_when_the_last_stored_nothing() {
                $crate::store::contract::each_start_gets_a_new_session_even_when_the_last_stored_nothing($open);
            }

            #[test]
            fn a_commit_with_a_stored_id_is_refused_whole() {
                $crate::store::contract::a_commit_with_a_stored_id_is_refused_whole($open);
            }

            #[test]
            fn latest_keeps_the_newest_per_type() {
                $crate::store::contract::latest_keeps_the_newest_per_type($open);
            }

            #[test]
            fn timeseries_paging_returns_each_matching_event_once() {
                $crate::store::contract::timeseries_paging_returns_each_matching_event_once($open);
            }

            #[test]
            fn a_page_stops_near_its_byte_budget_but_holds_at_least_one_event() {
                $crate::store::contract::a_page_stops_near_its_byte_budget_but_holds_at_least_one_event($open);
            }

            #[test]
            fn timeseries_after_an_unknown_id_says_so() {
                $crate::store::contract::timeseries_after_an_unknown_id_says_so($open);
            }

            #[test]
            fn server_events_page_in_id_order() {
                $crate::store::contract::server_events_page_in_id_order($open);
            }

            #[test]
            fn retain_by_age_then_by_count() {
                $crate::store::contract::retain_by_age_then_by_count($open);
            }

            #[test]
            fn retain_more_than_one_chunk() {
                $crate::store::contract::retain_more_than_one_chunk($open);
            }

            #[test]
            fn a_second_open_of_the_same_file_is_refused() {
                $crate::store::contract::a_second_open_of_the_same_file_is_refused($open);
            }

            #[test]
            fn crash_child_process() {
                $crate::store::contract::crash_child_process($open);
            }

            #[test]
            fn the_admission_log_numbers_each_commit_on_with_hops_and_keeps_peer_cursors() {
                $crate::store::contract::the_admission_log_numbers_each_commit_on_with_hops_and_keeps_peer_cursors(
                    $open,
                );
            }

            #[test]
            fn admission_numbers_go_on_growing_after_retention_empties_the_log() {
                $crate::store::contract::admission_numbers_go_on_growing_after_retention_empties_the_log($open);
            }

            #[test]
            fn a_copy_a_peer_sends_again_is_stored_once_not_a_failed_commit() {
                $crate::store::contract::a_copy_a_peer_sends_again_is_stored_once_not_a_failed_commit($open);
            }

            #[test]
            fn a_page_looks_at_no_more_than_its_budget() {
                $crate::store::contract::a_page_looks_at_no_more_than_its_budget($open);
            }

            #[test]
            fn a_cancelled_scan_stops() {
                $crate::store::contract::a_cancelled_scan_stops($open);
            }

            #[test]
            fn kill_9_loses_no_acknowledged_commit() {
                $crate::store::contract::kill_9_loses_no_acknowledged_commit($open, module_path!());
            }
        }
    };
}

pub(crate) use contract_tests;
