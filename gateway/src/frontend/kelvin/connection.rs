//! One Kelvin app's connection: the runtime manifest first, then lines in (each a message,
//! published as an event; a bad one logged, counted and skipped) and the events of the
//! listener's subscription out, as lines, except the app's own. An app that does not read
//! falls behind in the broker's fan-out and is cut off like any slow subscriber; a line over
//! the limit closes its connection.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use rivulet_core::kelvin::line::LineDecoder;
use rivulet_core::kelvin::message::Message;
use rivulet_core::kelvin::msg_type::MsgType;
use rivulet_core::model::EventId;
use rivulet_core::owned::{Event, EventPath, RegisterEvent};
use rivulet_core::wire::FrameDecoder;
use rivulet_tokio::fanout::{Delivery, Interest, Subscriber};
use rivulet_tokio::kelvin::{defaults, new_id};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{NAME, SHUTDOWN_TIMEOUT, Shared, convert};
use crate::access::Principal;
use crate::broker::{Batch, BrokerError};
use crate::frontend::ClientReport;
use crate::frontend::connections::{next_delivery, write_delivery};

/// Ids of the app's own events remembered, so that they are not sent back to it.
const OWN_IDS: usize = 65_536;

/// Why a connection ended.
enum End {
    /// The app closed it, or the gateway is stopping.
    Closed,
    /// A line over the limit.
    Oversize,
    Io(std::io::Error),
    /// The broker's fan-out cut it off: it fell a whole queue behind.
    CutOff,
    /// Its subscription was refused (the ACL of `[kelvin] client`).
    Refused(String),
}

struct Connection {
    id: u64,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stream: TcpStream,
    subscriber: Option<Subscriber>,
    /// The app's own events, newest last, and the same as a set.
    own: VecDeque<EventId>,
    own_set: HashSet<EventId>,
    shutdown: watch::Receiver<bool>,
}

pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, id: u64, shared: Arc<Shared>) {
    let shutdown = shared.conns.shutdown.subscribe();
    let mut connection = Connection {
        id,
        peer,
        shared,
        stream,
        subscriber: None,
        own: VecDeque::new(),
        own_set: HashSet::new(),
        shutdown,
    };
    let end = connection.run().await;
    connection.finish(end).await;
}

impl Connection {
    fn principal(&self) -> Principal<'_> {
        Principal { name: &self.shared.client, frontend: NAME, peer: Some(self.peer) }
    }

    async fn run(&mut self) -> Result<(), End> {
        let patterns: Vec<EventPath> = self.shared.subscribe.clone();
        let interest = Interest { patterns: patterns.clone(), server_id: None, persisted: false };
        let subscriber = self.shared.broker.subscribe(&self.principal(), interest);
        self.subscriber = Some(subscriber.map_err(|e| End::Refused(e.to_string()))?);
        let mut manifest = Message::new(MsgType::new("runtime_manifest"), new_id(), defaults().now);
        manifest.payload = Some(self.shared.manifest.clone());
        self.write_message(&manifest).await?;
        self.shared.conns.clients().insert(
            self.id,
            ClientReport {
                id: self.id,
                name: self.shared.client.clone(),
                peer: self.peer,
                subscriptions: patterns.iter().map(EventPath::to_string).collect(),
                persisted: false,
                registered: 0,
                refused: 0,
                notified: 0,
            },
        );
        tracing::info!(client = %self.principal(), "Kelvin app connected");

        let mut rx = vec![0u8; self.shared.max_line + 1];
        let mut decoder = LineDecoder::new(&mut rx, self.shared.max_line);
        loop {
            let mut events = Vec::new();
            loop {
                match decoder.next_frame() {
                    Ok(Some(range)) => self.on_line(decoder.frame(range), &mut events),
                    Ok(None) => break,
                    Err(_) => return Err(End::Oversize),
                }
            }
            if !events.is_empty() {
                self.publish(events).await;
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
                Ok(()) = self.shutdown.changed() => return Err(End::Closed),
            }
        }
    }

    /// Reads one line into `events`; a bad one is logged and counted, and the connection goes on.
    fn on_line(&self, line: &[u8], events: &mut Vec<RegisterEvent>) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match Message::parse(line, defaults()) {
            Ok(message) => events.push(convert::register_event(&message)),
            Err(e) => {
                self.shared.conns.stats.bad_input.fetch_add(1, Relaxed);
                let shown = String::from_utf8_lossy(line.get(..line.len().min(120)).unwrap_or_default()).into_owned();
                tracing::warn!(client = %self.principal(), "Kelvin line skipped ({e}): {shown}");
            }
        }
    }

    /// Publishes what the app wrote, in order, in one batch. Each line is a message of its own,
    /// so when the batch is refused (the ACL, an invalid type) each is published alone and only
    /// those refused are lost; Kelvin has no answer, so a refusal is logged and counted.
    async fn publish(&mut self, events: Vec<RegisterEvent>) {
        let count = events.len() as u64;
        // A copy for the retry, only where there can be one.
        let retry = (count > 1).then(|| events.clone());
        let Err(error) = self.publish_batch(events).await else { return };
        match retry {
            Some(events) if matches!(error, BrokerError::Denied(_) | BrokerError::Invalid(_)) => {
                for event in events {
                    if let Err(error) = self.publish_batch(vec![event]).await {
                        self.refused(1, &error);
                    }
                }
            }
            _ => self.refused(count, &error),
        }
    }

    async fn publish_batch(&mut self, events: Vec<RegisterEvent>) -> Result<(), BrokerError> {
        let count = events.len() as u64;
        let broker = self.shared.broker.clone();
        let batch = Batch { events, sessions: Vec::new() };
        // This loop drains this app's subscriber too: it must not wait for it.
        let published = broker.publish_beside(&self.principal(), batch, true, self.subscriber.as_ref()).await?;
        for event in &published.events {
            self.remember(event.id);
        }
        self.shared.conns.update(self.id, |c| c.registered += count);
        let who = self.principal().to_string();
        tokio::spawn(async move {
            if let Err(e) = published.durable.await {
                tracing::warn!(client = %who, "Kelvin app's events not stored: {e}");
            }
        });
        Ok(())
    }

    fn refused(&self, count: u64, error: &BrokerError) {
        if matches!(error, BrokerError::Denied(_) | BrokerError::Invalid(_)) {
            self.shared.conns.stats.registrations_refused.fetch_add(count, Relaxed);
            self.shared.conns.update(self.id, |c| c.refused += count);
        }
        tracing::warn!(client = %self.principal(), "Kelvin app's messages refused: {error}");
    }

    fn remember(&mut self, id: EventId) {
        if self.own.len() == OWN_IDS
            && let Some(oldest) = self.own.pop_front()
        {
            self.own_set.remove(&oldest);
        }
        self.own.push_back(id);
        self.own_set.insert(id);
    }

    /// Sends an event as a message, unless it is the app's own or no Kelvin message.
    async fn notify(&mut self, event: &Event) -> Result<(), End> {
        let message = match convert::message(event) {
            Some(message) if !self.own_set.contains(&event.id) => message,
            _ => {
                if let Some(subscriber) = &mut self.subscriber {
                    subscriber.skipped();
                }
                return Ok(());
            }
        };
        let Ok(line) = message.to_line() else { return Ok(()) };
        let Some(subscriber) = &mut self.subscriber else { return Ok(()) };
        subscriber.delivered();
        match write_delivery(&mut self.stream, line.as_bytes(), subscriber).await {
            Some(written) => written.map_err(End::Io)?,
            None => return Err(End::CutOff),
        }
        subscriber.acknowledged(1);
        self.shared.conns.stats.bytes_out.fetch_add(line.len() as u64, Relaxed);
        self.shared.conns.stats.notified.fetch_add(1, Relaxed);
        self.shared.conns.update(self.id, |c| c.notified += 1);
        Ok(())
    }

    async fn write_message(&mut self, message: &Message) -> Result<(), End> {
        // Only a data or parameter message without payload cannot be written, and none is made.
        let Ok(line) = message.to_line() else { return Ok(()) };
        self.stream.write_all(line.as_bytes()).await.map_err(End::Io)?;
        self.shared.conns.stats.bytes_out.fetch_add(line.len() as u64, Relaxed);
        Ok(())
    }

    async fn finish(mut self, end: Result<(), End>) {
        self.shared.conns.clients().remove(&self.id);
        self.subscriber = None;
        let who = self.principal().to_string();
        let stats = &self.shared.conns.stats;
        match end {
            Ok(()) | Err(End::Closed) => tracing::info!(client = %who, "Kelvin app disconnected"),
            Err(End::Oversize) => {
                stats.bad_input.fetch_add(1, Relaxed);
                tracing::warn!(client = %who, "Kelvin connection closed: a line over {} bytes", self.shared.max_line);
            }
            Err(End::Io(e)) => tracing::info!(client = %who, "Kelvin connection failed: {e}"),
            Err(End::CutOff) => {
                stats.too_slow.fetch_add(1, Relaxed);
                tracing::warn!(client = %who, "Kelvin connection closed: too slow (it fell a queue behind)");
            }
            Err(End::Refused(reason)) => {
                stats.logins_refused.fetch_add(1, Relaxed);
                tracing::warn!(client = %who, "Kelvin connection closed: {reason}");
            }
        }
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.stream.shutdown()).await;
    }
}
