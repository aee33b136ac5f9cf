//! What every handle's task shares: the core driver over a tokio byte stream (boxed, so TCP and
//! TLS run the same code), a clock on tokio time, and writing into the transmit buffer with a
//! flush when it is full.

use embedded_io_adapters::tokio_1::FromTokio;
use rivulet_core::driver::{Clock, Driver, DriverError};
use rivulet_core::time::Instant;
use rivulet_core::wire::{Framing, LinkDecoder};

/// The core driver over a tokio stream, with either framing.
pub(crate) type TokioDriver<'b, T> = Driver<'b, FromTokio<T>, LinkDecoder<'b>>;

/// Any byte stream a link runs over: TCP, TLS over TCP, whatever a connector or acceptor makes.
///
/// `Sync` because the tasks hold it across awaits behind `&self`; it is only ever used through
/// `&mut`, and every tokio and rustls stream is `Sync` anyway.
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync> Io for T {}

/// A link's stream, boxed: the client and connection tasks are compiled once for every stream
/// type, and one indirect call per read or write is nothing next to the system call behind it.
pub(crate) type Stream = Box<dyn Io>;

pub(crate) type LinkError = DriverError<std::io::Error>;

/// Receive and transmit buffers for a link carrying packets up to `max_packet` bytes. The
/// receive buffer holds exactly the largest frame of that many bytes in `framing`, so a larger
/// packet is `Oversize`; the transmit buffer has a little room to spare.
pub(crate) fn buffers(framing: Framing, max_packet: usize) -> (LinkBuffer, LinkBuffer) {
    (LinkBuffer::new(framing.max_frame_len(max_packet)), LinkBuffer::new(max_packet.saturating_add(16)))
}

/// A link's buffer, zeroed, in an anonymous mapping of its own: a page costs memory only once
/// the link writes into it, so a connection that never logs in holds next to nothing of its
/// 64 KiB buffers, and every page goes back to the system when the link ends (from the heap,
/// glibc's malloc kept what thousands of connections had used after they were gone). Small
/// buffers, and a mapping refused, come from the heap.
pub(crate) enum LinkBuffer {
    Mapped(memmap2::MmapMut),
    Heap(Vec<u8>),
}

impl LinkBuffer {
    /// Below this a page or two of the heap costs less than a mapping.
    const MAPPED_FROM: usize = 16 * 1024;

    pub(crate) fn new(len: usize) -> Self {
        if len >= Self::MAPPED_FROM
            && let Ok(map) = memmap2::MmapMut::map_anon(len)
        {
            return LinkBuffer::Mapped(map);
        }
        LinkBuffer::Heap(vec![0; len])
    }
}

impl std::ops::Deref for LinkBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            LinkBuffer::Mapped(map) => map,
            LinkBuffer::Heap(vec) => vec,
        }
    }
}

impl std::ops::DerefMut for LinkBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            LinkBuffer::Mapped(map) => map,
            LinkBuffer::Heap(vec) => vec,
        }
    }
}

/// The core machines' clock on tokio time, so tests may pause and advance it.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        TokioClock { origin: tokio::time::Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn at(&self, deadline: Instant) -> impl Future<Output = ()> {
        tokio::time::sleep_until(self.origin + std::time::Duration::from_micros(deadline.as_micros()))
    }
}

/// The core's write error with a tokio link's error.
pub(crate) type WriteError = rivulet_core::driver::WriteError<LinkError>;

/// Delays between reconnection attempts: doubling from `initial` up to `max`, each drawn
/// between half and all of that (jitter, so clients that lost the same server spread out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: std::time::Duration,
    pub max: std::time::Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: std::time::Duration::from_millis(100), max: std::time::Duration::from_secs(10) }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32, jitter: &mut Jitter) -> std::time::Duration {
        let ceiling = self.initial.saturating_mul(1u32 << attempt.min(20)).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(jitter.next_unit())
    }
}

/// A small xorshift generator for backoff jitter, seeded per process and per client.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(std::process::id().into());
        Jitter(hasher.finish() | 1)
    }

    /// A number in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}
