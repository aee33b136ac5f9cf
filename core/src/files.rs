//! Files and firmware images moved in chunks (docs/PROTOCOL.md §4.16), as application requests
//! of the native protocol (channel 1), so they go wherever a request goes: to a gateway, through
//! it to a device (`RQ_FORWARD`), or to another gateway of a federation.
//!
//! The sender offers a file (name, size, SHA-256 of the whole); the receiver answers how much
//! of it it already holds, so a transfer cut by a lost link or a restart goes on from there.
//! Chunks follow, each at an offset; the receiver takes one only at the end of what it holds
//! and answers what it holds after it, so a chunk that arrives early or twice is not taken and
//! the sender goes back to the answer (go-back-N). Several chunks may be in flight: that window
//! is the flow control. `Done` asks the receiver to check the hash; only a file whose hash
//! matches is presented as complete (a gateway lists it, a device boots it).
//!
//! This module holds the messages and [`Transfer`], the receiver's rule (what it holds, which
//! chunk it takes, the running hash, the final check), with the SHA-256 brought by the caller
//! ([`Sha256`]) and no I/O: the caller writes the bytes a chunk brings where they belong (a file,
//! a flash partition). [`Receiver`] is one transfer at a time, for a device.

use serde::{Deserialize, Serialize};

pub use crate::login::Sha256;

/// Offers a file: [`Offer`] → [`Answer::Ready`].
pub const RQ_FILE_OFFER: u64 = 0x7220;
/// A piece of an offered file: [`Chunk`] → [`Answer::Held`].
pub const RQ_FILE_CHUNK: u64 = 0x7221;
/// The sender has sent it all: [`Done`] → [`Answer::Complete`], or a failure (the hash differs,
/// or bytes are missing).
pub const RQ_FILE_DONE: u64 = 0x7222;
/// The files a gateway holds: empty → a postcard sequence of [`FileInfo`].
pub const RQ_FILE_LIST: u64 = 0x7223;
/// Bytes of a file a gateway holds: [`Read`] → the bytes (fewer at its end).
pub const RQ_FILE_READ: u64 = 0x7224;

/// Longest file name, in bytes.
pub const NAME_BYTES: usize = 64;
/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// Whether an application request type is one of this module's.
pub fn is_file_request(rq_type: u64) -> bool {
    (RQ_FILE_OFFER..=RQ_FILE_READ).contains(&rq_type)
}

/// Whether a request of this module writes to the receiver (offer, chunk, done), rather than
/// reading what it holds (list, read).
pub fn is_write_request(rq_type: u64) -> bool {
    matches!(rq_type, RQ_FILE_OFFER | RQ_FILE_CHUNK | RQ_FILE_DONE)
}

/// Body of an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Offer<'a> {
    pub name: &'a str,
    pub size: u64,
    pub sha256: Digest,
}

/// Body of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Chunk<'a> {
    pub name: &'a str,
    pub offset: u64,
    pub data: &'a [u8],
}

/// Body of a done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Done<'a> {
    pub name: &'a str,
}

/// Body of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Read<'a> {
    pub name: &'a str,
    pub offset: u64,
    pub len: u32,
}

/// One file of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FileInfo<'a> {
    pub name: &'a str,
    pub size: u64,
    pub sha256: Digest,
}

/// A receiver's successful answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Answer {
    /// To an offer: the bytes of the file already held (send from there), the largest chunk's
    /// data the receiver takes, and how many chunks it takes in flight.
    Ready { held: u64, max_chunk: u32, window: u16 },
    /// To a chunk: the bytes held now. Less than the chunk's end: it was not taken (it came
    /// early or was resent); send from here.
    Held(u64),
    /// To a done: the file is whole and its SHA-256 is this (the offer's).
    Complete(Digest),
}

/// A request of this module, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FileRequest<'a> {
    Offer(Offer<'a>),
    Chunk(Chunk<'a>),
    Done(Done<'a>),
    List,
    Read(Read<'a>),
}

impl<'a> FileRequest<'a> {
    /// The request of type `rq_type` with body `payload`: `Ok(None)` for another type, an error
    /// for a body that does not decode.
    pub fn parse(rq_type: u64, payload: &'a [u8]) -> Result<Option<Self>, FileError> {
        Ok(Some(match rq_type {
            RQ_FILE_OFFER => FileRequest::Offer(decode(payload)?),
            RQ_FILE_CHUNK => FileRequest::Chunk(decode(payload)?),
            RQ_FILE_DONE => FileRequest::Done(decode(payload)?),
            RQ_FILE_LIST => FileRequest::List,
            RQ_FILE_READ => FileRequest::Read(decode(payload)?),
            _ => return Ok(None),
        }))
    }

    /// Its request type.
    pub fn rq_type(&self) -> u64 {
        match self {
            FileRequest::Offer(_) => RQ_FILE_OFFER,
            FileRequest::Chunk(_) => RQ_FILE_CHUNK,
            FileRequest::Done(_) => RQ_FILE_DONE,
            FileRequest::List => RQ_FILE_LIST,
            FileRequest::Read(_) => RQ_FILE_READ,
        }
    }

    /// Writes its body into `out`; returns the length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, FileError> {
        match self {
            FileRequest::Offer(offer) => encode(offer, out),
            FileRequest::Chunk(chunk) => encode(chunk, out),
            FileRequest::Done(done) => encode(done, out),
            FileRequest::List => Ok(0),
            FileRequest::Read(read) => encode(read, out),
        }
    }
}

/// Bytes of a chunk's body around its data: the name (with its length) and the offset, at most.
pub const fn chunk_overhead(name: &str) -> usize {
    // Varint lengths: the name's (1 byte up to 127), the offset's (10), the data's (5).
    1 + name.len() + 10 + 5
}

/// Decodes a body; bytes after it are ignored.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, FileError> {
    postcard::take_from_bytes(bytes).map(|(value, _rest)| value).map_err(|_| FileError::Decode)
}

/// Encodes a body (or an [`Answer`]) into `out`; returns the length.
pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut [u8]) -> Result<usize, FileError> {
    postcard::to_slice(value, out).map(|b| b.len()).map_err(|_| FileError::BufferTooSmall)
}

/// Why a file request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FileError {
    /// The body is not the request's.
    Decode,
    /// An answer does not fit the buffer given.
    BufferTooSmall,
    /// A name of 1 to 64 letters, digits, `.`, `_` and `-`, not starting with a dot, is needed.
    BadName,
    /// The file is larger than the receiver takes.
    TooLarge { size: u64, capacity: u64 },
    /// A chunk or done of a file that is not being received (not offered, or another file was
    /// offered since): offer it (again).
    NotOffered,
    /// A chunk reaching past the offered size.
    BeyondEnd { end: u64, size: u64 },
    /// Done before every byte was held.
    Incomplete { held: u64, size: u64 },
    /// The bytes received do not have the offered SHA-256. The receiver has discarded them.
    Mismatch { offered: Digest, received: Digest },
}

impl FileError {
    /// The reason in at most 48 bytes, for a receiver whose refusals are short (a device's
    /// reasons are cut at 64 bytes). `NotOffered`'s is its whole text, which a sender knows.
    pub const fn summary(&self) -> &'static str {
        match self {
            FileError::Decode => "not a file transfer message",
            FileError::BufferTooSmall => "the answer does not fit",
            FileError::BadName => "bad file name",
            FileError::TooLarge { .. } => "the file is too large for the receiver",
            FileError::NotOffered => "that file is not being received: offer it first",
            FileError::BeyondEnd { .. } => "a chunk past the file's end",
            FileError::Incomplete { .. } => "bytes are missing",
            FileError::Mismatch { .. } => "hash mismatch: the bytes are discarded",
        }
    }
}

/// A digest in hex, for messages.
#[derive(Debug, Clone, Copy)]
pub struct Hex<'a>(pub &'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl core::fmt::Display for FileError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FileError::Decode => f.write_str("not a file transfer message"),
            FileError::BufferTooSmall => f.write_str("the answer does not fit"),
            FileError::BadName => {
                write!(f, "a file name is 1 to {NAME_BYTES} letters, digits, '.', '_' or '-', not starting with '.'")
            }
            FileError::TooLarge { size, capacity } => {
                write!(f, "the file has {size} bytes; the receiver takes at most {capacity}")
            }
            FileError::NotOffered => f.write_str("that file is not being received: offer it first"),
            FileError::BeyondEnd { end, size } => write!(f, "a chunk ends at {end}, past the file's {size} bytes"),
            FileError::Incomplete { held, size } => write!(f, "only {held} of {size} bytes are held"),
            FileError::Mismatch { offered, received } => write!(
                f,
                "hash mismatch: the file should have SHA-256 {}, the bytes received have {}; they are discarded",
                Hex(offered),
                Hex(received)
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FileError {}

/// Checks a file name: see [`FileError::BadName`]. A name is a plain file name on every system
/// (no separators, no `..`), so a receiver may use it as one.
pub fn check_name(name: &str) -> Result<(), FileError> {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    let fine = (1..=NAME_BYTES).contains(&name.len()) && !name.starts_with('.') && name.bytes().all(|b| allowed(&b));
    if fine { Ok(()) } else { Err(FileError::BadName) }
}

/// The receiving side of one file: what is held, the hash so far.
#[derive(Clone)]
pub struct Transfer<H> {
    name: heapless::String<NAME_BYTES>,
    size: u64,
    sha256: Digest,
    held: u64,
    hash: H,
}

impl<H> core::fmt::Debug for Transfer<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Transfer")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("held", &self.held)
            .finish()
    }
}

impl<H: Sha256 + Clone> Transfer<H> {
    /// A new transfer of what `offer` offers, nothing held yet.
    pub fn new(offer: &Offer<'_>) -> Result<Self, FileError> {
        Self::resumed(offer, 0, H::new())
    }

    /// A transfer that already holds `held` bytes, `hash` having seen them (a receiver that
    /// kept them across a restart).
    pub fn resumed(offer: &Offer<'_>, held: u64, hash: H) -> Result<Self, FileError> {
        check_name(offer.name)?;
        let name = heapless::String::try_from(offer.name).map_err(|_| FileError::BadName)?;
        Ok(Transfer { name, size: offer.size, sha256: offer.sha256, held: held.min(offer.size), hash })
    }

    /// Whether `offer` offers this very file (same name, size and hash).
    pub fn is(&self, offer: &Offer<'_>) -> bool {
        self.name == offer.name && self.size == offer.size && self.sha256 == offer.sha256
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn sha256(&self) -> &Digest {
        &self.sha256
    }

    /// Bytes held: the file's first `held` bytes.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// The data of `chunk` to write at [`held`](Self::held), or `None` if the chunk does not
    /// start there (answer [`Answer::Held`] without writing). An error for another file's
    /// chunk or one past the end.
    pub fn take<'c>(&self, chunk: &Chunk<'c>) -> Result<Option<&'c [u8]>, FileError> {
        if chunk.name != self.name.as_str() {
            return Err(FileError::NotOffered);
        }
        let end = chunk.offset.saturating_add(chunk.data.len() as u64);
        if end > self.size {
            return Err(FileError::BeyondEnd { end, size: self.size });
        }
        Ok((chunk.offset == self.held).then_some(chunk.data))
    }

    /// `data` (what [`take`](Self::take) gave) is written: it is held now.
    pub fn wrote(&mut self, data: &[u8]) {
        self.hash.update(data);
        self.held = self.held.saturating_add(data.len() as u64).min(self.size);
    }

    /// Checks the whole file: every byte held and the offered hash.
    pub fn finish(&self) -> Result<Digest, FileError> {
        if self.held < self.size {
            return Err(FileError::Incomplete { held: self.held, size: self.size });
        }
        let received = self.hash.clone().finalize();
        if received == self.sha256 { Ok(received) } else { Err(FileError::Mismatch { offered: self.sha256, received }) }
    }
}

/// What the caller does with a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Step<'c> {
    /// Write `data` at `offset`, then call [`Receiver::wrote`] for the answer.
    Write { offset: u64, data: &'c [u8] },
    /// Nothing to write: send this answer.
    Answer(Answer),
}

/// One transfer at a time into a space of `capacity` bytes (a device's image partition): a new
/// offer replaces the transfer in progress, and a verified file stays verified until then.
#[derive(Debug)]
pub struct Receiver<H> {
    transfer: Option<Transfer<H>>,
    verified: bool,
    capacity: u64,
    max_chunk: u32,
    window: u16,
}

impl<H: Sha256 + Clone> Receiver<H> {
    /// A receiver for files of up to `capacity` bytes, in chunks of up to `max_chunk` bytes,
    /// `window` of them in flight (what its request queue holds).
    pub const fn new(capacity: u64, max_chunk: u32, window: u16) -> Self {
        Receiver { transfer: None, verified: false, capacity, max_chunk, window }
    }

    /// The transfer in progress (or done).
    pub fn transfer(&self) -> Option<&Transfer<H>> {
        self.transfer.as_ref()
    }

    /// An offer: the same file goes on where it was, another one starts from nothing (the
    /// caller then writes from offset 0 again: a flash partition is erased as chunks arrive).
    pub fn offer(&mut self, offer: &Offer<'_>) -> Result<Answer, FileError> {
        if offer.size > self.capacity {
            return Err(FileError::TooLarge { size: offer.size, capacity: self.capacity });
        }
        match &self.transfer {
            Some(transfer) if transfer.is(offer) => {}
            _ => {
                self.transfer = Some(Transfer::new(offer)?);
                self.verified = false;
            }
        }
        let held = self.transfer.as_ref().map_or(0, Transfer::held);
        Ok(Answer::Ready { held, max_chunk: self.max_chunk, window: self.window })
    }

    /// A chunk: what to write, or the answer at once.
    pub fn chunk<'c>(&self, chunk: &Chunk<'c>) -> Result<Step<'c>, FileError> {
        let transfer = self.transfer.as_ref().ok_or(FileError::NotOffered)?;
        Ok(match transfer.take(chunk)? {
            Some(data) => Step::Write { offset: chunk.offset, data },
            None => Step::Answer(Answer::Held(transfer.held())),
        })
    }

    /// The data of a [`Step::Write`] is written.
    pub fn wrote(&mut self, data: &[u8]) -> Answer {
        match &mut self.transfer {
            Some(transfer) => {
                transfer.wrote(data);
                Answer::Held(transfer.held())
            }
            None => Answer::Held(0),
        }
    }

    /// A done: the hash checked. On a mismatch the transfer is dropped (an offer starts over).
    pub fn done(&mut self, done: &Done<'_>) -> Result<Digest, FileError> {
        let transfer = self.transfer.as_ref().filter(|t| t.name() == done.name).ok_or(FileError::NotOffered)?;
        match transfer.finish() {
            Ok(digest) => {
                self.verified = true;
                Ok(digest)
            }
            Err(e @ FileError::Mismatch { .. }) => {
                self.discard();
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Drops the transfer (what was written cannot be trusted): an offer starts over.
    pub fn discard(&mut self) {
        self.transfer = None;
        self.verified = false;
    }

    /// The verified file, if the last done checked out: its name, size and hash.
    pub fn verified(&self) -> Option<&Transfer<H>> {
        self.transfer.as_ref().filter(|_| self.verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sha2`'s, as a device binds it (its `Sha256` impl is in `login`'s tests).
    type Sha = sha2::Sha256;

    fn digest(bytes: &[u8]) -> Digest {
        let mut hash = <Sha as Sha256>::new();
        hash.update(bytes);
        hash.finalize()
    }

    #[test]
    fn names_are_plain_file_names() {
        for good in ["a", "fw-1.2.bin", "A_b.c-d", &"x".repeat(64)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", ".hidden", "..", "a/b", "a\\b", "é", "a b", &"x".repeat(65)] {
            assert_eq!(check_name(bad), Err(FileError::BadName), "{bad}");
        }
    }

    #[test]
    fn chunks_are_taken_in_order_and_early_or_resent_ones_are_not() {
        let file = b"0123456789";
        let offer = Offer { name: "f", size: 10, sha256: digest(file) };
        let mut rx: Receiver<Sha> = Receiver::new(100, 4, 2);
        assert_eq!(rx.offer(&offer), Ok(Answer::Ready { held: 0, max_chunk: 4, window: 2 }));
        let chunk =
            |offset: usize, len: usize| Chunk { name: "f", offset: offset as u64, data: &file[offset..offset + len] };
        // Early: not taken, the answer says where to go on from.
        assert_eq!(rx.chunk(&chunk(4, 4)), Ok(Step::Answer(Answer::Held(0))));
        let Ok(Step::Write { offset: 0, data }) = rx.chunk(&chunk(0, 4)) else { panic!("the first chunk is taken") };
        assert_eq!(rx.wrote(data), Answer::Held(4));
        // Resent: not taken twice.
        assert_eq!(rx.chunk(&chunk(0, 4)), Ok(Step::Answer(Answer::Held(4))));
        assert_eq!(rx.done(&Done { name: "f" }), Err(FileError::Incomplete { held: 4, size: 10 }));
        for (offset, len) in [(4, 4), (8, 2)] {
            let Ok(Step::Write { data, .. }) = rx.chunk(&chunk(offset, len)) else { panic!("taken") };
            rx.wrote(data);
        }
        assert_eq!(
            rx.chunk(&Chunk { name: "f", offset: 8, data: b"89x" }),
            Err(FileError::BeyondEnd { end: 11, size: 10 })
        );
        assert_eq!(rx.chunk(&Chunk { name: "g", offset: 10, data: b"" }), Err(FileError::NotOffered));
        assert_eq!(rx.done(&Done { name: "f" }), Ok(digest(file)));
        assert!(rx.verified().is_some());
        // Offered again (the answer to done was lost): all of it is held.
        assert_eq!(rx.offer(&offer), Ok(Answer::Ready { held: 10, max_chunk: 4, window: 2 }));
        assert!(rx.verified().is_some(), "the same file stays verified");
    }

    #[test]
    fn a_mismatch_discards_the_bytes_and_another_offer_starts_over() {
        let offer = Offer { name: "f", size: 3, sha256: digest(b"abc") };
        let mut rx: Receiver<Sha> = Receiver::new(3, 64, 1);
        assert_eq!(rx.offer(&Offer { size: 4, ..offer }), Err(FileError::TooLarge { size: 4, capacity: 3 }));
        rx.offer(&offer).unwrap();
        let Ok(Step::Write { data, .. }) = rx.chunk(&Chunk { name: "f", offset: 0, data: b"abd" }) else { panic!() };
        rx.wrote(data);
        let Err(FileError::Mismatch { offered, received }) = rx.done(&Done { name: "f" }) else { panic!("mismatch") };
        assert_eq!((offered, received), (digest(b"abc"), digest(b"abd")));
        assert!(rx.transfer().is_none() && rx.verified().is_none(), "nothing half-written stays");
        assert_eq!(rx.done(&Done { name: "f" }), Err(FileError::NotOffered));
        assert_eq!(rx.offer(&offer), Ok(Answer::Ready { held: 0, max_chunk: 64, window: 1 }));
        let other = Offer { name: "g", size: 1, sha256: digest(b"z") };
        assert_eq!(rx.offer(&other), Ok(Answer::Ready { held: 0, max_chunk: 64, window: 1 }));
        assert_eq!(rx.chunk(&Chunk { name: "f", offset: 0, data: b"a" }), Err(FileError::NotOffered));
    }

    #[test]
    fn summaries_fit_a_device_reason() {
        let errors = [
            FileError::Decode,
            FileError::BufferTooSmall,
            FileError::BadName,
            FileError::TooLarge { size: 1, capacity: 0 },
            FileError::NotOffered,
            FileError::BeyondEnd { end: 2, size: 1 },
            FileError::Incomplete { held: 0, size: 1 },
            FileError::Mismatch { offered: [0; 32], received: [1; 32] },
        ];
        for error in errors {
            assert!(error.summary().len() <= 48, "{}", error.summary());
        }
        assert_eq!(FileError::NotOffered.summary(), std::format!("{}", FileError::NotOffered));
    }

    #[test]
    fn requests_round_trip_and_bad_bodies_are_errors() {
        let mut buf = [0u8; 128];
        let requests = [
            FileRequest::Offer(Offer { name: "fw.bin", size: 1 << 40, sha256: [7; 32] }),
            FileRequest::Chunk(Chunk { name: "fw.bin", offset: u64::MAX, data: &[1, 2, 3] }),
            FileRequest::Done(Done { name: "fw.bin" }),
            FileRequest::List,
            FileRequest::Read(Read { name: "fw.bin", offset: 5, len: 65536 }),
        ];
        for request in requests {
            let len = request.encode(&mut buf).unwrap();
            assert_eq!(FileRequest::parse(request.rq_type(), &buf[..len]), Ok(Some(request)));
            if len > 0 {
                assert_eq!(FileRequest::parse(request.rq_type(), &buf[..len - 1]), Err(FileError::Decode));
            }
        }
        assert_eq!(FileRequest::parse(0x7000, b""), Ok(None));
        let chunk = Chunk { name: "fw.bin", offset: u64::MAX, data: &[0; 40] };
        let len = encode(&chunk, &mut buf).unwrap();
        assert!(len <= chunk_overhead("fw.bin") + 40, "{len}");
    }
}
