//! The broker's counters: what `rivulet status` and the metrics endpoint show of it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the commit latency histogram's buckets.
pub const COMMIT_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// A Prometheus-style histogram: cumulative counts per bucket, plus sum and count.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub(super) fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bound, bucket) in COMMIT_BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.sum_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Cumulative counts per bucket of [`COMMIT_BUCKETS`], the sum in seconds, the count.
    pub fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        let buckets = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        (buckets, self.sum_micros.load(Relaxed) as f64 / 1e6, self.count.load(Relaxed))
    }
}

/// Counters for `rivulet status` and the metrics endpoint.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events stored durably.
    pub events_in: AtomicU64,
    /// Volatile events routed (never stored).
    pub events_volatile: AtomicU64,
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    pub commit_latency: Histogram,
    /// Events imported from peer gateways (federation), and copies dropped as already here.
    pub imported: AtomicU64,
    pub import_duplicates: AtomicU64,
}
