//! The server's half of exactly-once registration (docs/PROTOCOL.md §4.4, §5.1), written once
//! for every server: where an init's session continues, and what a registration's sequence
//! number means against the one its session expects next.
//!
//! - An init naming a known session resumes it at the next sequence number expected; an unknown
//!   or absent session starts a new one at the client's `first_seq`.
//! - A registration at the expected number is [`Arrival::Fresh`]: store it, then expect the next.
//!   One below is a [`Arrival::Replay`] (resent after its ack was lost): acknowledge it, do not
//!   store it again. One above is a [`Arrival::Gap`]: registrations in between never came, which
//!   the protocol rules out.
//!
//! Sequence numbers wrap: they compare within half the range ([`message::seq_at_or_after`]).
//!
//! [`SessionTable`] keeps `session → next expected` for a server whose writes are durable at
//! once. A server that tracks two numbers (the next one handed to its store, and the next one
//! durable) keeps its own table, classifies with [`Arrival::of`] against the first, and resumes
//! inits at the second.

use super::message;

/// What a registration is, against the sequence number its session expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Arrival {
    /// The expected one: store it; the session then expects the one after.
    Fresh,
    /// Before the expected one: stored already (its ack was lost with a link), not stored again.
    Replay,
    /// After the expected one: those in between never arrived. The peer broke the protocol.
    Gap { expected: u32 },
}

impl Arrival {
    /// Classifies registration `seq` of a session that expects `expected` next.
    pub fn of(seq: u32, expected: u32) -> Self {
        if seq == expected {
            Arrival::Fresh
        } else if message::seq_at_or_after(seq, expected) {
            Arrival::Gap { expected }
        } else {
            Arrival::Replay
        }
    }
}

/// Why a [`SessionTable`] could not start a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TableError {
    /// Every slot holds a session: [`SessionTable::forget`] one first.
    Full,
    /// The id maker gave only 0 or ids already in use.
    NoFreeId,
}

impl core::fmt::Display for TableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TableError::Full => f.write_str("session table full"),
            TableError::NoFreeId => f.write_str("no free session id"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TableError {}

#[derive(Debug, Clone, Copy)]
struct Entry {
    session: u64,
    next_seq: u32,
}

/// Up to `N` client sessions and the sequence number each expects next; fixed capacity, no
/// allocation. Session id 0 is never handed out, so an init naming it starts a new session.
#[derive(Debug, Clone)]
pub struct SessionTable<const N: usize> {
    entries: heapless::Vec<Entry, N>,
}

impl<const N: usize> Default for SessionTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> SessionTable<N> {
    pub const fn new() -> Self {
        SessionTable { entries: heapless::Vec::new() }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The sequence number `session` expects next, if the table holds it.
    pub fn next_seq(&self, session: u64) -> Option<u32> {
        self.entries.iter().find(|e| e.session == session).map(|e| e.next_seq)
    }

    /// Where an init continues, as `(session, next_seq)`: the `requested` session where it is
    /// known, else a new one from `new_id` at the client's `first_seq`. `new_id` is asked again
    /// while it gives 0 or an id in use, at most `N + 2` times (enough for any maker that never
    /// repeats itself).
    pub fn resolve(
        &mut self,
        requested: Option<u64>,
        first_seq: u32,
        mut new_id: impl FnMut() -> u64,
    ) -> Result<(u64, u32), TableError> {
        let requested = requested.filter(|&session| session != 0);
        if let Some(known) = requested.and_then(|session| self.next_seq(session).map(|next| (session, next))) {
            return Ok(known);
        }
        if self.entries.is_full() {
            return Err(TableError::Full);
        }
        for _ in 0..N.saturating_add(2) {
            let session = new_id();
            if session != 0 && self.next_seq(session).is_none() {
                self.insert(session, first_seq)?;
                return Ok((session, first_seq));
            }
        }
        Err(TableError::NoFreeId)
    }

    /// Classifies registration `seq` of `session` ([`Arrival::of`]) and, when it is fresh,
    /// advances the session past it. `None` for a session the table does not hold.
    pub fn arrive(&mut self, session: u64, seq: u32) -> Option<Arrival> {
        let entry = self.entries.iter_mut().find(|e| e.session == session)?;
        let arrival = Arrival::of(seq, entry.next_seq);
        if arrival == Arrival::Fresh {
            entry.next_seq = seq.wrapping_add(1);
        }
        Some(arrival)
    }

    /// Sets where `session` continues, adding it if new: a session a store remembered across a
    /// restart, or one whose registrations a store has written up to `next_seq`.
    pub fn insert(&mut self, session: u64, next_seq: u32) -> Result<(), TableError> {
        match self.entries.iter_mut().find(|e| e.session == session) {
            Some(entry) => {
                entry.next_seq = next_seq;
                Ok(())
            }
            None => self.entries.push(Entry { session, next_seq }).map_err(|_| TableError::Full),
        }
    }

    /// Drops `session`; returns the sequence number it expected. An init naming it later starts
    /// a new session.
    pub fn forget(&mut self, session: u64) -> Option<u32> {
        let next_seq = self.next_seq(session)?;
        self.entries.retain(|e| e.session != session);
        Some(next_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(start: u64) -> impl FnMut() -> u64 {
        let mut next = start;
        move || {
            next += 1;
            next - 1
        }
    }

    #[test]
    fn arrivals_compare_with_wrap_around() {
        assert_eq!(Arrival::of(5, 5), Arrival::Fresh);
        assert_eq!(Arrival::of(4, 5), Arrival::Replay);
        assert_eq!(Arrival::of(0, 5), Arrival::Replay);
        assert_eq!(Arrival::of(6, 5), Arrival::Gap { expected: 5 });
        // Across the wrap: u32::MAX comes right before 0.
        assert_eq!(Arrival::of(0, u32::MAX), Arrival::Gap { expected: u32::MAX });
        assert_eq!(Arrival::of(u32::MAX, 0), Arrival::Replay);
        assert_eq!(Arrival::of(u32::MAX - 10, 3), Arrival::Replay);
        assert_eq!(Arrival::of(3, u32::MAX - 10), Arrival::Gap { expected: u32::MAX - 10 });
        // Half the range apart is the boundary: at or after within it, before beyond it.
        assert_eq!(Arrival::of(u32::MAX / 2, 0), Arrival::Gap { expected: 0 });
        assert_eq!(Arrival::of(u32::MAX / 2 + 1, 0), Arrival::Replay);
    }

    #[test]
    fn an_init_resumes_a_known_session_and_starts_others_at_first_seq() {
        let mut table = SessionTable::<4>::new();
        let mut ids = counter(100);
        assert_eq!(table.resolve(None, 7, &mut ids), Ok((100, 7)), "no session: a new one at first_seq");
        assert_eq!(table.arrive(100, 7), Some(Arrival::Fresh));
        assert_eq!(table.arrive(100, 8), Some(Arrival::Fresh));
        assert_eq!(table.resolve(Some(100), 0, &mut ids), Ok((100, 9)), "known: where it stands");
        assert_eq!(table.resolve(Some(55), 3, &mut ids), Ok((101, 3)), "unknown: a new one at first_seq");
        table.insert(0, 9).unwrap();
        assert_eq!(table.resolve(Some(0), 4, &mut ids), Ok((102, 4)), "0 is never a session to resume");
        assert_eq!(table.next_seq(100), Some(9));
        assert_eq!(table.forget(100), Some(9));
        assert_eq!(table.resolve(Some(100), 2, &mut ids), Ok((103, 2)), "forgotten: starts over");
        assert_eq!(table.len(), 4);
    }

    #[test]
    fn replays_and_gaps_leave_the_session_where_it_was() {
        let mut table = SessionTable::<2>::new();
        table.insert(1, u32::MAX).unwrap();
        assert_eq!(table.arrive(1, u32::MAX - 1), Some(Arrival::Replay));
        assert_eq!(table.arrive(1, 0), Some(Arrival::Gap { expected: u32::MAX }));
        assert_eq!(table.next_seq(1), Some(u32::MAX), "neither moved it");
        assert_eq!(table.arrive(1, u32::MAX), Some(Arrival::Fresh));
        assert_eq!(table.next_seq(1), Some(0), "wraps to 0");
        assert_eq!(table.arrive(1, 0), Some(Arrival::Fresh));
        assert_eq!(table.arrive(2, 0), None, "a session the table does not hold");
    }

    #[test]
    fn a_full_table_refuses_new_sessions_but_resumes_known_ones() {
        let mut table = SessionTable::<2>::new();
        let mut ids = counter(1);
        assert_eq!(table.resolve(None, 0, &mut ids), Ok((1, 0)));
        assert_eq!(table.resolve(None, 0, &mut ids), Ok((2, 0)));
        assert_eq!(table.resolve(None, 0, &mut ids), Err(TableError::Full));
        assert_eq!(table.insert(3, 0), Err(TableError::Full));
        assert_eq!(table.resolve(Some(2), 0, &mut ids), Ok((2, 0)));
        assert_eq!(table.insert(2, 40), Ok(()), "a known session moves");
        assert_eq!(table.next_seq(2), Some(40));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn ids_in_use_or_zero_are_skipped_and_a_stuck_maker_is_an_error() {
        let mut table = SessionTable::<3>::new();
        table.insert(5, 0).unwrap();
        let mut given = [0, 5, 6].into_iter();
        assert_eq!(table.resolve(None, 1, || given.next().unwrap_or(0)), Ok((6, 1)));
        assert_eq!(table.resolve(None, 1, || 5), Err(TableError::NoFreeId));
        assert_eq!(table.len(), 2, "nothing added");
    }
}
