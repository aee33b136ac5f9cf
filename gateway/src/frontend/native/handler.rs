//! The Rivulet protocol's requests, answered with the broker: `rivulet_tokio::server` parses the
//! bytes and keeps each client's session; this glue logs clients in (challenge-response), turns
//! sequenced registrations into batches with their session cursors, and maps each broker error
//! to a refusal the client reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use rivulet_core::files;
use rivulet_core::owned::{Event, EventPath, Query, QueryPage, RegisterEvent};
use rivulet_tokio::packet::{PacketReply, PacketRequest};
use rivulet_tokio::server::{Admission, Admitted, ClientInfo, HandlerError, Registration, ServerHandler};

use super::forward;
use super::login::Authenticator;
use super::{NAME, RQ_FORWARD, RQ_LATEST_NETWORK, RQ_STATUS};
use crate::access::Principal;
use crate::broker::{Batch, Broker, BrokerError};
use crate::federation::{self, Federation};
use crate::files::{FileStore, FilesError};
use crate::store::StoreError;

/// Hops a latest-across-the-network ask goes at most: each hop waits a second longer than the
/// next, so the depth bounds the wait (docs/FEDERATION.md).
const LATEST_HOPS: u8 = 8;

/// The native front-end's `ServerHandler`.
pub(super) struct NativeHandler {
    pub(super) broker: Arc<Broker>,
    pub(super) auth: Authenticator,
    /// Inits refused (credentials, the init's subscriptions).
    pub(super) logins_refused: AtomicU64,
    /// Where peer gateways' messages go (federation), once it runs.
    pub(super) federation: std::sync::OnceLock<Arc<Federation>>,
    /// The gateway's files (`rivulet_core::files` requests).
    pub(super) files: Arc<FileStore>,
}

/// Who a client is, for the broker.
fn principal(client: &ClientInfo) -> Principal<'_> {
    Principal { name: &client.client_name, frontend: NAME, peer: Some(client.peer) }
}

/// A broker error as the Rivulet protocol reports it: a refusal with the reason.
pub(crate) fn refusal(error: BrokerError) -> HandlerError {
    match error {
        BrokerError::Denied(reason) | BrokerError::Invalid(reason) => HandlerError::Refused(reason),
        BrokerError::Unavailable(reason) => HandlerError::Unavailable(reason),
        // A closed store says so itself; the others say where they come from.
        BrokerError::Store(StoreError::Closed(reason)) => HandlerError::Failed(reason),
        BrokerError::Store(e) => HandlerError::Failed(format!("store: {e}")),
    }
}

/// A connection's registrations as one batch: the events, and for each session the number it
/// expects after them (a register-with-response is not sequenced and moves no cursor).
fn batch(registrations: Vec<Registration>) -> Batch {
    let mut sessions: Vec<(u64, u32)> = Vec::new();
    let events = registrations
        .into_iter()
        .map(|registration| {
            if let Some(seq) = registration.seq {
                match sessions.iter_mut().find(|(s, _)| *s == registration.session) {
                    Some(entry) => entry.1 = seq.wrapping_add(1),
                    None => sessions.push((registration.session, seq.wrapping_add(1))),
                }
            }
            registration.event
        })
        .collect();
    Batch { events, sessions }
}

/// The application requests any client of the gateway may send, whichever way it came (a
/// native connection, a federation link this gateway dialed): a call of another client
/// (`RQ_FORWARD`) and the file requests, within `who`'s ACL.
pub(crate) async fn serve_request(
    broker: &Broker,
    store: &Arc<FileStore>,
    who: &Principal<'_>,
    request: PacketRequest,
) -> Result<PacketReply, HandlerError> {
    match request.rq_type {
        RQ_FORWARD => {
            let forward = forward::decode(&request.payload)
                .map_err(|e| HandlerError::Refused(format!("a forwarded request is not understood: {e}")))?;
            if federation::is_peer_request(forward.rq_type) {
                return Err(HandlerError::Refused("federation messages are not forwarded".into()));
            }
            // A file request for another gateway is one of the sender's files requests here too.
            if files::is_file_request(forward.rq_type) {
                broker
                    .access()
                    .check_files(who, files::is_write_request(forward.rq_type))
                    .map_err(|denied| HandlerError::Refused(denied.0))?;
            }
            let call = PacketRequest { rq_type: forward.rq_type, flags: forward.flags, payload: forward.payload };
            broker.call(who, &forward.client, call).await.map_err(refusal)
        }
        file if files::is_file_request(file) => {
            broker
                .access()
                .check_files(who, files::is_write_request(file))
                .map_err(|denied| HandlerError::Refused(denied.0))?;
            match store.handle(request.rq_type, request.payload).await {
                Ok(Some(reply)) => Ok(reply),
                Ok(None) => Err(HandlerError::Refused(format!("unknown request type {}", request.rq_type))),
                Err(FilesError::Io(e)) => Err(HandlerError::Failed(format!("file store: {e}"))),
                Err(e) => Err(HandlerError::Refused(e.to_string())),
            }
        }
        other => Err(HandlerError::Refused(format!("unknown request type {other}"))),
    }
}

impl ServerHandler for NativeHandler {
    async fn connect(&self, client: &ClientInfo) -> Admission {
        // The login first (a challenge goes out before anything else is looked at), then the
        // init's subscriptions.
        let admission = match self.auth.login(client, Instant::now()) {
            Admission::Accept => match self.broker.check_subscriptions(&principal(client), &client.subscriptions) {
                Ok(()) => Admission::Accept,
                Err(e) => Admission::Refuse(e.to_string()),
            },
            other => other,
        };
        if let Admission::Refuse(reason) = &admission {
            self.logins_refused.fetch_add(1, Relaxed);
            tracing::info!(client = %client.client_name, peer = %client.peer, "init refused: {reason}");
        }
        admission
    }

    async fn disconnect(&self, client: &ClientInfo) {
        self.auth.forget(client.id);
        if let Some(federation) = self.federation.get() {
            federation.disconnected(client.id);
        }
    }

    async fn subscribe(&self, client: &ClientInfo, patterns: &[EventPath]) -> Result<(), HandlerError> {
        self.broker.check_subscriptions(&principal(client), patterns).map_err(refusal)
    }

    fn check_register(&self, client: &ClientInfo, event: &RegisterEvent) -> Result<(), HandlerError> {
        self.broker.check_event(&principal(client), event).map_err(refusal)
    }

    async fn admit(&self, client: &ClientInfo, registrations: Vec<Registration>) -> Result<Admitted, HandlerError> {
        let published = self.broker.publish(&principal(client), batch(registrations), false).await;
        let durable = published.map_err(refusal)?.durable;
        Ok(Admitted { durable: Box::pin(async move { durable.await.map_err(refusal) }) })
    }

    async fn register(
        &self,
        client: &ClientInfo,
        registrations: Vec<Registration>,
    ) -> Result<Vec<Event>, HandlerError> {
        let published = self.broker.publish(&principal(client), batch(registrations), true).await.map_err(refusal)?;
        published.durable.await.map_err(refusal)?;
        Ok(published.events)
    }

    async fn query(&self, client: &ClientInfo, query: Query) -> Result<QueryPage, HandlerError> {
        self.broker.query(&principal(client), query, client.max_packet as usize).await.map_err(refusal)
    }

    async fn request(&self, client: &ClientInfo, request: PacketRequest) -> Result<PacketReply, HandlerError> {
        match request.rq_type {
            RQ_STATUS => {
                let mut report = self.broker.report();
                report["files"] = self.files.report();
                Ok(PacketReply::new(0, fit_status(report, client.max_packet as usize)))
            }
            RQ_LATEST_NETWORK => {
                let federation =
                    self.federation.get().ok_or(HandlerError::Unavailable("the gateway is starting".into()))?;
                let asked: Vec<String> = postcard::from_bytes(&request.payload)
                    .map_err(|e| HandlerError::Refused(format!("a latest request is not understood: {e}")))?;
                let patterns = asked
                    .iter()
                    .map(|p| EventPath::parse_pattern(p).map_err(|e| HandlerError::Refused(format!("{p:?}: {e}"))))
                    .collect::<Result<Vec<_>, _>>()?;
                let asked = (!patterns.is_empty()).then_some(patterns);
                let patterns = self
                    .broker
                    .access()
                    .latest_patterns(&principal(client), asked)
                    .map_err(|denied| HandlerError::Refused(denied.0))?;
                let found = federation.latest_across(&patterns, federation.ttl().min(LATEST_HOPS), &[]).await;
                let body = federation::encode_found(&found).map_err(|e| HandlerError::Failed(e.to_string()))?;
                if body.len() > client.max_packet as usize {
                    return Err(HandlerError::Refused(format!(
                        "the {} latest events take {} bytes, more than a packet: narrow the patterns",
                        found.len(),
                        body.len()
                    )));
                }
                Ok(PacketReply::new(0, body))
            }
            peer if federation::is_peer_request(peer) => match self.federation.get() {
                Some(federation) => federation.accepted_request(client, request).await,
                None => Err(HandlerError::Unavailable("the gateway is starting".into())),
            },
            _ => serve_request(&self.broker, &self.files, &principal(client), request).await,
        }
    }

    async fn resume(&self, session: u64) -> Option<u32> {
        self.broker.resume_session(session).await
    }
}

/// The status as text of at most about `max` bytes: with thousands of clients their list would
/// not fit a packet, so it is cut, and `clients_omitted` says how many were left out.
fn fit_status(mut report: serde_json::Value, max_packet: usize) -> String {
    // The reply's packet head and framing take some of the packet too.
    let max = max_packet.saturating_sub(64);
    let text = report.to_string();
    if text.len() <= max {
        return text;
    }
    let clients = report.get_mut("clients").and_then(|c| c.as_array_mut()).map(std::mem::take).unwrap_or_default();
    let total = clients.len();
    report["clients_omitted"] = total.into();
    // Room for the rest of the report, and for the count's digits growing.
    let mut used = report.to_string().len() + 32;
    let mut kept = Vec::new();
    for client in clients {
        used += client.to_string().len() + 1;
        if used > max {
            break;
        }
        kept.push(client);
    }
    report["clients_omitted"] = (total - kept.len()).into();
    report["clients"] = kept.into();
    report.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_broker_error_becomes_the_refusal_of_its_kind() {
        let refused = refusal(BrokerError::Denied("client \"a\" may not register b".into()));
        assert_eq!(refused, HandlerError::Refused("client \"a\" may not register b".into()));
        assert_eq!(refusal(BrokerError::Invalid("x".into())), HandlerError::Refused("x".into()));
        assert_eq!(refusal(BrokerError::Unavailable("stopping".into())), HandlerError::Unavailable("stopping".into()));
        let io = refusal(BrokerError::Store(StoreError::Io("disk full".into())));
        assert_eq!(io, HandlerError::Failed("store: disk full".into()));
        // After a failed commit the store says why itself (the text clients saw before).
        let closed = "the store failed (store: disk full); restart the gateway";
        assert_eq!(refusal(BrokerError::Store(StoreError::Closed(closed.into()))), HandlerError::Failed(closed.into()));
    }

    #[test]
    fn a_batch_carries_each_session_to_after_its_last_registration() {
        let registration = |session, seq| Registration { session, seq, event: RegisterEvent::new("a", None) };
        let batch = batch(vec![
            registration(7, Some(u32::MAX)),
            registration(9, Some(3)),
            registration(7, Some(0)),
            registration(7, None),
        ]);
        assert_eq!(batch.events.len(), 4);
        assert_eq!(batch.sessions, [(7, 1), (9, 4)], "wrapping, and a register-with-response moves nothing");
    }

    #[test]
    fn a_status_with_thousands_of_clients_is_cut_to_a_packet_saying_how_many_were_left_out() {
        let clients: Vec<_> = (0..5000)
            .map(|n| serde_json::json!({ "name": format!("device-{n}"), "subscriptions": ["a/*", "b/*", "c/*"] }))
            .collect();
        let report = serde_json::json!({ "connections": 5000, "clients": clients, "events_in": 7 });
        let text = super::fit_status(report.clone(), 65_536);
        assert!(text.len() <= 65_536, "{} bytes", text.len());
        let cut: serde_json::Value = serde_json::from_str(&text).unwrap();
        let listed = cut["clients"].as_array().unwrap().len();
        assert!(listed > 100, "as many as fit: {listed}");
        assert_eq!(cut["clients_omitted"], 5000 - listed);
        assert_eq!(cut["events_in"], 7);
        assert_eq!(super::fit_status(serde_json::json!({ "clients": [] }), 65_536), r#"{"clients":[]}"#);
    }
}
