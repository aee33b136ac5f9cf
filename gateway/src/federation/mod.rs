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
mod latest;
mod link;
// The messages and their decoder live in their own dependency-light file, which the fuzz crate
// compiles too (target `federation`).
pub mod wire;

pub use latest::encode_found;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rivulet_core::model::Status;
use rivulet_core::owned::Event;
use rivulet_tokio::packet::{CallError, PacketReply, PacketRequest};
use rivulet_tokio::server::{ClientInfo, HandlerError, Server};
use tokio::task::JoinHandle;

use self::interest::{Interests, Merged};
use self::link::{Link, LinkError, Outbound};
use self::wire::{Advert, Adverts, Events, Hello, RQ_PEER_ADVERTS, RQ_PEER_START, Start};
use crate::access::Principal;
use crate::broker::{Broker, BrokerError};
use crate::config::FederationSettings;
use crate::files::FileStore;
use crate::frontend::native::{Forward, RQ_FORWARD, forward};
use crate::frontend::{Call, ClientReport, Frontend, FrontendStats, LinkReport, Listener};
use crate::store::PeerCursor;

/// Its name in status, logs and metrics.
pub const NAME: &str = "federation";

/// Whether an application request type is a federation message.
pub fn is_peer_request(rq_type: u64) -> bool {
    (wire::RQ_PEER_HELLO..=wire::RQ_PEER_LATEST).contains(&rq_type)
}

/// Whether a client's request may go to another gateway: a forwarded call or a file request,
/// what a gateway serves for a client (`frontend::native::serve_request`). A federation message
/// never does: the peer would take it as this gateway's own.
pub fn forwardable(rq_type: u64) -> bool {
    rq_type == RQ_FORWARD || rivulet_core::files::is_file_request(rq_type)
}

/// Counters of the federation.
#[derive(Debug, Default)]
pub struct FederationCounters {
    /// Events sent over links, and events too large for a link (dropped from it, logged).
    pub sent: AtomicU64,
    pub too_large: AtomicU64,
    /// Messages (or adverts) from peers that were not understood.
    pub bad_input: AtomicU64,
    /// Events from peers dropped as outside their client's `register` patterns.
    pub refused: AtomicU64,
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
    /// The gateway's files, for file requests from a peer this gateway dialed.
    files: Arc<FileStore>,
    /// The largest packet this gateway takes (a link's batches fit it and the peer's).
    max_packet: u32,
    links: Mutex<HashMap<u64, Arc<Link>>>,
    /// Connection id → its link, for peers that dialed in.
    accepted: Mutex<HashMap<u64, Arc<Link>>>,
    interests: Mutex<Interests>,
    /// This gateway's advert, as last sent.
    own: Mutex<Advert>,
    pub counters: FederationCounters,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Itself, for the tasks it spawns.
    me: Weak<Federation>,
    /// Gateways discovery dials now (their server ids).
    dialing: Mutex<std::collections::HashSet<u64>>,
    /// Poked when what this gateway or others want may have changed: discovery looks again.
    heard: tokio::sync::Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A version that grows across restarts as the clock does: microseconds since the epoch.
fn version_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Federation {
    /// Starts the federation: its own advert, the dialers of `settings.peers`, the advert
    /// repeater. `native` serves the links peers dial in on, `files` the file requests of peers
    /// this gateway dialed; `max_packet` bounds a message.
    pub fn start(
        broker: &Arc<Broker>,
        settings: FederationSettings,
        native: Arc<Server>,
        files: Arc<FileStore>,
        max_packet: u32,
    ) -> Arc<Federation> {
        // Where other gateways reach this one: as configured, else the native listener (unless
        // it listens on every address, which says nothing to a gateway elsewhere).
        let listen = settings.advertise.clone().or_else(|| {
            let addr = native.local_addr();
            (!addr.ip().is_unspecified()).then(|| addr.to_string())
        });
        let own = Advert {
            origin: broker.server_id(),
            name: settings.name.clone(),
            version: version_now(),
            ttl: settings.ttl,
            period_s: u32::try_from(settings.advert_every.as_secs()).unwrap_or(u32::MAX),
            listen,
            patterns: broker.fanout().patterns().iter().map(ToString::to_string).collect(),
        };
        let federation = Arc::new_cyclic(|me| Federation {
            me: me.clone(),
            broker: broker.clone(),
            max_packet,
            interests: Mutex::new(Interests::new(broker.server_id())),
            own: Mutex::new(own),
            settings,
            native,
            files,
            links: Mutex::new(HashMap::new()),
            accepted: Mutex::new(HashMap::new()),
            counters: FederationCounters::default(),
            tasks: Mutex::new(Vec::new()),
            dialing: Mutex::new(std::collections::HashSet::new()),
            heard: tokio::sync::Notify::new(),
        });
        let mut tasks = vec![tokio::spawn(adverts(Arc::downgrade(&federation)))];
        for peer in federation.settings.peers.clone() {
            tasks.push(tokio::spawn(dial::dial(Arc::downgrade(&federation), peer, None)));
        }
        if federation.settings.discover {
            tasks.push(tokio::spawn(discover(Arc::downgrade(&federation))));
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
            max_packet: self.max_packet,
        }
    }

    /// The TTL of what this gateway sends first (events, adverts, asks).
    pub fn ttl(&self) -> u8 {
        self.settings.ttl
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
        let link = lock(&self.accepted).get(&client.id).cloned();
        let Some(link) = link.filter(|link| !*link.ended.borrow()) else {
            return Err(HandlerError::Refused("no federation link on this connection: send a hello first".into()));
        };
        self.on_request(&link, Some(&who), request).await.map_err(crate::frontend::native::refusal)
    }

    /// A request over a link this gateway dialed that is not the federation's own: a call of a
    /// client here (`RQ_FORWARD`) or a file request. The peer makes it as the client its
    /// federation name names (when the gateway has `[[clients]]`, one of them must be that name).
    /// A peer that dialed in sends these as the client it logged in as (the native front-end).
    async fn serve_call(&self, link: &Link, request: PacketRequest) -> Result<PacketReply, HandlerError> {
        let who = Principal { name: &link.name, frontend: NAME, peer: None };
        // The name is the peer's own word (its hello): it counts only as a peer gateway's, never
        // as an operator's.
        if self.broker.access().check_federate(&who).is_err() {
            return Err(HandlerError::Refused(format!(
                "this gateway has no [[clients]] entry with `federate = true` named {:?} for the gateway it linked to",
                link.name
            )));
        }
        crate::frontend::native::serve_request(&self.broker, &self.files, &who, request).await
    }

    /// A peer dialed in and says hello: the link is up, answered with this gateway's hello.
    async fn accept(&self, client: &ClientInfo, body: &[u8]) -> Result<PacketReply, HandlerError> {
        let hello: Hello = wire::decode(body).map_err(|e| self.bad_input(e.to_string()))?;
        self.check_hello(&hello).map_err(HandlerError::Refused)?;
        let outbound = Outbound::Accepted { server: self.native.clone(), connection: client.id };
        let link = Link::new(hello, client.peer.to_string(), outbound, self.max_packet);
        let reply = wire::encode(&self.hello()).map_err(|e| HandlerError::Failed(e.to_string()))?;
        // Known before the answer goes: the peer's start message may come right after it.
        self.register(&link).map_err(HandlerError::Refused)?;
        lock(&self.accepted).insert(client.id, link.clone());
        self.spawn_established(link);
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

    /// A link said hello: it is the link to its peer from now on (an older one ends), unless
    /// a link the other way is up and wins: between two gateways that both dial each other, the
    /// link the lower server id dialed stays.
    fn register(&self, link: &Arc<Link>) -> Result<(), String> {
        let own = self.broker.server_id();
        let dialer = |l: &Link| if l.dialed { own } else { l.peer };
        let mut links = lock(&self.links);
        if let Some(old) = links.get(&link.peer).filter(|old| !*old.ended.borrow())
            && dialer(old) < dialer(link)
        {
            return Err(format!(
                "already linked with gateway {} (the link gateway {} dialed stays)",
                link.peer,
                dialer(old)
            ));
        }
        if let Some(old) = links.insert(link.peer, link.clone()) {
            old.ended.send_replace(true);
        }
        drop(links);
        self.counters.linked.fetch_add(1, Relaxed);
        tracing::info!(peer = link.peer, name = %link.name, addr = %link.addr, "federation link up");
        Ok(())
    }

    /// [`Federation::established`] in a task of its own, which ends with the link.
    fn spawn_established(&self, link: Arc<Link>) {
        let federation = self.me.clone();
        tokio::spawn(async move {
            let Some(federation) = federation.upgrade() else { return };
            tokio::select! {
                () = federation.established(link.clone()) => {}
                () = link.until_ended() => {}
            }
        });
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
        let start = Start { holds, adverts: self.adverts_for_new_link(link.peer) };
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

    /// Its own advert first, then what it knows of others (but those it heard of only from
    /// `peer`).
    fn adverts_for_new_link(&self, peer: u64) -> Vec<Advert> {
        let mut adverts = vec![lock(&self.own).clone()];
        adverts.extend(self.interests().to_pass_on(peer));
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
        let Some(link) = lock(&self.accepted).remove(&connection) else { return };
        self.end(&link, &LinkError::Lost("the connection closed".into()));
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
                if link.started.swap(true, Relaxed) {
                    return Err(BrokerError::Invalid("the link has started already".into()));
                }
                self.take_adverts(link.peer, start.adverts);
                let end = self.broker.store().last_admitted().map_err(BrokerError::Store)?;
                let (after, backlog) = match start.holds {
                    Some((store_id, seq)) if store_id == self.broker.store().store_id() => (seq, end),
                    _ => (end, end),
                };
                self.spawn_sender(link.clone(), after, backlog);
            }
            wire::RQ_PEER_ADVERTS => {
                let adverts: Adverts = wire::decode(&request.payload).map_err(bad)?;
                self.take_adverts(link.peer, adverts.adverts);
            }
            wire::RQ_PEER_EVENTS => {
                let events: Events<'_> = wire::decode(&request.payload).map_err(bad)?;
                let count = events.events.len() as u64;
                let batch: Vec<(u8, Event)> = events.events.iter().map(|r| (r.ttl, Event::from(r.event))).collect();
                let cursor = PeerCursor { store_id: link.store_id, seq: events.upto };
                let imported = self.broker.import(who, link.peer, batch, cursor).await?;
                self.counters.refused.fetch_add(imported.refused as u64, Relaxed);
                imported.durable.await?;
                link.received.fetch_add(count, Relaxed);
            }
            wire::RQ_PEER_PING => {}
            wire::RQ_PEER_LATEST => {
                let ask: wire::LatestAsk = wire::decode(&request.payload).map_err(bad)?;
                let patterns = ask.parsed().map_err(bad)?;
                // The asking peer sees what its client here may: the one it logged in as, or
                // over a link this gateway dialed, the one its name names.
                let peer = Principal { name: &link.name, frontend: NAME, peer: None };
                let patterns = self
                    .broker
                    .access()
                    .latest_patterns(who.unwrap_or(&peer), Some(patterns))
                    .map_err(|denied| BrokerError::Denied(denied.0))?;
                let found = self.latest_across(&patterns, ask.ttl, &ask.visited).await;
                let body = encode_found(&found).map_err(|e| BrokerError::Invalid(e.to_string()))?;
                if body.len() > link.max_bytes.saturating_mul(2) {
                    return Err(BrokerError::Invalid(format!(
                        "the {} latest events take {} bytes, more than a packet of the link",
                        found.len(),
                        body.len()
                    )));
                }
                return Ok(PacketReply::new(0, body));
            }
            other => return Err(BrokerError::Invalid(format!("unknown federation message {other:#x}"))),
        }
        Ok(PacketReply::new(0, Vec::new()))
    }

    fn spawn_sender(&self, link: Arc<Link>, after: u64, backlog: u64) {
        let Some(this) = self.self_arc() else { return };
        tokio::spawn(async move {
            tokio::select! {
                result = link::send_log(this.clone(), link.clone(), after, backlog) => {
                    if let Err(e) = result { this.end(&link, &e) }
                }
                () = link.until_ended() => {}
            }
        });
    }

    /// Merges adverts from the link to `peer` and floods the new ones to the other links. An
    /// advert that does not parse is dropped alone (and counted); the others count.
    fn take_adverts(&self, peer: u64, adverts: Vec<Advert>) {
        let now = Instant::now();
        let mut onward = Vec::new();
        {
            let mut interests = self.interests();
            for advert in adverts {
                let patterns = match advert.parsed() {
                    Ok(patterns) => patterns,
                    Err(e) => {
                        self.counters.bad_input.fetch_add(1, Relaxed);
                        tracing::info!(peer, "an advert of gateway {} dropped: {e}", advert.origin);
                        continue;
                    }
                };
                if interests.merge(advert.clone(), patterns, peer, now) == Merged::New && advert.ttl > 1 {
                    onward.push(Advert { ttl: advert.ttl - 1, ..advert });
                }
            }
        }
        if !onward.is_empty() {
            self.flood(onward, Some(peer));
            self.heard.notify_one();
        }
    }

    /// Sends `adverts` to every link but the one to `except`, each in its own task.
    fn flood(&self, adverts: Vec<Advert>, except: Option<u64>) {
        let links: Vec<Arc<Link>> = lock(&self.links).values().filter(|l| Some(l.peer) != except).cloned().collect();
        let Ok(body) = wire::encode(&Adverts { adverts }) else { return };
        for link in links {
            let body = body.clone();
            let federation = self.me.clone();
            tokio::spawn(async move {
                let sent = tokio::select! {
                    sent = link.outbound.request(RQ_PEER_ADVERTS, body) => sent,
                    () = link.until_ended() => return,
                };
                // A refusal (an advert the peer cannot read) is not the link's end; a lost link is.
                if let (Err(e @ LinkError::Lost(_)), Some(federation)) = (sent, federation.upgrade()) {
                    federation.end(&link, &e);
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
        self.heard.notify_one();
    }

    /// Whether discovery still wants a link to gateway `origin`: heard of, wanting what this
    /// gateway wants, not linked already, and a link to spare.
    fn still_wanted(&self, origin: u64) -> bool {
        self.discoverable().iter().any(|(id, _)| *id == origin)
    }

    /// The gateways discovery would dial now: (server id, address).
    fn discoverable(&self) -> Vec<(u64, String)> {
        if !self.settings.discover {
            return Vec::new();
        }
        let ours: Vec<rivulet_core::owned::EventPath> = lock(&self.own)
            .patterns
            .iter()
            .filter_map(|p| rivulet_core::owned::EventPath::parse_pattern(p).ok())
            .collect();
        let links = lock(&self.links);
        let interests = self.interests();
        interests
            .listening()
            .into_iter()
            .filter(|(origin, _, theirs)| {
                !links.contains_key(origin) && theirs.iter().any(|t| ours.iter().any(|o| o.overlaps(t)))
            })
            .map(|(origin, listen, _)| (origin, listen))
            .collect()
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

/// Dials the gateways discovery finds, as links to spare allow; looks again whenever adverts
/// change, and every few seconds.
async fn discover(federation: Weak<Federation>) {
    loop {
        let Some(this) = federation.upgrade() else { return };
        let dialing: Vec<u64> = lock(&this.dialing).iter().copied().collect();
        let spare = this.settings.max_links.saturating_sub(dialing.len());
        for (origin, listen) in this.discoverable().into_iter().filter(|(o, _)| !dialing.contains(o)).take(spare) {
            lock(&this.dialing).insert(origin);
            tracing::info!("discovered gateway {origin} at {listen}: linking");
            let peer = crate::config::PeerEntry::plain(listen);
            tokio::spawn(dial::dial(federation.clone(), peer, Some(origin)));
        }
        // Held while waiting: stop() aborts this task.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), this.heard.notified()).await;
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
            federation.interests().expire(Instant::now());
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
            registrations_refused: self.counters.refused.load(Relaxed),
            too_large: self.counters.too_large.load(Relaxed),
            ..FrontendStats::default()
        }
    }

    fn links(&self) -> Vec<LinkReport> {
        self.link_reports()
    }

    /// `GATEWAY` is a linked gateway by its name (the request goes to it), `GATEWAY/REST` a
    /// client or gateway of that name there (the request goes to it in an `RQ_FORWARD`).
    ///
    /// Only what a gateway serves for a client goes (a forwarded call, a file request): never a
    /// federation message, which the peer would take as this gateway's own.
    fn call(&self, target: &str, request: PacketRequest) -> Option<Call> {
        let (gateway, rest) = match target.split_once('/') {
            Some((gateway, rest)) => (gateway, Some(rest)),
            None => (target, None),
        };
        let named: Vec<Arc<Link>> =
            lock(&self.links).values().filter(|l| l.name == gateway && !*l.ended.borrow()).cloned().collect();
        let refuse = |why: String| -> Option<Call> { Some(Box::pin(async move { Err(CallError::Refused(why)) })) };
        let link = match named.as_slice() {
            [] => return None,
            [link] => link.clone(),
            _ => {
                return refuse(format!(
                    "{} linked gateways are named {gateway:?}: give each its own name",
                    named.len()
                ));
            }
        };
        if rest.is_none() && !forwardable(request.rq_type) {
            return refuse(format!("request type {:#x} is not passed to another gateway", request.rq_type));
        }
        let request = match rest {
            None => request,
            Some(rest) => {
                let forward = Forward {
                    client: rest.to_string(),
                    rq_type: request.rq_type,
                    flags: request.flags,
                    payload: request.payload,
                };
                PacketRequest { rq_type: RQ_FORWARD, flags: 0, payload: forward::encode(&forward).ok()? }
            }
        };
        Some(Box::pin(async move {
            let _turn = link.calls.acquire().await.map_err(|_| CallError::Disconnected)?;
            link.outbound.call(request).await
        }))
    }

    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Federation::stop(self);
        Box::pin(async {})
    }

    fn announce(&self, _status: Status) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}
