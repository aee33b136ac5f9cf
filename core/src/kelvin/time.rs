//! Kelvin timestamps. The SDK writes UTC with six fraction digits, `2024-01-02T03:04:05.000000Z`,
//! and reads what pydantic reads as a datetime: RFC 3339 / ISO 8601 with `T`, `t`, `_` or a space,
//! seconds and fraction optional (digits past the sixth dropped), `Z` or an offset (`+02:00`,
//! `-0130`), a date alone (midnight), and Unix time as a number or a string of one (seconds, or
//! milliseconds above 2·10^10, as pydantic takes them). A time without an offset is UTC here; the
//! SDK reads it as the machine's local time (docs/KELVIN.md).

use alloc::string::String;
use core::fmt::Write;

use super::Error;
use crate::model::Timestamp;

/// Above this a Unix time is in milliseconds (pydantic's rule).
const MS_THRESHOLD: u64 = 20_000_000_000;
/// Python's `datetime` covers years 1 to 9999; so do we.
const MIN_YEAR: i64 = 1;
const MAX_YEAR: i64 = 9999;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `t` if Python's `datetime` can hold it (years 1 to 9999), so that it can be written.
pub fn check(t: Timestamp) -> Result<Timestamp, Error> {
    let (y, _, _) = civil_from_days(t.s.div_euclid(86_400));
    if (MIN_YEAR..=MAX_YEAR).contains(&y) && t.us < 1_000_000 { Ok(t) } else { Err(Error::Timestamp) }
}

/// Writes `t` as the SDK does: `YYYY-MM-DDTHH:MM:SS.ffffffZ`, in UTC.
pub fn write(t: Timestamp, out: &mut String) -> Result<(), Error> {
    let t = check(t)?;
    let (y, m, d) = civil_from_days(t.s.div_euclid(86_400));
    let secs = t.s.rem_euclid(86_400);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    write!(out, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:06}Z", t.us).map_err(|_| Error::Timestamp)
}

/// `t` as the SDK writes it.
pub fn format(t: Timestamp) -> Result<String, Error> {
    let mut out = String::with_capacity(27);
    write(t, &mut out)?;
    Ok(out)
}

/// Reads a timestamp given as a JSON string.
pub fn parse_str(text: &str) -> Result<Timestamp, Error> {
    if let Some(t) = unix_text(text) {
        return t;
    }
    Cursor { bytes: text.as_bytes(), at: 0 }.datetime()
}

/// Reads a timestamp given as a JSON number (its text): Unix seconds, or milliseconds.
pub fn parse_number(text: &str) -> Result<Timestamp, Error> {
    unix_text(text).unwrap_or(Err(Error::Timestamp))
}

/// `[-]digits[.digits]` as Unix time; `None` if the text is not of that form.
fn unix_text(text: &str) -> Option<Result<Timestamp, Error>> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    Some(unix(negative, whole, fraction))
}

fn unix(negative: bool, whole: &str, fraction: &str) -> Result<Timestamp, Error> {
    let whole: u64 = whole.parse().map_err(|_| Error::Timestamp)?;
    // Micro-units of the whole and the first digits of the fraction: seconds take six, milliseconds three.
    let (seconds, micros) = if whole > MS_THRESHOLD {
        (whole / 1000, (whole % 1000) * 1000 + fraction_digits(fraction, 3))
    } else {
        (whole, fraction_digits(fraction, 6))
    };
    let seconds = i64::try_from(seconds).map_err(|_| Error::Timestamp)?;
    let total = i128::from(seconds) * 1_000_000 + i128::from(micros);
    let total = if negative { -total } else { total };
    let s = i64::try_from(total.div_euclid(1_000_000)).map_err(|_| Error::Timestamp)?;
    let us = u32::try_from(total.rem_euclid(1_000_000)).map_err(|_| Error::Timestamp)?;
    // In Python's range, so that it can be written back.
    check(Timestamp { s, us })
}

/// The first `n` digits of a fraction as an integer of `n` digits (missing ones are zeros).
fn fraction_digits(fraction: &str, n: usize) -> u64 {
    let mut value = 0u64;
    let mut digits = fraction.bytes();
    for _ in 0..n {
        value = value * 10 + digits.next().map_or(0, |b| u64::from(b - b'0'));
    }
    value
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn number(&mut self, digits: usize) -> Result<u32, Error> {
        let mut value = 0u32;
        for _ in 0..digits {
            match self.peek() {
                Some(b) if b.is_ascii_digit() => value = value * 10 + u32::from(b - b'0'),
                _ => return Err(Error::Timestamp),
            }
            self.at += 1;
        }
        Ok(value)
    }

    fn require(&mut self, byte: u8) -> Result<(), Error> {
        if self.eat(byte) { Ok(()) } else { Err(Error::Timestamp) }
    }

    fn datetime(&mut self) -> Result<Timestamp, Error> {
        let year = i64::from(self.number(4)?);
        self.require(b'-')?;
        let month = self.number(2)?;
        self.require(b'-')?;
        let day = self.number(2)?;
        if !(MIN_YEAR..=MAX_YEAR).contains(&year)
            || !(1..=12).contains(&month)
            || !(1..=days_in_month(year, month)).contains(&day)
        {
            return Err(Error::Timestamp);
        }
        let (mut seconds, mut micros, mut offset) = (0i64, 0u32, 0i64);
        if self.peek().is_some() {
            if !matches!(self.peek(), Some(b'T' | b't' | b' ' | b'_')) {
                return Err(Error::Timestamp);
            }
            self.at += 1;
            let hour = self.number(2)?;
            self.require(b':')?;
            let minute = self.number(2)?;
            let second = if self.eat(b':') { self.number(2)? } else { 0 };
            if hour > 23 || minute > 59 || second > 59 {
                return Err(Error::Timestamp);
            }
            if self.eat(b'.') || self.eat(b',') {
                let start = self.at;
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.at += 1;
                }
                let digits = core::str::from_utf8(self.bytes.get(start..self.at).unwrap_or(&[])).unwrap_or("");
                if digits.is_empty() {
                    return Err(Error::Timestamp);
                }
                micros = u32::try_from(fraction_digits(digits, 6)).map_err(|_| Error::Timestamp)?;
            }
            seconds = i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
            offset = self.offset()?;
        }
        if self.peek().is_some() {
            return Err(Error::Timestamp);
        }
        check(Timestamp { s: days_from_civil(year, month, day) * 86_400 + seconds - offset, us: micros })
    }

    /// `Z`, `z`, `±HH:MM`, `±HHMM`, `±HH` or nothing (UTC), in seconds east.
    fn offset(&mut self) -> Result<i64, Error> {
        let sign = match self.peek() {
            None => return Ok(0),
            Some(b'Z' | b'z') => {
                self.at += 1;
                return Ok(0);
            }
            Some(b'+') => 1,
            Some(b'-') => -1,
            Some(_) => return Err(Error::Timestamp),
        };
        self.at += 1;
        let hours = self.number(2)?;
        let colon = self.eat(b':');
        let minutes = if colon || self.peek().is_some() { self.number(2)? } else { 0 };
        if hours > 23 || minutes > 59 {
            return Err(Error::Timestamp);
        }
        Ok(sign * (i64::from(hours) * 3600 + i64::from(minutes) * 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Result<String, Error> {
        parse_str(text).and_then(format)
    }

    #[test]
    fn written_as_the_sdk_writes() {
        assert_eq!(format(Timestamp { s: 1_704_164_645, us: 678_901 }).unwrap(), "2024-01-02T03:04:05.678901Z");
        assert_eq!(format(Timestamp { s: 0, us: 0 }).unwrap(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format(Timestamp { s: -1, us: 500_000 }).unwrap(), "1969-12-31T23:59:59.500000Z");
        assert_eq!(format(Timestamp { s: 253_402_300_800, us: 0 }), Err(Error::Timestamp), "year 10000");
    }

    #[test]
    fn read_in_every_form_the_sdk_reads() {
        let same = "2024-01-02T03:04:05.000000Z";
        for text in [
            "2024-01-02T03:04:05Z",
            "2024-01-02 03:04:05z",
            "2024-01-02t03:04:05",
            "2024-01-02T05:04:05+02:00",
            "2024-01-02T01:34:05-0130",
            "2024-01-02T04:04:05+01",
            "2024-01-02_03:04:05.000Z",
        ] {
            assert_eq!(at(text).as_deref(), Ok(same), "{text}");
        }
        assert_eq!(
            at("2024-01-02T03:04:05.1234567Z").unwrap(),
            "2024-01-02T03:04:05.123456Z",
            "truncated, not rounded"
        );
        assert_eq!(at("2024-01-02T03:04Z").unwrap(), "2024-01-02T03:04:00.000000Z");
        assert_eq!(at("2024-01-02").unwrap(), "2024-01-02T00:00:00.000000Z");
        assert_eq!(at("1700000000").unwrap(), "2023-11-14T22:13:20.000000Z");
        assert_eq!(parse_number("1700000000.5").and_then(format).unwrap(), "2023-11-14T22:13:20.500000Z");
        assert_eq!(parse_number("1700000000000").and_then(format).unwrap(), "2023-11-14T22:13:20.000000Z", "ms");
        assert_eq!(parse_number("1700000000123").and_then(format).unwrap(), "2023-11-14T22:13:20.123000Z");
        assert_eq!(parse_number("-1.5").and_then(format).unwrap(), "1969-12-31T23:59:58.500000Z");
    }

    #[test]
    fn what_is_no_timestamp_is_an_error() {
        for text in [
            "",
            "2024-1",
            "2024-13-01",
            "2024-02-30",
            "2024-01-02T24:00:00Z",
            "2024-01-02T03:04:05.Z",
            "2024-01-02T03:04:05+2",
            "2024-01-02X03:04:05",
            "0000-01-01",
            "2024-01-02T03:04:05Zjunk",
            "1e9",
            "--1",
        ] {
            assert_eq!(parse_str(text), Err(Error::Timestamp), "{text:?}");
        }
        assert_eq!(parse_number("99999999999999999999999"), Err(Error::Timestamp));
        assert_eq!(parse_number("1e9"), Err(Error::Timestamp));
    }

    #[test]
    fn civil_days_agree_both_ways() {
        for z in (-719_162..2_932_896).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }
}
