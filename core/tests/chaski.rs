//! The Chaski codec against chaski-confluent 0.1a5 with the JSON codec of
//! `host-tests/peers/chaski_json.py`: every frame of `core/tests/data/chaski_vectors.txt` (made by
//! `host-tests/peers/chaski_vectors.py` with the real library, which host-tests/tests/
//! chaski_vectors.rs keeps honest) reads with our codec and writes back byte for byte; every
//! datagram too; every `bad` is refused. Then the `chaski` fuzz target's harness on its seeds,
//! random bytes and edited seeds (fuzz/, docs/RELIABILITY.md "Fuzzing").

#[allow(dead_code)]
#[path = "../../fuzz/src"]
mod fuzz {
    pub mod chaski;
    pub mod corpus;
    pub mod input;
}

use proptest::prelude::*;
use rivulet_core::chaski::frame::{Frame, FrameRepr};
use rivulet_core::chaski::message::{Message, Value, parse_topic, topic_json};

const VECTORS: &str = include_str!("data/chaski_vectors.txt");

/// (kind, name, bytes) of every vector.
fn vectors() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    VECTORS
        .lines()
        .map(|line| {
            let mut words = line.split(' ');
            let (kind, name, hex) = (words.next().unwrap(), words.next().unwrap(), words.next().unwrap());
            let bytes = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            (kind, name, bytes)
        })
        .collect()
}

#[test]
fn every_frame_reads_and_writes_back_as_chaski_writes_it() {
    let frames: Vec<_> = vectors().into_iter().filter(|(kind, _, _)| *kind == "frame").collect();
    assert!(frames.len() >= 12, "{} frames", frames.len());
    for (_, name, bytes) in frames {
        let frame = Frame::new_checked(&bytes[..]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(frame.total_len(), Some(bytes.len()), "{name}: one whole frame");
        let topic = parse_topic(frame.topic()).unwrap_or_else(|e| panic!("{name}: topic: {e}"));
        let message = Message::parse(frame.data()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(message.topic, topic, "{name}: the frame's topic is the message's");
        // Written again, from what was read: the same bytes.
        let (topic, data) = (topic_json(&topic), message.to_json());
        let repr = FrameRepr { topic: topic.as_bytes(), data: data.as_bytes() };
        let mut out = vec![0u8; repr.buffer_len().unwrap()];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, bytes, "{name}: byte for byte");
    }
}

#[test]
fn the_vectors_hold_what_each_command_carries() {
    let read = |name: &str| {
        let (_, _, bytes) = vectors().into_iter().find(|(_, n, _)| *n == name).unwrap();
        let frame = Frame::new_checked(bytes).unwrap();
        Message::parse(frame.data()).unwrap()
    };
    let push = read("push-bytes");
    assert_eq!((push.command.as_str(), push.topic.as_str()), ("ChaskiMessage", "topic1"));
    assert_eq!((push.data, push.ttl), (Value::Bytes(b"hello".to_vec()), 64));
    assert_eq!(push.timestamp, Value::DateTime("2026-12-07T16:20:01.123456".into()));
    let back = read("handshake-back");
    assert_eq!(
        back.data.get("subscriptions"),
        Some(&Value::Set(vec![Value::String("topic1".into()), Value::String("topic2".into())])),
        "a set, sorted"
    );
    let pong = read("pong");
    assert_eq!(pong.data.get("source_timestamp"), Some(&Value::DateTime("2026-12-07T16:20:02".into())), "no fraction");
    let defaults = read("defaults");
    assert_eq!((defaults.timestamp, defaults.uuid, defaults.topic), (Value::Number("0".into()), None, String::new()));
    let object = read("push-object");
    assert_eq!(object.data.get("t"), Some(&Value::Number("21.5".into())));
    assert_eq!(object.data.get("k\u{e4}se").and_then(Value::as_str), Some("\u{1f600}\n"));
}

#[test]
fn datagrams_read_and_write_back_and_bad_data_is_refused() {
    for (kind, name, bytes) in vectors() {
        match kind {
            "udp" => {
                let message = Message::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(message.to_json().as_bytes(), &bytes[..], "{name}: byte for byte");
            }
            "bad" => assert!(Value::parse(&bytes).is_err(), "{name}: refused"),
            _ => {}
        }
    }
}

#[test]
fn fuzz_chaski_seed_corpus() {
    for seed in fuzz::corpus::seeds("chaski") {
        fuzz::chaski::run(&seed);
    }
}

fn fuzz_edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)
}

proptest! {
    #[test]
    fn fuzz_chaski_random_bytes(bytes in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'{'), Just(b'$'), Just(0u8), any::<u8>()], 0..300)) {
        fuzz::chaski::run(&bytes);
    }

    #[test]
    fn fuzz_chaski_edited_seeds(pick in any::<prop::sample::Index>(), edits in fuzz_edits()) {
        let seeds = fuzz::corpus::seeds("chaski");
        fuzz::chaski::run(&fuzz::corpus::mutate(&seeds[pick.index(seeds.len())], &edits));
    }
}
