//! Target `files`: the file requests and the receiver's rule (`rivulet_core::files`). The input
//! is stream-framed records (`input::records`); each record's first byte picks a request type
//! (modulo the five), the rest is its body. Parsed requests go to a `Receiver` of at most 4 KiB,
//! which a model follows: the bytes it asked to write, where.
//!
//! Asserts: nothing panics; a request that parses encodes back to a body that parses to it; the
//! receiver writes only at the end of what it holds, never past the offered size, and a done
//! succeeds only with every byte held and the offered digest being the model's bytes' digest.

use rivulet_core::files::{Answer, Digest, FileError, FileRequest, RQ_FILE_OFFER, Receiver, Sha256, Step};

use super::input::records;

/// A stand-in digest (FNV-1a in the first 8 bytes): a receiver's rule does not depend on which
/// hash it is, and a fuzzer can reach a match.
#[derive(Clone)]
pub struct Fnv(u64);

impl Sha256 for Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn finalize(self) -> Digest {
        let mut digest = [0; 32];
        digest[..8].copy_from_slice(&self.0.to_be_bytes());
        digest
    }
}

pub fn run(data: &[u8]) {
    let mut receiver: Receiver<Fnv> = Receiver::new(4096, 512, 4);
    // The model: the file's bytes as written, by the current transfer.
    let mut written: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    for record in records(data) {
        let Some((&pick, body)) = record.split_first() else { continue };
        let rq_type = RQ_FILE_OFFER + u64::from(pick % 5);
        let Ok(Some(request)) = FileRequest::parse(rq_type, body) else { continue };
        let len = request.encode(&mut buf).expect("a parsed request fits its own size");
        assert_eq!(FileRequest::parse(rq_type, &buf[..len]), Ok(Some(request)), "encodes back");
        match request {
            FileRequest::Offer(offer) => {
                let before = receiver.transfer().map(|t| (t.name().to_string(), t.size(), *t.sha256()));
                match receiver.offer(&offer) {
                    Ok(Answer::Ready { held, .. }) => {
                        let same = before == Some((offer.name.to_string(), offer.size, offer.sha256));
                        if !same {
                            written.clear();
                        }
                        assert_eq!(held, written.len() as u64, "held is what was written");
                        assert!(offer.size <= 4096);
                    }
                    Ok(other) => panic!("an offer answered {other:?}"),
                    Err(FileError::TooLarge { size, .. }) => assert!(size > 4096),
                    Err(_) => {}
                }
            }
            FileRequest::Chunk(chunk) => match receiver.chunk(&chunk) {
                Ok(Step::Write { offset, data }) => {
                    assert_eq!(offset, written.len() as u64, "written only at the end of what is held");
                    let size = receiver.transfer().map(|t| t.size()).expect("a transfer");
                    assert!(offset + data.len() as u64 <= size, "never past the size");
                    written.extend_from_slice(data);
                    assert_eq!(receiver.wrote(data), Answer::Held(written.len() as u64));
                }
                Ok(Step::Answer(Answer::Held(held))) => assert_eq!(held, written.len() as u64),
                Ok(other) => panic!("a chunk answered {other:?}"),
                Err(_) => {}
            },
            FileRequest::Done(done) => {
                let offered = receiver.transfer().map(|t| (t.size(), *t.sha256()));
                if let Ok(digest) = receiver.done(&done) {
                    let (size, sha256) = offered.expect("a transfer");
                    assert_eq!(written.len() as u64, size, "every byte held");
                    let mut hash = Fnv::new();
                    hash.update(&written);
                    assert_eq!((digest, hash.finalize()), (sha256, sha256), "the offered digest is the bytes'");
                    assert!(receiver.verified().is_some());
                } else if receiver.transfer().is_none() {
                    written.clear();
                }
            }
            FileRequest::List | FileRequest::Read(_) => {}
        }
    }
}
