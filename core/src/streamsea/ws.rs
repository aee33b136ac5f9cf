//! The stream-sea websocket protocol: every message a JSON object with an `id` (a number) and
//! an `action` (a string). The client numbers its messages from 1; the server answers each
//! with the same `id` and `action` (the client checks `"subscription"` for its subscribe,
//! whatever the spec's prose says), and delivers a stream's messages under the id of the
//! subscribe that asked for them.
//!
//! ```text
//! C: {"id":1,"action":"authenticate","payload":{"type":"basic","clientId":..,"clientSecret":..}}
//!    (or {"type":"jwt","clientId":..,"jwt":..})
//! S: {"id":1,"action":"authenticate","success":true,"payload":{"jailId":..}}
//! C: {"id":2,"action":"subscribe","payload":"<stream>"[,"groupId":"<uuid>"]}
//! S: {"id":2,"action":"subscription","success":true,"streamName":"<stream>","payload":2}
//! S: {"id":2,"action":"subscription","streamName":"<stream>","payload":{...}}   (each message)
//! ```

use alloc::borrow::Cow;
use alloc::string::String;
use core::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Authenticate(Auth),
    /// Messages of `stream`; with a `group_id`, each message goes to one member of the group.
    Subscribe {
        stream: String,
        group_id: Option<String>,
    },
}

/// How a client authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    Basic { client_id: String, client_secret: String },
    Jwt { client_id: String, jwt: String },
}

impl fmt::Debug for Auth {
    // Secrets stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Basic { client_id, .. } => {
                f.debug_struct("Basic").field("client_id", client_id).finish_non_exhaustive()
            }
            Auth::Jwt { client_id, .. } => f.debug_struct("Jwt").field("client_id", client_id).finish_non_exhaustive(),
        }
    }
}

/// One message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    pub id: u64,
    pub request: Request,
}

/// What is wrong with a client's message, or with where it comes in the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// Not a JSON object.
    NotJson,
    /// No `id`, or one that is not a whole number from 1.
    Id,
    /// No `action`, or not a string.
    Action,
    /// An action the protocol does not have (the client never sends others).
    UnknownAction(String),
    /// A payload not of the action's form; says which.
    Payload(&'static str),
    /// A `groupId` that is not a UUID in the 8-4-4-4-12 form.
    GroupId,
    /// The first message is not an authenticate with id 1, or another authenticate came.
    AuthenticateFirst,
    /// An id other than one more than the last.
    Sequence { expected: u64, got: u64 },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::NotJson => f.write_str("a message must be a JSON object"),
            ProtocolError::Id => f.write_str("a message must have an id, a whole number from 1"),
            ProtocolError::Action => f.write_str("a message must have an action, a string"),
            ProtocolError::UnknownAction(action) => write!(f, "no action {action:?}: authenticate or subscribe"),
            ProtocolError::Payload(why) => f.write_str(why),
            ProtocolError::GroupId => f.write_str("groupId must be a UUID in the 8-4-4-4-12 form"),
            ProtocolError::AuthenticateFirst => {
                f.write_str("the first message, and only it, must be an authenticate with id 1")
            }
            ProtocolError::Sequence { expected, got } => {
                write!(f, "id {got} where {expected} was due: ids go up by one")
            }
        }
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    action: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(rename = "groupId", borrow, default)]
    group_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AuthPayload<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "clientId", borrow)]
    client_id: Cow<'a, str>,
    #[serde(rename = "clientSecret", borrow, default)]
    client_secret: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    jwt: Option<Cow<'a, str>>,
}

fn string(raw: &RawValue) -> Option<String> {
    json::string(raw).map(Cow::into_owned)
}

impl ClientMessage {
    /// Reads one text message. The error comes with the message's id when it has a usable one,
    /// so that the answer can carry it.
    pub fn parse(text: &str) -> Result<Self, (Option<u64>, ProtocolError)> {
        // serde would read a struct from an array too; a message is an object.
        if !text.trim_start().starts_with('{') {
            return Err((None, ProtocolError::NotJson));
        }
        let wire: Wire<'_> = serde_json::from_str(text).map_err(|_| (None, ProtocolError::NotJson))?;
        let id = wire.id.and_then(|raw| raw.get().parse::<u64>().ok()).filter(|&id| id >= 1);
        let id = id.ok_or((None, ProtocolError::Id))?;
        let action = wire.action.and_then(string).ok_or((Some(id), ProtocolError::Action))?;
        let fail = |e| (Some(id), e);
        let request = match action.as_str() {
            "authenticate" => {
                let raw = wire.payload.ok_or(fail(ProtocolError::Payload("authenticate needs a payload object")))?;
                let auth: AuthPayload<'_> = serde_json::from_str(raw.get()).map_err(|_| {
                    fail(ProtocolError::Payload("authenticate's payload needs type and clientId strings"))
                })?;
                let client_id = auth.client_id.into_owned();
                match (auth.kind.as_ref(), auth.client_secret, auth.jwt) {
                    ("basic", Some(secret), _) => Auth::Basic { client_id, client_secret: secret.into_owned() },
                    ("jwt", _, Some(jwt)) => Auth::Jwt { client_id, jwt: jwt.into_owned() },
                    ("basic", None, _) => {
                        return Err(fail(ProtocolError::Payload("basic authentication needs a clientSecret string")));
                    }
                    ("jwt", _, None) => {
                        return Err(fail(ProtocolError::Payload("jwt authentication needs a jwt string")));
                    }
                    _ => return Err(fail(ProtocolError::Payload("authentication type must be basic or jwt"))),
                }
                .into()
            }
            "subscribe" => {
                let stream = wire.payload.and_then(string).filter(|s| !s.is_empty());
                let stream = stream.ok_or(fail(ProtocolError::Payload("subscribe's payload must be a stream name")))?;
                let group_id = match wire.group_id {
                    None => None,
                    Some(raw) if raw.get() == "null" => None,
                    Some(raw) => Some(string(raw).filter(|g| is_uuid(g)).ok_or(fail(ProtocolError::GroupId))?),
                };
                Request::Subscribe { stream, group_id }
            }
            _ => return Err(fail(ProtocolError::UnknownAction(action))),
        };
        Ok(ClientMessage { id, request })
    }
}

impl From<Auth> for Request {
    fn from(auth: Auth) -> Self {
        Request::Authenticate(auth)
    }
}

/// `8-4-4-4-12` hex digits (RFC 4122's form), either case.
pub fn is_uuid(text: &str) -> bool {
    let groups: alloc::vec::Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The conversation rules of one connection: ids from 1 up by one, authentication first and
/// only first. The server answers a broken rule with an error and closes.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    last: u64,
}

impl Conversation {
    /// Checks `message` in its place; the next one is due after it either way.
    pub fn take(&mut self, message: &ClientMessage) -> Result<(), ProtocolError> {
        let expected = self.last + 1;
        self.last = message.id;
        let authenticate = matches!(message.request, Request::Authenticate(_));
        if (expected == 1) != authenticate {
            return Err(ProtocolError::AuthenticateFirst);
        }
        if message.id != expected {
            return Err(ProtocolError::Sequence { expected, got: message.id });
        }
        Ok(())
    }

    /// Whether the client has authenticated (its first message went through).
    pub fn started(&self) -> bool {
        self.last >= 1
    }
}

fn head(id: u64, action: &str) -> String {
    let mut out = alloc::format!("{{\"id\":{id},\"action\":");
    json::write_string(action, &mut out);
    out
}

/// The answer to an authenticate: `success`, and on success the client's jail (its name).
pub fn authenticate_reply(id: u64, success: bool, jail_id: &str) -> String {
    let mut out = head(id, "authenticate");
    if success {
        out.push_str(",\"success\":true,\"payload\":{\"jailId\":");
        json::write_string(jail_id, &mut out);
        out.push_str("}}");
    } else {
        out.push_str(",\"success\":false}");
    }
    out
}

/// The first answer to a subscribe: the subscription is in place (its payload is the
/// subscription's id, the request's, as the spec's example has it).
pub fn subscription_reply(id: u64, stream: &str) -> String {
    let mut out = head(id, "subscription");
    out.push_str(",\"success\":true,\"streamName\":");
    json::write_string(stream, &mut out);
    out.push_str(&alloc::format!(",\"payload\":{id}}}"));
    out
}

/// One message of `stream` to the subscription `id`; `payload` is JSON text.
pub fn delivery(id: u64, stream: &str, payload: &str) -> String {
    let mut out = head(id, "subscription");
    out.push_str(",\"streamName\":");
    json::write_string(stream, &mut out);
    out.push_str(",\"payload\":");
    out.push_str(payload);
    out.push('}');
    out
}

/// A refusal of the message `id` (`action` as the client wrote it: `subscribe` answers as
/// `subscription`), with why. Without an id, the answer has `"id":null`.
pub fn error_reply(id: Option<u64>, action: &str, error: &str) -> String {
    let action = if action == "subscribe" { "subscription" } else { action };
    let mut out = match id {
        Some(id) => head(id, action),
        None => {
            let mut out = String::from("{\"id\":null,\"action\":");
            json::write_string(action, &mut out);
            out
        }
    };
    out.push_str(",\"success\":false,\"error\":");
    json::write_string(error, &mut out);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_messages_as_it_writes_them() {
        // stream-sea-client 0.7.0 writes with Python's default separators.
        let auth = r#"{"id": 1, "action": "authenticate", "payload": {"type": "basic", "clientId": "abc", "clientSecret": "def123"}}"#;
        let message = ClientMessage::parse(auth).unwrap();
        assert_eq!(message.id, 1);
        assert_eq!(
            message.request,
            Request::Authenticate(Auth::Basic { client_id: "abc".into(), client_secret: "def123".into() })
        );
        let sub = ClientMessage::parse(r#"{"id": 2, "action": "subscribe", "payload": "boiler_data"}"#).unwrap();
        assert_eq!(sub.request, Request::Subscribe { stream: "boiler_data".into(), group_id: None });
        let jwt = r#"{"id":1,"action":"authenticate","payload":{"type":"jwt","clientId":"abc","jwt":"a.b.c"}}"#;
        assert_eq!(
            ClientMessage::parse(jwt).unwrap().request,
            Request::Authenticate(Auth::Jwt { client_id: "abc".into(), jwt: "a.b.c".into() })
        );
        let group = r#"{"id":3,"action":"subscribe","payload":"s","groupId":"39A7520A-a351-49c1-92f5-c0b5f4dc4881"}"#;
        assert!(matches!(ClientMessage::parse(group).unwrap().request, Request::Subscribe { group_id: Some(_), .. }));
        assert!(!format!("{:?}", message).contains("def123"), "no secret in logs");
    }

    #[test]
    fn bad_messages_say_what_is_wrong_with_their_id_when_they_have_one() {
        let cases: [(&str, Option<u64>, ProtocolError); 9] = [
            ("[1]", None, ProtocolError::NotJson),
            (r#"{"action":"subscribe"}"#, None, ProtocolError::Id),
            (r#"{"id":0,"action":"subscribe"}"#, None, ProtocolError::Id),
            (r#"{"id":1.5,"action":"subscribe"}"#, None, ProtocolError::Id),
            (r#"{"id":4}"#, Some(4), ProtocolError::Action),
            (r#"{"id":4,"action":"publish"}"#, Some(4), ProtocolError::UnknownAction("publish".into())),
            (
                r#"{"id":4,"action":"subscribe","payload":{"s":1}}"#,
                Some(4),
                ProtocolError::Payload("subscribe's payload must be a stream name"),
            ),
            (r#"{"id":4,"action":"subscribe","payload":"s","groupId":"nope"}"#, Some(4), ProtocolError::GroupId),
            (
                r#"{"id":1,"action":"authenticate","payload":{"type":"basic","clientId":"a"}}"#,
                Some(1),
                ProtocolError::Payload("basic authentication needs a clientSecret string"),
            ),
        ];
        for (text, id, error) in cases {
            assert_eq!(ClientMessage::parse(text), Err((id, error)), "{text}");
        }
    }

    #[test]
    fn ids_go_up_by_one_from_an_authenticate() {
        let auth =
            |id| ClientMessage { id, request: Auth::Basic { client_id: "a".into(), client_secret: "b".into() }.into() };
        let sub = |id| ClientMessage { id, request: Request::Subscribe { stream: "s".into(), group_id: None } };
        let mut c = Conversation::default();
        assert_eq!(c.take(&sub(1)), Err(ProtocolError::AuthenticateFirst));
        let mut c = Conversation::default();
        assert!(!c.started());
        assert_eq!(c.take(&auth(1)), Ok(()));
        assert!(c.started());
        assert_eq!(c.take(&sub(2)), Ok(()));
        assert_eq!(c.take(&sub(4)), Err(ProtocolError::Sequence { expected: 3, got: 4 }));
        assert_eq!(c.take(&auth(5)), Err(ProtocolError::AuthenticateFirst));
    }

    #[test]
    fn replies_as_the_client_checks_them() {
        assert_eq!(
            authenticate_reply(1, true, "j"),
            r#"{"id":1,"action":"authenticate","success":true,"payload":{"jailId":"j"}}"#
        );
        assert_eq!(authenticate_reply(1, false, "j"), r#"{"id":1,"action":"authenticate","success":false}"#);
        assert_eq!(
            subscription_reply(2, "boiler \"data\""),
            r#"{"id":2,"action":"subscription","success":true,"streamName":"boiler \"data\"","payload":2}"#
        );
        assert_eq!(
            delivery(2, "b", r#"{"t":91}"#),
            r#"{"id":2,"action":"subscription","streamName":"b","payload":{"t":91}}"#
        );
        assert_eq!(
            error_reply(Some(3), "subscribe", "no"),
            r#"{"id":3,"action":"subscription","success":false,"error":"no"}"#
        );
        assert_eq!(error_reply(None, "", "x"), r#"{"id":null,"action":"","success":false,"error":"x"}"#);
    }
}
