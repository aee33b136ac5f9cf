//! Why the broker did not do what a front-end asked for a client: small kinds, so each
//! front-end can answer in its own protocol's terms.

use crate::access::Denied;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerError {
    /// The client may not (its ACL); the reason names what and what it may.
    Denied(String),
    /// The request itself is wrong: a wildcard in an event type, too many patterns, a
    /// malformed forwarded request, an unknown request type.
    Invalid(String),
    /// Not now: the gateway is stopping, or the client asked for is not connected.
    Unavailable(String),
    /// The store failed; nothing of this was stored.
    Store(StoreError),
}

impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokerError::Denied(m) | BrokerError::Invalid(m) | BrokerError::Unavailable(m) => f.write_str(m),
            BrokerError::Store(e) => write!(f, "store: {e}"),
        }
    }
}

impl std::error::Error for BrokerError {}

impl From<Denied> for BrokerError {
    fn from(denied: Denied) -> Self {
        BrokerError::Denied(denied.0)
    }
}

impl From<StoreError> for BrokerError {
    fn from(e: StoreError) -> Self {
        BrokerError::Store(e)
    }
}
