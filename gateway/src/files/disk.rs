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

use crate::access::Ring;

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

    fn complete(&self, name: &str) -> PathBuf {
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
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(self.partial(offer.name))?;
        file.sync_all()?;
        write_synced(&self.offered(offer.name), wanted.as_bytes())?;
        Ok(Partial { file: OpenOptions::new().append(true).open(self.partial(offer.name))?, len: 0, hash: Ring::new() })
    }

    /// A new, empty partial for a stream (`stream.rs`): no offer is known for it.
    pub(super) fn stream_partial(&self, name: &str) -> io::Result<File> {
        remove_if_there(&self.offered(name))?;
        OpenOptions::new().create(true).write(true).truncate(true).open(self.partial(name))
    }

    /// Drops an upload's partial (a hash mismatch).
    pub(super) fn discard(&self, name: &str) -> io::Result<()> {
        remove_if_there(&self.offered(name))?;
        remove_if_there(&self.partial(name))
    }

    /// Makes a checked upload the complete file `name` (replacing one of that name).
    pub(super) fn complete_upload(&self, name: &str, file: &File, digest: &Digest) -> io::Result<()> {
        file.sync_all()?;
        // The old hash goes first: a crash before the new one is written leaves a file without
        // a hash (computed again when listed), never a file with another file's hash.
        remove_if_there(&self.sidecar(name))?;
        fs::rename(self.partial(name), self.complete(name))?;
        sync_dir(&self.root)?;
        write_synced(&self.sidecar(name), format!("{}  {name}\n", Hex(digest)).as_bytes())?;
        remove_if_there(&self.offered(name))
    }

    /// The complete file `name`, if there is one: its size and hash.
    pub(super) fn info(&self, name: &str) -> io::Result<Option<(u64, Digest)>> {
        let meta = match fs::metadata(self.complete(name)) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let recorded = fs::read_to_string(self.sidecar(name)).ok().and_then(|line| parse_digest(&line));
        let digest = match recorded {
            Some(digest) => digest,
            None => {
                let (_, hash) = hash_reader(&mut File::open(self.complete(name))?)?;
                let digest = hash.finalize();
                write_synced(&self.sidecar(name), format!("{}  {name}\n", Hex(&digest)).as_bytes())?;
                digest
            }
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
        let mut file = File::open(self.complete(name))?;
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
    let hex = line.get(..64)?;
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
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
    fn a_sha256sum_line_gives_its_digest() {
        let digest: Digest = std::array::from_fn(|i| i as u8 * 7);
        let line = format!("{}  fw.bin\n", Hex(&digest));
        assert_eq!(parse_digest(&line), Some(digest));
        assert_eq!(parse_digest("zz"), None);
        assert_eq!(parse_digest(&"g".repeat(64)), None);
    }
}
