//! hat-event's Eventer protocol as a sans-IO codec: what a hat client (`hat.event.eventer.connect`)
//! and a hat server (`hat-event-server`, `hat.event.eventer.listen`) say to each other, byte for
//! byte as hat-event 0.9.44 / hat-drivers 0.10.10 / hat-sbs 0.7.6 write it.
//!
//! Layers, each a module, in order of dependence:
//!
//! 1. [`sbs`]: hat's schema binary serialisation (integers, booleans, strings, bytes, arrays,
//!    choices, optionals) as a reader over `&[u8]` and a writer over `&mut [u8]`.
//! 2. [`chatter`]: the TCP framing (`LL`, `L` big-endian, body), its incremental decoder, and
//!    the `HatChatter.Msg` record every frame holds.
//! 3. [`eventer`]: the `HatEventer` messages, each a zero-copy view (parse) and an encoder
//!    (emit, buffer_len), mapped to the core model's types.
//!    With `alloc`, [`owned`] converts them to and from the owned model.
//! 4. [`conversation`]: message ids, conversations and the ping/pong keepalive of one
//!    connection, with time passed in.
//!
//! Nothing here allocates or panics: every bad byte, oversize frame, integer beyond `i64`, bad
//! UTF-8, unknown choice or message type and impossible length is an [`Error`]. The schemas are
//! fixed and hand-written, so there is no recursion and no depth to bound. docs/HAT.md has the
//! wire format, the limits and what differs from hat's own (more lenient) decoder.

pub mod chatter;
pub mod conversation;
pub mod eventer;
#[cfg(feature = "alloc")]
pub mod owned;
pub mod sbs;

/// What can be wrong with hat bytes, or with a value to be written as them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The bytes end in the middle of a value.
    Truncated,
    /// An SBS integer beyond `i64` (hat's C serializer cannot write one either).
    Overflow,
    /// A length or count that is negative, or larger than the bytes after it could hold.
    Length,
    /// A string that is not UTF-8.
    Utf8,
    /// A choice index that the schema does not have.
    UnknownChoice,
    /// A value outside its field's range: microseconds outside `0..1_000_000`, a negative event
    /// id or server id, a number too large for an SBS integer.
    Range,
    /// Bytes after a whole value. hat's decoder ignores them; no hat encoder writes any.
    TrailingBytes,
    /// A message type name that is neither a `HatEventer` message nor a chatter ping or pong.
    UnknownType,
    /// A frame's length field is 0 or more than 8 bytes long.
    FrameHeader,
    /// A frame larger than the size limit.
    Oversize,
    /// The output buffer is too small for what was to be written.
    BufferTooSmall,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated SBS value",
            Error::Overflow => "SBS integer beyond 64 bits",
            Error::Length => "SBS length or count negative or beyond the bytes left",
            Error::Utf8 => "SBS string not UTF-8",
            Error::UnknownChoice => "SBS choice index not in the schema",
            Error::Range => "value outside its field's range",
            Error::TrailingBytes => "bytes after the SBS value",
            Error::UnknownType => "unknown hat message type",
            Error::FrameHeader => "chatter frame length field of 0 or more than 8 bytes",
            Error::Oversize => "chatter frame larger than the size limit",
            Error::BufferTooSmall => "output buffer too small",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
