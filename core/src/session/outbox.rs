//! The client's outbox: registered events the server has not yet acknowledged, in order, in a
//! fixed byte buffer. Each entry is `alias: u16 LE | len: u16 LE | body`, where body is the
//! `Register` body as sent (the inline type first when alias is 0). Entry `i` has sequence
//! number `first_seq + i`. Entries leave only when acknowledged, so they survive any number of
//! reconnects; when the buffer is full, `register` fails with `OutboxFull` and nothing is dropped.

use super::{Error, message};

const ENTRY_HEADER: usize = 4;

#[derive(Debug)]
pub(crate) struct Outbox<const N: usize> {
    bytes: heapless::Vec<u8, N>,
    first_seq: u32,
    len: u32,
    /// Entries already sent on the current link, and the byte offset of the first unsent one.
    sent: u32,
    sent_offset: usize,
}

impl<const N: usize> Outbox<N> {
    pub const fn new() -> Self {
        Outbox { bytes: heapless::Vec::new(), first_seq: 0, len: 0, sent: 0, sent_offset: 0 }
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
        self.bytes.len()
    }

    /// Sent on this link and not yet acknowledged.
    pub fn in_flight(&self) -> u32 {
        self.sent
    }

    /// Appends an entry of `body_len` bytes that `write` fills; returns its sequence number.
    pub fn push(
        &mut self,
        alias: u16,
        body_len: usize,
        write: impl FnOnce(&mut [u8]) -> Result<(), Error>,
    ) -> Result<u32, Error> {
        let body_len = u16::try_from(body_len).map_err(|_| Error::OutboxFull)?;
        let start = self.bytes.len();
        let end = start + ENTRY_HEADER + usize::from(body_len);
        self.bytes.resize(end, 0).map_err(|_| Error::OutboxFull)?;
        if self.bytes.get_mut(start + ENTRY_HEADER..).ok_or(Error::OutboxFull).and_then(write).is_err() {
            self.bytes.truncate(start);
            return Err(Error::OutboxFull);
        }
        if let Some(header) = self.bytes.get_mut(start..start + ENTRY_HEADER) {
            let (alias_field, len_field) = header.split_at_mut(2);
            alias_field.copy_from_slice(&alias.to_le_bytes());
            len_field.copy_from_slice(&body_len.to_le_bytes());
        }
        let seq = self.next_seq();
        self.len += 1;
        Ok(seq)
    }

    fn entry_at(&self, offset: usize) -> Option<(u16, &[u8], usize)> {
        let header = self.bytes.get(offset..offset + ENTRY_HEADER)?;
        let alias = u16::from_le_bytes([*header.first()?, *header.get(1)?]);
        let len = usize::from(u16::from_le_bytes([*header.get(2)?, *header.get(3)?]));
        let body = self.bytes.get(offset + ENTRY_HEADER..offset + ENTRY_HEADER + len)?;
        Some((alias, body, ENTRY_HEADER + len))
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
        let end = self.bytes.len();
        self.bytes.copy_within(offset..end, 0);
        self.bytes.truncate(end - offset);
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

    fn push(outbox: &mut Outbox<32>, body: &[u8]) -> Result<u32, Error> {
        outbox.push(1, body.len(), |out| {
            out.copy_from_slice(body);
            Ok(())
        })
    }

    #[test]
    fn replay_after_rewind_and_release_on_ack() {
        let mut outbox = Outbox::<32>::new();
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
    fn full_outbox_refuses_and_keeps_what_it_has() {
        let mut outbox = Outbox::<32>::new();
        for _ in 0..4 {
            push(&mut outbox, b"1234").unwrap();
        }
        assert_eq!(push(&mut outbox, b"12345678"), Err(Error::OutboxFull));
        assert_eq!(outbox.len(), 4);
        assert_eq!(outbox.bytes_used(), 32);
    }
}
