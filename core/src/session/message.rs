//! The Rivulet session protocol: which packets carry which message, and the message bodies
//! (postcard).
//!
//! - Channel 0 carries session messages; the user rq_type of a packet is its [`MessageKind`].
//!   Channel 1 carries application requests, exactly as cs.packetstream would.
//! - A session request with flag [`FLAG_ONE_WAY`] gets no response. Its tag is then free, and
//!   carries the message's *subject*: the type alias of `Declare`, `Register` and `Notify`
//!   (0 = no alias, the type is inline) and the count of an `Ack`. That is how an event
//!   notification has a 4-byte header: length, alias, flagword, kind.
//! - Evolution: a peer answers a session request of an unknown kind with a failed response
//!   ("unknown message kind N") and ignores an unknown one-way message; bodies only grow by
//!   fields appended at the end, sent only to peers that announced the capability bit that
//!   introduced them, and a decoder ignores bytes after the fields it knows.

use serde::{Deserialize, Serialize};

use crate::model::{
    EventId, EventList, EventPayloadRef, EventTypeRef, PackedList, RegisterEventRef, Status, Timestamp, TypeList,
};
use crate::wire::{self, FrameWriter, PacketKind, PacketRepr};

use super::Error;

/// The protocol version this crate speaks. Init with any other version is refused; compatible
/// additions go through capability bits instead of new versions.
pub const PROTOCOL_VERSION: u16 = 1;
/// Capability bits this crate understands (none defined yet in version 1).
pub const CAPABILITIES: u32 = 0;

/// Channel of session messages.
pub const CHANNEL_SESSION: u64 = 0;
/// Channel of application requests.
pub const CHANNEL_APP: u64 = 1;
/// Request flag: no response will be sent; the tag carries the subject.
pub const FLAG_ONE_WAY: u64 = 0x1;
/// Subject of a `Register` or `Notify` whose event type travels inline.
pub const INLINE_TYPE: u64 = 0;

/// Session message kinds (the user rq_type of a channel-0 request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum MessageKind {
    /// Client → server request: [`InitRequest`] → [`InitResponse`] or a failure reason.
    Init = 0,
    /// Server → client, one-way: [`Status`].
    Status = 1,
    /// Client → server request: the whole new subscription list ([`TypeList`]) → empty or a reason.
    Subscribe = 2,
    /// One-way, either side: subject = alias, body = [`EventTypeRef`].
    Declare = 3,
    /// Client → server, one-way, sequenced: subject = alias, body = [`RegisterBody`].
    Register = 4,
    /// Client → server request: a list of [`RegisterEventRef`] → the registered [`EventList`].
    RegisterRequest = 5,
    /// Server → client, one-way, sequenced: subject = alias, body = [`NotifyBody`].
    Notify = 6,
    /// One-way, either side: subject = how many more of the peer's sequenced messages were taken.
    Ack = 7,
    /// Client → server request: [`crate::model::QueryParams`] → [`crate::model::QueryResult`].
    Query = 8,
    /// Request, either side, empty → empty.
    Ping = 9,
    /// Server → client, one-way: subject = the sequence number of a `Register` the server took
    /// but will not store (not allowed, say), body = the reason (`str`). The `Ack` that covers
    /// that registration follows. A peer that predates it ignores it (an unknown one-way kind).
    Refused = 10,
    /// Server → client, one-way, subject 0: why the server is closing the link (the client fell
    /// too far behind, the server is stopping...). ERQ and EOF follow. Ignored by a peer that
    /// predates it.
    Closing = 11,
}

impl MessageKind {
    pub fn from_rq_type(rq_type: u64) -> Option<Self> {
        use MessageKind::*;
        Some(match rq_type {
            0 => Init,
            1 => Status,
            2 => Subscribe,
            3 => Declare,
            4 => Register,
            5 => RegisterRequest,
            6 => Notify,
            7 => Ack,
            8 => Query,
            9 => Ping,
            10 => Refused,
            11 => Closing,
            _ => return None,
        })
    }

    pub fn is_one_way(self) -> bool {
        matches!(
            self,
            MessageKind::Status
                | MessageKind::Declare
                | MessageKind::Register
                | MessageKind::Notify
                | MessageKind::Ack
                | MessageKind::Refused
                | MessageKind::Closing
        )
    }
}

/// What each side can take, announced at init.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Limits {
    /// Sequenced messages (`Register` to a server, `Notify` to a client) the sender may have
    /// outstanding without an `Ack`.
    pub window: u16,
    /// Type aliases the sender may declare (alias numbers `1..=aliases`).
    pub aliases: u16,
    /// Largest packet body this side can receive.
    pub max_packet: u32,
}

/// The longest client name a server takes, in bytes: names go into logs, status and ACL
/// lookups, so a longer one is refused at init ([`client_name_error`]).
pub const MAX_CLIENT_NAME: usize = 128;

/// Why a server refuses a client name, if it does: longer than [`MAX_CLIENT_NAME`].
pub fn client_name_error(name: &str) -> Option<ClientNameTooLong> {
    (name.len() > MAX_CLIENT_NAME).then_some(ClientNameTooLong { len: name.len() })
}

/// A client name over [`MAX_CLIENT_NAME`] bytes; its `Display` is the reason a client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientNameTooLong {
    pub len: usize,
}

impl core::fmt::Display for ClientNameTooLong {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "the client name is {} bytes; the longest a server takes is {MAX_CLIENT_NAME}", self.len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct InitRequest<'a> {
    pub version: u16,
    pub capabilities: u32,
    pub client_name: &'a str,
    pub credential: Option<&'a [u8]>,
    #[serde(borrow)]
    pub subscriptions: TypeList<'a>,
    /// Notify only events registered by this server.
    pub server_id: Option<u64>,
    /// Notify events only once they are stored durably.
    pub persisted: bool,
    /// The durable session to resume (the id a server gave before), or `None` for a new one.
    pub session: Option<u64>,
    /// Sequence number of the oldest `Register` the client still holds (or of its next one).
    pub first_seq: u32,
    pub limits: Limits,
    /// Each side pings after this long without receiving, and gives up after twice as long.
    pub keepalive_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Accepted {
    pub version: u16,
    pub capabilities: u32,
    pub status: Status,
    pub server_id: u64,
    pub server_session: u64,
    /// The client's durable session id (new, or the resumed one).
    pub session: u64,
    /// Every `Register` below this sequence number is registered; the client drops those and
    /// sends the rest. The first `Register` on the link has sequence number
    /// `max(first_seq, next_seq)`, and each next one is one more. A server that does not know the
    /// session answers with a new session id and `next_seq = first_seq`.
    pub next_seq: u32,
    pub limits: Limits,
    pub keepalive_ms: u32,
}

/// The successful answer to an init; a refusal is a failed response with a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InitResponse<'a> {
    Accepted(Accepted),
    /// Prove knowledge of the credential over this nonce, then init again.
    Challenge(&'a [u8]),
}

/// Body of a `Register` with an alias (with [`INLINE_TYPE`] the type comes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RegisterBody<'a> {
    pub source_timestamp: Option<Timestamp>,
    #[serde(borrow)]
    pub payload: Option<EventPayloadRef<'a>>,
}

/// An event id relative to the previous one notified on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IdDelta {
    /// Same server and session; instance = previous instance + delta.
    Instance(i64),
    Full(EventId),
}

impl IdDelta {
    pub fn between(previous: Option<EventId>, id: EventId) -> Self {
        match previous {
            Some(p) if p.server == id.server && p.session == id.session => {
                IdDelta::Instance(id.instance.wrapping_sub(p.instance) as i64)
            }
            _ => IdDelta::Full(id),
        }
    }

    pub fn resolve(self, previous: Option<EventId>) -> Option<EventId> {
        match self {
            IdDelta::Full(id) => Some(id),
            IdDelta::Instance(delta) => {
                previous.map(|p| EventId { instance: p.instance.wrapping_add(delta as u64), ..p })
            }
        }
    }
}

/// Body of a `Notify` with an alias (with [`INLINE_TYPE`] the type comes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NotifyBody<'a> {
    pub id: IdDelta,
    pub timestamp: Timestamp,
    pub source_timestamp: Option<Timestamp>,
    #[serde(borrow)]
    pub payload: Option<EventPayloadRef<'a>>,
}

/// Body of a `RegisterRequest`.
pub type RegisterList<'a> = PackedList<'a, RegisterEventRef<'a>>;
/// Body of its response.
pub type RegisteredList<'a> = EventList<'a>;

/// Whether registration sequence number `seq` is at or after `base`. Sequence numbers wrap, so
/// they compare within half the range, the same way on both sides of a link.
pub fn seq_at_or_after(seq: u32, base: u32) -> bool {
    seq.wrapping_sub(base) <= u32::MAX / 2
}

/// Decodes a body, ignoring bytes after the known fields (see the evolution rule above).
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    postcard::take_from_bytes(bytes).map(|(value, _rest)| value).map_err(|_| Error::Decode)
}

/// Decodes a body that starts with an inline event type when `subject` is [`INLINE_TYPE`].
pub fn decode_subject<'a, T: Deserialize<'a>>(
    subject: u64,
    bytes: &'a [u8],
) -> Result<(Option<EventTypeRef<'a>>, T), Error> {
    if subject == INLINE_TYPE {
        let (ty, rest) = postcard::take_from_bytes::<EventTypeRef<'a>>(bytes).map_err(|_| Error::Decode)?;
        Ok((Some(ty), decode(rest)?))
    } else {
        Ok((None, decode(bytes)?))
    }
}

/// Writes a session request (or one-way message) of `kind` with `body`.
pub fn push_request<T: Serialize + ?Sized>(
    out: &mut FrameWriter<'_>,
    tag: u64,
    kind: MessageKind,
    body: &T,
) -> Result<(), Error> {
    out.push(CHANNEL_SESSION, tag, request_kind(kind), |buf| encode_into(body, buf))
}

/// The packet kind a session message of `kind` goes out as.
fn request_kind(kind: MessageKind) -> PacketKind {
    let flags = if kind.is_one_way() { FLAG_ONE_WAY } else { 0 };
    PacketKind::Request { rq_type: kind as u64, flags }
}

/// The rule for every packet either side sends: no larger than the peer said it can receive
/// (its `Limits::max_packet`; 0 while it has not said: no check). [`Error::TooLarge`] otherwise.
pub fn check_fits(peer_max_packet: u32, header: &PacketRepr<'_>, payload_len: usize) -> Result<(), Error> {
    let len = header.buffer_len()?.checked_add(payload_len).ok_or(Error::TooLarge)?;
    if peer_max_packet > 0 && len > peer_max_packet as usize {
        return Err(Error::TooLarge);
    }
    Ok(())
}

/// [`check_fits`] for a session message of `kind` with a body of `body_len` bytes.
pub fn check_message_fits(peer_max_packet: u32, tag: u64, kind: MessageKind, body_len: usize) -> Result<(), Error> {
    let header = PacketRepr { channel: CHANNEL_SESSION, tag, kind: request_kind(kind), payload: &[] };
    check_fits(peer_max_packet, &header, body_len)
}

/// Writes a one-way message whose body is an optional inline type followed by `body`.
pub fn push_with_subject<T: Serialize + ?Sized>(
    out: &mut FrameWriter<'_>,
    kind: MessageKind,
    subject: u64,
    inline_type: Option<EventTypeRef<'_>>,
    body: &T,
) -> Result<(), Error> {
    let kind_field = PacketKind::Request { rq_type: kind as u64, flags: FLAG_ONE_WAY };
    out.push(CHANNEL_SESSION, subject, kind_field, |buf| {
        let mut at = 0;
        if let Some(ty) = inline_type {
            at = encode_into(&ty, buf)?;
        }
        Ok::<usize, Error>(at + encode_into(body, buf.get_mut(at..).ok_or(Error::Wire(wire::Error::BufferTooSmall))?)?)
    })
}

/// Writes a one-way message with the given subject whose body is already encoded, after an
/// optional inline type (a `Register` replayed from the outbox).
pub fn push_encoded(
    out: &mut FrameWriter<'_>,
    kind: MessageKind,
    subject: u64,
    inline_type: Option<EventTypeRef<'_>>,
    body: &[u8],
) -> Result<(), Error> {
    let kind_field = PacketKind::Request { rq_type: kind as u64, flags: FLAG_ONE_WAY };
    out.push(CHANNEL_SESSION, subject, kind_field, |buf| {
        let at = match inline_type {
            Some(ty) => encode_into(&ty, buf)?,
            None => 0,
        };
        let end = at.checked_add(body.len()).ok_or(Error::Encode)?;
        buf.get_mut(at..end).ok_or(Error::Wire(wire::Error::BufferTooSmall))?.copy_from_slice(body);
        Ok::<usize, Error>(end)
    })
}

/// Encodes `value` at the front of `out` (e.g. an outbox entry); returns its length.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut [u8]) -> Result<usize, Error> {
    postcard::to_slice(value, out).map(|b| b.len()).map_err(|e| match e {
        postcard::Error::SerializeBufferFull => Error::Wire(wire::Error::BufferTooSmall),
        _ => Error::Encode,
    })
}

/// Writes a successful response with a postcard `body`.
pub fn push_response<T: Serialize + ?Sized>(
    out: &mut FrameWriter<'_>,
    channel: u64,
    tag: u64,
    body: &T,
) -> Result<(), Error> {
    out.push(channel, tag, PacketKind::Response { ok: true, flags: 0 }, |buf| encode_into(body, buf))
}

/// Writes a response with raw payload bytes (application requests, and empty session replies).
pub fn push_raw_response(
    out: &mut FrameWriter<'_>,
    channel: u64,
    tag: u64,
    ok: bool,
    flags: u64,
    payload: &[u8],
) -> Result<(), Error> {
    let repr = wire::PacketRepr { channel, tag, kind: PacketKind::Response { ok, flags }, payload };
    out.push_repr(&repr).map_err(Error::Wire)
}

/// Writes a failed response carrying `reason`.
pub fn push_failure(out: &mut FrameWriter<'_>, channel: u64, tag: u64, reason: &str) -> Result<(), Error> {
    push_raw_response(out, channel, tag, false, 0, reason.as_bytes())
}
