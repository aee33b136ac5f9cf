//! The client machine: a durable [`Session`] plus, while a link is up, a [`Connection`].

use crate::model::{
    EventId, EventPayloadRef, EventRef, EventType, EventTypeRef, QueryParams, Status, Timestamp, TypeListBuf,
};
use crate::time::{Duration, Instant};
use crate::wire::{FrameWriter, PacketRepr};

use super::link::{Link, Received};
use super::message::{
    self, Accepted, INLINE_TYPE, InitRequest, InitResponse, Limits, MessageKind, NotifyBody, PROTOCOL_VERSION,
    RegisterBody, RegisterList,
};
use super::outbox::{Outbox, OutboxStorage};
use super::requests::{Pending, RequestId, RequestKind};
use super::{Error, Incoming, LinkEnd, Reply, RequestError, TimerEvent};

/// How a client presents itself and paces a link.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig<'a> {
    pub client_name: &'a str,
    /// Sent in `Init` (a token), or replaced by the answer to a challenge.
    pub credential: Option<&'a [u8]>,
    /// Receive only events registered by this server.
    pub server_id: Option<u64>,
    /// Receive events only once the server has stored them durably.
    pub persisted: bool,
    /// Ping after this long without receiving; give up after twice as long. Zero turns it off.
    pub keepalive: Duration,
    pub request_timeout: Duration,
    /// Notifications the server may send ahead of our acks.
    pub window: u16,
    /// Largest packet body we can receive: the driver's receive buffer less the framing's
    /// overhead (stream: the length prefix, 3 bytes below 2 MiB; serial: `body + 3` plus one
    /// COBS byte per 254, plus the delimiter). The default, 1000, fits a 1 KiB buffer either way.
    pub max_packet: u32,
    /// Hold the ack of each delivered notification until [`Client::release`]: an application
    /// that queues events acknowledges only what it took, so a slow reader holds the server back
    /// through the window while the link still answers pings. Off by default: delivered is taken.
    pub hold_acks: bool,
}

impl<'a> ClientConfig<'a> {
    pub const fn new(client_name: &'a str) -> Self {
        ClientConfig {
            client_name,
            credential: None,
            server_id: None,
            persisted: false,
            keepalive: Duration::from_secs(20),
            request_timeout: Duration::from_secs(10),
            window: 16,
            max_packet: 1000,
            hold_acks: false,
        }
    }
}

/// What a client tells its application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ClientEvent<'a> {
    /// The server accepted the init. `resumed` says it knew our session, so nothing
    /// acknowledged before is sent again. Every registration below `registered_below` is
    /// registered (some may have been settled by this init, their acks lost with the old link).
    Connected {
        resumed: bool,
        status: Status,
        registered_below: u32,
    },
    /// The server wants proof of the credential over `nonce`: call [`Client::answer_challenge`].
    Challenge {
        nonce: &'a [u8],
    },
    /// The server refused the init; the link closes.
    Refused {
        reason: &'a str,
    },
    Status(Status),
    /// A notified event matching our subscriptions.
    Event(EventRef<'a>),
    /// Every registration with a sequence number below `below_seq` is registered.
    Registered {
        below_seq: u32,
    },
    Response {
        id: RequestId,
        reply: Reply<'a>,
    },
    RequestFailed {
        id: RequestId,
        error: RequestError<'a>,
    },
    /// The server sent an application request; answer with `respond` or `refuse`.
    Request {
        from: Incoming,
        rq_type: u64,
        flags: u64,
        payload: &'a [u8],
    },
    /// The server took our subscription list as it was when sent (a change made while it was
    /// in flight goes in the next one).
    Subscribed,
    /// The server refused our subscription list and keeps the previous one.
    SubscriptionRefused {
        reason: &'a str,
    },
    /// The server will not store the registration with sequence number `seq`; it leaves the
    /// outbox with the ack that follows, like a stored one.
    RegistrationRefused {
        seq: u32,
        reason: &'a str,
    },
    /// The server says why it is closing the link; the link ends soon after.
    Closing {
        reason: &'a str,
    },
    /// The link is over: drop the transport and call [`Client::link_down`].
    LinkEnded(LinkEnd),
}

/// Counters a client keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientStats {
    pub events: u64,
    /// Notifications dropped as replays of events already delivered.
    pub duplicates: u64,
    /// Notifications dropped because their type could not be held (alias unknown or too long).
    pub undeliverable: u64,
    pub registered: u64,
    pub links: u64,
    /// Packets of the current link taken but not acted on: stale ones from an earlier link,
    /// responses to unknown tags, unknown one-way kinds, requests beyond the answer queue.
    pub dropped: u32,
}

/// State that outlives links: the outbox (in storage `O`), declared types, subscriptions, and
/// the session id.
#[derive(Debug)]
pub struct Session<O: OutboxStorage, const ALIASES: usize, const SUBS: usize> {
    id: Option<u64>,
    outbox: Outbox<O>,
    /// Types we register, alias = index + 1, declared again on each link.
    types: heapless::Vec<EventType, ALIASES>,
    subscriptions: TypeListBuf<SUBS>,
    next_tag: u64,
    /// The newest event delivered, to drop notifications replayed after a reconnect.
    last_delivered: Option<EventId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SendInit,
    AwaitInit,
    Challenged,
    Open,
}

/// State of one link.
#[derive(Debug)]
pub struct Connection<const INFLIGHT: usize, const ALIASES: usize> {
    link: Link<INFLIGHT>,
    state: State,
    accepted: Option<Accepted>,
    /// Types the server declared, alias = index + 1; `None` where one did not fit.
    peer_types: heapless::Vec<Option<EventType>, ALIASES>,
    /// How many of the session's types are declared on this link.
    declared: usize,
    subscriptions_dirty: bool,
    last_notified: Option<EventId>,
    proof: Option<heapless::Vec<u8, 64>>,
    /// Delivered notifications whose acks wait for [`Client::release`] (`hold_acks`).
    acks_held: u32,
}

/// The client machine. Capacities: the outbox of unacknowledged registrations is the caller's
/// storage `O` (1 KiB inline by default; see [`OutboxStorage`]), `INFLIGHT` requests awaiting
/// answers, `ALIASES` event types each way, `SUBS` bytes of subscriptions.
#[derive(Debug)]
pub struct Client<
    'c,
    O: OutboxStorage = [u8; 1024],
    const INFLIGHT: usize = 4,
    const ALIASES: usize = 8,
    const SUBS: usize = 128,
> {
    config: ClientConfig<'c>,
    session: Session<O, ALIASES, SUBS>,
    conn: Option<Connection<INFLIGHT, ALIASES>>,
    /// Requests of a dropped link, reported one by one by `poll`.
    failing: heapless::Vec<RequestId, INFLIGHT>,
    status: Status,
    stats: ClientStats,
}

fn reason(payload: &[u8]) -> &str {
    core::str::from_utf8(payload).unwrap_or("(reason is not UTF-8)")
}

impl<'c, O: OutboxStorage, const INFLIGHT: usize, const ALIASES: usize, const SUBS: usize>
    Client<'c, O, INFLIGHT, ALIASES, SUBS>
{
    /// A client whose outbox lives in `outbox`: its length is the outbox's capacity in bytes,
    /// its contents do not matter.
    pub fn new(config: ClientConfig<'c>, outbox: O) -> Self {
        Client {
            config,
            session: Session {
                id: None,
                outbox: Outbox::new(outbox),
                types: heapless::Vec::new(),
                subscriptions: TypeListBuf::new(),
                next_tag: crate::wire::packet::FIRST_REQUEST_TAG,
                last_delivered: None,
            },
            conn: None,
            failing: heapless::Vec::new(),
            status: Status::Standby,
            stats: ClientStats::default(),
        }
    }

    pub fn config(&self) -> &ClientConfig<'c> {
        &self.config
    }

    /// A transport is up: start a link (init first).
    pub fn link_up(&mut self, now: Instant) {
        self.link_down();
        let link = Link::new(now, self.config.keepalive, self.config.request_timeout);
        self.conn = Some(Connection {
            link,
            state: State::SendInit,
            accepted: None,
            peer_types: heapless::Vec::new(),
            declared: 0,
            subscriptions_dirty: false,
            last_notified: None,
            proof: None,
            acks_held: 0,
        });
        self.session.outbox.rewind();
        self.stats.links += 1;
    }

    /// The transport is gone: its requests fail, the session stays.
    pub fn link_down(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            while let Some(pending) = conn.link.requests.take_any() {
                if !matches!(pending.kind, RequestKind::Init | RequestKind::Subscribe)
                    && !conn.link.is_own_ping(pending.id)
                {
                    let _ = self.failing.push(pending.id);
                }
            }
        }
        self.session.outbox.rewind();
    }

    /// True once the server accepted the init on the current link.
    pub fn is_connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.state == State::Open && !c.link.is_closing() && c.link.ended.is_none())
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn session_id(&self) -> Option<u64> {
        self.session.id
    }

    /// Registrations not yet acknowledged.
    pub fn outbox_len(&self) -> u32 {
        self.session.outbox.len()
    }

    /// Bytes of the outbox in use (of [`Client::outbox_capacity`]).
    pub fn outbox_bytes(&self) -> usize {
        self.session.outbox.bytes_used()
    }

    /// Bytes the outbox holds: the length of the storage given to [`Client::new`].
    pub fn outbox_capacity(&self) -> usize {
        self.session.outbox.capacity()
    }

    /// Requests awaiting answers on the current link.
    pub fn requests_in_flight(&self) -> usize {
        self.conn.as_ref().map_or(0, |c| c.link.requests.len())
    }

    /// Sequence number the next registration gets.
    pub fn next_seq(&self) -> u32 {
        self.session.outbox.next_seq()
    }

    pub fn rtt(&self) -> Option<Duration> {
        self.conn.as_ref().and_then(|c| c.link.rtt)
    }

    /// The largest packet the server receives, once it has accepted the init on this link:
    /// a request or registration over it is [`Error::TooLarge`].
    pub fn server_max_packet(&self) -> Option<u32> {
        self.conn.as_ref().and_then(|c| c.accepted).map(|a| a.limits.max_packet)
    }

    pub fn stats(&self) -> ClientStats {
        ClientStats { dropped: self.conn.as_ref().map_or(0, |c| c.link.dropped), ..self.stats }
    }

    pub fn subscriptions(&self) -> crate::model::TypeList<'_> {
        self.session.subscriptions.list()
    }

    /// Adds a subscription pattern; it is sent now if connected, and at every init after.
    pub fn subscribe(&mut self, pattern: EventTypeRef<'_>) -> Result<(), Error> {
        pattern.check_pattern()?;
        if !self.session.subscriptions.contains(pattern) {
            self.session.subscriptions.push(pattern)?;
            self.mark_subscriptions_dirty();
        }
        Ok(())
    }

    /// Acknowledges `count` delivered notifications of the current link whose acks were held
    /// (`hold_acks`), at most as many as are held; sent with the next transmit. Returns how many
    /// were released. Held acks end with their link: release nothing for an earlier link's events.
    pub fn release(&mut self, count: u32) -> u32 {
        let Some(conn) = self.conn.as_mut() else { return 0 };
        let released = count.min(conn.acks_held);
        conn.acks_held -= released;
        conn.link.acks_owed = conn.link.acks_owed.saturating_add(released);
        released
    }

    /// Removes a subscription pattern; returns whether it was there.
    pub fn unsubscribe(&mut self, pattern: EventTypeRef<'_>) -> bool {
        let removed = self.session.subscriptions.remove(pattern) > 0;
        if removed {
            self.mark_subscriptions_dirty();
        }
        removed
    }

    fn mark_subscriptions_dirty(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.subscriptions_dirty = true;
        }
    }

    /// Queues an event for registration, online or not; returns its sequence number. It stays in
    /// the outbox until the server acknowledges it, across reconnects. A full outbox is
    /// [`Error::OutboxFull`] and changes nothing; so is an event larger than the connected
    /// server receives, [`Error::TooLarge`] (checked as if its type went inline). Offline nothing
    /// is known of the next server's limit.
    pub fn register(
        &mut self,
        event_type: EventTypeRef<'_>,
        source_timestamp: Option<Timestamp>,
        payload: Option<EventPayloadRef<'_>>,
    ) -> Result<u32, Error> {
        // A new type gets the next alias, but only once the entry is in the outbox: a full
        // outbox changes nothing.
        let types = &self.session.types;
        let (alias, new_type) = match types.iter().position(|t| *t == event_type) {
            Some(at) => (at + 1, None),
            None => match event_type.to_owned::<{ crate::model::TYPE_BYTES }>() {
                Ok(owned) if !types.is_full() => (types.len() + 1, Some(owned)),
                _ => (INLINE_TYPE as usize, None),
            },
        };
        let body = RegisterBody { source_timestamp, payload };
        let alias = u16::try_from(alias).unwrap_or(0);
        let inline = if alias == 0 { Some(event_type) } else { None };
        let inline_len = match inline {
            Some(ty) => postcard::experimental::serialized_size(&ty).map_err(|_| Error::Encode)?,
            None => 0,
        };
        let body_len = postcard::experimental::serialized_size(&body).map_err(|_| Error::Encode)?;
        if let Some(max_packet) = self.server_max_packet() {
            let type_len = postcard::experimental::serialized_size(&event_type).map_err(|_| Error::Encode)?;
            message::check_message_fits(max_packet, INLINE_TYPE, MessageKind::Register, type_len + body_len)?;
        }
        let seq = self.session.outbox.push(alias, inline_len + body_len, |buf| {
            let (type_part, body_part) = buf.split_at_mut(inline_len.min(buf.len()));
            if let Some(ty) = inline {
                message::encode_into(&ty, type_part)?;
            }
            message::encode_into(&body, body_part).map(|_| ())
        })?;
        if let Some(owned) = new_type {
            self.session.types.push(owned).map_err(|_| Error::Protocol)?;
        }
        Ok(seq)
    }

    fn open_conn(&mut self) -> Result<&mut Connection<INFLIGHT, ALIASES>, Error> {
        match self.conn.as_mut() {
            Some(conn) if conn.state == State::Open => Ok(conn),
            _ => Err(Error::NotConnected),
        }
    }

    fn take_tag(&mut self) -> u64 {
        let tag = self.session.next_tag;
        self.session.next_tag += 1;
        tag
    }

    /// Registers events and asks for them back with ids (hat's register with response). Not kept
    /// in the outbox: if the link drops first, the request fails with `Disconnected`.
    pub fn register_with_response(
        &mut self,
        now: Instant,
        events: RegisterList<'_>,
        out: &mut FrameWriter<'_>,
    ) -> Result<RequestId, Error> {
        let tag = self.session.next_tag;
        let conn = self.open_conn()?;
        let id = conn.link.send_request(
            now,
            tag,
            RequestKind::RegisterRequest,
            MessageKind::RegisterRequest,
            &events,
            out,
        )?;
        self.take_tag();
        Ok(id)
    }

    pub fn query(
        &mut self,
        now: Instant,
        params: &QueryParams<'_>,
        out: &mut FrameWriter<'_>,
    ) -> Result<RequestId, Error> {
        let tag = self.session.next_tag;
        let conn = self.open_conn()?;
        let id = conn.link.send_request(now, tag, RequestKind::Query, MessageKind::Query, params, out)?;
        self.take_tag();
        Ok(id)
    }

    /// Measures the round trip; the answer is a [`Reply::Pong`].
    pub fn ping(&mut self, now: Instant, out: &mut FrameWriter<'_>) -> Result<RequestId, Error> {
        let tag = self.session.next_tag;
        let conn = self.open_conn()?;
        let id = conn.link.send_request(now, tag, RequestKind::Ping, MessageKind::Ping, &(), out)?;
        self.take_tag();
        Ok(id)
    }

    /// Sends an application request (channel 1) of user type `rq_type`.
    pub fn request(
        &mut self,
        now: Instant,
        rq_type: u64,
        flags: u64,
        payload: &[u8],
        out: &mut FrameWriter<'_>,
    ) -> Result<RequestId, Error> {
        let tag = self.session.next_tag;
        let conn = self.open_conn()?;
        let id = conn.link.send_app_request(now, tag, rq_type, flags, payload, out)?;
        self.take_tag();
        Ok(id)
    }

    /// Answers an application request of the server.
    pub fn respond(
        &mut self,
        from: Incoming,
        flags: u64,
        payload: &[u8],
        out: &mut FrameWriter<'_>,
    ) -> Result<(), Error> {
        self.check_may_send()?;
        message::push_raw_response(out, from.channel, from.tag, true, flags, payload)
    }

    /// Refuses an application request of the server with a reason.
    pub fn refuse(&mut self, from: Incoming, reason: &str, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        self.check_may_send()?;
        message::push_failure(out, from.channel, from.tag, reason)
    }

    /// Answers go only on a link whose EOF is not yet out.
    fn check_may_send(&self) -> Result<(), Error> {
        self.conn.as_ref().ok_or(Error::NotConnected)?.link.check_may_send()
    }

    /// Answers a [`ClientEvent::Challenge`]: `proof` goes in the next init instead of the credential.
    pub fn answer_challenge(&mut self, proof: &[u8]) -> Result<(), Error> {
        let conn = self.conn.as_mut().ok_or(Error::NotConnected)?;
        if conn.state != State::Challenged {
            return Err(Error::Protocol);
        }
        conn.proof = Some(heapless::Vec::from_slice(proof).map_err(|_| Error::Encode)?);
        conn.state = State::SendInit;
        Ok(())
    }

    /// Starts a graceful close: ERQ, then EOF, then wait for the server's EOF.
    pub fn close(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.link.begin_close();
        }
    }

    /// Takes one received packet body.
    // Out of line: inlined into a device's link loop it made the firmware larger
    // (docs/FOOTPRINT.md, "What was tried").
    #[inline(never)]
    pub fn handle<'a>(&'a mut self, now: Instant, body: &'a [u8]) -> Result<Option<ClientEvent<'a>>, Error> {
        let repr = PacketRepr::parse_bytes(body)?;
        let conn = self.conn.as_mut().ok_or(Error::NotConnected)?;
        let received = conn.link.receive(now, repr, conn.state == State::Open);
        if conn.state != State::Open
            && matches!(received, Received::Session { .. } | Received::Ack(_) | Received::App { .. })
        {
            // Left over from an earlier link (a serial line carries on): only the init counts now.
            conn.link.dropped = conn.link.dropped.saturating_add(1);
            return Ok(None);
        }
        match received {
            Received::Nothing | Received::Eof => Ok(None),
            Received::Ack(count) => {
                if count > self.session.outbox.in_flight() {
                    return Err(Error::Protocol);
                }
                let below = self.session.outbox.first_seq().wrapping_add(count);
                self.stats.registered += u64::from(self.session.outbox.release_below(below));
                Ok(Some(ClientEvent::Registered { below_seq: below }))
            }
            Received::App { from, rq_type, flags, payload } => {
                Ok(Some(ClientEvent::Request { from, rq_type, flags, payload }))
            }
            Received::Response { pending, ok, flags, payload } => self.on_response(pending, ok, flags, payload),
            Received::Session { kind: MessageKind::Status, payload, .. } => {
                self.status = message::decode(payload)?;
                Ok(Some(ClientEvent::Status(self.status)))
            }
            Received::Session { kind: MessageKind::Declare, tag, payload } => {
                let ty: EventTypeRef<'_> = message::decode(payload)?;
                let conn = self.conn.as_mut().ok_or(Error::NotConnected)?;
                let slot = usize::try_from(tag).ok().and_then(|a| a.checked_sub(1)).filter(|&a| a < ALIASES);
                let slot = slot.ok_or(Error::Protocol)?;
                while conn.peer_types.len() <= slot {
                    conn.peer_types.push(None).map_err(|_| Error::Protocol)?;
                }
                if let Some(entry) = conn.peer_types.get_mut(slot) {
                    *entry = ty.to_owned().ok();
                }
                Ok(None)
            }
            Received::Session { kind: MessageKind::Notify, tag, payload } => self.on_notify(tag, payload),
            Received::Session { kind: MessageKind::Closing, payload, .. } => {
                Ok(Some(ClientEvent::Closing { reason: message::decode(payload)? }))
            }
            Received::Session { kind: MessageKind::Refused, tag, payload } => {
                let seq = u32::try_from(tag).map_err(|_| Error::Protocol)?;
                Ok(Some(ClientEvent::RegistrationRefused { seq, reason: message::decode(payload)? }))
            }
            Received::Session { .. } => Err(Error::Protocol),
        }
    }

    fn on_notify<'a>(&'a mut self, tag: u64, payload: &'a [u8]) -> Result<Option<ClientEvent<'a>>, Error> {
        let conn = self.conn.as_mut().ok_or(Error::NotConnected)?;
        // Every notification returns its window slot, delivered or not; a delivered one later,
        // on release, when the application holds acks.
        conn.link.acks_owed = conn.link.acks_owed.saturating_add(1);
        let (inline, body) = message::decode_subject::<NotifyBody<'a>>(tag, payload)?;
        let id = body.id.resolve(conn.last_notified).ok_or(Error::Protocol)?;
        conn.last_notified = Some(id);
        let duplicate = self
            .session
            .last_delivered
            .is_some_and(|last| last.server == id.server && last.session == id.session && id.instance <= last.instance);
        if duplicate {
            self.stats.duplicates += 1;
            return Ok(None);
        }
        let event_type = match inline {
            Some(ty) => ty,
            None => {
                let slot =
                    tag.checked_sub(1).and_then(|s| usize::try_from(s).ok()).and_then(|s| conn.peer_types.get(s));
                match slot.and_then(Option::as_ref) {
                    Some(ty) => ty.as_ref(),
                    None => {
                        self.stats.undeliverable += 1;
                        return Ok(None);
                    }
                }
            }
        };
        self.session.last_delivered = Some(id);
        self.stats.events += 1;
        if self.config.hold_acks {
            conn.link.acks_owed = conn.link.acks_owed.saturating_sub(1);
            conn.acks_held = conn.acks_held.saturating_add(1);
        }
        Ok(Some(ClientEvent::Event(EventRef {
            id,
            event_type,
            timestamp: body.timestamp,
            source_timestamp: body.source_timestamp,
            payload: body.payload,
        })))
    }

    fn on_response<'a>(
        &'a mut self,
        pending: Pending,
        ok: bool,
        flags: u64,
        payload: &'a [u8],
    ) -> Result<Option<ClientEvent<'a>>, Error> {
        let id = pending.id;
        let failed =
            |payload| Ok(Some(ClientEvent::RequestFailed { id, error: RequestError::Refused(reason(payload)) }));
        match pending.kind {
            RequestKind::Init => {
                let conn = self.conn.as_mut().ok_or(Error::NotConnected)?;
                if !ok {
                    conn.link.begin_close();
                    return Ok(Some(ClientEvent::Refused { reason: reason(payload) }));
                }
                match message::decode::<InitResponse<'a>>(payload)? {
                    InitResponse::Challenge(nonce) => {
                        conn.state = State::Challenged;
                        Ok(Some(ClientEvent::Challenge { nonce }))
                    }
                    InitResponse::Accepted(accepted) => {
                        if accepted.version != PROTOCOL_VERSION {
                            conn.link.begin_close();
                            return Ok(Some(ClientEvent::Refused { reason: "server speaks another protocol version" }));
                        }
                        let resumed = self.session.id == Some(accepted.session);
                        self.session.id = Some(accepted.session);
                        // Registered on an earlier link, their acks lost with it.
                        self.stats.registered += u64::from(self.session.outbox.release_below(accepted.next_seq));
                        self.session.outbox.rewind();
                        self.status = accepted.status;
                        conn.link.keepalive.set_interval(Duration::from_millis(u64::from(accepted.keepalive_ms)));
                        conn.link.peer_max_packet = accepted.limits.max_packet;
                        conn.accepted = Some(accepted);
                        conn.state = State::Open;
                        let registered_below = self.session.outbox.first_seq();
                        Ok(Some(ClientEvent::Connected { resumed, status: accepted.status, registered_below }))
                    }
                }
            }
            RequestKind::Subscribe if !ok => Ok(Some(ClientEvent::SubscriptionRefused { reason: reason(payload) })),
            RequestKind::Subscribe => Ok(Some(ClientEvent::Subscribed)),
            _ if !ok => failed(payload),
            RequestKind::RegisterRequest => {
                Ok(Some(ClientEvent::Response { id, reply: Reply::Registered(message::decode(payload)?) }))
            }
            RequestKind::Query => {
                Ok(Some(ClientEvent::Response { id, reply: Reply::Query(message::decode(payload)?) }))
            }
            RequestKind::Ping => {
                let rtt = self.conn.as_ref().and_then(|c| c.link.rtt).unwrap_or(Duration::ZERO);
                Ok(Some(ClientEvent::Response { id, reply: Reply::Pong { rtt } }))
            }
            RequestKind::App => Ok(Some(ClientEvent::Response { id, reply: Reply::App { flags, payload } })),
        }
    }

    /// Runs timers and reports what happened without a packet: failed and timed-out requests,
    /// the end of the link. Call until it returns `None`.
    pub fn poll(&mut self, now: Instant) -> Option<TimerEvent> {
        if let Some(id) = self.failing.pop() {
            return Some(TimerEvent::RequestFailed { id, error: RequestError::Disconnected });
        }
        let conn = self.conn.as_mut()?;
        if let Some(pending) = conn.link.poll(now) {
            return match pending.kind {
                RequestKind::Init => {
                    conn.link.ended = Some(LinkEnd::TimedOut);
                    self.poll(now)
                }
                RequestKind::Subscribe => {
                    conn.subscriptions_dirty = true;
                    self.poll(now)
                }
                _ => Some(TimerEvent::RequestFailed { id: pending.id, error: RequestError::TimedOut }),
            };
        }
        conn.link.take_end().map(TimerEvent::LinkEnded)
    }

    /// When `poll` has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.failing.is_empty() {
            return Some(Instant::ZERO);
        }
        self.conn.as_ref()?.link.poll_timeout()
    }

    /// Writes what the machine owes the server (init, declarations, subscriptions, outbox,
    /// acks, pongs, keepalive, close) into `out`, as much as fits.
    // Out of line: inlined into a device's link loop it made the firmware larger
    // (docs/FOOTPRINT.md, "What was tried").
    #[inline(never)]
    pub fn poll_transmit(&mut self, now: Instant, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        match self.transmit(now, out) {
            Err(e) if e.is_buffer_full() => Ok(()),
            other => other,
        }
    }

    fn transmit(&mut self, now: Instant, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        let session = &mut self.session;
        if conn.link.ended.is_some() {
            return Ok(());
        }
        match conn.state {
            State::SendInit if !conn.link.is_closing() => {
                let init = InitRequest {
                    version: PROTOCOL_VERSION,
                    capabilities: message::CAPABILITIES,
                    client_name: self.config.client_name,
                    credential: conn.proof.as_deref().or(self.config.credential),
                    subscriptions: session.subscriptions.list(),
                    server_id: self.config.server_id,
                    persisted: self.config.persisted,
                    session: session.id,
                    first_seq: session.outbox.first_seq(),
                    limits: Limits {
                        window: self.config.window,
                        aliases: u16::try_from(ALIASES).unwrap_or(u16::MAX),
                        max_packet: self.config.max_packet,
                    },
                    keepalive_ms: u32::try_from(self.config.keepalive.as_millis()).unwrap_or(u32::MAX),
                };
                conn.link.send_request_unchecked(
                    now,
                    session.next_tag,
                    RequestKind::Init,
                    MessageKind::Init,
                    &init,
                    out,
                )?;
                session.next_tag += 1;
                conn.state = State::AwaitInit;
                conn.subscriptions_dirty = false;
            }
            State::Open => {
                conn.link.transmit_owed(now, &mut session.next_tag, out)?;
                if !conn.link.is_closing() {
                    transmit_session(conn, session, now, out)?;
                }
            }
            _ => {}
        }
        conn.link.transmit_close(out, conn.state == State::Open)
    }
}

/// Declarations, the subscription list, and the outbox, within the server's limits.
fn transmit_session<const INFLIGHT: usize, const ALIASES: usize, O: OutboxStorage, const SUBS: usize>(
    conn: &mut Connection<INFLIGHT, ALIASES>,
    session: &mut Session<O, ALIASES, SUBS>,
    now: Instant,
    out: &mut FrameWriter<'_>,
) -> Result<(), Error> {
    let limits = conn.accepted.map(|a| a.limits).ok_or(Error::NotConnected)?;
    let alias_limit = usize::from(limits.aliases).min(session.types.len());
    while conn.declared < alias_limit {
        let ty = session.types.get(conn.declared).ok_or(Error::Protocol)?;
        message::push_request(out, conn.declared as u64 + 1, MessageKind::Declare, &ty.as_ref())?;
        conn.declared += 1;
    }
    let subscribe_in_flight = conn.link.requests.contains_kind(RequestKind::Subscribe);
    if conn.subscriptions_dirty && !subscribe_in_flight && !conn.link.requests.is_full() {
        let list = session.subscriptions.list();
        let (tag, kind) = (session.next_tag, RequestKind::Subscribe);
        conn.link.send_request_unchecked(now, tag, kind, MessageKind::Subscribe, &list, out)?;
        session.next_tag += 1;
        conn.subscriptions_dirty = false;
    }
    while session.outbox.in_flight() < u32::from(limits.window) {
        let Some((_seq, alias, body)) = session.outbox.next_unsent() else { break };
        let alias_usize = usize::from(alias);
        if alias == 0 || alias_usize <= conn.declared {
            message::push_encoded(out, MessageKind::Register, u64::from(alias), None, body)?;
        } else {
            // The server takes fewer aliases than we have: send this type inline.
            let ty = session.types.get(alias_usize - 1).ok_or(Error::Protocol)?;
            message::push_encoded(out, MessageKind::Register, INLINE_TYPE, Some(ty.as_ref()), body)?;
        }
        session.outbox.mark_sent();
    }
    Ok(())
}
