//! The Kelvin codec against kelvin-python-sdk 0.5.0's own reading and writing: every pair of
//! `core/tests/data/kelvin_vectors.txt` (made by `host-tests/peers/kelvin_vectors.py` with the real
//! SDK, which host-tests/tests/kelvin_vectors.rs keeps honest) is an input line and what the SDK
//! writes back for it, or `invalid` where the SDK refuses it. We must write the same bytes, or
//! refuse too. Then the `kelvin` fuzz target's harness on its seeds, random bytes and edited
//! seeds (fuzz/, docs/RELIABILITY.md "Fuzzing").

#[allow(dead_code)]
#[path = "../../fuzz/src"]
mod fuzz {
    pub mod corpus;
    pub mod input;
    pub mod kelvin;
}

use proptest::prelude::*;
use rivulet_core::kelvin::message::{Defaults, Message, Uuid};
use rivulet_core::model::Timestamp;

const VECTORS: &str = include_str!("data/kelvin_vectors.txt");

fn pairs() -> Vec<(&'static str, &'static str)> {
    let mut lines = VECTORS.lines();
    let mut pairs = Vec::new();
    while let Some(input) = lines.next() {
        let input = input.strip_prefix("in ").expect("an `in` line");
        let output = lines.next().and_then(|l| l.strip_prefix("out ")).expect("its `out` line");
        pairs.push((input, output));
    }
    pairs
}

/// Every vector has its id and timestamp; these would show if one were missed.
const DEFAULTS: Defaults = Defaults { id: Uuid([0xee; 16]), now: Timestamp { s: 0, us: 0 } };

#[test]
fn every_line_reads_and_writes_as_the_sdk_does() {
    let pairs = pairs();
    assert!(pairs.len() >= 50, "the vectors file holds {} pairs", pairs.len());
    let mut wrong = Vec::new();
    for (input, expected) in &pairs {
        let ours = match Message::parse(input.as_bytes(), DEFAULTS) {
            Ok(message) => {
                message.to_line().map(|l| l.trim_end().to_string()).unwrap_or_else(|e| format!("unwritable: {e}"))
            }
            Err(_) => "invalid".to_string(),
        };
        if ours != *expected {
            wrong.push(format!("in  {input}\nsdk {expected}\nus  {ours}"));
        }
    }
    assert!(wrong.is_empty(), "{} of {} vectors differ:\n{}", wrong.len(), pairs.len(), wrong.join("\n\n"));
}

#[test]
fn what_we_write_the_sdk_wrote_and_reads_the_same() {
    for (_, expected) in pairs().into_iter().filter(|(_, out)| *out != "invalid") {
        let message = Message::parse(expected.as_bytes(), DEFAULTS).expect("the SDK's own line reads");
        assert_eq!(message.to_line().unwrap().trim_end(), expected, "a fixed point");
    }
}

#[test]
fn fuzz_kelvin_seed_corpus() {
    let seeds = fuzz::corpus::seeds("kelvin");
    assert!(seeds.len() >= 50, "the golden vectors make the seeds: {}", seeds.len());
    for seed in seeds {
        fuzz::kelvin::run(&seed);
    }
}

fn fuzz_edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)
}

proptest! {
    #[test]
    fn fuzz_kelvin_random_bytes(bytes in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'{'), Just(b'\n'), any::<u8>()], 0..300)) {
        fuzz::kelvin::run(&bytes);
    }

    #[test]
    fn fuzz_kelvin_edited_seeds(pick in any::<prop::sample::Index>(), edits in fuzz_edits()) {
        let seeds = fuzz::corpus::seeds("kelvin");
        fuzz::kelvin::run(&fuzz::corpus::mutate(&seeds[pick.index(seeds.len())], &edits));
    }
}
