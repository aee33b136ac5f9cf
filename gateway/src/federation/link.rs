//! One link to a peer gateway, whichever side dialed: how requests reach the peer, what is
//! known of it, its latency, and the two tasks that run while it is up: the sender (the
//! admission log, from where the peer holds it, filtered by what the peer's side wants) and the
//! pinger.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rivulet_tokio::packet::{CallError, PacketReply, PacketRequest};
use rivulet_tokio::server::Server;
use rivulet_tokio::{Client, ClientError};

use super::Federation;
use super::wire::{self, Events, RQ_PEER_EVENTS, RQ_PEER_PING, Routed};
use crate::store::AdmittedPage;

/// Entries of the admission log one `Events` message carries at most.
const BATCH: usize = 256;
/// How long a request to the peer may take before the link counts as broken.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How requests reach the peer: over the client this gateway dialed with, or back over the
/// connection the peer dialed in on.
pub(super) enum Outbound {
    Dialed(Client),
    Accepted { server: Arc<Server>, connection: u64 },
}

/// Why the link ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LinkError {
    /// The peer refused a message (it says why).
    Refused(String),
    /// The connection broke, or an answer took longer than [`REQUEST_TIMEOUT`].
    Lost(String),
    /// This gateway's store failed.
    Store(String),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Refused(why) => write!(f, "the peer refused: {why}"),
            LinkError::Lost(why) => write!(f, "the link broke: {why}"),
            LinkError::Store(why) => write!(f, "the store: {why}"),
        }
    }
}

impl Outbound {
    /// A request of another client or gateway for the peer (a forwarded call, a file
    /// request), answered as the peer answers it.
    pub(super) async fn call(&self, request: PacketRequest) -> Result<PacketReply, CallError> {
        let PacketRequest { rq_type, flags, payload } = request;
        match self {
            Outbound::Dialed(client) => client.request(rq_type, flags, payload).await.map_err(|e| match e {
                ClientError::Refused(why) => CallError::Refused(why),
                ClientError::TimedOut => CallError::TimedOut,
                ClientError::TooLarge | ClientError::OverServerLimit(_) => CallError::TooLarge,
                _ => CallError::Disconnected,
            }),
            Outbound::Accepted { server, connection } => server.request(*connection, rq_type, flags, payload).await,
        }
    }

    pub(super) async fn request(&self, rq_type: u64, body: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        let asked = async {
            match self {
                Outbound::Dialed(client) => client.request(rq_type, 0, body).await.map_err(|e| match e {
                    ClientError::Refused(why) => LinkError::Refused(why),
                    other => LinkError::Lost(other.to_string()),
                }),
                Outbound::Accepted { server, connection } => {
                    server.request(*connection, rq_type, 0, body).await.map_err(|e| match e {
                        rivulet_tokio::packet::CallError::Refused(why) => LinkError::Refused(why),
                        other => LinkError::Lost(other.to_string()),
                    })
                }
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, asked).await {
            Ok(answer) => answer.map(|reply| reply.payload),
            Err(_) => Err(LinkError::Lost(format!("no answer in {REQUEST_TIMEOUT:?}"))),
        }
    }
}

/// Round trips of a link's pings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rtt {
    pub last: Duration,
    pub min: Duration,
    pub max: Duration,
    pub total: Duration,
    pub count: u64,
}

impl Rtt {
    fn observe(&mut self, took: Duration) {
        self.min = if self.count == 0 { took } else { self.min.min(took) };
        self.max = self.max.max(took);
        self.last = took;
        self.total += took;
        self.count += 1;
    }

    pub fn mean(&self) -> Duration {
        if self.count == 0 { Duration::ZERO } else { self.total / u32::try_from(self.count).unwrap_or(u32::MAX) }
    }
}

/// A link that said hello.
pub(super) struct Link {
    pub(super) peer: u64,
    pub(super) name: String,
    pub(super) store_id: u64,
    /// Where the peer is (its address as dialed, or the connection's peer address).
    pub(super) addr: String,
    pub(super) dialed: bool,
    pub(super) outbound: Outbound,
    /// Largest batch of events, so that a message fits both sides' packets.
    pub(super) max_bytes: usize,
    /// Set by the peer's start message (a second one is ignored).
    pub(super) started: std::sync::atomic::AtomicBool,
    pub(super) since: Instant,
    pub(super) rtt: Mutex<Rtt>,
    /// Events sent to the peer and taken from it.
    pub(super) sent: AtomicU64,
    pub(super) received: AtomicU64,
    /// Ends every task of the link when it goes.
    pub(super) ended: tokio::sync::watch::Sender<bool>,
    /// Forwarded calls and file requests in flight over the link: a few, so that they never
    /// take all of the connection's requests from the link's own events and pings.
    pub(super) calls: tokio::sync::Semaphore,
}

/// Forwarded calls (and file requests) a link carries at once; more wait their turn.
const CALLS_IN_FLIGHT: usize = 4;

impl Link {
    /// A link to the gateway that said `hello`, over `outbound`; batches fit `max_packet` here
    /// and the peer's.
    pub(super) fn new(hello: wire::Hello, addr: String, outbound: Outbound, max_packet: u32) -> Arc<Link> {
        let dialed = matches!(outbound, Outbound::Dialed(_));
        let max_bytes = (max_packet.min(hello.max_packet) as usize / 2).max(512);
        Arc::new(Link {
            peer: hello.server_id,
            name: hello.name,
            store_id: hello.store_id,
            addr,
            dialed,
            outbound,
            max_bytes,
            started: std::sync::atomic::AtomicBool::new(false),
            since: Instant::now(),
            rtt: Mutex::new(Rtt::default()),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            ended: tokio::sync::watch::Sender::new(false),
            calls: tokio::sync::Semaphore::new(CALLS_IN_FLIGHT),
        })
    }

    pub(super) fn rtt(&self) -> Rtt {
        *self.rtt.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once the link has ended.
    pub(super) async fn until_ended(&self) {
        let mut ended = self.ended.subscribe();
        let _ = ended.wait_for(|ended| *ended).await;
    }
}

/// Sends the admission log from entry `after` on, what the peer's side wants of it, until the
/// link ends. Each message is answered once the peer stored it, and the next goes then. Entries
/// up to `backlog` (what was admitted while the link was down) go whether wanted or not: what the
/// other side wanted then is not known yet, and a copy too many is only dropped there.
pub(super) async fn send_log(
    federation: Arc<Federation>,
    link: Arc<Link>,
    mut after: u64,
    backlog: u64,
) -> Result<(), LinkError> {
    let store = federation.broker.store().clone();
    let mut admitted = federation.broker.watch_admitted();
    let max_bytes = link.max_bytes;
    // First, where this starts: the peer stores it, so that a link that breaks before anything
    // was sent resumes here, not at a later end of the log.
    send(&federation, &link, after, Vec::new()).await?;
    let mut quiet_since = Instant::now();
    loop {
        // Marked seen before the read: a commit after it wakes the wait below.
        admitted.borrow_and_update();
        let reader = store.clone();
        let page: AdmittedPage = tokio::task::spawn_blocking(move || reader.admitted(after, BATCH, max_bytes))
            .await
            .map_err(|e| LinkError::Store(e.to_string()))?
            .map_err(|e| LinkError::Store(e.to_string()))?;
        if page.scanned_to <= after {
            admitted.changed().await.map_err(|_| LinkError::Lost("the gateway is stopping".into()))?;
            continue;
        }
        let routed: Vec<Routed<'_>> = {
            let interests = federation.interests();
            page.entries
                .iter()
                .filter_map(|(seq, hop, event)| {
                    let ttl = if hop.via.is_none() { federation.settings.ttl } else { hop.ttl };
                    let wanted = ttl > 0
                        && hop.via != Some(link.peer)
                        && event.id.server != link.peer
                        && (*seq <= backlog || interests.wants(link.peer, event));
                    if wanted && crate::store::page_bytes(event) > max_bytes {
                        federation.counters.too_large.fetch_add(1, Relaxed);
                        tracing::warn!(
                            peer = link.peer,
                            "an event of {} is too large to cross a link",
                            event.event_type
                        );
                        return None;
                    }
                    wanted.then(|| Routed { ttl, event: event.as_ref() })
                })
                .collect()
        };
        after = page.scanned_to;
        // A message without events only moves the peer's cursor (one durable write there): at
        // most once a second.
        if routed.is_empty() && quiet_since.elapsed() < CURSOR_EVERY {
            continue;
        }
        quiet_since = Instant::now();
        send(&federation, &link, after, routed).await?;
    }
}

/// How often a link moves its peer's cursor when nothing it wants crosses.
const CURSOR_EVERY: Duration = Duration::from_secs(1);

async fn send(federation: &Federation, link: &Link, upto: u64, events: Vec<Routed<'_>>) -> Result<(), LinkError> {
    let count = events.len() as u64;
    let body =
        wire::encode(&Events { upto, events }).map_err(|e| LinkError::Store(format!("cannot encode events: {e}")))?;
    link.outbound.request(RQ_PEER_EVENTS, body).await?;
    link.sent.fetch_add(count, Relaxed);
    federation.counters.sent.fetch_add(count, Relaxed);
    Ok(())
}

/// Pings the peer every `every` and keeps the round trips, until the link ends or breaks.
pub(super) async fn ping(link: Arc<Link>, every: Duration) -> Result<(), LinkError> {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let started = Instant::now();
        link.outbound.request(RQ_PEER_PING, Vec::new()).await?;
        link.rtt.lock().unwrap_or_else(PoisonError::into_inner).observe(started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_keep_min_mean_max() {
        let mut rtt = Rtt::default();
        for ms in [4, 2, 6] {
            rtt.observe(Duration::from_millis(ms));
        }
        assert_eq!(
            (rtt.min, rtt.mean(), rtt.max, rtt.last),
            (Duration::from_millis(2), Duration::from_millis(4), Duration::from_millis(6), Duration::from_millis(6))
        );
    }
}
