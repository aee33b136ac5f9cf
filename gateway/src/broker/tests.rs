//! The broker's API as a front-end uses it: every request checked against the principal's ACL,
//! subscribers fed in order (persisted ones after the commit), nothing taken from a batch with a
//! refused event.

use std::time::Duration;

use rivulet_core::owned::{EventPath, Payload, Query, RegisterEvent, TimeseriesQuery};
use rivulet_tokio::fanout::{Delivery, Interest};
use rivulet_tokio::packet::PacketRequest;

use super::*;
use crate::access::clients::tests::{TOKEN, entry};
use crate::access::{Access, Clients};
use crate::store::RedbStore;

const WAIT: Duration = Duration::from_secs(10);

/// A broker over a fresh store whose one configured client, `dev`, may register `sensor/*` and
/// subscribe to `sensor/*`; `sensor/fast/*` is volatile.
fn broker(dir: &std::path::Path) -> Arc<Broker> {
    broker_committing(dir, CommitPolicy::default())
}

fn broker_committing(dir: &std::path::Path, commit: CommitPolicy) -> Arc<Broker> {
    let clients = Clients::from_entries(&[entry("dev", &TOKEN, Some(&["sensor/*"]), Some(&["sensor/*"]))]).unwrap();
    let store: Arc<dyn EventStore> = Arc::new(RedbStore::open(&dir.join("events.redb")).unwrap());
    let config = BrokerConfig {
        server_id: 1,
        commit,
        max_subscriptions: 2,
        notify: rivulet_tokio::fanout::FanoutLimits::events(16),
        access: Arc::new(Access::new(Arc::new(clients))),
        import_window: 1000,
        query_scan: 1_000_000,
        volatile: vec![EventPath::parse_pattern("sensor/fast/*").unwrap()],
    };
    Broker::start(store, config).unwrap()
}

const DEV: Principal<'static> = Principal { name: "dev", frontend: "test", peer: None };

fn json(ty: &str, n: u32) -> RegisterEvent {
    RegisterEvent::new(ty, Some(Payload::Json(n.to_string())))
}

fn sensors() -> Interest {
    Interest { patterns: vec![EventPath::parse("sensor/*")], ..Interest::default() }
}

async fn next(subscriber: &mut Subscriber) -> rivulet_core::owned::Event {
    match tokio::time::timeout(WAIT, subscriber.next(true)).await.expect("an event in time") {
        Delivery::Event(event) => (*event).clone(),
        Delivery::CutOff => panic!("cut off"),
    }
}

#[tokio::test]
async fn publish_checks_every_event_and_takes_nothing_of_a_refused_batch() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let mut live = broker.subscribe(&DEV, sensors()).unwrap();
    let refused = Batch { events: vec![json("sensor/a", 1), json("secret/door", 2)], sessions: vec![] };
    let e = broker.publish(&DEV, refused, false).await.expect_err("secret/door is not dev's");
    assert!(matches!(&e, BrokerError::Denied(m) if m.contains("secret/door")), "{e:?}");
    let wildcard = Batch { events: vec![json("sensor/*", 1)], sessions: vec![] };
    let e = broker.publish(&DEV, wildcard, false).await.expect_err("a pattern is no type");
    assert!(matches!(&e, BrokerError::Invalid(m) if m.contains("sensor/*")), "{e:?}");
    let stranger = Principal { name: "stranger", ..DEV };
    let e = broker.publish(&stranger, Batch { events: vec![json("sensor/a", 1)], sessions: vec![] }, false).await;
    assert!(matches!(e, Err(BrokerError::Denied(_))), "a name the login did not pass: {e:?}");
    // The accepted one is the first anybody hears of.
    let ok = broker.publish(&DEV, Batch { events: vec![json("sensor/a", 3)], sessions: vec![(5, 8)] }, true).await;
    let published = ok.expect("taken");
    assert_eq!(published.events.len(), 1, "answered with the event as registered");
    tokio::time::timeout(WAIT, published.durable).await.expect("in time").expect("durable");
    assert_eq!(next(&mut live).await.payload, Some(Payload::Json("3".into())));
    assert!(live.try_recv().is_none());
    let all = Query::Timeseries(TimeseriesQuery::default());
    let stored = broker.query(&DEV, all, usize::MAX).await.unwrap();
    assert_eq!(stored.events.len(), 1, "nothing of the refused batches was stored");
    assert_eq!(broker.resume_session(5).await, Some(8), "the cursor was stored with its event");
    broker.close().await;
}

#[tokio::test]
async fn subscribers_are_checked_and_the_persisted_hear_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let three = Interest { patterns: ["sensor/a", "sensor/b", "sensor/c"].map(EventPath::parse).to_vec(), ..sensors() };
    let e = broker.subscribe(&DEV, three).expect_err("over max_subscriptions");
    assert!(matches!(&e, BrokerError::Invalid(m) if m.contains("allows 2")), "{e:?}");
    let outside = Interest { patterns: vec![EventPath::parse("secret/*")], ..sensors() };
    assert!(matches!(broker.subscribe(&DEV, outside), Err(BrokerError::Denied(_))));
    let mut live = broker.subscribe(&DEV, sensors()).unwrap();
    let mut persisted = broker.subscribe(&DEV, Interest { persisted: true, ..sensors() }).unwrap();
    let batch = Batch { events: (0..5).map(|n| json("sensor/a", n)).collect(), sessions: vec![] };
    let published = broker.publish(&DEV, batch, false).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(next(&mut live).await.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order");
    tokio::time::timeout(WAIT, published.durable).await.expect("in time").expect("durable");
    for id in &ids {
        assert_eq!(next(&mut persisted).await.id, *id, "the same events, once durable");
    }
    broker.close().await;
}

#[tokio::test]
async fn volatile_events_are_routed_and_acknowledged_at_once_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    // A group commit that waits ten seconds: nothing durable is acknowledged within the test's
    // first second.
    let broker = broker_committing(dir.path(), CommitPolicy { max_events: 1000, max_delay: Duration::from_secs(10) });
    let mut live = broker.subscribe(&DEV, sensors()).unwrap();
    let mut persisted = broker.subscribe(&DEV, Interest { persisted: true, ..sensors() }).unwrap();
    let fast = Batch { events: vec![json("sensor/fast/a", 1), json("sensor/fast/b", 2)], sessions: vec![(5, 2)] };
    let published = broker.publish(&DEV, fast, true).await.unwrap();
    assert_eq!(published.events.len(), 2, "answered with ids like any registration");
    let acked = tokio::time::timeout(Duration::from_secs(1), published.durable).await;
    assert_eq!(acked.expect("acknowledged without waiting for a commit"), Ok(()));
    assert_eq!(next(&mut live).await.payload, Some(Payload::Json("1".into())));
    assert_eq!(next(&mut live).await.payload, Some(Payload::Json("2".into())));
    // A batch of both kinds: every event routed in id order, the durable one stored.
    let mixed = Batch { events: vec![json("sensor/fast/a", 3), json("sensor/a", 4)], sessions: vec![(5, 4)] };
    let mixed = broker.publish(&DEV, mixed, false).await.unwrap();
    let (three, four) = (next(&mut live).await, next(&mut live).await);
    assert!(three.id < four.id);
    assert_eq!(four.payload, Some(Payload::Json("4".into())));
    broker.close().await;
    assert_eq!(mixed.durable.await, Ok(()), "durable once its commit was written (at close)");
    assert_eq!(broker.counters.events_volatile.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(broker.counters.events_in.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(next(&mut persisted).await.id, four.id, "a persisted subscriber hears only of what is stored");
    assert!(persisted.try_recv().is_none());
    let all = Query::Timeseries(TimeseriesQuery::default());
    let stored = broker.query(&DEV, all, usize::MAX).await.unwrap();
    assert_eq!(stored.events.iter().map(|e| e.id).collect::<Vec<_>>(), [four.id], "volatile events are not stored");
    let latest = broker.query(&DEV, Query::Latest { event_types: None }, usize::MAX).await.unwrap();
    assert_eq!(latest.events.iter().map(|e| e.event_type.to_string()).collect::<Vec<_>>(), ["sensor/a"]);
    assert_eq!(broker.resume_session(5).await, Some(4), "the cursor was stored all the same");
}

#[tokio::test]
async fn calls_are_checked_and_find_nobody_without_front_ends() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let request = PacketRequest { rq_type: 1, flags: 0, payload: Vec::new() };
    let e = broker.call(&DEV, "device-1", request.clone()).await.expect_err("nobody is connected");
    assert_eq!(e, BrokerError::Unavailable("no client \"device-1\" is connected".into()));
    let stranger = Principal { name: "stranger", ..DEV };
    assert!(matches!(broker.call(&stranger, "device-1", request).await, Err(BrokerError::Denied(_))));
    broker.close().await;
}

/// Refuses odd numbers under `sensor/odd`.
struct EvenOnly;

impl PayloadRule for EvenOnly {
    fn check(&self, event: &RegisterEvent) -> Result<(), String> {
        match &event.payload {
            Some(Payload::Json(n))
                if event.event_type == EventPath::parse("sensor/odd") && n.parse::<u32>().is_ok_and(|n| n % 2 == 1) =>
            {
                Err(format!("{n} is odd"))
            }
            _ => Ok(()),
        }
    }
}

#[tokio::test]
async fn a_rule_on_contents_holds_for_every_registration_once_added() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let odd = || Batch { events: vec![json("sensor/a", 1), json("sensor/odd", 3)], sessions: vec![] };
    assert!(broker.publish(&DEV, odd(), false).await.is_ok(), "no rule yet");
    broker.add_rule(Arc::new(EvenOnly));
    let e = broker.publish(&DEV, odd(), false).await.expect_err("3 is odd");
    assert!(matches!(&e, BrokerError::Invalid(m) if m == "3 is odd"), "{e:?}");
    assert!(broker.check_event(&DEV, &json("sensor/odd", 4)).is_ok());
    assert!(matches!(broker.check_event(&DEV, &json("secret/odd", 4)), Err(BrokerError::Denied(_))), "the ACL first");
}
