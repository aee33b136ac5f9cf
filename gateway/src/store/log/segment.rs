//! A [`super::LogStore`]'s files: the segments (`<number>.seg`, numbered from 1, 20 digits so
//! that names sort as numbers), and the one being appended to.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::record::{HEADER_LEN, header};

const SUFFIX: &str = ".seg";

pub(super) fn path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:020}{SUFFIX}"))
}

/// The segments in `dir`, by number; other files are left alone.
pub(super) fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        // Only the names this store gives (20 digits): a copy named `1.seg` is not segment 1.
        let digits = name
            .to_str()
            .and_then(|name| name.strip_suffix(SUFFIX))
            .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()));
        let number = digits.and_then(|n| n.parse::<u64>().ok());
        if let Some(no) = number {
            found.push(no);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Makes a directory entry durable: after creating or deleting a file in it.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads `len` bytes at `offset` of a segment (positioned reads: readers share the file).
pub(super) fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    #[cfg(unix)]
    std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, offset)?;
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < len {
            let n = std::os::windows::fs::FileExt::seek_read(file, &mut buf[done..], offset + done as u64)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
    }
    Ok(buf)
}

/// The segment appended to.
#[derive(Debug)]
pub(super) struct Active {
    pub(super) no: u64,
    file: File,
    /// Its length: where the next frame goes.
    pub(super) len: u64,
}

impl Active {
    /// Creates segment `no` with its header, durably (the file and its directory entry).
    pub(super) fn create(dir: &Path, store_id: u64, no: u64) -> io::Result<Active> {
        let mut file = OpenOptions::new().read(true).append(true).create_new(true).open(path(dir, no))?;
        file.write_all(&header(store_id, no))?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(Active { no, file, len: HEADER_LEN as u64 })
    }

    /// Goes on appending to segment `no`, cut to `len` (the end of its last whole frame).
    pub(super) fn resume(dir: &Path, no: u64, len: u64) -> io::Result<Active> {
        let file = OpenOptions::new().read(true).append(true).open(path(dir, no))?;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
            file.sync_all()?;
        }
        Ok(Active { no, file, len })
    }

    /// A second handle for readers.
    pub(super) fn reader(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Appends `frames` and waits until they are on disk; returns where they start. After an
    /// error the segment is cut back to where it was, if it can be.
    pub(super) fn append(&mut self, frames: &[u8]) -> io::Result<u64> {
        let start = self.len;
        let written = self.file.write_all(frames).and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.file.set_len(start).and_then(|()| self.file.sync_data());
            return Err(e);
        }
        self.len += frames.len() as u64;
        Ok(start)
    }
}
