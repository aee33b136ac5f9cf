//! Normal clients beside the fault: they must not notice it.

use std::sync::Arc;
use std::time::Duration;

use rivulet_tokio::model::{Event, Order, Payload, Query, RegisterEvent, TimeseriesQuery};
use rivulet_tokio::{Client, ClientOptions, Events, connect};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::gateway::{Gateway, within};

/// How often the steady producer registers an event.
const STEADY_EVERY: Duration = Duration::from_millis(20);
/// The steady subscriber's window (notifications the gateway may send ahead of its acks) and
/// its client's queue of events for the application: together, what may be on the way to it.
const STEADY_WINDOW: u16 = 8;
const STEADY_QUEUE: usize = 8;
/// How many acknowledged events the steady subscriber may lack at any tick of the producer. Its
/// notifications are queued before the commit and the acknowledgement after it, so a subscriber
/// that keeps up lacks at most what its window and queue hold; beyond that the gateway is holding
/// its notifications back: it has stopped receiving at the producer's rate (for 16 ticks, 0.32 s).
const STEADY_BEHIND: u64 = STEADY_WINDOW as u64 + STEADY_QUEUE as u64;

/// Waits until `client` was closed by the gateway and returns the reason it was told.
pub(crate) async fn told_why(client: &Client) -> String {
    within("the client is told why", async {
        loop {
            match client.close_reason() {
                Some(reason) => break reason,
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
}

pub(crate) fn numbered(ty: &str, n: u64) -> RegisterEvent {
    RegisterEvent::new(ty, Some(Payload::Json(n.to_string())))
}

pub(crate) fn number(event: &Event) -> u64 {
    match &event.payload {
        Some(Payload::Json(text)) => text.parse().expect("a number"),
        Some(Payload::Binary { data, .. }) => u64::from_be_bytes(data[..8].try_into().expect("8 bytes")),
        None => panic!("not a numbered event: {event:?}"),
    }
}

/// Every event of `pattern` in the store, oldest first, by the number in its payload, read in
/// pages of `page` events.
pub(crate) async fn stored_numbers(client: &Client, pattern: &str, page: u32) -> Vec<u64> {
    let query = Query::Timeseries(TimeseriesQuery {
        event_types: Some(vec![pattern.into()]),
        order: Order::Ascending,
        max_results: Some(page),
        ..TimeseriesQuery::default()
    });
    let events = within("query the store", client.query_all(query)).await.expect("a query answer");
    events.iter().map(number).collect()
}

/// Normal clients beside a fault: a producer registering `steady/NAME` events numbered 0, 1, 2…
/// every [`STEADY_EVERY`], and a subscriber to them that checks each number is the next one.
pub(crate) struct Steady {
    ty: String,
    producer: Arc<Client>,
    subscriber: Client,
    stop: watch::Sender<bool>,
    producing: JoinHandle<Produced>,
    /// How many arrived in order so far, or what went wrong.
    received: watch::Receiver<Result<u64, String>>,
}

/// What the steady producer did, and how far behind it the subscriber was at worst.
struct Produced {
    count: u64,
    /// The last registration's sequence number.
    last: Option<u32>,
    /// The most acknowledged events the subscriber lacked at a tick, and at which event.
    most_behind: (u64, u64),
}

/// What [`Steady::finish`] checked, for the test's figures.
pub(crate) struct SteadyRun {
    pub(crate) events: u64,
    most_behind: u64,
}

impl std::fmt::Display for SteadyRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} steady events (the subscriber at most {} behind)", self.events, self.most_behind)
    }
}

impl Steady {
    pub(crate) async fn start(gateway: &Gateway, name: &str) -> Steady {
        let ty = format!("steady/{name}");
        let subscribing = ClientOptions {
            subscriptions: vec![ty.as_str().into()],
            window: STEADY_WINDOW,
            events: STEADY_QUEUE,
            ..ClientOptions::new("steady-sub")
        };
        let (subscriber, events) =
            within("connect the subscriber", connect(gateway.addr, subscribing)).await.expect("connect");
        let (producer, _) = within("connect the producer", connect(gateway.addr, ClientOptions::new("steady-pub")))
            .await
            .expect("connect");
        let producer = Arc::new(producer);
        let (received_tx, received) = watch::channel(Ok(0));
        tokio::spawn(check_order(events, received_tx));
        let (stop, mut stopped) = watch::channel(false);
        let producing = {
            let (producer, ty, received) = (producer.clone(), ty.clone(), received.clone());
            tokio::spawn(async move {
                let mut pace = tokio::time::interval(STEADY_EVERY);
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let (mut n, mut last, mut most_behind) = (0, None, (0, 0));
                loop {
                    let stop = tokio::select! {
                        _ = pace.tick() => false,
                        _ = stopped.wait_for(|stop| *stop) => true,
                    };
                    // The producer's registrations are all steady events, numbered from seq 0.
                    let acknowledged = u64::from(producer.state().registered_below);
                    // Out of order or ended: `finish` reports that.
                    let behind = received.borrow().as_ref().map_or(0, |&got| acknowledged.saturating_sub(got));
                    if behind > most_behind.0 {
                        most_behind = (behind, n);
                    }
                    if stop {
                        break;
                    }
                    last = Some(producer.register(numbered(&ty, n)).await.expect("register"));
                    n += 1;
                }
                Produced { count: n, last, most_behind }
            })
        };
        let steady = Steady { ty, producer, subscriber, stop, producing, received };
        // The fault starts once events flow.
        steady.wait_received(10).await;
        steady
    }

    pub(crate) async fn wait_received(&self, n: u64) {
        let mut received = self.received.clone();
        let reached = within("steady events", received.wait_for(|r| r.as_ref().map_or(true, |&got| got >= n))).await;
        assert!(reached.expect("the checker runs").is_ok(), "{:?}", *self.received.borrow());
    }

    /// Stops the producer and checks what the module doc says; returns how many events went
    /// through and how far behind the subscriber was at worst.
    pub(crate) async fn finish(mut self) -> SteadyRun {
        // However short the fault was, a subscriber it stopped lacks more than STEADY_BEHIND
        // events once that many more than it has are acknowledged.
        let acknowledged = u64::from(self.producer.state().registered_below);
        let has = self.received.borrow().as_ref().map_or(acknowledged, |&got| got.max(acknowledged));
        let until = u32::try_from(has + STEADY_BEHIND + 1).expect("steady events are counted in u32");
        let mut producer = self.producer.state_changes();
        within("more steady events", producer.wait_for(|state| state.registered_below >= until))
            .await
            .expect("the producer runs");
        self.stop.send_replace(true);
        let produced = within("the producer stops", &mut self.producing).await.expect("the producer");
        let (count, (most_behind, at)) = (produced.count, produced.most_behind);
        // First, so that a subscriber still stalled fails here rather than after PATIENCE below.
        assert!(
            most_behind <= STEADY_BEHIND,
            "the steady subscriber fell {most_behind} acknowledged events behind (when event {at} was \
             due; at most {STEADY_BEHIND}): it stopped receiving at the producer's rate; received {:?}",
            *self.received.borrow()
        );
        let last = produced.last.expect("the producer registered something");
        within("all acknowledged", self.producer.registered(last)).await.expect("stored");
        self.wait_received(count).await;
        assert_eq!(*self.received.borrow(), Ok(count), "every event once, in order");
        assert_eq!(self.producer.state().links, 1, "the producer kept its link");
        assert_eq!(self.subscriber.state().links, 1, "the subscriber kept its link");
        assert_eq!(self.subscriber.close_reason(), None);
        let stored = stored_numbers(&self.producer, &self.ty, 1000).await;
        assert_eq!(stored, (0..count).collect::<Vec<_>>(), "every acknowledged event stored once, in order");
        self.subscriber.close().await;
        if let Ok(producer) = Arc::try_unwrap(self.producer) {
            producer.close().await;
        }
        SteadyRun { events: count, most_behind }
    }
}

/// Reads the steady subscriber's events and reports how many arrived as 0, 1, 2… in order.
async fn check_order(mut events: Events, received: watch::Sender<Result<u64, String>>) {
    let mut expected = 0;
    loop {
        let Some(event) = events.next().await else {
            received.send_modify(|r| *r = Err(format!("the events ended after {expected}")));
            return;
        };
        let n = number(&event);
        if n != expected {
            received.send_modify(|r| *r = Err(format!("got {n} where {expected} was next")));
            return;
        }
        expected += 1;
        received.send_modify(|r| *r = Ok(expected));
    }
}
