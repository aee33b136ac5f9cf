//! Kelvin's framing: each message is one line of JSON ending in `\n`. The SDK reads with
//! `readline()` under a 4 MiB limit (`KELVIN_STREAM_LIMIT`) and fails the stream on a longer line;
//! [`LineDecoder`] does the same over a caller's buffer, refusing a line from the moment it is
//! longer than the limit, before it is all buffered.

use core::ops::Range;

use crate::wire::{self, FrameDecoder, RxBuffer};

/// The SDK's default line limit (`KelvinStreamConfig.limit`, 2^22 bytes).
pub const DEFAULT_LIMIT: usize = 1 << 22;

/// Incremental decoder of `\n`-terminated lines over a caller's buffer. A frame is a line
/// without its `\n`. After an error it keeps returning it.
#[derive(Debug)]
pub struct LineDecoder<'b> {
    rx: RxBuffer<'b>,
    max_line: usize,
    /// Bytes after `rx.start` already searched for a newline.
    scanned: usize,
    failed: bool,
}

impl<'b> LineDecoder<'b> {
    /// A decoder that takes lines of up to `max_line` bytes (without the `\n`) that fit `buf`.
    pub fn new(buf: &'b mut [u8], max_line: usize) -> Self {
        let fits = buf.len().saturating_sub(1);
        LineDecoder { rx: RxBuffer::new(buf), max_line: max_line.min(fits), scanned: 0, failed: false }
    }

    /// The longest line taken.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Bytes received and not yet returned as lines.
    pub fn buffered(&self) -> usize {
        self.rx.end - self.rx.start
    }
}

impl FrameDecoder for LineDecoder<'_> {
    const RESYNCS: bool = false;

    fn read_buffer(&mut self) -> &mut [u8] {
        self.rx.space()
    }

    fn commit(&mut self, n: usize) {
        self.rx.commit(n);
    }

    fn next_frame(&mut self) -> Result<Option<Range<usize>>, wire::Error> {
        if self.failed {
            return Err(wire::Error::Oversize);
        }
        let start = self.rx.start;
        let pending = self.rx.buf.get(start..self.rx.end).unwrap_or(&[]);
        let unscanned = pending.get(self.scanned..).unwrap_or(&[]);
        match unscanned.iter().position(|&b| b == b'\n') {
            Some(at) => {
                let len = self.scanned + at;
                if len > self.max_line {
                    self.failed = true;
                    return Err(wire::Error::Oversize);
                }
                self.rx.start = start + len + 1;
                self.scanned = 0;
                Ok(Some(start..start + len))
            }
            None if pending.len() > self.max_line => {
                self.failed = true;
                Err(wire::Error::Oversize)
            }
            None => {
                self.scanned = pending.len();
                Ok(None)
            }
        }
    }

    fn frame(&self, range: Range<usize>) -> &[u8] {
        self.rx.buf.get(range).unwrap_or(&[])
    }

    fn reset(&mut self) {
        self.rx.clear();
        self.scanned = 0;
        self.failed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(decoder: &mut LineDecoder<'_>, bytes: &[u8]) {
        let room = decoder.read_buffer();
        room[..bytes.len()].copy_from_slice(bytes);
        decoder.commit(bytes.len());
    }

    fn lines(decoder: &mut LineDecoder<'_>) -> Result<Vec<Vec<u8>>, wire::Error> {
        let mut out = Vec::new();
        while let Some(range) = decoder.next_frame()? {
            out.push(decoder.frame(range).to_vec());
        }
        Ok(out)
    }

    #[test]
    fn lines_split_at_newlines_wherever_reads_end() {
        let mut buf = [0u8; 64];
        let mut decoder = LineDecoder::new(&mut buf, DEFAULT_LIMIT);
        feed(&mut decoder, b"{\"a\":1}\n{\"b\"");
        assert_eq!(lines(&mut decoder).unwrap(), [b"{\"a\":1}".to_vec()]);
        feed(&mut decoder, b":2}\n\n");
        assert_eq!(lines(&mut decoder).unwrap(), [b"{\"b\":2}".to_vec(), Vec::new()]);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn a_line_over_the_limit_fails_before_it_ends_and_stays_failed() {
        let mut buf = [0u8; 64];
        let mut decoder = LineDecoder::new(&mut buf, 8);
        feed(&mut decoder, b"12345678\n");
        assert_eq!(lines(&mut decoder).unwrap(), [b"12345678".to_vec()], "exactly the limit is taken");
        feed(&mut decoder, b"123456789");
        assert_eq!(lines(&mut decoder), Err(wire::Error::Oversize), "refused before its newline");
        feed(&mut decoder, b"\n1\n");
        assert_eq!(lines(&mut decoder), Err(wire::Error::Oversize));
        decoder.reset();
        feed(&mut decoder, b"1\n");
        assert_eq!(lines(&mut decoder).unwrap(), [b"1".to_vec()]);
    }

    #[test]
    fn the_buffer_bounds_the_limit() {
        let mut buf = [0u8; 5];
        let mut decoder = LineDecoder::new(&mut buf, DEFAULT_LIMIT);
        assert_eq!(decoder.max_line(), 4);
        feed(&mut decoder, b"12345");
        assert_eq!(lines(&mut decoder), Err(wire::Error::Oversize));
    }
}
