//! The table of requests this side has sent and awaits responses for: fixed capacity, matched
//! by tag (responses may come in any order), each with its own deadline.

use crate::time::Instant;

/// What an in-flight request was, so its response can be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RequestKind {
    Init,
    Subscribe,
    RegisterRequest,
    Query,
    Ping,
    /// An application request on channel 1.
    App,
}

/// Identifies a request this side sent. Unique for the lifetime of a session: tags keep
/// counting across reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RequestId(pub u64);

#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    pub id: RequestId,
    pub kind: RequestKind,
    pub sent_at: Instant,
    pub deadline: Instant,
}

#[derive(Debug)]
pub(crate) struct Requests<const N: usize> {
    pending: heapless::Vec<Pending, N>,
}

impl<const N: usize> Requests<N> {
    pub const fn new() -> Self {
        Requests { pending: heapless::Vec::new() }
    }

    pub fn is_full(&self) -> bool {
        self.pending.is_full()
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn insert(&mut self, entry: Pending) -> Result<(), Pending> {
        self.pending.push(entry)
    }

    /// Takes the entry answered by a response with this tag.
    pub fn take(&mut self, id: RequestId) -> Option<Pending> {
        let at = self.pending.iter().position(|p| p.id == id)?;
        Some(self.pending.swap_remove(at))
    }

    pub fn contains_kind(&self, kind: RequestKind) -> bool {
        self.pending.iter().any(|p| p.kind == kind)
    }

    /// Takes one entry whose deadline has passed.
    pub fn take_expired(&mut self, now: Instant) -> Option<Pending> {
        let at = self.pending.iter().position(|p| p.deadline <= now)?;
        Some(self.pending.swap_remove(at))
    }

    /// Takes any entry (to fail them all when the link goes down).
    pub fn take_any(&mut self) -> Option<Pending> {
        self.pending.pop()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, deadline: u64) -> Pending {
        let at = Instant::from_millis(0);
        Pending { id: RequestId(id), kind: RequestKind::App, sent_at: at, deadline: Instant::from_millis(deadline) }
    }

    #[test]
    fn out_of_order_responses_and_deadlines() {
        let mut table = Requests::<3>::new();
        table.insert(entry(2, 300)).unwrap();
        table.insert(entry(3, 100)).unwrap();
        table.insert(entry(4, 200)).unwrap();
        assert!(table.insert(entry(5, 50)).is_err(), "a full table refuses");
        assert_eq!(table.take(RequestId(4)).map(|p| p.id), Some(RequestId(4)));
        assert!(table.take(RequestId(4)).is_none(), "a response to an unknown tag matches nothing");
        assert_eq!(table.next_deadline(), Some(Instant::from_millis(100)));
        assert!(table.take_expired(Instant::from_millis(99)).is_none());
        assert_eq!(table.take_expired(Instant::from_millis(100)).map(|p| p.id), Some(RequestId(3)));
        assert_eq!(table.len(), 1);
    }
}
