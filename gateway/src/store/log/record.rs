//! The records of a [`super::LogStore`] segment, and their frames.
//!
//! A segment file is a 24-byte header (magic, the store's id, the segment's number, each 8
//! bytes) and then frames: a marker (`RLF1`, so that the frames after a damaged one can be
//! found), the body's length (`u32`, little-endian) and its complement (a damaged length is not
//! taken for a write a crash cut off), the body's CRC-32 (`u32`), the body.
//! A body is one record; its first byte says which:
//!
//! | kind | record       | body after the kind byte                                                   |
//! |------|--------------|----------------------------------------------------------------------------|
//! | 1    | commit       | events (each: ttl, via, `u32` length, postcard of `EventRef`), sessions, peers |
//! | 2    | retention    | the (timestamp, id) up to which stored events were deleted                 |
//! | 3    | gateway session | a server id and the session given out for its run                       |
//! | 4    | checkpoint   | the state a segment starts from: admission number, sessions, peers, gateway sessions, latest events |
//!
//! Numbers are LEB128 varints unless said otherwise. Every segment starts with a checkpoint, so
//! the oldest segments can be deleted whole once retention emptied them.

use rivulet_core::model::{EventId, EventRef, Timestamp};
use rivulet_core::owned::Event;

use crate::store::{Commit, Hop, PeerCursor};

pub(super) const MAGIC: [u8; 8] = *b"RIVLOG\x00\x01";
/// Magic, store id, segment number.
pub(super) const HEADER_LEN: usize = 24;
/// Marker, body length, its complement and CRC-32 before each body.
pub(super) const FRAME_HEAD: usize = 16;
/// The first bytes of every frame.
pub(super) const MARKER: [u8; 4] = *b"RLF1";
/// A record larger than this is refused (offsets within a segment are `u32`).
pub(super) const MAX_RECORD: usize = 1 << 30;

const COMMIT: u8 = 1;
const RETAIN: u8 = 2;
const SESSION: u8 = 3;
const CHECKPOINT: u8 = 4;

/// A segment's header.
pub(super) fn header(store_id: u64, segment: u64) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..16].copy_from_slice(&store_id.to_le_bytes());
    header[16..].copy_from_slice(&segment.to_le_bytes());
    header
}

/// The store id and segment number of a header, or what is wrong with it.
pub(super) fn parse_header(bytes: &[u8]) -> Result<(u64, u64), String> {
    let mut r = Reader::new(bytes);
    let magic = r.take(8).map_err(|_| format!("{} bytes, too short for a segment header", bytes.len()))?;
    if magic != MAGIC {
        return Err("not a Rivulet log segment (its first bytes are not the magic number)".into());
    }
    Ok((r.u64_le()?, r.u64_le()?))
}

/// What a frame at some offset of a segment is.
pub(super) enum Frame<'a> {
    /// A whole frame whose CRC matches: the body and the frame's length.
    Whole { body: &'a [u8], len: usize },
    /// No whole frame here: cut off by the end of the file, or damaged; why.
    Bad(String),
}

/// The frame at the start of `bytes` (which runs to the end of the file).
pub(super) fn frame(bytes: &[u8]) -> Frame<'_> {
    let Some(len) = head(bytes) else {
        return Frame::Bad(format!("no frame head ({} bytes, or a damaged one)", bytes.len().min(FRAME_HEAD)));
    };
    let mut r = Reader::new(bytes);
    r.pos = FRAME_HEAD - 4;
    let Ok(crc) = r.u32_le() else {
        return Frame::Bad("no frame head".into());
    };
    if len == 0 {
        return Frame::Bad("a frame of length 0".into());
    }
    let Ok(body) = r.take(len) else {
        return Frame::Bad(format!("a frame of {len} bytes with {} after its head", bytes.len() - FRAME_HEAD));
    };
    if crc32fast::hash(body) != crc {
        return Frame::Bad(format!("a frame of {len} bytes whose CRC does not match"));
    }
    Frame::Whole { body, len: FRAME_HEAD + len }
}

/// The body length a frame head at the start of `bytes` declares, if the head is there whole:
/// its marker, and a length that matches its complement.
pub(super) fn head(bytes: &[u8]) -> Option<usize> {
    let mut r = Reader::new(bytes);
    let (marker, len, check) = (r.array::<4>().ok()?, r.u32_le().ok()?, r.u32_le().ok()?);
    (marker == MARKER && check == !len).then_some(len as usize)
}

/// Starts a frame in `out`: its head, filled in by [`end_frame`].
fn begin_frame(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&[0; FRAME_HEAD - MARKER.len()]);
    out.push(kind);
    start
}

fn end_frame(out: &mut [u8], start: usize) -> Result<(), Oversize> {
    let body = out.get(start + FRAME_HEAD..).unwrap_or_default();
    if body.len() > MAX_RECORD {
        return Err(Oversize(body.len()));
    }
    let len = body.len() as u32;
    let head = [len.to_le_bytes(), (!len).to_le_bytes(), crc32fast::hash(body).to_le_bytes()].concat();
    if let Some(slot) = out.get_mut(start + MARKER.len()..start + FRAME_HEAD) {
        slot.copy_from_slice(&head);
    }
    Ok(())
}

/// A record over [`MAX_RECORD`] bytes (its size).
#[derive(Debug)]
pub(super) struct Oversize(pub(super) usize);

/// Why a record could not be written.
#[derive(Debug)]
pub(super) enum EncodeError {
    Event(EventId, postcard::Error),
    Oversize(usize),
}

impl From<Oversize> for EncodeError {
    fn from(e: Oversize) -> Self {
        EncodeError::Oversize(e.0)
    }
}

/// Where an event went in an encoded commit: its offset from the frame's start, and length.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placed {
    pub(super) offset: usize,
    pub(super) len: usize,
}

/// Appends the frame of a commit to `out`, leaving out the events `skip` marks; returns where
/// each written event's bytes are, from the frame's start.
pub(super) fn encode_commit(commit: &Commit, skip: &[bool], out: &mut Vec<u8>) -> Result<Vec<Placed>, EncodeError> {
    let start = begin_frame(out, COMMIT);
    let written = commit.events.len() - skip.iter().filter(|s| **s).count();
    put_varint(out, written as u64);
    let mut placed = Vec::with_capacity(written);
    for (i, event) in commit.events.iter().enumerate() {
        if skip.get(i).copied().unwrap_or(false) {
            continue;
        }
        put_hop(out, commit.hop(i));
        placed.push(put_event(out, start, event)?);
    }
    put_sessions(out, &commit.sessions);
    put_peers(out, &commit.peers);
    end_frame(out, start)?;
    Ok(placed)
}

pub(super) fn encode_retain(through: (Timestamp, EventId), out: &mut Vec<u8>) -> Result<(), Oversize> {
    let start = begin_frame(out, RETAIN);
    put_key(out, through);
    end_frame(out, start)
}

pub(super) fn encode_session(server: u64, session: u64, out: &mut Vec<u8>) -> Result<(), Oversize> {
    let start = begin_frame(out, SESSION);
    put_varint(out, server);
    put_varint(out, session);
    end_frame(out, start)
}

/// The state a segment starts from (see the module's table).
#[derive(Debug, Default)]
pub(super) struct Checkpoint<E> {
    pub(super) last_seq: u64,
    pub(super) sessions: Vec<(u64, u32)>,
    pub(super) peers: Vec<(u64, PeerCursor)>,
    pub(super) gateway_sessions: Vec<(u64, u64)>,
    pub(super) latest: Vec<E>,
}

pub(super) fn encode_checkpoint<E: std::ops::Deref<Target = Event>>(
    checkpoint: &Checkpoint<E>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = begin_frame(out, CHECKPOINT);
    put_varint(out, checkpoint.last_seq);
    put_sessions(out, &checkpoint.sessions);
    put_peers(out, &checkpoint.peers);
    put_varint(out, checkpoint.gateway_sessions.len() as u64);
    for &(server, session) in &checkpoint.gateway_sessions {
        put_varint(out, server);
        put_varint(out, session);
    }
    put_varint(out, checkpoint.latest.len() as u64);
    for event in &checkpoint.latest {
        put_event(out, start, event)?;
    }
    end_frame(out, start)?;
    Ok(())
}

/// A decoded record; events borrow the segment's bytes.
pub(super) enum Record<'a> {
    Commit { events: Vec<(Hop, Placed, EventRef<'a>)>, sessions: Vec<(u64, u32)>, peers: Vec<(u64, PeerCursor)> },
    Retain((Timestamp, EventId)),
    Session { server: u64, session: u64 },
    Checkpoint(Checkpoint<EventRef<'a>>),
}

/// Decodes the body of a frame whose CRC matched. `body` starts [`FRAME_HEAD`] bytes into the
/// frame; offsets of events are from the frame's start.
pub(super) fn decode(body: &[u8]) -> Result<Record<'_>, String> {
    let mut r = Reader::new(body);
    let record = match r.u8()? {
        COMMIT => {
            let count = r.count()?;
            let mut events = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                let hop = r.hop()?;
                let (placed, event) = r.event()?;
                events.push((hop, placed, event));
            }
            Record::Commit { events, sessions: r.sessions()?, peers: r.peers()? }
        }
        RETAIN => Record::Retain(r.key()?),
        SESSION => Record::Session { server: r.varint()?, session: r.varint()? },
        CHECKPOINT => {
            let last_seq = r.varint()?;
            let sessions = r.sessions()?;
            let peers = r.peers()?;
            let count = r.count()?;
            let mut gateway_sessions = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                gateway_sessions.push((r.varint()?, r.varint()?));
            }
            let count = r.count()?;
            let mut latest = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                latest.push(r.event()?.1);
            }
            Record::Checkpoint(Checkpoint { last_seq, sessions, peers, gateway_sessions, latest })
        }
        kind => return Err(format!("a record of unknown kind {kind}")),
    };
    if r.pos != body.len() {
        return Err(format!("{} stray bytes after the record", body.len() - r.pos));
    }
    Ok(record)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_hop(out: &mut Vec<u8>, hop: Hop) {
    out.push(hop.ttl);
    match hop.via {
        None => out.push(0),
        Some(via) => {
            out.push(1);
            out.extend_from_slice(&via.to_le_bytes());
        }
    }
}

/// Writes an event's length (`u32`, little-endian) and postcard bytes; where they are from the
/// frame at `start`.
fn put_event(out: &mut Vec<u8>, start: usize, event: &Event) -> Result<Placed, EncodeError> {
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let offset = out.len() - start;
    let bytes =
        postcard::to_extend(&event.as_ref(), std::mem::take(out)).map_err(|e| EncodeError::Event(event.id, e))?;
    *out = bytes;
    let len = out.len() - start - offset;
    let len32 = u32::try_from(len).map_err(|_| EncodeError::Oversize(len))?;
    if let Some(slot) = out.get_mut(len_at..len_at + 4) {
        slot.copy_from_slice(&len32.to_le_bytes());
    }
    Ok(Placed { offset, len })
}

fn put_sessions(out: &mut Vec<u8>, sessions: &[(u64, u32)]) {
    put_varint(out, sessions.len() as u64);
    for &(session, next) in sessions {
        put_varint(out, session);
        put_varint(out, u64::from(next));
    }
}

fn put_peers(out: &mut Vec<u8>, peers: &[(u64, PeerCursor)]) {
    put_varint(out, peers.len() as u64);
    for &(peer, cursor) in peers {
        put_varint(out, peer);
        out.extend_from_slice(&cursor.store_id.to_le_bytes());
        put_varint(out, cursor.seq);
    }
}

fn put_key(out: &mut Vec<u8>, (t, id): (Timestamp, EventId)) {
    out.extend_from_slice(&t.s.to_le_bytes());
    out.extend_from_slice(&t.us.to_le_bytes());
    for n in [id.server, id.session, id.instance] {
        out.extend_from_slice(&n.to_le_bytes());
    }
}

/// Reads a body; every read past its end is an error, never a panic.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.bytes.len());
        let taken = end.and_then(|end| self.bytes.get(self.pos..end));
        let taken = taken.ok_or_else(|| format!("the record ends at byte {} of {}", self.bytes.len(), self.pos + n))?;
        self.pos += n;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32_le(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64_le(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(format!("a number longer than 10 bytes at byte {}", self.pos))
    }

    /// A count of items that each take at least a byte (so a damaged count cannot allocate much).
    fn count(&mut self) -> Result<usize, String> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.bytes.len() - self.pos)
            .ok_or_else(|| format!("a count of {n} items in a record of {} bytes", self.bytes.len()))
    }

    fn hop(&mut self) -> Result<Hop, String> {
        let ttl = self.u8()?;
        let via = match self.u8()? {
            0 => None,
            1 => Some(self.u64_le()?),
            other => return Err(format!("a hop flag of {other}")),
        };
        Ok(Hop { ttl, via })
    }

    fn event(&mut self) -> Result<(Placed, EventRef<'a>), String> {
        let len = self.u32_le()? as usize;
        let offset = FRAME_HEAD + self.pos;
        let bytes = self.take(len)?;
        let event = crate::store::query::decode_event(bytes)?;
        Ok((Placed { offset, len }, event))
    }

    fn sessions(&mut self) -> Result<Vec<(u64, u32)>, String> {
        let count = self.count()?;
        let mut out = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let session = self.varint()?;
            let next = self.varint()?;
            out.push((session, u32::try_from(next).map_err(|_| format!("a sequence number of {next}"))?));
        }
        Ok(out)
    }

    fn peers(&mut self) -> Result<Vec<(u64, PeerCursor)>, String> {
        let count = self.count()?;
        let mut out = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let peer = self.varint()?;
            let store_id = self.u64_le()?;
            out.push((peer, PeerCursor { store_id, seq: self.varint()? }));
        }
        Ok(out)
    }

    fn key(&mut self) -> Result<(Timestamp, EventId), String> {
        let s = self.u64_le()? as i64;
        let us = self.u32_le()?;
        let id = EventId { server: self.u64_le()?, session: self.u64_le()?, instance: self.u64_le()? };
        Ok((Timestamp { s, us }, id))
    }
}
