//! The fan-out's tests: who gets what, cut-offs by count and by bytes, acknowledgements.

use super::*;
use rivulet_core::model::{EventId, Timestamp};

fn event(instance: u64, server: u64, ty: &str) -> Event {
    Event {
        id: EventId { server, session: 1, instance },
        event_type: EventPath::parse(ty),
        timestamp: Timestamp::from_micros(0),
        source_timestamp: None,
        payload: None,
    }
}

fn interest(patterns: &[&str]) -> Interest {
    Interest { patterns: patterns.iter().map(|p| EventPath::parse(p)).collect(), ..Interest::default() }
}

fn drain(subscriber: &mut Subscriber) -> Vec<u64> {
    std::iter::from_fn(|| subscriber.try_recv()).map(|e| e.id.instance).collect()
}

#[test]
fn each_subscriber_gets_what_it_wants_in_publish_order() {
    let fanout = Fanout::new(FanoutLimits::events(16));
    let mut a = fanout.subscribe(interest(&["a/*"]), "a".into());
    let mut b = fanout.subscribe(Interest { server_id: Some(2), ..interest(&["*"]) }, "b".into());
    let mut persisted = fanout.subscribe(Interest { persisted: true, ..interest(&["*"]) }, "p".into());
    fanout.publish(&[event(1, 1, "a/x"), event(2, 2, "b"), event(3, 2, "a/y")], false);
    fanout.publish(&[event(4, 1, "a")], false);
    assert_eq!(drain(&mut a), [1, 3, 4]);
    assert_eq!(drain(&mut b), [2, 3], "only server 2's");
    assert!(drain(&mut persisted).is_empty(), "nothing durable was published");
    fanout.publish(&[event(1, 1, "a/x")], true);
    assert_eq!(drain(&mut persisted), [1]);
    assert!(drain(&mut a).is_empty());
    // Everything was taken: nothing is held.
    assert_eq!(fanout.stats(), FanoutStats { subscribers: 3, queued: 6, cut_off: 0, queued_bytes: 0 });
}

#[test]
fn new_patterns_apply_to_later_events_and_dropping_unsubscribes() {
    let fanout = Fanout::new(FanoutLimits::events(16));
    let mut a = fanout.subscribe(interest(&["a"]), "a".into());
    a.set_patterns(&[EventPath::parse("b")]);
    fanout.publish(&[event(1, 1, "a"), event(2, 1, "b")], false);
    assert_eq!(drain(&mut a), [2]);
    drop(a);
    assert_eq!(fanout.stats().subscribers, 0);
}

#[tokio::test]
async fn a_full_queue_cuts_off_that_subscriber_only() {
    let fanout = Fanout::new(FanoutLimits::events(2));
    let mut slow = fanout.subscribe(interest(&["*"]), "slow".into());
    let mut fast = fanout.subscribe(interest(&["*"]), "fast".into());
    for n in 1..=3 {
        fanout.publish(&[event(n, 1, "t")], false);
        assert_eq!(drain(&mut fast), [n]);
    }
    assert!(slow.is_cut_off());
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), slow.next(true)).await;
    assert_eq!(next.expect("resolves"), Delivery::CutOff, "the cut-off comes before what was queued");
    assert!(slow.cut_off_reason().contains("fell 2 notifications behind"));
    assert_eq!(drain(&mut slow), [1, 2], "what was queued stays; nothing after the cut");
    fanout.publish(&[event(4, 1, "t")], false);
    assert_eq!(drain(&mut fast), [4]);
    assert!(drain(&mut slow).is_empty());
    assert_eq!(fanout.stats().cut_off, 1);
}

fn blob(instance: u64, len: usize) -> Event {
    Event { payload: Some(rivulet_core::owned::Payload::Json("1".repeat(len))), ..event(instance, 1, "t") }
}

#[tokio::test]
async fn a_queue_over_its_bytes_cuts_off_that_subscriber_only() {
    let size = footprint(&blob(0, 1000));
    let limits = FanoutLimits { events: 100, bytes: 3 * size, total_bytes: u64::MAX, ..FanoutLimits::default() };
    let fanout = Fanout::new(limits);
    let mut slow = fanout.subscribe(interest(&["*"]), "slow".into());
    let mut fast = fanout.subscribe(interest(&["*"]), "fast".into());
    for n in 1..=4 {
        fanout.publish(&[blob(n, 1000)], false);
        assert_eq!(drain(&mut fast), [n]);
    }
    assert!(slow.is_cut_off(), "the fourth would go over three events' bytes");
    assert_eq!(slow.cut_off_why(), Some(CutOff::Bytes(3 * size)));
    let reason = slow.cut_off_reason();
    assert!(reason.starts_with(&format!("fell {} bytes of notifications behind", 3 * size)), "{reason}");
    assert_eq!(fanout.stats().queued_bytes, 0, "a cut-off queue leaves the total at once");
    assert_eq!(drain(&mut slow), [1, 2, 3]);
    assert_eq!(fanout.stats().queued_bytes, 0, "and is not taken off twice");
    // A reader that keeps up goes on, however much goes through it.
    for n in 5..=20 {
        fanout.publish(&[blob(n, 1000)], false);
        assert_eq!(drain(&mut fast), [n]);
    }
    assert!(!fast.is_cut_off());
}

#[tokio::test]
async fn a_subscriber_gone_with_events_queued_gives_their_bytes_back() {
    let fanout =
        Fanout::new(FanoutLimits { events: 100, bytes: u64::MAX, total_bytes: u64::MAX, ..FanoutLimits::default() });
    let gone = fanout.subscribe(interest(&["*"]), "gone".into());
    let mut stays = fanout.subscribe(interest(&["*"]), "stays".into());
    fanout.publish(&[blob(1, 1000), blob(2, 1000)], false);
    assert_eq!(fanout.stats().queued_bytes, 4 * footprint(&blob(0, 1000)));
    drop(gone);
    assert_eq!(fanout.stats().queued_bytes, 2 * footprint(&blob(0, 1000)), "the gone one's left the total");
    assert_eq!(drain(&mut stays), [1, 2]);
    assert_eq!(fanout.stats().queued_bytes, 0);
}

#[tokio::test]
async fn an_event_over_the_byte_budget_still_reaches_an_empty_queue() {
    let fanout =
        Fanout::new(FanoutLimits { events: 100, bytes: 100, total_bytes: u64::MAX, ..FanoutLimits::default() });
    let mut reader = fanout.subscribe(interest(&["*"]), "reader".into());
    for n in 1..=3 {
        fanout.publish(&[blob(n, 5000)], false);
        assert_eq!(drain(&mut reader), [n], "one at a time, each larger than the budget");
    }
    assert!(!reader.is_cut_off());
    fanout.publish(&[blob(4, 5000), blob(5, 5000)], false);
    assert!(reader.is_cut_off(), "a second one while the first waits is over it");
}

/// Whether `room` resolves with the clock paused: only what the test did, not time, can free it.
async fn has_room(fanout: &Fanout) -> bool {
    tokio::time::timeout(std::time::Duration::from_millis(1), fanout.room()).await.is_ok()
}

#[tokio::test(start_paused = true)]
async fn publishers_that_wait_for_room_wait_for_a_congested_reader_until_it_took_half() {
    let limits = FanoutLimits {
        events: 100,
        high_water: 10,
        stall: std::time::Duration::from_secs(3600),
        ..FanoutLimits::default()
    };
    let fanout = Fanout::new(limits);
    let mut reader = fanout.subscribe(interest(&["*"]), "reader".into());
    let mut other = fanout.subscribe(interest(&["b"]), "other".into());
    for n in 1..=9 {
        assert!(has_room(&fanout).await);
        fanout.publish(&[event(n, 1, "a")], false);
    }
    assert!(has_room(&fanout).await, "nine queued of a mark of ten");
    fanout.publish(&[event(10, 1, "a")], false);
    assert!(fanout.is_congested());
    let waiting = tokio::spawn({
        let fanout = fanout.clone();
        async move { fanout.room().await }
    });
    let took = |subscriber: &mut Subscriber, n: usize| {
        (0..n).map(|_| subscriber.try_recv().map(|e| e.id.instance)).collect::<Vec<_>>()
    };
    assert_eq!(took(&mut reader, 4), [1, 2, 3, 4].map(Some));
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "six still queued: more than half the mark");
    assert!(!has_room(&fanout).await);
    assert!(drain(&mut other).is_empty());
    assert_eq!(took(&mut reader, 1), [Some(5)]);
    tokio::time::timeout(std::time::Duration::from_secs(1), waiting).await.expect("room at half the mark").unwrap();
    assert!(has_room(&fanout).await);
    assert!(!reader.is_cut_off(), "a reader is waited for, never cut off");
    assert_eq!(fanout.stats().cut_off, 0);
}

#[tokio::test(start_paused = true)]
async fn a_publisher_that_reads_its_own_queue_waits_only_for_the_others() {
    let limits = FanoutLimits { events: 100, high_water: 2, ..FanoutLimits::default() };
    let fanout = Fanout::new(limits);
    let own = fanout.subscribe(interest(&["mine"]), "own".into());
    let mut other = fanout.subscribe(interest(&["theirs"]), "other".into());
    fanout.publish(&[event(1, 1, "mine"), event(2, 1, "mine")], false);
    assert!(!has_room(&fanout).await, "its own queue is congested");
    let beside = tokio::time::timeout(std::time::Duration::from_millis(1), fanout.room_beside(Some(&own))).await;
    assert!(beside.is_ok(), "but it does not wait for itself");
    fanout.publish(&[event(3, 1, "theirs"), event(4, 1, "theirs")], false);
    let beside = tokio::time::timeout(std::time::Duration::from_millis(1), fanout.room_beside(Some(&own))).await;
    assert!(beside.is_err(), "it waits for another congested one");
    assert_eq!(drain(&mut other), [3, 4]);
    let beside = tokio::time::timeout(std::time::Duration::from_millis(1), fanout.room_beside(Some(&own))).await;
    assert!(beside.is_ok());
    assert!(!own.is_cut_off(), "never cut off for a stall its own waiting made");
}

#[tokio::test(start_paused = true)]
async fn a_congested_subscriber_that_takes_nothing_is_cut_off_after_the_stall_and_publishers_go_on() {
    let stall = std::time::Duration::from_secs(2);
    let limits = FanoutLimits { events: 100, high_water: 4, stall, ..FanoutLimits::default() };
    let fanout = Fanout::new(limits);
    let stuck = fanout.subscribe(interest(&["*"]), "stuck".into());
    let mut reader = fanout.subscribe(interest(&["*"]), "reader".into());
    fanout.publish(&[event(1, 1, "a"), event(2, 1, "a"), event(3, 1, "a"), event(4, 1, "a")], false);
    assert_eq!(drain(&mut reader), [1, 2, 3, 4]);
    let started = tokio::time::Instant::now();
    fanout.room().await;
    let waited = started.elapsed();
    assert!(waited >= stall && waited < stall * 2, "waited {waited:?} for a stall of {stall:?}");
    assert!(stuck.is_cut_off());
    assert_eq!(stuck.cut_off_why(), Some(CutOff::Stalled(stall)));
    assert!(stuck.cut_off_reason().starts_with("took no notification for 2000 ms"), "{}", stuck.cut_off_reason());
    assert!(!reader.is_cut_off());
    fanout.publish(&[event(5, 1, "a")], false);
    assert_eq!(drain(&mut reader), [5], "the reader goes on");
    assert!(has_room(&fanout).await);
}

#[tokio::test]
async fn past_the_total_the_subscriber_holding_the_most_is_cut_off() {
    // Types of one length: every event counts the same.
    let on = |ty: &str, n| Event { event_type: EventPath::parse(ty), ..blob(n, 1000) };
    let size = footprint(&on("big", 0));
    let limits = FanoutLimits { events: 100, bytes: u64::MAX, total_bytes: 5 * size, ..FanoutLimits::default() };
    let fanout = Fanout::new(limits);
    let mut big = fanout.subscribe(interest(&["big"]), "big".into());
    let mut small = fanout.subscribe(interest(&["sml"]), "small".into());
    for n in 1..=4 {
        fanout.publish(&[on("big", n)], false);
    }
    fanout.publish(&[on("sml", 5)], false);
    assert_eq!(fanout.stats().queued_bytes, 5 * size, "both within the total");
    // One more for the small one: the big one, holding four, gives way.
    fanout.publish(&[on("sml", 6)], false);
    assert!(big.is_cut_off() && !small.is_cut_off());
    assert_eq!(big.cut_off_why(), Some(CutOff::Total(5 * size)));
    assert_eq!(fanout.stats().queued_bytes, 2 * size);
    assert_eq!(drain(&mut small), [5, 6]);
    assert_eq!(drain(&mut big), [1, 2, 3, 4], "what it had stays until it goes");
    assert_eq!(fanout.stats().queued_bytes, 0);
    assert_eq!(fanout.stats().cut_off, 1);
}

#[tokio::test]
async fn publish_acknowledged_waits_for_acks_and_skips() {
    let fanout = Fanout::new(FanoutLimits::events(16));
    let mut sub = fanout.subscribe(interest(&["*"]), "s".into());
    let events = [event(1, 1, "t"), event(2, 1, "t"), event(3, 1, "t")];
    let mut waiting = Box::pin(fanout.publish_acknowledged(&events, false));
    let wait = std::time::Duration::from_millis(20);
    assert!(tokio::time::timeout(wait, &mut waiting).await.is_err(), "nothing taken yet");
    for _ in 0..3 {
        sub.try_recv().expect("queued");
    }
    sub.delivered();
    sub.skipped();
    sub.delivered();
    sub.acknowledged(1);
    assert!(tokio::time::timeout(wait, &mut waiting).await.is_err(), "the third is not acknowledged");
    sub.acknowledged(1);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.expect("settled");
    // A subscriber that goes away settles everything it held.
    let mut waiting = Box::pin(fanout.publish_acknowledged(&[event(4, 1, "t")], false));
    assert!(tokio::time::timeout(wait, &mut waiting).await.is_err(), "queued, not taken");
    drop(sub);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.expect("settled by the drop");
}
