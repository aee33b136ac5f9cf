//! SBS, hat's schema binary serialisation, for the types the Eventer protocol uses. A value has
//! no tags: the schema says what comes next, so the eventer module reads and writes its records
//! field by field with a [`Reader`] and a [`Writer`].
//!
//! - Integer: signed, big-endian groups of 7 bits; the **last** byte has 0x80 set, and bit 0x40
//!   of the first byte is the sign. `0` → `80`, `64` → `00 c0`, `-1` → `ff`. Written in the
//!   fewest groups; read in any number (hat accepts `00 81` as 1), up to `i64`.
//! - Boolean: one byte, `00` or `01`; any nonzero byte reads as true.
//! - String, Bytes: `Integer(len)`, then the bytes (UTF-8 for a string). `'abc'` → `83 61 62 63`.
//! - Array: `Integer(count)`, then the elements. Record: the fields in schema order.
//! - Choice: `Integer(index of the alternative)`, then its value. Optional is the choice
//!   `{none: None, value: T}`: `80` or `81 T`. None takes no bytes.

use super::Error;

/// The longest minimal integer: 10 groups of 7 bits hold an `i64`.
pub const MAX_INTEGER_LEN: usize = 10;

/// Bytes the minimal encoding of `value` takes: enough 7-bit groups for its bits and a sign bit.
pub const fn integer_len(value: i64) -> usize {
    let magnitude = if value < 0 { !value } else { value };
    let bits = 64 - magnitude.leading_zeros() as usize + 1;
    bits.div_ceil(7)
}

/// Bytes a string or byte string of `len` bytes takes: its length, then the bytes. Saturates.
pub const fn bytes_len(len: usize) -> usize {
    let prefix = if len > i64::MAX as usize { MAX_INTEGER_LEN } else { integer_len(len as i64) };
    len.saturating_add(prefix)
}

/// Reads SBS values from the front of a byte slice. Every read either returns a whole value and
/// moves past it, or fails; a failed reader should be dropped, as the bytes have lost their place.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Ends a read of one whole value: bytes after it are [`Error::TrailingBytes`].
    pub fn finish(self) -> Result<(), Error> {
        if self.rest.is_empty() { Ok(()) } else { Err(Error::TrailingBytes) }
    }

    /// The next `n` bytes, as they are.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.rest.len() {
            return Err(Error::Truncated);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    pub fn integer(&mut self) -> Result<i64, Error> {
        let first = *self.rest.first().ok_or(Error::Truncated)?;
        let mut value: i64 = if first & 0x40 != 0 { -1 } else { 0 };
        for (i, &byte) in self.rest.iter().enumerate() {
            // Seven more bits must not push a bit out of the i64: the value so far has to be
            // within 57 signed bits.
            if !(-(1 << 56)..(1 << 56)).contains(&value) {
                return Err(Error::Overflow);
            }
            value = (value << 7) | i64::from(byte & 0x7f);
            if byte & 0x80 != 0 {
                self.rest = self.rest.get(i + 1..).unwrap_or(&[]);
                return Ok(value);
            }
        }
        Err(Error::Truncated)
    }

    /// An integer that must not be negative (an event id, a server id).
    pub fn unsigned(&mut self) -> Result<u64, Error> {
        u64::try_from(self.integer()?).map_err(|_| Error::Range)
    }

    pub fn boolean(&mut self) -> Result<bool, Error> {
        Ok(self.take(1)?.first().is_some_and(|&b| b != 0))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let len = self.length(1)?;
        self.take(len)
    }

    pub fn string(&mut self) -> Result<&'a str, Error> {
        core::str::from_utf8(self.bytes()?).map_err(|_| Error::Utf8)
    }

    /// An array's element count, for elements of at least `min_element_len` bytes: a count the
    /// bytes left cannot hold is [`Error::Length`] before any element is read.
    pub fn count(&mut self, min_element_len: usize) -> Result<usize, Error> {
        self.length(min_element_len)
    }

    fn length(&mut self, unit: usize) -> Result<usize, Error> {
        let len = usize::try_from(self.integer()?).map_err(|_| Error::Length)?;
        if len.saturating_mul(unit) > self.rest.len() {
            return Err(Error::Length);
        }
        Ok(len)
    }

    /// A choice's index among `alternatives`.
    pub fn choice(&mut self, alternatives: usize) -> Result<usize, Error> {
        usize::try_from(self.integer()?).ok().filter(|&i| i < alternatives).ok_or(Error::UnknownChoice)
    }

    /// An optional's tag: whether a value follows.
    pub fn optional(&mut self) -> Result<bool, Error> {
        Ok(self.choice(2)? == 1)
    }

    /// An optional value, read with `value` when present.
    pub fn option<T>(&mut self, value: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<Option<T>, Error> {
        if self.optional()? { value(self).map(Some) } else { Ok(None) }
    }
}

/// Writes SBS values to the front of a caller's buffer, or only counts their bytes
/// ([`Writer::counting`]), so that one function both sizes and writes a message.
#[derive(Debug)]
pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
    counting: bool,
}

impl<'b> Writer<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, len: 0, counting: false }
    }

    /// A writer that stores nothing and never runs out of room: [`Writer::len`] is the size.
    pub fn counting() -> Writer<'static> {
        Writer { buf: &mut [], len: 0, counting: true }
    }

    /// Bytes written (or counted) so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes as they are.
    pub fn raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let end = self.len.checked_add(bytes.len()).ok_or(Error::BufferTooSmall)?;
        if !self.counting {
            self.buf.get_mut(self.len..end).ok_or(Error::BufferTooSmall)?.copy_from_slice(bytes);
        }
        self.len = end;
        Ok(())
    }

    /// Room for `n` bytes that the caller fills, or `None` when counting.
    pub fn reserve(&mut self, n: usize) -> Result<Option<&mut [u8]>, Error> {
        let start = self.len;
        let end = start.checked_add(n).ok_or(Error::BufferTooSmall)?;
        self.len = end;
        if self.counting {
            return Ok(None);
        }
        match self.buf.get_mut(start..end) {
            Some(room) => Ok(Some(room)),
            None => {
                self.len = start;
                Err(Error::BufferTooSmall)
            }
        }
    }

    pub fn integer(&mut self, value: i64) -> Result<(), Error> {
        let len = integer_len(value);
        let mut out = [0u8; MAX_INTEGER_LEN];
        for (i, byte) in out.iter_mut().take(len).enumerate() {
            let group = (value >> (7 * (len - 1 - i))) as u8 & 0x7f;
            *byte = if i + 1 == len { group | 0x80 } else { group };
        }
        self.raw(out.get(..len).unwrap_or(&[]))
    }

    /// An integer field that is unsigned in the model: more than `i64::MAX` is [`Error::Range`].
    pub fn unsigned(&mut self, value: u64) -> Result<(), Error> {
        self.integer(i64::try_from(value).map_err(|_| Error::Range)?)
    }

    pub fn boolean(&mut self, value: bool) -> Result<(), Error> {
        self.raw(&[u8::from(value)])
    }

    pub fn bytes(&mut self, value: &[u8]) -> Result<(), Error> {
        self.count(value.len())?;
        self.raw(value)
    }

    pub fn string(&mut self, value: &str) -> Result<(), Error> {
        self.bytes(value.as_bytes())
    }

    /// An array's element count (or a length).
    pub fn count(&mut self, count: usize) -> Result<(), Error> {
        self.integer(i64::try_from(count).map_err(|_| Error::Range)?)
    }

    /// A choice's index.
    pub fn choice(&mut self, index: usize) -> Result<(), Error> {
        self.count(index)
    }

    /// An optional value: `none`, or `value` and then what `write` writes of it.
    pub fn option<T>(
        &mut self,
        value: Option<T>,
        write: impl FnOnce(&mut Self, T) -> Result<(), Error>,
    ) -> Result<(), Error> {
        match value {
            None => self.choice(0),
            Some(value) => {
                self.choice(1)?;
                write(self, value)
            }
        }
    }
}

/// Runs `write` on a counting writer: the bytes it would write.
pub fn measure(write: impl FnOnce(&mut Writer<'_>) -> Result<(), Error>) -> Result<usize, Error> {
    let mut writer = Writer::counting();
    write(&mut writer)?;
    Ok(writer.len())
}

/// Runs `write` on a writer over `buf`: the bytes written to its front.
pub fn emit(buf: &mut [u8], write: impl FnOnce(&mut Writer<'_>) -> Result<(), Error>) -> Result<usize, Error> {
    let mut writer = Writer::new(buf);
    write(&mut writer)?;
    Ok(writer.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// peers.md §2, "SBS encoding": every integer vector.
    const INTEGERS: &[(i64, &[u8])] = &[
        (0, &[0x80]),
        (1, &[0x81]),
        (63, &[0xbf]),
        (64, &[0x00, 0xc0]),
        (127, &[0x00, 0xff]),
        (128, &[0x01, 0x80]),
        (8191, &[0x3f, 0xff]),
        (8192, &[0x00, 0x40, 0x80]),
        (-1, &[0xff]),
        (-64, &[0xc0]),
        (-65, &[0x7f, 0xbf]),
        (1_000_000, &[0x3d, 0x04, 0xc0]),
        (1 << 31, &[0x08, 0x00, 0x00, 0x00, 0x80]),
        (i64::MAX, &[0x00, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0xff]),
        (i64::MIN, &[0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80]),
    ];

    fn write(f: impl FnOnce(&mut Writer<'_>) -> Result<(), Error>) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let n = emit(&mut buf, f).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn peers_md_integers_both_ways() {
        for &(value, bytes) in INTEGERS {
            assert_eq!(write(|w| w.integer(value)), bytes, "encode {value}");
            assert_eq!(integer_len(value), bytes.len(), "length of {value}");
            let mut r = Reader::new(bytes);
            assert_eq!(r.integer(), Ok(value), "decode {value}");
            assert!(r.is_empty());
        }
    }

    #[test]
    fn peers_md_string_abc() {
        assert_eq!(write(|w| w.string("abc")), [0x83, 0x61, 0x62, 0x63]);
        assert_eq!(Reader::new(&[0x83, 0x61, 0x62, 0x63]).string(), Ok("abc"));
        assert_eq!(bytes_len(3), 4);
    }

    /// What the real hat.sbs decoders do with these bytes (both serializers agree unless said).
    #[test]
    fn overlong_and_edge_integers_read_as_hat_reads_them() {
        let read = |bytes: &[u8]| Reader::new(bytes).integer();
        assert_eq!(read(&[0x00, 0x81]), Ok(1));
        assert_eq!(read(&[0x00; 11].iter().copied().chain([0x81]).collect::<Vec<_>>()), Ok(1));
        assert_eq!(read(&[0x7f, 0xff]), Ok(-1));
        assert_eq!(read(&[0x7f; 12].iter().copied().chain([0xff]).collect::<Vec<_>>()), Ok(-1));
        assert_eq!(read(&[0x7f, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80]), Ok(i64::MIN));
        // 2^63 and -2^63 - 1: Python's decoder gives the big int, the C one wraps; we refuse.
        assert_eq!(read(&[0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x80]), Err(Error::Overflow));
        assert_eq!(read(&[0x7e, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0xff]), Err(Error::Overflow));
        assert_eq!(read(&[0x00]), Err(Error::Truncated));
        assert_eq!(read(&[]), Err(Error::Truncated));
    }

    #[test]
    fn other_values_read_as_hat_reads_them() {
        assert_eq!(Reader::new(&[0x02]).boolean(), Ok(true), "nonzero is true");
        assert_eq!(Reader::new(&[0x00]).boolean(), Ok(false));
        assert_eq!(Reader::new(&[]).boolean(), Err(Error::Truncated));
        assert_eq!(Reader::new(&[0x84, 0x61, 0x62, 0x63]).string(), Err(Error::Length), "C: error");
        assert_eq!(Reader::new(&[0xff]).bytes(), Err(Error::Length), "negative length");
        assert_eq!(Reader::new(&[0x82, 0xc3, 0x28]).string(), Err(Error::Utf8));
        assert_eq!(Reader::new(&[0x83, 0xed, 0xa0, 0x80]).string(), Err(Error::Utf8), "a surrogate");
        assert_eq!(Reader::new(&[0x82]).choice(2), Err(Error::UnknownChoice));
        assert_eq!(Reader::new(&[0xff]).choice(2), Err(Error::UnknownChoice));
        assert_eq!(Reader::new(&[0x00, 0x81]).choice(2), Ok(1), "an overlong index");
        assert_eq!(Reader::new(&[0x84, 0x81, 0x82, 0x83]).count(1), Err(Error::Length));
        assert_eq!(Reader::new(&[0x83, 0x81, 0x82, 0x83]).count(1), Ok(3));
        assert_eq!(Reader::new(&[0x82, 0x81, 0x82, 0x83]).count(2), Err(Error::Length), "two of 2 bytes in 3");
        assert_eq!(Reader::new(&[0x82, 0x81, 0x82, 0x83, 0x84]).count(2), Ok(2));
        assert_eq!(Reader::new(&[0xff]).unsigned(), Err(Error::Range));
        assert_eq!(Reader::new(&[0x80, 0x00]).finish(), Err(Error::TrailingBytes));
    }

    #[test]
    fn writer_refuses_what_does_not_fit() {
        let mut buf = [0u8; 2];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.string("abc"), Err(Error::BufferTooSmall));
        assert_eq!(w.unsigned(u64::MAX), Err(Error::Range));
        assert_eq!(measure(|w| w.string("abc")), Ok(4));
        assert_eq!(measure(|w| w.option(Some(5), |w, v| w.integer(v))), Ok(2));
        assert_eq!(write(|w| w.option(None::<i64>, |w, v| w.integer(v))), [0x80]);
    }

    proptest! {
        #[test]
        fn integers_round_trip(value: i64) {
            let bytes = write(|w| w.integer(value));
            prop_assert_eq!(bytes.len(), integer_len(value));
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.integer(), Ok(value));
            prop_assert!(r.is_empty());
        }

        /// The reference decoder of peers.md, in i128: whatever we read is what it reads, and
        /// what we refuse beyond i64 it reads as beyond i64.
        #[test]
        fn integers_read_like_the_reference(bytes in proptest::collection::vec(any::<u8>(), 0..14)) {
            let mut reference: Option<i128> = None;
            if let Some(first) = bytes.first() {
                let mut v: i128 = if first & 0x40 != 0 { -1 } else { 0 };
                for &b in &bytes {
                    v = (v << 7) | i128::from(b & 0x7f);
                    if b & 0x80 != 0 {
                        reference = Some(v);
                        break;
                    }
                }
            }
            match (Reader::new(&bytes).integer(), reference) {
                (Ok(value), Some(r)) => prop_assert_eq!(i128::from(value), r),
                // Found beyond i64 before its last byte, or after it.
                (Err(Error::Overflow), r) => prop_assert!(r.is_none_or(|r| i64::try_from(r).is_err())),
                (Err(Error::Truncated), None) => {}
                (got, r) => prop_assert!(false, "{:?} vs reference {:?}", got, r),
            }
        }
    }
}
