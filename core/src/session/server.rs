//! The server side of one connection. The application (a gateway) decides what to accept,
//! stores what is registered, and says what to notify; the machine keeps the protocol: init
//! before anything else, sequence numbers of registrations, the client's window, type aliases.

use crate::model::{EventId, EventRef, EventType, EventTypeRef, QueryParams, Status, TypeList};
use crate::time::{Duration, Instant};
use crate::wire::{FrameWriter, PacketKind, PacketRepr};

use super::link::{Link, Received};
use super::message::{
    self, Accepted, INLINE_TYPE, IdDelta, InitRequest, InitResponse, Limits, MessageKind, NotifyBody, PROTOCOL_VERSION,
    RegisterBody, RegisterList,
};
use super::requests::{RequestId, RequestKind};
use super::{Error, Incoming, LinkEnd, Reply, RequestError, TimerEvent};
use crate::model::RegisterEventRef;

/// Limits and pacing a server applies to each connection.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Registrations a client may send ahead of our acks.
    pub window: u16,
    /// Aliases a client may declare.
    pub aliases: u16,
    /// Largest packet body we take.
    pub max_packet: u32,
    /// Used until the client's init proposes its own.
    pub keepalive: Duration,
    /// The longest keepalive a client may propose; a longer one is cut to this, so a silent
    /// connection holds its place at most twice as long.
    pub max_keepalive: Duration,
    pub request_timeout: Duration,
    /// Acknowledge each registration as soon as it is handed over. A gateway that stores events
    /// turns this off and calls [`ServerConnection::acknowledge`] once they are durable.
    pub auto_ack: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            window: 64,
            aliases: 64,
            max_packet: 64 * 1024,
            keepalive: Duration::from_secs(20),
            max_keepalive: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
            auto_ack: true,
        }
    }
}

impl ServerConfig {
    /// The keepalive (ms) of a link whose client proposed `proposed` (0: none, the server's own),
    /// never over [`max_keepalive`](Self::max_keepalive).
    pub fn keepalive_for(&self, proposed: u32) -> u32 {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        match proposed {
            0 => ms(self.keepalive).min(ms(self.max_keepalive)),
            proposed => proposed.min(ms(self.max_keepalive)),
        }
    }
}

/// What a server connection tells its application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ServerEvent<'a> {
    /// A client introduces itself: answer with `accept`, `challenge` or `refuse`.
    Init {
        from: Incoming,
        request: InitRequest<'a>,
    },
    /// The client's whole new subscription list: `respond_raw(from, 0, &[])` to take it, or `refuse`.
    Subscribe {
        from: Incoming,
        subscriptions: TypeList<'a>,
    },
    /// A registration with its sequence number in the client's session. Never a replay of one
    /// acknowledged before: the init settled where the client resumes.
    Register {
        seq: u32,
        event: RegisterEventRef<'a>,
    },
    /// Register and answer with the events as registered (`respond` with an `EventList`).
    RegisterRequest {
        from: Incoming,
        events: RegisterList<'a>,
    },
    /// Answer with `respond` and a `QueryResult`.
    Query {
        from: Incoming,
        params: QueryParams<'a>,
    },
    /// An application request (channel 1).
    Request {
        from: Incoming,
        rq_type: u64,
        flags: u64,
        payload: &'a [u8],
    },
    /// The client took `count` more notifications; that much window is free again.
    Acked {
        count: u32,
    },
    Response {
        id: RequestId,
        reply: Reply<'a>,
    },
    RequestFailed {
        id: RequestId,
        error: RequestError<'a>,
    },
    /// The link is over: drop the transport.
    LinkEnded(LinkEnd),
}

/// Counters a server connection keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ServerStats {
    pub registered: u64,
    pub notified: u64,
    pub declared: u64,
    /// Packets taken but not acted on (see [`super::ClientStats::dropped`]), and anything a
    /// client sent before its init.
    pub dropped: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitInit,
    /// Init seen, answer not yet given.
    Deciding,
    Open,
}

/// One connection's server machine: `INFLIGHT` requests of ours awaiting answers, `ALIASES`
/// types each way.
#[derive(Debug)]
pub struct ServerConnection<const INFLIGHT: usize = 8, const ALIASES: usize = 64> {
    config: ServerConfig,
    link: Link<INFLIGHT>,
    state: State,
    /// What the client's init said about itself.
    client_window: u16,
    client_aliases: u16,
    client_first_seq: u32,
    /// Sequence number of the next registration.
    next_seq: u32,
    /// Registrations received and not acknowledged.
    unacked: u32,
    /// Notifications sent and not acknowledged.
    in_flight: u32,
    /// Types the client declared (alias = index + 1).
    client_types: heapless::Vec<Option<EventType>, ALIASES>,
    /// Types we declared to the client (alias = index + 1), replaced round-robin when full.
    our_types: heapless::Vec<EventType, ALIASES>,
    next_victim: usize,
    last_notified: Option<EventId>,
    next_tag: u64,
    stats: ServerStats,
}

impl<const INFLIGHT: usize, const ALIASES: usize> ServerConnection<INFLIGHT, ALIASES> {
    pub fn new(now: Instant, config: ServerConfig) -> Self {
        ServerConnection {
            link: Link::new(now, config.keepalive, config.request_timeout),
            config,
            state: State::AwaitInit,
            client_window: 0,
            client_aliases: 0,
            client_first_seq: 0,
            next_seq: 0,
            unacked: 0,
            in_flight: 0,
            client_types: heapless::Vec::new(),
            our_types: heapless::Vec::new(),
            next_victim: 0,
            last_notified: None,
            next_tag: crate::wire::packet::FIRST_REQUEST_TAG,
            stats: ServerStats::default(),
        }
    }

    /// The limits to announce in [`Accepted`]: the configured ones, within this connection's
    /// capacity.
    pub fn limits(&self) -> Limits {
        let aliases = usize::from(self.config.aliases).min(ALIASES);
        Limits {
            window: self.config.window,
            aliases: u16::try_from(aliases).unwrap_or(u16::MAX),
            max_packet: self.config.max_packet,
        }
    }

    pub fn is_open(&self) -> bool {
        self.state == State::Open && !self.link.is_closing() && self.link.ended.is_none()
    }

    pub fn stats(&self) -> ServerStats {
        ServerStats { dropped: self.link.dropped, ..self.stats }
    }

    pub fn rtt(&self) -> Option<Duration> {
        self.link.rtt
    }

    /// Notifications the client can still take before acknowledging.
    pub fn credit(&self) -> u32 {
        u32::from(self.client_window).saturating_sub(self.in_flight)
    }

    /// Accepts the client's init. `accepted.next_seq` is where the client's session continues
    /// (for a new session, the init's `first_seq`).
    pub fn accept(&mut self, from: Incoming, accepted: &Accepted, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        if self.state != State::Deciding {
            return Err(Error::Protocol);
        }
        // The keepalive never over the configured longest, whatever the application answers.
        let accepted = Accepted { keepalive_ms: self.config.keepalive_for(accepted.keepalive_ms), ..*accepted };
        message::push_response(out, from.channel, from.tag, &InitResponse::Accepted(accepted))?;
        let ahead = message::seq_at_or_after(accepted.next_seq, self.client_first_seq);
        self.next_seq = if ahead { accepted.next_seq } else { self.client_first_seq };
        self.link.keepalive.set_interval(Duration::from_millis(u64::from(accepted.keepalive_ms)));
        self.state = State::Open;
        Ok(())
    }

    /// Asks the client to prove its credential over `nonce`; it will init again.
    pub fn challenge(&mut self, from: Incoming, nonce: &[u8], out: &mut FrameWriter<'_>) -> Result<(), Error> {
        if self.state != State::Deciding {
            return Err(Error::Protocol);
        }
        message::push_response(out, from.channel, from.tag, &InitResponse::Challenge(nonce))?;
        self.state = State::AwaitInit;
        Ok(())
    }

    /// Refuses a request (an init too: the link then closes).
    pub fn refuse(&mut self, from: Incoming, reason: &str, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        self.link.check_may_send()?;
        message::push_failure(out, from.channel, from.tag, reason)?;
        if self.state == State::Deciding {
            self.state = State::AwaitInit;
            self.link.begin_close();
        }
        Ok(())
    }

    /// Answers a request with a postcard body (a `QueryResult`, an `EventList`).
    pub fn respond<T: serde::Serialize + ?Sized>(
        &mut self,
        from: Incoming,
        body: &T,
        out: &mut FrameWriter<'_>,
    ) -> Result<(), Error> {
        let len = postcard::experimental::serialized_size(body).map_err(|_| Error::Encode)?;
        self.check_fits(from, 0, len)?;
        message::push_response(out, from.channel, from.tag, body)
    }

    /// A response the client could not receive is [`Error::TooLarge`]: page it smaller. After our
    /// EOF nothing goes out: [`Error::Closed`].
    fn check_fits(&self, from: Incoming, flags: u64, payload_len: usize) -> Result<(), Error> {
        self.link.check_may_send()?;
        let header = PacketRepr::response(from.channel, from.tag, true, flags, &[]);
        message::check_fits(self.link.peer_max_packet, &header, payload_len)
    }

    /// Answers a request with raw bytes (application requests, and empty answers).
    pub fn respond_raw(
        &mut self,
        from: Incoming,
        flags: u64,
        payload: &[u8],
        out: &mut FrameWriter<'_>,
    ) -> Result<(), Error> {
        self.check_fits(from, flags, payload.len())?;
        message::push_raw_response(out, from.channel, from.tag, true, flags, payload)
    }

    /// `count` more registrations are durable: acknowledge them to the client.
    pub fn acknowledge(&mut self, count: u32) {
        let count = count.min(self.unacked);
        self.unacked -= count;
        self.link.acks_owed += count;
    }

    pub fn set_status(&mut self, status: Status, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        if self.state != State::Open {
            return Err(Error::NotConnected);
        }
        if self.link.is_closing() {
            return Err(Error::Closed); // nothing may follow our EOF
        }
        message::push_request(out, 0, MessageKind::Status, &status)
    }

    /// Tells the client that the registration with sequence number `seq` was taken but will not
    /// be stored, and why. Send it before acknowledging that registration: the client drops it
    /// from its outbox at the ack, as it does a stored one.
    pub fn refuse_registration(&mut self, seq: u32, reason: &str, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        if self.state != State::Open {
            return Err(Error::NotConnected);
        }
        if self.link.is_closing() {
            return Err(Error::Closed);
        }
        message::push_request(out, u64::from(seq), MessageKind::Refused, &reason)
    }

    /// Sends an application request to the client.
    pub fn request(
        &mut self,
        now: Instant,
        rq_type: u64,
        flags: u64,
        payload: &[u8],
        out: &mut FrameWriter<'_>,
    ) -> Result<RequestId, Error> {
        if self.state != State::Open {
            return Err(Error::NotConnected);
        }
        let id = self.link.send_app_request(now, self.next_tag, rq_type, flags, payload, out)?;
        self.next_tag += 1;
        Ok(id)
    }

    pub fn ping(&mut self, now: Instant, out: &mut FrameWriter<'_>) -> Result<RequestId, Error> {
        if self.state != State::Open {
            return Err(Error::NotConnected);
        }
        let id = self.link.send_request(now, self.next_tag, RequestKind::Ping, MessageKind::Ping, &(), out)?;
        self.next_tag += 1;
        Ok(id)
    }

    /// Notifies one event, declaring its type first if the client does not know it. Fails with
    /// [`Error::NoCredit`] when the client's window is full; the caller queues or drops. Fails
    /// with [`Error::Closed`] once the link is closing.
    pub fn notify(&mut self, event: &EventRef<'_>, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        if self.state != State::Open {
            return Err(Error::NotConnected);
        }
        if self.link.is_closing() {
            return Err(Error::Closed); // nothing may follow our EOF
        }
        if self.credit() == 0 {
            return Err(Error::NoCredit);
        }
        let limit = usize::from(self.client_aliases).min(ALIASES);
        let known = self.our_types.iter().position(|t| *t == event.event_type);
        let (alias, declare) = match known {
            Some(at) => (at + 1, None),
            None if limit == 0 => (INLINE_TYPE as usize, None),
            None => match event.event_type.to_owned::<{ crate::model::TYPE_BYTES }>() {
                Err(_) => (INLINE_TYPE as usize, None),
                Ok(owned) if self.our_types.len() < limit => (self.our_types.len() + 1, Some(owned)),
                Ok(owned) => (self.next_victim % limit + 1, Some(owned)),
            },
        };
        let body = NotifyBody {
            id: IdDelta::between(self.last_notified, event.id),
            timestamp: event.timestamp,
            source_timestamp: event.source_timestamp,
            payload: event.payload,
        };
        let inline = if alias == 0 { Some(event.event_type) } else { None };
        let body_len = postcard::experimental::serialized_size(&body).map_err(|_| Error::Encode)?
            + inline.map_or(Ok(0), |t| postcard::experimental::serialized_size(&t)).map_err(|_| Error::Encode)?;
        // A notification the client could not receive is TooLarge; counting it is the caller's.
        message::check_message_fits(self.link.peer_max_packet, alias as u64, MessageKind::Notify, body_len)?;
        if declare.is_some() {
            message::push_request(out, alias as u64, MessageKind::Declare, &event.event_type)?;
        }
        let sent = message::push_with_subject(out, MessageKind::Notify, alias as u64, inline, &body);
        if let Some(owned) = declare {
            // The client now knows the alias even if the notify did not fit.
            self.stats.declared += 1;
            let slot = alias - 1;
            if let Some(entry) = self.our_types.get_mut(slot) {
                *entry = owned;
                self.next_victim = slot + 1;
            } else {
                let _ = self.our_types.push(owned);
            }
        }
        sent?;
        self.last_notified = Some(event.id);
        self.in_flight += 1;
        self.stats.notified += 1;
        Ok(())
    }

    /// Starts a graceful close: ERQ, then EOF, then wait for the client's EOF.
    pub fn close(&mut self) {
        self.link.begin_close();
    }

    /// Closes after telling the client why (a `Closing` message, then ERQ and EOF). Before the
    /// link is open, or once closing, it only closes.
    pub fn close_with_reason(&mut self, reason: &str, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        if self.state == State::Open && !self.link.is_closing() {
            message::push_request(out, 0, MessageKind::Closing, &reason)?;
        }
        self.link.begin_close();
        Ok(())
    }

    /// Forgets the link, keeping the configuration, the counters and the tag counter (so a late
    /// answer to an old request matches nothing).
    fn restart(&mut self, now: Instant) {
        let (stats, next_tag) = (self.stats, self.next_tag);
        *self = ServerConnection::new(now, self.config);
        self.stats = stats;
        self.next_tag = next_tag;
    }

    /// Takes one received packet body. An `Init` always opens a new link, even on one that is
    /// open or closing: the application sees `ServerEvent::Init` and treats the client as
    /// starting over (in-flight notifications and requests of the old link are gone).
    pub fn handle<'a>(&'a mut self, now: Instant, body: &'a [u8]) -> Result<Option<ServerEvent<'a>>, Error> {
        let repr = PacketRepr::parse_bytes(body)?;
        let is_init = repr.channel == message::CHANNEL_SESSION
            && matches!(repr.kind, PacketKind::Request { rq_type, .. } if rq_type == MessageKind::Init as u64);
        if is_init && (self.state != State::AwaitInit || self.link.is_closing()) {
            // The client started a new link before this one ended (a serial line after a bad
            // frame): this one is over, and the init opens the next.
            self.restart(now);
        }
        let received = self.link.receive(now, repr, self.state != State::AwaitInit);
        if self.state != State::Open && self.link.is_closing() {
            return Ok(None); // a refused or abandoned link takes nothing more
        }
        if self.state != State::Open {
            // Before the init is accepted only the init, pings and the close handshake count.
            return match received {
                Received::Session { kind: MessageKind::Init, tag, payload } if self.state == State::AwaitInit => {
                    let request: InitRequest<'a> = message::decode(payload)?;
                    let from = Incoming { channel: message::CHANNEL_SESSION, tag };
                    if request.version != PROTOCOL_VERSION {
                        self.link.refuse(from, "unsupported protocol version");
                        self.link.begin_close();
                        return Ok(None);
                    }
                    self.client_window = request.limits.window;
                    self.client_aliases = request.limits.aliases;
                    self.link.peer_max_packet = request.limits.max_packet;
                    self.client_first_seq = request.first_seq;
                    if request.keepalive_ms > 0 {
                        let ms = self.config.keepalive_for(request.keepalive_ms);
                        self.link.keepalive.set_interval(Duration::from_millis(u64::from(ms)));
                    }
                    self.state = State::Deciding;
                    Ok(Some(ServerEvent::Init { from, request }))
                }
                Received::Nothing | Received::Eof => Ok(None),
                _ => {
                    // A client that talks as if a link were open (e.g. after a dropped serial frame
                    // made us start over): close, so that it inits again and resumes its session.
                    self.link.dropped = self.link.dropped.saturating_add(1);
                    self.link.begin_close();
                    Ok(None)
                }
            };
        }
        match received {
            Received::Nothing | Received::Eof => Ok(None),
            Received::Ack(count) => {
                if count > self.in_flight {
                    return Err(Error::Protocol);
                }
                self.in_flight -= count;
                Ok(Some(ServerEvent::Acked { count }))
            }
            Received::App { from, rq_type, flags, payload } => {
                Ok(Some(ServerEvent::Request { from, rq_type, flags, payload }))
            }
            Received::Response { pending, ok, flags, payload } => {
                let id = pending.id;
                if !ok {
                    let reason = core::str::from_utf8(payload).unwrap_or("(reason is not UTF-8)");
                    return Ok(Some(ServerEvent::RequestFailed { id, error: RequestError::Refused(reason) }));
                }
                let reply = match pending.kind {
                    RequestKind::Ping => Reply::Pong { rtt: self.link.rtt.unwrap_or(Duration::ZERO) },
                    _ => Reply::App { flags, payload },
                };
                Ok(Some(ServerEvent::Response { id, reply }))
            }
            Received::Session { kind, tag, payload } => {
                let from = Incoming { channel: message::CHANNEL_SESSION, tag };
                match kind {
                    MessageKind::Declare => {
                        let ty: EventTypeRef<'_> = message::decode(payload)?;
                        let slot = usize::try_from(tag).ok().and_then(|a| a.checked_sub(1));
                        let slot = slot
                            .filter(|&s| s < usize::from(self.config.aliases).min(ALIASES))
                            .ok_or(Error::Protocol)?;
                        while self.client_types.len() <= slot {
                            self.client_types.push(None).map_err(|_| Error::Protocol)?;
                        }
                        if let Some(entry) = self.client_types.get_mut(slot) {
                            *entry = ty.to_owned().ok();
                        }
                        Ok(None)
                    }
                    MessageKind::Register => {
                        // Acks not yet sent still count: the client has not seen them.
                        if self.unacked.saturating_add(self.link.acks_owed) >= u32::from(self.config.window) {
                            return Err(Error::Protocol); // the client overran our window
                        }
                        let (inline, body) = message::decode_subject::<RegisterBody<'a>>(tag, payload)?;
                        let slot = tag.checked_sub(1).and_then(|s| usize::try_from(s).ok());
                        let known = |types: &heapless::Vec<Option<EventType>, ALIASES>| {
                            slot.and_then(|s| types.get(s)).is_some_and(Option::is_some)
                        };
                        if inline.is_none() && !known(&self.client_types) {
                            return Err(Error::Protocol); // an alias the client never declared
                        }
                        let seq = self.next_seq;
                        self.next_seq = self.next_seq.wrapping_add(1);
                        self.unacked += 1;
                        self.stats.registered += 1;
                        if self.config.auto_ack {
                            self.acknowledge(1);
                        }
                        let declared = slot.and_then(|s| self.client_types.get(s)).and_then(Option::as_ref);
                        let event_type = inline.or(declared.map(EventType::as_ref)).unwrap_or(EventTypeRef::EMPTY);
                        let event = RegisterEventRef {
                            event_type,
                            source_timestamp: body.source_timestamp,
                            payload: body.payload,
                        };
                        Ok(Some(ServerEvent::Register { seq, event }))
                    }
                    MessageKind::Subscribe => {
                        let subscriptions: TypeList<'a> = message::decode(payload)?;
                        Ok(Some(ServerEvent::Subscribe { from, subscriptions }))
                    }
                    MessageKind::RegisterRequest => {
                        Ok(Some(ServerEvent::RegisterRequest { from, events: message::decode(payload)? }))
                    }
                    MessageKind::Query => Ok(Some(ServerEvent::Query { from, params: message::decode(payload)? })),
                    _ => Err(Error::Protocol),
                }
            }
        }
    }

    /// Runs timers; call until it returns `None`.
    pub fn poll(&mut self, now: Instant) -> Option<TimerEvent> {
        if let Some(pending) = self.link.poll(now) {
            return Some(TimerEvent::RequestFailed { id: pending.id, error: RequestError::TimedOut });
        }
        self.link.take_end().map(TimerEvent::LinkEnded)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.link.poll_timeout()
    }

    /// Writes acks, pongs, refusals, keepalive pings and the close handshake, as much as fits.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        if self.state != State::Open {
            // No keepalive ping before an init opened the link. A new client would not answer it.
            // A client left on a link this server forgot (a serial line after a bad frame) would
            // answer it, and so keep itself and this server waiting for each other for good.
            self.link.forgo_ping();
        }
        let result = self
            .link
            .transmit_owed(now, &mut self.next_tag, out)
            .and_then(|()| self.link.transmit_close(out, self.state != State::AwaitInit));
        match result {
            Err(e) if e.is_buffer_full() => Ok(()),
            other => other,
        }
    }
}
