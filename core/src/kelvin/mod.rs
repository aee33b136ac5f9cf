//! Kelvin's stream protocol (kelvin-python-sdk 0.5.0, `KelvinStream`): one JSON message per line
//! over TCP, between the Kelvin platform (the server) and its apps (the clients). No handshake at
//! this level; a `KelvinApp` waits for a `runtime_manifest` message before its `on_connect`.
//!
//! Layers, each a module:
//!
//! 1. [`line`]: the framing, `\n`-terminated lines up to a size limit (4 MiB in the SDK), as a
//!    `wire::FrameDecoder` over a caller's buffer: no allocation, usable on a device.
//! 2. [`time`], [`krn`], [`msg_type`]: the field grammars: timestamps (written
//!    `YYYY-MM-DDTHH:MM:SS.ffffffZ`, read in every form the SDK reads), Kelvin resource names
//!    (`krn:<ns>:<nss>`, the SDK's checks per namespace) and message types
//!    (`<type>[;key=value]...`, normalised as the SDK's classes write them).
//! 3. [`message`]: a whole message, read from a line and written as one: the SDK's key order,
//!    `null` fields left out, the payload kept as compact JSON text.
//!
//! Everything above the line framing needs `alloc` (feature `kelvin`): a message holds strings
//! and JSON of any size, and serde_json reads it. Nothing panics on input: every bad line is an
//! [`Error`]. docs/KELVIN.md has the rules and where we differ from the SDK.

pub mod line;

#[cfg(feature = "kelvin")]
pub mod krn;
#[cfg(feature = "kelvin")]
pub mod message;
#[cfg(feature = "kelvin")]
pub mod msg_type;
#[cfg(feature = "kelvin")]
pub mod time;

/// What can be wrong with a Kelvin line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// A line longer than the size limit (the stream has lost its place: close it).
    Oversize,
    /// Not a JSON object, or a field of the wrong JSON kind.
    Json,
    /// No `type`.
    MissingType,
    /// A `data` or `parameter` type whose `pt` is not `number`, `string`, `boolean` or `object`.
    Type,
    /// A `resource` or `source` that is no KRN, or not one of its namespace's form.
    Krn,
    /// An `id` that is no UUID.
    Id,
    /// A `timestamp` in no form the SDK reads, or out of range.
    Timestamp,
    /// A payload of the wrong kind for a `data`/`parameter` type with a `pt`.
    Payload,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::Oversize => "line longer than the limit",
            Error::Json => "not a JSON object with the fields of a Kelvin message",
            Error::MissingType => "no message type",
            Error::Type => "a primitive type (pt) other than number, string, boolean or object",
            Error::Krn => "not a KRN of the form its namespace takes (krn:<ns>:<nss>)",
            Error::Id => "id is not a UUID",
            Error::Timestamp => "timestamp in no form Kelvin reads",
            Error::Payload => "payload of the wrong kind for the message type",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
