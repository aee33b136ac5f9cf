//! Unsigned LEB128 lengths (postcard's varint) inside packed values.

use super::Error;

/// Longest encoding of a `usize` length we accept (up to 2^35 - 1).
pub const MAX_LEN: usize = 5;

pub fn decode(buf: &[u8]) -> Result<(usize, usize), Error> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(MAX_LEN).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // An overlong form (a trailing zero group) would make equal values unequal bytes.
            if byte == 0 && i > 0 {
                return Err(Error::Malformed);
            }
            let value = usize::try_from(value).map_err(|_| Error::Malformed)?;
            return Ok((value, i + 1));
        }
    }
    if buf.len() >= MAX_LEN { Err(Error::Malformed) } else { Err(Error::Truncated) }
}

/// Writes `value`; `buf` must hold [`MAX_LEN`] bytes for the largest values.
pub fn encode(value: usize, buf: &mut [u8; MAX_LEN]) -> usize {
    let mut value = value as u64;
    for (i, byte) in buf.iter_mut().enumerate() {
        if value < 0x80 {
            *byte = value as u8;
            return i + 1;
        }
        *byte = (value as u8 & 0x7f) | 0x80;
        value >>= 7;
    }
    MAX_LEN
}
