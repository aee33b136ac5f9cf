//! Target `forward`: the whole input is the payload of an `RQ_FORWARD` request, which any
//! connected client sends the gateway (`gateway/src/frontend/native/forward.rs`).
//!
//! Asserts: [`decode`] never panics and agrees with `postcard::take_from_bytes` (bytes after the
//! value are ignored); what decodes re-encodes ([`encode`]) to a canonical form no longer than the
//! bytes it came from, byte for byte those bytes when as long, that decodes to an equal value,
//! with or without the ignored tail; the client name and payload are no longer than the input.
//! And the input read as fields (`rq_type: u64le`, `flags: u64le`, `cut: u8`, then a client name
//! of `cut` bytes, lossy UTF-8, and the payload) makes a `Forward` that round-trips exactly.

use super::gateway::forward::{Forward, decode, encode};

pub fn run(data: &[u8]) {
    check_decode(data);
    check_round_trip(&fields(data));
}

fn check_decode(data: &[u8]) {
    let decoded = decode(data);
    let taken = postcard::take_from_bytes::<Forward>(data);
    let (forward, rest) = match (decoded, taken) {
        (Ok(forward), Ok((same, rest))) => {
            assert_eq!(forward, same, "decode and take_from_bytes disagree");
            (forward, rest)
        }
        (Err(e), Err(same)) => {
            assert_eq!(e, same, "decode and take_from_bytes disagree");
            return;
        }
        (decoded, taken) => panic!("decode gave {decoded:?}, take_from_bytes {taken:?}"),
    };
    assert!(forward.client.len() <= data.len() && forward.payload.len() <= data.len());
    let used = &data[..data.len() - rest.len()];
    let encoded = encode(&forward).expect("a Forward encodes");
    assert!(encoded.len() <= used.len(), "canonical form longer than the input");
    if encoded.len() == used.len() {
        assert_eq!(encoded, used, "an input as short as the canonical form is the canonical form");
    }
    assert_eq!(decode(&encoded).as_ref(), Ok(&forward));
    assert_eq!(decode(&[&encoded[..], rest].concat()).as_ref(), Ok(&forward), "the tail is ignored");
    if let Some(short) = encoded.len().checked_sub(1) {
        assert!(decode(&encoded[..short]).is_err(), "a cut encoding decodes");
    }
}

/// The input read as the fields of a `Forward`.
fn fields(data: &[u8]) -> Forward {
    let (words, rest) = data.split_at(data.len().min(16));
    let mut bytes = [0u8; 16];
    bytes[..words.len()].copy_from_slice(words);
    let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p] = bytes;
    let (cut, rest) = rest.split_first().map_or((0, rest), |(&cut, rest)| (usize::from(cut), rest));
    let (client, payload) = rest.split_at(cut.min(rest.len()));
    Forward {
        client: String::from_utf8_lossy(client).into_owned(),
        rq_type: u64::from_le_bytes([a, b, c, d, e, f, g, h]),
        flags: u64::from_le_bytes([i, j, k, l, m, n, o, p]),
        payload: payload.to_vec(),
    }
}

fn check_round_trip(forward: &Forward) {
    let encoded = encode(forward).expect("a Forward encodes");
    assert_eq!(decode(&encoded).as_ref(), Ok(forward));
    let (back, rest) = postcard::take_from_bytes::<Forward>(&encoded).expect("decodes");
    assert!(rest.is_empty(), "an encoding decodes whole");
    assert_eq!(&back, forward);
}
