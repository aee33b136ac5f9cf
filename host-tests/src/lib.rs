//! Helpers shared by the host tests: a tokio clock for the core driver, a gateway stand-in that
//! stores registrations with session resume, and a byte pipe that corrupts on purpose.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use rivulet_core::model::{EventId, Status, Timestamp};
use rivulet_core::session::{Accepted, InitRequest, Limits};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use rivulet_tokio::TokioClock;

pub mod peers;

/// One stored registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub session: u64,
    pub seq: u32,
    pub id: EventId,
    pub event_type: String,
    pub payload: Option<String>,
}

/// What a gateway keeps across connections: stored events and, per client session, the next
/// sequence number it expects.
#[derive(Debug, Default)]
pub struct Gateway {
    pub stored: Vec<Stored>,
    pub sessions: HashMap<u64, u32>,
    next_session: u64,
    next_instance: u64,
}

impl Gateway {
    pub const SERVER_ID: u64 = 7;
    pub const SERVER_SESSION: u64 = 1;

    /// The answer to an init: resume a known session, or start a new one at the client's
    /// `first_seq`.
    pub fn accept(&mut self, request: &InitRequest<'_>) -> Accepted {
        let (session, next_seq) = match request.session.and_then(|s| self.sessions.get(&s).map(|n| (s, *n))) {
            Some(known) => known,
            None => {
                self.next_session += 1;
                self.sessions.insert(self.next_session, request.first_seq);
                (self.next_session, request.first_seq)
            }
        };
        Accepted {
            version: rivulet_core::session::message::PROTOCOL_VERSION,
            capabilities: 0,
            status: Status::Operational,
            server_id: Self::SERVER_ID,
            server_session: Self::SERVER_SESSION,
            session,
            next_seq,
            limits: Limits { window: 64, aliases: 64, max_packet: 4096 },
            keepalive_ms: 20_000,
        }
    }

    /// Stores a registration, refusing a sequence number it has seen (it never should see one).
    pub fn store(&mut self, session: u64, seq: u32, event_type: String, payload: Option<String>) -> EventId {
        let next = self.sessions.entry(session).or_insert(seq);
        assert_eq!(seq, *next, "registrations of a session arrive in order, each once");
        *next += 1;
        self.next_instance += 1;
        let id = EventId { server: Self::SERVER_ID, session: Self::SERVER_SESSION, instance: self.next_instance };
        self.stored.push(Stored { session, seq, id, event_type, payload });
        id
    }

    pub fn timestamp(&self) -> Timestamp {
        Timestamp { s: 1_700_000_000, us: self.next_instance as u32 }
    }
}

/// A tokio byte stream that damages chosen writes, to test serial recovery: it flips a byte in
/// some, and swallows others whole (a driver's write holds whole frames, so these vanish with
/// their delimiters, which no checksum can notice).
#[derive(Debug)]
pub struct Corrupting<T> {
    inner: T,
    writes: usize,
    /// Writes (0-based) whose middle byte gets flipped.
    pub corrupt_writes: Vec<usize>,
    /// Writes (0-based) that never arrive.
    pub lost_writes: Vec<usize>,
}

impl<T> Corrupting<T> {
    pub fn new(inner: T, corrupt_writes: Vec<usize>) -> Self {
        Corrupting { inner, writes: 0, corrupt_writes, lost_writes: Vec::new() }
    }

    pub fn losing(inner: T, lost_writes: Vec<usize>) -> Self {
        Corrupting { inner, writes: 0, corrupt_writes: Vec::new(), lost_writes }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Corrupting<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Corrupting<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.lost_writes.contains(&this.writes) {
            this.writes += 1;
            return Poll::Ready(Ok(buf.len()));
        }
        if this.corrupt_writes.contains(&this.writes) && buf.len() > 2 {
            let mut copy = buf.to_vec();
            let mid = copy.len() / 2;
            copy[mid] ^= 0x5a;
            let result = Pin::new(&mut this.inner).poll_write(cx, &copy);
            if result.is_ready() {
                this.writes += 1;
            }
            return result;
        }
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if result.is_ready() {
            this.writes += 1;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
