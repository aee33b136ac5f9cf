//! Chaski's TCP framing (chaski-confluent 0.1a5, `ChaskiNode.serialize_message` and
//! `_reader_loop`): `u32` BE length of the data, `u32` BE length of the topic, the topic bytes,
//! then the data bytes (the data length comes first, the topic first after the lengths). Both
//! are the node's serializer output; with the JSON codec (`super::message`) the topic is a JSON
//! string.
//!
//! [`Frame`] is a view over one frame's bytes, [`FrameRepr`] its parts, and [`FrameDecoder`]
//! cuts a TCP stream into frames over a caller's buffer, refusing one over its limit from its
//! header on, before any of it is buffered.

use core::ops::Range;

use crate::wire::{self, FrameDecoder as _, RxBuffer};

/// The two length fields.
pub const HEADER_LEN: usize = 8;

/// A view over the bytes of one frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field = bytes.get(at..at + 4)?;
    let mut word = [0u8; 4];
    word.copy_from_slice(field);
    Some(u32::from_be_bytes(word))
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// A view without checks; the accessors then assume [`Frame::check_len`] passed.
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// A view over a buffer that holds at least one whole frame (bytes after it are ignored).
    pub fn new_checked(buffer: T) -> Result<Self, wire::Error> {
        let frame = Frame::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Whether the buffer holds the header and everything it announces.
    pub fn check_len(&self) -> Result<(), wire::Error> {
        let len = self.total_len().ok_or(wire::Error::Truncated)?;
        if self.buffer.as_ref().len() < len { Err(wire::Error::Truncated) } else { Ok(()) }
    }

    pub fn data_len(&self) -> u32 {
        be_u32(self.buffer.as_ref(), 0).unwrap_or(0)
    }

    pub fn topic_len(&self) -> u32 {
        be_u32(self.buffer.as_ref(), 4).unwrap_or(0)
    }

    /// Header, topic and data; `None` without a whole header (or past `usize`).
    pub fn total_len(&self) -> Option<usize> {
        let bytes = self.buffer.as_ref();
        let data = usize::try_from(be_u32(bytes, 0)?).ok()?;
        let topic = usize::try_from(be_u32(bytes, 4)?).ok()?;
        HEADER_LEN.checked_add(data)?.checked_add(topic)
    }

    pub fn topic(&self) -> &[u8] {
        let end = HEADER_LEN.saturating_add(self.topic_len() as usize);
        self.buffer.as_ref().get(HEADER_LEN..end).unwrap_or(&[])
    }

    pub fn data(&self) -> &[u8] {
        let start = HEADER_LEN.saturating_add(self.topic_len() as usize);
        let end = start.saturating_add(self.data_len() as usize);
        self.buffer.as_ref().get(start..end).unwrap_or(&[])
    }
}

/// A frame's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRepr<'a> {
    pub topic: &'a [u8],
    pub data: &'a [u8],
}

impl<'a> FrameRepr<'a> {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &'a Frame<&'a T>) -> Result<Self, wire::Error> {
        frame.check_len()?;
        Ok(FrameRepr { topic: frame.topic(), data: frame.data() })
    }

    /// The bytes [`FrameRepr::emit`] writes; `None` when a part is over `u32::MAX` bytes.
    pub fn buffer_len(&self) -> Option<usize> {
        u32::try_from(self.topic.len()).ok()?;
        u32::try_from(self.data.len()).ok()?;
        HEADER_LEN.checked_add(self.topic.len())?.checked_add(self.data.len())
    }

    /// Writes the frame at the front of `out`; returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, wire::Error> {
        let len = self.buffer_len().ok_or(wire::Error::Unrepresentable)?;
        let out = out.get_mut(..len).ok_or(wire::Error::BufferTooSmall)?;
        let (header, rest) = out.split_at_mut(HEADER_LEN);
        let (data_len, topic_len) = header.split_at_mut(4);
        // Lengths fit: checked by buffer_len.
        data_len.copy_from_slice(&(self.data.len() as u32).to_be_bytes());
        topic_len.copy_from_slice(&(self.topic.len() as u32).to_be_bytes());
        let (topic, data) = rest.split_at_mut(self.topic.len());
        topic.copy_from_slice(self.topic);
        data.copy_from_slice(self.data);
        Ok(len)
    }
}

/// Incremental decoder of Chaski frames over a caller's buffer. A frame (the range it returns)
/// is the whole frame, header included: read it with [`Frame`]. A frame over `max_frame` bytes
/// (or the buffer) is refused as soon as its header is in, and the decoder then keeps returning
/// that error: the stream has no way to find its next frame.
#[derive(Debug)]
pub struct FrameDecoder<'b> {
    rx: RxBuffer<'b>,
    max_frame: usize,
    failed: bool,
}

impl<'b> FrameDecoder<'b> {
    pub fn new(buf: &'b mut [u8], max_frame: usize) -> Self {
        let fits = buf.len();
        FrameDecoder { rx: RxBuffer::new(buf), max_frame: max_frame.min(fits), failed: false }
    }

    /// The largest frame taken, header included.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.rx.end - self.rx.start
    }
}

impl wire::FrameDecoder for FrameDecoder<'_> {
    const RESYNCS: bool = false;

    fn read_buffer(&mut self) -> &mut [u8] {
        self.rx.space()
    }

    fn commit(&mut self, n: usize) {
        self.rx.commit(n);
    }

    fn next_frame(&mut self) -> Result<Option<Range<usize>>, wire::Error> {
        if self.failed {
            return Err(wire::Error::Oversize);
        }
        let start = self.rx.start;
        let pending = self.rx.buf.get(start..self.rx.end).unwrap_or(&[]);
        let Some(len) = Frame::new_unchecked(pending).total_len() else {
            if pending.len() >= HEADER_LEN {
                // The lengths overflow `usize`: no buffer holds that.
                self.failed = true;
                return Err(wire::Error::Oversize);
            }
            return Ok(None);
        };
        if len > self.max_frame {
            self.failed = true;
            return Err(wire::Error::Oversize);
        }
        if pending.len() < len {
            return Ok(None);
        }
        self.rx.start = start + len;
        Ok(Some(start..start + len))
    }

    fn frame(&self, range: Range<usize>) -> &[u8] {
        self.rx.buf.get(range).unwrap_or(&[])
    }

    fn reset(&mut self) {
        self.rx.clear();
        self.failed = false;
    }
}

/// Reads every whole frame `decoder` holds into `f` (topic, data); stops at the first error.
pub fn for_each_frame(decoder: &mut FrameDecoder<'_>, mut f: impl FnMut(&[u8], &[u8])) -> Result<(), wire::Error> {
    while let Some(range) = decoder.next_frame()? {
        let frame = Frame::new_unchecked(decoder.frame(range));
        f(frame.topic(), frame.data());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `push('topic1', b'hello')` with the JSON codec: topic `"topic1"` (8 bytes).
    fn frame(topic: &[u8], data: &[u8]) -> ([u8; 64], usize) {
        let mut out = [0u8; 64];
        let n = FrameRepr { topic, data }.emit(&mut out).unwrap();
        (out, n)
    }

    #[test]
    fn lengths_come_data_first_and_parts_topic_first() {
        let (out, n) = frame(b"\"topic1\"", b"{}");
        assert_eq!(&out[..n], b"\x00\x00\x00\x02\x00\x00\x00\x08\"topic1\"{}");
        let view = Frame::new_checked(&out[..n]).unwrap();
        assert_eq!((view.topic(), view.data()), (&b"\"topic1\""[..], &b"{}"[..]));
        assert_eq!(FrameRepr::parse(&view), Ok(FrameRepr { topic: b"\"topic1\"", data: b"{}" }));
        assert_eq!(Frame::new_checked(&out[..n - 1]).unwrap_err(), wire::Error::Truncated);
        assert_eq!(Frame::new_checked(&out[..7]).unwrap_err(), wire::Error::Truncated);
        assert_eq!(FrameRepr { topic: b"a", data: b"b" }.emit(&mut [0u8; 9]), Err(wire::Error::BufferTooSmall));
    }

    #[test]
    fn a_stream_cuts_into_frames_in_any_reads_and_refuses_an_oversize_header_at_once() {
        let (a, an) = frame(b"\"All\"", b"{\"x\":1}");
        let (b, bn) = frame(b"\"t\"", b"");
        let stream: Vec<u8> = [&a[..an], &b[..bn]].concat();
        for cut in 1..stream.len() {
            let mut buf = [0u8; 64];
            let mut decoder = FrameDecoder::new(&mut buf, 64);
            let mut got: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for chunk in stream.chunks(cut) {
                let room = decoder.read_buffer();
                room[..chunk.len()].copy_from_slice(chunk);
                decoder.commit(chunk.len());
                for_each_frame(&mut decoder, |t, d| got.push((t.to_vec(), d.to_vec()))).unwrap();
            }
            assert_eq!(got, vec![(b"\"All\"".to_vec(), b"{\"x\":1}".to_vec()), (b"\"t\"".to_vec(), Vec::new())]);
            assert_eq!(decoder.buffered(), 0);
        }
        let mut buf = [0u8; 64];
        let mut decoder = FrameDecoder::new(&mut buf, 32);
        let header = [0, 0, 0, 30, 0, 0, 0, 3];
        decoder.read_buffer()[..8].copy_from_slice(&header);
        decoder.commit(8);
        assert_eq!(decoder.next_frame(), Err(wire::Error::Oversize), "41 bytes announced, 32 allowed");
        assert_eq!(decoder.next_frame(), Err(wire::Error::Oversize), "and it sticks");
    }
}
