//! The packet layer: cs.packetstream packets and the two framings that carry them.
//!
//! - [`varint`]: BSUInt, the unsigned integer of every header field.
//! - [`packet`]: one packet body as a checked view ([`Packet`]) and as its meaning ([`PacketRepr`]).
//! - [`stream`]: `BSUInt(len) ++ body` on reliable byte streams (TCP), wire-compatible with
//!   cs.packetstream 20240630; a packet larger than the receive buffer ends the link.
//! - [`serial`]: `COBS(seq ++ body ++ CRC-16) ++ 00` on lossy serial links; a damaged, lost or
//!   repeated frame is reported and the decoder resynchronises at the next `00`.
//! - [`LinkDecoder`]: either decoder, for a link whose framing is a value.

mod link_decoder;
pub mod packet;
pub mod serial;
pub mod stream;
pub mod varint;

use core::ops::Range;

pub use link_decoder::{AnyFraming, FramingChoice, LinkDecoder};
pub use packet::{Packet, PacketKind, PacketRepr};
pub use serial::{SerialDecoder, SerialFraming};
pub use stream::{StreamDecoder, StreamFraming};

/// What can go wrong in the packet layer. Every decoder returns one of these for bad bytes; none
/// panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The bytes end in the middle of a field.
    Truncated,
    /// A field has a value the protocol does not allow (an overlong integer, a malformed EOF,
    /// a request on a reserved tag, bad COBS).
    Malformed,
    /// A frame is larger than the receive buffer.
    Oversize,
    /// A serial frame's CRC does not match its bytes.
    Checksum,
    /// A serial frame's sequence number is not the next one: a frame was lost whole or repeated.
    Sequence,
    /// The output buffer is too small for what was to be written.
    BufferTooSmall,
    /// The value cannot be written in this format (flags or rq_type too large, reserved tag).
    Unrepresentable,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated packet",
            Error::Malformed => "malformed packet",
            Error::Oversize => "frame larger than the receive buffer",
            Error::Checksum => "frame checksum mismatch",
            Error::Sequence => "frame out of sequence (one lost or repeated)",
            Error::BufferTooSmall => "output buffer too small",
            Error::Unrepresentable => "value cannot be encoded",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Writes frames in place: the packet body is emitted at `buf[headroom..]` and `seal` wraps it
/// into a frame without a second buffer.
pub trait FrameEncoder {
    /// Bytes to leave free before the body in a transmit buffer of `capacity` bytes.
    fn headroom(&self, capacity: usize) -> usize;
    /// Bytes to leave free after the body.
    fn tailroom(&self) -> usize;
    /// Frames the body at `buf[headroom..headroom + body_len]`; returns where the frame is in `buf`.
    fn seal(&mut self, buf: &mut [u8], headroom: usize, body_len: usize) -> Result<Range<usize>, Error>;
}

/// Cuts received bytes into packet bodies. The caller reads into [`FrameDecoder::read_buffer`],
/// reports how much arrived with [`FrameDecoder::commit`], and takes bodies with
/// [`FrameDecoder::next_body`] until it returns `Ok(None)`.
pub trait FrameDecoder {
    /// Whether the link survives a decode error (serial: yes, the next frame starts after a `00`;
    /// stream: no, a byte stream cannot find its next packet).
    const RESYNCS: bool;
    /// Free space for the next read. Empty only when the buffer holds an incomplete frame as
    /// large as the whole buffer, which `next_body` reports as [`Error::Oversize`] first.
    fn read_buffer(&mut self) -> &mut [u8];
    /// `n` bytes were written to the front of the last [`FrameDecoder::read_buffer`].
    fn commit(&mut self, n: usize);
    /// Finds the next whole packet body; returns where it is, for [`FrameDecoder::frame`]. The
    /// range stays valid until the next [`FrameDecoder::read_buffer`].
    fn next_frame(&mut self) -> Result<Option<Range<usize>>, Error>;
    /// The bytes of a range returned by [`FrameDecoder::next_frame`].
    fn frame(&self, range: Range<usize>) -> &[u8];
    /// The next whole packet body, valid until the decoder is used again.
    fn next_body(&mut self) -> Result<Option<&[u8]>, Error> {
        match self.next_frame()? {
            Some(range) => Ok(Some(Self::frame(self, range))),
            None => Ok(None),
        }
    }
    /// Forgets everything buffered.
    fn reset(&mut self);
    /// Starts a new link on the same input: forgets what is buffered, unless the framing finds
    /// the next frame by itself ([`FrameDecoder::RESYNCS`]).
    fn reset_link(&mut self) {
        if !Self::RESYNCS {
            self.reset();
        }
    }

    /// Copies as much of `bytes` as fits into the buffer; returns how much was taken.
    fn push(&mut self, bytes: &[u8]) -> usize {
        let space = self.read_buffer();
        let n = space.len().min(bytes.len());
        if let (Some(dst), Some(src)) = (space.get_mut(..n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.commit(n);
        n
    }
}

/// A decoder lent to a driver, so that it outlives the link (a serial line's keeps its place).
impl<D: FrameDecoder + ?Sized> FrameDecoder for &mut D {
    const RESYNCS: bool = D::RESYNCS;

    fn read_buffer(&mut self) -> &mut [u8] {
        (**self).read_buffer()
    }

    fn commit(&mut self, n: usize) {
        (**self).commit(n);
    }

    fn next_frame(&mut self) -> Result<Option<Range<usize>>, Error> {
        (**self).next_frame()
    }

    fn frame(&self, range: Range<usize>) -> &[u8] {
        (**self).frame(range)
    }

    fn reset(&mut self) {
        (**self).reset();
    }

    fn reset_link(&mut self) {
        (**self).reset_link();
    }
}

/// Received bytes in a caller's buffer: `buf[start..end]` is not yet taken as frames.
#[derive(Debug)]
pub(crate) struct RxBuffer<'b> {
    pub(crate) buf: &'b mut [u8],
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl<'b> RxBuffer<'b> {
    pub(crate) fn new(buf: &'b mut [u8]) -> Self {
        RxBuffer { buf, start: 0, end: 0 }
    }

    /// Free space after the received bytes, moved to the front first.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.buf.get_mut(self.end..).unwrap_or(&mut [])
    }

    pub(crate) fn commit(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.buf.len());
    }

    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }
}

/// The framing a link uses, as a value, so that machine APIs need no framing generic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Framing {
    /// Length prefix, for TCP and other reliable streams.
    Stream,
    /// COBS + CRC-16, for UARTs.
    Serial,
}

impl Framing {
    /// Bytes the frame of a `body_len`-byte packet takes at most (a serial frame's COBS code
    /// bytes depend on the body): the receive buffer that takes every packet up to `body_len`
    /// bytes and no larger one (PROTOCOL.md §2.5, §2.6). Saturates at `usize::MAX`.
    #[inline]
    pub const fn max_frame_len(self, body_len: usize) -> usize {
        match self {
            Framing::Stream => stream::max_frame_len(body_len),
            Framing::Serial => serial::max_frame_len(body_len),
        }
    }

    /// The largest packet a receive buffer of `buffer_len` bytes takes whole (what an init
    /// announces as `max_packet`): the inverse of [`Framing::max_frame_len`]. 0 when not even an
    /// empty body fits.
    #[inline]
    pub const fn max_body_len(self, buffer_len: usize) -> usize {
        match self {
            Framing::Stream => stream::max_body_len(buffer_len),
            Framing::Serial => serial::max_body_len(buffer_len),
        }
    }
}

/// Frames packets one after another into a caller's transmit buffer, so that one write can
/// carry many packets. A packet that does not fit leaves the buffer as it was.
#[derive(Debug)]
pub struct FrameWriter<'b> {
    buf: &'b mut [u8],
    framing: Framing,
    /// The framing's sealing, picked in `new`: a program whose writers all have one framing,
    /// known when it builds them, links only that framing's encoder (a TCP device has no COBS
    /// or CRC code).
    seal: Seal,
    serial: SerialFraming,
    /// Sequence number of the first serial frame not yet consumed.
    sent_seq: u8,
    len: usize,
}

/// [`FrameEncoder::seal`] of a framing; the serial one counts its frames in the writer's
/// [`SerialFraming`], the stream one needs no state.
type Seal = fn(&mut SerialFraming, &mut [u8], usize, usize) -> Result<Range<usize>, Error>;

impl<'b> FrameWriter<'b> {
    #[inline]
    pub fn new(buf: &'b mut [u8], framing: Framing) -> Self {
        let seal: Seal = match framing {
            Framing::Stream => |_, buf, headroom, body_len| StreamFraming.seal(buf, headroom, body_len),
            Framing::Serial => |serial, buf, headroom, body_len| serial.seal(buf, headroom, body_len),
        };
        FrameWriter { buf, framing, seal, serial: SerialFraming::new(), sent_seq: 0, len: 0 }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Appends one packet: its header, then whatever `payload` writes into the slice it gets
    /// (returning the length written).
    pub fn push<E: From<Error>>(
        &mut self,
        channel: u64,
        tag: u64,
        kind: PacketKind,
        payload: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<(), E> {
        let start = self.len;
        let frame_space = self.buf.get_mut(start..).ok_or(Error::BufferTooSmall)?;
        let capacity = frame_space.len();
        let (headroom, tailroom) = match self.framing {
            Framing::Stream => (StreamFraming.headroom(capacity), StreamFraming.tailroom()),
            Framing::Serial => (self.serial.headroom(capacity), self.serial.tailroom()),
        };
        let body_end = capacity.checked_sub(tailroom).ok_or(Error::BufferTooSmall)?;
        let body_space = frame_space.get_mut(headroom..body_end).ok_or(Error::BufferTooSmall)?;
        let header = PacketRepr { channel, tag, kind, payload: &[] }.emit(body_space)?;
        let payload_len = payload(body_space.get_mut(header..).ok_or(Error::BufferTooSmall)?)?;
        let frame = (self.seal)(&mut self.serial, frame_space, headroom, header + payload_len)?;
        let frame_len = frame.len();
        frame_space.copy_within(frame, 0);
        self.len = start + frame_len;
        Ok(())
    }

    /// Appends a packet given whole.
    pub fn push_repr(&mut self, repr: &PacketRepr<'_>) -> Result<(), Error> {
        self.push(repr.channel, repr.tag, repr.kind, |out: &mut [u8]| {
            let dst = out.get_mut(..repr.payload.len()).ok_or(Error::BufferTooSmall)?;
            dst.copy_from_slice(repr.payload);
            Ok::<usize, Error>(repr.payload.len())
        })
    }

    /// The framed bytes waiting to be written.
    pub fn pending(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `n` bytes from the front were written out.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        if self.framing == Framing::Serial {
            // Every serial frame ends in the only 00 it has: count the frames that went out.
            let frames = self.buf.get(..n).unwrap_or(&[]).iter().filter(|&&b| b == 0).count();
            self.sent_seq = self.sent_seq.wrapping_add(frames as u8);
        }
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Drops what is not yet written. Serial sequence numbers continue from the last frame that
    /// went out, so the peer sees no gap (a frame cut short is a bad frame to it anyway).
    pub fn clear(&mut self) {
        self.len = 0;
        self.serial = SerialFraming::starting_at(self.sent_seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames a body of `len` bytes without zeros (a serial frame's longest) with `framing`.
    fn framed(framing: Framing, len: usize) -> std::vec::Vec<u8> {
        let mut buf = std::vec![0u8; 2 * len + 64];
        // Sequence number 1: no zero before the body.
        let mut serial = SerialFraming::starting_at(1);
        let headroom = match framing {
            Framing::Stream => StreamFraming.headroom(buf.len()),
            Framing::Serial => serial.headroom(buf.len()),
        };
        buf[headroom..headroom + len].fill(0x55);
        let frame = match framing {
            Framing::Stream => StreamFraming.seal(&mut buf, headroom, len),
            Framing::Serial => serial.seal(&mut buf, headroom, len),
        };
        buf[frame.expect("room to seal")].to_vec()
    }

    /// What a decoder over exactly `buffer_len` bytes makes of `frame`: the body's length.
    fn decode(framing: Framing, frame: &[u8], buffer_len: usize) -> Result<Option<usize>, Error> {
        fn body_len(mut decoder: impl FrameDecoder, frame: &[u8]) -> Result<Option<usize>, Error> {
            decoder.push(frame);
            decoder.next_body().map(|body| body.map(<[u8]>::len))
        }
        let mut rx = std::vec![0u8; buffer_len];
        match framing {
            Framing::Stream => body_len(StreamDecoder::new(&mut rx), frame),
            Framing::Serial => body_len(SerialDecoder::new(&mut rx), frame),
        }
    }

    /// Both directions agree: the largest body a buffer takes fits it, one more does not, and a
    /// buffer sized for a body gives that body back as its largest.
    #[test]
    fn max_body_len_and_max_frame_len_agree() {
        for framing in [Framing::Stream, Framing::Serial] {
            for len in 0..70_000 {
                let body = framing.max_body_len(len);
                if framing.max_frame_len(0) <= len {
                    assert!(framing.max_frame_len(body) <= len, "{framing:?} {len}: {body} does not fit");
                } else {
                    assert_eq!(body, 0, "{framing:?} {len}: nothing fits");
                }
                assert!(framing.max_frame_len(body + 1) > len, "{framing:?} {len}: {body} wastes room");
                assert_eq!(framing.max_body_len(framing.max_frame_len(len)), len, "{framing:?} body {len}");
            }
            assert_eq!(framing.max_frame_len(usize::MAX), usize::MAX, "saturates");
        }
        assert_eq!(Framing::Serial.max_body_len(1024), 1015);
        assert_eq!(Framing::Stream.max_body_len(1024), 1022);
        // A one-byte prefix leaves room for a 127-byte body in 128 bytes.
        assert_eq!(Framing::Stream.max_body_len(128), 127);
        assert_eq!(Framing::Serial.max_frame_len(251), 257, "254 bytes to encode: two code bytes");
    }

    /// The arithmetic is the codecs': a frame takes at most `max_frame_len` bytes (a body
    /// without zeros, most of the time exactly that), a decoder over that many takes it, and one
    /// over a byte less refuses the longest as oversize.
    #[test]
    fn max_frame_len_is_what_the_codecs_write_and_read() {
        let mut longest = [0usize; 2];
        for (i, framing) in [Framing::Stream, Framing::Serial].into_iter().enumerate() {
            for body in (0..1100).chain([16_381, 16_382, 16_383, 16_384, 65_000]) {
                let frame = framed(framing, body);
                let max = framing.max_frame_len(body);
                assert!(frame.len() <= max, "{framing:?} body {body}: {} of {max}", frame.len());
                assert_eq!(decode(framing, &frame, max), Ok(Some(body)), "{framing:?} body {body}");
                if frame.len() == max {
                    assert_eq!(decode(framing, &frame, max - 1), Err(Error::Oversize), "{framing:?} {body}");
                    longest[i] += 1;
                }
            }
        }
        assert!(longest.iter().all(|&n| n > 1000), "most bodies made a longest frame: {longest:?}");
    }
}
