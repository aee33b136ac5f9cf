//! Time as the machines see it: passed in by the caller, never read from a clock. Microseconds
//! since an arbitrary origin, so a device's tick counter and a host's monotonic clock both fit.

use core::ops::{Add, Sub};

/// A point in time, in microseconds since the caller's origin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant {
    micros: u64,
}

/// A span of time in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Duration {
    micros: u64,
}

impl Instant {
    pub const ZERO: Instant = Instant { micros: 0 };

    pub const fn from_micros(micros: u64) -> Self {
        Instant { micros }
    }

    pub const fn from_millis(millis: u64) -> Self {
        Instant { micros: millis.saturating_mul(1000) }
    }

    pub const fn as_micros(&self) -> u64 {
        self.micros
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(&self, earlier: Instant) -> Duration {
        Duration { micros: self.micros.saturating_sub(earlier.micros) }
    }
}

impl Duration {
    pub const ZERO: Duration = Duration { micros: 0 };

    pub const fn from_micros(micros: u64) -> Self {
        Duration { micros }
    }

    pub const fn from_millis(millis: u64) -> Self {
        Duration { micros: millis.saturating_mul(1000) }
    }

    pub const fn from_secs(secs: u64) -> Self {
        Duration { micros: secs.saturating_mul(1_000_000) }
    }

    /// A `core::time::Duration` (what std and tokio speak), in whole microseconds, saturating.
    pub fn from_core(d: core::time::Duration) -> Self {
        Duration { micros: u64::try_from(d.as_micros()).unwrap_or(u64::MAX) }
    }

    pub const fn as_micros(&self) -> u64 {
        self.micros
    }

    pub const fn as_millis(&self) -> u64 {
        self.micros / 1000
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant { micros: self.micros.saturating_add(rhs.micros) }
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.since(rhs)
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, rhs: Duration) -> Duration {
        Duration { micros: self.micros.saturating_add(rhs.micros) }
    }
}
