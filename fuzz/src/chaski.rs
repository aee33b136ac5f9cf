//! Target `chaski`: Chaski's TCP framing and its JSON codec (`rivulet_core::chaski`). The first
//! byte picks the reading: even, the rest is a TCP stream to `FrameDecoder` (a buffer of 16–1039
//! bytes and a frame limit of at most that, from the next two bytes; reads cut where the byte
//! after says) whose frames' topics and data go to the codec; odd, the rest is one JSON value.
//!
//! Asserts: nothing panics; frames lie in the buffer, no larger than the limit, each a whole
//! `Frame` whose parts re-emit to the same bytes; an error sticks; a drained decoder has room. A
//! value that reads writes JSON that reads back to it and is its own re-writing (Python's
//! `json.dumps` form); a message that reads writes back to a message equal to it.

use rivulet_core::chaski::frame::{Frame, FrameDecoder, FrameRepr};
use rivulet_core::chaski::message::{Message, Value, parse_topic};
use rivulet_core::wire::FrameDecoder as _;

use super::input::Input;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    if input.byte() % 2 == 1 {
        check_value(input.rest());
    } else {
        check_stream(&mut input);
    }
}

fn check_value(bytes: &[u8]) {
    let Ok(value) = Value::parse(bytes) else { return };
    let json = value.to_json();
    let back = Value::parse(json.as_bytes()).expect("what we write reads");
    assert_eq!(back, value, "a value survives writing");
    assert_eq!(back.to_json(), json, "the written form is its own re-writing");
    if let Value::Message(m) = &value {
        assert_eq!(Message::parse(m.to_json().as_bytes()).as_ref(), Ok(m.as_ref()));
    }
}

fn check_stream(input: &mut Input<'_>) {
    let size = 16 + usize::from(input.u16() % 1024);
    let limit = usize::from(input.byte()) * 4 + 8;
    let cut = 1 + usize::from(input.byte() % 64);
    let mut buf = vec![0u8; size];
    let mut decoder = FrameDecoder::new(&mut buf, limit);
    let limit = decoder.max_frame();
    let mut rest = input.clone().rest();
    while !rest.is_empty() {
        super::input::feed(&mut decoder, &mut rest, cut);
        loop {
            match decoder.next_frame() {
                Ok(Some(range)) => {
                    assert!(range.end <= size && range.len() <= limit, "a frame within the limit");
                    check_frame(decoder.frame(range));
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(decoder.next_frame(), Err(e), "an error sticks");
                    return;
                }
            }
        }
    }
}

fn check_frame(bytes: &[u8]) {
    let frame = Frame::new_checked(bytes).expect("a decoded frame is whole");
    assert_eq!(frame.total_len(), Some(bytes.len()));
    let repr = FrameRepr::parse(&frame).expect("parts");
    let mut out = vec![0u8; bytes.len()];
    assert_eq!(repr.emit(&mut out), Ok(bytes.len()));
    assert_eq!(out, bytes, "the parts re-emit to the frame");
    let _ = parse_topic(repr.topic);
    if let Ok(m) = Message::parse(repr.data) {
        assert_eq!(Message::parse(m.to_json().as_bytes()), Ok(m));
    }
    check_value(repr.data);
}
