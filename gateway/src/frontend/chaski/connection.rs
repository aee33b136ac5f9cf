//! One Chaski node's connection. The node says `handshake` (asking for one back); the gateway
//! answers with its own `handshake` and a `handshake_back` (its name, address and subscriptions),
//! and the node's `handshake_back` says which topics it wants: the gateway then sends it the
//! events of `chaski/<topic>` for those, as `ChaskiMessage`s (but those it pushed itself). Its
//! `ChaskiMessage`s become events; `ping` is answered with `pong`. A frame that is not the codec's
//! is logged, counted and skipped; a frame over `[chaski] max_frame` closes the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use rivulet_core::chaski::frame::{Frame, FrameDecoder, FrameRepr};
use rivulet_core::chaski::message::{Message, Value, parse_topic, topic_json};
use rivulet_core::owned::{Event, EventPath, RegisterEvent};
use rivulet_core::wire::FrameDecoder as _;
use rivulet_tokio::fanout::{Delivery, Interest, Subscriber};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::convert::{self, FileChunk};
use super::{NAME, Origin, SHUTDOWN_TIMEOUT, Shared};
use crate::access::Principal;
use crate::broker::Batch;
use crate::files::Streamed;
use crate::frontend::ClientReport;
use crate::frontend::connections::{next_delivery, write_delivery};

/// Why a connection ended.
enum End {
    Closed,
    Oversize,
    Io(std::io::Error),
    CutOff,
}

struct Connection {
    id: u64,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stream: TcpStream,
    subscriber: Option<Subscriber>,
    /// The node's name, once its `handshake_back` came.
    node: Option<String>,
    shutdown: watch::Receiver<bool>,
    /// Messages other connections relay to this node, and the sender they use (listed in
    /// `Shared::relays` once the node said its name).
    relayed: mpsc::Receiver<Message>,
    relay: mpsc::Sender<Message>,
}

/// Relayed messages waiting for a node; one more is dropped (a discovery search is best effort).
const RELAY_QUEUE: usize = 64;

pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, id: u64, shared: Arc<Shared>) {
    serve_link(stream, peer, id, shared, false).await;
}

/// A link this gateway dialed: it says `handshake` first (asking for one back), as a node's
/// `connect` does; the rest is as for a node that dialed in.
pub(super) async fn serve_dialed(stream: TcpStream, peer: SocketAddr, id: u64, shared: Arc<Shared>) {
    serve_link(stream, peer, id, shared, true).await;
}

async fn serve_link(stream: TcpStream, peer: SocketAddr, id: u64, shared: Arc<Shared>, dialed: bool) {
    let shutdown = shared.conns.shutdown.subscribe();
    let (relay, relayed) = mpsc::channel(RELAY_QUEUE);
    let mut connection =
        Connection { id, peer, shared, stream, subscriber: None, node: None, shutdown, relayed, relay };
    let greeted = if dialed {
        let handshake = connection.control(
            "handshake",
            vec![
                ("handshake_id", Value::String(new_uuid())),
                ("response", Value::Bool(true)),
                ("back_delay", Value::Number("0".into())),
            ],
        );
        connection.write(&handshake).await
    } else {
        Ok(())
    };
    let end = match greeted {
        Ok(()) => connection.run().await,
        Err(end) => Err(end),
    };
    connection.finish(end).await;
}

/// A new message id, as Chaski makes them (a random UUID).
fn new_uuid() -> String {
    rivulet_tokio::kelvin::new_id().to_string()
}

impl Connection {
    fn principal(&self) -> Principal<'_> {
        Principal { name: &self.shared.settings.client, frontend: NAME, peer: Some(self.peer) }
    }

    async fn run(&mut self) -> Result<(), End> {
        let max = self.shared.settings.max_frame;
        let mut rx = vec![0u8; max];
        let mut decoder = FrameDecoder::new(&mut rx, max);
        loop {
            let mut replies = Vec::new();
            let mut pushed = Vec::new();
            let mut chunks = Vec::new();
            loop {
                match decoder.next_frame() {
                    Ok(Some(range)) => {
                        let frame = Frame::new_unchecked(decoder.frame(range));
                        self.on_frame(frame.topic(), frame.data(), &mut replies, &mut pushed, &mut chunks);
                    }
                    Ok(None) => break,
                    Err(_) => return Err(End::Oversize),
                }
            }
            for reply in replies {
                self.write(&reply).await?;
            }
            if !pushed.is_empty() {
                self.publish(pushed).await;
            }
            for chunk in chunks {
                self.receive_file(chunk).await;
            }
            tokio::select! {
                read = self.stream.read(decoder.read_buffer()) => match read {
                    Ok(0) => return Err(End::Closed),
                    Ok(n) => {
                        self.shared.conns.stats.bytes_in.fetch_add(n as u64, Relaxed);
                        decoder.commit(n);
                    }
                    Err(e) => return Err(End::Io(e)),
                },
                delivery = next_delivery(&mut self.subscriber, true) => match delivery {
                    Delivery::Event(event) => self.notify(&event).await?,
                    Delivery::CutOff => return Err(End::CutOff),
                },
                Some(message) = self.relayed.recv() => self.write(&message).await?,
                Ok(()) = self.shutdown.changed() => return Err(End::Closed),
            }
        }
    }

    /// One frame: its replies go to `replies`, a pushed message (and where it came from) to `pushed`.
    fn on_frame(
        &mut self,
        topic: &[u8],
        data: &[u8],
        replies: &mut Vec<Message>,
        pushed: &mut Vec<(RegisterEvent, Origin)>,
        chunks: &mut Vec<FileChunk>,
    ) {
        let message = match parse_topic(topic).and_then(|_| Message::parse(data)) {
            Ok(message) => message,
            Err(e) => return self.bad(&format!("a frame not of the JSON codec ({e})")),
        };
        match message.command.as_str() {
            "handshake" => {
                let their_id = message.data.get("handshake_id").cloned().unwrap_or(Value::Null);
                if message.data.get("response") == Some(&Value::Bool(true)) {
                    replies.push(self.control(
                        "handshake",
                        vec![
                            ("handshake_id", Value::String(new_uuid())),
                            ("response", Value::Bool(false)),
                            ("back_delay", Value::Number("0".into())),
                        ],
                    ));
                }
                replies.push(self.control(
                    "handshake_back",
                    vec![
                        ("name", Value::String(self.shared.settings.name.clone())),
                        ("ip", Value::String(self.shared.addr.ip().to_string())),
                        ("port", Value::Number(self.shared.addr.port().to_string())),
                        ("subscriptions", Value::Set(Vec::new())),
                        ("handshake_id", their_id),
                    ],
                ));
            }
            "handshake_back" => self.on_handshake_back(&message),
            "ping" => {
                let field = |key: &str| message.data.get(key).cloned().unwrap_or(Value::Null);
                replies.push(self.control(
                    "pong",
                    vec![
                        ("source_timestamp", message.timestamp.clone()),
                        ("name", Value::String(self.shared.settings.name.clone())),
                        ("ip", Value::String(self.shared.addr.ip().to_string())),
                        ("port", Value::Number(self.shared.addr.port().to_string())),
                        ("subscriptions", Value::Set(Vec::new())),
                        ("ping_id", field("ping_id")),
                        ("latency_update", field("latency_update")),
                        ("dummy_data", field("dummy_data")),
                    ],
                ));
            }
            "ChaskiMessage" => {
                let first = match &message.uuid {
                    Some(uuid) => self.shared.memory().first_sight(uuid, self.shared.settings.pool),
                    None => true,
                };
                if !first {
                    return;
                }
                match convert::register_event(&message) {
                    Some(event) => {
                        let origin = Origin {
                            uuid: message.uuid.clone().unwrap_or_else(new_uuid),
                            ttl: message.ttl,
                            connection: self.id,
                        };
                        pushed.push((event, origin));
                    }
                    None => self.bad(&format!("topic {:?} is no event type's tail", message.topic)),
                }
            }
            "discovery" => self.relay_discovery(&message),
            "ChaskiFile" => match convert::file_chunk(&message) {
                Some(chunk) => chunks.push(chunk),
                None => self.bad("a ChaskiFile without filename, chunk, size or hash"),
            },
            other => tracing::debug!(client = %self.principal(), "Chaski command {other:?} not served; skipped"),
        }
    }

    /// A `ChaskiFile` chunk into the gateway's files (docs/CHASKI.md): each chunk's running hash
    /// checked, the file listed once its empty last chunk came. Chaski has no answer: a refusal
    /// is logged and counted.
    async fn receive_file(&mut self, chunk: FileChunk) {
        let who = self.principal();
        if let Err(denied) = self.shared.broker.access().check_files(&who, true) {
            return self.bad(&format!("a ChaskiFile refused: {denied}"));
        }
        let FileChunk { name, first, chunk, running } = chunk;
        match self.shared.files.stream_chunk(self.id, &name, first, chunk, running).await {
            Ok(Streamed::Held(_)) => {}
            Ok(Streamed::Complete { size, .. }) => {
                tracing::info!(client = %self.principal(), "Chaski file {name} received ({size} bytes, hash checked)");
            }
            Err(e) => self.bad(&format!("ChaskiFile {name}: {e}")),
        }
    }

    /// A node's discovery search (for nodes that share a subscription), passed on as a Chaski
    /// node passes it on: the gateway subscribes to no topic itself, so it never pairs; with TTL
    /// left and not visited yet, it goes to every other node but the one it came from and its
    /// origin, one hop less, the gateway's name added to `visited`. A node that shares the
    /// subscription then links to the origin directly.
    fn relay_discovery(&self, message: &Message) {
        let own = self.shared.settings.name.as_str();
        let data = &message.data;
        let ttl = match data.get("ttl") {
            Some(Value::Number(n)) => n.parse::<i64>().unwrap_or(0),
            _ => return self.bad("a discovery without a ttl"),
        };
        let visited = match data.get("visited") {
            Some(Value::Set(items) | Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        if ttl <= 0 || visited.iter().any(|v| v.as_str() == Some(own)) {
            return;
        }
        let name = |key: &str| data.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let (previous, origin) = (name("previous_node"), name("origin_name"));
        let mut visited = visited;
        visited.push(Value::String(own.to_string()));
        let onward = convert::with_fields(
            data,
            vec![
                ("previous_node", Value::String(own.to_string())),
                ("ttl", Value::Number((ttl - 1).to_string())),
                ("visited", Value::Set(visited)),
            ],
        );
        let relayed = Message { data: onward, uuid: Some(new_uuid()), ..self.control("discovery", Vec::new()) };
        for (id, (node, queue)) in self.shared.relays().iter() {
            if *id != self.id && *node != previous && *node != origin && queue.try_send(relayed.clone()).is_err() {
                tracing::debug!(client = %self.principal(), "a discovery not relayed to {node}: its queue is full");
            }
        }
    }

    fn bad(&self, why: &str) {
        self.shared.conns.stats.bad_input.fetch_add(1, Relaxed);
        tracing::warn!(client = %self.principal(), "Chaski frame skipped: {why}");
    }

    /// A control message (topic `All`) of the gateway.
    fn control(&self, command: &str, data: Vec<(&str, Value)>) -> Message {
        Message {
            command: command.into(),
            topic: "All".into(),
            data: Value::Object(data.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
            timestamp: convert::datetime(crate::broker::now()),
            ttl: i64::from(self.shared.settings.ttl),
            uuid: Some(new_uuid()),
        }
    }

    /// The node's name and subscriptions: it gets the events of those topics from now on.
    fn on_handshake_back(&mut self, message: &Message) {
        let name = message.data.get("name").and_then(Value::as_str).unwrap_or("chaski-node").to_string();
        let topics: Vec<String> = match message.data.get("subscriptions") {
            Some(Value::Set(items) | Value::Array(items)) => {
                items.iter().filter_map(Value::as_str).map(String::from).collect()
            }
            _ => Vec::new(),
        };
        let patterns: Vec<EventPath> = topics.iter().filter_map(|t| convert::event_type(t)).collect();
        self.subscriber = None;
        if !patterns.is_empty() {
            let interest = Interest { patterns: patterns.clone(), server_id: None, persisted: false };
            match self.shared.broker.subscribe(&self.principal(), interest) {
                Ok(subscriber) => self.subscriber = Some(subscriber),
                Err(e) => {
                    self.shared.conns.stats.logins_refused.fetch_add(1, Relaxed);
                    tracing::warn!(client = %self.principal(), "Chaski node {name}'s subscriptions refused: {e}");
                }
            }
        }
        let report = ClientReport {
            id: self.id,
            name: format!("{}:{name}", self.shared.settings.client),
            peer: self.peer,
            subscriptions: patterns.iter().map(EventPath::to_string).collect(),
            persisted: false,
            registered: 0,
            refused: 0,
            notified: 0,
        };
        self.shared.conns.clients().insert(self.id, report);
        tracing::info!(client = %self.principal(), "Chaski node {name} joined, topics {topics:?}");
        self.shared.relays().insert(self.id, (name.clone(), self.relay.clone()));
        self.node = Some(name);
    }

    /// Publishes what the node pushed, in order; Chaski has no answer, so a refusal is logged
    /// and counted.
    async fn publish(&mut self, pushed: Vec<(RegisterEvent, Origin)>) {
        let count = pushed.len() as u64;
        let (events, origins): (Vec<_>, Vec<_>) = pushed.into_iter().unzip();
        let broker = self.shared.broker.clone();
        let batch = Batch { events, sessions: Vec::new() };
        let shared = self.shared.clone();
        // Filed before any connection hears of the events: they pass each message on with its uuid.
        let note = move |events: &[Arc<Event>]| {
            let mut memory = shared.memory();
            for (event, origin) in events.iter().zip(origins) {
                memory.remember_origin(event.id, origin, shared.settings.pool);
            }
        };
        // This loop drains this node's subscriber too: it must not wait for it.
        match broker.publish_noting(&self.principal(), batch, false, self.subscriber.as_ref(), note).await {
            Ok(published) => {
                self.shared.conns.update(self.id, |c| c.registered += count);
                let who = self.principal().to_string();
                tokio::spawn(async move {
                    if let Err(e) = published.durable.await {
                        tracing::warn!(client = %who, "Chaski messages not stored: {e}");
                    }
                });
            }
            Err(e) => {
                self.shared.conns.stats.registrations_refused.fetch_add(count, Relaxed);
                self.shared.conns.update(self.id, |c| c.refused += count);
                tracing::warn!(client = %self.principal(), "Chaski messages refused: {e}");
            }
        }
    }

    /// Sends an event as a `ChaskiMessage`, unless the node pushed it or its TTL is spent.
    async fn notify(&mut self, event: &Event) -> Result<(), End> {
        let origin = self.shared.memory().origins.get(&event.id).cloned();
        let (uuid, ttl) = match &origin {
            Some(o) if o.connection == self.id => (None, 0),
            Some(o) => (Some(o.uuid.clone()), o.ttl.saturating_sub(1)),
            None => (
                Some(crate::frontend::kelvin::convert::event_uuid(event).to_string()),
                i64::from(self.shared.settings.ttl),
            ),
        };
        let message = match (uuid, u8::try_from(ttl)) {
            (Some(uuid), Ok(ttl)) if ttl > 0 => convert::message(event, uuid, ttl),
            _ => None,
        };
        let Some(subscriber) = &mut self.subscriber else { return Ok(()) };
        let Some(message) = message else {
            subscriber.skipped();
            return Ok(());
        };
        if let Some(uuid) = &message.uuid {
            // A copy that comes back around the network is dropped.
            self.shared.memory().first_sight(uuid, self.shared.settings.pool);
        }
        let frame = encode(&message);
        subscriber.delivered();
        match write_delivery(&mut self.stream, &frame, subscriber).await {
            Some(written) => written.map_err(End::Io)?,
            None => return Err(End::CutOff),
        }
        subscriber.acknowledged(1);
        self.shared.conns.stats.bytes_out.fetch_add(frame.len() as u64, Relaxed);
        self.shared.conns.stats.notified.fetch_add(1, Relaxed);
        self.shared.conns.update(self.id, |c| c.notified += 1);
        Ok(())
    }

    async fn write(&mut self, message: &Message) -> Result<(), End> {
        let frame = encode(message);
        self.stream.write_all(&frame).await.map_err(End::Io)?;
        self.shared.conns.stats.bytes_out.fetch_add(frame.len() as u64, Relaxed);
        Ok(())
    }

    async fn finish(mut self, end: Result<(), End>) {
        self.shared.conns.clients().remove(&self.id);
        self.shared.relays().remove(&self.id);
        self.shared.files.streams_ended(self.id);
        self.subscriber = None;
        let who = format!("{} ({})", self.principal(), self.node.as_deref().unwrap_or("no handshake"));
        let stats = &self.shared.conns.stats;
        match end {
            Ok(()) | Err(End::Closed) => tracing::info!(client = %who, "Chaski node left"),
            Err(End::Oversize) => {
                stats.bad_input.fetch_add(1, Relaxed);
                tracing::warn!(client = %who, "Chaski connection closed: a frame over {} bytes", self.shared.settings.max_frame);
            }
            Err(End::Io(e)) => tracing::info!(client = %who, "Chaski connection failed: {e}"),
            Err(End::CutOff) => {
                stats.too_slow.fetch_add(1, Relaxed);
                tracing::warn!(client = %who, "Chaski connection closed: too slow (it fell a queue behind)");
            }
        }
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.stream.shutdown()).await;
    }
}

/// A message as one frame (its topic by the codec).
fn encode(message: &Message) -> Vec<u8> {
    let (topic, data) = (topic_json(&message.topic), message.to_json());
    let repr = FrameRepr { topic: topic.as_bytes(), data: data.as_bytes() };
    let mut frame = vec![0u8; repr.buffer_len().unwrap_or(0)];
    // The buffer is the frame's size: emitting cannot fail.
    let _ = repr.emit(&mut frame);
    frame
}
