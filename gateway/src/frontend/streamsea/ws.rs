//! stream-sea's websocket, `/api/v1/streams`: a client authenticates (Basic, with a gateway
//! client's name and token), subscribes to streams, and gets each stream's messages under the id
//! of its subscribe, in id order. The messages are read and written by
//! `rivulet_core::streamsea::ws`; the conversation rules (ids from 1 up by one, authentication
//! first) are its `Conversation`.
//!
//! - A message that breaks the protocol (not JSON, no id, out of sequence, an unknown action)
//!   is answered with an error and the connection closed; a refused subscribe (the ACL, a bad
//!   stream name) is answered with an error and the connection goes on. A failed
//!   authentication is answered `success: false` and closed, as the spec asks.
//! - The server pings every [`PING_EVERY`] (the spec asks for one at least every 30 s).
//! - Each subscription is a subscriber of the broker's fan-out; a client that stops reading
//!   falls behind there and is cut off (its connection closed) while the others keep their pace.
//! - JWT authentication: HS256 with one of `[streamsea] jwt_secrets`, unexpired (`exp`), its
//!   `sub` the `clientId`, which must be a configured client when there are any.
//! - Consumer groups (`groupId`): the members share the stream's messages (`groups.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use rivulet_core::owned::Payload;
use rivulet_core::streamsea::ws::{self as wire, Auth, ClientMessage, Conversation, Request};
use rivulet_tokio::fanout::{Delivery, Interest};
use tokio::sync::mpsc;

use super::{NAME, Shared};
use crate::access::Principal;
use crate::frontend::ClientReport;

/// How often the server pings (the spec: at least every 30 s).
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// Deliveries handed from the subscriptions to the connection and not yet sent.
const HANDED: usize = 64;

/// What a subscription's forwarder (or a consumer group's dealer) hands the connection.
pub(super) enum Forwarded {
    /// A message of the subscription `id`'s stream (JSON text).
    Message { id: u64, stream: Arc<str>, payload: String },
    /// The fan-out cut the subscription off.
    CutOff,
}

pub(super) async fn upgrade(
    ws: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    ws.on_upgrade(move |socket| session(socket, shared, peer))
}

/// Why a session ended.
enum End {
    Closed,
    /// A protocol error, answered.
    Protocol(String),
    Refused,
    CutOff,
}

struct Session {
    shared: Arc<Shared>,
    peer: SocketAddr,
    socket: WebSocket,
    id: u64,
    conversation: Conversation,
    client: Option<String>,
    handed_tx: mpsc::Sender<Forwarded>,
    forwarders: Vec<tokio::task::JoinHandle<()>>,
    /// Raised by a forwarder whose subscription was cut off, so that a send stuck on a client
    /// that reads nothing ends too.
    cut: Arc<tokio::sync::Notify>,
}

async fn session(socket: WebSocket, shared: Arc<Shared>, peer: SocketAddr) {
    shared.conns.stats.accepted.fetch_add(1, Relaxed);
    let id = shared.next_id.fetch_add(1, Relaxed);
    let (handed_tx, mut handed) = mpsc::channel(HANDED);
    let mut shutdown = shared.conns.shutdown.subscribe();
    let mut session = Session {
        shared,
        peer,
        socket,
        id,
        conversation: Conversation::default(),
        client: None,
        handed_tx,
        forwarders: Vec::new(),
        cut: Arc::new(tokio::sync::Notify::new()),
    };
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let end = loop {
        tokio::select! {
            received = session.socket.recv() => match received {
                Some(Ok(Message::Text(text))) => {
                    session.shared.conns.stats.bytes_in.fetch_add(text.len() as u64, Relaxed);
                    if let Err(end) = session.on_text(&text).await {
                        break end;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let reply = wire::error_reply(None, "", "messages are JSON text, not binary");
                    break session.protocol_error(reply, "a binary message").await;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break End::Closed,
                Some(Ok(_)) => {}
            },
            Some(forwarded) = handed.recv() => match forwarded {
                Forwarded::Message { id, stream, payload } => {
                    let cut = session.cut.clone();
                    tokio::select! {
                        sent = session.send(wire::delivery(id, &stream, &payload)) => if sent.is_err() {
                            break End::Closed;
                        },
                        () = cut.notified() => break End::CutOff,
                    }
                    session.shared.conns.stats.notified.fetch_add(1, Relaxed);
                    session.shared.conns.update(session.id, |c| c.notified += 1);
                }
                Forwarded::CutOff => break End::CutOff,
            },
            _ = ping.tick() => {
                if session.socket.send(Message::Ping(Default::default())).await.is_err() {
                    break End::Closed;
                }
            }
            Ok(()) = shutdown.changed() => break End::Closed,
        }
    };
    session.finish(end).await;
}

impl Session {
    fn principal(&self) -> Principal<'_> {
        Principal { name: self.client.as_deref().unwrap_or(""), frontend: NAME, peer: Some(self.peer) }
    }

    async fn send(&mut self, text: String) -> Result<(), axum::Error> {
        self.shared.conns.stats.bytes_out.fetch_add(text.len() as u64, Relaxed);
        self.socket.send(Message::Text(Utf8Bytes::from(text))).await
    }

    async fn protocol_error(&mut self, reply: String, why: &str) -> End {
        let _ = self.send(reply).await;
        End::Protocol(why.to_string())
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let message = match ClientMessage::parse(text) {
            Ok(message) => message,
            Err((id, error)) => {
                let action = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(str::to_string))
                    .unwrap_or_default();
                return Err(self
                    .protocol_error(wire::error_reply(id, &action, &error.to_string()), &error.to_string())
                    .await);
            }
        };
        if let Err(error) = self.conversation.take(&message) {
            let action = match message.request {
                Request::Authenticate(_) => "authenticate",
                Request::Subscribe { .. } => "subscribe",
            };
            return Err(self
                .protocol_error(wire::error_reply(Some(message.id), action, &error.to_string()), &error.to_string())
                .await);
        }
        match message.request {
            Request::Authenticate(auth) => self.authenticate(message.id, auth).await,
            Request::Subscribe { stream, group_id } => self.subscribe(message.id, stream, group_id).await,
        }
    }

    async fn authenticate(&mut self, id: u64, auth: Auth) -> Result<(), End> {
        let name = match auth {
            Auth::Basic { client_id, client_secret } => {
                let clients = self.shared.broker.access().clients();
                clients.admits(&client_id, &client_secret).then_some(client_id)
            }
            Auth::Jwt { client_id, jwt } => self.shared.jwt_matches(&client_id, &jwt).then_some(client_id),
        };
        let Some(name) = name else {
            self.shared.conns.stats.logins_refused.fetch_add(1, Relaxed);
            let _ = self.send(wire::authenticate_reply(id, false, "")).await;
            return Err(End::Refused);
        };
        self.send(wire::authenticate_reply(id, true, &name)).await.map_err(|_| End::Closed)?;
        let report = ClientReport {
            id: self.id,
            name: name.clone(),
            peer: self.peer,
            subscriptions: Vec::new(),
            persisted: false,
            registered: 0,
            refused: 0,
            notified: 0,
        };
        self.shared.conns.clients().insert(self.id, report);
        tracing::info!(client = %name, peer = %self.peer, "stream-sea client authenticated");
        self.client = Some(name);
        Ok(())
    }

    async fn subscribe(&mut self, id: u64, stream: String, group_id: Option<String>) -> Result<(), End> {
        let event_type = self.shared.stream_type(&stream);
        if event_type.check_type().is_err() {
            let reply = wire::error_reply(Some(id), "subscribe", &format!("{stream:?} is no stream name"));
            return self.send(reply).await.map_err(|_| End::Closed);
        }
        let interest = Interest { patterns: vec![event_type.clone()], server_id: None, persisted: false };
        if let Some(group) = group_id {
            return self.join(id, stream, group, interest).await;
        }
        let subscriber = match self.shared.broker.subscribe(&self.principal(), interest) {
            Ok(subscriber) => subscriber,
            Err(e) => {
                return self
                    .send(wire::error_reply(Some(id), "subscribe", &e.to_string()))
                    .await
                    .map_err(|_| End::Closed);
            }
        };
        // The subscription is in place before it is confirmed: nothing published after the
        // confirmation is missed.
        self.send(wire::subscription_reply(id, &stream)).await.map_err(|_| End::Closed)?;
        self.shared.conns.update(self.id, |c| c.subscriptions.push(event_type.to_string()));
        let forwarder = forward(subscriber, id, stream.into(), self.handed_tx.clone(), self.cut.clone());
        self.forwarders.push(tokio::spawn(forwarder));
        Ok(())
    }

    /// Joins the consumer group `group` of `stream` (made when it is the first member).
    async fn join(&mut self, id: u64, stream: String, group: String, interest: Interest) -> Result<(), End> {
        let who = self.principal();
        let broker = self.shared.broker.clone();
        // Every member passes the ACL, not only the one whose subscription the group uses.
        let joined = broker.check_subscriptions(&who, &interest.patterns).and_then(|()| {
            self.shared
                .groups
                .join(&stream, &group, self.id, id, self.handed_tx.clone(), || broker.subscribe(&who, interest))
        });
        if let Err(e) = joined {
            return self.send(wire::error_reply(Some(id), "subscribe", &e.to_string())).await.map_err(|_| End::Closed);
        }
        self.send(wire::subscription_reply(id, &stream)).await.map_err(|_| End::Closed)?;
        let label = format!("{} (group {group})", self.shared.stream_type(&stream));
        self.shared.conns.update(self.id, |c| c.subscriptions.push(label));
        Ok(())
    }

    async fn finish(mut self, end: End) {
        self.shared.conns.clients().remove(&self.id);
        self.shared.groups.leave(self.id);
        self.forwarders.iter().for_each(tokio::task::JoinHandle::abort);
        let stats = &self.shared.conns.stats;
        let who = self.principal().to_string();
        match end {
            End::Closed | End::Refused => tracing::debug!(client = %who, "stream-sea websocket closed"),
            End::Protocol(why) => {
                stats.bad_input.fetch_add(1, Relaxed);
                tracing::warn!(client = %who, "stream-sea websocket closed, protocol error: {why}");
            }
            End::CutOff => {
                stats.too_slow.fetch_add(1, Relaxed);
                tracing::warn!(client = %who, "stream-sea websocket closed: too slow (it fell a queue behind)");
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.socket.send(Message::Close(None))).await;
    }
}

/// Hands a subscription's messages to its connection, in order, as it takes them. A cut-off
/// (noticed also while the connection has no room) ends it and raises `cut`.
async fn forward(
    mut subscriber: rivulet_tokio::fanout::Subscriber,
    id: u64,
    stream: Arc<str>,
    handed: mpsc::Sender<Forwarded>,
    cut: Arc<tokio::sync::Notify>,
) {
    loop {
        let event = match subscriber.next(true).await {
            Delivery::Event(event) => event,
            Delivery::CutOff => break,
        };
        let Some(Payload::Json(text)) = &event.payload else {
            subscriber.skipped();
            continue;
        };
        subscriber.delivered();
        let permit = tokio::select! {
            permit = handed.reserve() => permit,
            _ = subscriber.next(false) => break,
        };
        let Ok(permit) = permit else { return };
        permit.send(Forwarded::Message { id, stream: stream.clone(), payload: text.clone() });
        subscriber.acknowledged(1);
    }
    cut.notify_one();
    let _ = handed.try_send(Forwarded::CutOff);
}
