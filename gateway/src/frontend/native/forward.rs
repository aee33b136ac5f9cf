//! The payload of an `RQ_FORWARD` request ([`Forward`]) and its postcard decoding and encoding.
//!
//! Network input: any connected client sends it. This file is also compiled into the fuzz crate
//! (`fuzz/src/lib.rs` includes it by `#[path]`, the way `core/tests` include the fuzz harnesses),
//! so that fuzzing it does not build the whole gateway (redb, tokio, rustls). Keep it to std,
//! serde and postcard: no `crate::` paths. Target `forward`, docs/RELIABILITY.md "Fuzzing".

/// A request for another client, by name (the newest connection of that name answers).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Forward {
    pub client: String,
    pub rq_type: u64,
    pub flags: u64,
    pub payload: Vec<u8>,
}

/// Decodes a request payload: postcard of a [`Forward`]. Bytes after it are ignored (as
/// `postcard::from_bytes` does). Bad bytes are an error, never a panic.
pub fn decode(payload: &[u8]) -> Result<Forward, postcard::Error> {
    postcard::from_bytes(payload)
}

/// Encodes `forward` as [`decode`] reads it.
pub fn encode(forward: &Forward) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(forward)
}
