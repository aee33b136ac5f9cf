//! Files that arrive as a stream of chunks, each carrying the SHA-256 of the file so far, and an
//! empty chunk at the end: how a Chaski node sends a file (`ChaskiStreamer.push_file`,
//! `ChaskiFile` messages). No size or hash is known before; each chunk's running hash is checked
//! as it comes, so a damaged chunk is caught at once, and the file is presented (listed) only
//! after the end, by the same rename as an upload. Such a stream does not resume: a first chunk
//! (one whose cumulative size is its own) starts it over, and one whose sender's connection ends
//! is dropped. Its partial file is its own (`NAME~stream-SOURCE`), apart from an upload's of the
//! same name; the complete file replaces one of that name.

use std::io::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use rivulet_core::files::{self, Digest, FileError, Sha256};

use super::{FileStore, FilesError, blocking, lock};
use crate::access::Ring;

/// A stream being received.
pub(super) struct Stream {
    file: std::fs::File,
    /// Its partial file (its own: `NAME~stream-SOURCE`).
    path: std::path::PathBuf,
    hash: Ring,
    len: u64,
    /// What the store may still take for it: `max_total` less what the store held when it began.
    room: u64,
}

/// A stream, shared by the map and the chunk being written.
pub(super) type Shared = Arc<Mutex<Stream>>;

/// What a chunk of a stream did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Streamed {
    /// Taken; this many bytes are held.
    Held(u64),
    /// The end: the file is complete, its hash checked.
    Complete { size: u64, sha256: Digest },
}

impl FileStore {
    /// A chunk of the stream `name` (from `source`, which keeps streams of the same name from
    /// different senders apart): `running` is the SHA-256 of the file up to the end of `chunk`,
    /// `first` says it starts the file; an empty chunk ends it. A chunk whose running hash
    /// differs discards the stream.
    pub async fn stream_chunk(
        self: &Arc<Self>,
        source: u64,
        name: &str,
        first: bool,
        chunk: Vec<u8>,
        running: Digest,
    ) -> Result<Streamed, FilesError> {
        files::check_name(name)?;
        let key = (source, name.to_string());
        let this = self.clone();
        let name = name.to_string();
        blocking(move || {
            let stream = {
                let mut streams = lock(&this.streams);
                if first {
                    streams.remove(&key);
                }
                match streams.get(&key) {
                    Some(stream) => stream.clone(),
                    // The rest of a stream whose start was refused or dropped: not a file.
                    None if !first => return Err(FileError::NotOffered.into()),
                    None => {
                        if streams.len() >= this.settings.max_uploads {
                            this.counters.refused.fetch_add(1, Relaxed);
                            return Err(FilesError::Full(format!(
                                "{} file streams are in progress, the gateway's limit (max_uploads)",
                                streams.len()
                            )));
                        }
                        let room = this.settings.max_total.saturating_sub(this.dir.used()?);
                        let (file, path) = this.dir.stream_partial(&name, source)?;
                        let stream = Arc::new(Mutex::new(Stream { file, path, hash: Ring::new(), len: 0, room }));
                        streams.insert(key.clone(), stream.clone());
                        stream
                    }
                }
            };
            let mut stream = lock(&stream);
            let size = stream.len.saturating_add(chunk.len() as u64);
            let capacity = this.settings.max_file.min(stream.room);
            if size > capacity {
                drop(stream);
                this.drop_stream(&key)?;
                this.counters.refused.fetch_add(1, Relaxed);
                return Err(FileError::TooLarge { size, capacity }.into());
            }
            let mut hash = stream.hash.clone();
            hash.update(&chunk);
            let received = hash.clone().finalize();
            if received != running {
                drop(stream);
                this.drop_stream(&key)?;
                this.counters.mismatched.fetch_add(1, Relaxed);
                tracing::warn!(file = %name, "file stream discarded at byte {size}: its running hash differs");
                return Err(FileError::Mismatch { offered: running, received }.into());
            }
            if chunk.is_empty() {
                if let Err(e) = this.dir.complete(&name, &stream.path, &stream.file, size, &received) {
                    drop(stream);
                    this.drop_stream(&key)?;
                    return Err(e.into());
                }
                drop(stream);
                lock(&this.streams).remove(&key);
                this.counters.completed.fetch_add(1, Relaxed);
                tracing::info!(file = %name, bytes = size, "file received in a stream, SHA-256 checked");
                return Ok(Streamed::Complete { size, sha256: received });
            }
            if let Err(e) = stream.file.write_all(&chunk) {
                // Part of it may be on disk: the stream cannot go on.
                drop(stream);
                this.drop_stream(&key)?;
                return Err(e.into());
            }
            stream.hash = hash;
            stream.len = size;
            this.counters.bytes_in.fetch_add(chunk.len() as u64, Relaxed);
            Ok(Streamed::Held(size))
        })
        .await
    }

    /// Drops a stream and its partial file.
    fn drop_stream(&self, key: &(u64, String)) -> Result<(), FilesError> {
        let Some(stream) = lock(&self.streams).remove(key) else { return Ok(()) };
        let path = lock(&stream).path.clone();
        Ok(self.dir.discard_at(&path)?)
    }

    /// Drops the streams of `source` (its connection ended): they cannot go on.
    pub fn streams_ended(&self, source: u64) {
        let ended: Vec<(u64, String)> = lock(&self.streams).keys().filter(|(s, _)| *s == source).cloned().collect();
        for key in ended {
            if let Err(e) = self.drop_stream(&key) {
                tracing::warn!(file = %key.1, "an ended file stream's partial not removed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilesSettings;

    fn sha(bytes: &[u8]) -> Digest {
        let mut hash = Ring::new();
        hash.update(bytes);
        hash.finalize()
    }

    #[tokio::test]
    async fn a_stream_is_checked_chunk_by_chunk_and_listed_only_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::open(dir.path().join("files"), FilesSettings::default(), 65536).unwrap());
        let chunk = |first, bytes: &[u8], upto: &[u8]| store.stream_chunk(1, "a.bin", first, bytes.to_vec(), sha(upto));
        assert_eq!(chunk(true, b"abcd", b"abcd").await.unwrap(), Streamed::Held(4));
        assert_eq!(chunk(false, b"efgh", b"abcdefgh").await.unwrap(), Streamed::Held(8));
        assert!(store.dir.list().unwrap().is_empty(), "not listed before its end");
        let done = chunk(false, b"", b"abcdefgh").await.unwrap();
        assert_eq!(done, Streamed::Complete { size: 8, sha256: sha(b"abcdefgh") });
        assert_eq!(store.dir.list().unwrap(), [("a.bin".to_string(), 8, sha(b"abcdefgh"))]);

        // A chunk whose running hash is not the bytes': dropped at once, counted.
        assert_eq!(chunk(true, b"wxyz", b"wxyz").await.unwrap(), Streamed::Held(4));
        let damaged = chunk(false, b"efgh", b"wxyzXXXX").await;
        assert!(matches!(damaged, Err(FilesError::File(FileError::Mismatch { .. }))), "{damaged:?}");
        assert_eq!(store.counters.mismatched.load(Relaxed), 1);
        assert!(!dir.path().join("files/.partial/a.bin~stream-1").exists());
        assert_eq!(store.dir.list().unwrap(), [("a.bin".to_string(), 8, sha(b"abcdefgh"))], "the old file stays");
        // Its next chunks are not a file of their own.
        let rest = chunk(false, b"", b"wxyzefgh").await;
        assert!(matches!(rest, Err(FilesError::File(FileError::NotOffered))), "{rest:?}");
        assert_eq!(store.counters.mismatched.load(Relaxed), 1);
    }
}
