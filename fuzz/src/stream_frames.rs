//! Target `stream_frames`: the stream decoder over arbitrary bytes in arbitrary reads.
//!
//! Input: `capacity: u8` (receive buffer of 1..=256 bytes), `n: u8`, `n` read sizes (each
//! 1..=256; cycled), then the bytes on the stream.
//!
//! Asserts: no panic; the decoder always offers room to read once drained (unless it failed);
//! every frame it returns lies inside its buffer and is smaller than it; after an error it keeps
//! returning that same error; and what it yields (bodies, then at most one error) is exactly what
//! a reference reading of the whole stream gives, so it does not depend on how the bytes were
//! split into reads.

use rivulet_core::wire::{Error, FrameDecoder, StreamDecoder, varint};

use super::input::Input;

/// What a decoder yields: bodies and errors, in order.
pub type Yield = Vec<Result<Vec<u8>, Error>>;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let capacity = usize::from(input.byte()) + 1;
    let count = usize::from(input.byte() % 16);
    let reads: Vec<usize> = input.take(count).iter().map(|&r| usize::from(r) + 1).collect();
    let stream = input.rest();

    let mut storage = vec![0u8; capacity];
    let mut decoder = StreamDecoder::new(&mut storage);
    let got = feed(&mut decoder, stream, &reads, capacity);
    assert_eq!(got, reference(stream, capacity), "capacity {capacity}, reads {reads:?}");
}

/// Feeds `stream` in reads of the given sizes (cycled; as much as fits when empty), draining the
/// decoder after each read; stops at the first error, as a driver ends the link.
pub fn feed(decoder: &mut StreamDecoder<'_>, stream: &[u8], reads: &[usize], capacity: usize) -> Yield {
    let mut out = Vec::new();
    let mut rest = stream;
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
                    assert!(body.len() < capacity, "a body fills the whole buffer: no room for its prefix");
                    out.push(Ok(body.to_vec()));
                }
                Ok(None) => break,
                Err(error) => {
                    assert_eq!(decoder.next_frame(), Err(error), "errors are sticky");
                    assert_eq!(decoder.next_body(), Err(error), "errors are sticky");
                    out.push(Err(error));
                    return out;
                }
            }
        }
    }
    out
}

/// The frames of the whole stream as a receive buffer of `capacity` bytes allows: a length prefix
/// is read from what the buffer can hold, a frame larger than the buffer is `Oversize`, a prefix
/// that overflows a u64 or takes more than `MAX_LEN` bytes is `Malformed`, and an incomplete
/// frame at the end yields nothing.
pub fn reference(stream: &[u8], capacity: usize) -> Yield {
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let visible = &rest[..rest.len().min(capacity)];
        match reference_bsuint(visible) {
            Prefix::Value(_, prefix) if prefix > varint::MAX_LEN => {
                out.push(Err(Error::Malformed));
                break;
            }
            Prefix::Value(len, prefix) => {
                let frame = usize::try_from(len).ok().and_then(|len| len.checked_add(prefix));
                let Some(frame) = frame.filter(|&f| f <= capacity) else {
                    out.push(Err(Error::Oversize));
                    break;
                };
                if rest.len() < frame {
                    break; // waits for the rest
                }
                out.push(Ok(rest[prefix..frame].to_vec()));
                rest = &rest[frame..];
            }
            Prefix::Overflow => {
                out.push(Err(Error::Malformed));
                break;
            }
            Prefix::Unterminated if visible.len() >= varint::MAX_LEN => {
                out.push(Err(Error::Malformed));
                break;
            }
            Prefix::Unterminated if visible.len() == capacity => {
                out.push(Err(Error::Oversize)); // the buffer cannot hold the prefix
                break;
            }
            Prefix::Unterminated => break, // waits for the rest of the prefix
        }
    }
    out
}

enum Prefix {
    /// (value, bytes taken)
    Value(u64, usize),
    Overflow,
    Unterminated,
}

/// BSUInt written again from peers.md: big-endian 7-bit groups, 0x80 = more; leading zero groups
/// allowed.
fn reference_bsuint(bytes: &[u8]) -> Prefix {
    let mut value: u128 = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        value = (value << 7) | u128::from(byte & 0x7f);
        if value > u128::from(u64::MAX) {
            return Prefix::Overflow;
        }
        if byte & 0x80 == 0 {
            return Prefix::Value(value as u64, i + 1);
        }
    }
    Prefix::Unterminated
}
