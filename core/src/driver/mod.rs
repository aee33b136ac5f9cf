//! One async loop that runs a session machine over any byte stream implementing
//! `embedded_io_async::{Read, Write}`: an embassy-net socket, a UART, a tokio stream behind an
//! adapter. It needs no executor features and no allocation; time comes from a [`Clock`].
//!
//! [`Driver::step`] does one bounded piece of work (handle one received packet, run due
//! timers, or write what is owed and wait for input or the next deadline) and returns the event
//! that produced, if any. The caller loops; between steps it may call the machine's own methods
//! with [`Driver::tx`] as the output and [`Driver::flush`]. Every await point is cancel-safe
//! as long as the stream's `read` and `write` are, so `step` may be raced against other futures.

mod select;

use embedded_io_async::{Read, Write};

use crate::session::{self, Machine};
use crate::time::Instant;
use crate::wire::{self, FrameDecoder, FrameWriter};

pub use select::{Either, select};

/// The time source of a driver.
pub trait Clock {
    fn now(&self) -> Instant;
    /// Completes at `deadline` (at once if it has passed).
    fn at(&self, deadline: Instant) -> impl Future<Output = ()>;
}

/// Why a driver stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DriverError<E> {
    /// The byte stream failed.
    Io(E),
    /// The peer closed the byte stream.
    Closed,
    /// A frame was bad (bad length prefix, oversize, CRC). The link is over; with a resynchronising
    /// framing (serial) the same driver can carry the next link after `link_down`/`link_up`.
    Frame(wire::Error),
    /// The machine refused what it received or could not write.
    Session(session::Error),
}

impl<E: core::fmt::Debug> core::fmt::Display for DriverError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DriverError::Io(e) => write!(f, "i/o: {e:?}"),
            DriverError::Closed => f.write_str("stream closed by peer"),
            DriverError::Frame(e) => write!(f, "framing: {e}"),
            DriverError::Session(e) => write!(f, "session: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl<E: core::fmt::Debug> std::error::Error for DriverError<E> {}

/// Why [`write_with_room`] wrote nothing. `L` is what a broken link tells: the driver's error
/// ([`DriverError`]), or only that it broke ([`LinkBroken`]: a device that just ends the link
/// saves the code that would carry the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WriteError<L> {
    /// The machine refused (closed, too many requests, too large for the peer...).
    Session(session::Error),
    /// The packet is larger than the whole transmit buffer: no flush makes room for it.
    TooLarge,
    /// Flushing to make room failed: the link is broken.
    Link(L),
}

impl<L: core::fmt::Display> core::fmt::Display for WriteError<L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WriteError::Session(e) => write!(f, "session: {e}"),
            WriteError::TooLarge => f.write_str("larger than the whole transmit buffer"),
            WriteError::Link(e) => write!(f, "link broken while making room: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl<L: core::fmt::Debug + core::fmt::Display> std::error::Error for WriteError<L> {}

/// A broken link, without the driver's error: a [`WriteError`] for callers that only end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinkBroken;

impl<E> From<DriverError<E>> for LinkBroken {
    fn from(_: DriverError<E>) -> Self {
        LinkBroken
    }
}

impl core::fmt::Display for LinkBroken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the link broke")
    }
}

/// Runs `write` (a machine's method that writes a packet, say) against the driver's transmit
/// buffer; when the buffer is full, flushes it and tries once more.
pub async fn write_with_room<T: Read + Write, D: FrameDecoder, R, L: From<DriverError<T::Error>>>(
    driver: &mut Driver<'_, T, D>,
    mut write: impl FnMut(&mut FrameWriter<'_>) -> Result<R, session::Error>,
) -> Result<R, WriteError<L>> {
    // One call of `write` in a loop (smaller firmware than two calls), of at most two rounds: a
    // flush leaves the buffer empty.
    loop {
        match write(driver.tx()) {
            Ok(written) => return Ok(written),
            Err(e) if !e.is_buffer_full() => return Err(WriteError::Session(e)),
            // Nothing to flush, or just flushed: no room will come.
            Err(_) if driver.tx().is_empty() => return Err(WriteError::TooLarge),
            Err(_) => driver.flush().await.map_err(|e| WriteError::Link(e.into()))?,
        }
    }
}

/// Counters a driver keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DriverStats {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    /// Frames that failed to decode (each ended a link).
    pub bad_frames: u64,
}

/// A byte stream, a receive decoder and a transmit buffer, both over caller-provided memory.
#[derive(Debug)]
pub struct Driver<'b, T, D> {
    io: T,
    decoder: D,
    tx: FrameWriter<'b>,
    stats: DriverStats,
}

impl<'b, T: Read + Write, D: FrameDecoder> Driver<'b, T, D> {
    /// `decoder` holds the receive buffer; `tx` the transmit buffer. The largest packet either
    /// way is bounded by them.
    pub fn new(io: T, decoder: D, tx: FrameWriter<'b>) -> Self {
        Driver { io, decoder, tx, stats: DriverStats::default() }
    }

    /// Where the machine's methods write what the application sends now.
    pub fn tx(&mut self) -> &mut FrameWriter<'b> {
        &mut self.tx
    }

    /// Starts over on the same stream for a new link: forgets buffered input unless the framing
    /// resynchronises by itself, and drops unsent output.
    pub fn reset_link(&mut self) {
        self.decoder.reset_link();
        self.tx.clear();
    }

    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    pub fn io(&mut self) -> &mut T {
        &mut self.io
    }

    /// Gives back the stream and buffers, e.g. to reconnect with a new stream.
    pub fn into_parts(self) -> (T, D, FrameWriter<'b>) {
        (self.io, self.decoder, self.tx)
    }

    /// Writes everything pending in the transmit buffer.
    pub async fn flush(&mut self) -> Result<(), DriverError<T::Error>> {
        if self.tx.is_empty() {
            return Ok(());
        }
        while !self.tx.is_empty() {
            let n = self.io.write(self.tx.pending()).await.map_err(DriverError::Io)?;
            if n == 0 {
                return Err(DriverError::Closed);
            }
            self.tx.consume(n);
            self.stats.bytes_out += n as u64;
        }
        self.io.flush().await.map_err(DriverError::Io)
    }

    /// One step: run due timers, or handle one buffered packet, or write what the machine owes
    /// and wait for input until its next deadline. Returns the event that came of it, if any.
    pub async fn step<'s, M: Machine, C: Clock>(
        &'s mut self,
        machine: &'s mut M,
        clock: &C,
    ) -> Result<Option<M::Event<'s>>, DriverError<T::Error>> {
        let now = clock.now();
        // Timers first: a link that has ended must not take frames meant for the next one.
        if let Some(event) = machine.poll(now) {
            return Ok(Some(event.into()));
        }
        match self.decoder.next_frame() {
            Ok(Some(range)) => {
                self.stats.packets_in += 1;
                let body = self.decoder.frame(range);
                return machine.handle(now, body).map_err(DriverError::Session);
            }
            Ok(None) => {}
            Err(error) => {
                // A serial decoder has already found the next frame, but the session cannot know
                // what the bad one held: the link ends either way, and the session resumes on a
                // new one (over the same line, for serial).
                debug!("bad frame: {}", error);
                self.stats.bad_frames += 1;
                return Err(DriverError::Frame(error));
            }
        }
        // Write until the machine owes nothing more: one transmit buffer may not hold it all.
        loop {
            machine.poll_transmit(now, &mut self.tx).map_err(DriverError::Session)?;
            if self.tx.is_empty() {
                break;
            }
            self.flush().await?;
        }
        let deadline = machine.poll_timeout();
        if deadline.is_some_and(|deadline| deadline <= now) {
            // A timer is due (a link that just ended, say): report it before waiting for input.
            return Ok(None);
        }
        let buf = self.decoder.read_buffer();
        if buf.is_empty() {
            return Err(DriverError::Frame(wire::Error::Oversize));
        }
        let read = self.io.read(buf);
        let n = match deadline {
            Some(deadline) => match select(read, clock.at(deadline)).await {
                Either::Left(result) => result.map_err(DriverError::Io)?,
                Either::Right(()) => return Ok(None),
            },
            None => read.await.map_err(DriverError::Io)?,
        };
        if n == 0 {
            return Err(DriverError::Closed);
        }
        self.decoder.commit(n);
        self.stats.bytes_in += n as u64;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use core::pin::pin;
    use core::task::{Context, Poll, Waker};

    use embedded_io_async::{ErrorKind, ErrorType};

    use super::*;
    use crate::wire::{Framing, PacketKind, PacketRepr, StreamDecoder};

    /// A stream that keeps what is written to it, or fails every write.
    struct Sink {
        written: std::vec::Vec<u8>,
        broken: bool,
    }

    impl ErrorType for Sink {
        type Error = ErrorKind;
    }

    impl Read for Sink {
        async fn read(&mut self, _: &mut [u8]) -> Result<usize, ErrorKind> {
            Ok(0)
        }
    }

    impl Write for Sink {
        async fn write(&mut self, bytes: &[u8]) -> Result<usize, ErrorKind> {
            if self.broken {
                return Err(ErrorKind::BrokenPipe);
            }
            self.written.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        async fn flush(&mut self) -> Result<(), ErrorKind> {
            Ok(())
        }
    }

    /// The sink never waits, so neither does anything over it.
    fn now<F: Future>(future: F) -> F::Output {
        match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("a sink never waits"),
        }
    }

    /// Writes a request whose payload is `len` bytes; returns the payload length.
    fn packet(len: usize) -> impl FnMut(&mut FrameWriter<'_>) -> Result<usize, session::Error> {
        move |out| {
            let payload = [7u8; 64];
            let repr = PacketRepr {
                channel: 0,
                tag: 2,
                kind: PacketKind::Request { rq_type: 1, flags: 0 },
                payload: &payload[..len],
            };
            out.push_repr(&repr)?;
            Ok(len)
        }
    }

    fn driver<'b>(rx: &'b mut [u8], tx: &'b mut [u8], broken: bool) -> Driver<'b, Sink, StreamDecoder<'b>> {
        Driver::new(
            Sink { written: std::vec::Vec::new(), broken },
            StreamDecoder::new(rx),
            FrameWriter::new(tx, Framing::Stream),
        )
    }

    #[test]
    fn a_full_buffer_is_flushed_once_to_make_room() {
        let (mut rx, mut tx) = ([0u8; 8], [0u8; 48]);
        let mut driver = driver(&mut rx, &mut tx, false);
        let written: Result<_, WriteError<LinkBroken>> = now(write_with_room(&mut driver, packet(30)));
        assert_eq!(written, Ok(30), "fits: written, nothing sent");
        assert!(driver.io().written.is_empty());
        let first = driver.tx().pending().to_vec();
        let written: Result<_, WriteError<LinkBroken>> = now(write_with_room(&mut driver, packet(30)));
        assert_eq!(written, Ok(30), "after a flush");
        assert_eq!(driver.io().written, first, "the first packet went out to make room");
        assert_eq!(driver.tx().pending().len(), first.len(), "the second waits in the buffer");
    }

    #[test]
    fn a_packet_larger_than_the_buffer_is_too_large_flushed_or_not() {
        let (mut rx, mut tx) = ([0u8; 8], [0u8; 48]);
        let mut driver = driver(&mut rx, &mut tx, false);
        let too_large: Result<_, WriteError<LinkBroken>> = Err(WriteError::TooLarge);
        assert_eq!(now(write_with_room(&mut driver, packet(60))), too_large, "empty buffer");
        assert!(driver.io().written.is_empty(), "nothing to flush");
        now(write_with_room::<_, _, _, LinkBroken>(&mut driver, packet(10))).expect("fits");
        assert_eq!(now(write_with_room(&mut driver, packet(60))), too_large, "after a flush");
        assert!(!driver.io().written.is_empty(), "the flush happened");
    }

    #[test]
    fn a_failed_flush_is_the_link_and_a_refusal_the_session() {
        let (mut rx, mut tx) = ([0u8; 8], [0u8; 48]);
        let mut driver = driver(&mut rx, &mut tx, true);
        now(write_with_room::<_, _, _, LinkBroken>(&mut driver, packet(30))).expect("fits");
        let broken = Err(WriteError::Link(DriverError::Io(ErrorKind::BrokenPipe)));
        assert_eq!(now(write_with_room(&mut driver, packet(30))), broken, "the driver's error");
        let broken: Result<usize, _> = Err(WriteError::Link(LinkBroken));
        assert_eq!(now(write_with_room(&mut driver, packet(30))), broken, "or only that it broke");
        let refused = now(write_with_room(&mut driver, |_| Err::<(), _>(session::Error::Closed)));
        assert_eq!(refused, Err(WriteError::<LinkBroken>::Session(session::Error::Closed)));
    }
}
