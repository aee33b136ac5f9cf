//! Target `streamsea`: stream-sea's codec (`rivulet_core::streamsea`) over arbitrary bytes.
//!
//! Input: `split: u8`, then the bytes, which go every way a server reads them: as a websocket
//! text message (if UTF-8), as a schema, as the REST bodies, and cut at `split` (modulo the
//! length) into a schema and a payload to check against it.
//!
//! Asserts: nothing panics; a message that reads has an id from 1, a subscribe a stream name and
//! a group id of the UUID form; a conversation accepts only an authenticate first; a schema
//! that reads writes JSON that reads back to the same schema; a schema accepts what it was checked
//! against only if that is a JSON object; the replies a server writes are JSON objects that read
//! with the same id and action.

use rivulet_core::streamsea::rest;
use rivulet_core::streamsea::schema::Schema;
use rivulet_core::streamsea::ws::{self, ClientMessage, Conversation, Request};

use super::input::Input;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let split = usize::from(input.byte());
    let bytes = input.rest();
    if let Ok(text) = core::str::from_utf8(bytes) {
        check_message(text);
    }
    check_schema(bytes, None);
    let _ = rest::versions_request(bytes);
    let _ = rest::publish_payload(bytes);
    let at = if bytes.is_empty() { 0 } else { split % bytes.len() };
    let (schema, payload) = bytes.split_at(at);
    check_schema(schema, core::str::from_utf8(payload).ok());
}

fn check_message(text: &str) {
    let message = match ClientMessage::parse(text) {
        Ok(message) => message,
        Err((id, _)) => {
            assert!(id.is_none_or(|id| id >= 1));
            return;
        }
    };
    assert!(message.id >= 1);
    if let Request::Subscribe { stream, group_id } = &message.request {
        assert!(!stream.is_empty());
        assert!(group_id.as_deref().is_none_or(ws::is_uuid));
    }
    let first = Conversation::default().take(&message);
    assert_eq!(first.is_ok(), message.id == 1 && matches!(message.request, Request::Authenticate(_)));
    for reply in [
        ws::authenticate_reply(message.id, true, text),
        ws::subscription_reply(message.id, text),
        ws::delivery(message.id, text, "{}"),
        ws::error_reply(Some(message.id), "subscribe", text),
    ] {
        let value: serde_json::Value = serde_json::from_str(&reply).expect("a reply is JSON");
        assert_eq!(value["id"].as_u64(), Some(message.id), "{reply}");
    }
}

fn check_schema(bytes: &[u8], payload: Option<&str>) {
    let Ok(schema) = Schema::parse(bytes) else { return };
    let json = schema.to_json();
    assert_eq!(Schema::parse(json.as_bytes()).as_ref(), Ok(&schema), "{json}");
    if let Some(payload) = payload
        && schema.check(payload).is_ok()
    {
        let value: serde_json::Value = serde_json::from_str(payload).expect("it was checked");
        assert!(value.is_object(), "{payload}");
    }
}
