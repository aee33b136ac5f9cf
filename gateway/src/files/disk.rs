//! The file store's directory (blocking I/O; the store calls it off the runtime's threads):
//!
//! ```text
//! <data>/files/NAME                  a complete file, its hash checked
//! <data>/files/.sha256/NAME          its SHA-256, as `sha256sum` writes it ("HEX  NAME")
//! <data>/files/.partial/NAME         an upload in progress: the file's first bytes, in order
//! <data>/files/.partial/NAME~offer   what was offered for it: "HEX SIZE"
//! ```
//!
//! A name never starts with a dot nor holds a `~` (`rivulet_core::files::check_name`), so the
//! dot directories, the offers and the temporary files (`~tmp`) cannot clash with a file. A complete file appears by a rename of its checked, synced
//! partial: nothing half-written is ever listed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rivulet_core::files::{Digest, FileInfo, Hex, Offer, Sha256};

use crate::access::{Ring, from_hex};

/// The directories of a file store.
#[derive(Debug, Clone)]
pub(super) struct Dir {
    root: PathBuf,
}

/// An upload's partial file, open for appending.
pub(super) struct Partial {
    pub(super) file: File,
    /// Bytes in it (what is held).
    pub(super) len: u64,
    /// The hash of those bytes.
    pub(super) hash: Ring,
}

impl Dir {
    /// Creates the directories under `root` if needed.
    pub(super) fn open(root: PathBuf) -> io::Result<Dir> {
        fs::create_dir_all(root.join(".sha256"))?;
        fs::create_dir_all(root.join(".partial"))?;
        Ok(Dir { root })
    }

    fn complete_path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn sidecar(&self, name: &str) -> PathBuf {
        self.root.join(".sha256").join(name)
    }

    fn partial(&self, name: &str) -> PathBuf {
        self.root.join(".partial").join(name)
    }

    fn offered(&self, name: &str) -> PathBuf {
        self.root.join(".partial").join(format!("{name}~offer"))
    }

    /// The partial of `offer`: the one on disk if it was offered the same (its bytes hashed
    /// again), else a new empty one.
    pub(super) fn partial_for(&self, offer: &Offer<'_>) -> io::Result<Partial> {
        let wanted = offer_line(offer);
        if fs::read_to_string(self.offered(offer.name)).ok().as_deref() == Some(wanted.as_str()) {
            let mut file = OpenOptions::new().read(true).append(true).open(self.partial(offer.name))?;
            let (len, hash) = hash_reader(&mut file)?;
            if len <= offer.size {
                return Ok(Partial { file, len, hash });
            }
        }
        // A new file (a new inode): chunks still in flight for an upload it replaces write to the
        // old one, which is gone.
        remove_if_there(&self.partial(offer.name))?;
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(self.partial(offer.name))?;
        file.sync_all()?;
        write_synced(&self.offered(offer.name), wanted.as_bytes())?;
        Ok(Partial { file: OpenOptions::new().append(true).open(self.partial(offer.name))?, len: 0, hash: Ring::new() })
    }

    /// A new, empty partial for a stream (`stream.rs`) from `source`: its own path
    /// (`NAME~stream-SOURCE`), apart from an upload's and another sender's of the same name.
    pub(super) fn stream_partial(&self, name: &str, source: u64) -> io::Result<(File, PathBuf)> {
        let path = self.root.join(".partial").join(format!("{name}~stream-{source}"));
        remove_if_there(&path)?;
        Ok((OpenOptions::new().create(true).write(true).truncate(true).open(&path)?, path))
    }

    /// An upload's partial file.
    pub(super) fn upload_partial(&self, name: &str) -> PathBuf {
        self.partial(name)
    }

    /// Bytes of an upload's partial file (0 without one).
    pub(super) fn partial_len(&self, name: &str) -> u64 {
        fs::metadata(self.partial(name)).map_or(0, |m| m.len())
    }

    /// Drops an upload's partial (a hash mismatch, a failed write).
    pub(super) fn discard(&self, name: &str) -> io::Result<()> {
        remove_if_there(&self.offered(name))?;
        remove_if_there(&self.partial(name))
    }

    /// Drops a partial file by its path.
    pub(super) fn discard_at(&self, path: &Path) -> io::Result<()> {
        remove_if_there(path)
    }

    /// Makes the checked partial at `partial` (written through `file`, `size` bytes) the
    /// complete file `name`, replacing one of that name. The file's length is checked first:
    /// the hash was computed over the bytes taken, and the disk must hold exactly those.
    pub(super) fn complete(
        &self,
        name: &str,
        partial: &Path,
        file: &File,
        size: u64,
        digest: &Digest,
    ) -> io::Result<()> {
        file.sync_all()?;
        let on_disk = file.metadata()?.len();
        if on_disk != size {
            return Err(io::Error::other(format!("the partial holds {on_disk} bytes, not the {size} received")));
        }
        // The old hash goes first: a crash before the new one is written leaves a file without
        // a hash (computed when listed), never a file with another file's hash.
        remove_if_there(&self.sidecar(name))?;
        fs::rename(partial, self.complete_path(name))?;
        sync_dir(&self.root)?;
        write_synced(&self.sidecar(name), format!("{}  {name}\n", Hex(digest)).as_bytes())?;
        remove_if_there(&self.offered(name))
    }

    /// The complete file `name`, if there is one: its size and hash.
    pub(super) fn info(&self, name: &str) -> io::Result<Option<(u64, Digest)>> {
        let meta = match fs::metadata(self.complete_path(name)) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let recorded = fs::read_to_string(self.sidecar(name)).ok().and_then(|line| parse_digest(&line));
        // Without its hash file (a crash between the rename and writing it) the hash is computed,
        // not written: only a completion writes hash files, so none can outlive its file.
        let digest = match recorded {
            Some(digest) => digest,
            None => hash_reader(&mut File::open(self.complete_path(name))?)?.1.finalize(),
        };
        Ok(Some((meta.len(), digest)))
    }

    /// Every complete file, by name.
    pub(super) fn list(&self) -> io::Result<Vec<(String, u64, Digest)>> {
        let mut names: Vec<String> = fs::read_dir(&self.root)?
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| rivulet_core::files::check_name(name).is_ok())
            .collect();
        names.sort();
        let mut files = Vec::new();
        for name in names {
            if let Some((size, digest)) = self.info(&name)? {
                files.push((name, size, digest));
            }
        }
        Ok(files)
    }

    /// Bytes the directory holds: complete files and partials.
    pub(super) fn used(&self) -> io::Result<u64> {
        let mut total = 0;
        for dir in [self.root.clone(), self.root.join(".partial")] {
            for entry in fs::read_dir(dir)?.filter_map(Result::ok) {
                if let Ok(meta) = entry.metadata()
                    && meta.is_file()
                {
                    total += meta.len();
                }
            }
        }
        Ok(total)
    }

    /// Up to `len` bytes of file `name` from `offset` (fewer at its end).
    pub(super) fn read(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut file = File::open(self.complete_path(name))?;
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::with_capacity(len);
        file.take(len as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// The list as the wire carries it.
pub(super) fn infos(files: &[(String, u64, Digest)]) -> Vec<FileInfo<'_>> {
    files.iter().map(|(name, size, sha256)| FileInfo { name, size: *size, sha256: *sha256 }).collect()
}

fn offer_line(offer: &Offer<'_>) -> String {
    format!("{} {}", Hex(&offer.sha256), offer.size)
}

/// The digest at the start of a `sha256sum` line.
fn parse_digest(line: &str) -> Option<Digest> {
    from_hex(line.get(..64)?)?.try_into().ok()
}

/// The length and hash of everything `reader` holds from its start.
fn hash_reader(reader: &mut File) -> io::Result<(u64, Ring)> {
    reader.seek(SeekFrom::Start(0))?;
    let (mut hash, mut len, mut buf) = (Ring::new(), 0u64, vec![0u8; 1 << 16]);
    loop {
        match reader.read(&mut buf)? {
            0 => return Ok((len, hash)),
            n => {
                hash.update(&buf[..n]);
                len += n as u64;
            }
        }
    }
}

/// Removes a file; one that is not there is fine.
fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push("~tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_that_does_not_hold_exactly_the_bytes_hashed_is_not_completed() {
        let root = tempfile::tempdir().unwrap();
        let dir = Dir::open(root.path().join("files")).unwrap();
        let offer = Offer { name: "f.bin", size: 4, sha256: [1; 32] };
        let mut partial = dir.partial_for(&offer).unwrap();
        partial.file.write_all(b"abcdX").unwrap(); // a stray byte beyond what was taken
        let refused = dir.complete("f.bin", &dir.upload_partial("f.bin"), &partial.file, 4, &[1; 32]);
        assert!(refused.is_err_and(|e| e.to_string().contains("holds 5 bytes, not the 4")));
        assert!(dir.list().unwrap().is_empty(), "not listed");
        // Offered again, the same file resumes from what is on disk; another one starts anew.
        assert_eq!(dir.partial_for(&offer).unwrap().len, 0, "longer than the file: started over");
        let mut again = dir.partial_for(&offer).unwrap();
        again.file.write_all(b"ab").unwrap();
        assert_eq!(dir.partial_for(&offer).unwrap().len, 2);
        assert_eq!(dir.partial_for(&Offer { sha256: [2; 32], ..offer }).unwrap().len, 0);
    }

    #[test]
    fn a_sha256sum_line_gives_its_digest() {
        let digest: Digest = std::array::from_fn(|i| i as u8 * 7);
        let line = format!("{}  fw.bin\n", Hex(&digest));
        assert_eq!(parse_digest(&line), Some(digest));
        assert_eq!(parse_digest("zz"), None);
        assert_eq!(parse_digest(&"g".repeat(64)), None);
    }
}
