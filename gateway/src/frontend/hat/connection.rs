//! One hat client's connection: frames in through `ChatterDecoder`, the keepalive and the
//! conversations through `Chatter`, the init (login, subscriptions), registrations (stored in
//! the order they came; answered, if asked, once durable), queries, and notifications with
//! acks: the next batch goes only once the client acknowledged the last, so a client that stops
//! acking falls behind in the broker's fan-out and is cut off like any slow subscriber.
//!
//! Bad input (an unknown message type, an SBS error, an oversize frame, anything but an init
//! first) closes this connection only, with a log line and `bad_input` counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use rivulet_core::driver::Clock;
use rivulet_core::hat::chatter::{ChatterDecoder, MAX_HEADER_LEN};
use rivulet_core::hat::conversation::{Chatter, ChatterEvent, Config, Conversation};
use rivulet_core::hat::eventer::{
    EventTypes, EventerMessage, EventsNotify, InitReq, InitRes, Message, QueryParams, QueryRes, RegisterEvents,
    RegisterRes, StatusNotify,
};
use rivulet_core::hat::owned as convert;
use rivulet_core::model::{EventRef, Status};
use rivulet_core::owned::{Event, EventPath, QueryPage};
use rivulet_core::session::client_name_error;
use rivulet_core::wire::FrameDecoder;
use rivulet_tokio::TokioClock;
use rivulet_tokio::fanout::{Delivery, Interest, Subscriber};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::{IN_FLIGHT, INIT_TIMEOUT, NAME, NOTIFY_BYTES, SHUTDOWN_TIMEOUT, Shared};
use crate::access::{Principal, WRONG_CREDENTIAL};
use crate::broker::{Batch, BrokerError};
use crate::config::HatRespond;
use crate::frontend::ClientReport;
use crate::frontend::connections::next_delivery;
use crate::store::page_bytes;

/// Events one notification carries at most.
const NOTIFY_EVENTS: usize = 1000;
/// hat's answer to a subscription with `*` anywhere but last (`create_subscription`).
const INVALID_SUBSCRIPTION: &str = "invalid query event type";

/// A connection's byte stream: plain TCP or TLS over it.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// Serves one connection until it ends, then takes it off the lists.
pub(super) async fn serve(stream: Box<dyn Stream>, peer: SocketAddr, id: u64, shared: Arc<Shared>) {
    let (answers_tx, answers) = mpsc::channel(IN_FLIGHT);
    let now = TokioClock::new();
    let config = Config {
        ping_delay: rivulet_core::time::Duration::from_core(shared.ping_delay),
        ping_timeout: rivulet_core::time::Duration::from_core(shared.ping_timeout),
    };
    let mut connection = Connection {
        id,
        peer,
        chatter: Chatter::new(config, now.now()),
        clock: now,
        stream,
        tx: vec![0; 4096],
        client: None,
        subscriber: None,
        unacked: None,
        answers_tx,
        answers,
        in_flight: 0,
        published: 0,
        resolved: Arc::new(watch::Sender::new(0)),
        status_rx: shared.status.subscribe(),
        shutdown_rx: shared.conns.shutdown.subscribe(),
        shared,
    };
    let end = connection.run().await;
    connection.finish(end).await;
}

/// Why a connection ended.
enum End {
    /// The client closed it, or the gateway is stopping.
    Closed,
    /// Its bytes made no sense; the reason is logged.
    BadInput(String),
    Io(std::io::Error),
    /// Nothing came within the keepalive's timeout.
    TimedOut,
    /// No init within [`INIT_TIMEOUT`].
    NoInit,
    /// The broker's fan-out cut it off: it fell a whole queue behind.
    CutOff,
    /// Its init was refused (the answer went out).
    Refused,
}

/// The logged-in client of a connection.
struct Client {
    name: String,
}

/// What a registration or query handled off the connection's task comes back as.
enum Answer {
    /// `respond`: the client waits for the events as registered (once durable).
    Registered {
        conversation: Conversation,
        count: u64,
        respond: bool,
        result: Result<Vec<Event>, BrokerError>,
    },
    Queried {
        conversation: Conversation,
        result: Result<QueryPage, BrokerError>,
    },
}

struct Connection {
    id: u64,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stream: Box<dyn Stream>,
    chatter: Chatter,
    clock: TokioClock,
    /// Where frames are written; grows to the largest one.
    tx: Vec<u8>,
    client: Option<Client>,
    subscriber: Option<Subscriber>,
    /// The notification waiting for its ack: its conversation and how many events it carried.
    unacked: Option<(Conversation, u32)>,
    answers_tx: mpsc::Sender<Answer>,
    answers: mpsc::Receiver<Answer>,
    /// Registrations and queries handed off and not yet answered.
    in_flight: usize,
    /// Registration requests published, and (counted by their tasks) those resolved: a query
    /// waits until every registration before it is stored, so a client reads its own writes.
    published: u64,
    resolved: Arc<watch::Sender<u64>>,
    status_rx: watch::Receiver<Status>,
    shutdown_rx: watch::Receiver<bool>,
}

impl Connection {
    async fn run(&mut self) -> Result<(), End> {
        let mut rx = vec![0u8; MAX_HEADER_LEN + self.shared.max_frame];
        let mut decoder = ChatterDecoder::with_limit(&mut rx, self.shared.max_frame);
        let init_by = tokio::time::Instant::now() + INIT_TIMEOUT;
        let mut closing = false;
        loop {
            while let Some(range) = decoder.next_frame().map_err(|e| End::BadInput(e.to_string()))? {
                self.on_frame(decoder.frame(range)).await?;
            }
            let now = self.clock.now();
            if let Some(ChatterEvent::TimedOut) = self.chatter.poll(now) {
                return Err(End::TimedOut);
            }
            if self.chatter.wants_transmit(now) {
                self.transmit_keepalive().await?;
            }
            if closing && self.in_flight == 0 {
                return Err(End::Closed);
            }
            let wake = self.chatter.poll_timeout();
            let reading = !closing && self.in_flight < IN_FLIGHT;
            let take = self.unacked.is_none() && !closing;
            tokio::select! {
                read = self.stream.read(decoder.read_buffer()), if reading => match read {
                    Ok(0) => return Err(End::Closed),
                    Ok(n) => {
                        self.shared.conns.stats.bytes_in.fetch_add(n as u64, Relaxed);
                        decoder.commit(n);
                    }
                    Err(e) => return Err(End::Io(e)),
                },
                Some(answer) = self.answers.recv() => self.on_answer(answer).await?,
                delivery = next_delivery(&mut self.subscriber, take), if !closing => match delivery {
                    Delivery::Event(first) => self.notify(first).await?,
                    Delivery::CutOff => return Err(End::CutOff),
                },
                Ok(()) = self.status_rx.changed() => self.send_status().await?,
                Ok(()) = self.shutdown_rx.changed(), if !closing => closing = true,
                () = self.clock.at(wake.unwrap_or(now)), if wake.is_some() => {}
                () = tokio::time::sleep_until(init_by), if self.client.is_none() => return Err(End::NoInit),
                () = tokio::time::sleep(SHUTDOWN_TIMEOUT), if closing => return Err(End::Closed),
            }
        }
    }

    async fn on_frame(&mut self, body: &[u8]) -> Result<(), End> {
        let now = self.clock.now();
        let received = self.chatter.receive(now, body).map_err(|e| End::BadInput(e.to_string()))?;
        // Pings and pongs stay in the chatter.
        let Some(received) = received else { return Ok(()) };
        let message = received.message().map_err(|e| End::BadInput(format!("{}: {e}", received.msg_type)))?;
        match (self.client.is_some(), message) {
            (false, Message::InitReq(init)) => self.on_init(received.conversation, init).await,
            (false, _) => Err(End::BadInput(format!("{} before HatEventer.MsgInitReq", received.msg_type))),
            (true, Message::EventsAck(_)) => {
                if let Some((conversation, count)) = self.unacked
                    && received.is_reply_to(conversation)
                {
                    self.unacked = None;
                    if let Some(subscriber) = &mut self.subscriber {
                        subscriber.acknowledged(count);
                    }
                }
                Ok(())
            }
            (true, Message::RegisterReq(request)) => {
                self.on_register(received.conversation, !received.last, request.events).await
            }
            (true, Message::QueryReq(params)) => {
                self.on_query(received.conversation, &params);
                Ok(())
            }
            (true, _) => Err(End::BadInput(format!("{} from a client", received.msg_type))),
        }
    }

    fn principal(&self) -> Principal<'_> {
        let name = self.client.as_ref().map_or("", |c| c.name.as_str());
        Principal { name, frontend: NAME, peer: Some(self.peer) }
    }

    async fn on_init(&mut self, conversation: Conversation, init: InitReq<'_, EventTypes<'_>>) -> Result<(), End> {
        if let Some(long) = client_name_error(init.client_name) {
            self.shared.conns.stats.logins_refused.fetch_add(1, Relaxed);
            tracing::info!(peer = %self.peer, "hat init refused: {long}");
            self.reply(conversation, &InitRes::Error(&long.to_string())).await?;
            return Err(End::Refused);
        }
        let name = init.client_name.to_string();
        let patterns = convert::event_paths(&init.subscriptions);
        let who = Principal { name: &name, frontend: NAME, peer: Some(self.peer) };
        let clients = self.shared.broker.access().clients().clone();
        let refusal = if patterns.iter().any(|p| p.check_pattern().is_err()) {
            Some(INVALID_SUBSCRIPTION.to_string())
        } else if !clients.admits(&name, init.client_token.unwrap_or_default()) {
            Some(WRONG_CREDENTIAL.to_string())
        } else if self.shared.conns.clients().len() >= self.shared.max_connections {
            self.shared.conns.stats.over_limit.fetch_add(1, Relaxed);
            Some(format!("the server is full ({} clients connected); try again later", self.shared.max_connections))
        } else {
            let interest =
                Interest { patterns: patterns.clone(), server_id: init.server_id, persisted: init.persisted };
            match self.shared.broker.subscribe(&who, interest) {
                Ok(subscriber) => {
                    self.subscriber = Some(subscriber);
                    None
                }
                Err(e) => Some(e.to_string()),
            }
        };
        if let Some(reason) = refusal {
            self.shared.conns.stats.logins_refused.fetch_add(1, Relaxed);
            tracing::info!(client = %who, "hat init refused: {reason}");
            self.reply(conversation, &InitRes::Error(&reason)).await?;
            return Err(End::Refused);
        }
        let status = *self.status_rx.borrow_and_update();
        self.reply(conversation, &InitRes::Success(status)).await?;
        let report = ClientReport {
            id: self.id,
            name: name.clone(),
            peer: self.peer,
            subscriptions: patterns.iter().map(EventPath::to_string).collect(),
            persisted: init.persisted,
            registered: 0,
            refused: 0,
            notified: 0,
        };
        self.shared.conns.clients().insert(self.id, report);
        tracing::info!(client = %who, "hat client accepted");
        self.client = Some(Client { name });
        Ok(())
    }

    /// Takes a registration: refused whole if one event is not allowed (nothing stored, and a
    /// `failure` if an answer was asked for); else published now, in the order they came, and
    /// answered once durable, or at once with `[hat] respond = "registered"` (hat's own server's
    /// meaning of the answer).
    async fn on_register(
        &mut self,
        conversation: Conversation,
        respond: bool,
        events: RegisterEvents<'_>,
    ) -> Result<(), End> {
        let events: Vec<_> = events.iter().map(|view| convert::register_event(&view)).collect();
        let count = events.len() as u64;
        let broker = self.shared.broker.clone();
        let batch = Batch { events, sessions: Vec::new() };
        // This loop drains this client's subscriber too: it must not wait for it.
        let published = broker.publish_beside(&self.principal(), batch, respond, self.subscriber.as_ref()).await;
        let published = match published {
            Ok(published) => published,
            Err(e) => {
                if matches!(e, BrokerError::Denied(_) | BrokerError::Invalid(_)) {
                    self.shared.conns.stats.registrations_refused.fetch_add(count, Relaxed);
                    self.shared.conns.update(self.id, |c| c.refused += count);
                }
                tracing::info!(client = %self.principal(), "hat registration refused: {e}");
                return if respond {
                    self.reply(conversation, &RegisterRes::<&[EventRef<'_>]>::Failure).await
                } else {
                    Ok(())
                };
            }
        };
        let respond = if respond && self.shared.respond == HatRespond::Registered {
            let refs: Vec<EventRef<'_>> = published.events.iter().map(Event::as_ref).collect();
            self.reply(conversation, &RegisterRes::Events(&refs[..])).await?;
            false
        } else {
            respond
        };
        self.in_flight += 1;
        self.published += 1;
        let (answers, resolved) = (self.answers_tx.clone(), self.resolved.clone());
        tokio::spawn(async move {
            let result = published.durable.await.map(|()| published.events);
            resolved.send_modify(|n| *n += 1);
            let _ = answers.send(Answer::Registered { conversation, count, respond, result }).await;
        });
        Ok(())
    }

    fn on_query(&mut self, conversation: Conversation, params: &QueryParams<EventTypes<'_>>) {
        let query = convert::query(params);
        let (broker, answers, max_bytes) = (self.shared.broker.clone(), self.answers_tx.clone(), self.shared.max_frame);
        let (name, peer) = (self.principal().name.to_string(), self.peer);
        let (mut resolved, before) = (self.resolved.subscribe(), self.published);
        self.in_flight += 1;
        tokio::spawn(async move {
            // The broker resolves registrations in commit order: once as many as came before
            // this query resolved, all of them are written.
            let _ = resolved.wait_for(|&n| n >= before).await;
            let who = Principal { name: &name, frontend: NAME, peer: Some(peer) };
            // Dropped when the connection ends: the broker stops a scan nobody waits for.
            let result = tokio::select! {
                result = broker.query(&who, query, max_bytes) => result,
                () = answers.closed() => return,
            };
            let _ = answers.send(Answer::Queried { conversation, result }).await;
        });
    }

    async fn on_answer(&mut self, answer: Answer) -> Result<(), End> {
        self.in_flight = self.in_flight.saturating_sub(1);
        match answer {
            Answer::Registered { conversation, count, respond, result } => {
                match &result {
                    Ok(_) => self.shared.conns.update(self.id, |c| c.registered += count),
                    Err(e) => tracing::warn!(client = %self.principal(), "hat registration not stored: {e}"),
                }
                if !respond {
                    return Ok(());
                }
                match result {
                    Ok(events) => {
                        let refs: Vec<EventRef<'_>> = events.iter().map(Event::as_ref).collect();
                        self.reply(conversation, &RegisterRes::Events(&refs[..])).await
                    }
                    Err(_) => self.reply(conversation, &RegisterRes::<&[EventRef<'_>]>::Failure).await,
                }
            }
            Answer::Queried { conversation, result } => {
                // hat's answer has no error: what may not be seen, or could not be read, is none.
                let page = result.unwrap_or_else(|e| {
                    tracing::info!(client = %self.principal(), "hat query answered empty: {e}");
                    QueryPage::default()
                });
                let refs: Vec<EventRef<'_>> = page.events.iter().map(Event::as_ref).collect();
                self.reply(conversation, &QueryRes { events: &refs[..], more_follows: page.more_follows }).await
            }
        }
    }

    /// Sends `first` and what else is queued, up to [`NOTIFY_BYTES`], as one notification that
    /// asks for an ack.
    async fn notify(&mut self, first: Arc<Event>) -> Result<(), End> {
        let mut batch = vec![first];
        let mut bytes = batch.iter().map(|e| page_bytes(e)).sum::<usize>();
        while batch.len() < NOTIFY_EVENTS && bytes < NOTIFY_BYTES {
            match self.subscriber.as_mut().and_then(Subscriber::try_recv) {
                Some(event) => {
                    bytes += page_bytes(&event);
                    batch.push(event);
                }
                None => break,
            }
        }
        let refs: Vec<EventRef<'_>> = batch.iter().map(|e| Event::as_ref(e)).collect();
        let conversation = self.open(&EventsNotify { events: &refs[..] }, false).await?;
        let count = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        if let Some(subscriber) = &mut self.subscriber {
            (0..count).for_each(|_| subscriber.delivered());
        }
        self.unacked = Some((conversation, count));
        self.shared.conns.stats.notified.fetch_add(u64::from(count), Relaxed);
        self.shared.conns.update(self.id, |c| c.notified += u64::from(count));
        Ok(())
    }

    async fn send_status(&mut self) -> Result<(), End> {
        let status = *self.status_rx.borrow_and_update();
        if self.client.is_none() {
            return Ok(());
        }
        self.open(&StatusNotify(status), true).await.map(|_| ())
    }

    async fn transmit_keepalive(&mut self) -> Result<(), End> {
        let now = self.clock.now();
        let len = self.chatter.poll_transmit(now, &mut self.tx).map_err(|e| End::BadInput(e.to_string()))?;
        self.write(len).await
    }

    /// Writes `message` opening a new conversation.
    async fn open(&mut self, message: &impl EventerMessage, last: bool) -> Result<Conversation, End> {
        loop {
            match self.chatter.open(message, last, &mut self.tx) {
                Ok((len, conversation)) => return self.write(len).await.map(|()| conversation),
                Err(rivulet_core::hat::Error::BufferTooSmall) => self.grow()?,
                Err(e) => return Err(End::BadInput(format!("cannot encode a message: {e}"))),
            }
        }
    }

    /// Writes `message` as the last of `conversation` (every answer of a hat server is).
    async fn reply(&mut self, conversation: Conversation, message: &impl EventerMessage) -> Result<(), End> {
        loop {
            match self.chatter.reply(conversation, message, true, &mut self.tx) {
                Ok(len) => return self.write(len).await,
                Err(rivulet_core::hat::Error::BufferTooSmall) => self.grow()?,
                Err(e) => return Err(End::BadInput(format!("cannot encode a message: {e}"))),
            }
        }
    }

    /// Doubles the transmit buffer, up to what the largest answer (a query page of `max_frame`
    /// bytes, or a notification) can need.
    fn grow(&mut self) -> Result<(), End> {
        let limit = 2 * (self.shared.max_frame + NOTIFY_BYTES) + 4096;
        if self.tx.len() >= limit {
            return Err(End::BadInput("an answer larger than any frame this front-end sends".into()));
        }
        let grown = (self.tx.len() * 2).min(limit);
        self.tx.resize(grown, 0);
        Ok(())
    }

    async fn write(&mut self, len: usize) -> Result<(), End> {
        let Some(frame) = self.tx.get(..len) else { return Ok(()) };
        self.stream.write_all(frame).await.map_err(End::Io)?;
        self.shared.conns.stats.bytes_out.fetch_add(len as u64, Relaxed);
        Ok(())
    }

    async fn finish(mut self, end: Result<(), End>) {
        self.shared.conns.clients().remove(&self.id);
        self.subscriber = None;
        let who = self.principal().to_string();
        let stats = &self.shared.conns.stats;
        match end {
            Ok(()) | Err(End::Closed) => tracing::debug!(client = %who, "hat connection closed"),
            Err(End::BadInput(why)) => {
                stats.bad_input.fetch_add(1, Relaxed);
                tracing::warn!(client = %who, "hat connection closed, bad input: {why}");
            }
            Err(End::Io(e)) => tracing::debug!(client = %who, "hat connection failed: {e}"),
            Err(End::TimedOut) => tracing::info!(client = %who, "hat connection closed: no answer to our ping"),
            Err(End::NoInit) => {
                stats.init_timeouts.fetch_add(1, Relaxed);
                tracing::info!(peer = %self.peer, "hat connection closed: no init in {INIT_TIMEOUT:?}");
            }
            Err(End::CutOff) => {
                stats.too_slow.fetch_add(1, Relaxed);
                tracing::warn!(client = %who, "hat connection closed: too slow (its notifications fell a queue behind)");
            }
            Err(End::Refused) => {
                // As hat's server does: give the client a moment to read the answer and close.
                let mut byte = [0u8; 1];
                let _ = tokio::time::timeout(std::time::Duration::from_millis(500), self.stream.read(&mut byte)).await;
            }
        }
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.stream.shutdown()).await;
    }
}
