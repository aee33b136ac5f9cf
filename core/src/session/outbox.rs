//! The client's outbox: registered events the server has not yet acknowledged, in order, in a
//! byte buffer the caller provides. Each entry is `alias: u16 LE | len: u16 LE | body`, where
//! body is the `Register` body as sent (the inline type first when alias is 0). Entry `i` has
//! sequence number `first_seq + i`. Entries leave only when acknowledged, so they survive any
//! number of reconnects; when the buffer is full, `register` fails with `OutboxFull` and nothing
//! is dropped.

use super::{Error, message};

const ENTRY_HEADER: usize = 4;

/// Bytes a client's outbox lives in; its length is the outbox's capacity. The caller chooses:
/// `[u8; N]` inline (the default, sized at compile time; the embassy runner holds one),
/// `&mut [u8]` borrowed from a `static` or the stack, or `Box<[u8]>` / `Vec<u8>` on a host (a zeroed allocation
/// costs no memory until the outbox fills it). A `Vec` counts by its length, not its capacity.
pub trait OutboxStorage: AsRef<[u8]> + AsMut<[u8]> {}

impl<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized> OutboxStorage for T {}

pub(crate) struct Outbox<S> {
    storage: S,
    /// Bytes of `storage` the entries take, from its start.
    used: usize,
    first_seq: u32,
    len: u32,
    /// Entries already sent on the current link, and the byte offset of the first unsent one.
    sent: u32,
    sent_offset: usize,
}

/// The entries' bookkeeping, not the bytes (a host's outbox is megabytes).
impl<S: OutboxStorage> core::fmt::Debug for Outbox<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Outbox")
            .field("first_seq", &self.first_seq)
            .field("len", &self.len)
            .field("used", &self.used)
            .field("capacity", &self.storage.as_ref().len())
            .field("sent", &self.sent)
            .finish()
    }
}

impl<S: OutboxStorage> Outbox<S> {
    pub const fn new(storage: S) -> Self {
        Outbox { storage, used: 0, first_seq: 0, len: 0, sent: 0, sent_offset: 0 }
    }

    pub fn first_seq(&self) -> u32 {
        self.first_seq
    }

    pub fn next_seq(&self) -> u32 {
        self.first_seq.wrapping_add(self.len)
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn bytes_used(&self) -> usize {
        self.used
    }

    pub fn capacity(&self) -> usize {
        self.storage.as_ref().len()
    }

    /// Sent on this link and not yet acknowledged.
    pub fn in_flight(&self) -> u32 {
        self.sent
    }

    /// Appends an entry of `body_len` bytes that `write` fills whole; returns its sequence number.
    /// Nothing changes unless the entry fits and `write` succeeds.
    pub fn push(
        &mut self,
        alias: u16,
        body_len: usize,
        write: impl FnOnce(&mut [u8]) -> Result<(), Error>,
    ) -> Result<u32, Error> {
        let body_len = u16::try_from(body_len).map_err(|_| Error::OutboxFull)?;
        let end = self.used.checked_add(ENTRY_HEADER + usize::from(body_len)).ok_or(Error::OutboxFull)?;
        let entry = self.storage.as_mut().get_mut(self.used..end).ok_or(Error::OutboxFull)?;
        let (header, body) = entry.split_first_chunk_mut::<ENTRY_HEADER>().ok_or(Error::OutboxFull)?;
        write(body).map_err(|_| Error::OutboxFull)?;
        let ([a0, a1], [l0, l1]) = (alias.to_le_bytes(), body_len.to_le_bytes());
        *header = [a0, a1, l0, l1];
        self.used = end;
        let seq = self.next_seq();
        self.len += 1;
        Ok(seq)
    }

    fn entry_at(&self, offset: usize) -> Option<(u16, &[u8], usize)> {
        let entries = self.storage.as_ref().get(..self.used)?;
        let (&[a0, a1, l0, l1], rest) = entries.get(offset..)?.split_first_chunk::<ENTRY_HEADER>()?;
        let len = usize::from(u16::from_le_bytes([l0, l1]));
        Some((u16::from_le_bytes([a0, a1]), rest.get(..len)?, ENTRY_HEADER + len))
    }

    /// The first entry not yet sent on this link: (seq, alias, body).
    pub fn next_unsent(&self) -> Option<(u32, u16, &[u8])> {
        let (alias, body, _) = self.entry_at(self.sent_offset)?;
        Some((self.first_seq.wrapping_add(self.sent), alias, body))
    }

    pub fn mark_sent(&mut self) {
        if let Some((_, _, size)) = self.entry_at(self.sent_offset) {
            self.sent_offset += size;
            self.sent += 1;
        }
    }

    /// A new link: everything unacknowledged goes again.
    pub fn rewind(&mut self) {
        self.sent = 0;
        self.sent_offset = 0;
    }

    /// Drops entries with sequence numbers below `seq` (they are registered).
    pub fn release_below(&mut self, seq: u32) -> u32 {
        let count = seq.wrapping_sub(self.first_seq).min(self.len);
        if !message::seq_at_or_after(seq, self.first_seq) {
            return 0; // `seq` is behind us
        }
        let mut offset = 0;
        for _ in 0..count {
            match self.entry_at(offset) {
                Some((_, _, size)) => offset += size,
                None => break,
            }
        }
        if let Some(entries) = self.storage.as_mut().get_mut(..self.used)
            && offset <= entries.len()
        {
            entries.copy_within(offset.., 0);
            self.used -= offset;
        }
        self.len -= count;
        // A server ahead of everything we hold (it kept more than we remember) sets our numbering.
        self.first_seq = if self.len == 0 { seq } else { self.first_seq.wrapping_add(count) };
        self.sent = self.sent.saturating_sub(count);
        self.sent_offset = self.sent_offset.saturating_sub(offset);
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(outbox: &mut Outbox<impl OutboxStorage>, body: &[u8]) -> Result<u32, Error> {
        outbox.push(1, body.len(), |out| {
            out.copy_from_slice(body);
            Ok(())
        })
    }

    #[test]
    fn replay_after_rewind_and_release_on_ack() {
        let mut outbox = Outbox::new([0; 32]);
        assert_eq!(push(&mut outbox, b"aa"), Ok(0));
        assert_eq!(push(&mut outbox, b"bbb"), Ok(1));
        assert_eq!(push(&mut outbox, b"c"), Ok(2));
        assert_eq!(outbox.next_unsent(), Some((0, 1, &b"aa"[..])));
        outbox.mark_sent();
        outbox.mark_sent();
        assert_eq!(outbox.next_unsent(), Some((2, 1, &b"c"[..])));
        outbox.rewind();
        assert_eq!(outbox.next_unsent(), Some((0, 1, &b"aa"[..])), "a new link starts from the oldest");
        outbox.mark_sent();
        assert_eq!(outbox.release_below(1), 1);
        assert_eq!(outbox.next_unsent(), Some((1, 1, &b"bbb"[..])));
        assert_eq!(outbox.release_below(1), 0, "an old ack releases nothing");
        assert_eq!(outbox.release_below(3), 2);
        assert_eq!(outbox.len(), 0);
        assert_eq!(outbox.next_seq(), 3);
        assert_eq!(outbox.release_below(9), 0);
        assert_eq!(outbox.next_seq(), 9, "a server that kept more than we remember sets the numbering");
    }

    #[test]
    fn borrowed_storage_holds_what_fits_and_a_failed_write_changes_nothing() {
        let mut bytes = [0xee; 12];
        let mut outbox = Outbox::new(&mut bytes[..]);
        assert_eq!(outbox.capacity(), 12);
        assert_eq!(outbox.push(1, 3, |_| Err(Error::Encode)), Err(Error::OutboxFull));
        assert_eq!((outbox.len(), outbox.bytes_used(), outbox.next_seq()), (0, 0, 0), "nothing taken");
        assert_eq!(push(&mut outbox, b"abc"), Ok(0));
        assert_eq!(push(&mut outbox, b"defgh"), Err(Error::OutboxFull), "an entry of 9 bytes, 5 left");
        assert_eq!(push(&mut outbox, b"d"), Ok(1));
        assert_eq!(outbox.next_unsent(), Some((0, 1, &b"abc"[..])));
        assert_eq!(outbox.release_below(1), 1);
        assert_eq!(outbox.next_unsent(), Some((1, 1, &b"d"[..])), "moved to the front");
        assert_eq!(outbox.bytes_used(), 5);
        assert_eq!(bytes[..5], [1, 0, 1, 0, b'd'], "alias and length little-endian, then the body");
    }

    #[test]
    fn full_outbox_refuses_and_keeps_what_it_has() {
        let mut outbox = Outbox::new([0; 32]);
        for _ in 0..4 {
            push(&mut outbox, b"1234").unwrap();
        }
        assert_eq!(push(&mut outbox, b"12345678"), Err(Error::OutboxFull));
        assert_eq!(outbox.len(), 4);
        assert_eq!(outbox.bytes_used(), 32);
    }
}
