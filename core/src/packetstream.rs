//! cs.packetstream's own request/response protocol, for plain peers that are not Rivulet
//! sessions: the Python `PacketConnection`, or two programs that only need multiplexed calls.
//!
//! [`PacketEndpoint`] is symmetric, like the library: either side may send requests of user
//! types on channel 0 and must answer the peer's. It keeps the library's rules:
//! - our tags count up from 2 and are never reused; responses match by tag in any order;
//! - a request on a tag still unanswered, on a channel other than 0, or after the peer's ERQ is
//!   refused with the library's reason text;
//! - closing sends ERQ at once and EOF once every request of the peer is answered; the link is
//!   over when both EOFs are out.
//!
//! Like the session machines it implements [`Machine`], so [`crate::driver::Driver`] runs it.

use crate::session::requests::{Pending, RequestKind, Requests};
use crate::session::{Error, Incoming, LinkEnd, Machine, RequestError, RequestId, TimerEvent};
use crate::time::{Duration, Instant};
use crate::wire::packet::FIRST_REQUEST_TAG;
use crate::wire::{FrameWriter, PacketKind, PacketRepr};

/// The only channel a `PacketConnection` serves.
pub const CHANNEL: u64 = 0;

/// How an endpoint paces its own requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointConfig {
    /// A request unanswered this long fails with [`RequestError::TimedOut`]. `None` waits as long
    /// as the link lives, as cs.packetstream does.
    pub request_timeout: Option<Duration>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig { request_timeout: Some(Duration::from_secs(30)) }
    }
}

/// What an endpoint tells its application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PacketEvent<'a> {
    /// A request of the peer. Answer it with [`PacketEndpoint::respond`] or
    /// [`PacketEndpoint::refuse`]: our EOF waits until every request is answered.
    Request {
        from: Incoming,
        rq_type: u64,
        flags: u64,
        payload: &'a [u8],
    },
    /// The answer to one of our requests.
    Response {
        id: RequestId,
        flags: u64,
        payload: &'a [u8],
    },
    RequestFailed {
        id: RequestId,
        error: RequestError<'a>,
    },
    /// The peer sent ERQ: it will send no more requests.
    RequestsEnded,
    LinkEnded(LinkEnd),
}

impl From<TimerEvent> for PacketEvent<'_> {
    fn from(event: TimerEvent) -> Self {
        match event {
            TimerEvent::RequestFailed { id, error } => PacketEvent::RequestFailed { id, error },
            TimerEvent::LinkEnded(end) => PacketEvent::LinkEnded(end),
        }
    }
}

/// Why the endpoint refuses a request by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NoMoreRequests,
    UnknownChannel,
    TagInUse,
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    Open,
    /// ERQ is to be sent, then EOF once the peer's requests are answered.
    Closing,
    ErqSent,
    EofSent,
}

/// Counters an endpoint keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EndpointStats {
    pub requests_sent: u64,
    pub requests_received: u64,
    /// Requests the endpoint refused by itself (see the module docs).
    pub refused: u64,
    /// Responses to tags we are not waiting for, refusals that found no room to be queued, and
    /// requests that crossed our EOF (nothing may answer them).
    pub dropped: u64,
}

/// One side of a cs.packetstream connection: `INFLIGHT` requests of ours awaiting answers,
/// `INCOMING` requests of the peer awaiting ours. Further requests of the peer are refused with
/// "too many requests in flight"; ours fail with [`Error::TooManyRequests`].
#[derive(Debug)]
pub struct PacketEndpoint<const INFLIGHT: usize, const INCOMING: usize> {
    config: EndpointConfig,
    requests: Requests<INFLIGHT>,
    incoming: heapless::Vec<u64, INCOMING>,
    refusals: heapless::Deque<(Incoming, Refusal), 8>,
    next_tag: u64,
    close: Close,
    peer_erq: bool,
    peer_eof: bool,
    ended: Option<LinkEnd>,
    end_reported: bool,
    stats: EndpointStats,
}

impl<const INFLIGHT: usize, const INCOMING: usize> PacketEndpoint<INFLIGHT, INCOMING> {
    pub fn new(config: EndpointConfig) -> Self {
        PacketEndpoint {
            config,
            requests: Requests::new(),
            incoming: heapless::Vec::new(),
            refusals: heapless::Deque::new(),
            next_tag: FIRST_REQUEST_TAG,
            close: Close::Open,
            peer_erq: false,
            peer_eof: false,
            ended: None,
            end_reported: false,
            stats: EndpointStats::default(),
        }
    }

    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// Our requests awaiting answers.
    pub fn requests_in_flight(&self) -> usize {
        self.requests.len()
    }

    /// Requests of the peer not yet answered.
    pub fn requests_unanswered(&self) -> usize {
        self.incoming.len()
    }

    /// True until we started closing or the peer sent ERQ or EOF.
    pub fn accepts_requests(&self) -> bool {
        self.close == Close::Open && !self.peer_erq && !self.peer_eof
    }

    /// Sends a request of user type `rq_type`.
    pub fn request(
        &mut self,
        now: Instant,
        rq_type: u64,
        flags: u64,
        payload: &[u8],
        out: &mut FrameWriter<'_>,
    ) -> Result<RequestId, Error> {
        if self.close != Close::Open || self.peer_eof || self.ended.is_some() {
            return Err(Error::Closed);
        }
        if self.requests.is_full() {
            return Err(Error::TooManyRequests);
        }
        let tag = self.next_tag;
        out.push_repr(&PacketRepr::request(CHANNEL, tag, rq_type, flags, payload))?;
        self.next_tag += 1;
        let deadline = match self.config.request_timeout {
            Some(timeout) => now + timeout,
            None => Instant::from_micros(u64::MAX),
        };
        let id = RequestId(tag);
        let pending = Pending { id, kind: RequestKind::App, sent_at: now, deadline };
        self.requests.insert(pending).map_err(|_| Error::TooManyRequests)?;
        self.stats.requests_sent += 1;
        Ok(id)
    }

    /// Answers a request of the peer.
    pub fn respond(
        &mut self,
        from: Incoming,
        flags: u64,
        payload: &[u8],
        out: &mut FrameWriter<'_>,
    ) -> Result<(), Error> {
        self.answer(from, out, |out| out.push_repr(&PacketRepr::response(from.channel, from.tag, true, flags, payload)))
    }

    /// Answers a request of the peer with a failure and its reason.
    pub fn refuse(&mut self, from: Incoming, reason: &str, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        let reason = reason.as_bytes();
        self.answer(from, out, |out| out.push_repr(&PacketRepr::response(from.channel, from.tag, false, 0, reason)))
    }

    fn answer(
        &mut self,
        from: Incoming,
        out: &mut FrameWriter<'_>,
        push: impl FnOnce(&mut FrameWriter<'_>) -> Result<(), crate::wire::Error>,
    ) -> Result<(), Error> {
        if self.close == Close::EofSent {
            return Err(Error::Closed);
        }
        let at = self.incoming.iter().position(|&tag| from.channel == CHANNEL && tag == from.tag);
        let at = at.ok_or(Error::Protocol)?;
        push(out)?;
        self.incoming.swap_remove(at);
        Ok(())
    }

    /// Starts a graceful close: ERQ now, EOF once the peer's requests are answered. Our own
    /// requests still get their answers until the peer's EOF.
    pub fn close(&mut self) {
        if self.close == Close::Open {
            self.close = Close::Closing;
        }
    }

    fn refuse_later(&mut self, from: Incoming, why: Refusal) {
        self.stats.refused += 1;
        if self.refusals.push_back((from, why)).is_err() {
            self.stats.dropped += 1;
        }
    }

    /// Takes one received packet body.
    pub fn handle<'a>(&'a mut self, _now: Instant, body: &'a [u8]) -> Result<Option<PacketEvent<'a>>, Error> {
        let repr = PacketRepr::parse_bytes(body)?;
        if self.peer_eof {
            return Err(Error::Protocol); // nothing may follow the peer's EOF
        }
        match repr.kind {
            PacketKind::EndOfFile => {
                self.peer_eof = true;
                if self.close == Close::EofSent {
                    self.ended = self.ended.or(Some(LinkEnd::Closed));
                }
                self.close();
                Ok(None)
            }
            PacketKind::EndOfRequests => {
                self.peer_erq = true;
                Ok(Some(PacketEvent::RequestsEnded))
            }
            PacketKind::Response { ok, flags } => {
                let Some(pending) =
                    (repr.channel == CHANNEL).then(|| self.requests.take(RequestId(repr.tag))).flatten()
                else {
                    self.stats.dropped += 1;
                    return Ok(None);
                };
                let id = pending.id;
                if ok {
                    Ok(Some(PacketEvent::Response { id, flags, payload: repr.payload }))
                } else {
                    let reason = core::str::from_utf8(repr.payload).unwrap_or("(reason is not UTF-8)");
                    Ok(Some(PacketEvent::RequestFailed { id, error: RequestError::Refused(reason) }))
                }
            }
            PacketKind::Request { rq_type, flags } => {
                if self.close == Close::EofSent {
                    // It crossed our EOF: nothing may answer it any more, so nobody is told.
                    self.stats.dropped += 1;
                    return Ok(None);
                }
                let from = Incoming { channel: repr.channel, tag: repr.tag };
                let refusal = if repr.channel != CHANNEL {
                    Some(Refusal::UnknownChannel)
                } else if self.peer_erq {
                    Some(Refusal::NoMoreRequests)
                } else if self.incoming.contains(&repr.tag) {
                    Some(Refusal::TagInUse)
                } else if self.incoming.is_full() {
                    Some(Refusal::Busy)
                } else {
                    None
                };
                if let Some(why) = refusal {
                    self.refuse_later(from, why);
                    return Ok(None);
                }
                self.incoming.push(repr.tag).map_err(|_| Error::TooManyRequests)?;
                self.stats.requests_received += 1;
                Ok(Some(PacketEvent::Request { from, rq_type, flags, payload: repr.payload }))
            }
        }
    }

    /// Reports requests that timed out or can no longer be answered, then the end of the link.
    pub fn poll(&mut self, now: Instant) -> Option<TimerEvent> {
        if let Some(pending) = self.requests.take_expired(now) {
            return Some(TimerEvent::RequestFailed { id: pending.id, error: RequestError::TimedOut });
        }
        if self.peer_eof || self.ended.is_some() {
            // The peer sends nothing more: our open requests will never be answered.
            if let Some(pending) = self.requests.take_any() {
                return Some(TimerEvent::RequestFailed { id: pending.id, error: RequestError::Disconnected });
            }
        }
        let end = self.ended.filter(|_| !self.end_reported)?;
        self.end_reported = true;
        Some(TimerEvent::LinkEnded(end))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let failing = (self.peer_eof || self.ended.is_some()) && self.requests.len() > 0;
        if failing || (self.ended.is_some() && !self.end_reported) {
            return Some(Instant::ZERO);
        }
        self.requests.next_deadline().filter(|d| d.as_micros() != u64::MAX)
    }

    /// Writes refusals, then ERQ and EOF when closing.
    pub fn poll_transmit(&mut self, _now: Instant, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        match self.transmit(out) {
            Err(e) if e.is_buffer_full() => Ok(()),
            other => other,
        }
    }

    fn transmit(&mut self, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        if self.close == Close::EofSent {
            self.refusals.clear();
        }
        while let Some(&(from, why)) = self.refusals.front() {
            let mut reason = heapless::String::<64>::new();
            let _ = match why {
                Refusal::NoMoreRequests => core::fmt::write(&mut reason, format_args!("requests no longer allowed")),
                Refusal::UnknownChannel => {
                    core::fmt::write(&mut reason, format_args!("unknown channel {}", from.channel))
                }
                Refusal::TagInUse => core::fmt::write(
                    &mut reason,
                    format_args!("channel {}: tag already in use: {}", from.channel, from.tag),
                ),
                Refusal::Busy => core::fmt::write(&mut reason, format_args!("too many requests in flight")),
            };
            out.push_repr(&PacketRepr::response(from.channel, from.tag, false, 0, reason.as_bytes()))?;
            self.refusals.pop_front();
        }
        if self.close == Close::Closing {
            out.push_repr(&PacketRepr::ERQ)?;
            self.close = Close::ErqSent;
        }
        if self.close == Close::ErqSent && self.incoming.is_empty() {
            out.push_repr(&PacketRepr::EOF)?;
            self.close = Close::EofSent;
        }
        if self.close == Close::EofSent && self.peer_eof {
            self.ended = self.ended.or(Some(LinkEnd::Closed));
        }
        Ok(())
    }
}

impl<const INFLIGHT: usize, const INCOMING: usize> Machine for PacketEndpoint<INFLIGHT, INCOMING> {
    type Event<'a> = PacketEvent<'a>;
    fn handle<'a>(&'a mut self, now: Instant, body: &'a [u8]) -> Result<Option<PacketEvent<'a>>, Error> {
        PacketEndpoint::handle(self, now, body)
    }
    fn poll(&mut self, now: Instant) -> Option<TimerEvent> {
        PacketEndpoint::poll(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        PacketEndpoint::poll_timeout(self)
    }
    fn poll_transmit(&mut self, now: Instant, out: &mut FrameWriter<'_>) -> Result<(), Error> {
        PacketEndpoint::poll_transmit(self, now, out)
    }
}
