//! Reading a fuzz input: a few leading bytes choose settings, the rest is data. Every read
//! succeeds (missing bytes read as zero), so any input is a valid test case.

use rivulet_core::wire::varint;

/// A cursor over a fuzz input.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { rest: data }
    }

    /// The next byte, or 0 at the end.
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&first, rest)) => {
                self.rest = rest;
                first
            }
            None => 0,
        }
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }

    /// Everything left.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// Hands the decoder the next read of at most `read` bytes of `rest`, as a socket would, and
/// takes them off `rest`. A decoder that has returned every whole frame must have room.
pub fn feed(decoder: &mut impl rivulet_core::wire::FrameDecoder, rest: &mut &[u8], read: usize) {
    let space = decoder.read_buffer();
    assert!(!space.is_empty(), "a drained decoder offers no room: the link would stall");
    let n = read.min(space.len()).min(rest.len());
    space[..n].copy_from_slice(&rest[..n]);
    decoder.commit(n);
    *rest = &rest[n..];
}

/// Splits stream-framed bytes (`BSUInt(len) ++ body`, as a socket carries them) into bodies,
/// leniently: a body cut short is what is left, and bytes that start with no valid length are
/// one last body. Seeds are captured streams; mutated ones still split into packets.
pub fn records(bytes: &[u8]) -> Records<'_> {
    Records { rest: bytes }
}

#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (body, rest) = match varint::decode(self.rest) {
            Ok((len, prefix)) => {
                let after = self.rest.get(prefix..).unwrap_or(&[]);
                let len = usize::try_from(len).unwrap_or(usize::MAX).min(after.len());
                after.split_at(len)
            }
            Err(_) => (self.rest, &[][..]),
        };
        self.rest = rest;
        Some(body)
    }
}

/// Frames `bodies` as a stream (the inverse of [`records`]).
pub fn stream_of<B: AsRef<[u8]>>(bodies: &[B]) -> Vec<u8> {
    let mut out = Vec::new();
    for body in bodies {
        let body = body.as_ref();
        let mut prefix = [0u8; varint::MAX_LEN];
        let n = varint::encode(body.len() as u64, &mut prefix).unwrap_or(0);
        out.extend_from_slice(&prefix[..n]);
        out.extend_from_slice(body);
    }
    out
}
