//! `[federation]` and `--peer`: the gateways this one links to (docs/FEDERATION.md), how it
//! logs in there, and the network's limits (TTL, the de-duplication window, ping and advert
//! periods).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The smallest de-duplication window: more than the imports that can wait for one commit (64
/// batches of 256 events), so a copy arriving over a second link is always recognised.
const MIN_WINDOW: usize = 20_000;

/// `[federation]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FederationSection {
    name: Option<String>,
    token: Option<String>,
    ttl: Option<u8>,
    window: Option<usize>,
    ping_s: Option<u64>,
    advert_s: Option<u64>,
    discover: Option<bool>,
    max_links: Option<usize>,
    advertise: Option<String>,
    #[serde(default)]
    peers: Vec<PeerEntry>,
}

/// A gateway to link to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// `host:port` of its native listener.
    pub addr: String,
    /// The client name to log in with there (else `[federation] name`).
    pub name: Option<String>,
    /// The token of that client there, hex (else `[federation] token`); none for a gateway
    /// without `[[clients]]`.
    pub token: Option<String>,
    /// Dial with TLS, trusting the CA certificates in this PEM file (the peer's native TLS
    /// listener); plain TCP when left out.
    pub tls_ca: Option<PathBuf>,
    /// The name the peer's certificate must hold (else the address's host).
    pub tls_name: Option<String>,
}

impl PeerEntry {
    /// A peer at `addr`, dialed over plain TCP, logging in as `[federation] name`.
    pub fn plain(addr: impl Into<String>) -> Self {
        PeerEntry { addr: addr.into(), name: None, token: None, tls_ca: None, tls_name: None }
    }

    /// The TLS connection to dial, when the entry asks for TLS.
    pub fn tls(&self) -> Result<Option<rivulet_tokio::tls::Connector>, String> {
        let Some(ca) = &self.tls_ca else { return Ok(None) };
        let config = rivulet_tokio::tls::client_config(ca).map_err(|e| format!("peer {}: {e}", self.addr))?;
        let host = self.addr.rsplit_once(':').map_or(self.addr.as_str(), |(host, _)| host).trim_matches(['[', ']']);
        let name = self.tls_name.as_deref().unwrap_or(host);
        rivulet_tokio::tls::Connector::new(self.addr.clone(), name, config)
            .map(Some)
            .map_err(|e| format!("peer {}: {e}", self.addr))
    }
}

/// Gateway federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationSettings {
    pub peers: Vec<PeerEntry>,
    /// The client name this gateway logs in with at its peers.
    pub name: String,
    pub token: Option<String>,
    /// Links an event crosses at most.
    pub ttl: u8,
    /// Imported event ids remembered to drop second copies before asking the store.
    pub window: usize,
    /// How often each link is pinged (its latency).
    pub ping_every: Duration,
    /// How often this gateway repeats its interest advert; a gateway not heard of for three
    /// periods is forgotten.
    pub advert_every: Duration,
    /// Whether it links by itself to gateways it hears of whose subscriptions overlap its own.
    pub discover: bool,
    /// Links discovery makes at most (configured peers are dialed whatever the count).
    pub max_links: usize,
    /// The address other gateways dial to reach this one (in its adverts); else the native
    /// listener's, unless that is a wildcard address.
    pub advertise: Option<String>,
}

impl Default for FederationSettings {
    fn default() -> Self {
        FederationSettings {
            peers: Vec::new(),
            name: "gateway".into(),
            token: None,
            ttl: 64,
            window: 100_000,
            ping_every: Duration::from_secs(5),
            advert_every: Duration::from_secs(30),
            discover: false,
            max_links: 5,
            advertise: None,
        }
    }
}

impl FederationSettings {
    pub(super) fn from_section(section: Option<FederationSection>) -> Self {
        let d = FederationSettings::default();
        let Some(s) = section else { return d };
        FederationSettings {
            peers: s.peers,
            name: s.name.unwrap_or(d.name),
            token: s.token,
            ttl: s.ttl.unwrap_or(d.ttl),
            window: s.window.unwrap_or(d.window),
            ping_every: s.ping_s.map_or(d.ping_every, Duration::from_secs),
            advert_every: s.advert_s.map_or(d.advert_every, Duration::from_secs),
            discover: s.discover.unwrap_or(d.discover),
            max_links: s.max_links.unwrap_or(d.max_links),
            advertise: s.advertise,
        }
    }

    /// `--peer ADDR` flags: more peers, logging in as `[federation] name`.
    pub(super) fn add_peers(&mut self, addrs: &[String]) {
        for addr in addrs {
            if !self.peers.iter().any(|p| &p.addr == addr) {
                self.peers.push(PeerEntry::plain(addr.clone()));
            }
        }
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.ttl == 0 {
            return Err("[federation] ttl must be at least 1".into());
        }
        if self.window < MIN_WINDOW {
            return Err(format!(
                "[federation] window {} is too small: at least {MIN_WINDOW} (more imported events than can wait for a commit)",
                self.window
            ));
        }
        if self.ping_every.is_zero() || self.advert_every.is_zero() {
            return Err("[federation] ping_s and advert_s must be at least 1".into());
        }
        for peer in &self.peers {
            if let Some(token) = peer.token.as_ref().or(self.token.as_ref())
                && crate::access::from_hex(token).is_none()
            {
                return Err(format!("[federation] the token for peer {}: not hex digits", peer.addr));
            }
            peer.tls()?;
        }
        Ok(())
    }

    /// The name and token (bytes) to log in at `peer` with.
    pub fn login(&self, peer: &PeerEntry) -> (String, Option<Vec<u8>>) {
        let name = peer.name.clone().unwrap_or_else(|| self.name.clone());
        let token = peer.token.as_ref().or(self.token.as_ref()).and_then(|t| crate::access::from_hex(t));
        (name, token)
    }
}
