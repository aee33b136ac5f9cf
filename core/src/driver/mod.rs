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
