//! Target `kelvin`: Kelvin's stream codec (`rivulet_core::kelvin`) over arbitrary bytes.
//!
//! Input: `limit: u8` (a line limit of `4 * limit + 2` bytes), `read: u8` (reads of `read + 1`
//! bytes), then the bytes, which go two ways: whole, as one line to the message reader, and as a
//! TCP stream to the line decoder, each line of which goes to the message reader.
//!
//! Asserts: nothing panics; the decoder returns only lines inside its buffer, within its limit
//! and without a newline, and keeps its error; a line that reads as a message and can be written
//! writes one line, which reads back and writes the same line again (a fixed point); the only
//! message that cannot be written is a `data`/`parameter` one without a payload.

use rivulet_core::kelvin::Error;
use rivulet_core::kelvin::line::LineDecoder;
use rivulet_core::kelvin::message::{Defaults, Message, Uuid};
use rivulet_core::model::Timestamp;
use rivulet_core::wire::FrameDecoder;

use super::input::{Input, feed};

const DEFAULTS: Defaults = Defaults { id: Uuid([0x5a; 16]), now: Timestamp { s: 1_700_000_000, us: 0 } };

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let limit = 4 * usize::from(input.byte()) + 2;
    let read = usize::from(input.byte()) + 1;
    let bytes = input.rest();
    check_line(bytes);
    check_stream(bytes, limit, read);
}

/// One line through the message reader and writer.
pub fn check_line(line: &[u8]) {
    let Ok(message) = Message::parse(line, DEFAULTS) else { return };
    let written = match message.to_line() {
        Ok(written) => written,
        Err(error) => {
            assert_eq!(error, Error::Payload, "{message:?}");
            assert!(message.msg_type.primitive().is_some() && message.payload.is_none(), "{message:?}");
            return;
        }
    };
    let body = written.strip_suffix('\n').expect("a written line ends in a newline");
    assert!(!body.contains('\n'), "one line: {written:?}");
    let again = Message::parse(body.as_bytes(), DEFAULTS).unwrap_or_else(|e| panic!("{e}: {written:?}"));
    assert_eq!((again.id, again.timestamp, &again.payload), (message.id, message.timestamp, &message.payload));
    let twice = again.to_line().expect("what was written writes again");
    let again_twice = Message::parse(twice.trim_end().as_bytes(), DEFAULTS).expect("reads again").to_line();
    assert_eq!(again_twice.as_deref(), Ok(twice.as_str()), "a fixed point after one round");
}

fn check_stream(stream: &[u8], limit: usize, read: usize) {
    let capacity = limit + 1;
    let mut storage = vec![0u8; capacity];
    let mut decoder = LineDecoder::new(&mut storage, limit);
    let mut rest = stream;
    while !rest.is_empty() {
        feed(&mut decoder, &mut rest, read);
        loop {
            match decoder.next_frame() {
                Ok(Some(range)) => {
                    assert!(range.end <= capacity && range.len() <= limit, "{range:?} of {capacity}");
                    let line = decoder.frame(range).to_vec();
                    assert!(!line.contains(&b'\n'));
                    check_line(&line);
                }
                Ok(None) => break,
                Err(error) => {
                    assert_eq!(decoder.next_frame(), Err(error), "errors are sticky");
                    return;
                }
            }
        }
    }
}
