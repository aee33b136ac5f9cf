//! Framing on lossy serial links (UART): each packet body gets a frame sequence number and a
//! CRC-16, and is COBS-encoded, so `00` appears only as the frame delimiter:
//!
//! ```text
//! COBS(seq ++ body ++ crc16_be(seq ++ body)) ++ 00
//! ```
//!
//! CRC-16 is CRC-16/IBM-3740 (a.k.a. CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection,
//! "123456789" → 0x29B1). `seq` counts frames modulo 256 from the sender's first; the receiver
//! takes any `seq` on its first frame (and after an error) and then wants each next one, so a frame
//! lost whole, delimiter and all, or one repeated, is [`Error::Sequence`] rather than silence:
//! the session above numbers its messages by counting them. A corrupt, truncated, oversize or
//! out-of-sequence frame is reported once and dropped; the decoder resumes at the next `00`.

use core::ops::Range;

use super::{Error, FrameDecoder, FrameEncoder, RxBuffer};

const DELIMITER: u8 = 0x00;
const SEQ_LEN: usize = 1;
const CRC_LEN: usize = 2;

/// CRC-16/IBM-3740 with a 16-entry table (32 bytes of flash instead of 512).
pub fn crc16(bytes: &[u8]) -> u16 {
    const TABLE: [u16; 16] = {
        let mut table = [0u16; 16];
        let mut i = 0;
        while i < 16 {
            let mut crc = (i as u16) << 12;
            let mut bit = 0;
            while bit < 4 {
                crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc: u16 = 0xffff;
    for &byte in bytes {
        for nibble in [byte >> 4, byte & 0x0f] {
            let index = ((crc >> 12) as u8 ^ nibble) & 0x0f;
            crc = (crc << 4) ^ TABLE[usize::from(index)];
        }
    }
    crc
}

/// COBS + CRC-16 framing for serial links; counts the frames it seals.
#[derive(Debug, Clone, Copy, Default)]
pub struct SerialFraming {
    next_seq: u8,
}

impl SerialFraming {
    pub const fn new() -> Self {
        SerialFraming { next_seq: 0 }
    }

    /// A framing whose next frame carries `seq`.
    pub const fn starting_at(seq: u8) -> Self {
        SerialFraming { next_seq: seq }
    }
}

/// COBS adds one code byte per 254 data bytes, plus one.
const fn cobs_overhead(len: usize) -> usize {
    len / 254 + 1
}

/// Bytes the frame of a `body_len`-byte body takes at most (a body without zeros): sequence
/// byte, body and CRC, COBS code bytes, the delimiter. Saturates.
pub(super) const fn max_frame_len(body_len: usize) -> usize {
    let data = body_len.saturating_add(SEQ_LEN + CRC_LEN);
    data.saturating_add(cobs_overhead(data)).saturating_add(1)
}

/// The largest body whose frame fits `buffer_len` bytes, 0 if none does.
pub(super) const fn max_body_len(buffer_len: usize) -> usize {
    // The largest `data` with `data + data / 254 <= room`: writing `data = 254 q + r` (r < 254)
    // that is `255 q + r <= room`, so `q = room / 255` and `r` is the rest, at most 253.
    let room = buffer_len.saturating_sub(2);
    let rest = room % 255;
    let data = room / 255 * 254 + if rest < 254 { rest } else { 253 };
    data.saturating_sub(SEQ_LEN + CRC_LEN)
}

impl FrameEncoder for SerialFraming {
    fn headroom(&self, capacity: usize) -> usize {
        cobs_overhead(capacity) + SEQ_LEN
    }

    fn tailroom(&self) -> usize {
        CRC_LEN + 1
    }

    fn seal(&mut self, buf: &mut [u8], headroom: usize, body_len: usize) -> Result<Range<usize>, Error> {
        let data_start = headroom.checked_sub(SEQ_LEN).ok_or(Error::BufferTooSmall)?;
        let body_end = headroom.checked_add(body_len).ok_or(Error::BufferTooSmall)?;
        *buf.get_mut(data_start).ok_or(Error::BufferTooSmall)? = self.next_seq;
        let crc = crc16(buf.get(data_start..body_end).ok_or(Error::BufferTooSmall)?);
        let data_end = body_end + CRC_LEN;
        buf.get_mut(body_end..data_end).ok_or(Error::BufferTooSmall)?.copy_from_slice(&crc.to_be_bytes());
        if data_start < cobs_overhead(SEQ_LEN + body_len + CRC_LEN) {
            return Err(Error::BufferTooSmall);
        }
        let len = cobs_encode_in_place(buf, data_start, data_end)?;
        *buf.get_mut(len).ok_or(Error::BufferTooSmall)? = DELIMITER;
        self.next_seq = self.next_seq.wrapping_add(1);
        Ok(0..len + 1)
    }
}

/// COBS-encodes `buf[from..to]` into `buf[0..]`; returns the encoded length. The writer never
/// overtakes the reader because `from` is at least the encoding's overhead.
fn cobs_encode_in_place(buf: &mut [u8], from: usize, to: usize) -> Result<usize, Error> {
    let mut code_at = 0;
    let mut out = 1;
    let mut code: u8 = 1;
    for read in from..to {
        let byte = *buf.get(read).ok_or(Error::BufferTooSmall)?;
        if byte == 0 {
            *buf.get_mut(code_at).ok_or(Error::BufferTooSmall)? = code;
            code_at = out;
            out += 1;
            code = 1;
        } else {
            *buf.get_mut(out).ok_or(Error::BufferTooSmall)? = byte;
            out += 1;
            code += 1;
            if code == 0xff {
                *buf.get_mut(code_at).ok_or(Error::BufferTooSmall)? = code;
                code_at = out;
                out += 1;
                code = 1;
            }
        }
    }
    *buf.get_mut(code_at).ok_or(Error::BufferTooSmall)? = code;
    Ok(out)
}

/// COBS-decodes `buf` (one frame without its delimiter) in place; returns the decoded length.
fn cobs_decode_in_place(buf: &mut [u8]) -> Result<usize, Error> {
    let mut read = 0;
    let mut out = 0;
    while read < buf.len() {
        let code = *buf.get(read).ok_or(Error::Malformed)?;
        if code == 0 {
            return Err(Error::Malformed);
        }
        read += 1;
        let run = usize::from(code) - 1;
        let end = read.checked_add(run).filter(|&e| e <= buf.len()).ok_or(Error::Malformed)?;
        buf.copy_within(read..end, out);
        out += run;
        read = end;
        if code != 0xff && read < buf.len() {
            *buf.get_mut(out).ok_or(Error::Malformed)? = 0;
            out += 1;
        }
    }
    Ok(out)
}

/// Incremental decoder for serial frames over a caller-provided buffer. Errors are per frame:
/// the decoder drops the bad frame and goes on with the next one.
#[derive(Debug)]
pub struct SerialDecoder<'b> {
    /// `start` is where the frame being assembled begins.
    rx: RxBuffer<'b>,
    /// Bytes before `start + scanned` hold no delimiter.
    scanned: usize,
    /// An oversize frame is being skipped up to its delimiter.
    skipping: bool,
    /// Sequence number the next frame must carry; `None` takes any.
    expected_seq: Option<u8>,
}

impl<'b> SerialDecoder<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        SerialDecoder { rx: RxBuffer::new(buf), scanned: 0, skipping: false, expected_seq: None }
    }
}

impl FrameDecoder for SerialDecoder<'_> {
    const RESYNCS: bool = true;

    fn read_buffer(&mut self) -> &mut [u8] {
        self.rx.space()
    }

    fn commit(&mut self, n: usize) {
        self.rx.commit(n);
    }

    fn next_frame(&mut self) -> Result<Option<Range<usize>>, Error> {
        loop {
            let pending = self.rx.buf.get(self.rx.start + self.scanned..self.rx.end).unwrap_or(&[]);
            let Some(at) = pending.iter().position(|&b| b == DELIMITER) else {
                self.scanned = self.rx.end - self.rx.start;
                if self.scanned == self.rx.buf.len() {
                    // A whole buffer without a delimiter: drop it and skip to the next one.
                    let was_skipping = core::mem::replace(&mut self.skipping, true);
                    self.rx.start = self.rx.end;
                    self.scanned = 0;
                    if !was_skipping {
                        self.expected_seq = None;
                        return Err(Error::Oversize);
                    }
                }
                return Ok(None);
            };
            let frame = self.rx.start..self.rx.start + self.scanned + at;
            self.rx.start = frame.end + 1;
            self.scanned = 0;
            if core::mem::replace(&mut self.skipping, false) || frame.is_empty() {
                continue; // the tail of a dropped frame, or back-to-back delimiters
            }
            // Until a frame passes every check, the next one starts a new sequence.
            let expected = self.expected_seq.take();
            let data = self.rx.buf.get_mut(frame.clone()).ok_or(Error::Malformed)?;
            let len = cobs_decode_in_place(data)?;
            let checked_len = len.checked_sub(CRC_LEN).filter(|&n| n >= SEQ_LEN).ok_or(Error::Truncated)?;
            let (checked, crc) = data.get(..len).ok_or(Error::Malformed)?.split_at(checked_len);
            if crc16(checked).to_be_bytes() != crc {
                return Err(Error::Checksum);
            }
            let seq = *checked.first().ok_or(Error::Truncated)?;
            if expected.is_some_and(|e| e != seq) {
                return Err(Error::Sequence);
            }
            self.expected_seq = Some(seq.wrapping_add(1));
            let body_start = frame.start + SEQ_LEN;
            return Ok(Some(body_start..frame.start + checked_len));
        }
    }

    fn frame(&self, range: Range<usize>) -> &[u8] {
        self.rx.buf.get(range).unwrap_or(&[])
    }

    fn reset(&mut self) {
        self.rx.clear();
        self.scanned = 0;
        self.skipping = false;
        self.expected_seq = None;
    }
}
