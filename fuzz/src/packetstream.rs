//! Target `packetstream`: the plain cs.packetstream endpoint fed arbitrary packets.
//!
//! Input: `mode: u8`, then stream-framed records (`BSUInt(len) ++ body`, read leniently). A
//! record of 0 bytes moves the clock 3 s; one of 1 byte is an action of the application (send a
//! request, answer or refuse the oldest request of the peer, answer a request that does not
//! exist, close); anything longer is a packet body for `handle`. Mode bit 0: the application
//! answers every request at once; bit 1: our requests time out after 5 s (else never).
//!
//! Asserts: a body that does not parse is `Err(Wire(e))` with the parser's error, and a packet
//! after the peer's EOF is `Err(Protocol)`, and nothing else fails; requests of the peer are
//! reported once per tag in use; answers and failures are reported only for our requests in
//! flight, once each, and the endpoint's counts match ours; `poll_transmit` writes only
//! refusals, ERQ and EOF, every packet parses, ERQ comes before EOF, EOF only once every request
//! of the peer is answered, and nothing after it; the link ends at most once.

use std::collections::BTreeSet;

use rivulet_core::packetstream::{CHANNEL, EndpointConfig, PacketEndpoint, PacketEvent};
use rivulet_core::session::{Error, Incoming, RequestId, TimerEvent};
use rivulet_core::time::{Duration, Instant};
use rivulet_core::wire::{self, FrameDecoder, FrameWriter, Framing, PacketKind, PacketRepr, StreamDecoder};

use super::input::{Input, records};

type Endpoint = PacketEndpoint<4, 2>;

/// What the fuzzed endpoint has done, as its peer sees it.
#[derive(Debug, Default)]
struct Observed {
    /// Our requests in flight.
    outstanding: BTreeSet<RequestId>,
    /// Requests of the peer not yet answered, oldest first.
    unanswered: Vec<Incoming>,
    peer_eof: bool,
    erq_sent: bool,
    eof_sent: bool,
    link_ends: u32,
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let answer_at_once = mode & 1 != 0;
    let request_timeout = if mode & 2 != 0 { Some(Duration::from_secs(5)) } else { None };
    let mut ep = Endpoint::new(EndpointConfig { request_timeout });
    let mut seen = Observed::default();
    let mut now = Instant::from_millis(1_000);

    for record in records(input.rest()) {
        match record {
            [] => now = now + Duration::from_secs(3),
            &[action] => act(&mut ep, &mut seen, now, action),
            body => {
                let expected_parse = PacketRepr::parse_bytes(body);
                let event = match ep.handle(now, body) {
                    Ok(event) => event.map(Owned::from),
                    Err(error) => {
                        match expected_parse {
                            Err(e) => assert_eq!(error, Error::Wire(e)),
                            Ok(_) => {
                                assert_eq!(error, Error::Protocol, "only a packet after the peer's EOF is refused");
                                assert!(seen.peer_eof);
                            }
                        }
                        None
                    }
                };
                if let Ok(repr) = expected_parse
                    && repr.kind == PacketKind::EndOfFile
                {
                    seen.peer_eof = true;
                }
                if let Some(event) = event {
                    on_event(&mut seen, event);
                }
                if answer_at_once {
                    for _ in 0..seen.unanswered.len() {
                        act(&mut ep, &mut seen, now, 1);
                    }
                }
            }
        }
        settle(&mut ep, &mut seen, now);
    }
    settle(&mut ep, &mut seen, now + Duration::from_secs(3600));
}

/// An event, owned.
#[derive(Debug)]
enum Owned {
    Request(Incoming),
    Answer(RequestId),
    RequestsEnded,
    LinkEnded,
}

impl From<PacketEvent<'_>> for Owned {
    fn from(event: PacketEvent<'_>) -> Self {
        match event {
            PacketEvent::Request { from, .. } => Owned::Request(from),
            PacketEvent::Response { id, .. } | PacketEvent::RequestFailed { id, .. } => Owned::Answer(id),
            PacketEvent::RequestsEnded => Owned::RequestsEnded,
            PacketEvent::LinkEnded(_) => Owned::LinkEnded,
        }
    }
}

fn on_event(seen: &mut Observed, event: Owned) {
    match event {
        Owned::Request(from) => {
            assert_eq!(from.channel, CHANNEL);
            assert!(!seen.unanswered.contains(&from), "tag {} reported while in use", from.tag);
            seen.unanswered.push(from);
        }
        Owned::Answer(id) => assert!(seen.outstanding.remove(&id), "{id:?} answered but not in flight"),
        Owned::RequestsEnded => {}
        Owned::LinkEnded => {
            seen.link_ends += 1;
            assert_eq!(seen.link_ends, 1, "the link ends once");
        }
    }
}

/// One action of the application.
fn act(ep: &mut Endpoint, seen: &mut Observed, now: Instant, action: u8) {
    let mut tx = vec![0u8; 4096];
    let mut out = FrameWriter::new(&mut tx, Framing::Stream);
    match action % 6 {
        0 => match ep.request(now, u64::from(action >> 3), u64::from(action & 7), b"fuzz", &mut out) {
            Ok(id) => assert!(seen.outstanding.insert(id), "{id:?} reused"),
            Err(Error::TooManyRequests) => assert_eq!(seen.outstanding.len(), 4),
            Err(e) => assert_eq!(e, Error::Closed),
        },
        1 | 2 => {
            let Some(&from) = seen.unanswered.first() else { return };
            let result = if action % 6 == 1 {
                ep.respond(from, u64::from(action >> 3), b"answer", &mut out)
            } else {
                ep.refuse(from, "refused", &mut out)
            };
            match result {
                Ok(()) => {
                    seen.unanswered.remove(0);
                }
                // A request that arrived after our EOF can no longer be answered.
                Err(e) => assert!(e == Error::Closed && seen.eof_sent, "answering a request in hand: {e:?}"),
            }
        }
        3 => ep.close(),
        4 => {
            let stranger = Incoming { channel: CHANNEL, tag: u64::MAX };
            if !seen.unanswered.contains(&stranger) {
                let result = ep.respond(stranger, 0, b"", &mut out);
                assert!(matches!(result, Err(Error::Protocol | Error::Closed)), "{result:?}");
            }
        }
        _ => {
            let other = Incoming { channel: 1, tag: 2 };
            assert!(ep.refuse(other, "no", &mut out).is_err(), "channel 1 is never in hand");
        }
    }
    check_sent(seen, out.pending(), false);
}

/// Timers and transmits until nothing changes.
fn settle(ep: &mut Endpoint, seen: &mut Observed, now: Instant) {
    for _ in 0..16 {
        let mut moved = false;
        while let Some(event) = ep.poll(now) {
            moved = true;
            match event {
                TimerEvent::RequestFailed { id, .. } => on_event(seen, Owned::Answer(id)),
                TimerEvent::LinkEnded(_) => on_event(seen, Owned::LinkEnded),
            }
        }
        let mut tx = vec![0u8; 4096];
        let mut out = FrameWriter::new(&mut tx, Framing::Stream);
        ep.poll_transmit(now, &mut out).expect("transmit never fails for lack of room here");
        moved |= !out.is_empty();
        check_sent(seen, out.pending(), true);
        if !moved {
            break;
        }
    }
    assert_eq!(ep.requests_in_flight(), seen.outstanding.len());
    assert_eq!(ep.requests_unanswered(), seen.unanswered.len());
    if let Some(at) = ep.poll_timeout() {
        let _ = at.as_micros();
    }
}

/// Checks what the endpoint wrote; `by_transmit` for `poll_transmit`, which writes only refusals
/// and the close handshake.
fn check_sent(seen: &mut Observed, bytes: &[u8], by_transmit: bool) {
    let mut rx = vec![0u8; bytes.len().max(1)];
    let mut decoder = StreamDecoder::new(&mut rx);
    assert_eq!(decoder.push(bytes), bytes.len());
    while let Some(body) = decoder.next_body().expect("well-framed") {
        let repr = PacketRepr::parse_bytes(body).expect("every packet we send parses");
        assert!(!seen.eof_sent, "{repr:?} after our EOF");
        match repr.kind {
            PacketKind::EndOfRequests => seen.erq_sent = true,
            PacketKind::EndOfFile => {
                assert!(seen.erq_sent, "EOF before ERQ");
                assert!(seen.unanswered.is_empty(), "EOF with requests of the peer unanswered");
                seen.eof_sent = true;
            }
            PacketKind::Response { ok, .. } => {
                if by_transmit {
                    assert!(!ok, "poll_transmit answers only with refusals");
                }
            }
            PacketKind::Request { .. } => {
                assert!(!by_transmit, "poll_transmit sends no requests");
                assert!(!seen.erq_sent, "a request after our ERQ");
                assert!(repr.tag >= wire::packet::FIRST_REQUEST_TAG);
            }
        }
    }
}
