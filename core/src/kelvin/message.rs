//! A whole Kelvin message, as one line of JSON: read as the SDK's `Message.model_validate_json`
//! reads it, written as its `encode()` writes it.
//!
//! - Keys are written in the SDK's order, `type`, `resource`, `id`, `trace_id`, `source`,
//!   `timestamp`, `payload`, compact, with absent (and `null`) fields left out.
//! - Read: `type` is required; `id` (a UUID in any of its forms, written lowercase with hyphens)
//!   and `timestamp` default to what the caller passes ([`Defaults`]: a new id, the time now), as
//!   the SDK makes them; unknown keys are ignored.
//! - The payload is JSON of any kind, kept as compact text, except for the SDK's strictly typed
//!   primitives (`data;pt=number` and its kin, see [`MsgType::strict_primitive`]): a finite
//!   number, a string or a boolean, and when absent the SDK's default (`0.0`, `""`, `false`).
//!   A `data` or `parameter` message is never written without a payload (the SDK refuses too).
//!
//! Not read (the SDK converts them): the legacy v1 (`data_type`, `asset_name`, `name`) and v0
//! (`_` header) forms. Not checked: the fields inside the payloads of control, recommendation,
//! manifest and action messages, which pass through as JSON (a Kelvin app's SDK checks them).

use alloc::string::{String, ToString};
use core::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::krn::Krn;
use super::msg_type::{MsgType, Primitive};
use super::{Error, time};
use crate::json;
use crate::model::Timestamp;

/// A message id: a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// Reads the forms pydantic takes: 32 hex digits, with the four hyphens, braced, or after
    /// `urn:uuid:`; either case.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let text = text.strip_prefix("urn:uuid:").unwrap_or(text);
        let text = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(text);
        let bytes = text.as_bytes();
        let hyphenated = bytes.len() == 36;
        if hyphenated && [8, 13, 18, 23].iter().any(|&at| bytes.get(at) != Some(&b'-')) {
            return Err(Error::Id);
        }
        if !hyphenated && bytes.len() != 32 {
            return Err(Error::Id);
        }
        let mut digits = bytes.iter().filter(|&&b| !(hyphenated && b == b'-'));
        let mut out = [0u8; 16];
        for byte in &mut out {
            let mut next = || digits.next().and_then(|&b| char::from(b).to_digit(16)).ok_or(Error::Id);
            let (high, low) = (next()?, next()?);
            *byte = u8::try_from(high << 4 | low).map_err(|_| Error::Id)?;
        }
        Ok(Uuid(out))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// What a message that leaves out its `id` or `timestamp` gets: the SDK makes a new UUID and
/// takes the time now, and so does the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    pub id: Uuid,
    pub now: Timestamp,
}

/// One Kelvin message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub msg_type: MsgType,
    pub resource: Option<Krn>,
    pub id: Uuid,
    pub trace_id: Option<String>,
    pub source: Option<Krn>,
    pub timestamp: Timestamp,
    /// Compact JSON text; `None` for no payload.
    pub payload: Option<String>,
}

/// The fields as the line holds them, strings and JSON borrowed where they can be.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow, default)]
    msg_type: Option<alloc::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    resource: Option<alloc::borrow::Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    trace_id: Option<alloc::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    source: Option<alloc::borrow::Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
}

/// A field that is there, `null` included (only a missing one is `None`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

impl Message {
    /// A message of `msg_type` with the given id and time and nothing else.
    pub fn new(msg_type: MsgType, id: Uuid, timestamp: Timestamp) -> Self {
        Message { msg_type, resource: None, id, trace_id: None, source: None, timestamp, payload: None }
    }

    /// Reads one line (without its `\n`; surrounding whitespace is allowed).
    pub fn parse(line: &[u8], defaults: Defaults) -> Result<Self, Error> {
        // serde would read a struct from an array too; a message is an object.
        if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Error::Json);
        }
        let wire: Wire<'_> = serde_json::from_slice(line).map_err(|_| Error::Json)?;
        let msg_type = MsgType::parse(&wire.msg_type.ok_or(Error::MissingType)?)?;
        let krn = |text: Option<alloc::borrow::Cow<'_, str>>| text.map(|t| Krn::parse(&t)).transpose();
        let id = match wire.id {
            Some(raw) => Uuid::parse(&json::string(raw).ok_or(Error::Id)?)?,
            None => defaults.id,
        };
        let timestamp = match wire.timestamp {
            None => defaults.now,
            Some(raw) if raw.get().starts_with('"') => time::parse_str(&json::string(raw).ok_or(Error::Json)?)?,
            Some(raw) => time::parse_number(raw.get())?,
        };
        let payload = wire.payload.map(|raw| json::compact(raw.get())).filter(|p| p != "null" || strict(&msg_type));
        let payload = match msg_type.strict_primitive() {
            Some(primitive) => Some(primitive_payload(primitive, payload)?),
            None => payload,
        };
        Ok(Message {
            resource: krn(wire.resource)?,
            source: krn(wire.source)?,
            msg_type,
            id,
            trace_id: wire.trace_id.map(|t| t.into_owned()),
            timestamp,
            payload,
        })
    }

    /// Appends the message as the SDK writes it, without the `\n`.
    pub fn write(&self, out: &mut String) -> Result<(), Error> {
        if self.msg_type.primitive().is_some() && self.payload.is_none() {
            return Err(Error::Payload);
        }
        out.push_str("{\"type\":");
        json::write_string(&self.msg_type.to_string(), out);
        if let Some(resource) = &self.resource {
            out.push_str(",\"resource\":");
            json::write_string(&resource.to_string(), out);
        }
        out.push_str(",\"id\":\"");
        out.push_str(&self.id.to_string());
        out.push('"');
        if let Some(trace_id) = &self.trace_id {
            out.push_str(",\"trace_id\":");
            json::write_string(trace_id, out);
        }
        if let Some(source) = &self.source {
            out.push_str(",\"source\":");
            json::write_string(&source.to_string(), out);
        }
        out.push_str(",\"timestamp\":\"");
        time::write(self.timestamp, out)?;
        out.push('"');
        if let Some(payload) = &self.payload {
            out.push_str(",\"payload\":");
            out.push_str(payload);
        }
        out.push('}');
        Ok(())
    }

    /// The message as a line, `\n` included.
    pub fn to_line(&self) -> Result<String, Error> {
        let mut out = String::with_capacity(160 + self.payload.as_ref().map_or(0, String::len));
        self.write(&mut out)?;
        out.push('\n');
        Ok(out)
    }
}

fn strict(msg_type: &MsgType) -> bool {
    msg_type.strict_primitive().is_some()
}

/// A strictly typed primitive's payload: checked, or the SDK's default when absent.
fn primitive_payload(primitive: Primitive, payload: Option<String>) -> Result<String, Error> {
    let Some(payload) = payload else {
        return Ok(match primitive {
            Primitive::Number => "0.0",
            Primitive::String => "\"\"",
            Primitive::Boolean => "false",
            Primitive::Object => "null",
        }
        .to_string());
    };
    let first = payload.as_bytes().first().copied();
    let fits = match primitive {
        Primitive::Number => first.is_some_and(|b| b == b'-' || b.is_ascii_digit()),
        Primitive::String => first == Some(b'"'),
        Primitive::Boolean => payload == "true" || payload == "false",
        Primitive::Object => true,
    };
    if fits { Ok(payload) } else { Err(Error::Payload) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "39a7520a-a351-49c1-92f5-c0b5f4dc4881";

    fn defaults() -> Defaults {
        Defaults { id: Uuid([7; 16]), now: Timestamp { s: 1_700_000_000, us: 0 } }
    }

    fn round_trip(line: &str) -> Result<String, Error> {
        let message = Message::parse(line.as_bytes(), defaults())?;
        let mut out = String::new();
        message.write(&mut out)?;
        Ok(out)
    }

    #[test]
    fn the_captured_line_makes_the_round_trip_byte_for_byte() {
        let line = r#"{"type":"data;pt=number","resource":"krn:ad:asset1/temp","id":"39a7520a-a351-49c1-92f5-c0b5f4dc4881","timestamp":"2024-01-02T03:04:05.678901Z","payload":21.5}"#;
        assert_eq!(round_trip(line).unwrap(), line);
        let message = Message::parse(line.as_bytes(), defaults()).unwrap();
        assert_eq!(message.resource, Some(Krn::asset_datastream("asset1", "temp")));
        assert_eq!(message.timestamp, Timestamp { s: 1_704_164_645, us: 678_901 });
        assert_eq!(message.payload.as_deref(), Some("21.5"));
    }

    #[test]
    fn defaults_fill_what_is_left_out_and_nulls_go() {
        let out = round_trip(r#"{"type":"weird;x=1","payload":null,"extra":[1],"trace_id":"t"}"#).unwrap();
        assert_eq!(
            out,
            r#"{"type":"weird;x=1","id":"07070707-0707-0707-0707-070707070707","trace_id":"t","timestamp":"2023-11-14T22:13:20.000000Z"}"#
        );
        let number = round_trip(&format!(r#"{{"type":"data;pt=number","id":"{ID}"}}"#)).unwrap();
        assert!(number.ends_with(r#""payload":0.0}"#), "the SDK's default: {number}");
    }

    #[test]
    fn strict_primitives_refuse_other_kinds() {
        for (t, payload) in [
            ("data;pt=number", "\"1\""),
            ("data;pt=number", "true"),
            ("data;pt=boolean", "1"),
            ("parameter;pt=string", "1"),
            ("data;pt=number", "null"),
        ] {
            let line = format!(r#"{{"type":"{t}","id":"{ID}","payload":{payload}}}"#);
            assert_eq!(round_trip(&line), Err(Error::Payload), "{line}");
        }
        let loose = format!(r#"{{"type":"data;pt=number;icd=x","id":"{ID}","payload":"1"}}"#);
        assert!(round_trip(&loose).is_ok(), "not one of the SDK's strict classes");
    }

    #[test]
    fn ids_in_every_form_and_bad_lines() {
        for id in [
            "39A7520AA35149C192F5C0B5F4DC4881",
            "urn:uuid:39a7520a-a351-49c1-92f5-c0b5f4dc4881",
            "{39a7520a-a351-49c1-92f5-c0b5f4dc4881}",
        ] {
            assert_eq!(Uuid::parse(id).unwrap().to_string(), ID);
        }
        for bad in [
            "nope",
            "39a7520a-a351-49c1-92f5-c0b5f4dc488",
            "39a7520aa-351-49c1-92f5-c0b5f4dc4881",
            "39a7520a-a351-49c1-92f5-c0b5f4dc488g",
        ] {
            assert_eq!(Uuid::parse(bad), Err(Error::Id), "{bad}");
        }
        assert_eq!(round_trip("[1]"), Err(Error::Json));
        assert_eq!(round_trip(r#"["data;pt=number"]"#), Err(Error::Json), "an array is no message");
        assert_eq!(round_trip(""), Err(Error::Json));
        assert_eq!(round_trip(r#"{"id":"x"}"#), Err(Error::MissingType));
        assert_eq!(round_trip(r#"{"type":"a","resource":"krn:ad:x"}"#), Err(Error::Krn));
        assert_eq!(round_trip(r#"{"type":"a","timestamp":null}"#), Err(Error::Timestamp));
        assert_eq!(round_trip(r#"{"type":"a","id":null}"#), Err(Error::Id));
        assert_eq!(round_trip(r#"{"type":"a","id":7}"#), Err(Error::Id));
    }

    #[test]
    fn a_primitive_without_payload_is_not_written() {
        let message = Message::new(MsgType::data(Primitive::Number), Uuid([0; 16]), Timestamp { s: 0, us: 0 });
        assert_eq!(message.to_line(), Err(Error::Payload));
    }
}
