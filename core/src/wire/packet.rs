//! One cs.packetstream packet body (the bytes after the length prefix):
//!
//! ```text
//! BSUInt tag | BSUInt flagword | [BSUInt channel] | [BSUInt rq_type] | payload...
//! flagword = has_channel (0x01) | is_request (0x02) | flags << 2
//! ```
//!
//! [`Packet`] is a checked zero-copy view; [`PacketRepr`] is its meaning (request, response,
//! EOF, ERQ) with the wire's offsets undone: user rq_type = wire rq_type - 1, and a response's
//! wire flags = `(user_flags << 1) | ok`.

use super::{Error, varint};

const HAS_CHANNEL: u64 = 0x01;
const IS_REQUEST: u64 = 0x02;

/// Tag of the EOF packet: the sender will send nothing more.
pub const TAG_EOF: u64 = 0;
/// Tag of the ERQ packet: the sender will send no more requests.
pub const TAG_ERQ: u64 = 1;
/// Where cs.packetstream's tag counter starts on channel 0, after EOF's and ERQ's tags.
pub const FIRST_REQUEST_TAG: u64 = 2;

/// A checked view of a packet body. Construction validates every header field, so the
/// accessors cannot fail afterwards.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
    tag: u64,
    flagword: u64,
    channel: u64,
    wire_rq_type: u64,
    payload_start: usize,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates the header of `buffer` (a whole packet body). Never panics.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let bytes = buffer.as_ref();
        let mut at = 0;
        let mut next = || -> Result<u64, Error> {
            let rest = bytes.get(at..).ok_or(Error::Truncated)?;
            let (value, len) = varint::decode(rest)?;
            at += len;
            Ok(value)
        };
        let tag = next()?;
        let flagword = next()?;
        let channel = if flagword & HAS_CHANNEL != 0 { next()? } else { 0 };
        let wire_rq_type = if flagword & IS_REQUEST != 0 { next()? } else { 0 };
        Ok(Packet { tag, flagword, channel, wire_rq_type, payload_start: at, buffer })
    }

    pub fn tag(&self) -> u64 {
        self.tag
    }

    pub fn channel(&self) -> u64 {
        self.channel
    }

    pub fn is_request(&self) -> bool {
        self.flagword & IS_REQUEST != 0
    }

    /// The flags as they stand in the flagword (for a response: `(user_flags << 1) | ok`).
    pub fn wire_flags(&self) -> u64 {
        self.flagword >> 2
    }

    /// The request type as it stands on the wire (user type + 1); 0 for a response.
    pub fn wire_rq_type(&self) -> u64 {
        self.wire_rq_type
    }

    /// Length of the header fields before the payload.
    pub fn header_len(&self) -> usize {
        self.payload_start
    }

    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.payload_start..).unwrap_or(&[])
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// What a packet means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PacketKind {
    /// A request of user type `rq_type` (the wire carries `rq_type + 1`).
    Request { rq_type: u64, flags: u64 },
    /// The response to the request with the same channel and tag. When `ok` is false the payload
    /// is a UTF-8 reason.
    Response { ok: bool, flags: u64 },
    /// EOF: the sender will send nothing more (`03 00 02 00` on the wire).
    EndOfFile,
    /// ERQ: the sender will send no more requests (`03 01 02 00`).
    EndOfRequests,
}

/// The meaning of one packet, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PacketRepr<'a> {
    pub channel: u64,
    pub tag: u64,
    pub kind: PacketKind,
    pub payload: &'a [u8],
}

impl<'a> PacketRepr<'a> {
    pub const EOF: PacketRepr<'static> =
        PacketRepr { channel: 0, tag: TAG_EOF, kind: PacketKind::EndOfFile, payload: &[] };
    pub const ERQ: PacketRepr<'static> =
        PacketRepr { channel: 0, tag: TAG_ERQ, kind: PacketKind::EndOfRequests, payload: &[] };

    pub fn request(channel: u64, tag: u64, rq_type: u64, flags: u64, payload: &'a [u8]) -> Self {
        PacketRepr { channel, tag, kind: PacketKind::Request { rq_type, flags }, payload }
    }

    pub fn response(channel: u64, tag: u64, ok: bool, flags: u64, payload: &'a [u8]) -> Self {
        PacketRepr { channel, tag, kind: PacketKind::Response { ok, flags }, payload }
    }

    /// Interprets a checked packet. A request with wire rq_type 0 that is not exactly EOF or ERQ
    /// is [`Error::Malformed`] (cs.packetstream ends its receive loop on one). Tags 0 and 1 are
    /// EOF and ERQ only together with wire rq_type 0; a sender that matches responses by tag
    /// starts its requests at [`FIRST_REQUEST_TAG`] so they never look alike.
    pub fn parse(packet: &Packet<&'a [u8]>) -> Result<Self, Error> {
        let payload: &'a [u8] = packet.buffer.get(packet.payload_start..).unwrap_or(&[]);
        let (channel, tag, flags) = (packet.channel, packet.tag, packet.wire_flags());
        let kind = if !packet.is_request() {
            PacketKind::Response { ok: flags & 1 != 0, flags: flags >> 1 }
        } else if packet.wire_rq_type == 0 {
            match (channel, tag, flags, payload.is_empty()) {
                (0, TAG_EOF, 0, true) => PacketKind::EndOfFile,
                (0, TAG_ERQ, 0, true) => PacketKind::EndOfRequests,
                _ => return Err(Error::Malformed),
            }
        } else {
            PacketKind::Request { rq_type: packet.wire_rq_type - 1, flags }
        };
        Ok(PacketRepr { channel, tag, kind, payload })
    }

    /// Checks and interprets a packet body in one step.
    pub fn parse_bytes(body: &'a [u8]) -> Result<Self, Error> {
        Self::parse(&Packet::new_checked(body)?)
    }

    /// The (flagword, wire rq_type) pair this packet is written with.
    fn header_fields(&self) -> Result<(u64, Option<u64>), Error> {
        let has_channel = if self.channel != 0 { HAS_CHANNEL } else { 0 };
        let (flags, rq) = match self.kind {
            PacketKind::Request { rq_type, flags } => {
                (flags, Some(rq_type.checked_add(1).ok_or(Error::Unrepresentable)?))
            }
            PacketKind::Response { ok, flags } => (shift_in(flags, 1)? | u64::from(ok), None),
            PacketKind::EndOfFile | PacketKind::EndOfRequests => {
                // Anything but the exact EOF/ERQ packet is a malformed EOF to the receiver.
                let tag = if self.kind == PacketKind::EndOfFile { TAG_EOF } else { TAG_ERQ };
                if self.channel != 0 || self.tag != tag || !self.payload.is_empty() {
                    return Err(Error::Unrepresentable);
                }
                (0, Some(0))
            }
        };
        let is_request = if rq.is_some() { IS_REQUEST } else { 0 };
        let flagword = shift_in(flags, 2)? | is_request | has_channel;
        Ok((flagword, rq))
    }

    /// Length of the packet body this repr emits.
    pub fn buffer_len(&self) -> Result<usize, Error> {
        let (flagword, rq) = self.header_fields()?;
        let channel = if self.channel != 0 { varint::encoded_len(self.channel) } else { 0 };
        Ok(varint::encoded_len(self.tag)
            + varint::encoded_len(flagword)
            + channel
            + rq.map_or(0, varint::encoded_len)
            + self.payload.len())
    }

    /// Writes the packet body to the front of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let (flagword, rq) = self.header_fields()?;
        let mut at = 0;
        let mut put = |value: u64, buf: &mut [u8]| -> Result<(), Error> {
            at += varint::encode(value, buf.get_mut(at..).ok_or(Error::BufferTooSmall)?)?;
            Ok(())
        };
        put(self.tag, buf)?;
        put(flagword, buf)?;
        if self.channel != 0 {
            put(self.channel, buf)?;
        }
        if let Some(rq) = rq {
            put(rq, buf)?;
        }
        let end = at.checked_add(self.payload.len()).ok_or(Error::BufferTooSmall)?;
        buf.get_mut(at..end).ok_or(Error::BufferTooSmall)?.copy_from_slice(self.payload);
        Ok(end)
    }

    /// True for the requests that open no in-flight entry: EOF and ERQ.
    pub fn is_end_marker(&self) -> bool {
        matches!(self.kind, PacketKind::EndOfFile | PacketKind::EndOfRequests)
    }
}

fn shift_in(value: u64, bits: u32) -> Result<u64, Error> {
    if value >> (64 - bits) != 0 { Err(Error::Unrepresentable) } else { Ok(value << bits) }
}
