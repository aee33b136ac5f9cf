//! Time on embassy-time: the core driver's [`Clock`], and the jittered backoff between links.

use embassy_time::{Duration, Timer};
use rivulet_core::driver::Clock;
use rivulet_core::time::Instant;

/// The core driver's clock on embassy-time: microseconds since boot.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbassyClock;

/// The longest single timer the clock arms. A later deadline is reached in steps: the driver
/// only learns that the timer fired and asks the machine again, so a short step costs nothing,
/// and no tick arithmetic can overflow on a far deadline.
const LONGEST_WAIT_MICROS: u64 = 3_600_000_000;

impl Clock for EmbassyClock {
    fn now(&self) -> Instant {
        Instant::from_micros(embassy_time::Instant::now().as_micros())
    }

    fn at(&self, deadline: Instant) -> impl Future<Output = ()> {
        let wait = deadline.as_micros().saturating_sub(self.now().as_micros()).min(LONGEST_WAIT_MICROS);
        Timer::after(Duration::from_micros(wait))
    }
}

/// Delays between connection attempts: doubling from `initial` up to `max`, each drawn between
/// half and all of that, so devices that lost the same gateway come back spread out. A link the
/// server accepted starts the doubling over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// 200 ms doubling up to 30 s.
    pub const fn new() -> Self {
        Backoff { initial: Duration::from_millis(200), max: Duration::from_secs(30) }
    }

    /// The delay before retry number `attempt` (0 for the first).
    pub fn delay(&self, attempt: u32, jitter: &mut Jitter) -> Duration {
        let doubled = self.initial.as_ticks().saturating_mul(1u64 << attempt.min(32));
        let ceiling = doubled.min(self.max.as_ticks()).max(1);
        let half = ceiling / 2;
        Duration::from_ticks(half.saturating_add(jitter.below(ceiling.saturating_sub(half).saturating_add(1))))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// A xorshift64 generator for backoff jitter: a few bytes of state, no `rand`. Not for secrets.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seed it per device (the board's RNG, a unique id): devices with the same seed retry in step.
    pub const fn new(seed: u64) -> Self {
        // Xorshift is stuck at zero; any other state works.
        Jitter(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 when `n` is 0); the modulo bias is irrelevant for jitter.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_up_to_the_cap() {
        let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        let mut jitter = Jitter::new(7);
        for attempt in 0..40 {
            let ceiling = (100u64 << attempt.min(10)).min(1000);
            for _ in 0..50 {
                let delay = backoff.delay(attempt, &mut jitter).as_millis();
                assert!((ceiling / 2..=ceiling).contains(&delay), "attempt {attempt}: {delay} ms");
            }
        }
    }

    #[test]
    fn seeds_spread_devices_apart() {
        let backoff = Backoff::new();
        let firsts: Vec<u64> = (1..=8).map(|seed| backoff.delay(3, &mut Jitter::new(seed)).as_ticks()).collect();
        let mut distinct = firsts.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 4, "{firsts:?}");
        assert_ne!(Jitter::new(0).next_u64(), 0, "a zero seed still moves");
    }
}
