//! What every load generator measures, the same way `rivulet bench` does: each payload starts with
//! its publisher (u32), its sequence number (u64) and when it was handed to the client library
//! (u64 nanoseconds on a clock every client of the run shares), little-endian, then zeros up to the
//! payload size. A subscriber tells from those what it missed, what it got twice and how long each
//! message took; latencies go into the same buckets as `rivulet bench`'s (exact below 1 ms, then
//! 64 per power of two).

use std::time::Instant;

/// Bytes of the header every payload starts with.
pub const HEADER: usize = 4 + 8 + 8;

/// A payload of `size` bytes carrying publisher, sequence number and send time.
pub fn payload(size: usize, publisher: u32, seq: u64, origin: Instant) -> Vec<u8> {
    let mut data = vec![0u8; size.max(HEADER)];
    data[..4].copy_from_slice(&publisher.to_le_bytes());
    data[4..12].copy_from_slice(&seq.to_le_bytes());
    data[12..20].copy_from_slice(&nanos_since(origin).to_le_bytes());
    data
}

fn nanos_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Latencies in microseconds: exact below 1024 µs, then 64 buckets per power of two (about 1.5 %
/// wide), as `rivulet bench` keeps them.
#[derive(Debug, Clone)]
pub struct Latencies {
    buckets: Vec<u64>,
    count: u64,
}

const EXACT: u64 = 1024;
const PER_OCTAVE: u64 = 64;

impl Default for Latencies {
    fn default() -> Self {
        Latencies { buckets: vec![0; (EXACT + PER_OCTAVE * 54) as usize], count: 0 }
    }
}

impl Latencies {
    fn bucket(micros: u64) -> usize {
        if micros < EXACT {
            return micros as usize;
        }
        let octave = 63 - u64::from(micros.leading_zeros());
        let within = (micros >> (octave - 6)) & (PER_OCTAVE - 1);
        (EXACT + (octave - 10) * PER_OCTAVE + within) as usize
    }

    /// The smallest value of a bucket.
    fn floor(bucket: usize) -> u64 {
        let bucket = bucket as u64;
        if bucket < EXACT {
            return bucket;
        }
        let octave = (bucket - EXACT) / PER_OCTAVE + 10;
        let within = (bucket - EXACT) % PER_OCTAVE;
        (1 << octave) + (within << (octave - 6))
    }

    pub fn record(&mut self, micros: u64) {
        let index = Self::bucket(micros).min(self.buckets.len() - 1);
        self.buckets[index] += 1;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Latencies) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
    }

    /// The value below which a fraction `q` of the samples fall, in microseconds.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::floor(bucket));
            }
        }
        None
    }
}

/// What one subscriber saw: which sequence numbers of each publisher arrived, duplicates,
/// latencies, and when the last new message came.
#[derive(Debug)]
pub struct Tracker {
    origin: Instant,
    /// Per publisher, one bit per sequence number.
    seen: Vec<Vec<u64>>,
    pub latencies: Latencies,
    pub unique: u64,
    pub duplicates: u64,
    /// Payloads too short or from an unknown publisher (a bug in a generator if ever non-zero).
    pub malformed: u64,
    pub last_delivery: Option<Instant>,
}

impl Tracker {
    pub fn new(publishers: u32, origin: Instant) -> Tracker {
        Tracker {
            origin,
            seen: vec![Vec::new(); publishers as usize],
            latencies: Latencies::default(),
            unique: 0,
            duplicates: 0,
            malformed: 0,
            last_delivery: None,
        }
    }

    /// Records one delivered payload; true if it was new.
    pub fn record(&mut self, data: &[u8]) -> bool {
        let word = |at: usize| data.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        let publisher = data.get(0..4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
        let (Some(publisher), Some(seq), Some(sent)) = (publisher, word(4), word(12)) else {
            self.malformed += 1;
            return false;
        };
        let Some(bits) = self.seen.get_mut(publisher as usize) else {
            self.malformed += 1;
            return false;
        };
        let (index, bit) = ((seq / 64) as usize, seq % 64);
        if bits.len() <= index {
            bits.resize(index + 1, 0);
        }
        if bits[index] & (1 << bit) != 0 {
            self.duplicates += 1;
            return false;
        }
        bits[index] |= 1 << bit;
        self.unique += 1;
        self.latencies.record(nanos_since(self.origin).saturating_sub(sent) / 1000);
        self.last_delivery = Some(Instant::now());
        true
    }
}

/// The outcome of one run of one workload against one system, as every generator reports it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub published: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// From the first publication to the last delivery (`rivulet bench`: see `timing` in the report).
    pub seconds: f64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency_us_p50: Option<u64>,
    pub latency_us_p99: Option<u64>,
    pub latency_us_p999: Option<u64>,
    pub latency_us_max: Option<u64>,
    /// Anything that ended early (a subscriber cut off by the broker, …).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl Outcome {
    /// Sums what the subscribers saw.
    pub fn from_trackers(
        trackers: &[Tracker],
        published: u64,
        subscribers: u32,
        size: usize,
        start: Instant,
    ) -> Outcome {
        let mut latencies = Latencies::default();
        let (mut delivered, mut duplicated) = (0, 0);
        let mut last = None::<Instant>;
        for tracker in trackers {
            latencies.merge(&tracker.latencies);
            delivered += tracker.unique;
            duplicated += tracker.duplicates;
            last = last.max(tracker.last_delivery);
        }
        let expected = published * u64::from(subscribers);
        let seconds = last.map_or(0.0, |last| last.duration_since(start).as_secs_f64());
        let per_sec = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
        Outcome {
            published,
            expected,
            delivered,
            lost: expected.saturating_sub(delivered),
            duplicated,
            seconds,
            msgs_per_sec: per_sec(delivered as f64),
            mb_per_sec: per_sec(delivered as f64 * size as f64) / 1e6,
            latency_us_p50: latencies.quantile(0.5),
            latency_us_p99: latencies.quantile(0.99),
            latency_us_p999: latencies.quantile(0.999),
            latency_us_max: latencies.quantile(1.0),
            notes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_round_trips_through_the_tracker() {
        let origin = Instant::now();
        let mut tracker = Tracker::new(2, origin);
        assert!(tracker.record(&payload(64, 1, 5, origin)));
        assert!(!tracker.record(&payload(64, 1, 5, origin)), "the same sequence number twice");
        assert!(tracker.record(&payload(1024, 0, 5, origin)), "another publisher's 5");
        assert!(!tracker.record(&payload(64, 7, 0, origin)), "no such publisher");
        assert!(!tracker.record(&[1, 2, 3]), "too short");
        assert_eq!((tracker.unique, tracker.duplicates, tracker.malformed), (2, 1, 2));
        let outcome = Outcome::from_trackers(&[tracker], 3, 1, 64, origin);
        assert_eq!((outcome.expected, outcome.delivered, outcome.lost, outcome.duplicated), (3, 2, 1, 1));
    }

    #[test]
    fn quantiles_use_rivulet_bench_buckets() {
        let mut l = Latencies::default();
        assert_eq!(l.quantile(0.5), None);
        for v in 1..=1000 {
            l.record(v);
        }
        assert_eq!((l.quantile(0.5), l.quantile(0.99), l.quantile(1.0)), (Some(500), Some(990), Some(1000)));
        for v in [1024u64, 1500, 123_456, 1 << 40] {
            let floor = Latencies::floor(Latencies::bucket(v));
            assert!(floor <= v && (v - floor) as f64 / v as f64 <= 1.0 / 64.0, "{v}: {floor}");
        }
    }
}
