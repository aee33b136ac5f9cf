//! The request head of a scrape: the bytes a TCP peer of `--metrics` sent, parsed without I/O.
//!
//! Network input: anyone who can reach the port sends it. This file is also compiled into the
//! fuzz crate (`fuzz/src/lib.rs` includes it by `#[path]`, the way `core/tests` include the fuzz
//! harnesses), so that fuzzing it does not build the whole gateway (redb, tokio, rustls). Keep it
//! to std: no `crate::` paths. Target `metrics_http`, docs/RELIABILITY.md "Fuzzing".
//!
//! Lenient on purpose, as a scraper needs: the request line is the first line of the head (up to
//! `\n`, a trailing `\r` dropped) and its first two words, split on whitespace, are the method and
//! the target; a version and headers may follow and are not looked at.

use core::fmt;

/// Longest request head read, in bytes; a scrape's is a few hundred.
pub const MAX_HEAD: usize = 8 * 1024;

/// What a request asks for: the first two words of its request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    pub target: &'a str,
}

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// More than [`MAX_HEAD`] bytes were read, whether or not they end the head.
    TooLong,
    /// The bytes are not UTF-8.
    NotUtf8,
    /// The request line does not hold a method and a target.
    BadRequestLine,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeadError::TooLong => "request head longer than 8 KiB",
            HeadError::NotUtf8 => "request head is not UTF-8",
            HeadError::BadRequestLine => "request line without a method and a target",
        })
    }
}

impl std::error::Error for HeadError {}

/// Parses `read`, every byte read from the peer so far: `Ok(None)` while the head has not ended
/// (no blank line yet, at most [`MAX_HEAD`] bytes), else the request or why it is refused. All of
/// `read` must be UTF-8, including bytes after the blank line that came with the head.
pub fn parse_head(read: &[u8]) -> Result<Option<Request<'_>>, HeadError> {
    if read.len() > MAX_HEAD {
        return Err(HeadError::TooLong);
    }
    // Byte by byte, not `w == b"\r\n\r\n"`: no memcmp call per position (cheaper under the fuzzer).
    if !read.windows(4).any(|w| matches!(w, [b'\r', b'\n', b'\r', b'\n'])) {
        return Ok(None);
    }
    let text = core::str::from_utf8(read).map_err(|_| HeadError::NotUtf8)?;
    let line = text.split('\n').next().unwrap_or_default();
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some(method), Some(target)) => Ok(Some(Request { method, target })),
        _ => Err(HeadError::BadRequestLine),
    }
}
