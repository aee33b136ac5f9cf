//! `[chaski]`: the Chaski front-end (`--chaski-listen`): Chaski nodes (chaski-confluent's
//! `ChaskiStreamer` with the JSON codec of docs/CHASKI.md) connect there, TCP and UDP on one port.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[chaski]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChaskiSection {
    listen: Option<SocketAddr>,
    client: Option<String>,
    name: Option<String>,
    max_frame: Option<usize>,
    ttl: Option<u8>,
    pool: Option<usize>,
    #[serde(default)]
    peers: Vec<String>,
}

/// The Chaski front-end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaskiSettings {
    /// TCP and UDP on this address (Chaski binds both on one port); off when `None`.
    pub listen: Option<SocketAddr>,
    /// The client every node on the listener is to the ACLs (Chaski has no login).
    pub client: String,
    /// The gateway's node name in handshakes and status.
    pub name: String,
    /// Largest frame a node may send, in bytes; a larger one closes that connection.
    pub max_frame: usize,
    /// The TTL of a message the gateway sends first (one a node sent keeps its own, less one).
    pub ttl: u8,
    /// Message uuids remembered to drop a second copy (Chaski's own pool holds 128).
    pub pool: usize,
    /// Chaski nodes the gateway dials (`host:port`), as a node's `connect` does.
    pub peers: Vec<String>,
}

impl Default for ChaskiSettings {
    fn default() -> Self {
        ChaskiSettings {
            listen: None,
            client: "chaski".into(),
            name: "rivulet".into(),
            max_frame: 4 << 20,
            ttl: 64,
            pool: 4096,
            peers: Vec::new(),
        }
    }
}

impl ChaskiSettings {
    pub(super) fn from_section(section: Option<ChaskiSection>) -> Self {
        let d = ChaskiSettings::default();
        let Some(s) = section else { return d };
        ChaskiSettings {
            listen: s.listen,
            client: s.client.unwrap_or(d.client),
            name: s.name.unwrap_or(d.name),
            max_frame: s.max_frame.unwrap_or(d.max_frame),
            ttl: s.ttl.unwrap_or(d.ttl),
            pool: s.pool.unwrap_or(d.pool),
            peers: s.peers,
        }
    }

    pub(super) fn check(&self, clients: &[super::ClientEntry]) -> Result<(), String> {
        if self.max_frame < 1024 {
            return Err(format!("[chaski] max_frame {} is too small: at least 1024 bytes", self.max_frame));
        }
        if self.ttl == 0 || self.pool == 0 {
            return Err("[chaski] ttl and pool must be at least 1".into());
        }
        let serving = self.listen.is_some() || !self.peers.is_empty();
        if serving && !clients.is_empty() && !clients.iter().any(|c| c.name == self.client) {
            return Err(format!(
                "[chaski] client {:?} is not among the [[clients]]: Chaski nodes have no login, so the listener's \
                 nodes are that client to the ACLs (add it with `rivulet credential {}`)",
                self.client, self.client
            ));
        }
        Ok(())
    }
}
