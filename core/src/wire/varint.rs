//! BSUInt: cs.packetstream's unsigned integer. Big-endian groups of 7 bits; every byte but the
//! last has 0x80 set. Note this is the opposite terminator convention from hat SBS.
//!
//! Examples: 0 → `00`, 127 → `7f`, 128 → `81 00`, 16384 → `81 80 00`.

use super::Error;

/// The longest encoding of a `u64` (10 groups of 7 bits).
pub const MAX_LEN: usize = 10;

/// Bytes needed to encode `value`.
pub const fn encoded_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    if bits == 0 { 1 } else { bits.div_ceil(7) }
}

/// Reads one BSUInt from the front of `buf`, returning the value and the bytes it took.
///
/// Redundant leading `80` bytes are accepted, as the Python parser does; a value that does not
/// fit a `u64` is [`Error::Malformed`], and a buffer that ends mid-number is [`Error::Truncated`].
pub fn decode(buf: &[u8]) -> Result<(u64, usize), Error> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate() {
        if value > (u64::MAX >> 7) {
            return Err(Error::Malformed);
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(Error::Truncated)
}

/// Writes `value` at the front of `buf` in its shortest form; returns the bytes written.
pub fn encode(value: u64, buf: &mut [u8]) -> Result<usize, Error> {
    let len = encoded_len(value);
    let out = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
    for (i, byte) in out.iter_mut().enumerate() {
        let shift = 7 * (len - 1 - i);
        let more = if i + 1 < len { 0x80 } else { 0 };
        *byte = ((value >> shift) as u8 & 0x7f) | more;
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn peers_md_vectors() {
        let vectors: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0x81, 0x00]),
            (255, &[0x81, 0x7f]),
            (16383, &[0xff, 0x7f]),
            (16384, &[0x81, 0x80, 0x00]),
        ];
        for &(value, bytes) in vectors {
            let mut buf = [0u8; MAX_LEN];
            let n = encode(value, &mut buf).unwrap();
            assert_eq!(&buf[..n], bytes, "encode {value}");
            assert_eq!(decode(bytes).unwrap(), (value, bytes.len()), "decode {value}");
        }
    }

    #[test]
    fn redundant_leading_groups_are_accepted() {
        assert_eq!(decode(&[0x80, 0x80, 0x05]).unwrap(), (5, 3));
    }

    #[test]
    fn overflow_and_truncation_are_errors() {
        assert_eq!(decode(&[0x81, 0x80]), Err(Error::Truncated));
        assert_eq!(decode(&[]), Err(Error::Truncated));
        let too_big = [0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(decode(&too_big), Err(Error::Malformed));
        let max = [0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(decode(&max).unwrap(), (u64::MAX, 10));
    }

    #[test]
    fn short_output_buffer_is_an_error() {
        assert_eq!(encode(128, &mut [0u8; 1]), Err(Error::BufferTooSmall));
    }

    proptest! {
        #[test]
        fn round_trip(value: u64) {
            let mut buf = [0u8; MAX_LEN];
            let n = encode(value, &mut buf).unwrap();
            prop_assert_eq!(n, encoded_len(value));
            prop_assert_eq!(decode(&buf[..n]).unwrap(), (value, n));
        }

        #[test]
        fn decode_never_panics(bytes: Vec<u8>) {
            let _ = decode(&bytes);
        }
    }
}
