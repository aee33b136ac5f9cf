//! The gateway's settings: built-in defaults, then a TOML file (`--config FILE`), then
//! command-line flags, each overriding the one before. [`Settings`] is the result the gateway
//! runs with: the broker's and store's settings, limits, and one section per front-end
//! ([`NativeSettings`], `[native]` in the file). `rivulet gateway --help` and
//! `docs/GATEWAY.md` list every setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod chaski;
mod federation;
mod files;
mod kelvin;
mod streamsea;
pub use chaski::ChaskiSettings;
pub use federation::{FederationSettings, PeerEntry};
pub use files::FilesSettings;
pub use kelvin::{KelvinAsset, KelvinDatastream, KelvinSettings};
pub use streamsea::{StreamMapping, StreamSeaSettings};

/// Where the gateway listens when nothing says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7780";
/// The largest `--max-packet` the gateway takes: 16 MiB.
pub const MAX_MAX_PACKET: u32 = 16 << 20;

/// `rivulet gateway` flags. Each one left out falls back to the config file, then to the default
/// shown in its help.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GatewayArgs {
    /// A TOML file with any of the settings below (flags given here win over the file).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address for Rivulet clients: the native front-end [default: 127.0.0.1:7780].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the event store, created if missing [default: rivulet-data].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// This gateway's server id in event ids [default: 1].
    #[arg(long, value_name = "N")]
    pub server_id: Option<u64>,
    /// Write a group commit (one fsync) once this many events wait [default: 1000].
    #[arg(long, value_name = "N")]
    pub commit_events: Option<usize>,
    /// ...or this many milliseconds after the first one arrived [default: 5].
    #[arg(long, value_name = "MS")]
    pub commit_ms: Option<u64>,
    /// Notifications queued per client; a client that falls further behind is disconnected
    /// [default: 65536].
    #[arg(long, value_name = "N")]
    pub notify_queue: Option<usize>,
    /// Notifications queued per client, in MiB; a client that falls further behind is
    /// disconnected [default: 32].
    #[arg(long, value_name = "MIB")]
    pub notify_queue_mb: Option<u64>,
    /// Notifications queued for all clients together, in MiB; past it the client holding the
    /// most is disconnected [default: 256].
    #[arg(long, value_name = "MIB")]
    pub notify_total_mb: Option<u64>,
    /// Notifications queued for one client (or half of --notify-queue-mb) past which publishers
    /// wait until it has taken half of them, rather than see it disconnected [default: 8192].
    #[arg(long, value_name = "N")]
    pub notify_high_water: Option<usize>,
    /// A client past that mark that takes no notification for this long is disconnected, and
    /// publishers go on; 0: publishers never wait, a client is disconnected at the queue's
    /// limits [default: 2000].
    #[arg(long, value_name = "MS")]
    pub notify_stall_ms: Option<u64>,
    /// Stored events one query page may look at; a query that finds nothing in them is refused
    /// (narrow its time range), one that found some returns them with more to follow
    /// [default: 1000000].
    #[arg(long, value_name = "N")]
    pub query_scan: Option<u64>,
    /// Clients connected at once; more are refused [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// The longest keepalive a client may ask for, in seconds: a longer one is cut to this, so a
    /// silent client holds its place at most twice as long [default: 300].
    #[arg(long, value_name = "SECONDS")]
    pub max_keepalive_s: Option<u64>,
    /// Subscription patterns per client [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_subscriptions: Option<usize>,
    /// Event types matching this pattern are volatile (repeatable): routed to the subscribers
    /// connected now and never stored, a registration acknowledged once routed; no history,
    /// no latest, not sent to peer gateways (docs/GATEWAY.md, "Volatile events") [default: none].
    #[arg(long, value_name = "PATTERN")]
    pub volatile: Vec<String>,
    /// Registrations a client may send ahead of the gateway's acknowledgements, which come after
    /// each group commit: with commits of a few ms, this bounds a client's throughput
    /// (window / commit time) [default: 4096].
    #[arg(long, value_name = "N")]
    pub register_window: Option<u16>,
    /// Largest packet a client may send, in bytes [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_packet: Option<u32>,
    /// How events are stored: `log`, an append-only segment log with its indexes in memory
    /// (`<data>/events.log/`), or `redb`, a B-tree file (`<data>/events.redb`) [default: redb].
    #[arg(long, value_name = "ENGINE")]
    pub store: Option<StoreEngine>,
    /// Memory for the redb store's page cache, in MiB [default: 64].
    #[arg(long, value_name = "MIB")]
    pub store_cache_mb: Option<usize>,
    /// Drop stored events older than this (e.g. `30d`, `12h`, `90m`, `3600s`) [default: keep].
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub retain_age: Option<Duration>,
    /// Keep at most this many stored events, dropping the oldest [default: no limit].
    #[arg(long, value_name = "N")]
    pub retain_events: Option<u64>,
    /// Serve Prometheus metrics over HTTP at this address (`/metrics`) [default: off].
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Also listen with TLS at this address (needs --tls-cert and --tls-key) [default: off].
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM file with the TLS certificate chain.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the TLS private key.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Also accept serial lines carried over TCP at this address (COBS + CRC framing; QEMU's
    /// `-serial tcp:ADDR` or a UART-to-TCP bridge connects here) [default: off].
    #[arg(long, value_name = "ADDR")]
    pub serial_listen: Option<SocketAddr>,
    /// Also speak hat-event's Eventer protocol at this address (hat clients usually use port
    /// 23012; tokens travel in clear, so beyond loopback only with --insecure) [default: off].
    #[arg(long, value_name = "ADDR")]
    pub hat_listen: Option<SocketAddr>,
    /// Also speak hat's Eventer protocol over TLS at this address, with --tls-cert and --tls-key
    /// (or the files of the config's [hat.tls] or [native.tls]) [default: off].
    #[arg(long, value_name = "ADDR")]
    pub hat_tls_listen: Option<SocketAddr>,
    /// Also serve Kelvin apps (kelvin-python-sdk's stream, one JSON message per line) at this
    /// address (Kelvin's is 127.0.0.1:49167; no login, so beyond loopback only with --insecure)
    /// [default: off].
    #[arg(long, value_name = "ADDR")]
    pub kelvin_listen: Option<SocketAddr>,
    /// Also serve stream-sea clients (its REST API under /api/v1) at this address (Basic
    /// credentials travel in clear, so beyond loopback only with --insecure) [default: off].
    #[arg(long, value_name = "ADDR")]
    pub streamsea_listen: Option<SocketAddr>,
    /// Also serve Chaski nodes (chaski-confluent's ChaskiStreamer with the JSON codec of
    /// docs/CHASKI.md) at this address, TCP and UDP (no login, so beyond loopback only with
    /// --insecure) [default: off].
    #[arg(long, value_name = "ADDR")]
    pub chaski_listen: Option<SocketAddr>,
    /// Dial this Chaski node (`host:port`, repeatable), as a node's `connect` does; again after
    /// a pause when the link drops.
    #[arg(long, value_name = "ADDR")]
    pub chaski_peer: Vec<String>,
    /// Link to the gateway at this address (its native listener), repeatable: events its
    /// side of the network wants cross over, and the other way round (docs/FEDERATION.md).
    /// Logs in as [federation] name and token.
    #[arg(long, value_name = "ADDR")]
    pub peer: Vec<String>,
    /// Link by itself to gateways whose subscriptions overlap this one's, as it hears of them
    /// (at most [federation] max_links such links, 5 by default).
    #[arg(long)]
    pub discover: bool,
    /// Allow listening on a non-loopback address without client authentication.
    #[arg(long)]
    pub insecure: bool,
}

/// A client the gateway knows: its credential (only a salted hash of it) and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    pub name: String,
    /// Hex salt and stored key, as `rivulet credential NAME` prints them.
    pub salt: String,
    pub stored_key: String,
    /// Event-type patterns it may register; everything when left out.
    pub register: Option<Vec<String>>,
    /// Event-type patterns it may subscribe to and query; everything when left out.
    pub subscribe: Option<Vec<String>>,
    /// Names of the clients whose request handlers it may call through the gateway
    /// (`rivulet request`); every client when left out.
    pub request: Option<Vec<String>>,
    /// Whether it may link as a peer gateway (federation: its events keep their ids, within
    /// its `register` patterns); no when left out.
    #[serde(default)]
    pub federate: bool,
    /// What it may do with the gateway's files (`rivulet send-file`, `files`, `fetch-file`):
    /// `"write"` (send and fetch; when left out), `"read"` or `"none"`.
    #[serde(default)]
    pub files: FileAccess,
}

/// What a client may do with the gateway's files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileAccess {
    None,
    Read,
    #[default]
    Write,
}

/// The config file, as written. Every field may be left out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data: Option<PathBuf>,
    server_id: Option<u64>,
    insecure: Option<bool>,
    metrics: Option<SocketAddr>,
    /// Patterns of the volatile event types.
    #[serde(default)]
    volatile: Vec<String>,
    native: Option<NativeSection>,
    hat: Option<HatSection>,
    kelvin: Option<kelvin::KelvinSection>,
    streamsea: Option<streamsea::StreamSeaSection>,
    federation: Option<federation::FederationSection>,
    chaski: Option<chaski::ChaskiSection>,
    files: Option<files::FilesSection>,
    /// Before `[native]`: the same as its `listen`, `serial_listen` and `[native.tls]`.
    listen: Option<SocketAddr>,
    serial_listen: Option<SocketAddr>,
    #[serde(default)]
    commit: CommitSection,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    retention: RetentionSection,
    #[serde(default)]
    store: StoreSection,
    tls: Option<TlsSection>,
    #[serde(default)]
    clients: Vec<ClientEntry>,
}

/// `[native]`: the Rivulet protocol's listeners.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeSection {
    listen: Option<SocketAddr>,
    serial_listen: Option<SocketAddr>,
    tls: Option<TlsSection>,
}

/// `[hat]`: hat-event's Eventer protocol.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HatSection {
    listen: Option<SocketAddr>,
    respond: Option<HatRespond>,
    ping_delay_s: Option<u64>,
    ping_timeout_s: Option<u64>,
    max_frame: Option<usize>,
    tls: Option<TlsSection>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitSection {
    events: Option<usize>,
    ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    connections: Option<usize>,
    max_keepalive_s: Option<u64>,
    subscriptions: Option<usize>,
    register_window: Option<u16>,
    max_packet: Option<u32>,
    notify_queue: Option<usize>,
    notify_queue_mb: Option<u64>,
    notify_total_mb: Option<u64>,
    notify_high_water: Option<usize>,
    notify_stall_ms: Option<u64>,
    query_scan: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    engine: Option<StoreEngine>,
    cache_mb: Option<usize>,
}

/// How the gateway stores events (docs/GATEWAY.md "Stores").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreEngine {
    /// An append-only segment log, one write and one fsync per group commit, indexes in memory.
    Log,
    /// redb: a copy-on-write B-tree file, indexes on disk behind a page cache.
    Redb,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSection {
    max_age: Option<String>,
    max_events: Option<u64>,
    /// How often retention runs, in seconds.
    every_s: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
}

/// The TLS listener's address and PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl From<TlsSection> for TlsSettings {
    fn from(TlsSection { listen, cert, key }: TlsSection) -> Self {
        TlsSettings { listen, cert, key }
    }
}

/// The native front-end's listeners: the Rivulet protocol over TCP, TLS and serial lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeSettings {
    pub listen: SocketAddr,
    pub tls: Option<TlsSettings>,
    pub serial_listen: Option<SocketAddr>,
}

impl Default for NativeSettings {
    fn default() -> Self {
        NativeSettings { listen: SocketAddr::from(([127, 0, 0, 1], 7780)), tls: None, serial_listen: None }
    }
}

/// The hat front-end: hat-event's Eventer protocol (chatter + SBS) for `hat.event.eventer`
/// clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HatSettings {
    /// Plain TCP; off when `None`.
    pub listen: Option<SocketAddr>,
    /// TLS; off when `None`.
    pub tls: Option<TlsSettings>,
    /// Ping a silent client after this long (zero: never); hat's default, 20 s.
    pub ping_delay: Duration,
    /// Close a client that answers nothing this long after a ping; hat's default, 20 s.
    pub ping_timeout: Duration,
    /// Largest frame a client may send, in bytes (hat itself has no limit).
    pub max_frame: usize,
    /// When a register-with-response is answered.
    pub respond: HatRespond,
}

/// When the hat front-end answers a register-with-response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HatRespond {
    /// Once the events are stored durably (the default): an answered registration survives a
    /// crash, and a store failure is hat's `failure`.
    #[default]
    Durable,
    /// Once the events have their ids, before the commit, as hat's own server answers: faster
    /// for a client that waits for each answer, and what it was told may yet be lost in a crash.
    Registered,
}

impl Default for HatSettings {
    fn default() -> Self {
        HatSettings {
            listen: None,
            tls: None,
            ping_delay: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(20),
            max_frame: 4 << 20,
            respond: HatRespond::Durable,
        }
    }
}

/// What the gateway runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The native front-end (`[native]`).
    pub native: NativeSettings,
    /// The hat front-end (`[hat]`).
    pub hat: HatSettings,
    /// The Kelvin front-end (`[kelvin]`).
    pub kelvin: KelvinSettings,
    /// The stream-sea front-end (`[streamsea]`).
    pub streamsea: StreamSeaSettings,
    /// Links to other gateways (`[federation]`, `--peer`).
    pub federation: FederationSettings,
    /// The Chaski front-end (`[chaski]`).
    pub chaski: ChaskiSettings,
    /// The file store's limits (`[files]`).
    pub files: FilesSettings,
    pub data: PathBuf,
    pub store: StoreEngine,
    /// The redb store's page cache, in MiB.
    pub store_cache_mb: usize,
    pub server_id: u64,
    pub commit_events: usize,
    pub commit_delay: Duration,
    pub notify_queue: usize,
    /// Bytes of notifications queued per client, and for all of them.
    pub notify_queue_bytes: u64,
    pub notify_total_bytes: u64,
    /// Notifications queued for one client past which publishers wait for it.
    pub notify_high_water: usize,
    /// How long a client publishers wait for may take nothing before it is cut off.
    pub notify_stall: Duration,
    /// Stored events one query page may look at.
    pub query_scan: u64,
    pub max_connections: usize,
    /// The longest keepalive a client may ask for.
    pub max_keepalive: Duration,
    pub max_subscriptions: usize,
    /// Patterns of the event types routed and never stored.
    pub volatile: Vec<rivulet_core::owned::EventPath>,
    pub register_window: u16,
    pub max_packet: u32,
    pub retain_age: Option<Duration>,
    pub retain_events: Option<u64>,
    pub retain_every: Duration,
    pub metrics: Option<SocketAddr>,
    pub insecure: bool,
    pub clients: Vec<ClientEntry>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            native: NativeSettings::default(),
            hat: HatSettings::default(),
            kelvin: KelvinSettings::default(),
            streamsea: StreamSeaSettings::default(),
            federation: FederationSettings::default(),
            chaski: ChaskiSettings::default(),
            files: FilesSettings::default(),
            data: PathBuf::from("rivulet-data"),
            store: StoreEngine::Redb,
            store_cache_mb: 64,
            server_id: 1,
            commit_events: 1000,
            commit_delay: Duration::from_millis(5),
            notify_queue: 65_536,
            notify_queue_bytes: 32 << 20,
            notify_total_bytes: 256 << 20,
            notify_high_water: 8192,
            notify_stall: Duration::from_secs(2),
            query_scan: 1_000_000,
            max_connections: 10_000,
            max_keepalive: Duration::from_secs(300),
            max_subscriptions: 1000,
            volatile: Vec::new(),
            register_window: 4096,
            max_packet: 65_536,
            retain_age: None,
            retain_events: None,
            retain_every: Duration::from_secs(60),
            metrics: None,
            insecure: false,
            clients: Vec::new(),
        }
    }
}

impl Settings {
    /// Defaults, then the file `args.config` names (if any), then the flags.
    pub fn load(args: &GatewayArgs) -> Result<Settings, String> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => File::default(),
        };
        let mut settings = Settings::from_file(file).map_err(|e| match &args.config {
            Some(path) => format!("{}: {e}", path.display()),
            None => e,
        })?;
        settings.apply(args)?;
        settings.check()?;
        Ok(settings)
    }

    fn from_file(file: File) -> Result<Settings, String> {
        let d = Settings::default();
        let retain_age = file.retention.max_age.as_deref().map(parse_age).transpose()?;
        let native = native_section(&file)?;
        let hat = file.hat.clone().unwrap_or_default();
        Ok(Settings {
            kelvin: KelvinSettings::from_section(file.kelvin.clone())?,
            streamsea: StreamSeaSettings::from_section(file.streamsea.clone()),
            federation: FederationSettings::from_section(file.federation.clone()),
            chaski: ChaskiSettings::from_section(file.chaski.clone()),
            files: FilesSettings::from_section(file.files.clone()),
            hat: HatSettings {
                listen: hat.listen,
                tls: hat.tls.map(TlsSettings::from),
                ping_delay: hat.ping_delay_s.map_or(d.hat.ping_delay, Duration::from_secs),
                ping_timeout: hat.ping_timeout_s.map_or(d.hat.ping_timeout, Duration::from_secs),
                max_frame: hat.max_frame.unwrap_or(d.hat.max_frame),
                respond: hat.respond.unwrap_or(d.hat.respond),
            },
            native: NativeSettings {
                listen: native.listen.unwrap_or(d.native.listen),
                tls: native.tls.map(TlsSettings::from),
                serial_listen: native.serial_listen,
            },
            data: file.data.unwrap_or(d.data),
            store: file.store.engine.unwrap_or(d.store),
            store_cache_mb: file.store.cache_mb.unwrap_or(d.store_cache_mb),
            server_id: file.server_id.unwrap_or(d.server_id),
            commit_events: file.commit.events.unwrap_or(d.commit_events),
            commit_delay: file.commit.ms.map_or(d.commit_delay, Duration::from_millis),
            notify_queue: file.limits.notify_queue.unwrap_or(d.notify_queue),
            notify_queue_bytes: file.limits.notify_queue_mb.map_or(d.notify_queue_bytes, mib),
            notify_total_bytes: file.limits.notify_total_mb.map_or(d.notify_total_bytes, mib),
            notify_high_water: file.limits.notify_high_water.unwrap_or(d.notify_high_water),
            notify_stall: file.limits.notify_stall_ms.map_or(d.notify_stall, Duration::from_millis),
            query_scan: file.limits.query_scan.unwrap_or(d.query_scan),
            max_connections: file.limits.connections.unwrap_or(d.max_connections),
            max_keepalive: file.limits.max_keepalive_s.map_or(d.max_keepalive, Duration::from_secs),
            max_subscriptions: file.limits.subscriptions.unwrap_or(d.max_subscriptions),
            volatile: volatile_patterns(&file.volatile)?,
            register_window: file.limits.register_window.unwrap_or(d.register_window),
            max_packet: file.limits.max_packet.unwrap_or(d.max_packet),
            retain_age,
            retain_events: file.retention.max_events,
            retain_every: file.retention.every_s.map_or(d.retain_every, Duration::from_secs),
            metrics: file.metrics,
            insecure: file.insecure.unwrap_or(false),
            clients: file.clients,
        })
    }

    fn apply(&mut self, args: &GatewayArgs) -> Result<(), String> {
        set(&mut self.native.listen, args.listen);
        set(&mut self.data, args.data.clone());
        set(&mut self.store, args.store);
        set(&mut self.store_cache_mb, args.store_cache_mb);
        set(&mut self.server_id, args.server_id);
        set(&mut self.commit_events, args.commit_events);
        set(&mut self.commit_delay, args.commit_ms.map(Duration::from_millis));
        set(&mut self.notify_queue, args.notify_queue);
        set(&mut self.notify_queue_bytes, args.notify_queue_mb.map(mib));
        set(&mut self.notify_total_bytes, args.notify_total_mb.map(mib));
        set(&mut self.notify_high_water, args.notify_high_water);
        set(&mut self.notify_stall, args.notify_stall_ms.map(Duration::from_millis));
        set(&mut self.query_scan, args.query_scan);
        set(&mut self.max_connections, args.max_connections);
        if let Some(seconds) = args.max_keepalive_s {
            self.max_keepalive = Duration::from_secs(seconds);
        }
        set(&mut self.max_subscriptions, args.max_subscriptions);
        for pattern in volatile_patterns(&args.volatile)? {
            if !self.volatile.contains(&pattern) {
                self.volatile.push(pattern);
            }
        }
        set(&mut self.register_window, args.register_window);
        set(&mut self.max_packet, args.max_packet);
        self.retain_age = args.retain_age.or(self.retain_age);
        self.retain_events = args.retain_events.or(self.retain_events);
        self.metrics = args.metrics.or(self.metrics);
        self.native.serial_listen = args.serial_listen.or(self.native.serial_listen);
        self.hat.listen = args.hat_listen.or(self.hat.listen);
        self.kelvin.listen = args.kelvin_listen.or(self.kelvin.listen);
        self.streamsea.listen = args.streamsea_listen.or(self.streamsea.listen);
        self.chaski.listen = args.chaski_listen.or(self.chaski.listen);
        for peer in &args.chaski_peer {
            if !self.chaski.peers.contains(peer) {
                self.chaski.peers.push(peer.clone());
            }
        }
        self.federation.add_peers(&args.peer);
        self.federation.discover |= args.discover;
        self.insecure |= args.insecure;
        self.apply_tls(args)
    }

    /// `--tls-listen`, `--hat-tls-listen` and the PEM files they share; flags complete what the
    /// file gives.
    fn apply_tls(&mut self, args: &GatewayArgs) -> Result<(), String> {
        let files = args.tls_cert.is_some() || args.tls_key.is_some();
        // --tls-cert and --tls-key with only --hat-tls-listen are the hat listener's.
        let native =
            args.tls_listen.is_some() || (files && (self.native.tls.is_some() || args.hat_tls_listen.is_none()));
        if native {
            let file = self.native.tls.clone();
            let listen = args.tls_listen.or(file.as_ref().map(|t| t.listen));
            let cert = args.tls_cert.clone().or(file.as_ref().map(|t| t.cert.clone()));
            let key = args.tls_key.clone().or(file.map(|t| t.key));
            match (listen, cert, key) {
                (Some(listen), Some(cert), Some(key)) => self.native.tls = Some(TlsSettings { listen, cert, key }),
                _ => return Err("TLS needs all three of --tls-listen, --tls-cert and --tls-key".into()),
            }
        }
        if let Some(listen) = args.hat_tls_listen {
            // The files: the flags, else [hat.tls]'s, else the native listener's.
            let file = self.hat.tls.clone().or(self.native.tls.clone());
            let cert = args.tls_cert.clone().or(file.as_ref().map(|t| t.cert.clone()));
            let key = args.tls_key.clone().or(file.map(|t| t.key));
            match (cert, key) {
                (Some(cert), Some(key)) => self.hat.tls = Some(TlsSettings { listen, cert, key }),
                _ => return Err("--hat-tls-listen needs --tls-cert and --tls-key (or [hat.tls] in the config)".into()),
            }
        }
        Ok(())
    }

    /// Values that cannot work, refused before anything starts.
    fn check(&self) -> Result<(), String> {
        let positive = [
            ("commit events", self.commit_events),
            ("notify queue", self.notify_queue),
            ("notify queue MiB", usize::try_from(self.notify_queue_bytes).unwrap_or(usize::MAX)),
            ("notify total MiB", usize::try_from(self.notify_total_bytes).unwrap_or(usize::MAX)),
            ("notify high water", self.notify_high_water),
            ("query scan", usize::try_from(self.query_scan).unwrap_or(usize::MAX)),
            ("max connections", self.max_connections),
            ("max keepalive", usize::try_from(self.max_keepalive.as_secs()).unwrap_or(usize::MAX)),
            ("max subscriptions", self.max_subscriptions),
            ("register window", usize::from(self.register_window)),
        ];
        if let Some((what, _)) = positive.iter().find(|(_, n)| *n == 0) {
            return Err(format!("{what} must be at least 1"));
        }
        if !self.notify_stall.is_zero() && self.notify_stall < Duration::from_millis(10) {
            return Err(format!(
                "notify stall {} ms is too short: at least 10 ms (or 0: publishers never wait)",
                self.notify_stall.as_millis()
            ));
        }
        if self.hat.max_frame < 1024 {
            return Err(format!("[hat] max_frame {} is too small: at least 1024 bytes", self.hat.max_frame));
        }
        self.kelvin.check(&self.clients)?;
        self.streamsea.check()?;
        self.federation.check()?;
        self.chaski.check(&self.clients)?;
        if self.max_packet < 1024 {
            return Err(format!("max packet {} is too small: at least 1024 bytes", self.max_packet));
        }
        if self.max_packet > MAX_MAX_PACKET {
            return Err(format!(
                "max packet {} is too large: at most {MAX_MAX_PACKET} bytes (16 MiB; every connection's receive \
                 buffer grows to it)",
                self.max_packet
            ));
        }
        if self.retain_every.is_zero() {
            return Err("retention every_s must be at least 1".into());
        }
        let mut names: Vec<&str> = self.clients.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("client {:?} is configured twice", twice[0]));
        }
        Ok(())
    }

    /// Every address a front-end would listen on: the front-end's name, the flag that sets
    /// it, the address, and why it must stay on loopback (without `--insecure`), if it must.
    pub fn listeners(&self) -> Vec<(&'static str, &'static str, SocketAddr, Option<&'static str>)> {
        let open = self.clients.is_empty().then_some(
            "without client authentication: add clients to the config (`rivulet credential NAME` prints an entry)",
        );
        let native = self.native.addresses().into_iter();
        let native = native.map(|(flag, addr)| (crate::frontend::native::NAME, flag, addr, open));
        let in_clear = "hat clients send their names and tokens in clear (--hat-tls-listen does not)";
        let hat = self.hat.listen.map(|addr| (crate::frontend::hat::NAME, "--hat-listen", addr, Some(in_clear)));
        let hat_tls = self.hat.tls.as_ref().map(|t| (crate::frontend::hat::NAME, "--hat-tls-listen", t.listen, open));
        let no_login = "Kelvin apps have no login: whoever reaches it reads and writes as [kelvin] client";
        let kelvin =
            self.kelvin.listen.map(|addr| (crate::frontend::kelvin::NAME, "--kelvin-listen", addr, Some(no_login)));
        let basic = "stream-sea clients send their ids and secrets in clear (Basic authentication)";
        let streamsea = self
            .streamsea
            .listen
            .map(|addr| (crate::frontend::streamsea::NAME, "--streamsea-listen", addr, Some(basic)));
        let no_chaski_login = "Chaski nodes have no login: whoever reaches it reads and writes as [chaski] client";
        let chaski = self
            .chaski
            .listen
            .map(|addr| (crate::frontend::chaski::NAME, "--chaski-listen", addr, Some(no_chaski_login)));
        native.chain(hat).chain(hat_tls).chain(kelvin).chain(streamsea).chain(chaski).collect()
    }

    /// A warning for the operator, if the metrics endpoint listens beyond loopback: it has no
    /// authentication (as Prometheus exporters go), so that is allowed, and said.
    pub fn metrics_exposure(&self) -> Option<String> {
        let addr = self.metrics.filter(|addr| !addr.ip().is_loopback())?;
        Some(format!(
            "the metrics endpoint listens on {addr} (--metrics) without authentication: whoever reaches it reads the \
             gateway's counters and client counts; keep it behind a firewall or on 127.0.0.1"
        ))
    }

    /// Why the gateway refuses to start with these settings: a front-end listening beyond
    /// loopback where its clients' credentials are not safe, unless `insecure` says that is
    /// wanted.
    pub fn exposure(&self) -> Option<String> {
        if self.insecure {
            return None;
        }
        let (frontend, flag, first, why) = self
            .listeners()
            .into_iter()
            .filter(|(_, _, addr, _)| !addr.ip().is_loopback())
            .find_map(|(frontend, flag, addr, why)| why.map(|why| (frontend, flag, addr, why)))?;
        Some(format!(
            "refusing to listen on {first} ({flag}, the {frontend} front-end) {why}; listen on 127.0.0.1, or pass \
             --insecure"
        ))
    }
}

/// The `[native]` section, or (files written before it) the top-level `listen`,
/// `serial_listen` and `[tls]` it took over; a setting given both ways is an error.
fn native_section(file: &File) -> Result<NativeSection, String> {
    let mut native = file.native.clone().unwrap_or_default();
    let twice = |key: &str| format!("`{key}` is set twice: at the top of the file and under [native]; keep [native]'s");
    if let Some(listen) = file.listen {
        if native.listen.is_some() {
            return Err(twice("listen"));
        }
        native.listen = Some(listen);
    }
    if let Some(serial) = file.serial_listen {
        if native.serial_listen.is_some() {
            return Err(twice("serial_listen"));
        }
        native.serial_listen = Some(serial);
    }
    if let Some(tls) = &file.tls {
        if native.tls.is_some() {
            return Err("`[tls]` is set twice: at the top of the file and as [native.tls]; keep [native.tls]".into());
        }
        native.tls = Some(tls.clone());
    }
    Ok(native)
}

fn read_file(path: &Path) -> Result<File, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
}

/// The volatile patterns as written, each checked as a subscription pattern is.
fn volatile_patterns(patterns: &[String]) -> Result<Vec<rivulet_core::owned::EventPath>, String> {
    patterns
        .iter()
        .map(|p| rivulet_core::owned::EventPath::parse_pattern(p).map_err(|e| format!("volatile pattern {p:?}: {e}")))
        .collect()
}

/// MiB in bytes (saturating: a huge setting is as good as no limit).
fn mib(n: u64) -> u64 {
    n.saturating_mul(1 << 20)
}

/// Overwrites `slot` with a flag that was given.
fn set<T>(slot: &mut T, flag: Option<T>) {
    if let Some(value) = flag {
        *slot = value;
    }
}

/// An age such as `30d`, `12h`, `90m`, `45s` or plain seconds (`3600`).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not an age: write e.g. 30d, 12h, 90m or 3600s"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}, use s, m, h or d")),
    };
    n.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| format!("{text:?} is too long an age"))
}

#[cfg(test)]
mod tests;
