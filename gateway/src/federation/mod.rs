//! Gateway federation (docs/FEDERATION.md): gateways linked with the native protocol form a
//! network, as Chaski's nodes do. A link is a native client connection (the dialing gateway logs
//! in as a client with `federate = true`) carrying the requests of `wire.rs` both ways:
//!
//! - each gateway floods an advert of what its subscribers want (`interest.rs`), so an event
//!   crosses a link only if some gateway beyond it wants it;
//! - each side sends the other its admission log (`link.rs`: local and imported events, in
//!   commit order) from where the other holds it durably: the receiver imports the events with
//!   their ids (the broker drops a copy it already has) and stores how far it got in the same
//!   commit, so a link that breaks, or a gateway killed and restarted, resumes without a gap or
//!   a double;
//! - events carry a TTL (links they may still cross), and the link is pinged for its latency.
//!
//! The federation is a front-end of the broker like the protocol front-ends: its links appear
//! in `rivulet status` and the metrics under `federation`.

mod dial;
mod interest;
mod link;
// The messages and their decoder live in their own dependency-light file, which the fuzz crate
// compiles too (target `federation`).
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rivulet_core::model::Status;
use rivulet_core::owned::Event;
use rivulet_tokio::packet::{PacketReply, PacketRequest};
use rivulet_tokio::server::{ClientInfo, HandlerError, Server};
use tokio::task::JoinHandle;

use self::interest::{Interests, Merged};
use self::link::{Link, LinkError, Outbound};
use self::wire::{Advert, Adverts, Events, Hello, RQ_PEER_ADVERTS, RQ_PEER_START, Start};
use crate::access::Principal;
use crate::broker::{Broker, BrokerError};
use crate::config::FederationSettings;
use crate::frontend::{ClientReport, Frontend, FrontendStats, LinkReport, Listener};
use crate::store::PeerCursor;

/// Its name in status, logs and metrics.
pub const NAME: &str = "federation";

/// Whether an application request type is a federation message.
pub fn is_peer_request(rq_type: u64) -> bool {
    (wire::RQ_PEER_HELLO..=wire::RQ_PEER_START).contains(&rq_type)
}

/// Counters of the federation.
#[derive(Debug, Default)]
pub struct FederationCounters {
    /// Events sent over links, and events too large for a link (dropped from it, logged).
    pub sent: AtomicU64,
    pub too_large: AtomicU64,
    /// Messages from peers that were not understood.
    pub bad_input: AtomicU64,
    /// Links opened, and links ended.
    pub linked: AtomicU64,
    pub unlinked: AtomicU64,
}

/// The federation of one gateway; see the module doc.
pub struct Federation {
    broker: Arc<Broker>,
    settings: FederationSettings,
    /// The native front-end's server: requests to a peer that dialed in go back over it.
    native: Arc<Server>,
    /// Largest encoded batch of events, so that a message fits a packet.
    max_batch_bytes: usize,
    links: Mutex<HashMap<u64, Arc<Link>>>,
    /// Connection id → peer, for peers that dialed in.
    accepted: Mutex<HashMap<u64, u64>>,
    interests: Mutex<Interests>,
    /// This gateway's advert, as last sent.
    own: Mutex<Advert>,
    pub counters: FederationCounters,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Itself, for the tasks it spawns.
    me: Weak<Federation>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A version that grows across restarts: microseconds since the epoch.
fn version_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Federation {
    /// Starts the federation: its own advert, the dialers of `settings.peers`, the advert
    /// repeater. `native` serves the links peers dial in on; `max_packet` bounds a message.
    pub fn start(
        broker: &Arc<Broker>,
        settings: FederationSettings,
        native: Arc<Server>,
        max_packet: u32,
    ) -> Arc<Federation> {
        let own = Advert {
            origin: broker.server_id(),
            name: settings.name.clone(),
            version: version_now(),
            ttl: settings.ttl,
            listen: None,
            patterns: Vec::new(),
        };
        let federation = Arc::new_cyclic(|me| Federation {
            me: me.clone(),
            broker: broker.clone(),
            max_batch_bytes: (max_packet as usize / 2).max(512),
            interests: Mutex::new(Interests::new(broker.server_id())),
            own: Mutex::new(own),
            settings,
            native,
            links: Mutex::new(HashMap::new()),
            accepted: Mutex::new(HashMap::new()),
            counters: FederationCounters::default(),
            tasks: Mutex::new(Vec::new()),
        });
        let mut tasks = vec![tokio::spawn(adverts(Arc::downgrade(&federation)))];
        for peer in federation.settings.peers.clone() {
            tasks.push(tokio::spawn(dial::dial(Arc::downgrade(&federation), peer)));
        }
        *lock(&federation.tasks) = tasks;
        federation
    }

    fn interests(&self) -> MutexGuard<'_, Interests> {
        lock(&self.interests)
    }

    fn hello(&self) -> Hello {
        Hello {
            version: wire::VERSION,
            server_id: self.broker.server_id(),
            name: self.settings.name.clone(),
            store_id: self.broker.store().store_id(),
        }
    }

    /// The links up now.
    pub fn link_reports(&self) -> Vec<LinkReport> {
        let mut links: Vec<LinkReport> = lock(&self.links)
            .values()
            .map(|link| {
                let rtt = link.rtt();
                LinkReport {
                    peer: link.peer,
                    name: link.name.clone(),
                    addr: link.addr.clone(),
                    dialed: link.dialed,
                    up: link.since.elapsed(),
                    sent: link.sent.load(Relaxed),
                    received: link.received.load(Relaxed),
                    pings: rtt.count,
                    rtt_last: rtt.last,
                    rtt_min: rtt.min,
                    rtt_mean: rtt.mean(),
                    rtt_max: rtt.max,
                }
            })
            .collect();
        links.sort_by_key(|l| l.peer);
        links
    }

    /// The gateways this one has heard of: (server id, name, patterns, links reaching it).
    pub fn gateways(&self) -> Vec<(u64, String, Vec<String>, Vec<u64>)> {
        self.interests().gateways()
    }

    /// A request from a peer that dialed in (the native front-end hands them over).
    pub async fn accepted_request(
        &self,
        client: &ClientInfo,
        request: PacketRequest,
    ) -> Result<PacketReply, HandlerError> {
        let who =
            Principal { name: &client.client_name, frontend: crate::frontend::native::NAME, peer: Some(client.peer) };
        if request.rq_type == wire::RQ_PEER_HELLO {
            self.broker.access().check_federate(&who).map_err(|e| HandlerError::Refused(e.0))?;
            return self.accept(client, &request.payload).await;
        }
        let peer = lock(&self.accepted).get(&client.id).copied();
        let link = peer.and_then(|peer| lock(&self.links).get(&peer).cloned());
        let Some(link) = link else {
            return Err(HandlerError::Refused("no federation link on this connection: send a hello first".into()));
        };
        self.on_request(&link, Some(&who), request).await.map_err(|e| match e {
            BrokerError::Unavailable(why) => HandlerError::Unavailable(why),
            BrokerError::Store(e) => HandlerError::Failed(format!("store: {e}")),
            other => HandlerError::Refused(other.to_string()),
        })
    }

    /// A peer dialed in and says hello: the link is up, answered with this gateway's hello.
    async fn accept(&self, client: &ClientInfo, body: &[u8]) -> Result<PacketReply, HandlerError> {
        let hello: Hello = wire::decode(body).map_err(|e| self.bad_input(e.to_string()))?;
        self.check_hello(&hello).map_err(HandlerError::Refused)?;
        let outbound = Outbound::Accepted { server: self.native.clone(), connection: client.id };
        let link = Link::new(hello.server_id, hello.name, hello.store_id, client.peer.to_string(), outbound);
        let reply = wire::encode(&self.hello()).map_err(|e| HandlerError::Failed(e.to_string()))?;
        // Known before the answer goes: the peer's start message may come right after it.
        lock(&self.accepted).insert(client.id, link.peer);
        self.register(&link);
        let this = self.self_arc();
        tokio::spawn(async move {
            if let Some(federation) = this {
                federation.established(link).await;
            }
        });
        Ok(PacketReply::new(0, reply))
    }

    fn check_hello(&self, hello: &Hello) -> Result<(), String> {
        if hello.version != wire::VERSION {
            return Err(format!("federation version {} is not {}", hello.version, wire::VERSION));
        }
        if hello.server_id == self.broker.server_id() {
            return Err(format!(
                "the peer has this gateway's own server id {}: each gateway needs its own",
                hello.server_id
            ));
        }
        Ok(())
    }

    fn self_arc(&self) -> Option<Arc<Federation>> {
        self.me.upgrade()
    }

    fn bad_input(&self, why: String) -> HandlerError {
        self.counters.bad_input.fetch_add(1, Relaxed);
        tracing::info!("a federation message not understood: {why}");
        HandlerError::Refused(why)
    }

    /// A link said hello: it is the link to its peer from now on (an older one ends).
    fn register(&self, link: &Arc<Link>) {
        if let Some(old) = lock(&self.links).insert(link.peer, link.clone()) {
            old.ended.send_replace(true);
        }
        self.counters.linked.fetch_add(1, Relaxed);
        tracing::info!(peer = link.peer, name = %link.name, addr = %link.addr, "federation link up");
    }

    /// After [`Federation::register`]: the start message goes to the peer, and the pinger runs.
    /// The link's sender starts once the peer's start message arrives.
    async fn established(self: Arc<Self>, link: Arc<Link>) {
        let holds = match self.broker.store().peer(link.peer) {
            Ok(cursor) => cursor.filter(|c| c.store_id == link.store_id).map(|c| (c.store_id, c.seq)),
            Err(e) => {
                tracing::error!("reading the cursor of peer {}: {e}", link.peer);
                None
            }
        };
        let start = Start { holds, adverts: self.adverts_for_new_link() };
        let sent = match wire::encode(&start) {
            Ok(body) => link.outbound.request(RQ_PEER_START, body).await,
            Err(e) => Err(LinkError::Store(e.to_string())),
        };
        if let Err(e) = sent {
            self.end(&link, &e);
            return;
        }
        let pinger = link::ping(link.clone(), self.settings.ping_every);
        let this = self.clone();
        let watched = link.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = pinger => if let Err(e) = result { this.end(&watched, &e) },
                () = watched.until_ended() => {}
            }
        });
    }

    /// Its own advert first, then what it knows of others.
    fn adverts_for_new_link(&self) -> Vec<Advert> {
        let mut adverts = vec![lock(&self.own).clone()];
        adverts.extend(self.interests().to_pass_on());
        adverts
    }

    /// The link is over: its tasks stop (what it reached is remembered: see `interest.rs`).
    fn end(&self, link: &Arc<Link>, why: &LinkError) {
        let mut links = lock(&self.links);
        if links.get(&link.peer).is_some_and(|current| Arc::ptr_eq(current, link)) {
            links.remove(&link.peer);
            drop(links);
            self.counters.unlinked.fetch_add(1, Relaxed);
            tracing::info!(peer = link.peer, "federation link down: {why}");
        }
        if let Outbound::Accepted { connection, .. } = &link.outbound {
            lock(&self.accepted).remove(connection);
        }
        link.ended.send_replace(true);
    }

    /// A native connection closed: a link on it is over.
    pub fn disconnected(&self, connection: u64) {
        let Some(peer) = lock(&self.accepted).remove(&connection) else { return };
        let link = lock(&self.links).get(&peer).cloned();
        if let Some(link) =
            link.filter(|l| matches!(l.outbound, Outbound::Accepted { connection: c, .. } if c == connection))
        {
            self.end(&link, &LinkError::Lost("the connection closed".into()));
        }
    }

    /// A message over `link` (after the hello), from `who` (`None`: a peer this gateway dialed,
    /// which it trusts as configured).
    async fn on_request(
        &self,
        link: &Arc<Link>,
        who: Option<&Principal<'_>>,
        request: PacketRequest,
    ) -> Result<PacketReply, BrokerError> {
        let bad = |e: wire::WireError| {
            self.counters.bad_input.fetch_add(1, Relaxed);
            BrokerError::Invalid(e.to_string())
        };
        match request.rq_type {
            wire::RQ_PEER_START => {
                let start: Start = wire::decode(&request.payload).map_err(bad)?;
                self.take_adverts(link.peer, start.adverts).map_err(bad)?;
                let after = match start.holds {
                    Some((store_id, seq)) if store_id == self.broker.store().store_id() => seq,
                    _ => self.broker.store().last_admitted().map_err(BrokerError::Store)?,
                };
                self.spawn_sender(link.clone(), after);
            }
            wire::RQ_PEER_ADVERTS => {
                let adverts: Adverts = wire::decode(&request.payload).map_err(bad)?;
                self.take_adverts(link.peer, adverts.adverts).map_err(bad)?;
            }
            wire::RQ_PEER_EVENTS => {
                let events: Events<'_> = wire::decode(&request.payload).map_err(bad)?;
                let count = events.events.len() as u64;
                let batch: Vec<(u8, Event)> = events.events.iter().map(|r| (r.ttl, Event::from(r.event))).collect();
                let cursor = PeerCursor { store_id: link.store_id, seq: events.upto };
                let imported = self.broker.import(who, link.peer, batch, cursor).await?;
                imported.durable.await?;
                link.received.fetch_add(count, Relaxed);
            }
            wire::RQ_PEER_PING => {}
            other => return Err(BrokerError::Invalid(format!("unknown federation message {other:#x}"))),
        }
        Ok(PacketReply::new(0, Vec::new()))
    }

    fn spawn_sender(&self, link: Arc<Link>, after: u64) {
        let Some(this) = self.self_arc() else { return };
        tokio::spawn(async move {
            tokio::select! {
                result = link::send_log(this.clone(), link.clone(), after) => {
                    if let Err(e) = result { this.end(&link, &e) }
                }
                () = link.until_ended() => {}
            }
        });
    }

    /// Merges adverts from the link to `peer` and floods the new ones to the other links.
    fn take_adverts(&self, peer: u64, adverts: Vec<Advert>) -> Result<(), wire::WireError> {
        let now = Instant::now();
        let mut onward = Vec::new();
        {
            let mut interests = self.interests();
            for advert in adverts {
                let patterns = advert.parsed()?;
                if interests.merge(advert.clone(), patterns, peer, now) == Merged::New && advert.ttl > 1 {
                    onward.push(Advert { ttl: advert.ttl - 1, ..advert });
                }
            }
        }
        if !onward.is_empty() {
            self.flood(onward, Some(peer));
        }
        Ok(())
    }

    /// Sends `adverts` to every link but the one to `except`, each in its own task.
    fn flood(&self, adverts: Vec<Advert>, except: Option<u64>) {
        let links: Vec<Arc<Link>> = lock(&self.links).values().filter(|l| Some(l.peer) != except).cloned().collect();
        let Ok(body) = wire::encode(&Adverts { adverts }) else { return };
        for link in links {
            let body = body.clone();
            let this = self.self_arc();
            tokio::spawn(async move {
                if let Err(e) = link.outbound.request(RQ_PEER_ADVERTS, body).await
                    && let Some(this) = this
                {
                    this.end(&link, &e);
                }
            });
        }
    }

    /// Remakes this gateway's advert from its subscribers' patterns and floods it if they changed
    /// (or `repeat` says it is time to say it again).
    fn advertise(&self, repeat: bool) {
        let patterns: Vec<String> = self.broker.fanout().patterns().iter().map(ToString::to_string).collect();
        let advert = {
            let mut own = lock(&self.own);
            if own.patterns == patterns && !repeat {
                return;
            }
            own.patterns = patterns;
            own.version = version_now().max(own.version + 1);
            own.clone()
        };
        self.flood(vec![advert], None);
    }

    pub fn stop(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        let links: Vec<Arc<Link>> = lock(&self.links).drain().map(|(_, link)| link).collect();
        for link in links {
            link.ended.send_replace(true);
        }
    }
}

/// Floods this gateway's advert when its subscribers' patterns change, repeats it every
/// `advert_every`, and forgets gateways silent for three periods.
async fn adverts(federation: Weak<Federation>) {
    let (mut changes, every) = match federation.upgrade() {
        Some(f) => (f.broker.fanout().watch_patterns(), f.settings.advert_every),
        None => return,
    };
    let mut repeat = tokio::time::interval(every);
    repeat.tick().await;
    loop {
        let repeating = tokio::select! {
            changed = changes.changed() => { if changed.is_err() { return } false }
            _ = repeat.tick() => true,
        };
        let Some(federation) = federation.upgrade() else { return };
        federation.advertise(repeating);
        if repeating {
            federation.interests().expire(Instant::now(), every * 3);
        }
    }
}

impl Frontend for Federation {
    fn name(&self) -> &'static str {
        NAME
    }

    fn listeners(&self) -> Vec<Listener> {
        Vec::new()
    }

    /// Each link, as a client.
    fn clients(&self) -> Vec<ClientReport> {
        self.link_reports()
            .into_iter()
            .map(|link| ClientReport {
                id: link.peer,
                name: link.name,
                peer: link.addr.parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                subscriptions: Vec::new(),
                persisted: true,
                registered: link.received,
                refused: 0,
                notified: link.sent,
            })
            .collect()
    }

    fn stats(&self) -> FrontendStats {
        FrontendStats {
            connections: lock(&self.links).len() as u64,
            accepted: self.counters.linked.load(Relaxed),
            notified: self.counters.sent.load(Relaxed),
            bad_input: self.counters.bad_input.load(Relaxed),
            ..FrontendStats::default()
        }
    }

    fn links(&self) -> Vec<LinkReport> {
        self.link_reports()
    }

    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Federation::stop(self);
        Box::pin(async {})
    }

    fn announce(&self, _status: Status) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}
