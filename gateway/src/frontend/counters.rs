//! The counters a front-end that runs its own connections keeps (the hat and Kelvin
//! front-ends; the native one reads `rivulet_tokio::server`'s), as atomics its connection tasks
//! bump, and their snapshot for status and metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::FrontendStats;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub over_limit: AtomicU64,
    pub logins_refused: AtomicU64,
    pub notified: AtomicU64,
    pub registrations_refused: AtomicU64,
    pub too_slow: AtomicU64,
    pub bad_input: AtomicU64,
    /// Connections closed before their init (or first message) in time.
    pub init_timeouts: AtomicU64,
    pub tls_failed: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub accept_failed: AtomicU64,
}

impl Counters {
    /// The counters now, with `connections` open.
    pub fn snapshot(&self, connections: u64) -> FrontendStats {
        FrontendStats {
            connections,
            accepted: self.accepted.load(Relaxed),
            over_limit: self.over_limit.load(Relaxed),
            logins_refused: self.logins_refused.load(Relaxed),
            notified: self.notified.load(Relaxed),
            registrations_refused: self.registrations_refused.load(Relaxed),
            too_slow: self.too_slow.load(Relaxed),
            bad_input: self.bad_input.load(Relaxed),
            handshake_failed: self.init_timeouts.load(Relaxed) + self.tls_failed.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            too_large: 0,
            keepalive_capped: 0,
            accept_failed: self.accept_failed.load(Relaxed),
        }
    }
}
