//! What a fan-out may hold for its subscribers: a count and bytes per subscriber, and bytes for
//! all of them together. An event shared by many subscribers is one allocation, but each queue
//! holding it keeps it alive: the budgets count it once per queue, the memory a slow subscriber
//! pins.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

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
}

impl FanoutLimits {
    /// `events` per subscriber, with the default byte budgets.
    pub fn events(events: usize) -> Self {
        FanoutLimits { events, ..FanoutLimits::default() }
    }
}

impl Default for FanoutLimits {
    /// 65,536 events or 32 MiB per subscriber, 256 MiB for all.
    fn default() -> Self {
        FanoutLimits { events: 65_536, bytes: 32 << 20, total_bytes: 256 << 20 }
    }
}

/// The bytes an event queued for a subscriber counts: its type, its payload and 96 bytes for the
/// rest of it and the queue's slot.
pub fn footprint(event: &Event) -> u64 {
    let ty: usize = event.event_type.segments().map(|s| s.len() + 1).sum();
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
}

impl std::fmt::Display for CutOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CutOff::Events(n) => write!(f, "fell {n} notifications behind"),
            CutOff::Bytes(n) => write!(f, "fell {} of notifications behind", Bytes(*n)),
            CutOff::Total(n) => {
                write!(f, "held the most when the notifications queued for all clients reached {}", Bytes(*n))
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

/// One subscriber's queued bytes, added by the fan-out and taken by the subscriber. Once cut
/// off its bytes leave the total at once (its queue goes with it), so one cut-off is enough.
#[derive(Debug, Default)]
pub(super) struct Queued {
    state: Mutex<QueuedState>,
}

#[derive(Debug, Default)]
struct QueuedState {
    bytes: u64,
    cut: Option<CutOff>,
    /// The subscriber is gone.
    released: bool,
}

impl QueuedState {
    /// Whether its bytes are in the total: not once it was cut off or is gone.
    fn counted(&self) -> bool {
        self.cut.is_none() && !self.released
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

    /// `size` bytes were queued.
    pub(super) fn add(&self, size: u64, total: &AtomicU64) {
        let mut state = lock(&self.state);
        if state.counted() {
            state.bytes += size;
            total.fetch_add(size, Relaxed);
        }
    }

    /// An event of `size` bytes was taken from the queue.
    pub(super) fn take(&self, size: u64, total: &AtomicU64) {
        let mut state = lock(&self.state);
        if state.counted() {
            debug_assert!(size <= state.bytes, "taking {size} bytes of {}", state.bytes);
            let size = size.min(state.bytes);
            state.bytes -= size;
            total.fetch_sub(size, Relaxed);
        }
    }

    /// The subscriber is gone: what it held leaves the total, and nothing more is counted.
    pub(super) fn release(&self, total: &AtomicU64) {
        let mut state = lock(&self.state);
        if state.counted() {
            total.fetch_sub(std::mem::take(&mut state.bytes), Relaxed);
        }
        state.released = true;
    }

    /// Cuts it off: what it holds leaves the total. False if it already was.
    pub(super) fn cut(&self, why: CutOff, total: &AtomicU64) -> bool {
        let mut state = lock(&self.state);
        if state.cut.is_some() {
            return false;
        }
        if state.counted() {
            total.fetch_sub(std::mem::take(&mut state.bytes), Relaxed);
        }
        state.cut = Some(why);
        true
    }
}
