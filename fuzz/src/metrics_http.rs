//! Target `metrics_http`: the whole input is what a TCP peer of the gateway's `--metrics`
//! endpoint sent, read so far (`gateway/src/metrics/http.rs`).
//!
//! Asserts: [`parse_head`] never panics and gives what the gateway's parsing gave before it was
//! moved into `http.rs` ([`reference`]): too long (over [`MAX_HEAD`] bytes) first, then "wait for
//! more" until a blank line, then not UTF-8, then the first two words of the first line, or a bad
//! request line; a request's method and target are words of the first line, method first; every
//! read that stops short of the blank line waits for more. And heads built from the input: a
//! `GET /metrics HTTP/1.1` head with the input's printable ASCII as header lines is taken as
//! `GET /metrics` up to exactly [`MAX_HEAD`] bytes and refused as too long one byte past it; the
//! same head with a byte that is not UTF-8 is refused as such, and with a one-word request line
//! as a bad request line.

use super::gateway::http::{HeadError, MAX_HEAD, Request, parse_head};

/// Where the first blank line of `read` ends.
fn head_end(read: &[u8]) -> Option<usize> {
    read.windows(4).position(|w| matches!(w, [b'\r', b'\n', b'\r', b'\n'])).map(|at| at + 4)
}

pub fn run(data: &[u8]) {
    check(data);
    let ascii: Vec<u8> = data.iter().copied().filter(|b| (0x20..0x7f).contains(b)).collect();
    check_scrape(&ascii);
}

/// The request-head parsing of `gateway/src/metrics.rs` before `http.rs`, written as it was
/// there (over `MAX_HEAD` bytes: no answer; no blank line: read on; not UTF-8: no answer; else
/// the first two words of `lines().next()`, or a 405 for fewer), so that the move changed nothing.
fn reference(read: &[u8]) -> Result<Option<Request<'_>>, HeadError> {
    if read.len() > MAX_HEAD {
        return Err(HeadError::TooLong);
    }
    if head_end(read).is_none() {
        return Ok(None);
    }
    let head = core::str::from_utf8(read).map_err(|_| HeadError::NotUtf8)?;
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(method), Some(target)) => Ok(Some(Request { method, target })),
        _ => Err(HeadError::BadRequestLine),
    }
}

fn check(read: &[u8]) {
    let parsed = parse_head(read);
    assert_eq!(parsed, reference(read));
    let end = head_end(read);
    match (parsed, end) {
        (Err(HeadError::TooLong), _) => assert!(read.len() > MAX_HEAD),
        (_, _) if read.len() > MAX_HEAD => panic!("{} bytes taken", read.len()),
        (Ok(None), end) => assert_eq!(end, None, "a whole head waits for more"),
        (_, None) => panic!("a head without a blank line ends"),
        (Ok(Some(Request { method, target })), Some(_)) => {
            let line_end = read.iter().position(|&b| b == b'\n').expect("a head has a first line");
            let offset = |word: &str| word.as_ptr() as usize - read.as_ptr() as usize;
            for word in [method, target] {
                assert!(!word.is_empty() && !word.contains(char::is_whitespace), "{word:?}");
                assert!(offset(word) + word.len() <= line_end, "{word:?} is not on the first line");
            }
            assert!(offset(method) + method.len() < offset(target), "the method comes first");
        }
        (Err(HeadError::NotUtf8), Some(_)) => assert!(core::str::from_utf8(read).is_err()),
        (Err(HeadError::BadRequestLine), Some(_)) => {}
    }
    // A read that stops short of the blank line waits for more, or is too long already.
    if let Some(end) = end {
        for cut in [0, end / 2, end - 1] {
            let expected = if cut > MAX_HEAD { Err(HeadError::TooLong) } else { Ok(None) };
            assert_eq!(parse_head(&read[..cut]), expected, "cut at {cut}");
        }
    }
}

/// A scrape with `ascii` (printable ASCII) as its header lines, 48 bytes each.
fn check_scrape(ascii: &[u8]) {
    let mut head = b"GET /metrics HTTP/1.1\r\n".to_vec();
    for line in ascii.chunks(48) {
        head.extend_from_slice(line);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let scrape = Ok(Some(Request { method: "GET", target: "/metrics" }));
    let expected = if head.len() <= MAX_HEAD { scrape } else { Err(HeadError::TooLong) };
    assert_eq!(parse_head(&head), expected);
    if head.len() + b"X: \r\n".len() <= MAX_HEAD {
        // Padded with one more header line to exactly MAX_HEAD bytes, then to one more.
        let mut padded = head[..head.len() - 2].to_vec();
        let pad = MAX_HEAD - head.len() - b"X: \r\n".len();
        padded.extend_from_slice(b"X: ");
        padded.resize(padded.len() + pad, b'p');
        padded.extend_from_slice(b"\r\n\r\n");
        assert_eq!(padded.len(), MAX_HEAD);
        assert_eq!(parse_head(&padded), scrape);
        padded.insert(head.len(), b'p');
        assert_eq!(parse_head(&padded), Err(HeadError::TooLong));
        // Not UTF-8, anywhere: in a header, or after the blank line.
        let mut bad = head.clone();
        bad.insert(head.len() - 4, 0xff);
        assert_eq!(parse_head(&bad), Err(HeadError::NotUtf8));
        bad = head.clone();
        bad.push(0xc3);
        assert_eq!(parse_head(&bad), Err(HeadError::NotUtf8));
        // A request line of one word.
        let word = ascii.split(|&b| b == b' ').find(|w| !w.is_empty()).unwrap_or(b"GET");
        let word = &word[..word.len().min(16)];
        let one_word = [word, b"\r\n", &head[b"GET /metrics HTTP/1.1\r\n".len()..]].concat();
        assert_eq!(parse_head(&one_word), Err(HeadError::BadRequestLine), "{one_word:?}");
    }
}
