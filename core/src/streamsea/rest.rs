//! The bodies of stream-sea's REST calls under `/api/v1` (gzip undone: the client sends
//! `Content-encoding: gzip`), other than a schema's ([`super::schema::Schema`]):
//!
//! - `POST /schema-versions-vector`: `{"schemaNames": [<stream>...]}`, answered
//!   `{"versionsVector": [<version or null>...]}`, one per name, in order.
//! - `POST /streams/{stream}/publish`: `{"payload": <any JSON>}` (the client's own `publish` is
//!   broken in 0.7.0; this is what it means to send).

use alloc::string::String;
use alloc::vec::Vec;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A REST body of the wrong shape; says which was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyError(pub &'static str);

impl core::fmt::Display for BodyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.0)
    }
}

#[derive(Deserialize)]
struct VersionsRequest {
    #[serde(rename = "schemaNames")]
    schema_names: Vec<String>,
}

/// The stream names a versions-vector request asks about.
pub fn versions_request(body: &[u8]) -> Result<Vec<String>, BodyError> {
    serde_json::from_slice::<VersionsRequest>(body)
        .map(|r| r.schema_names)
        .map_err(|_| BodyError("expected {\"schemaNames\": [<stream name>...]}"))
}

/// The answer: each stream's version (JSON text, as its schema has it) or `null`.
pub fn versions_reply(versions: &[Option<&str>]) -> String {
    let mut out = String::from("{\"versionsVector\":[");
    for (i, version) in versions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(version.unwrap_or("null"));
    }
    out.push_str("]}");
    out
}

#[derive(Deserialize)]
struct Publish<'a> {
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// The message a publish carries, as JSON text.
pub fn publish_payload(body: &[u8]) -> Result<&str, BodyError> {
    serde_json::from_slice::<Publish<'_>>(body)
        .map(|p| p.payload.get())
        .map_err(|_| BodyError("expected {\"payload\": <the message>}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_publish_bodies() {
        assert_eq!(versions_request(br#"{"schemaNames": ["a", "b"]}"#), Ok(alloc::vec!["a".into(), "b".into()]));
        assert!(versions_request(br#"{"schemaNames": "a"}"#).is_err());
        assert_eq!(versions_reply(&[Some("\"1\""), None, Some("2")]), r#"{"versionsVector":["1",null,2]}"#);
        assert_eq!(publish_payload(br#"{"payload": {"t": 91}}"#), Ok(r#"{"t": 91}"#));
        assert!(publish_payload(br#"{"message": 1}"#).is_err());
    }
}
