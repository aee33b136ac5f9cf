//! The one load generator behind the MQTT, NATS and relay rows: connect the subscribers (each
//! subscription active before anything is published), connect the publishers, publish for the
//! workload's time (flat out, or paced like `rivulet bench --rate`), let every publisher's client
//! finish (its writes flushed, for MQTT QoS 1 every PUBACK in), then wait until everything expected
//! is delivered or nothing new arrived for `idle`. A protocol only says how to connect, publish and
//! receive. (Or publish a number of messages: see [`Amount`].)

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::measure::{Outcome, Tracker, payload};

/// One workload: who publishes to whom, how big, for how long, how fast.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Workload {
    /// Short name for tables, e.g. `1→100 64 B`.
    pub name: String,
    pub publishers: u32,
    pub subscribers: u32,
    /// Payload bytes per message (at least the 20-byte header).
    pub size: usize,
    /// How much each publisher publishes.
    pub amount: Amount,
    /// Messages per second per publisher; `None`: as fast as the client takes them.
    pub rate: Option<u64>,
}

/// How much each publisher of a workload publishes: for a time (as much as the system takes), or
/// a number of messages (where publishing for a time would queue up more than a cell can drain in
/// a few seconds on the slower systems).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Amount {
    Seconds(f64),
    Messages(u64),
}

impl Amount {
    pub fn describe(self) -> String {
        match self {
            Amount::Seconds(seconds) => format!("{seconds} s of publishing"),
            Amount::Messages(count) => format!("{count} messages per publisher"),
        }
    }

    /// The longest a cell may take before it is given up.
    pub fn limit(self) -> Duration {
        let publishing = match self {
            Amount::Seconds(seconds) => seconds,
            Amount::Messages(_) => 0.0,
        };
        Duration::from_secs_f64(publishing) + Duration::from_secs(180)
    }
}

pub trait Subscriber: Send + 'static {
    /// The next delivered payload; `Ok(None)` once the connection is closed.
    fn next(&mut self) -> impl Future<Output = Result<Option<Bytes>, String>> + Send;
    /// What the client library reported going wrong on the way (slow consumer, reconnects).
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }
}

pub trait Publisher: Send + 'static {
    /// Hands one message to the client library (which may buffer it).
    fn publish(&mut self, payload: Vec<u8>) -> impl Future<Output = Result<(), String>> + Send;
    /// Returns once everything published has left the client (and, where the protocol
    /// acknowledges, is acknowledged).
    fn finish(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

pub trait Protocol: Sync {
    type Sub: Subscriber;
    type Pub: Publisher;
    /// A connected subscriber whose subscription the broker has taken.
    fn subscriber(&self, index: u32) -> impl Future<Output = Result<Self::Sub, String>> + Send;
    fn publisher(&self, index: u32) -> impl Future<Output = Result<Self::Pub, String>> + Send;
}

/// Runs `workload` over `protocol`.
pub async fn drive<P: Protocol>(protocol: &P, workload: &Workload, idle: Duration) -> Result<Outcome, String> {
    let origin = Instant::now();
    let mut subscribers = Vec::new();
    for n in 0..workload.subscribers {
        subscribers.push(protocol.subscriber(n).await.map_err(|e| format!("subscriber {n}: {e}"))?);
    }
    let mut publishers = Vec::new();
    for n in 0..workload.publishers {
        publishers.push(protocol.publisher(n).await.map_err(|e| format!("publisher {n}: {e}"))?);
    }
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut receiving = Tasks(
        subscribers
            .into_iter()
            .map(|subscriber| {
                let tracker = Tracker::new(workload.publishers, origin);
                tokio::spawn(receive(subscriber, tracker, delivered.clone(), stop_rx.clone()))
            })
            .collect(),
    );

    let start = Instant::now();
    let (deadline, count) = match workload.amount {
        Amount::Seconds(seconds) => (Some(start + Duration::from_secs_f64(seconds)), u64::MAX),
        Amount::Messages(count) => (None, count),
    };
    let mut publishing = Tasks(
        publishers
            .into_iter()
            .enumerate()
            .map(|(index, publisher)| {
                tokio::spawn(publish(publisher, index as u32, workload.clone(), origin, deadline, count))
            })
            .collect(),
    );
    let mut published = 0;
    let mut finished = Vec::new();
    for (index, task) in publishing.0.iter_mut().enumerate() {
        let (publisher, count) = task
            .await
            .map_err(|e| format!("publisher {index} panicked: {e}"))?
            .map_err(|e| format!("publisher {index}: {e}"))?;
        published += count;
        finished.push(publisher);
    }

    let expected = published * u64::from(workload.subscribers);
    let (mut seen, mut since) = (delivered.load(Relaxed), Instant::now());
    while seen < expected && since.elapsed() < idle {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = delivered.load(Relaxed);
        if now != seen {
            (seen, since) = (now, Instant::now());
        }
    }
    let _ = stop_tx.send(true);
    let mut trackers = Vec::new();
    // What went wrong, and on which subscribers: 100 subscribers cut off alike say it once.
    let mut notes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (index, task) in receiving.0.iter_mut().enumerate() {
        let (tracker, ended, problems) = task.await.map_err(|e| format!("subscriber {index} panicked: {e}"))?;
        if tracker.malformed > 0 {
            return Err(format!("subscriber {index} got {} payloads it could not read", tracker.malformed));
        }
        for note in ended.into_iter().chain(problems) {
            notes.entry(note).or_default().push(index);
        }
        trackers.push(tracker);
    }
    drop(finished);
    let mut outcome = Outcome::from_trackers(&trackers, published, workload.subscribers, workload.size, start);
    outcome.notes = notes
        .into_iter()
        .map(|(note, subscribers)| match subscribers.as_slice() {
            [one] => format!("subscriber {one}: {note}"),
            many => format!("{} subscribers (first {}): {note}", many.len(), many[0]),
        })
        .collect();
    Ok(outcome)
}

/// Spawned clients, aborted if the run ends early (an error in another client), so none is left
/// holding a connection.
struct Tasks<T>(Vec<tokio::task::JoinHandle<T>>);

impl<T> Drop for Tasks<T> {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn publish<T: Publisher>(
    mut publisher: T,
    index: u32,
    workload: Workload,
    origin: Instant,
    deadline: Option<Instant>,
    count: u64,
) -> Result<(T, u64), String> {
    let mut pace = workload.rate.map(|rate| {
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        interval
    });
    let mut seq = 0u64;
    while seq < count && deadline.is_none_or(|deadline| Instant::now() < deadline) {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        publisher.publish(payload(workload.size, index, seq, origin)).await?;
        seq += 1;
    }
    publisher.finish().await?;
    Ok((publisher, seq))
}

/// Records deliveries until told to stop; says why if the connection ended before that, and what
/// the client library reported.
async fn receive<T: Subscriber>(
    mut subscriber: T,
    mut tracker: Tracker,
    delivered: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Tracker, Option<String>, Vec<String>) {
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.changed() => return (tracker, None, subscriber.problems()),
            next = subscriber.next() => next,
        };
        match next {
            Ok(Some(data)) => {
                if tracker.record(&data) {
                    delivered.fetch_add(1, Relaxed);
                }
            }
            Ok(None) => return (tracker, Some("the broker closed the connection".into()), subscriber.problems()),
            Err(e) => return (tracker, Some(e), subscriber.problems()),
        }
    }
}
