//! What a fan-out may hold for its subscribers: a count and bytes per subscriber, and bytes for
//! all of them together. An event shared by many subscribers is one allocation, but each queue
//! holding it keeps it alive: the budgets count it once per queue, the memory a slow subscriber
//! pins. Halfway there a subscriber is congested: publishers wait for it (`flow.rs`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, so that tests with a paused clock see stalls.
use tokio::time::Instant;

use rivulet_core::owned::{Event, Payload};

use super::lock;

/// What a fan-out queues before it cuts a subscriber off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutLimits {
    /// Events queued per subscriber.
    pub events: usize,
    /// Bytes of events queued per subscriber (see [`footprint`]).
    pub bytes: u64,
    /// Bytes queued for all subscribers together: past it the subscriber holding the most is cut
    /// off, whoever the event was for.
    pub total_bytes: u64,
    /// Events queued to a subscriber (at most half of [`FanoutLimits::events`]), or half of
    /// [`FanoutLimits::bytes`], past which publishers that wait for room
    /// ([`super::Fanout::room`]) wait until it has taken half of them.
    pub high_water: usize,
    /// A congested subscriber that takes nothing for this long is cut off, and publishers go on;
    /// zero: publishers never wait, a subscriber is cut off at its limits.
    pub stall: Duration,
}

impl FanoutLimits {
    /// `events` per subscriber, with the default byte budgets.
    pub fn events(events: usize) -> Self {
        FanoutLimits { events, ..FanoutLimits::default() }
    }

    /// Whether a queue of `events` and `bytes` is past the high-water mark.
    fn over_high_water(&self, events: u64, bytes: u64) -> bool {
        events >= self.high_water as u64 || bytes >= self.bytes / 2
    }

    /// Whether a congested queue has taken enough to let publishers go on: half of the mark.
    fn under_low_water(&self, events: u64, bytes: u64) -> bool {
        events <= self.high_water as u64 / 2 && bytes <= self.bytes / 4
    }
}

impl Default for FanoutLimits {
    /// 65,536 events or 32 MiB per subscriber, 256 MiB for all; publishers wait past 8,192
    /// events or 16 MiB; a congested subscriber that takes nothing for 2 s is cut off.
    fn default() -> Self {
        FanoutLimits {
            events: 65_536,
            bytes: 32 << 20,
            total_bytes: 256 << 20,
            high_water: 8192,
            stall: Duration::from_secs(2),
        }
    }
}

/// The bytes an event queued for a subscriber counts: its type, its payload and 96 bytes for the
/// rest of it and the queue's slot.
pub fn footprint(event: &Event) -> u64 {
    // Each segment and its length prefix (one byte below 128): no walk over the segments.
    let ty = event.event_type.as_packed().len();
    let payload = match &event.payload {
        Some(Payload::Binary { kind, data }) => kind.len() + data.len(),
        Some(Payload::Json(text)) => text.len(),
        None => 0,
    };
    (96 + ty + payload) as u64
}

/// Why a subscriber was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutOff {
    /// Its queue held [`FanoutLimits::events`] events.
    Events(usize),
    /// Its queue would have held more than [`FanoutLimits::bytes`].
    Bytes(u64),
    /// All queues together would have held more than [`FanoutLimits::total_bytes`], and its
    /// held the most.
    Total(u64),
    /// Past its high-water mark it took nothing for [`FanoutLimits::stall`].
    Stalled(Duration),
}

impl std::fmt::Display for CutOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CutOff::Events(n) => write!(f, "fell {n} notifications behind"),
            CutOff::Bytes(n) => write!(f, "fell {} of notifications behind", Bytes(*n)),
            CutOff::Total(n) => {
                write!(f, "held the most when the notifications queued for all clients reached {}", Bytes(*n))
            }
            CutOff::Stalled(d) => {
                write!(f, "took no notification for {} ms while publishers waited for it", d.as_millis())
            }
        }
    }
}

/// A byte count for people: whole MiB when it is some, else bytes.
struct Bytes(u64);

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            n if n >= 1 << 20 => write!(f, "{} MiB", n >> 20),
            n => write!(f, "{n} bytes"),
        }
    }
}

/// What a fan-out's queues share: the bytes queued for all, and the congested subscribers that
/// publishers wait for.
#[derive(Debug)]
pub(super) struct Pool {
    pub(super) limits: FanoutLimits,
    /// Bytes queued for all subscribers: what [`FanoutLimits::total_bytes`] bounds.
    pub(super) total: AtomicU64,
    /// Subscribers past their high-water mark.
    pub(super) congested: AtomicUsize,
    /// Told whenever one of them is no longer.
    pub(super) relieved: tokio::sync::Notify,
}

impl Pool {
    pub(super) fn new(limits: FanoutLimits) -> Pool {
        Pool { limits, total: AtomicU64::new(0), congested: AtomicUsize::new(0), relieved: tokio::sync::Notify::new() }
    }

    fn relieve(&self) {
        self.congested.fetch_sub(1, Relaxed);
        self.relieved.notify_waiters();
    }
}

/// One subscriber's queued events and bytes, added by the fan-out and taken by the subscriber.
/// Once cut off its bytes leave the total at once (its queue goes with it), so one cut-off is
/// enough.
#[derive(Debug, Default)]
pub(super) struct Queued {
    state: Mutex<QueuedState>,
}

#[derive(Debug, Default)]
struct QueuedState {
    bytes: u64,
    events: u64,
    /// Past the high-water mark: since when it took nothing (the last event it took, or the
    /// moment it got there).
    congested: Option<Instant>,
    cut: Option<CutOff>,
    /// The subscriber is gone.
    released: bool,
}

impl QueuedState {
    /// Whether its bytes are in the total: not once it was cut off or is gone.
    fn counted(&self) -> bool {
        self.cut.is_none() && !self.released
    }

    /// It no longer counts as congested (it took enough, was cut off, or went).
    fn relieve(&mut self, pool: &Pool) {
        if self.congested.take().is_some() {
            pool.relieve();
        }
    }
}

impl Queued {
    pub(super) fn new() -> Arc<Queued> {
        Arc::new(Queued::default())
    }

    pub(super) fn bytes(&self) -> u64 {
        lock(&self.state).bytes
    }

    pub(super) fn cut_off(&self) -> Option<CutOff> {
        lock(&self.state).cut
    }

    /// Whether `size` more bytes keep it within `limit`; an empty queue takes one event
    /// whatever its size (a client that keeps up gets every event it may receive).
    pub(super) fn fits(&self, size: u64, limit: u64) -> bool {
        let bytes = lock(&self.state).bytes;
        bytes == 0 || bytes.saturating_add(size) <= limit
    }

    /// An event of `size` bytes was queued.
    pub(super) fn add(&self, size: u64, pool: &Pool) {
        let mut state = lock(&self.state);
        if state.counted() {
            state.bytes += size;
            state.events += 1;
            pool.total.fetch_add(size, Relaxed);
            if state.congested.is_none() && pool.limits.over_high_water(state.events, state.bytes) {
                state.congested = Some(Instant::now());
                pool.congested.fetch_add(1, Relaxed);
            }
        }
    }

    /// [`Queued::add`] undone: the queue did not take the event after all.
    pub(super) fn undo(&self, size: u64, pool: &Pool) {
        self.remove(size, pool, false);
    }

    /// An event of `size` bytes was taken from the queue.
    pub(super) fn take(&self, size: u64, pool: &Pool) {
        self.remove(size, pool, true);
    }

    fn remove(&self, size: u64, pool: &Pool, taken: bool) {
        let mut state = lock(&self.state);
        if state.counted() {
            debug_assert!(size <= state.bytes, "taking {size} bytes of {}", state.bytes);
            let size = size.min(state.bytes);
            state.bytes -= size;
            state.events = state.events.saturating_sub(1);
            pool.total.fetch_sub(size, Relaxed);
            if state.congested.is_some() {
                if pool.limits.under_low_water(state.events, state.bytes) {
                    state.relieve(pool);
                } else if taken {
                    state.congested = Some(Instant::now());
                }
            }
        }
    }

    pub(super) fn is_congested(&self) -> bool {
        lock(&self.state).congested.is_some()
    }

    /// How long it has been congested without taking anything; zero when it is not congested.
    pub(super) fn stalled_for(&self, now: Instant) -> Duration {
        lock(&self.state).congested.map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// The subscriber is gone: what it held leaves the total, and nothing more is counted.
    pub(super) fn release(&self, pool: &Pool) {
        let mut state = lock(&self.state);
        if state.counted() {
            pool.total.fetch_sub(std::mem::take(&mut state.bytes), Relaxed);
        }
        state.relieve(pool);
        state.released = true;
    }

    /// Cuts it off: what it holds leaves the total. False if it already was.
    pub(super) fn cut(&self, why: CutOff, pool: &Pool) -> bool {
        let mut state = lock(&self.state);
        if state.cut.is_some() {
            return false;
        }
        if state.counted() {
            pool.total.fetch_sub(std::mem::take(&mut state.bytes), Relaxed);
        }
        state.relieve(pool);
        state.cut = Some(why);
        true
    }
}
