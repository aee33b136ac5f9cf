//! `rivulet gateway`: opens the store, starts the broker and its front-ends and listens until
//! Ctrl-C or SIGTERM, then stops in order: `stopping` announced, no new clients, every client of
//! every front-end closed (ERQ/EOF) after its registrations in progress are stored, the last group
//! commit written, the store closed.

use std::sync::Arc;
use std::time::Duration;

use rivulet_core::model::Status;
use rivulet_tokio::fanout::FanoutLimits;

use crate::access::Access;
use crate::access::Clients;
use crate::broker::{Broker, BrokerConfig, CommitPolicy};
use crate::config::StoreEngine;
use crate::config::{GatewayArgs, Settings};
use crate::federation::Federation;
use crate::files::FileStore;
use crate::frontend::Frontend;
use crate::frontend::hat::HatFrontend;
use crate::frontend::kelvin::KelvinFrontend;
use crate::frontend::native::{self, NativeFrontend};
use crate::frontend::streamsea::StreamSeaFrontend;
use crate::store::{EventStore, LogStore, RedbStore};

/// Runs the gateway until Ctrl-C or SIGTERM.
pub async fn run(args: GatewayArgs) -> Result<(), String> {
    let settings = Settings::load(&args)?;
    if let Some(why) = settings.exposure() {
        return Err(why);
    }
    if let Some(warning) = settings.metrics_exposure() {
        tracing::warn!("{warning}");
    }
    let gateway = Gateway::start(&settings).await?;
    crate::out!("rivulet gateway listening on {} (store {})", gateway.local_addr(), gateway.store_path);
    if !settings.volatile.is_empty() {
        let patterns: Vec<String> = settings.volatile.iter().map(ToString::to_string).collect();
        crate::out!("volatile (routed, never stored): {}", patterns.join(", "));
    }
    // With clients configured, the hints log in (`--name`, and the token from RIVULET_TOKEN).
    let login = match settings.clients.len() {
        0 => String::new(),
        n => {
            crate::out!(
                "  clients:   {n} configured; each logs in with --name NAME and --token TOKEN (or RIVULET_TOKEN)"
            );
            " --name NAME".to_string()
        }
    };
    crate::out!("  subscribe: rivulet sub --gateway {}{login} 'sensor/*'", gateway.local_addr());
    crate::out!("  publish:   rivulet pub --gateway {}{login} sensor/room1/temp 21.5", gateway.local_addr());
    for frontend in gateway.broker.frontends() {
        for listener in frontend.listeners() {
            let addr = listener.addr;
            let _printed = match (frontend.name(), listener.kind) {
                (native::NAME, "tcp") => true,
                (native::NAME, "tls") => {
                    crate::out!("  TLS:       {addr} (clients: rivulet sub --gateway {addr} --tls-ca CA.pem ...)")
                }
                (native::NAME, "serial") => {
                    crate::out!("  serial:    {addr} (serial lines over TCP, e.g. qemu -serial tcp:{addr})")
                }
                (crate::frontend::hat::NAME, "tls") => {
                    crate::out!(
                        "  hat TLS:   {addr} (hat-event Eventer clients: hat.event.eventer.connect(..., ssl=ctx))"
                    )
                }
                (crate::frontend::hat::NAME, _) => {
                    crate::out!("  hat:       {addr} (hat-event Eventer clients: hat.event.eventer.connect)")
                }
                (crate::frontend::streamsea::NAME, _) => {
                    crate::out!("  streamsea: http://{addr}/api/v1 (stream-sea clients: remote_host, remote_port)")
                }
                (crate::frontend::chaski::NAME, "tcp") => crate::out!(
                    "  chaski:    {addr} (Chaski nodes, TCP and UDP, with the JSON codec: node.connect('{}', {}))",
                    addr.ip(),
                    addr.port()
                ),
                (crate::frontend::chaski::NAME, _) => true,
                (crate::frontend::kelvin::NAME, _) => crate::out!(
                    "  kelvin:    {addr} (Kelvin apps: KELVIN_STREAM_IP={} KELVIN_STREAM_PORT={})",
                    addr.ip(),
                    addr.port()
                ),
                (name, kind) => crate::out!("  {name}:    {addr} ({kind})"),
            };
        }
    }
    if let Some(metrics) = gateway.metrics_addr() {
        crate::out!("  metrics:   http://{metrics}/metrics");
    }
    crate::out!("  stop with Ctrl-C");
    shutdown_signal().await;
    crate::out!("rivulet gateway stopping");
    gateway.stop().await;
    crate::out!("rivulet gateway stopped");
    Ok(())
}

/// A running gateway: the broker and its front-ends.
pub struct Gateway {
    broker: Arc<Broker>,
    native: Arc<NativeFrontend>,
    /// The other front-ends that run (the broker holds them weakly).
    others: Vec<Arc<dyn Frontend>>,
    federation: Arc<Federation>,
    files: Arc<FileStore>,
    store_path: String,
    metrics_addr: Option<std::net::SocketAddr>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Opens the store, starts the broker and every front-end; the gateway is operational when
    /// this returns.
    pub async fn start(settings: &Settings) -> Result<Gateway, String> {
        // A mistake in `[[clients]]` or a front-end's files stops the start before anything is
        // created.
        let clients = Arc::new(Clients::from_entries(&settings.clients)?);
        let native = NativeFrontend::configure(settings)?;
        let hat = HatFrontend::configure(settings)?;
        if let Some(limit) = crate::limits::raise_open_files()
            && limit < settings.max_connections as u64 + 64
        {
            tracing::warn!(
                "the open-files limit is {limit}, below max_connections ({}): connections past it fail to \
                 be accepted; raise the hard limit (`ulimit -Hn`, systemd's LimitNOFILE)",
                settings.max_connections
            );
        }
        std::fs::create_dir_all(&settings.data)
            .map_err(|e| format!("cannot create the data directory {}: {e}", settings.data.display()))?;
        let (store, store_path) = open_store(settings)?;
        let config = BrokerConfig {
            server_id: settings.server_id,
            commit: CommitPolicy { max_events: settings.commit_events, max_delay: settings.commit_delay },
            max_subscriptions: settings.max_subscriptions,
            notify: FanoutLimits {
                events: settings.notify_queue,
                bytes: settings.notify_queue_bytes,
                total_bytes: settings.notify_total_bytes,
                high_water: settings.notify_high_water,
                stall: settings.notify_stall,
            },
            access: Arc::new(Access::new(clients)),
            import_window: settings.federation.window,
            query_scan: settings.query_scan,
            volatile: settings.volatile.clone(),
        };
        let broker = Broker::start(store.clone(), config).map_err(|e| format!("store: {e}"))?;
        let files =
            Arc::new(FileStore::open(settings.data.join("files"), settings.files.clone(), settings.max_packet)?);
        let native = NativeFrontend::start(native, &broker, files.clone()).await?;
        let mut others: Vec<Arc<dyn Frontend>> = Vec::new();
        if let Some(hat) = hat {
            others.push(HatFrontend::start(hat, settings, &broker).await?);
        }
        if let Some(kelvin) = KelvinFrontend::start(settings, &broker).await? {
            others.push(kelvin);
        }
        if let Some(streamsea) = StreamSeaFrontend::start(settings, &broker).await? {
            others.push(streamsea);
        }
        if let Some(chaski) = crate::frontend::chaski::ChaskiFrontend::start(settings, &broker, &files).await? {
            others.push(chaski);
        }
        // Always running: any gateway may be dialed by a peer; `--peer` makes it dial too.
        let federation = Federation::start(
            &broker,
            settings.federation.clone(),
            native.server().clone(),
            files.clone(),
            settings.max_packet,
        );
        native.serve_federation(federation.clone());
        let attached: Arc<dyn Frontend> = federation.clone();
        broker.attach(&attached);
        let mut background = vec![tokio::spawn(crate::memory::trim_after_churn(broker.clone()))];
        let mut metrics_addr = None;
        if settings.retain_age.is_some() || settings.retain_events.is_some() {
            background.push(tokio::spawn(retention(store, settings.clone())));
        }
        if let Some(addr) = settings.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot serve metrics on {addr}: {e} (try another --metrics address)"))?;
            metrics_addr = listener.local_addr().ok();
            background.push(tokio::spawn(crate::metrics::serve(listener, broker.clone())));
        }
        // A commit may have failed already (the status is standby then, and stays so).
        if broker.store_failed().is_none() {
            broker.set_status(Status::Operational).await;
        }
        Ok(Gateway { broker, native, others, federation, files: files.clone(), store_path, metrics_addr, background })
    }

    /// Where Rivulet clients connect over plain TCP.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.native.server().local_addr()
    }

    /// Where the native TLS listener is, if there is one.
    pub fn tls_addr(&self) -> Option<std::net::SocketAddr> {
        self.native.addr("tls")
    }

    /// Where the serial-over-TCP listener is, if there is one.
    pub fn serial_addr(&self) -> Option<std::net::SocketAddr> {
        self.native.addr("serial")
    }

    /// Where hat clients connect over plain TCP, if they can.
    pub fn hat_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener(crate::frontend::hat::NAME, "tcp")
    }

    /// Where stream-sea clients call, if they can.
    pub fn streamsea_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener(crate::frontend::streamsea::NAME, "http")
    }

    /// Where Kelvin apps connect, if they can.
    pub fn kelvin_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener(crate::frontend::kelvin::NAME, "tcp")
    }

    /// Where Chaski nodes connect (TCP, and UDP on the same port), if they can.
    pub fn chaski_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener(crate::frontend::chaski::NAME, "tcp")
    }

    /// Where hat clients connect over TLS, if they can.
    pub fn hat_tls_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener(crate::frontend::hat::NAME, "tls")
    }

    /// The address of another front-end's listener of `kind`.
    fn listener(&self, frontend: &str, kind: &str) -> Option<std::net::SocketAddr> {
        let frontend = self.others.iter().find(|f| f.name() == frontend)?;
        frontend.listeners().into_iter().find(|l| l.kind == kind).map(|l| l.addr)
    }

    /// Where the metrics endpoint listens, if it does.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Links to other gateways.
    pub fn federation(&self) -> &Arc<Federation> {
        &self.federation
    }

    /// The gateway's files (`<data>/files`).
    pub fn files(&self) -> &Arc<FileStore> {
        &self.files
    }

    /// The native front-end (the Rivulet protocol).
    pub fn native(&self) -> &Arc<NativeFrontend> {
        &self.native
    }

    /// Stops in order; see the module doc.
    pub async fn stop(self) {
        for task in &self.background {
            task.abort();
        }
        self.broker.set_status(Status::Stopping).await;
        // Let the status reach the clients before their links close.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for frontend in self.broker.frontends() {
            frontend.stop().await;
        }
        self.broker.close().await;
    }
}

/// Drops events beyond the retention limits, at start and then every `retain_every`.
async fn retention(store: Arc<dyn EventStore>, settings: Settings) {
    let mut every = tokio::time::interval(settings.retain_every);
    loop {
        every.tick().await;
        let older_than = settings.retain_age.map(|age| {
            let cutoff = std::time::SystemTime::now().checked_sub(age).unwrap_or(std::time::UNIX_EPOCH);
            let micros = cutoff.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros();
            rivulet_core::model::Timestamp::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
        });
        let store = store.clone();
        let max_events = settings.retain_events;
        match tokio::task::spawn_blocking(move || store.retain(older_than, max_events)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!("retention dropped {removed} events"),
            Ok(Err(e)) => tracing::error!("retention failed: {e}"),
            Err(e) => tracing::error!("retention task failed: {e}"),
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The store `settings.store` names, in the data directory, and where it is. A data directory that holds the
/// other engine's store is refused rather than started empty beside it.
fn open_store(settings: &Settings) -> Result<(Arc<dyn EventStore>, String), String> {
    let log = settings.data.join("events.log");
    let redb = settings.data.join("events.redb");
    let (path, other, flag) = match settings.store {
        StoreEngine::Log => (&log, &redb, "redb"),
        StoreEngine::Redb => (&redb, &log, "log"),
    };
    if other.exists() && !path.exists() {
        return Err(format!(
            "{} holds a {flag} store; start the gateway with `--store {flag}` (or `[store] engine = \"{flag}\"`) to \
             serve it, or give it another data directory",
            other.display()
        ));
    }
    let store: Arc<dyn EventStore> = match settings.store {
        StoreEngine::Log => Arc::new(LogStore::open(path).map_err(|e| e.to_string())?),
        StoreEngine::Redb => Arc::new(
            RedbStore::open_with_cache(path, settings.store_cache_mb.saturating_mul(1 << 20))
                .map_err(|e| e.to_string())?,
        ),
    };
    Ok((store, path.display().to_string()))
}
