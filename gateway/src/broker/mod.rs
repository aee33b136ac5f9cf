//! The protocol-neutral broker: it speaks events, patterns and principals, never a wire format.
//! Every front-end (`crate::frontend`) reaches it through this API:
//!
//! - **publish** ([`Broker::publish`]) a batch for a principal and learn when it is durable: ids
//!   and a timestamp, the subscribers that did not ask for `persisted` at once, the store in the
//!   next group commit, then the persisted subscribers (`publish.rs`, `commit.rs`);
//! - **subscribe** ([`Broker::subscribe`]) with patterns, a server-id filter and the persisted
//!   flag, and get a bounded [`Subscriber`]: every subscriber sees events in id order, and one
//!   that falls a whole queue behind is cut off with a reason and counted, so nobody else slows
//!   down. The fan-out is one [`Fanout`] for every front-end ([`Broker::fanout`]): the broker
//!   owns the instance; its code is `rivulet_tokio::fanout`, which a `rivulet_tokio::Server` run
//!   without a gateway uses too;
//! - **query** latest, timeseries and server history ([`Broker::query`], `queries.rs`; the
//!   latest table is `latest.rs`);
//! - **import** events a peer gateway admitted, with their ids, each once ([`Broker::import`],
//!   `import.rs`; the federation, `crate::federation`, is its user);
//! - **call** a connected client's request handler by name, across front-ends ([`Broker::call`]);
//! - **status**: watch it and report it ([`Broker::watch_status`], [`Broker::report`]).
//!
//! Every request names its [`Principal`] and is checked against its ACL (`crate::access`); each
//! refusal is logged and comes back as a [`BrokerError`] that the front-end answers in its own
//! protocol's terms.

mod calls;
mod commit;
mod counters;
mod error;
mod import;
mod latest;
mod publish;
mod queries;
mod rules;
mod status;
mod volatile;

use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};

use rivulet_core::model::{EventId, Status};
use rivulet_core::owned::EventPath;
use rivulet_tokio::fanout::{Fanout, FanoutLimits, Interest, Subscriber};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use self::commit::CommitPolicy;
pub use self::counters::{COMMIT_BUCKETS, Counters, Histogram};
pub use self::error::BrokerError;
pub use self::import::Imported;
use self::import::Window;
use self::latest::Latest;
use self::publish::Ids;
pub use self::publish::{Batch, Durable, Published, now};
pub use self::queries::PAGE_LIMIT;
pub use self::rules::PayloadRule;
use crate::access::{Access, Denied, Principal};
use crate::frontend::Frontend;
use crate::store::{EventStore, StoreError};

/// How the broker runs.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub server_id: u64,
    pub commit: CommitPolicy,
    /// Subscription patterns one client may hold.
    pub max_subscriptions: usize,
    /// What is queued per subscriber, and for all, before one is cut off.
    pub notify: FanoutLimits,
    /// Who may do what.
    pub access: Arc<Access>,
    /// Ids of imported events remembered to drop a second copy without asking the store.
    pub import_window: usize,
    /// Stored events one query page may look at (see [`crate::store::Scan`]).
    pub query_scan: u64,
    /// Patterns of the event types that are routed and never stored (`volatile.rs`).
    pub volatile: Vec<EventPath>,
}

/// The broker; see the module doc.
pub struct Broker {
    config: BrokerConfig,
    access: Arc<Access>,
    store: Arc<dyn EventStore>,
    fanout: Arc<Fanout>,
    ids: tokio::sync::Mutex<Ids>,
    latest: Latest,
    committer: Mutex<Option<JoinHandle<()>>>,
    /// Set by the first failed commit: from then on nothing is taken, and nothing queued is
    /// written, so no acknowledged registration can sit behind a lost one. A restart recovers.
    store_failed: OnceLock<StoreError>,
    status: watch::Sender<Status>,
    /// Weak: a front-end holds the broker, and whoever started it holds the front-end.
    frontends: RwLock<Vec<Weak<dyn Frontend>>>,
    /// Event types routed and never stored (`volatile.rs`).
    volatile: volatile::Volatile,
    /// Rules on events' contents that front-ends added (`rules.rs`).
    rules: RwLock<Vec<Arc<dyn PayloadRule>>>,
    /// Recently imported event ids (`import.rs`).
    window: Mutex<Window>,
    /// The number of the store's newest admission log entry, once committed: federation links
    /// wait on it for more to send.
    admitted: watch::Sender<u64>,
    /// Store queries running at once: one core fewer than the machine has (at least one), so
    /// that queries, however many, leave a core to taking and storing events.
    query_slots: tokio::sync::Semaphore,
    pub query_counters: Arc<queries::QueryCounters>,
    pub counters: Counters,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("config", &self.config).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Broker {
    /// Opens the broker over `store`: rebuilds the latest table, continues instance numbers under
    /// a new gateway session, and starts the committer. Its status is `starting` until the
    /// gateway sets it.
    pub fn start(store: Arc<dyn EventStore>, config: BrokerConfig) -> Result<Arc<Self>, StoreError> {
        let latest = Latest::new(store.latest()?);
        let admitted = store.last_admitted()?;
        let last = store.last_id(config.server_id)?;
        // A new session per start (hat-event's rule), and instances keep counting up.
        let last = EventId {
            server: config.server_id,
            session: store.begin_session(config.server_id)?,
            instance: last.map_or(0, |id| id.instance),
        };
        let (to_committer, batches) = mpsc::channel(64);
        let commit = config.commit;
        let import_window = config.import_window;
        let volatile = volatile::Volatile::new(config.volatile.clone());
        let broker = Arc::new(Broker {
            access: config.access.clone(),
            fanout: Fanout::new(config.notify),
            config,
            store: store.clone(),
            ids: tokio::sync::Mutex::new(Ids { last, to_committer: Some(to_committer) }),
            latest,
            committer: Mutex::new(None),
            store_failed: OnceLock::new(),
            status: watch::Sender::new(Status::Starting),
            frontends: RwLock::new(Vec::new()),
            volatile,
            rules: RwLock::new(Vec::new()),
            window: Mutex::new(Window::new(import_window)),
            admitted: watch::Sender::new(admitted),
            query_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1)),
            ),
            query_counters: Arc::default(),
            counters: Counters::default(),
        });
        let committer = tokio::spawn(commit::committer(store, commit, batches, Arc::downgrade(&broker)));
        *lock(&broker.committer) = Some(committer);
        Ok(broker)
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

    /// This gateway's server id in event ids.
    pub fn server_id(&self) -> u64 {
        self.config.server_id
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The number of the newest committed admission log entry, watched (federation links send
    /// what follows what their peer holds).
    pub fn watch_admitted(&self) -> watch::Receiver<u64> {
        self.admitted.subscribe()
    }

    /// Who may do what; front-ends log their clients in against its clients.
    pub fn access(&self) -> &Arc<Access> {
        &self.access
    }

    /// The one fan-out of every front-end's subscribers. A front-end built on
    /// `rivulet_tokio::server` shares it (`ServerOptions::fanout`) and checks subscriptions with
    /// [`Broker::check_subscriptions`]; others call [`Broker::subscribe`].
    pub fn fanout(&self) -> &Arc<Fanout> {
        &self.fanout
    }

    /// Makes a running front-end known: its clients answer [`Broker::call`], and it appears in
    /// [`Broker::report`] and the metrics.
    pub fn attach(&self, frontend: &Arc<dyn Frontend>) {
        self.frontends.write().unwrap_or_else(PoisonError::into_inner).push(Arc::downgrade(frontend));
    }

    /// The running front-ends, in the order they were attached.
    pub fn frontends(&self) -> Vec<Arc<dyn Frontend>> {
        self.frontends.read().unwrap_or_else(PoisonError::into_inner).iter().filter_map(Weak::upgrade).collect()
    }

    /// The patterns of the event types routed and never stored.
    pub fn volatile_patterns(&self) -> &[EventPath] {
        self.volatile.patterns()
    }

    /// Whether `who` may register an event of `event_type` (a type, not a pattern, and within
    /// its ACL). Cheap: front-ends call it for each event as it arrives.
    pub fn check_register(&self, who: &Principal<'_>, event_type: &EventPath) -> Result<(), BrokerError> {
        if let Err(e) = event_type.check_type() {
            return Err(BrokerError::Invalid(format!("{event_type}: {e}")));
        }
        self.denied(who, self.access.check_register(who, event_type))
    }

    /// Whether `who` may hold `patterns` (its whole list): not too many, and within its ACL.
    pub fn check_subscriptions(&self, who: &Principal<'_>, patterns: &[EventPath]) -> Result<(), BrokerError> {
        if patterns.len() > self.config.max_subscriptions {
            let reason = format!(
                "{} subscription patterns, the gateway allows {} per client",
                patterns.len(),
                self.config.max_subscriptions
            );
            tracing::info!(client = %who, "refused: {reason}");
            return Err(BrokerError::Invalid(reason));
        }
        self.denied(who, self.access.check_subscriptions(who, patterns))
    }

    /// A subscriber for `who` with `interest`, once its patterns pass
    /// [`Broker::check_subscriptions`].
    pub fn subscribe(&self, who: &Principal<'_>, interest: Interest) -> Result<Subscriber, BrokerError> {
        self.check_subscriptions(who, &interest.patterns)?;
        Ok(self.fanout.subscribe(interest, who.to_string()))
    }

    /// An ACL refusal is logged; it also goes back to the client.
    fn denied<T>(&self, who: &Principal<'_>, result: Result<T, Denied>) -> Result<T, BrokerError> {
        result.map_err(|denied| {
            tracing::info!(client = %who, "refused: {denied}");
            BrokerError::from(denied)
        })
    }
}

#[cfg(test)]
mod tests;
