//! Target `hat`: hat-event's Eventer codec (`rivulet_core::hat`) over arbitrary bytes.
//!
//! Input: `capacity: u8` (a receive buffer of `4 * capacity + 16` bytes), `read: u8` (reads of
//! `read + 1` bytes), then the bytes, which go three ways: to every message parser as a
//! message's data, to the `HatChatter.Msg` parser as a frame body, and to the chatter frame
//! decoder as a TCP stream whose frames feed the conversation machine (the clock moving 7 s a
//! frame, so that it pings and times out).
//!
//! Asserts: nothing panics; whatever parses re-emits (its `buffer_len` exactly, and
//! `BufferTooSmall` a byte short) to a canonical form no longer than the input that parses to the
//! same view and re-emits to itself; parse errors are decoding errors; the decoder returns only
//! frames inside its buffer and within its limit, and keeps its error; the machine passes on no
//! ping or pong, and writes only pongs and pings, numbered 1, 2, 3... in the order written.

use rivulet_core::hat::Error;
use rivulet_core::hat::chatter::{self, ChatterDecoder, Header, Msg};
use rivulet_core::hat::conversation::{Chatter, Config};
use rivulet_core::hat::eventer::{self, EventerMessage, Message, MsgType};
use rivulet_core::time::{Duration, Instant};
use rivulet_core::wire::FrameDecoder;

use super::input::{Input, feed};

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let capacity = 4 * usize::from(input.byte()) + 16;
    let read = usize::from(input.byte()) + 1;
    let bytes = input.rest();
    for msg_type in MsgType::ALL {
        check_message(msg_type, bytes);
    }
    check_msg(bytes);
    check_stream(bytes, capacity, read);
}

/// The errors a decoder may return for bad bytes.
fn is_decoding_error(error: Error) -> bool {
    !matches!(error, Error::BufferTooSmall | Error::Oversize | Error::FrameHeader | Error::UnknownType)
}

/// `data` as a message of `msg_type`: canonical re-emission, exact sizing, and a whole frame.
pub fn check_message(msg_type: MsgType, data: &[u8]) {
    let message = match Message::parse_as(msg_type, data) {
        Ok(message) => message,
        Err(error) => {
            assert!(is_decoding_error(error), "{msg_type:?}: {error:?}");
            return;
        }
    };
    assert_eq!(message.msg_type(), msg_type);
    let canonical = emit_exactly(&message);
    assert!(canonical.len() <= data.len(), "{msg_type:?}: canonical form longer than the input");
    let again = Message::parse_as(msg_type, &canonical).expect("the canonical form parses");
    assert_eq!(again, message, "{msg_type:?}: the canonical form means something else");
    assert_eq!(emit_exactly(&again), canonical, "{msg_type:?}: the canonical form is not a fixed point");

    let header = Header { id: 1, first: 1, owner: true, token: true, last: false };
    let len = eventer::frame_len(&header, &message).expect("a parsed message frames");
    let mut frame = vec![0u8; len];
    assert_eq!(eventer::emit_frame(&header, &message, &mut frame), Ok(len));
    let (header_len, body_len) = chatter::parse_header(&frame, usize::MAX).expect("a header").expect("whole");
    assert_eq!(header_len + body_len, len);
    let msg = Msg::parse(&frame[header_len..]).expect("our frame parses");
    assert_eq!((msg.header, msg.msg_type, msg.data), (header, msg_type.name(), &canonical[..]));
}

/// Emits `message` into a buffer of its `buffer_len`, checking that a byte less is refused.
fn emit_exactly(message: &impl EventerMessage) -> Vec<u8> {
    let len = message.buffer_len().expect("a parsed message is representable");
    let mut out = vec![0u8; len];
    assert_eq!(message.emit(&mut out), Ok(len));
    if len > 0 {
        assert_eq!(message.emit(&mut out[..len - 1]), Err(Error::BufferTooSmall));
    }
    out
}

/// `body` as a `HatChatter.Msg`: canonical re-emission, and its frame through the decoder.
pub fn check_msg(body: &[u8]) {
    let msg = match Msg::parse(body) {
        Ok(msg) => msg,
        Err(error) => {
            assert!(is_decoding_error(error), "{error:?}");
            return;
        }
    };
    let len = msg.buffer_len().expect("a parsed Msg is representable");
    assert!(len <= body.len());
    let mut canonical = vec![0u8; len];
    assert_eq!(msg.emit(&mut canonical), Ok(len));
    assert_eq!(Msg::parse(&canonical), Ok(msg));
    if let Ok(message) = Message::parse(msg.msg_type, msg.data) {
        assert_eq!(message.msg_type().name(), msg.msg_type);
    }

    let mut frame = vec![0u8; msg.frame_len().expect("frames")];
    assert_eq!(msg.emit_frame(&mut frame), Ok(frame.len()));
    let mut storage = vec![0u8; frame.len()];
    let mut decoder = ChatterDecoder::new(&mut storage);
    assert_eq!(decoder.push(&frame), frame.len());
    assert_eq!(decoder.next_body().map(|b| b.map(<[u8]>::to_vec)), Ok(Some(canonical)));
    assert_eq!(decoder.next_body(), Ok(None));
}

/// `stream` through a decoder of `capacity` bytes in reads of `read`, its frames through a
/// conversation machine.
fn check_stream(stream: &[u8], capacity: usize, read: usize) {
    let mut storage = vec![0u8; capacity];
    let mut decoder = ChatterDecoder::new(&mut storage);
    let limit = decoder.max_body();
    let config = Config { ping_delay: Duration::from_secs(10), ping_timeout: Duration::from_secs(10) };
    let mut now = Instant::ZERO;
    let mut machine = Chatter::new(config, now);
    let mut sent = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        feed(&mut decoder, &mut rest, read);
        loop {
            let body = match decoder.next_frame() {
                Ok(Some(range)) => {
                    assert!(range.end <= capacity && range.len() <= limit, "{range:?} of {capacity}");
                    decoder.frame(range).to_vec()
                }
                Ok(None) => break,
                Err(error) => {
                    assert_eq!(decoder.next_frame(), Err(error), "errors are sticky");
                    return check_sent(&sent);
                }
            };
            now = now + Duration::from_secs(7);
            let _ = machine.poll(now);
            match machine.receive(now, &body) {
                Ok(Some(received)) => {
                    assert!(received.msg_type != chatter::PING && received.msg_type != chatter::PONG);
                    if let Ok(message) = received.message() {
                        assert!(!matches!(message, Message::Keepalive(_)));
                    }
                }
                Ok(None) => {
                    let msg = Msg::parse(&body).expect("it parsed in receive");
                    assert!(msg.msg_type == chatter::PING || msg.msg_type == chatter::PONG);
                }
                Err(error) => assert!(is_decoding_error(error), "{error:?}"),
            }
            let mut out = [0u8; 96];
            let n = machine.poll_transmit(now, &mut out).expect("pings and pongs are representable");
            sent.extend_from_slice(&out[..n]);
        }
    }
    check_sent(&sent);
}

/// What the machine wrote: whole frames of pings and pongs, ids 1, 2, 3...
fn check_sent(mut sent: &[u8]) {
    let mut id = 1;
    while !sent.is_empty() {
        let (header, body) = chatter::parse_header(sent, usize::MAX).expect("a header").expect("a whole header");
        let msg = Msg::parse(&sent[header..header + body]).expect("our frame parses");
        assert_eq!(msg.header.id, id, "ids in the order written");
        assert!(msg.data.is_empty());
        match msg.msg_type {
            chatter::PING => assert!(msg.header.owner && msg.header.first == id && !msg.header.last),
            chatter::PONG => assert!(msg.header.last),
            other => panic!("the machine wrote {other}"),
        }
        id += 1;
        sent = &sent[header + body..];
    }
}
