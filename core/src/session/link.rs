//! What both machines do the same way on a link: match responses to in-flight requests, answer
//! pings, refuse what they do not know, keep alive, acknowledge, and close with ERQ then EOF.

use crate::time::{Duration, Instant};
use crate::wire::{FrameWriter, PacketKind, PacketRepr};

use super::keepalive::{Keepalive, KeepaliveAction};
use super::message::{self, CHANNEL_APP, CHANNEL_SESSION, FLAG_ONE_WAY, MessageKind};
use super::requests::{Pending, RequestId, RequestKind, Requests};
use super::{Error, Incoming, LinkEnd};

/// Answers owed to the peer beyond what the application sends itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    Pong(u64),
    UnknownKind(u64, u64),
    UnknownChannel(u64, u64),
    Refused(u64, u64, &'static str),
}

/// How far the close handshake has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    Open,
    /// ERQ and EOF are to be sent.
    Closing,
    /// ERQ is out; EOF is to be sent.
    ErqSent,
    /// Our EOF is out; waiting for the peer's.
    EofSent,
}

/// A received packet, after the link took what was its own.
#[derive(Debug)]
pub(crate) enum Received<'a> {
    /// Nothing for the machine (a pong, an ERQ, a stale response).
    Nothing,
    /// A response to a request of ours.
    Response { pending: Pending, ok: bool, flags: u64, payload: &'a [u8] },
    /// The peer acknowledged `count` of our sequenced messages.
    Ack(u32),
    /// A session message for the machine.
    Session { kind: MessageKind, tag: u64, payload: &'a [u8] },
    /// An application request.
    App { from: Incoming, rq_type: u64, flags: u64, payload: &'a [u8] },
    /// The peer sent EOF.
    Eof,
}

#[derive(Debug)]
pub(crate) struct Link<const INFLIGHT: usize> {
    pub requests: Requests<INFLIGHT>,
    pub keepalive: Keepalive,
    pub request_timeout: Duration,
    owed: heapless::Deque<Owed, 4>,
    ping_due: bool,
    /// Sequenced messages of the peer taken and not yet acknowledged.
    pub acks_owed: u32,
    close: Close,
    peer_erq: bool,
    peer_eof: bool,
    pub ended: Option<LinkEnd>,
    end_reported: bool,
    /// The keepalive ping in flight, answered inside the link.
    own_ping: Option<RequestId>,
    /// Round-trip time of the last answered ping.
    pub rtt: Option<Duration>,
    /// Requests dropped because `owed` was full, responses to unknown tags, unknown one-way kinds.
    pub dropped: u32,
    /// The largest packet the peer said it receives (its init or accept); 0 until it has said.
    pub peer_max_packet: u32,
}

impl<const INFLIGHT: usize> Link<INFLIGHT> {
    pub fn new(now: Instant, keepalive: Duration, request_timeout: Duration) -> Self {
        Link {
            requests: Requests::new(),
            keepalive: Keepalive::new(keepalive, now),
            request_timeout,
            owed: heapless::Deque::new(),
            ping_due: false,
            acks_owed: 0,
            close: Close::Open,
            peer_erq: false,
            peer_eof: false,
            ended: None,
            end_reported: false,
            own_ping: None,
            rtt: None,
            dropped: 0,
            peer_max_packet: 0,
        }
    }

    pub fn is_closing(&self) -> bool {
        self.close != Close::Open
    }

    pub fn is_own_ping(&self, id: RequestId) -> bool {
        self.own_ping == Some(id)
    }

    pub fn begin_close(&mut self) {
        if self.close == Close::Open {
            self.close = Close::Closing;
        }
    }

    /// Drops a keepalive ping that is due, if any. The keepalive still ends the link after twice
    /// its interval with nothing received.
    pub fn forgo_ping(&mut self) {
        self.ping_due = false;
    }

    /// Refuses a request with a fixed reason, from the next transmit on.
    pub fn refuse(&mut self, from: Incoming, reason: &'static str) {
        self.owe(Owed::Refused(from.channel, from.tag, reason));
    }

    fn owe(&mut self, owed: Owed) {
        if self.owed.push_back(owed).is_err() {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// Takes one received packet. Before the link is established (`established` false) and while
    /// not closing, ERQ and EOF are leftovers of an earlier link on the same line and are ignored,
    /// and pings and acks are not answered but passed on: the machine decides.
    pub fn receive<'a>(&mut self, now: Instant, repr: PacketRepr<'a>, established: bool) -> Received<'a> {
        self.keepalive.received(now);
        if !established && !self.is_closing() && repr.is_end_marker() {
            self.dropped = self.dropped.saturating_add(1);
            return Received::Nothing;
        }
        match repr.kind {
            PacketKind::EndOfFile => {
                self.peer_eof = true;
                if self.close == Close::EofSent {
                    // Both EOFs are out: nothing after this belongs to this link.
                    self.ended = self.ended.or(Some(LinkEnd::Closed));
                }
                self.begin_close();
                Received::Eof
            }
            PacketKind::EndOfRequests => {
                self.peer_erq = true;
                Received::Nothing
            }
            PacketKind::Response { ok, flags } => match self.requests.take(RequestId(repr.tag)) {
                Some(pending) if pending.kind == RequestKind::Ping => {
                    self.rtt = Some(now - pending.sent_at);
                    if self.own_ping == Some(pending.id) {
                        self.own_ping = None;
                        return Received::Nothing;
                    }
                    Received::Response { pending, ok, flags, payload: repr.payload }
                }
                Some(pending) => Received::Response { pending, ok, flags, payload: repr.payload },
                None => {
                    self.dropped = self.dropped.saturating_add(1);
                    Received::Nothing
                }
            },
            PacketKind::Request { rq_type, flags } => {
                let one_way = repr.channel == CHANNEL_SESSION && flags & FLAG_ONE_WAY != 0;
                if self.peer_erq && !one_way && established {
                    // The peer said it would send no more requests; cs.packetstream refuses them too.
                    self.owe(Owed::Refused(repr.channel, repr.tag, "requests no longer allowed"));
                    return Received::Nothing;
                }
                match (repr.channel, MessageKind::from_rq_type(rq_type)) {
                    (CHANNEL_APP, _) => Received::App {
                        from: Incoming { channel: repr.channel, tag: repr.tag },
                        rq_type,
                        flags,
                        payload: repr.payload,
                    },
                    (CHANNEL_SESSION, Some(MessageKind::Ping)) if established => {
                        self.owe(Owed::Pong(repr.tag));
                        Received::Nothing
                    }
                    (CHANNEL_SESSION, Some(MessageKind::Ack)) if established => {
                        Received::Ack(u32::try_from(repr.tag).unwrap_or(u32::MAX))
                    }
                    // Before the link is established the machine sees everything, to refuse it.
                    (CHANNEL_SESSION, Some(kind)) if kind.is_one_way() == one_way || !established => {
                        Received::Session { kind, tag: repr.tag, payload: repr.payload }
                    }
                    // Unknown things before the link is established are leftovers: not answered.
                    (CHANNEL_SESSION, _) if one_way || !established => {
                        self.dropped = self.dropped.saturating_add(1);
                        Received::Nothing
                    }
                    (CHANNEL_SESSION, _) => {
                        self.owe(Owed::UnknownKind(repr.tag, rq_type));
                        Received::Nothing
                    }
                    (channel, _) if established => {
                        self.owe(Owed::UnknownChannel(channel, repr.tag));
                        Received::Nothing
                    }
                    _ => {
                        self.dropped = self.dropped.saturating_add(1);
                        Received::Nothing
                    }
                }
            }
        }
    }

    /// Sends a request of ours, recording it in flight; one over the peer's `max_packet` is
    /// [`Error::TooLarge`] and is not sent.
    pub fn send_request<T: serde::Serialize + ?Sized>(
        &mut self,
        now: Instant,
        tag: u64,
        kind: RequestKind,
        message: MessageKind,
        body: &T,
        out: &mut FrameWriter<'_>,
    ) -> Result<RequestId, Error> {
        let len = postcard::experimental::serialized_size(body).map_err(|_| Error::Encode)?;
        message::check_message_fits(self.peer_max_packet, tag, message, len)?;
        self.send_request_unchecked(now, tag, kind, message, body, out)
    }

    /// [`Link::send_request`] whatever its size: for what the machines send by themselves (the
    /// init, the keepalive ping, the subscription list, sent on every link until taken). Refused
    /// locally it would fail every transmit; a peer ends a link whose packet is too large for it.
    pub fn send_request_unchecked<T: serde::Serialize + ?Sized>(
        &mut self,
        now: Instant,
        tag: u64,
        kind: RequestKind,
        message: MessageKind,
        body: &T,
        out: &mut FrameWriter<'_>,
    ) -> Result<RequestId, Error> {
        self.check_can_request()?;
        message::push_request(out, tag, message, body)?;
        self.track(now, tag, kind)
    }

    /// Sends an application request on channel 1.
    #[allow(clippy::too_many_arguments)]
    pub fn send_app_request(
        &mut self,
        now: Instant,
        tag: u64,
        rq_type: u64,
        flags: u64,
        payload: &[u8],
        out: &mut FrameWriter<'_>,
    ) -> Result<RequestId, Error> {
        self.check_can_request()?;
        let packet = PacketRepr::request(CHANNEL_APP, tag, rq_type, flags, payload);
        message::check_fits(self.peer_max_packet, &packet, 0)?;
        out.push_repr(&packet)?;
        self.track(now, tag, RequestKind::App)
    }

    fn check_can_request(&self) -> Result<(), Error> {
        if self.is_closing() || self.ended.is_some() {
            Err(Error::Closed)
        } else if self.requests.is_full() {
            Err(Error::TooManyRequests)
        } else {
            Ok(())
        }
    }

    fn track(&mut self, now: Instant, tag: u64, kind: RequestKind) -> Result<RequestId, Error> {
        let id = RequestId(tag);
        let pending = Pending { id, kind, sent_at: now, deadline: now + self.request_timeout };
        self.requests.insert(pending).map_err(|_| Error::TooManyRequests)?;
        Ok(id)
    }

    /// Runs timers: returns a request that timed out, if any. The keepalive's own ping is not
    /// reported (the application never sent it); the keepalive ends the link instead.
    pub fn poll(&mut self, now: Instant) -> Option<Pending> {
        match self.keepalive.poll(now) {
            KeepaliveAction::Dead => self.ended = self.ended.or(Some(LinkEnd::TimedOut)),
            KeepaliveAction::Ping => self.ping_due = true,
            KeepaliveAction::Nothing => {}
        }
        while let Some(pending) = self.requests.take_expired(now) {
            if self.own_ping != Some(pending.id) {
                return Some(pending);
            }
            self.own_ping = None;
        }
        None
    }

    /// The link's end, the first time it is asked for after the link ended.
    pub fn take_end(&mut self) -> Option<LinkEnd> {
        let end = self.ended.filter(|_| !self.end_reported)?;
        self.end_reported = true;
        Some(end)
    }

    /// When `poll` has something to do: at once while an end is unreported, else the next
    /// keepalive or request deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended.is_some() && !self.end_reported {
            return Some(Instant::ZERO);
        }
        let keepalive = self.keepalive.poll_at();
        match (keepalive, self.requests.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Writes pongs, refusals, a keepalive ping (taking `ping_tag` if one goes) and acks.
    pub fn transmit_owed(&mut self, now: Instant, ping_tag: &mut u64, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        if self.close == Close::EofSent {
            // Nothing may follow our EOF; what we still owed goes with the link.
            self.owed.clear();
            self.acks_owed = 0;
            self.ping_due = false;
            return Ok(());
        }
        while let Some(&owed) = self.owed.front() {
            match owed {
                Owed::Pong(tag) => message::push_raw_response(out, CHANNEL_SESSION, tag, true, 0, &[])?,
                Owed::UnknownKind(tag, kind) => {
                    let mut reason = heapless::String::<40>::new();
                    let _ = core::fmt::write(&mut reason, format_args!("unknown message kind {kind}"));
                    message::push_failure(out, CHANNEL_SESSION, tag, &reason)?
                }
                Owed::UnknownChannel(channel, tag) => {
                    let mut reason = heapless::String::<40>::new();
                    let _ = core::fmt::write(&mut reason, format_args!("unknown channel {channel}"));
                    message::push_failure(out, channel, tag, &reason)?
                }
                Owed::Refused(channel, tag, reason) => message::push_failure(out, channel, tag, reason)?,
            }
            self.owed.pop_front();
        }
        // No keepalive ping on a link that has ended: `send_request` would refuse it as `Closed`
        // (a ping fell due while one of the application's was in flight; found by fuzzing).
        if self.ping_due
            && !self.is_closing()
            && self.ended.is_none()
            && !self.requests.contains_kind(RequestKind::Ping)
        {
            if self.requests.is_full() {
                self.ping_due = false; // requests in flight will show whether the peer lives
            } else {
                let id = self.send_request_unchecked(now, *ping_tag, RequestKind::Ping, MessageKind::Ping, &(), out)?;
                self.own_ping = Some(id);
                *ping_tag += 1;
                self.ping_due = false;
            }
        }
        if self.acks_owed > 0 {
            let kind = PacketKind::Request { rq_type: MessageKind::Ack as u64, flags: FLAG_ONE_WAY };
            out.push(CHANNEL_SESSION, u64::from(self.acks_owed), kind, |_| Ok::<usize, Error>(0))?;
            self.acks_owed = 0;
        }
        Ok(())
    }

    /// Fails once our EOF is out: nothing may follow it.
    pub fn check_may_send(&self) -> Result<(), Error> {
        if self.close == Close::EofSent { Err(Error::Closed) } else { Ok(()) }
    }

    /// Writes ERQ and EOF once closing, and marks the link closed once both EOFs are out, or
    /// once ours is, on a link that was never established (there is no peer state to wait for).
    pub fn transmit_close(&mut self, out: &mut FrameWriter<'_>, established: bool) -> Result<(), Error> {
        if self.close == Close::Closing {
            out.push_repr(&PacketRepr::ERQ)?;
            self.close = Close::ErqSent;
        }
        if self.close == Close::ErqSent {
            out.push_repr(&PacketRepr::EOF)?;
            self.close = Close::EofSent;
        }
        if self.close == Close::EofSent && (self.peer_eof || !established) {
            self.ended = self.ended.or(Some(LinkEnd::Closed));
        }
        Ok(())
    }
}
