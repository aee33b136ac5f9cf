//! Framing on reliable byte streams: `BSUInt(body_len) ++ body`, as cs.packetstream writes it.

use core::ops::Range;

use super::{Error, FrameDecoder, FrameEncoder, PacketRepr, RxBuffer, varint};

/// Length-prefix framing (TCP and other reliable streams).
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamFraming;

impl FrameEncoder for StreamFraming {
    fn headroom(&self, capacity: usize) -> usize {
        varint::encoded_len(capacity as u64)
    }

    fn tailroom(&self) -> usize {
        0
    }

    fn seal(&mut self, buf: &mut [u8], headroom: usize, body_len: usize) -> Result<Range<usize>, Error> {
        let prefix = varint::encoded_len(body_len as u64);
        let start = headroom.checked_sub(prefix).ok_or(Error::BufferTooSmall)?;
        let end = headroom.checked_add(body_len).ok_or(Error::BufferTooSmall)?;
        if end > buf.len() {
            return Err(Error::BufferTooSmall);
        }
        varint::encode(body_len as u64, buf.get_mut(start..headroom).ok_or(Error::BufferTooSmall)?)?;
        Ok(start..end)
    }
}

/// Bytes the frame of a `body_len`-byte body takes: the length prefix, then the body. Saturates.
pub(super) const fn max_frame_len(body_len: usize) -> usize {
    body_len.saturating_add(varint::encoded_len(body_len as u64))
}

/// The largest body whose frame fits `buffer_len` bytes, 0 if none does.
pub(super) const fn max_body_len(buffer_len: usize) -> usize {
    let body = buffer_len.saturating_sub(varint::encoded_len(buffer_len as u64));
    // The body's own prefix may be a byte shorter than the buffer length's (128 bytes take a
    // 127-byte body), leaving room for one more.
    if max_frame_len(body.saturating_add(1)) <= buffer_len { body.saturating_add(1) } else { body }
}

/// Bytes one framed packet takes on a stream.
pub fn frame_len(repr: &PacketRepr<'_>) -> Result<usize, Error> {
    let body = repr.buffer_len()?;
    Ok(varint::encoded_len(body as u64) + body)
}

/// Writes `BSUInt(len) ++ body` for `repr` to the front of `buf`; returns the bytes written.
pub fn emit_frame(repr: &PacketRepr<'_>, buf: &mut [u8]) -> Result<usize, Error> {
    let body = repr.buffer_len()?;
    let prefix = varint::encode(body as u64, buf)?;
    let written = repr.emit(buf.get_mut(prefix..).ok_or(Error::BufferTooSmall)?)?;
    Ok(prefix + written)
}

/// Incremental decoder for length-prefixed packets, over a caller-provided buffer. A packet
/// whose frame is larger than the buffer is [`Error::Oversize`], and after any error the decoder
/// keeps returning it: the stream has lost its place and the link must end.
#[derive(Debug)]
pub struct StreamDecoder<'b> {
    rx: RxBuffer<'b>,
    failed: Option<Error>,
}

impl<'b> StreamDecoder<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        StreamDecoder { rx: RxBuffer::new(buf), failed: None }
    }

    /// Bytes received but not yet returned as packets.
    pub fn buffered(&self) -> usize {
        self.rx.end - self.rx.start
    }

    pub fn capacity(&self) -> usize {
        self.rx.buf.len()
    }
}

impl FrameDecoder for StreamDecoder<'_> {
    const RESYNCS: bool = false;

    fn read_buffer(&mut self) -> &mut [u8] {
        self.rx.space()
    }

    fn commit(&mut self, n: usize) {
        self.rx.commit(n);
    }

    fn next_frame(&mut self) -> Result<Option<Range<usize>>, Error> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let pending = self.rx.buf.get(self.rx.start..self.rx.end).unwrap_or(&[]);
        let (body_len, prefix) = match varint::decode(pending) {
            // Longer than any u64 needs: malformed however it arrives. Had fewer of its bytes been
            // read so far, the arm below would already have refused it (found by fuzzing).
            Ok((_, prefix)) if prefix > varint::MAX_LEN => return Err(*self.failed.insert(Error::Malformed)),
            Ok(found) => found,
            Err(Error::Truncated) if pending.len() < varint::MAX_LEN.min(self.rx.buf.len()) => return Ok(None),
            // A buffer too small for the length prefix cannot hold the frame either.
            Err(Error::Truncated) if pending.len() < varint::MAX_LEN => {
                return Err(*self.failed.insert(Error::Oversize));
            }
            Err(_) => return Err(*self.failed.insert(Error::Malformed)),
        };
        let frame_len = usize::try_from(body_len)
            .ok()
            .and_then(|len| len.checked_add(prefix))
            .filter(|&len| len <= self.rx.buf.len());
        let Some(frame_len) = frame_len else {
            return Err(*self.failed.insert(Error::Oversize));
        };
        if pending.len() < frame_len {
            return Ok(None);
        }
        let body = self.rx.start + prefix..self.rx.start + frame_len;
        self.rx.start += frame_len;
        Ok(Some(body))
    }

    fn frame(&self, range: Range<usize>) -> &[u8] {
        self.rx.buf.get(range).unwrap_or(&[])
    }

    fn reset(&mut self) {
        self.rx.clear();
        self.failed = None;
    }
}
