//! What a [`super::LogStore`] keeps in memory: where each stored event is in the segments, the
//! time, source-time and id orders over them, the latest event of each type, sessions and peer
//! cursors. Rebuilt from the segments when the store opens.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::sync::Arc;

use rivulet_core::model::{EventId, EventRef, EventTypeRef, Timestamp};
use rivulet_core::owned::{Event, EventPath};

use super::record::{Checkpoint, Record};
use crate::store::{Hop, PeerCursor};

/// A position in the time (or source-time) order: equal times order by id.
pub(super) type TimeKey = (Timestamp, EventId);

/// One admission number's event: where its bytes are and what queries filter on.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) segment: u32,
    pub(super) offset: u32,
    pub(super) len: u32,
    /// [`crate::store::page_bytes`] of the event.
    pub(super) size: u32,
    pub(super) type_no: u32,
    pub(super) timestamp: Timestamp,
    pub(super) source: Option<Timestamp>,
    /// False once retention deleted it.
    pub(super) live: bool,
}

/// A segment file: open for reading, its size and how many of its events are not deleted.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) file: Arc<File>,
    pub(super) bytes: u64,
    pub(super) live: u64,
}

#[derive(Debug, Default)]
pub(super) struct Index {
    /// Admission number `base + i` is `slots[i]`; the front is trimmed of deleted events.
    slots: VecDeque<Slot>,
    base: u64,
    /// The number of the last admission ever made.
    pub(super) last_seq: u64,
    pub(super) by_time: BTreeMap<TimeKey, u64>,
    pub(super) by_source: BTreeMap<TimeKey, u64>,
    pub(super) by_id: BTreeMap<EventId, u64>,
    /// The hops of events that came from a peer (the others' is [`Hop::LOCAL`]), by number.
    hops: HashMap<u64, Hop>,
    /// Each stored type once, numbered (packed segments → number, number → type).
    type_numbers: HashMap<Box<[u8]>, u32>,
    pub(super) types: Vec<EventPath>,
    /// The newest event of each type (by timestamp; on equal ones the later), by packed type;
    /// kept when retention deletes it.
    pub(super) latest: HashMap<Box<[u8]>, Arc<Event>>,
    pub(super) sessions: HashMap<u64, u32>,
    pub(super) peers: HashMap<u64, PeerCursor>,
    /// The last session given out to each server's runs.
    pub(super) gateway_sessions: HashMap<u64, u64>,
    pub(super) segments: BTreeMap<u64, Segment>,
    /// Events stored and not deleted.
    pub(super) live: u64,
}

/// Where an event's bytes are, to read them after the index's lock is let go.
#[derive(Debug, Clone)]
pub(super) struct Place {
    pub(super) file: Arc<File>,
    pub(super) segment: u64,
    pub(super) offset: u32,
    pub(super) len: u32,
}

impl Index {
    /// Numbers from `last_seq + 1` on: what a store whose oldest segment starts there begins with.
    pub(super) fn start_at(&mut self, last_seq: u64) {
        self.last_seq = self.last_seq.max(last_seq);
        if self.slots.is_empty() {
            self.base = self.last_seq + 1;
        }
    }

    pub(super) fn slot(&self, seq: u64) -> Option<&Slot> {
        seq.checked_sub(self.base).and_then(|i| usize::try_from(i).ok()).and_then(|i| self.slots.get(i))
    }

    pub(super) fn place(&self, seq: u64) -> Option<Place> {
        let slot = self.slot(seq)?;
        let segment = u64::from(slot.segment);
        let file = self.segments.get(&segment)?.file.clone();
        Some(Place { file, segment, offset: slot.offset, len: slot.len })
    }

    pub(super) fn hop(&self, seq: u64) -> Hop {
        self.hops.get(&seq).copied().unwrap_or(Hop::LOCAL)
    }

    /// The admission numbers held, oldest first, from `from` on.
    pub(super) fn seqs_from(&self, from: u64) -> std::ops::RangeInclusive<u64> {
        from.max(self.base)..=self.last_seq
    }

    pub(super) fn type_of(&self, slot: &Slot) -> Option<EventTypeRef<'_>> {
        self.types.get(slot.type_no as usize).map(EventPath::as_ref)
    }

    fn type_no(&mut self, ty: EventTypeRef<'_>) -> u32 {
        if let Some(&no) = self.type_numbers.get(ty.as_packed()) {
            return no;
        }
        let no = self.types.len() as u32;
        self.types.push(EventPath::from(ty));
        self.type_numbers.insert(ty.as_packed().into(), no);
        no
    }

    /// Adds an event admitted as number `last_seq + 1`, whose bytes are at `offset` of `segment`.
    pub(super) fn add(&mut self, event: &EventRef<'_>, hop: Hop, segment: u32, offset: u32, len: u32) {
        let type_no = self.type_no(event.event_type);
        self.last_seq += 1;
        let seq = self.last_seq;
        if self.slots.is_empty() {
            self.base = seq;
        }
        let size = crate::store::query::stored_page_bytes(event) as u32;
        let (timestamp, source) = (event.timestamp, event.source_timestamp);
        self.slots.push_back(Slot { segment, offset, len, size, type_no, timestamp, source, live: true });
        if hop != Hop::LOCAL {
            self.hops.insert(seq, hop);
        }
        self.by_time.insert((timestamp, event.id), seq);
        if let Some(t) = source {
            self.by_source.insert((t, event.id), seq);
        }
        self.by_id.insert(event.id, seq);
        if let Some(segment) = self.segments.get_mut(&u64::from(segment)) {
            segment.live += 1;
        }
        self.live += 1;
    }

    /// Whether `event` is newer than the latest of its type (so it becomes the latest).
    pub(super) fn is_latest(&self, event: &EventRef<'_>) -> bool {
        self.latest.get(event.event_type.as_packed()).is_none_or(|stored| event.timestamp >= stored.timestamp)
    }

    pub(super) fn set_latest(&mut self, event: Arc<Event>) {
        let packed = event.event_type.as_ref().as_packed();
        match self.latest.get_mut(packed) {
            Some(stored) => *stored = event,
            None => {
                let key: Box<[u8]> = packed.into();
                self.latest.insert(key, event);
            }
        }
    }

    /// The key retention would delete up to for events older than `before` and then beyond
    /// `keep`, at most `chunk` of them; with how many that is.
    pub(super) fn retention_point(
        &self,
        before: Option<Timestamp>,
        keep: Option<u64>,
        chunk: u64,
    ) -> Option<(TimeKey, u64)> {
        let mut through = None;
        let mut count = 0;
        for (&key, _) in self.by_time.iter().take(chunk as usize) {
            let old = before.is_some_and(|before| key.0 < before);
            let beyond = keep.is_some_and(|keep| self.live - count > keep);
            if !old && !beyond {
                break;
            }
            through = Some(key);
            count += 1;
        }
        through.map(|key| (key, count))
    }

    /// Deletes every event at or before `through` in the time order; how many.
    pub(super) fn delete_through(&mut self, through: TimeKey) -> u64 {
        let mut removed = 0;
        while let Some(entry) = self.by_time.first_entry() {
            if *entry.key() > through {
                break;
            }
            let ((_, id), seq) = entry.remove_entry();
            self.by_id.remove(&id);
            let Some(slot) = seq.checked_sub(self.base).and_then(|i| self.slots.get_mut(i as usize)) else {
                continue;
            };
            slot.live = false;
            if let Some(t) = slot.source {
                self.by_source.remove(&(t, id));
            }
            self.hops.remove(&seq);
            if let Some(segment) = self.segments.get_mut(&u64::from(slot.segment)) {
                segment.live = segment.live.saturating_sub(1);
            }
            self.live = self.live.saturating_sub(1);
            removed += 1;
        }
        while self.slots.front().is_some_and(|slot| !slot.live) {
            self.slots.pop_front();
            self.base += 1;
        }
        removed
    }

    /// The oldest segments that hold no event any more, not counting `active`: they can go.
    pub(super) fn empty_prefix(&self, active: u64) -> Vec<u64> {
        self.segments
            .iter()
            .take_while(|(no, segment)| **no != active && segment.live == 0)
            .map(|(no, _)| *no)
            .collect()
    }

    /// The highest stored id of `server`.
    pub(super) fn last_id(&self, server: u64) -> Option<EventId> {
        let ids = EventId { server, session: 0, instance: 0 }..=EventId { server, session: !0, instance: !0 };
        self.by_id.range(ids).next_back().map(|(id, _)| *id)
    }

    /// The state a new segment starts from.
    pub(super) fn checkpoint(&self) -> Checkpoint<Arc<Event>> {
        Checkpoint {
            last_seq: self.last_seq,
            sessions: self.sessions.iter().map(|(k, v)| (*k, *v)).collect(),
            peers: self.peers.iter().map(|(k, v)| (*k, *v)).collect(),
            gateway_sessions: self.gateway_sessions.iter().map(|(k, v)| (*k, *v)).collect(),
            latest: self.latest.values().cloned().collect(),
        }
    }

    /// Applies a record read from segment `segment`, whose frame starts at `at`; what does not
    /// fit the state so far is an error. The latest events are left to the caller (see
    /// `replay`: made once per type and segment, not once per event).
    pub(super) fn apply(&mut self, record: Record<'_>, segment: u64, at: u64) -> Result<(), String> {
        let segment = u32::try_from(segment).map_err(|_| format!("segment number {segment} is past 2^32"))?;
        match record {
            Record::Commit { events, sessions, peers } => {
                for (hop, placed, event) in events {
                    let offset = u32::try_from(at + placed.offset as u64)
                        .map_err(|_| format!("an event at offset {at} + {}, past 4 GiB", placed.offset))?;
                    if self.by_id.contains_key(&event.id) {
                        let id = event.id;
                        return Err(format!("event {}/{}/{} is stored twice", id.server, id.session, id.instance));
                    }
                    self.add(&event, hop, segment, offset, placed.len as u32);
                }
                self.sessions.extend(sessions);
                self.peers.extend(peers);
            }
            Record::Retain(through) => {
                self.delete_through(through);
            }
            Record::Session { server, session } => {
                let given = self.gateway_sessions.entry(server).or_default();
                *given = (*given).max(session);
            }
            Record::Checkpoint(checkpoint) => {
                if checkpoint.last_seq > u64::MAX / 2 {
                    return Err(format!("a checkpoint at admission number {}", checkpoint.last_seq));
                }
                if !self.slots.is_empty() && checkpoint.last_seq != self.last_seq {
                    return Err(format!(
                        "a checkpoint at admission number {}, after events up to {}",
                        checkpoint.last_seq, self.last_seq
                    ));
                }
                self.start_at(checkpoint.last_seq);
                self.sessions.extend(checkpoint.sessions);
                self.peers.extend(checkpoint.peers);
                for (server, session) in checkpoint.gateway_sessions {
                    let given = self.gateway_sessions.entry(server).or_default();
                    *given = (*given).max(session);
                }
            }
        }
        Ok(())
    }
}

/// The next key up in the time order, or `None` after the largest.
pub(super) fn next_key((t, id): TimeKey) -> Option<TimeKey> {
    match next_id(id) {
        Some(id) => Some((t, id)),
        None => {
            let t = match t.us.checked_add(1) {
                Some(us) => Timestamp { s: t.s, us },
                None => Timestamp { s: t.s.checked_add(1)?, us: 0 },
            };
            Some((t, EventId { server: 0, session: 0, instance: 0 }))
        }
    }
}

/// The next key down, or `None` below the smallest.
pub(super) fn previous_key((t, id): TimeKey) -> Option<TimeKey> {
    match previous_id(id) {
        Some(id) => Some((t, id)),
        None => {
            let t = match t.us.checked_sub(1) {
                Some(us) => Timestamp { s: t.s, us },
                None => Timestamp { s: t.s.checked_sub(1)?, us: u32::MAX },
            };
            Some((t, EventId { server: !0, session: !0, instance: !0 }))
        }
    }
}

pub(super) fn next_id(id: EventId) -> Option<EventId> {
    if let Some(instance) = id.instance.checked_add(1) {
        return Some(EventId { instance, ..id });
    }
    if let Some(session) = id.session.checked_add(1) {
        return Some(EventId { session, instance: 0, ..id });
    }
    Some(EventId { server: id.server.checked_add(1)?, session: 0, instance: 0 })
}

pub(super) fn previous_id(id: EventId) -> Option<EventId> {
    if let Some(instance) = id.instance.checked_sub(1) {
        return Some(EventId { instance, ..id });
    }
    if let Some(session) = id.session.checked_sub(1) {
        return Some(EventId { session, instance: !0, ..id });
    }
    Some(EventId { server: id.server.checked_sub(1)?, session: !0, instance: !0 })
}
