//! Target `federation`: the first byte picks a federation message (`gateway/src/federation/
//! wire.rs`: hello, start, adverts, events, a latest ask and its answer), the rest is its body,
//! which a logged-in peer gateway sends.
//!
//! Asserts: [`decode`] never panics; what decodes re-encodes ([`encode`]) to bytes that decode to
//! an equal message, no longer than the bytes it came from; an advert's patterns parse or give an
//! error, never a panic; an events message (and a latest answer) holds no more events than its
//! body has bytes.

use super::gateway::federation::{Adverts, Events, Hello, LatestAsk, LatestFound, Start, decode, encode};

pub fn run(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else { return };
    match kind % 6 {
        0 => {
            round_trip::<Hello>(body);
        }
        1 => {
            if let Some(start) = round_trip::<Start>(body) {
                for advert in &start.adverts {
                    let _ = advert.parsed();
                }
            }
        }
        2 => {
            if let Some(adverts) = round_trip::<Adverts>(body) {
                for advert in &adverts.adverts {
                    let _ = advert.parsed();
                }
            }
        }
        3 => {
            if let Ok(events) = decode::<Events<'_>>(body) {
                assert!(events.events.len() <= body.len(), "more events than bytes");
                let encoded = encode(&events).expect("events encode");
                assert!(encoded.len() <= body.len(), "canonical form longer than the input");
                assert_eq!(decode::<Events<'_>>(&encoded).as_ref(), Ok(&events));
            }
        }
        4 => {
            if let Some(ask) = round_trip::<LatestAsk>(body) {
                let _ = ask.parsed();
            }
        }
        _ => {
            if let Ok(found) = decode::<LatestFound<'_>>(body) {
                assert!(found.events.len() <= body.len(), "more events than bytes");
                let encoded = encode(&found).expect("an answer encodes");
                assert!(encoded.len() <= body.len(), "canonical form longer than the input");
                assert_eq!(decode::<LatestFound<'_>>(&encoded).as_ref(), Ok(&found));
            }
        }
    }
}

/// Decodes `body` as a `T`; if it does, checks the re-encoding and returns the message.
fn round_trip<T>(body: &[u8]) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let message = decode::<T>(body).ok()?;
    let encoded = encode(&message).expect("a decoded message encodes");
    assert!(encoded.len() <= body.len(), "canonical form longer than the input");
    assert_eq!(decode::<T>(&encoded).as_ref(), Ok(&message));
    Some(message)
}
