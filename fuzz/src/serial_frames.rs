//! Target `serial_frames`: the serial decoder (COBS + CRC-16 + sequence byte) over arbitrary
//! bytes in arbitrary reads.
//!
//! Input: `capacity: u16` (receive buffer of 1..=1024 bytes), `n: u8`, `n` read sizes (each
//! 1..=256; cycled), then the bytes on the line.
//!
//! Asserts: no panic; the decoder always offers room to read once drained; every frame it returns
//! lies inside its buffer, with room for the sequence byte, the CRC and the delimiter; and what it
//! yields is exactly what a reference decoder (COBS, CRC-16/IBM-3740 and the sequence rule written
//! again from the module docs) makes of the whole line, whatever the reads.

use rivulet_core::wire::{Error, FrameDecoder, SerialDecoder};

use super::input::Input;

/// What a decoder yields: bodies and errors, in order.
pub type Yield = Vec<Result<Vec<u8>, Error>>;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let capacity = usize::from(input.u16() % 1024) + 1;
    let count = usize::from(input.byte() % 16);
    let reads: Vec<usize> = input.take(count).iter().map(|&r| usize::from(r) + 1).collect();
    let line = input.rest();

    let mut storage = vec![0u8; capacity];
    let mut decoder = SerialDecoder::new(&mut storage);
    let got = feed(&mut decoder, line, &reads, capacity);
    assert_eq!(got, reference(line, capacity), "capacity {capacity}, reads {reads:?}");
}

/// Feeds `line` in reads of the given sizes (cycled; as much as fits when empty), draining the
/// decoder after each read. Serial decoders resynchronise, so errors do not stop it.
pub fn feed(decoder: &mut SerialDecoder<'_>, line: &[u8], reads: &[usize], capacity: usize) -> Yield {
    let mut out = Vec::new();
    let mut rest = line;
    let mut sizes = reads.iter().copied().cycle();
    while !rest.is_empty() {
        let want = sizes.next().unwrap_or(rest.len()).min(rest.len());
        let space = decoder.read_buffer();
        assert!(!space.is_empty(), "a drained decoder offers no room: the link would stall");
        let n = want.min(space.len());
        space[..n].copy_from_slice(&rest[..n]);
        decoder.commit(n);
        rest = &rest[n..];
        loop {
            match decoder.next_frame() {
                Ok(Some(range)) => {
                    assert!(range.start <= range.end && range.end <= capacity, "{range:?} outside the buffer");
                    let body = decoder.frame(range.clone());
                    assert_eq!(body.len(), range.len());
                    assert!(body.len() + 4 < capacity, "no room for seq, CRC, COBS code and delimiter");
                    out.push(Ok(body.to_vec()));
                }
                Ok(None) => break,
                Err(error) => out.push(Err(error)),
            }
        }
    }
    out
}

/// The line cut at every `00`: a segment that cannot fit the buffer with its delimiter is one
/// `Oversize`; an empty one is nothing; the rest are decoded; an unterminated tail is nothing yet
/// (or `Oversize` when it already fills the buffer).
pub fn reference(line: &[u8], capacity: usize) -> Yield {
    let mut out = Vec::new();
    let mut expected: Option<u8> = None;
    let mut segments = line.split(|&b| b == 0).peekable();
    while let Some(segment) = segments.next() {
        let terminated = segments.peek().is_some();
        if segment.len() >= capacity {
            expected = None;
            out.push(Err(Error::Oversize));
            continue;
        }
        if !terminated || segment.is_empty() {
            continue;
        }
        let outcome = reference_frame(segment, expected.take());
        if let Ok((seq, _)) = &outcome {
            expected = Some(seq.wrapping_add(1));
        }
        out.push(outcome.map(|(_, body)| body));
    }
    out
}

fn reference_frame(segment: &[u8], expected: Option<u8>) -> Result<(u8, Vec<u8>), Error> {
    let data = reference_cobs_decode(segment).ok_or(Error::Malformed)?;
    if data.len() < 3 {
        return Err(Error::Truncated);
    }
    let (checked, crc) = data.split_at(data.len() - 2);
    if reference_crc16(checked).to_be_bytes() != crc {
        return Err(Error::Checksum);
    }
    let seq = checked[0];
    if expected.is_some_and(|e| e != seq) {
        return Err(Error::Sequence);
    }
    Ok((seq, checked[1..].to_vec()))
}

/// COBS decoding, written again: each code byte `c` is followed by `c - 1` data bytes and stands
/// for a zero after them, unless it is `ff` or the last block.
fn reference_cobs_decode(frame: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < frame.len() {
        let code = usize::from(frame[at]);
        if code == 0 || at + code > frame.len() {
            return None;
        }
        out.extend_from_slice(&frame[at + 1..at + code]);
        at += code;
        if code < 0xff && at < frame.len() {
            out.push(0);
        }
    }
    Some(out)
}

/// CRC-16/IBM-3740 bit by bit (poly 0x1021, init 0xffff, no reflection).
fn reference_crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xffff;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}
