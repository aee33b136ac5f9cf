//! Opening a [`LogStore`] that has segments: reading each to rebuild the index, cutting away a
//! write a crash cut off, and refusing what is damaged otherwise.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use rivulet_core::model::EventRef;
use rivulet_core::owned::Event;

use super::index::{Index, Segment};
use super::record::{self, Frame, HEADER_LEN, Record};
use super::segment::{self, Active};
use super::{LogStore, Writer, corrupt, io_error};
use crate::store::StoreError;

impl LogStore {
    /// Rebuilds the index from the segments `numbers` (sorted) and resumes the newest.
    pub(super) fn recover(dir: &Path, numbers: &[u64]) -> Result<(u64, Index, Writer), StoreError> {
        let numbers = Self::drop_unfinished(dir, numbers)?;
        if numbers.is_empty() {
            return Self::create(dir);
        }
        let mut index = Index::default();
        let mut store_id = None;
        let mut resume = None;
        for (i, &no) in numbers.iter().enumerate() {
            let newest = i + 1 == numbers.len();
            if let Some(&before) = i.checked_sub(1).and_then(|i| numbers.get(i))
                && before.checked_add(1) != Some(no)
            {
                return Err(StoreError::Corrupt(format!(
                    "{}: segments {} to {} are missing (restore them from a backup)",
                    dir.display(),
                    before + 1,
                    no - 1
                )));
            }
            let path = segment::path(dir, no);
            let bytes = std::fs::read(&path).map_err(|e| io_error(dir, no, "cannot read", e))?;
            let (id, number) = record::parse_header(&bytes).map_err(|why| corrupt(dir, no, 0, why))?;
            if number != no || store_id.is_some_and(|store| store != id) {
                return Err(corrupt(
                    dir,
                    no,
                    0,
                    "the header names another segment or store (a file copied from elsewhere?)",
                ));
            }
            store_id = Some(id);
            let file = Arc::new(File::open(&path).map_err(|e| io_error(dir, no, "cannot open", e))?);
            index.segments.insert(no, Segment { file, bytes: 0, live: 0 });
            let end = replay(dir, no, &bytes, newest, &mut index)?;
            if let Some(segment) = index.segments.get_mut(&no) {
                segment.bytes = end.len;
            }
            resume = Some((no, end));
        }
        let (Some(store_id), Some((no, end))) = (store_id, resume) else {
            return Err(StoreError::Corrupt(format!("{}: no segment to open", dir.display())));
        };
        let active = Active::resume(dir, no, end.len).map_err(|e| io_error(dir, no, "cannot open", e))?;
        let writer = match end.checkpoint_end {
            Some(checkpoint_end) => Writer { checkpoint_end, active, failure: None, buf: Vec::new() },
            None => {
                // The newest segment was created, but its checkpoint never written.
                index.segments.remove(&no);
                let (writer, segment) = Self::start_segment(dir, &index.checkpoint(), active)?;
                index.segments.insert(no, segment);
                writer
            }
        };
        Ok((store_id, index, writer))
    }

    /// `numbers` without a newest segment whose creation a crash (or a full disk) cut short: the
    /// start of a header and nothing after, or zeros. Its file is deleted.
    fn drop_unfinished(dir: &Path, numbers: &[u64]) -> Result<Vec<u64>, StoreError> {
        let mut numbers = numbers.to_vec();
        if let Some(&no) = numbers.last() {
            let path = segment::path(dir, no);
            let read = |len: usize| -> Result<Vec<u8>, StoreError> {
                let mut bytes = Vec::new();
                let file = File::open(&path).map_err(|e| io_error(dir, no, "cannot read", e))?;
                file.take(len as u64).read_to_end(&mut bytes).map_err(|e| io_error(dir, no, "cannot read", e))?;
                Ok(bytes)
            };
            // The header tells, unless it is zeros: then the rest must be zeros too. The whole
            // segment is read once, by the replay, not here.
            let mut bytes = read(HEADER_LEN)?;
            let zeros = |bytes: &[u8]| bytes.iter().all(|b| *b == 0);
            if zeros(&bytes) {
                bytes = read(usize::MAX)?;
            }
            let magic = record::MAGIC.get(..bytes.len().min(record::MAGIC.len())).unwrap_or_default();
            let header_begun = bytes.len() < HEADER_LEN && bytes.starts_with(magic);
            if header_begun || zeros(&bytes) {
                tracing::warn!(
                    "{}: a segment whose creation was cut short ({} bytes); deleting it",
                    path.display(),
                    bytes.len()
                );
                std::fs::remove_file(&path).map_err(|e| io_error(dir, no, "cannot delete", e))?;
                segment::sync_dir(dir).map_err(|e| io_error(dir, no, "cannot sync the directory after deleting", e))?;
                numbers.pop();
            }
        }
        Ok(numbers)
    }
}

/// Where the replay of a segment ended: the length of its whole frames, and where its first
/// frame, the checkpoint, ended (`None`: it has none).
struct End {
    len: u64,
    checkpoint_end: Option<u64>,
}

/// Applies the records of segment `no` (its bytes) to `index`. A damaged frame is refused, but
/// in the `newest` segment one that nothing whole follows is a write a crash cut off: the
/// replay ends before it (and the segment is cut there when appending resumes).
fn replay<'a>(dir: &Path, no: u64, bytes: &'a [u8], newest: bool, index: &mut Index) -> Result<End, StoreError> {
    let mut pos = HEADER_LEN;
    let mut checkpoint_end = None;
    // The newest event of each type in this segment, made owned once at its end.
    let mut latest: HashMap<&'a [u8], EventRef<'a>> = HashMap::new();

    while let Some(rest) = bytes.get(pos..).filter(|rest| !rest.is_empty()) {
        let (body, len) = match record::frame(rest) {
            Frame::Whole { body, len } => (body, len),
            Frame::Bad(why) if newest && is_torn_tail(rest) => {
                tracing::error!(
                    "{}: dropping {} bytes at offset {pos}, taken for a write a crash cut off ({why})",
                    segment::path(dir, no).display(),
                    rest.len()
                );
                break;
            }
            Frame::Bad(why) => return Err(corrupt(dir, no, pos as u64, why)),
        };
        let record = record::decode(body).map_err(|why| corrupt(dir, no, pos as u64, why))?;
        if checkpoint_end.is_none() && !matches!(record, Record::Checkpoint(_)) {
            return Err(corrupt(dir, no, pos as u64, "the segment does not start with a checkpoint"));
        }
        checkpoint_end.get_or_insert((pos + len) as u64);
        match &record {
            Record::Commit { events, .. } => events.iter().for_each(|(_, _, event)| note_latest(&mut latest, event)),
            Record::Checkpoint(checkpoint) => {
                checkpoint.latest.iter().for_each(|event| note_latest(&mut latest, event))
            }
            _ => {}
        }
        index.apply(record, no, pos as u64).map_err(|why| corrupt(dir, no, pos as u64, why))?;
        pos += len;
    }
    for event in latest.into_values() {
        if index.is_latest(&event) {
            index.set_latest(Arc::new(Event::from(event)));
        }
    }
    Ok(End { len: pos.min(bytes.len()) as u64, checkpoint_end })
}

/// Keeps `event` in `latest` if it is the newest of its type so far (on equal timestamps, the
/// later).
fn note_latest<'a>(latest: &mut HashMap<&'a [u8], EventRef<'a>>, event: &EventRef<'a>) {
    match latest.entry(event.event_type.as_packed()) {
        Entry::Occupied(mut stored) if event.timestamp >= stored.get().timestamp => {
            stored.insert(*event);
        }
        Entry::Occupied(_) => {}
        Entry::Vacant(entry) => {
            entry.insert(*event);
        }
    }
}

/// Whether a damaged frame at the start of `rest` is the end of a write a crash cut off. With
/// its head readable: a frame that runs to the end of the file or past it is; a shorter one is
/// if no whole frame follows its end (its own bytes are not looked into: a payload may hold
/// anything, frames included). With its head damaged: if no whole frame starts anywhere after.
fn is_torn_tail(rest: &[u8]) -> bool {
    let mut from = match record::head(rest) {
        Some(len) => {
            let end = record::FRAME_HEAD.saturating_add(len);
            if end >= rest.len() {
                return true;
            }
            end
        }
        None => 1,
    };
    while let Some(found) = rest.get(from..).and_then(|after| after.windows(4).position(|w| w == record::MARKER)) {
        let at = from + found;
        if let Some(Frame::Whole { .. }) = rest.get(at..).map(record::frame) {
            return false;
        }
        from = at + 1;
    }
    true
}
