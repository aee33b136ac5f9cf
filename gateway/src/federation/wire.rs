//! The federation link's messages (docs/FEDERATION.md): application requests (channel 1) of the
//! native protocol between two gateways, bodies in postcard. Either side sends any of them; each
//! is answered (an empty reply) once handled, which is the acknowledgement.
//!
//! Network input: a logged-in peer sends them. This file is also compiled into the fuzz crate
//! (`fuzz/src/lib.rs` includes it by `#[path]`, as `frontend/native/forward.rs`), so keep it to
//! std, serde, postcard and `rivulet_core`: no `crate::` paths. Target `federation`.

use rivulet_core::model::EventRef;
use rivulet_core::owned::EventPath;
use serde::{Deserialize, Serialize};

/// Opens a link (the gateway that dialed sends it; the answer is the other's): who each is.
pub const RQ_PEER_HELLO: u64 = 0x7210;
/// After the hello, each way: what the sender wants and how far it holds the receiver's
/// admission log; the receiver starts sending from there.
pub const RQ_PEER_START: u64 = 0x7214;
/// Interest adverts: what gateways want, flooded across the network.
pub const RQ_PEER_ADVERTS: u64 = 0x7211;
/// Events from the sender's admission log, answered once stored durably.
pub const RQ_PEER_EVENTS: u64 = 0x7212;
/// A ping; the round trip is the link's latency.
pub const RQ_PEER_PING: u64 = 0x7213;
/// The latest events of some types across the network ([`LatestAsk`] → [`LatestFound`]).
pub const RQ_PEER_LATEST: u64 = 0x7215;

/// The federation protocol version a hello carries; another is refused.
pub const VERSION: u16 = 1;

/// A link's first message, each way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    pub server_id: u64,
    /// The gateway's name, for status and logs.
    pub name: String,
    /// The sender's store id (its admission log's identity).
    pub store_id: u64,
    /// The largest packet the sender takes: a batch fits the smaller of the two.
    pub max_packet: u32,
}

/// The second message of a link, each way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// The receiver's store id and the last of its admission log entries the sender holds
    /// durably; `None` for a first link, or a store the sender never read (the log is then
    /// sent from its end at that moment).
    pub holds: Option<(u64, u64)>,
    /// Every advert the sender knows, its own first.
    pub adverts: Vec<Advert>,
}

/// What one gateway wants: the patterns of its subscribers (and the address where other
/// gateways may link to it). A newer `version` of an origin replaces an older one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    pub origin: u64,
    pub name: String,
    pub version: u64,
    /// Links it may still cross.
    pub ttl: u8,
    /// How often its origin repeats it, in seconds: an origin not heard of for three periods is
    /// forgotten.
    pub period_s: u32,
    pub listen: Option<String>,
    pub patterns: Vec<String>,
}

/// Adverts, flooded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adverts {
    pub adverts: Vec<Advert>,
}

/// An event and the links it may still cross (at least 1 when sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routed<'a> {
    pub ttl: u8,
    #[serde(borrow)]
    pub event: EventRef<'a>,
}

/// The sender's admission log up to entry `upto`: the entries the receiver wants (the others
/// are left out, and `upto` still moves past them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events<'a> {
    pub upto: u64,
    #[serde(borrow)]
    pub events: Vec<Routed<'a>>,
}

/// Asks a gateway for the latest event of each type matching `patterns` that it and the
/// gateways beyond it hold: it asks its links on with `ttl` one less, but not the gateways of
/// `visited` (those asked already on the way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestAsk {
    pub patterns: Vec<String>,
    pub ttl: u8,
    pub visited: Vec<u64>,
}

/// The answer to a [`LatestAsk`] (and to a client's `RQ_LATEST_NETWORK`): one event per type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestFound<'a> {
    #[serde(borrow)]
    pub events: Vec<EventRef<'a>>,
}

/// Why a message was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Not the postcard of the message.
    Malformed(postcard::Error),
    /// An advert's pattern that is not a pattern.
    BadPattern(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Malformed(e) => write!(f, "not a federation message: {e}"),
            WireError::BadPattern(p) => write!(f, "an advert's pattern {p:?} is not a pattern"),
        }
    }
}

impl std::error::Error for WireError {}

/// Decodes a message body; bytes after it are ignored (as `postcard::from_bytes` does). Bad bytes
/// are an error, never a panic.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, WireError> {
    postcard::from_bytes(body).map_err(WireError::Malformed)
}

/// Encodes a message body as [`decode`] reads it.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(message)
}

impl LatestAsk {
    /// The ask's patterns, parsed; an error for one that is not a pattern.
    pub fn parsed(&self) -> Result<Vec<EventPath>, WireError> {
        parse_patterns(&self.patterns)
    }
}

fn parse_patterns(patterns: &[String]) -> Result<Vec<EventPath>, WireError> {
    patterns.iter().map(|p| EventPath::parse_pattern(p).map_err(|_| WireError::BadPattern(p.clone()))).collect()
}

impl Advert {
    /// The advert's patterns, parsed; an error for one that is not a pattern.
    pub fn parsed(&self) -> Result<Vec<EventPath>, WireError> {
        parse_patterns(&self.patterns)
    }
}
