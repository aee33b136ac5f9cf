//! The event server: gives registrations their ids and timestamps, writes them in group commits,
//! notifies subscribers (at once those who did not ask for `persisted`, after the commit those
//! who did), keeps the newest event of each type in memory, and answers queries.
//!
//! Order: ids are given under one lock, and the notifications of not-persisted subscribers are
//! queued under that same lock, so every client sees events in id order (a client drops an event
//! whose id is not after the last one it got from the same server session). The committer writes
//! batches in that order and, after each commit, updates the latest table and notifies persisted
//! subscribers before it tells the registrants: a registration answered as persisted is stored,
//! and `query latest` right after it sees it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use rivulet_core::model::{EventId, Timestamp};
use rivulet_core::owned::{Event, EventPath, Query, QueryPage, RegisterEvent};
use rivulet_tokio::server::{Admission, Admitted, ClientInfo, HandlerError, Registration, Server, ServerHandler};
use rivulet_tokio::{PacketReply, PacketRequest};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::auth::{Acl, Authenticator, Clients, WRONG_CREDENTIAL};
use crate::store::{Commit, EventStore, StoreError};

/// Application request type a client uses to ask for the gateway's status (JSON answer).
pub const RQ_STATUS: u64 = 0x7200;

/// Application request type that calls another client's request handler through the gateway:
/// the payload is a [`Forward`] (postcard), the answer the target's answer.
pub const RQ_FORWARD: u64 = 0x7201;

// The payload type and its decoder live in their own dependency-light file, which the fuzz crate
// compiles too (target `forward`).
pub mod forward;
pub use forward::Forward;

/// Most events one query page holds, whatever the client asks: a query over the whole history
/// pages instead of loading it at once (`more_follows` says a next page has more).
pub const PAGE_LIMIT: u32 = 1000;

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

/// How the broker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub server_id: u64,
    pub commit: CommitPolicy,
    /// Subscription patterns one client may hold.
    pub max_subscriptions: usize,
    /// Who may log in and what each may do; empty: no login, everyone may do everything.
    pub clients: Arc<Clients>,
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

/// Gives ids in the order batches reach the committer.
struct Ids {
    last: EventId,
    /// `None` once the broker is closed.
    to_committer: Option<mpsc::Sender<Pending>>,
}

/// Upper bounds (seconds) of the commit latency histogram's buckets.
pub const COMMIT_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// A Prometheus-style histogram: cumulative counts per bucket, plus sum and count.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bound, bucket) in COMMIT_BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.sum_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Cumulative counts per bucket of [`COMMIT_BUCKETS`], the sum in seconds, the count.
    pub fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        let buckets = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        (buckets, self.sum_micros.load(Relaxed) as f64 / 1e6, self.count.load(Relaxed))
    }
}

/// Counters for `rivulet status` and the metrics endpoint.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events stored durably.
    pub events_in: AtomicU64,
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    pub commit_latency: Histogram,
    /// Clients refused at init (limits, credentials).
    pub refused_clients: AtomicU64,
}

/// The gateway's `ServerHandler`.
pub struct Broker {
    config: BrokerConfig,
    store: Arc<dyn EventStore>,
    ids: tokio::sync::Mutex<Ids>,
    latest: Mutex<BTreeMap<EventPath, Arc<Event>>>,
    server: OnceLock<Arc<Server>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    auth: Authenticator,
    /// Set by the first failed commit: from then on nothing is taken, and nothing queued is
    /// written, so no acknowledged registration can sit behind a lost one. A restart recovers.
    store_failed: OnceLock<String>,
    pub counters: Counters,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Broker {
    /// Opens the broker over `store`: rebuilds the latest table, continues instance numbers under
    /// a new gateway session, and starts the committer.
    pub fn start(store: Arc<dyn EventStore>, config: BrokerConfig) -> Result<Arc<Self>, StoreError> {
        let latest = store.latest()?.into_iter().map(|event| (event.event_type.clone(), Arc::new(event))).collect();
        let last = store.last_id(config.server_id)?;
        // A new session per start (hat-event's rule), and instances keep counting up.
        let last = EventId {
            server: config.server_id,
            session: last.map_or(1, |id| id.session + 1),
            instance: last.map_or(0, |id| id.instance),
        };
        let (to_committer, batches) = mpsc::channel(64);
        let commit = config.commit;
        let auth = Authenticator::new(config.clients.clone());
        let broker = Arc::new(Broker {
            config,
            store: store.clone(),
            ids: tokio::sync::Mutex::new(Ids { last, to_committer: Some(to_committer) }),
            latest: Mutex::new(latest),
            server: OnceLock::new(),
            committer: Mutex::new(None),
            auth,
            store_failed: OnceLock::new(),
            counters: Counters::default(),
        });
        let committer = tokio::spawn(committer(store, commit, batches, Arc::downgrade(&broker)));
        *lock(&broker.committer) = Some(committer);
        Ok(broker)
    }

    /// The server whose clients this broker notifies; set once it listens.
    pub fn attach(&self, server: Arc<Server>) {
        let _ = self.server.set(server);
    }

    pub fn server(&self) -> Option<&Arc<Server>> {
        self.server.get()
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Takes no more registrations and waits until every one taken is committed.
    pub async fn close(&self) {
        self.ids.lock().await.to_committer = None;
        let committer = lock(&self.committer).take();
        if let Some(committer) = committer
            && let Err(e) = committer.await
        {
            tracing::error!("committer failed: {e}");
        }
    }

    async fn notify(&self, events: &[Arc<Event>], persisted: bool) {
        if let Some(server) = self.server.get() {
            server.notify_events(events, persisted, false).await;
        }
    }

    /// Gives events ids and a timestamp, notifies not-persisted subscribers and hands them to the
    /// committer, all under the ids lock so that ids, notifications and commits share one order.
    /// Returns a receiver that resolves once they are durable, and a copy of the events if
    /// `answer` (a register-with-response answers with them; a sequenced registration is
    /// acknowledged by number, and its events move into the commit without a copy).
    async fn take(
        &self,
        registrations: Vec<Registration>,
        answer: bool,
    ) -> Result<(Vec<Event>, oneshot::Receiver<Result<(), String>>), String> {
        let timestamp = now();
        let mut ids = self.ids.lock().await;
        if let Some(reason) = self.store_failed.get() {
            return Err(reason.clone());
        }
        let to_committer = ids.to_committer.clone().ok_or("the gateway is stopping")?;
        // Room in the committer's queue first: once subscribers have seen the events, handing
        // them over cannot fail.
        let permit = to_committer.reserve().await.map_err(|_| "the gateway is stopping".to_string())?;
        // A commit may have failed while we waited for room: then nothing more is taken, and no
        // subscriber hears of events that will not be written.
        if let Some(reason) = self.store_failed.get() {
            return Err(reason.clone());
        }
        let mut next = ids.last;
        let mut sessions: Vec<(u64, u32)> = Vec::new();
        let events: Vec<Arc<Event>> = registrations
            .into_iter()
            .map(|registration| {
                next.instance += 1;
                if let Some(seq) = registration.seq {
                    match sessions.iter_mut().find(|(s, _)| *s == registration.session) {
                        Some(entry) => entry.1 = seq.wrapping_add(1),
                        None => sessions.push((registration.session, seq.wrapping_add(1))),
                    }
                }
                Arc::new(Event {
                    id: next,
                    event_type: registration.event.event_type,
                    timestamp,
                    source_timestamp: registration.event.source_timestamp,
                    payload: registration.event.payload,
                })
            })
            .collect();
        ids.last = next;
        self.notify(&events, false).await;
        let answer = if answer { events.iter().map(|event| Event::clone(event)).collect() } else { Vec::new() };
        let (durable, done) = oneshot::channel();
        permit.send(Pending { commit: Commit { events, sessions }, durable });
        Ok((answer, done))
    }

    /// After a commit: the latest table, then persisted subscribers.
    async fn committed(&self, events: &[Arc<Event>]) {
        {
            let mut latest = lock(&self.latest);
            // Newest first, so a type registered many times in one commit is copied once.
            for event in events.iter().rev() {
                let newer = latest.get(&event.event_type).is_none_or(|known| known.id < event.id);
                if newer {
                    latest.insert(event.event_type.clone(), event.clone());
                }
            }
        }
        self.counters.events_in.fetch_add(events.len() as u64, Relaxed);
        self.notify(events, true).await;
    }

    fn latest_matching(&self, patterns: Option<&[EventPath]>) -> Vec<Event> {
        let latest = lock(&self.latest);
        latest
            .values()
            .filter(|event| patterns.is_none_or(|patterns| patterns.iter().any(|p| p.matches(&event.event_type))))
            .map(|event| Event::clone(event))
            .collect()
    }

    /// What `rivulet status` shows.
    pub fn status_json(&self) -> serde_json::Value {
        let server = self.server.get();
        let connections = server.map(|s| s.connections()).unwrap_or_default();
        let clients: Vec<serde_json::Value> = connections
            .iter()
            .map(|c| {
                let stats = server.and_then(|s| s.connection_stats(c.id)).unwrap_or_default();
                serde_json::json!({
                    "id": c.id,
                    "name": c.client_name,
                    "peer": c.peer.to_string(),
                    "subscriptions": c.subscriptions.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "persisted": c.persisted,
                    "registered": stats.registered,
                    "refused": stats.refused,
                    "notified": stats.notified,
                })
            })
            .collect();
        let stats = self.store.stats();
        let (_, commit_seconds, commits) = self.counters.commit_latency.snapshot();
        serde_json::json!({
            "server_id": self.config.server_id,
            "status": format!("{:?}", server.map(|s| s.status()).unwrap_or_default()).to_lowercase(),
            "connections": connections.len(),
            "clients": clients,
            "events_in": self.counters.events_in.load(Relaxed),
            "commits": self.counters.commits.load(Relaxed),
            "commit_failures": self.counters.commit_failures.load(Relaxed),
            "mean_commit_ms": if commits > 0 { commit_seconds * 1000.0 / commits as f64 } else { 0.0 },
            "cpu_seconds": process_cpu_seconds(),
            "store": match stats {
                Ok(stats) => serde_json::json!({ "events": stats.events, "bytes": stats.bytes }),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            },
        })
    }

    /// Why `client` may not hold `patterns`, if it may not: too many, or outside its ACL.
    fn check_subscriptions(&self, client: &ClientInfo, patterns: &[EventPath]) -> Result<(), String> {
        if patterns.len() > self.config.max_subscriptions {
            return Err(format!(
                "{} subscription patterns, the gateway allows {} per client",
                patterns.len(),
                self.config.max_subscriptions
            ));
        }
        self.acl(client)?.check_subscriptions(&client.client_name, patterns)
    }

    /// Calls the request handler of the client a [`Forward`] names and gives back its answer.
    async fn forward(&self, client: &ClientInfo, payload: &[u8]) -> Result<PacketReply, String> {
        let forward = forward::decode(payload).map_err(|e| format!("a forwarded request is not understood: {e}"))?;
        if !self.acl(client)?.may_request(&forward.client) {
            return Err(format!("client {:?} may not call requests of {:?}", client.client_name, forward.client));
        }
        let server = self.server.get().ok_or("the gateway is starting")?;
        let target = server.connections().into_iter().filter(|c| c.client_name == forward.client).max_by_key(|c| c.id);
        let target = target.ok_or_else(|| format!("no client {:?} is connected", forward.client))?;
        server
            .request(target.id, forward.rq_type, forward.flags, forward.payload)
            .await
            .map_err(|e| format!("{}: {e}", forward.client))
    }

    /// What a logged-in client may do. Every accepted name is configured (or none is), so the
    /// error is for a client the login did not pass.
    fn acl(&self, client: &ClientInfo) -> Result<&Acl, String> {
        self.auth.clients().acl(&client.client_name).ok_or_else(|| WRONG_CREDENTIAL.to_string())
    }

    /// Logs an ACL refusal; it also goes back to the client.
    fn refused<T>(client: &ClientInfo, result: Result<T, String>) -> Result<T, String> {
        if let Err(reason) = &result {
            tracing::info!(client = %client.client_name, peer = %client.peer, "refused: {reason}");
        }
        result
    }
}

impl ServerHandler for Broker {
    async fn connect(&self, client: &ClientInfo) -> Admission {
        // The login first (a challenge goes out before anything else is looked at), then the
        // init's subscriptions.
        let admission = match self.auth.login(client, Instant::now()) {
            Admission::Accept => match self.check_subscriptions(client, &client.subscriptions) {
                Ok(()) => Admission::Accept,
                Err(reason) => Admission::Refuse(reason),
            },
            other => other,
        };
        if let Admission::Refuse(reason) = &admission {
            self.counters.refused_clients.fetch_add(1, Relaxed);
            tracing::info!(client = %client.client_name, peer = %client.peer, "init refused: {reason}");
        }
        admission
    }

    async fn disconnect(&self, client: &ClientInfo) {
        self.auth.forget(client.id);
    }

    async fn subscribe(&self, client: &ClientInfo, patterns: &[EventPath]) -> Result<(), HandlerError> {
        Self::refused(client, self.check_subscriptions(client, patterns)).map_err(HandlerError::Refused)
    }

    fn check_register(&self, client: &ClientInfo, event: &RegisterEvent) -> Result<(), HandlerError> {
        if event.event_type.segments().any(|s| s == "?" || s == "*") {
            let reason = format!("{}: an event type cannot contain '?' or '*'", event.event_type);
            return Err(HandlerError::Refused(reason));
        }
        let allowed = self.acl(client).and_then(|acl| acl.check_register(&client.client_name, &event.event_type));
        Self::refused(client, allowed).map_err(HandlerError::Refused)
    }

    async fn admit(&self, _client: &ClientInfo, registrations: Vec<Registration>) -> Result<Admitted, HandlerError> {
        let (_, durable) = self.take(registrations, false).await.map_err(HandlerError::Failed)?;
        let durable = async move {
            durable.await.map_err(|_| HandlerError::Failed("the store is closed".into()))?.map_err(HandlerError::Failed)
        };
        Ok(Admitted { durable: Box::pin(durable) })
    }

    async fn register(
        &self,
        _client: &ClientInfo,
        registrations: Vec<Registration>,
    ) -> Result<Vec<Event>, HandlerError> {
        let (events, durable) = self.take(registrations, true).await.map_err(HandlerError::Failed)?;
        durable.await.map_err(|_| HandlerError::Failed("the store is closed".into()))?.map_err(HandlerError::Failed)?;
        Ok(events)
    }

    async fn query(&self, client: &ClientInfo, query: Query) -> Result<QueryPage, HandlerError> {
        self.answer_query(client, query).await.map_err(HandlerError::Refused)
    }

    async fn request(&self, client: &ClientInfo, request: PacketRequest) -> Result<PacketReply, HandlerError> {
        self.answer_request(client, request).await.map_err(HandlerError::Refused)
    }

    async fn resume(&self, session: u64) -> Option<u32> {
        self.resume_session(session).await
    }
}

impl Broker {
    async fn answer_query(&self, client: &ClientInfo, query: Query) -> Result<QueryPage, String> {
        let query =
            Self::refused(client, self.acl(client).and_then(|acl| acl.restrict_query(&client.client_name, query)))?;
        // No page is read larger than the client can take: it would be cut to that anyway.
        let max_bytes = client.max_packet as usize;
        match query {
            Query::Latest { event_types } => {
                Ok(QueryPage { events: self.latest_matching(event_types.as_deref()), more_follows: false })
            }
            Query::Timeseries(mut query) => {
                query.max_results = Some(query.max_results.map_or(PAGE_LIMIT, |max| max.min(PAGE_LIMIT)));
                let store = self.store.clone();
                blocking(move || store.timeseries(&query, max_bytes)).await
            }
            Query::Server { server_id, max_results, last_event_id, .. } => {
                let max_results = Some(max_results.map_or(PAGE_LIMIT, |max| max.min(PAGE_LIMIT)));
                let store = self.store.clone();
                blocking(move || store.server_events(server_id, max_results, last_event_id, max_bytes)).await
            }
        }
    }

    async fn answer_request(&self, client: &ClientInfo, request: PacketRequest) -> Result<PacketReply, String> {
        match request.rq_type {
            RQ_STATUS => Ok(PacketReply::new(0, self.status_json().to_string())),
            RQ_FORWARD => Self::refused(client, self.forward(client, &request.payload).await),
            other => Err(format!("unknown request type {other}")),
        }
    }

    async fn resume_session(&self, session: u64) -> Option<u32> {
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

/// CPU time (user + system) this process has used, from `/proc/self/stat` (Linux); `None`
/// elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, so split after its closing paren):
    // utime and stime are the 12th and 13th, in clock ticks: USER_HZ, which Linux fixes at 100 for
    // /proc whatever the kernel's own tick rate.
    let after = stat.rsplit_once(')')?.1;
    let mut fields = after.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
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
/// first, then (in commit order) updates the latest table, notifies persisted subscribers and
/// tells every batch's registrant. Ends once the broker is closed and every batch is written.
async fn committer(
    store: Arc<dyn EventStore>,
    policy: CommitPolicy,
    mut batches: mpsc::Receiver<Pending>,
    broker: Weak<Broker>,
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
        for pending in &mut group {
            commit.events.append(&mut pending.commit.events);
            for &(session, next) in &pending.commit.sessions {
                match commit.sessions.iter_mut().find(|(s, _)| *s == session) {
                    Some(entry) => entry.1 = next,
                    None => commit.sessions.push((session, next)),
                }
            }
        }
        let broker = broker.upgrade();
        if let Some(reason) = broker.as_ref().and_then(|b| b.store_failed.get()) {
            // An earlier commit failed: writing this one would leave a hole behind acknowledged
            // registrations.
            for pending in group {
                let _ = pending.durable.send(Err(reason.clone()));
            }
            continue;
        }
        let writer = store.clone();
        let started = Instant::now();
        let (result, commit) = match tokio::task::spawn_blocking(move || (writer.commit(&commit), commit)).await {
            Ok((result, commit)) => (result.map_err(|e| format!("store: {e}")), commit),
            Err(e) => (Err(format!("store task failed: {e}")), Commit::default()),
        };
        match (&result, &broker) {
            (Ok(()), Some(broker)) => {
                broker.counters.commits.fetch_add(1, Relaxed);
                broker.counters.commit_latency.observe(started.elapsed());
                broker.committed(&commit.events).await;
            }
            (Err(e), _) => {
                tracing::error!("group commit of {events} events failed: {e}; no more registrations until a restart");
                if let Some(broker) = &broker {
                    broker.counters.commit_failures.fetch_add(1, Relaxed);
                    let _ = broker.store_failed.set(format!("the store failed ({e}); restart the gateway"));
                }
            }
            (Ok(()), None) => {}
        }
        for pending in group {
            let _ = pending.durable.send(result.clone());
        }
    }
}
