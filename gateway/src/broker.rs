//! The event server: gives registrations their ids and timestamps, writes them in group commits,
//! notifies subscribers (at once those who did not ask for `persisted`, after the commit those
//! who did), keeps the newest event of each type in memory, and answers queries.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rivulet_core::model::{EventId, Timestamp};
use rivulet_tokio::model::{Event, EventPath, Query, QueryPage};
use rivulet_tokio::server::{Admission, ClientInfo, Registration, Server, ServerHandler};
use rivulet_tokio::{PacketReply, PacketRequest};
use tokio::sync::{mpsc, oneshot};

use crate::store::{Commit, EventStore, StoreError};

/// Application request type a client uses to ask for the gateway's status (JSON answer).
pub const RQ_STATUS: u64 = 0x7200;

/// When a group commit is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitPolicy {
    /// Write once this many events wait.
    pub max_events: usize,
    /// Write at the latest this long after the first waiting event arrived.
    pub max_delay: Duration,
}

impl Default for CommitPolicy {
    fn default() -> Self {
        CommitPolicy { max_events: 1000, max_delay: Duration::from_millis(5) }
    }
}

/// The time now as an event timestamp.
pub fn now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp::from_micros(i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX))
}

/// A batch waiting for the committer, and who to tell once it is durable.
struct Pending {
    commit: Commit,
    durable: oneshot::Sender<Result<(), String>>,
}

/// Assigns ids in the order batches reach the committer.
struct Ids {
    last: EventId,
    to_committer: mpsc::Sender<Pending>,
}

/// Counters for `rivulet status` and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub events_in: std::sync::atomic::AtomicU64,
    pub commits: std::sync::atomic::AtomicU64,
}

/// The gateway's `ServerHandler`.
pub struct Broker {
    store: Arc<dyn EventStore>,
    ids: tokio::sync::Mutex<Ids>,
    latest: Mutex<BTreeMap<EventPath, Event>>,
    server: OnceLock<Arc<Server>>,
    pub counters: Counters,
}

impl Broker {
    /// Opens the broker over `store`: rebuilds the latest table, continues instance numbers under
    /// a new gateway session, and starts the committer.
    pub fn start(store: Arc<dyn EventStore>, server_id: u64, policy: CommitPolicy) -> Result<Arc<Self>, StoreError> {
        let latest = store.latest()?.into_iter().map(|event| (event.event_type.clone(), event)).collect();
        let last = store.last_id(server_id)?;
        // A new session per start (hat-event's rule), and instances keep counting up.
        let last = EventId {
            server: server_id,
            session: last.map_or(1, |id| id.session + 1),
            instance: last.map_or(0, |id| id.instance),
        };
        let (to_committer, batches) = mpsc::channel(64);
        let broker = Arc::new(Broker {
            store: store.clone(),
            ids: tokio::sync::Mutex::new(Ids { last, to_committer }),
            latest: Mutex::new(latest),
            server: OnceLock::new(),
            counters: Counters::default(),
        });
        tokio::spawn(committer(store, policy, batches, Arc::downgrade(&broker)));
        Ok(broker)
    }

    /// The server whose clients this broker notifies; set once it listens.
    pub fn attach(&self, server: Arc<Server>) {
        let _ = self.server.set(server);
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    async fn notify(&self, events: &[Event], persisted: bool) {
        if let Some(server) = self.server.get() {
            server.notify_events(events, persisted, false).await;
        }
    }

    /// Gives events ids and a timestamp and hands them to the committer, in one step so that
    /// instance numbers and commit order agree. Returns the events and a receiver that resolves
    /// once they are durable.
    async fn admit(
        &self,
        registrations: Vec<Registration>,
    ) -> Result<(Vec<Event>, oneshot::Receiver<Result<(), String>>), String> {
        let timestamp = now();
        let mut ids = self.ids.lock().await;
        let mut next = ids.last;
        let mut sessions: Vec<(u64, u32)> = Vec::new();
        let events: Vec<Event> = registrations
            .into_iter()
            .map(|registration| {
                next.instance += 1;
                if let Some(seq) = registration.seq {
                    match sessions.iter_mut().find(|(s, _)| *s == registration.session) {
                        Some(entry) => entry.1 = seq.wrapping_add(1),
                        None => sessions.push((registration.session, seq.wrapping_add(1))),
                    }
                }
                Event {
                    id: next,
                    event_type: registration.event.event_type,
                    timestamp,
                    source_timestamp: registration.event.source_timestamp,
                    payload: registration.event.payload,
                }
            })
            .collect();
        let (durable, done) = oneshot::channel();
        let pending = Pending { commit: Commit { events: events.clone(), sessions }, durable };
        ids.to_committer.send(pending).await.map_err(|_| "the store is closed".to_string())?;
        ids.last = next;
        Ok((events, done))
    }

    fn remember_latest(&self, events: &[Event]) {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        for event in events {
            let newer = latest.get(&event.event_type).is_none_or(|known| known.timestamp <= event.timestamp);
            if newer {
                latest.insert(event.event_type.clone(), event.clone());
            }
        }
    }

    fn latest_matching(&self, patterns: Option<&[EventPath]>) -> Vec<Event> {
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        latest
            .values()
            .filter(|event| patterns.is_none_or(|patterns| patterns.iter().any(|p| p.matches(&event.event_type))))
            .cloned()
            .collect()
    }

    /// What `rivulet status` shows, as JSON.
    fn status_json(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let connections = self.server.get().map(|s| s.connections()).unwrap_or_default();
        let clients: Vec<String> = connections
            .iter()
            .map(|c| {
                format!(
                    "{{\"id\":{},\"name\":{},\"peer\":\"{}\",\"subscriptions\":{}}}",
                    c.id,
                    json_string(&c.client_name),
                    c.peer,
                    c.subscriptions.len()
                )
            })
            .collect();
        let stats = self.store.stats().unwrap_or_default();
        format!(
            "{{\"connections\":{},\"clients\":[{}],\"events_in\":{},\"commits\":{},\"stored_events\":{},\"store_bytes\":{}}}",
            connections.len(),
            clients.join(","),
            self.counters.events_in.load(Relaxed),
            self.counters.commits.load(Relaxed),
            stats.events,
            stats.bytes
        )
    }
}

/// A JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl ServerHandler for Broker {
    async fn connect(&self, _client: &ClientInfo) -> Admission {
        Admission::Accept
    }

    async fn register(&self, _client: &ClientInfo, registrations: Vec<Registration>) -> Result<Vec<Event>, String> {
        let count = registrations.len() as u64;
        let (events, durable) = self.admit(registrations).await?;
        self.notify(&events, false).await;
        durable.await.map_err(|_| "the store is closed".to_string())??;
        self.counters.events_in.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
        self.remember_latest(&events);
        self.notify(&events, true).await;
        Ok(events)
    }

    async fn query(&self, _client: &ClientInfo, query: Query) -> Result<QueryPage, String> {
        match query {
            Query::Latest { event_types } => {
                Ok(QueryPage { events: self.latest_matching(event_types.as_deref()), more_follows: false })
            }
            Query::Timeseries(query) => {
                let store = self.store.clone();
                blocking(move || store.timeseries(&query)).await
            }
            Query::Server { server_id, max_results, last_event_id, .. } => {
                let store = self.store.clone();
                blocking(move || store.server_events(server_id, max_results, last_event_id)).await
            }
        }
    }

    async fn request(&self, _client: &ClientInfo, request: PacketRequest) -> Result<PacketReply, String> {
        match request.rq_type {
            RQ_STATUS => Ok(PacketReply::new(0, self.status_json())),
            other => Err(format!("unknown request type {other}")),
        }
    }

    async fn resume(&self, session: u64) -> Option<u32> {
        let store = self.store.clone();
        match blocking(move || store.session(session)).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("reading session {session} from the store: {e}");
                None
            }
        }
    }
}

/// Runs a blocking store call off the async threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(|e| format!("store: {e}")),
        Err(e) => Err(format!("store task failed: {e}")),
    }
}

/// Gathers batches into group commits: writes when `max_events` wait or `max_delay` after the
/// first, then tells every batch's registrant.
async fn committer(
    store: Arc<dyn EventStore>,
    policy: CommitPolicy,
    mut batches: mpsc::Receiver<Pending>,
    broker: std::sync::Weak<Broker>,
) {
    while let Some(first) = batches.recv().await {
        let deadline = tokio::time::Instant::now() + policy.max_delay;
        let mut group = vec![first];
        let mut events: usize = group.iter().map(|p| p.commit.events.len()).sum();
        while events < policy.max_events {
            match tokio::time::timeout_at(deadline, batches.recv()).await {
                Ok(Some(pending)) => {
                    events += pending.commit.events.len();
                    group.push(pending);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let mut commit = Commit::default();
        for pending in &group {
            commit.events.extend(pending.commit.events.iter().cloned());
            for &(session, next) in &pending.commit.sessions {
                match commit.sessions.iter_mut().find(|(s, _)| *s == session) {
                    Some(entry) => entry.1 = next,
                    None => commit.sessions.push((session, next)),
                }
            }
        }
        let writer = store.clone();
        let result = blocking(move || writer.commit(&commit)).await;
        if let Err(e) = &result {
            tracing::error!("group commit of {events} events failed: {e}");
        } else if let Some(broker) = broker.upgrade() {
            broker.counters.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        for pending in group {
            let _ = pending.durable.send(result.clone());
        }
    }
}
