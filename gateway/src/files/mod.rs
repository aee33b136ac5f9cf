//! Files the gateway holds (docs/FILES.md): uploads in chunks with `rivulet send-file`, listed by
//! `rivulet files`, read back by `rivulet fetch-file`, through the file requests of
//! `rivulet_core::files` (whose [`Transfer`] is the receiver's rule). Chunks of one upload may
//! be handled by concurrent tasks: each waits until the bytes before it are written (or a while,
//! then answers what is held so the sender goes back), so the file is written in order, once.
//! The directory layout and its crash safety are in `disk.rs`.

mod disk;
mod stream;

pub use stream::Streamed;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rivulet_core::files::{self, Answer, Digest, FileError, FileRequest, Offer, Read, Transfer};
use rivulet_tokio::packet::PacketReply;
use tokio::sync::watch;

use self::disk::{Dir, Partial};
use crate::access::Ring;
use crate::config::FilesSettings;

/// How long a chunk waits for the bytes before it, before answering what is held.
const CHUNK_WAIT: Duration = Duration::from_secs(5);
/// An upload without a chunk for this long may give its place to a new one (its partial stays
/// on disk and resumes when offered again).
const IDLE_UPLOAD: Duration = Duration::from_secs(60);
/// Chunks a sender may have in flight.
const WINDOW: u16 = 16;
/// Names [`FileStore::completed`] remembers; it starts over when full.
const COMPLETED_KEPT: usize = 1024;
/// Bytes a chunk's or a read's envelope may need besides the data: the chunk body, the forward
/// of a request to another client or gateway.
const ENVELOPE: u32 = 1024;

/// Why a file request failed.
#[derive(Debug)]
pub enum FilesError {
    /// The request's own fault (a bad name, a mismatch...): the core's reason.
    File(FileError),
    /// A limit of the store.
    Full(String),
    /// No such file.
    NotFound(String),
    /// The disk failed.
    Io(std::io::Error),
}

impl std::fmt::Display for FilesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FilesError::File(e) => e.fmt(f),
            FilesError::Full(why) => f.write_str(why),
            FilesError::NotFound(name) => write!(f, "the gateway holds no file {name:?}"),
            FilesError::Io(e) => write!(f, "file store: {e}"),
        }
    }
}

impl From<FileError> for FilesError {
    fn from(e: FileError) -> Self {
        FilesError::File(e)
    }
}

impl From<std::io::Error> for FilesError {
    fn from(e: std::io::Error) -> Self {
        FilesError::Io(e)
    }
}

/// Counters of the file store, for status and metrics.
#[derive(Debug, Default)]
pub struct FileCounters {
    /// Bytes of chunks written, and of reads sent.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Uploads completed (hash checked), and uploads whose hash did not match.
    pub completed: AtomicU64,
    pub mismatched: AtomicU64,
    /// Requests refused for a limit.
    pub refused: AtomicU64,
}

/// An upload in progress.
struct Upload {
    state: Mutex<(Transfer<Ring>, std::fs::File)>,
    /// What is held, for chunks waiting their turn.
    held: watch::Sender<u64>,
    last_chunk: Mutex<Instant>,
}

/// The gateway's files; see the module doc.
pub struct FileStore {
    dir: Dir,
    settings: FilesSettings,
    /// The largest packet the gateway takes: chunks and reads fit in it.
    max_packet: u32,
    uploads: Mutex<HashMap<String, Arc<Upload>>>,
    /// Files arriving as hashed streams (`stream.rs`), by sender and name.
    streams: Mutex<HashMap<(u64, String), stream::Shared>>,
    /// Files completed lately (or offered again complete), by name: a `done` whose answer was
    /// lost, or that comes after an offer found the file whole, is answered from here.
    completed: Mutex<HashMap<String, Digest>>,
    pub counters: FileCounters,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs blocking file work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FilesError> + Send + 'static,
) -> Result<T, FilesError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| FilesError::Io(std::io::Error::other(e)))?
}

impl FileStore {
    /// The store in directory `root` (created if needed).
    pub fn open(root: std::path::PathBuf, settings: FilesSettings, max_packet: u32) -> Result<FileStore, String> {
        let dir =
            Dir::open(root.clone()).map_err(|e| format!("cannot create the file store {}: {e}", root.display()))?;
        Ok(FileStore {
            dir,
            settings,
            max_packet,
            uploads: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            completed: Mutex::new(HashMap::new()),
            counters: FileCounters::default(),
        })
    }

    /// Answers a file request (`rivulet_core::files`); `Ok(None)` for a request of another type.
    pub async fn handle(self: &Arc<Self>, rq_type: u64, payload: Vec<u8>) -> Result<Option<PacketReply>, FilesError> {
        let request = match FileRequest::parse(rq_type, &payload)? {
            None => return Ok(None),
            Some(request) => request,
        };
        let answer = match request {
            FileRequest::Offer(offer) => self.offer(&offer).await?,
            FileRequest::Chunk(chunk) => {
                let (name, offset) = (chunk.name.to_string(), chunk.offset);
                self.chunk(&name, offset, payload).await?
            }
            FileRequest::Done(done) => Answer::Complete(self.done(done.name).await?),
            FileRequest::List => {
                let this = self.clone();
                let files = blocking(move || Ok(this.dir.list()?)).await?;
                let body = postcard::to_allocvec(&disk::infos(&files))
                    .map_err(|e| FilesError::Io(std::io::Error::other(e)))?;
                return Ok(Some(PacketReply::new(0, body)));
            }
            FileRequest::Read(read) => return Ok(Some(PacketReply::new(0, self.read(&read).await?))),
        };
        let body = postcard::to_allocvec(&answer).map_err(|e| FilesError::Io(std::io::Error::other(e)))?;
        Ok(Some(PacketReply::new(0, body)))
    }

    /// The largest chunk data the gateway takes.
    fn max_chunk(&self) -> u32 {
        self.max_packet.saturating_sub(ENVELOPE)
    }

    async fn offer(self: &Arc<Self>, offer: &Offer<'_>) -> Result<Answer, FilesError> {
        files::check_name(offer.name)?;
        if offer.size > self.settings.max_file {
            self.counters.refused.fetch_add(1, Relaxed);
            return Err(FileError::TooLarge { size: offer.size, capacity: self.settings.max_file }.into());
        }
        let ready = |held| Answer::Ready { held, max_chunk: self.max_chunk(), window: WINDOW };
        if let Some(upload) = self.upload(offer.name)
            && lock(&upload.state).0.is(offer)
        {
            return Ok(ready(*upload.held.borrow()));
        }
        // The same file complete already: nothing to send.
        let (this, name) = (self.clone(), offer.name.to_string());
        if let Some((size, digest)) = blocking(move || Ok(this.dir.info(&name)?)).await?
            && size == offer.size
            && digest == offer.sha256
        {
            // An upload of another file under this name gives way: the done that follows is
            // this file's.
            lock(&self.uploads).remove(offer.name);
            self.remember_completed(offer.name, digest);
            return Ok(ready(size));
        }
        self.make_room(offer)?;
        let (this, name, size, sha256) = (self.clone(), offer.name.to_string(), offer.size, offer.sha256);
        let partial = blocking(move || {
            // A partial of this name is taken over (resumed or replaced): it counts once.
            let used = this.dir.used()?.saturating_sub(this.dir.partial_len(&name));
            if used.saturating_add(size) > this.settings.max_total {
                this.counters.refused.fetch_add(1, Relaxed);
                return Err(FilesError::Full(format!(
                    "the gateway's file store holds {used} bytes; {size} more would pass its limit of {} (max_total_mb)",
                    this.settings.max_total
                )));
            }
            Ok(this.dir.partial_for(&Offer { name: &name, size, sha256 })?)
        })
        .await?;
        let Partial { file, len, hash } = partial;
        let transfer = Transfer::resumed(offer, len, hash)?;
        let upload = Arc::new(Upload {
            state: Mutex::new((transfer, file)),
            held: watch::Sender::new(len),
            last_chunk: Mutex::new(Instant::now()),
        });
        lock(&self.uploads).insert(offer.name.to_string(), upload);
        // A done for this name is this upload's now, not an earlier file's.
        lock(&self.completed).remove(offer.name);
        Ok(ready(len))
    }

    fn upload(&self, name: &str) -> Option<Arc<Upload>> {
        lock(&self.uploads).get(name).cloned()
    }

    /// Takes `upload` out of the map if it is still the one for `name`; whether it was.
    fn forget(&self, name: &str, upload: &Arc<Upload>) -> bool {
        let mut uploads = lock(&self.uploads);
        let current = uploads.get(name).is_some_and(|u| Arc::ptr_eq(u, upload));
        if current {
            uploads.remove(name);
        }
        current
    }

    fn remember_completed(&self, name: &str, digest: Digest) {
        let mut completed = lock(&self.completed);
        if completed.len() >= COMPLETED_KEPT {
            completed.clear();
        }
        completed.insert(name.to_string(), digest);
    }

    /// A place for `offer`'s upload: an idle upload gives its place, or the offer is refused.
    fn make_room(&self, offer: &Offer<'_>) -> Result<(), FilesError> {
        let mut uploads = lock(&self.uploads);
        uploads.remove(offer.name);
        if uploads.len() < self.settings.max_uploads {
            return Ok(());
        }
        let idle = uploads.iter().find(|(_, u)| lock(&u.last_chunk).elapsed() >= IDLE_UPLOAD).map(|(n, _)| n.clone());
        match idle {
            Some(name) => {
                uploads.remove(&name);
                Ok(())
            }
            None => {
                self.counters.refused.fetch_add(1, Relaxed);
                Err(FilesError::Full(format!(
                    "{} uploads are in progress, the gateway's limit (max_uploads); try again later",
                    uploads.len()
                )))
            }
        }
    }

    async fn chunk(self: &Arc<Self>, name: &str, offset: u64, payload: Vec<u8>) -> Result<Answer, FilesError> {
        let upload = self.upload(name).ok_or(FileError::NotOffered)?;
        *lock(&upload.last_chunk) = Instant::now();
        // Chunks may come in any order from the tasks that handle them: wait for the bytes
        // before this one. One that never comes (lost with a link) ends the wait; the answer
        // then sends the sender back.
        let mut held = upload.held.subscribe();
        let _ = tokio::time::timeout(CHUNK_WAIT, held.wait_for(|held| *held >= offset)).await;
        let counters = self.clone();
        let name = name.to_string();
        blocking(move || {
            let Some(FileRequest::Chunk(chunk)) = FileRequest::parse(files::RQ_FILE_CHUNK, &payload)? else {
                return Err(FileError::Decode.into());
            };
            let mut state = lock(&upload.state);
            let (transfer, file) = &mut *state;
            if let Some(data) = transfer.take(&chunk)? {
                if let Err(e) = std::io::Write::write_all(file, data) {
                    // Part of the chunk may be on disk: the partial cannot be trusted any more.
                    drop(state);
                    counters.forget(&name, &upload);
                    counters.dir.discard(&name)?;
                    return Err(e.into());
                }
                transfer.wrote(data);
                counters.counters.bytes_in.fetch_add(data.len() as u64, Relaxed);
                upload.held.send_replace(transfer.held());
            }
            Ok(Answer::Held(transfer.held()))
        })
        .await
    }

    async fn done(self: &Arc<Self>, name: &str) -> Result<Digest, FilesError> {
        let this = self.clone();
        let name = name.to_string();
        let Some(upload) = self.upload(&name) else {
            // Done again (its answer was lost), or after an offer found the file whole; else
            // the sender offers again (after a restart, the partial resumes).
            return lock(&self.completed).get(&name).copied().ok_or(FileError::NotOffered.into());
        };
        blocking(move || {
            let state = lock(&upload.state);
            let (transfer, file) = &*state;
            match transfer.finish() {
                Ok(digest) => {
                    // Only the upload the name stands for now completes (not one an offer of
                    // another file replaced meanwhile).
                    if !this.forget(&name, &upload) {
                        return Err(FileError::NotOffered.into());
                    }
                    let partial = this.dir.upload_partial(&name);
                    if let Err(e) = this.dir.complete(&name, &partial, file, transfer.size(), &digest) {
                        this.dir.discard(&name)?;
                        return Err(e.into());
                    }
                    this.remember_completed(&name, digest);
                    this.counters.completed.fetch_add(1, Relaxed);
                    tracing::info!(file = %name, bytes = transfer.size(), "file received, SHA-256 checked");
                    Ok(digest)
                }
                Err(e @ FileError::Mismatch { .. }) => {
                    if this.forget(&name, &upload) {
                        this.dir.discard(&name)?;
                    }
                    this.counters.mismatched.fetch_add(1, Relaxed);
                    tracing::warn!(file = %name, "upload discarded: {e}");
                    Err(e.into())
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn read(self: &Arc<Self>, read: &Read<'_>) -> Result<Vec<u8>, FilesError> {
        files::check_name(read.name)?;
        let len = (read.len.min(self.max_chunk())) as usize;
        let (this, name, offset) = (self.clone(), read.name.to_string(), read.offset);
        let bytes = blocking(move || match this.dir.read(&name, offset, len) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FilesError::NotFound(name)),
            other => Ok(other?),
        })
        .await?;
        self.counters.bytes_out.fetch_add(bytes.len() as u64, Relaxed);
        Ok(bytes)
    }

    /// Its part of `rivulet status`: uploads in progress and the counters.
    pub fn report(&self) -> serde_json::Value {
        let c = &self.counters;
        serde_json::json!({
            "uploads": lock(&self.uploads).len() + lock(&self.streams).len(),
            "bytes_in": c.bytes_in.load(Relaxed),
            "bytes_out": c.bytes_out.load(Relaxed),
            "completed": c.completed.load(Relaxed),
            "mismatched": c.mismatched.load(Relaxed),
            "refused": c.refused.load(Relaxed),
        })
    }
}
