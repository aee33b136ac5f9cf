//! Kelvin messages as events, and back; the mapping docs/GATEWAY.md ("Kelvin apps") documents.
//!
//! - **Type**: the message's resource `krn:<ns>:<a>/<b>` is the event type `kelvin/<ns>/<a>/<b>`
//!   (`krn:ad:pump/temp` is `kelvin/ad/pump/temp`); a message without a resource is
//!   `kelvin/_/<message type name>`.
//! - **Time**: the message's timestamp is the event's source timestamp (the event's own
//!   timestamp is the gateway's).
//! - **Payload**: JSON, what the event type and timestamps do not hold, in the SDK's key order:
//!   `{"type", "id", "trace_id"?, "source"?, "payload"?}`. So a message makes the round trip
//!   unchanged, byte for byte.
//! - **Events from elsewhere** (a device, `rivulet pub`): an event under `kelvin/` whose payload
//!   is such an object is that message; any other JSON payload is a data message of it:
//!   `data;pt=number`, `data;pt=string`, `data;pt=boolean`, or `data;icd=rivulet.json` for
//!   objects and arrays, with an id made from the event's id and the source timestamp (else the
//!   timestamp). Binary payloads, and events outside `kelvin/`, are not Kelvin messages.

use rivulet_core::json;
use rivulet_core::kelvin::krn::Krn;
use rivulet_core::kelvin::message::{Defaults, Message, Uuid};
use rivulet_core::kelvin::msg_type::{MsgType, Primitive};
use rivulet_core::kelvin::time;
use rivulet_core::owned::{Event, EventPath, Payload, RegisterEvent};

/// The first segment of every Kelvin event type.
pub const ROOT: &str = "kelvin";
/// The namespace segment of messages without a resource.
pub const NO_RESOURCE: &str = "_";
/// The `icd` of a data message made of a JSON object or array.
pub const JSON_ICD: &str = "rivulet.json";

/// The event type of a message.
pub fn event_type(message: &Message) -> EventPath {
    match &message.resource {
        Some(krn) => EventPath::new([ROOT, krn.ns.as_str()].into_iter().chain(krn.nss.split('/'))),
        None => EventPath::new([ROOT, NO_RESOURCE, message.msg_type.name.as_str()]),
    }
}

/// A message as the event it is registered as.
pub fn register_event(message: &Message) -> RegisterEvent {
    let mut envelope = String::from("{\"type\":");
    json::write_string(&message.msg_type.to_string(), &mut envelope);
    envelope.push_str(",\"id\":\"");
    envelope.push_str(&message.id.to_string());
    envelope.push('"');
    if let Some(trace_id) = &message.trace_id {
        envelope.push_str(",\"trace_id\":");
        json::write_string(trace_id, &mut envelope);
    }
    if let Some(source) = &message.source {
        envelope.push_str(",\"source\":");
        json::write_string(&source.to_string(), &mut envelope);
    }
    if let Some(payload) = &message.payload {
        envelope.push_str(",\"payload\":");
        envelope.push_str(payload);
    }
    envelope.push('}');
    RegisterEvent {
        event_type: event_type(message),
        source_timestamp: Some(message.timestamp),
        payload: Some(Payload::Json(envelope)),
    }
}

/// The resource an event type under `kelvin/` names, and whether it names none; `None` for a
/// type outside `kelvin/`.
fn resource(event_type: &EventPath) -> Option<Option<Krn>> {
    let mut segments = event_type.segments();
    if segments.next() != Some(ROOT) {
        return None;
    }
    let ns = segments.next()?;
    if ns == NO_RESOURCE {
        return Some(None);
    }
    let nss: Vec<&str> = segments.collect();
    if nss.is_empty() {
        return None;
    }
    Krn::parse(&format!("krn:{ns}:{}", nss.join("/"))).ok().map(Some)
}

/// The Kelvin message an event is, if it is one.
pub fn message(event: &Event) -> Option<Message> {
    let resource = resource(&event.event_type)?;
    let Some(Payload::Json(text)) = &event.payload else { return None };
    let timestamp = event.source_timestamp.unwrap_or(event.timestamp);
    let id = event_uuid(event);
    if let Some(message) = enveloped(text, resource.as_ref(), timestamp, id) {
        return Some(message);
    }
    let trimmed = text.trim_start();
    let msg_type = match trimmed.as_bytes().first()? {
        b'"' => MsgType::data(Primitive::String),
        b't' | b'f' => MsgType::data(Primitive::Boolean),
        b'{' | b'[' => MsgType::parse(&format!("data;icd={JSON_ICD}")).ok()?,
        b'-' | b'0'..=b'9' => MsgType::data(Primitive::Number),
        _ => return None,
    };
    // Through the codec, so that the payload is checked and compact as any line's.
    let mut line = format!("{{\"type\":\"{msg_type}\",\"id\":\"{id}\",\"timestamp\":\"");
    time::write(timestamp, &mut line).ok()?;
    line.push_str("\",\"payload\":");
    line.push_str(text);
    line.push('}');
    let mut message = Message::parse(line.as_bytes(), Defaults { id, now: timestamp }).ok()?;
    message.resource = resource;
    Some(message)
}

/// The payload as an envelope (a JSON object with the message's other fields), completed with
/// the resource and timestamp and read by the codec; `None` if it is not one.
fn enveloped(
    text: &str,
    resource: Option<&Krn>,
    timestamp: rivulet_core::model::Timestamp,
    id: Uuid,
) -> Option<Message> {
    let rest = text.trim_start().strip_prefix('{')?;
    if !rest.contains("\"type\"") {
        return None;
    }
    let mut line = String::from("{\"timestamp\":\"");
    time::write(timestamp, &mut line).ok()?;
    line.push('"');
    if let Some(resource) = resource {
        line.push_str(",\"resource\":");
        json::write_string(&resource.to_string(), &mut line);
    }
    if !rest.trim_start().starts_with('}') {
        line.push(',');
    }
    line.push_str(rest);
    Message::parse(line.as_bytes(), Defaults { id, now: timestamp }).ok()
}

/// A UUID made of an event's id (version 8: the server, session and instance numbers, with the
/// version and variant bits in place), the same at every delivery.
pub fn event_uuid(event: &Event) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&(event.id.server as u32).to_be_bytes());
    bytes[4..8].copy_from_slice(&(event.id.session as u32).to_be_bytes());
    bytes[8..].copy_from_slice(&event.id.instance.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rivulet_core::model::{EventId, Timestamp};

    const LINE: &str = r#"{"type":"data;pt=number","resource":"krn:ad:pump/temp","id":"39a7520a-a351-49c1-92f5-c0b5f4dc4881","trace_id":"t","source":"krn:wl:node/app","timestamp":"2024-01-02T03:04:05.678901Z","payload":21.5}"#;

    fn defaults() -> Defaults {
        Defaults { id: Uuid([1; 16]), now: Timestamp { s: 0, us: 0 } }
    }

    fn stored(register: RegisterEvent) -> Event {
        Event {
            id: EventId { server: 1, session: 2, instance: 3 },
            event_type: register.event_type,
            timestamp: Timestamp { s: 1_800_000_000, us: 0 },
            source_timestamp: register.source_timestamp,
            payload: register.payload,
        }
    }

    #[test]
    fn a_message_makes_the_round_trip_byte_for_byte() {
        let original = Message::parse(LINE.as_bytes(), defaults()).unwrap();
        let event = register_event(&original);
        assert_eq!(event.event_type.to_string(), "kelvin/ad/pump/temp");
        assert_eq!(event.source_timestamp, Some(original.timestamp));
        let Some(Payload::Json(envelope)) = &event.payload else { panic!() };
        assert_eq!(
            envelope,
            r#"{"type":"data;pt=number","id":"39a7520a-a351-49c1-92f5-c0b5f4dc4881","trace_id":"t","source":"krn:wl:node/app","payload":21.5}"#
        );
        let back = message(&stored(event)).unwrap();
        assert_eq!(back.to_line().unwrap().trim_end(), LINE);
    }

    #[test]
    fn messages_without_resource_or_payload_and_the_sdks_typed_ones() {
        let line = r#"{"type":"recommendation","id":"39a7520a-a351-49c1-92f5-c0b5f4dc4881","timestamp":"2024-01-02T03:04:05.000000Z","payload":{"a":[1,{"b":null}]}}"#;
        let original = Message::parse(line.as_bytes(), defaults()).unwrap();
        let event = register_event(&original);
        assert_eq!(event.event_type.to_string(), "kelvin/_/recommendation");
        assert_eq!(message(&stored(event)).unwrap(), original);
        let bare = Message::parse(
            br#"{"type":"weird;x=1","id":"39a7520a-a351-49c1-92f5-c0b5f4dc4881","timestamp":1}"#,
            defaults(),
        )
        .unwrap();
        assert_eq!(message(&stored(register_event(&bare))).unwrap(), bare);
    }

    #[test]
    fn a_devices_plain_values_are_data_messages() {
        let event = |path: &str, payload: &str| Event {
            id: EventId { server: 1, session: 7, instance: 9 },
            event_type: EventPath::parse(path),
            timestamp: Timestamp { s: 1_704_164_645, us: 0 },
            source_timestamp: None,
            payload: Some(Payload::Json(payload.into())),
        };
        let cases = [
            ("21.5", "data;pt=number"),
            ("-3", "data;pt=number"),
            ("\"on\"", "data;pt=string"),
            ("true", "data;pt=boolean"),
            (r#"{"x": [1, 2]}"#, "data;icd=rivulet.json"),
        ];
        for (payload, msg_type) in cases {
            let made = message(&event("kelvin/ad/pump/temp", payload)).unwrap();
            assert_eq!(made.msg_type.to_string(), msg_type, "{payload}");
            assert_eq!(made.resource, Some(Krn::asset_datastream("pump", "temp")));
            assert_eq!(made.timestamp, Timestamp { s: 1_704_164_645, us: 0 });
        }
        let json = message(&event("kelvin/ad/pump/temp", r#"{"x": [1, 2]}"#)).unwrap();
        assert_eq!(json.payload.as_deref(), Some(r#"{"x":[1,2]}"#), "compact");
        let a = message(&event("kelvin/ad/pump/temp", "1")).unwrap();
        assert_eq!(a.id, message(&event("kelvin/ad/pump/temp", "2")).unwrap().id, "the id is the event's");
        assert_eq!(a.id.to_string(), "00000001-0000-8007-8000-000000000009");
        assert!(message(&event("sensor/pump/temp", "1")).is_none(), "outside kelvin/");
        assert!(message(&event("kelvin/ad/noslash", "1")).is_none(), "no KRN of its namespace");
        assert!(message(&event("kelvin/ad", "1")).is_none());
        assert!(message(&event("kelvin/ad/pump/temp", "null")).is_none());
        let binary =
            Event { payload: Some(Payload::Binary { kind: "k".into(), data: vec![1] }), ..event("kelvin/ad/a/b", "1") };
        assert!(message(&binary).is_none());
    }
}
