//! hat-drivers' chatter: how hat frames messages on TCP, and the record every frame holds.
//!
//! ```text
//! frame = LL (1 byte) | L (LL bytes, big-endian) | body (L bytes)
//! body  = SBS HatChatter.Msg { id: Integer, first: Integer, owner: Boolean, token: Boolean,
//!                              last: Boolean, data: { type: String, data: Bytes } }
//! ```
//!
//! hat writes the fewest `LL` bytes for `L` (at least one: a 30-byte body is `01 1e`, a
//! 1000-byte one `02 03 e8`). [`ChatterDecoder`] reads `LL` of 1 to 8 and refuses a frame
//! above its size limit before buffering it. It implements the core's [`FrameDecoder`], so any
//! code that drives a `FrameDecoder` (the core's `Driver` reads with one) can cut chatter frames;
//! the `Driver` itself runs packet machines and a `FrameWriter` of packet framings, so the hat
//! conversation ([`super::conversation`]) is driven by its own loop.

use core::ops::Range;

use super::Error;
use super::sbs::{self, Reader, Writer};
use crate::wire::{self, FrameDecoder, FrameEncoder, RxBuffer};

/// The chatter keepalive's request: data `b''`, a new conversation, `last = false`.
pub const PING: &str = "HatChatter.Ping";
/// The answer to a ping: data `b''`, the ping's conversation, `last = true`.
pub const PONG: &str = "HatChatter.Pong";

/// The longest frame header: `LL` and eight length bytes.
pub const MAX_HEADER_LEN: usize = 9;
/// The longest length field this decoder reads (hat's writer never needs more for a `u64`).
pub const MAX_LENGTH_BYTES: usize = 8;

/// Bytes of the header of a frame with a `body_len`-byte body: `LL` and the minimal `L`.
pub const fn header_len(body_len: usize) -> usize {
    let bits = usize::BITS - body_len.leading_zeros();
    let length_bytes = if bits == 0 { 1 } else { bits.div_ceil(8) as usize };
    1 + length_bytes
}

/// Writes the header of a `body_len`-byte body to the front of `buf`; returns its length.
pub fn emit_header(body_len: usize, buf: &mut [u8]) -> Result<usize, Error> {
    let len = header_len(body_len);
    let out = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
    let length_bytes = len - 1;
    let be = (body_len as u64).to_be_bytes();
    let (ll, l) = out.split_first_mut().ok_or(Error::BufferTooSmall)?;
    *ll = length_bytes as u8;
    l.copy_from_slice(be.get(be.len() - length_bytes..).ok_or(Error::BufferTooSmall)?);
    Ok(len)
}

/// Reads a frame header from the front of `bytes`: `(header length, body length)`, or `None`
/// while the header is incomplete. A body longer than `max_body` is [`Error::Oversize`], known
/// from the header alone; an `LL` of 0 or above 8 is [`Error::FrameHeader`] (hat reads those
/// too, as an empty body that no message decodes from, or as a length with zero bytes in front;
/// its writer never produces either).
pub fn parse_header(bytes: &[u8], max_body: usize) -> Result<Option<(usize, usize)>, Error> {
    let Some((&ll, rest)) = bytes.split_first() else { return Ok(None) };
    let length_bytes = usize::from(ll);
    if length_bytes == 0 || length_bytes > MAX_LENGTH_BYTES {
        return Err(Error::FrameHeader);
    }
    let Some(field) = rest.get(..length_bytes) else { return Ok(None) };
    let body_len = field.iter().fold(0u64, |len, &b| (len << 8) | u64::from(b));
    match usize::try_from(body_len) {
        Ok(body_len) if body_len <= max_body => Ok(Some((1 + length_bytes, body_len))),
        _ => Err(Error::Oversize),
    }
}

/// Bytes the frame of a `body_len`-byte body takes. Saturates.
pub const fn frame_len(body_len: usize) -> usize {
    body_len.saturating_add(header_len(body_len))
}

/// Incremental decoder of chatter frames over a caller's buffer, which is also the size limit
/// unless a smaller one is set: a frame is refused as oversize from its header, before its body
/// is read, so no length field makes the caller buffer (or allocate) more. After an error it keeps
/// returning it: the stream has lost its place, and hat closes the connection too.
#[derive(Debug)]
pub struct ChatterDecoder<'b> {
    rx: RxBuffer<'b>,
    max_body: usize,
    failed: Option<wire::Error>,
}

impl<'b> ChatterDecoder<'b> {
    /// A decoder that takes every frame that fits `buf` whole.
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self::with_limit(buf, usize::MAX)
    }

    /// A decoder that refuses bodies over `max_body` bytes, or that do not fit `buf`.
    pub fn with_limit(buf: &'b mut [u8], max_body: usize) -> Self {
        let fits = buf.len().saturating_sub(header_len(buf.len()));
        ChatterDecoder { rx: RxBuffer::new(buf), max_body: max_body.min(fits), failed: None }
    }

    /// The largest body taken, behind the minimal header (a longer length field leaves less).
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.rx.end - self.rx.start
    }

    fn fail(&mut self, error: Error) -> wire::Error {
        let error = if error == Error::Oversize { wire::Error::Oversize } else { wire::Error::Malformed };
        *self.failed.insert(error)
    }
}

/// Chatter's errors in the packet layer's terms: [`Error::Oversize`] is `Oversize`, a bad length
/// field is `Malformed`.
impl FrameDecoder for ChatterDecoder<'_> {
    const RESYNCS: bool = false;

    fn read_buffer(&mut self) -> &mut [u8] {
        self.rx.space()
    }

    fn commit(&mut self, n: usize) {
        self.rx.commit(n);
    }

    fn next_frame(&mut self) -> Result<Option<Range<usize>>, wire::Error> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let pending = self.rx.buf.get(self.rx.start..self.rx.end).unwrap_or(&[]);
        let (header, body) = match parse_header(pending, self.max_body) {
            // A length field longer than needed (hat reads any) can make a frame within the body
            // limit larger than the buffer (found by fuzzing).
            Ok(Some((header, body))) if header + body > self.rx.buf.len() => return Err(self.fail(Error::Oversize)),
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(error) => return Err(self.fail(error)),
        };
        if pending.len() < header + body {
            return Ok(None);
        }
        let start = self.rx.start + header;
        self.rx.start = start + body;
        Ok(Some(start..start + body))
    }

    fn frame(&self, range: Range<usize>) -> &[u8] {
        self.rx.buf.get(range).unwrap_or(&[])
    }

    fn reset(&mut self) {
        self.rx.clear();
        self.failed = None;
    }
}

/// Chatter framing for a transmit buffer: the body is written at `buf[headroom..]` and sealed
/// with its header in front, without a second buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatterFraming;

impl FrameEncoder for ChatterFraming {
    fn headroom(&self, capacity: usize) -> usize {
        header_len(capacity)
    }

    fn tailroom(&self) -> usize {
        0
    }

    fn seal(&mut self, buf: &mut [u8], headroom: usize, body_len: usize) -> Result<Range<usize>, wire::Error> {
        let start = headroom.checked_sub(header_len(body_len)).ok_or(wire::Error::BufferTooSmall)?;
        let end = headroom.checked_add(body_len).filter(|&end| end <= buf.len()).ok_or(wire::Error::BufferTooSmall)?;
        let out = buf.get_mut(start..headroom).ok_or(wire::Error::BufferTooSmall)?;
        emit_header(body_len, out).map_err(|_| wire::Error::BufferTooSmall)?;
        Ok(start..end)
    }
}

/// The fields of a `HatChatter.Msg` before its data: which message this is and which
/// conversation it belongs to, as they stand on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// The sender's message counter: 1 for its first message, then one more per message.
    pub id: i64,
    /// The id of the message that opened the conversation (this one's, when it opens one).
    pub first: i64,
    /// Whether the sender opened the conversation.
    pub owner: bool,
    /// Always sent true; hat ignores it on receipt.
    pub token: bool,
    /// No reply is expected.
    pub last: bool,
}

impl Header {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.integer(self.id)?;
        w.integer(self.first)?;
        w.boolean(self.owner)?;
        w.boolean(self.token)?;
        w.boolean(self.last)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Header {
            id: r.integer()?,
            first: r.integer()?,
            owner: r.boolean()?,
            token: r.boolean()?,
            last: r.boolean()?,
        })
    }
}

/// One `HatChatter.Msg`, borrowing its type name and data from the frame body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Msg<'a> {
    pub header: Header,
    /// The message type, e.g. `HatEventer.MsgInitReq` ([`super::eventer::MsgType`]).
    pub msg_type: &'a str,
    /// The SBS encoding of that type.
    pub data: &'a [u8],
}

impl<'a> Msg<'a> {
    /// Reads a whole frame body. Bytes after the record are [`Error::TrailingBytes`].
    pub fn parse(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let header = Header::read(&mut r)?;
        let msg_type = r.string()?;
        let data = r.bytes()?;
        r.finish()?;
        Ok(Msg { header, msg_type, data })
    }

    /// Bytes of the body [`Msg::emit`] writes.
    pub fn buffer_len(&self) -> Result<usize, Error> {
        body_len(&self.header, self.msg_type, self.data.len())
    }

    /// Writes the body to the front of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        sbs::emit(buf, |w| write_body(w, &self.header, self.msg_type, self.data.len(), |w| w.raw(self.data)))
    }

    /// Bytes of the frame [`Msg::emit_frame`] writes.
    pub fn frame_len(&self) -> Result<usize, Error> {
        Ok(frame_len(self.buffer_len()?))
    }

    /// Writes header and body to the front of `buf`; returns the frame's length.
    pub fn emit_frame(&self, buf: &mut [u8]) -> Result<usize, Error> {
        emit_frame_with(&self.header, self.msg_type, self.data.len(), |w| w.raw(self.data), buf)
    }
}

/// Bytes of a `HatChatter.Msg` body with `data_len` bytes of data.
pub fn body_len(header: &Header, msg_type: &str, data_len: usize) -> Result<usize, Error> {
    let fields = sbs::measure(|w| {
        header.write(w)?;
        w.string(msg_type)?;
        w.count(data_len)
    })?;
    Ok(fields.saturating_add(data_len))
}

fn write_body(
    w: &mut Writer<'_>,
    header: &Header,
    msg_type: &str,
    data_len: usize,
    data: impl FnOnce(&mut Writer<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    header.write(w)?;
    w.string(msg_type)?;
    w.count(data_len)?;
    let before = w.len();
    data(w)?;
    // `data_len` is what the data's own sizing said; writing anything else would corrupt the
    // frame, so it is refused.
    if w.len() - before != data_len { Err(Error::Length) } else { Ok(()) }
}

/// Writes a whole frame whose data (`data_len` bytes) `data` writes in place, so that an
/// eventer message goes out without a buffer of its own; returns the frame's length.
pub fn emit_frame_with(
    header: &Header,
    msg_type: &str,
    data_len: usize,
    data: impl FnOnce(&mut Writer<'_>) -> Result<(), Error>,
    buf: &mut [u8],
) -> Result<usize, Error> {
    let body = body_len(header, msg_type, data_len)?;
    let at = emit_header(body, buf)?;
    let written = sbs::emit(buf.get_mut(at..).ok_or(Error::BufferTooSmall)?, |w| {
        write_body(w, header, msg_type, data_len, data)
    })?;
    Ok(at + written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits.chunks(2).map(|p| u8::from_str_radix(core::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
    }

    #[test]
    fn header_lengths_as_hat_writes_them() {
        let header = |len| {
            let mut buf = [0u8; MAX_HEADER_LEN];
            let n = emit_header(len, &mut buf).unwrap();
            buf[..n].to_vec()
        };
        assert_eq!(header(30), [0x01, 0x1e]);
        assert_eq!(header(1000), [0x02, 0x03, 0xe8]);
        assert_eq!(header(0), [0x01, 0x00]);
        assert_eq!(header(255), [0x01, 0xff]);
        assert_eq!(header(256), [0x02, 0x01, 0x00]);
        assert_eq!(header_len(usize::MAX), 1 + usize::BITS as usize / 8);
    }

    #[test]
    fn any_length_field_of_one_to_eight_bytes_is_read() {
        assert_eq!(parse_header(&hex("01 1e"), 100), Ok(Some((2, 30))));
        assert_eq!(parse_header(&hex("08 00 00 00 00 00 00 00 1e"), 100), Ok(Some((9, 30))));
        assert_eq!(parse_header(&hex("02 00"), 100), Ok(None));
        assert_eq!(parse_header(&[], 100), Ok(None));
        assert_eq!(parse_header(&hex("00"), 100), Err(Error::FrameHeader));
        assert_eq!(parse_header(&hex("09 00"), 100), Err(Error::FrameHeader));
        assert_eq!(parse_header(&hex("01 65"), 100), Err(Error::Oversize));
        let largest = hex("08 ff ff ff ff ff ff ff ff");
        assert_eq!(parse_header(&largest, 1 << 20), Err(Error::Oversize));
        assert_eq!(parse_header(&largest, usize::MAX), Ok(Some((9, usize::MAX))), "a 64-bit host");
    }

    /// peers.md §2: Ping with id 7 and the Pong that answers it (the library's own encoder).
    #[test]
    fn ping_and_pong_golden_frames() {
        let ping = hex("011687870101008f486174436861747465722e50696e6780");
        let pong = hex("011683870001018f486174436861747465722e506f6e6780");
        let mut decoder_buf = [0u8; 64];
        let mut decoder = ChatterDecoder::new(&mut decoder_buf);
        decoder.push(&[ping.clone(), pong.clone()].concat());
        let body = decoder.next_body().unwrap().unwrap().to_vec();
        let msg = Msg::parse(&body).unwrap();
        let header = Header { id: 7, first: 7, owner: true, token: true, last: false };
        assert_eq!(msg, Msg { header, msg_type: PING, data: &[] });
        let body = decoder.next_body().unwrap().unwrap().to_vec();
        let header = Header { id: 3, first: 7, owner: false, token: true, last: true };
        assert_eq!(Msg::parse(&body).unwrap(), Msg { header, msg_type: PONG, data: &[] });
        assert_eq!(decoder.next_body(), Ok(None));
        for (frame, msg) in [(&ping, msg), (&pong, Msg { header, msg_type: PONG, data: &[] })] {
            let mut out = [0u8; 64];
            assert_eq!(msg.frame_len(), Ok(frame.len()));
            let n = msg.emit_frame(&mut out).unwrap();
            assert_eq!(&out[..n], &frame[..]);
        }
    }

    #[test]
    fn oversize_frames_are_refused_from_the_header_and_errors_stick() {
        let mut buf = [0u8; 64];
        let mut decoder = ChatterDecoder::with_limit(&mut buf, 10);
        decoder.push(&hex("01 0b"));
        assert_eq!(decoder.next_frame(), Err(wire::Error::Oversize));
        assert_eq!(decoder.next_frame(), Err(wire::Error::Oversize));
        decoder.reset();
        decoder.push(&hex("00"));
        assert_eq!(decoder.next_frame(), Err(wire::Error::Malformed));
        let mut small = [0u8; 8];
        assert_eq!(ChatterDecoder::new(&mut small).max_body(), 6);
    }

    /// Found by the `hat` fuzz target: a frame within the body limit behind an 8-byte length
    /// field does not fit the buffer; it used to wait for room that never came.
    #[test]
    fn a_long_length_field_that_does_not_fit_is_oversize_not_a_stall() {
        let mut small = [0u8; 20];
        let mut decoder = ChatterDecoder::new(&mut small);
        decoder.push(&hex("08 00 00 00 00 00 00 00 12"));
        assert_eq!(decoder.max_body(), 18);
        assert_eq!(decoder.next_frame(), Err(wire::Error::Oversize));
        let mut small = [0u8; 20];
        let mut decoder = ChatterDecoder::new(&mut small);
        decoder.push(&hex("08 00 00 00 00 00 00 00 0b"));
        decoder.push(&[0x80; 11]);
        assert_eq!(decoder.next_body(), Ok(Some(&[0x80; 11][..])), "one that fits is taken");
    }

    #[test]
    fn sealing_in_place_writes_the_minimal_header() {
        let mut buf = [0u8; 300];
        let headroom = ChatterFraming.headroom(buf.len());
        assert_eq!(headroom, 3);
        buf[headroom..headroom + 5].copy_from_slice(b"hello");
        let frame = ChatterFraming.seal(&mut buf, headroom, 5).unwrap();
        assert_eq!(&buf[frame], &hex("01 05 68656c6c6f")[..]);
    }

    #[test]
    fn data_of_another_length_than_announced_is_refused() {
        let header = Header { id: 1, first: 1, owner: true, token: true, last: true };
        let mut buf = [0u8; 64];
        assert_eq!(emit_frame_with(&header, PING, 2, |w| w.raw(&[1]), &mut buf), Err(Error::Length));
        assert_eq!(emit_frame_with(&header, PING, 1, |w| w.raw(&[1]), &mut buf[..5]), Err(Error::BufferTooSmall));
    }
}
