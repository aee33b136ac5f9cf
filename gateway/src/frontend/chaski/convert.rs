//! Chaski messages as events, and back (docs/CHASKI.md, "Chaski nodes on the gateway"):
//!
//! - **Type**: topic `t` is the event type `chaski/t` (a topic `a/b` is `chaski/a/b`); a topic that
//!   is no type's tail (a `?` or `*` segment) is refused.
//! - **Payload**: bytes are a binary payload of kind `bytes`; anything else a JSON payload, the
//!   codec's JSON (nested bytes, datetimes and sets keep their tags). Back the same way; a binary
//!   payload of another kind goes as bytes too.
//! - **Time**: the message's timestamp (naive, read as UTC) is the event's source timestamp; a
//!   message made of an event has the source timestamp, else the event's.
//! - **Files**: a `ChaskiFile`'s fields as a chunk of a hashed stream for the gateway's files
//!   (`crate::files`, `stream.rs`).

use rivulet_core::chaski::message::{Message, Value};
use rivulet_core::kelvin::time;
use rivulet_core::model::Timestamp;
use rivulet_core::owned::{Event, EventPath, Payload, RegisterEvent};

/// The first segment of every Chaski event type.
pub const ROOT: &str = "chaski";
/// The kind of a binary payload made of a message's bytes.
pub const BYTES_KIND: &str = "bytes";

/// The event type of a topic, if the topic is a type's tail.
pub fn event_type(topic: &str) -> Option<EventPath> {
    let ty = EventPath::parse(&format!("{ROOT}/{topic}"));
    ty.check_type().ok().map(|()| ty)
}

/// The topic of an event type under `chaski/`.
pub fn topic(event_type: &EventPath) -> Option<String> {
    let mut segments = event_type.segments();
    (segments.next() == Some(ROOT)).then(|| segments.collect::<Vec<_>>().join("/")).filter(|t| !t.is_empty())
}

/// A `ChaskiMessage` as the event it is registered as; `None` for a topic that is no type.
pub fn register_event(message: &Message) -> Option<RegisterEvent> {
    let payload = match &message.data {
        Value::Bytes(bytes) => Payload::Binary { kind: BYTES_KIND.into(), data: bytes.clone() },
        other => Payload::Json(other.to_json()),
    };
    let mut event = RegisterEvent::new(event_type(&message.topic)?, Some(payload));
    if let Value::DateTime(text) = &message.timestamp {
        event.source_timestamp = time::parse_str(text).ok();
    }
    Some(event)
}

/// The data of the message an event is sent as.
pub fn data(payload: Option<&Payload>) -> Value {
    match payload {
        None => Value::Null,
        Some(Payload::Binary { data, .. }) => Value::Bytes(data.clone()),
        Some(Payload::Json(text)) => Value::parse(text.as_bytes()).unwrap_or_else(|_| Value::String(text.clone())),
    }
}

/// A time as Chaski writes one: `datetime.isoformat()` of a naive time (here UTC).
pub fn datetime(t: Timestamp) -> Value {
    let text = time::format(t).unwrap_or_default();
    Value::DateTime(text.trim_end_matches('Z').to_string())
}

/// The `ChaskiMessage` an event is sent as, with the given uuid and TTL.
pub fn message(event: &Event, uuid: String, ttl: u8) -> Option<Message> {
    Some(Message {
        command: "ChaskiMessage".into(),
        topic: topic(&event.event_type)?,
        data: data(event.payload.as_ref()),
        timestamp: datetime(event.source_timestamp.unwrap_or(event.timestamp)),
        ttl: i64::from(ttl),
        uuid: Some(uuid),
    })
}

/// A `ChaskiFile` chunk (`push_file`): the file's name, its bytes, whether it starts the file
/// (its cumulative `size` is its own length) and the running SHA-256 (`hash`, hex) of the file up
/// to its end. `None` if a field is missing or of another shape.
pub struct FileChunk {
    pub name: String,
    pub first: bool,
    pub chunk: Vec<u8>,
    pub running: rivulet_core::files::Digest,
}

pub fn file_chunk(message: &Message) -> Option<FileChunk> {
    let data = &message.data;
    let name = data.get("filename")?.as_str()?.to_string();
    let chunk = match data.get("chunk")? {
        Value::Bytes(bytes) => bytes.clone(),
        _ => return None,
    };
    let size: u64 = match data.get("size")? {
        Value::Number(n) => n.parse().ok()?,
        _ => return None,
    };
    let running = crate::access::from_hex(data.get("hash")?.as_str()?)?.try_into().ok()?;
    Some(FileChunk { name, first: size == chunk.len() as u64, chunk, running })
}

/// An object (`data`) with `fields` set: replaced where it has them, added after the others
/// where it does not. Anything but an object becomes one of `fields`.
pub fn with_fields(data: &Value, fields: Vec<(&str, Value)>) -> Value {
    let mut entries = match data {
        Value::Object(entries) => entries.clone(),
        _ => Vec::new(),
    };
    for (key, value) in fields {
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => entries.push((key.to_string(), value)),
        }
    }
    Value::Object(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_payloads_make_the_round_trip() {
        assert_eq!(event_type("sensor/room1").map(|t| t.to_string()), Some("chaski/sensor/room1".into()));
        assert_eq!(event_type("a//b").and_then(|t| topic(&t)), Some("a//b".into()), "an empty segment is a segment");
        assert_eq!(event_type("*"), None);
        assert_eq!(event_type("a/?"), None);
        assert_eq!(topic(&EventPath::parse("chaski/a/b")), Some("a/b".into()));
        assert_eq!(topic(&EventPath::parse("kelvin/a")), None);
        let pushed = Message {
            command: "ChaskiMessage".into(),
            topic: "topic1".into(),
            data: Value::Bytes(b"hello".to_vec()),
            timestamp: Value::DateTime("2026-12-07T16:20:01.123456".into()),
            ttl: 64,
            uuid: Some("u".into()),
        };
        let event = register_event(&pushed).unwrap();
        assert_eq!(event.payload, Some(Payload::Binary { kind: BYTES_KIND.into(), data: b"hello".to_vec() }));
        let registered = Event {
            id: rivulet_core::model::EventId { server: 1, session: 1, instance: 1 },
            event_type: event.event_type.clone(),
            timestamp: Timestamp { s: 0, us: 0 },
            source_timestamp: event.source_timestamp,
            payload: event.payload.clone(),
        };
        assert_eq!(message(&registered, "u".into(), 64), Some(pushed), "the same message again");
        let object = Value::parse(br#"{"t":21.5,"raw":{"$b64":"AAE="}}"#).unwrap();
        assert_eq!(data(Some(&Payload::Json(object.to_json()))), object);
    }
}
