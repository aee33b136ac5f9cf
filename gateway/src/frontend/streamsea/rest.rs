//! stream-sea's REST API under `/api/v1`, as stream-sea-client 0.7.0 calls it: gzip request
//! bodies, `Authorization: Basic` from the gateway's clients, JSON answers.
//!
//! | call | answer |
//! |---|---|
//! | `POST /streams/{s}/define` | 200 and the schema (also when defined again unchanged); 409 for a version that exists with other fields; 400 for a bad schema or one named otherwise than its stream |
//! | `GET /streams/{s}/schema` | 200 and the newest schema; 404 for a stream without one |
//! | `POST /schema-versions-vector` | 200 and `{"versionsVector": [...]}`, each stream's newest version or null |
//! | `POST /streams/{s}/publish` | 200 once the message is stored; 400 when it breaks the stream's schema, naming the field |
//!
//! Every refusal is `{"error": "..."}` with its status: 401 for missing or wrong credentials,
//! 403 where the client's ACL does not reach, 413 for a body over `[streamsea] max_body`, 503
//! when the store cannot take it.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rivulet_core::owned::{Payload, RegisterEvent};
use rivulet_core::streamsea::rest;
use rivulet_core::streamsea::schema::Schema;

use super::schemas::{Defined, schema_type};
use super::{NAME, Shared};
use crate::access::Principal;
use crate::broker::{Batch, BrokerError};

/// The name of a request's client when no clients are configured and it sent no credentials.
const ANONYMOUS: &str = "streamsea";

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn refuse(status: StatusCode, message: impl std::fmt::Display) -> Response {
    json(status, serde_json::json!({ "error": message.to_string() }).to_string())
}

/// The request's client, by its Basic credentials (its name and its token's 64 hex digits);
/// anyone, when the gateway has no clients.
fn client(shared: &Shared, headers: &HeaderMap) -> Result<String, Response> {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let pair = credentials.as_deref().and_then(|c| c.split_once(':'));
    let clients = shared.broker.access().clients();
    match pair {
        None if clients.is_empty() => Ok(ANONYMOUS.to_string()),
        Some((id, secret)) if clients.admits(id, secret) => Ok(id.to_string()),
        _ => {
            shared.conns.stats.logins_refused.fetch_add(1, Relaxed);
            Err(refuse(StatusCode::UNAUTHORIZED, "unknown client or wrong credential: Basic clientId:clientSecret"))
        }
    }
}

/// The request body, gzip undone when the client says it gzipped it, within `max_body`.
fn body(shared: &Shared, headers: &HeaderMap, bytes: &Bytes) -> Result<Vec<u8>, Response> {
    shared.conns.stats.bytes_in.fetch_add(bytes.len() as u64, Relaxed);
    let limit = shared.max_body;
    let too_large = || refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("a body over {limit} bytes"));
    let gzipped = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    if !gzipped {
        return if bytes.len() > limit { Err(too_large()) } else { Ok(bytes.to_vec()) };
    }
    let mut out = Vec::new();
    let read = flate2::read::GzDecoder::new(&bytes[..]).take(limit as u64 + 1).read_to_end(&mut out);
    match read {
        Ok(_) if out.len() > limit => Err(too_large()),
        Ok(_) => Ok(out),
        Err(e) => {
            shared.conns.stats.bad_input.fetch_add(1, Relaxed);
            Err(refuse(StatusCode::BAD_REQUEST, format!("Content-encoding gzip, but not gzip: {e}")))
        }
    }
}

/// The client and the body of a call that sends one.
fn client_and_body(shared: &Shared, headers: &HeaderMap, bytes: &Bytes) -> Result<(String, Vec<u8>), Response> {
    Ok((client(shared, headers)?, body(shared, headers, bytes)?))
}

fn bad_input(shared: &Shared, message: impl std::fmt::Display) -> Response {
    shared.conns.stats.bad_input.fetch_add(1, Relaxed);
    refuse(StatusCode::BAD_REQUEST, message)
}

/// A broker's refusal as an HTTP one.
fn broker_refusal(shared: &Shared, error: &BrokerError) -> Response {
    match error {
        BrokerError::Denied(_) => {
            shared.conns.stats.registrations_refused.fetch_add(1, Relaxed);
            refuse(StatusCode::FORBIDDEN, error)
        }
        BrokerError::Invalid(_) => bad_input(shared, error),
        _ => refuse(StatusCode::SERVICE_UNAVAILABLE, error),
    }
}

fn principal<'a>(name: &'a str, peer: SocketAddr) -> Principal<'a> {
    Principal { name, frontend: NAME, peer: Some(peer) }
}

/// Publishes one event as `who` and waits until it is stored.
async fn store(shared: &Shared, who: &Principal<'_>, event: RegisterEvent) -> Result<(), Response> {
    let batch = Batch { events: vec![event], sessions: Vec::new() };
    let published = shared.broker.publish(who, batch, false).await.map_err(|e| broker_refusal(shared, &e))?;
    published.durable.await.map_err(|e| broker_refusal(shared, &e))
}

/// May `who` read `stream` (its messages and so its schema)?
fn may_read(shared: &Shared, who: &Principal<'_>, stream: &str) -> Result<(), Response> {
    shared.broker.check_subscriptions(who, &[shared.stream_type(stream)]).map_err(|e| refuse(StatusCode::FORBIDDEN, e))
}

pub(super) async fn define(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let (name, body) = match client_and_body(&shared, &headers, &bytes) {
        Ok(both) => both,
        Err(refusal) => return refusal,
    };
    let schema = match Schema::parse(&body) {
        Ok(schema) => schema,
        Err(e) => return bad_input(&shared, e),
    };
    if schema.name != stream {
        return bad_input(&shared, format!("the schema's name {:?} must be the stream's, {stream:?}", schema.name));
    }
    let who = principal(&name, peer);
    // One define at a time: a version is checked and stored before the next is looked at.
    let _defining = shared.defining.lock().await;
    match shared.schemas().check(&schema) {
        Defined::New => {}
        Defined::Again => return json(StatusCode::OK, schema.to_json()),
        Defined::Conflict => {
            return refuse(
                StatusCode::CONFLICT,
                format!("stream {stream:?} has a version {} with other fields; define a new version", schema.version),
            );
        }
    }
    let event = RegisterEvent::new(schema_type(&stream), Some(Payload::Json(schema.to_json())));
    if let Err(refusal) = store(&shared, &who, event).await {
        return refusal;
    }
    let answer = schema.to_json();
    shared.schemas_mut().insert(schema);
    tracing::info!(client = %who, "stream-sea schema of {stream:?} defined");
    json(StatusCode::OK, answer)
}

pub(super) async fn describe(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(stream): Path<String>,
    headers: HeaderMap,
) -> Response {
    let name = match client(&shared, &headers) {
        Ok(name) => name,
        Err(refusal) => return refusal,
    };
    if let Err(refusal) = may_read(&shared, &principal(&name, peer), &stream) {
        return refusal;
    }
    match shared.schemas().latest(&stream) {
        Some(schema) => json(StatusCode::OK, schema.to_json()),
        None => refuse(StatusCode::NOT_FOUND, format!("stream {stream:?} has no schema")),
    }
}

pub(super) async fn versions(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let (name, names) = match client_and_body(&shared, &headers, &bytes) {
        Ok((name, body)) => match rest::versions_request(&body) {
            Ok(names) => (name, names),
            Err(e) => return bad_input(&shared, e),
        },
        Err(refusal) => return refusal,
    };
    let who = principal(&name, peer);
    for stream in &names {
        if let Err(refusal) = may_read(&shared, &who, stream) {
            return refusal;
        }
    }
    let schemas = shared.schemas();
    let versions: Vec<Option<&str>> =
        names.iter().map(|stream| schemas.latest(stream).map(|s| s.version.as_str())).collect();
    json(StatusCode::OK, rest::versions_reply(&versions))
}

pub(super) async fn publish(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let (name, body) = match client_and_body(&shared, &headers, &bytes) {
        Ok(both) => both,
        Err(refusal) => return refusal,
    };
    let payload = match rest::publish_payload(&body) {
        Ok(payload) => payload.to_string(),
        Err(e) => return bad_input(&shared, e),
    };
    // The broker holds it to the stream's schema (`schemas::SchemaRule`): a violation is 400.
    let event = RegisterEvent::new(shared.stream_type(&stream), Some(Payload::Json(payload)));
    match store(&shared, &principal(&name, peer), event).await {
        Ok(()) => json(StatusCode::OK, "{\"published\":true}".into()),
        Err(refusal) => refusal,
    }
}

/// Anything else under the listener.
pub(super) async fn not_found() -> Response {
    refuse(StatusCode::NOT_FOUND, "no such stream-sea call: see docs/GATEWAY.md, \"stream-sea clients\"")
}
