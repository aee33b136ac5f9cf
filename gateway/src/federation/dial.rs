//! Dialing a configured peer: log in at its native listener as a client, say hello, run the link
//! until it ends, then dial again after a pause that doubles from 1 s up to 30 s (back to 1 s
//! after a link that stayed up a minute).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rivulet_tokio::ClientOptions;
use rivulet_tokio::packet::{PacketHandler, PacketReply, PacketRequest};
use tokio::sync::watch;

use super::link::{Link, LinkError, Outbound, REQUEST_TIMEOUT};
use super::wire::{self, Hello, RQ_PEER_HELLO};
use super::{Federation, lock};
use crate::config::PeerEntry;
use crate::frontend::native::login;

const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);
/// A link up this long counts as healthy: the next pause starts short again.
const HEALTHY: Duration = Duration::from_secs(60);

/// Dials `peer` again and again; a peer `discovered` (its server id) only while discovery still
/// wants it.
pub(super) async fn dial(federation: Weak<Federation>, peer: PeerEntry, discovered: Option<u64>) {
    let mut pause = FIRST_PAUSE;
    loop {
        let Some(this) = federation.upgrade() else { return };
        if let Some(origin) = discovered
            && !this.still_wanted(origin)
        {
            lock(&this.dialing).remove(&origin);
            return;
        }
        let started = Instant::now();
        let ended = this.dial_once(&peer).await;
        drop(this);
        match ended {
            Ok(()) => tracing::info!(peer = %peer.addr, "federation link to {} ended; dialing again", peer.addr),
            Err(e) => tracing::warn!(peer = %peer.addr, "cannot link to {}: {e}; trying again in {pause:?}", peer.addr),
        }
        if started.elapsed() >= HEALTHY {
            pause = FIRST_PAUSE;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Requests the peer sends over a link this gateway dialed; they wait for the hello's answer.
/// Weak: the link holds the client, which holds this.
struct Dialed {
    federation: Weak<Federation>,
    link: watch::Receiver<Option<Weak<Link>>>,
}

impl PacketHandler for Dialed {
    async fn handle(&self, request: PacketRequest) -> Result<PacketReply, String> {
        let mut slot = self.link.clone();
        let link = tokio::time::timeout(REQUEST_TIMEOUT, slot.wait_for(Option::is_some))
            .await
            .map_err(|_| "no federation link on this connection".to_string())?
            .map_err(|_| "the link is closed".to_string())?
            .clone();
        let (Some(link), Some(federation)) = (link.and_then(|l| l.upgrade()), self.federation.upgrade()) else {
            return Err("the link is closed".into());
        };
        if super::is_peer_request(request.rq_type) {
            return federation.on_request(&link, None, request).await.map_err(|e| e.to_string());
        }
        federation.serve_call(&link, request).await.map_err(|e| e.to_string())
    }
}

impl Federation {
    /// One link to `peer`: connects, says hello, and returns once the link has ended.
    async fn dial_once(self: &Arc<Self>, peer: &PeerEntry) -> Result<(), LinkError> {
        let (name, token) = self.settings.login(peer);
        let mut options = ClientOptions::new(name.clone());
        options.challenge = token.map(|token| login::answer(name, token));
        options.max_packet = self.max_packet;
        let (slot, link_rx) = watch::channel(None);
        let handler = Dialed { federation: Arc::downgrade(self), link: link_rx };
        let connected = match peer.tls().map_err(LinkError::Refused)? {
            Some(tls) => rivulet_tokio::connect_via_with_handler(tls, options, handler).await,
            None => rivulet_tokio::connect_with_handler(peer.addr.clone(), options, handler).await,
        };
        let (client, _events) = connected.map_err(|e| LinkError::Lost(e.to_string()))?;
        let hello = wire::encode(&self.hello()).map_err(|e| LinkError::Store(e.to_string()))?;
        let outbound = Outbound::Dialed(client);
        let reply = outbound.request(RQ_PEER_HELLO, hello).await?;
        let theirs: Hello = wire::decode(&reply).map_err(|e| LinkError::Refused(e.to_string()))?;
        self.check_hello(&theirs).map_err(LinkError::Refused)?;
        let link = Link::new(theirs, peer.addr.clone(), outbound, self.max_packet);
        self.register(&link).map_err(LinkError::Refused)?;
        slot.send_replace(Some(Arc::downgrade(&link)));
        self.clone().established(link.clone()).await;
        link.until_ended().await;
        Ok(())
    }
}
