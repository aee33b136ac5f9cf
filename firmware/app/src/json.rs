//! Just enough JSON for the device's payloads, written into a fixed buffer without `core::fmt`
//! (its float and padding machinery costs flash the device does not need). Every write reports
//! overflow through [`Json::finish`], so a payload is either whole or not sent.

use heapless::String;

/// An object being written: `{"key":value,...}`.
pub(crate) struct Json<const N: usize> {
    out: String<N>,
    /// No key written yet (a comma goes before every later one).
    first: bool,
    overflow: bool,
}

impl<const N: usize> Json<N> {
    pub(crate) fn object() -> Self {
        let mut json = Json { out: String::new(), first: true, overflow: false };
        json.raw("{");
        json
    }

    fn raw(&mut self, text: &str) {
        if self.out.push_str(text).is_err() {
            self.overflow = true;
        }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.raw(",");
        }
        self.first = false;
        self.string(key);
        self.raw(":");
    }

    /// A string, escaped: `"`, `\` and control characters.
    fn string(&mut self, text: &str) {
        self.raw("\"");
        for (i, c) in text.char_indices() {
            match c {
                '"' => self.raw("\\\""),
                '\\' => self.raw("\\\\"),
                c if (c as u32) < 0x20 => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    let code = c as usize;
                    let escaped = [b'\\', b'u', b'0', b'0', HEX[code >> 4], HEX[code & 0xf]];
                    self.raw(core::str::from_utf8(&escaped).unwrap_or("?"));
                }
                c => self.raw(text.get(i..i + c.len_utf8()).unwrap_or("")),
            }
        }
        self.raw("\"");
    }

    pub(crate) fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        self.string(value);
        self
    }

    pub(crate) fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        push_u64(&mut self.out, value, &mut self.overflow);
        self
    }

    pub(crate) fn u32(&mut self, key: &str, value: u32) -> &mut Self {
        self.u64(key, u64::from(value))
    }

    pub(crate) fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.raw(if value { "true" } else { "false" });
        self
    }

    pub(crate) fn u32_or_null(&mut self, key: &str, value: Option<u32>) -> &mut Self {
        match value {
            Some(value) => self.u32(key, value),
            None => {
                self.key(key);
                self.raw("null");
                self
            }
        }
    }

    /// The object, closed; `None` if it did not fit in `N` bytes.
    pub(crate) fn finish(mut self) -> Option<String<N>> {
        self.raw("}");
        (!self.overflow).then_some(self.out)
    }
}

/// `value` in decimal, appended to `out`.
pub(crate) fn push_u64<const N: usize>(out: &mut String<N>, mut value: u64, overflow: &mut bool) {
    let mut digits = [0u8; 20]; // u64::MAX has 20
    let mut start = digits.len();
    loop {
        start -= 1;
        if let Some(slot) = digits.get_mut(start) {
            *slot = b'0' + (value % 10) as u8;
        }
        value /= 10;
        if value == 0 || start == 0 {
            break;
        }
    }
    let text = digits.get(start..).and_then(|d| core::str::from_utf8(d).ok()).unwrap_or("");
    if out.push_str(text).is_err() {
        *overflow = true;
    }
}

/// Hundredths as a decimal number with two places: `-512` is `-5.12`, `5` is `0.05`.
pub(crate) fn push_hundredths<const N: usize>(out: &mut String<N>, value: i32, overflow: &mut bool) {
    if value < 0 && out.push('-').is_err() {
        *overflow = true;
    }
    let magnitude = value.unsigned_abs();
    push_u64(out, u64::from(magnitude / 100), overflow);
    let cents = magnitude % 100;
    let fraction = [b'.', b'0' + (cents / 10) as u8, b'0' + (cents % 10) as u8];
    if out.push_str(core::str::from_utf8(&fraction).unwrap_or("")).is_err() {
        *overflow = true;
    }
}

/// `value` as JSON text on its own (a whole payload).
pub(crate) fn number<const N: usize>(value: u64) -> Option<String<N>> {
    let mut out = String::new();
    let mut overflow = false;
    push_u64(&mut out, value, &mut overflow);
    (!overflow).then_some(out)
}

/// Hundredths as JSON text on its own (a whole payload).
pub(crate) fn hundredths<const N: usize>(value: i32) -> Option<String<N>> {
    let mut out = String::new();
    let mut overflow = false;
    push_hundredths(&mut out, value, &mut overflow);
    (!overflow).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for value in [0u64, 7, 10, 1234567890, u64::MAX] {
            assert_eq!(number::<20>(value).as_deref(), Some(value.to_string().as_str()));
        }
        assert_eq!(number::<3>(1234), None);
        for (value, text) in [(2345, "23.45"), (-512, "-5.12"), (5, "0.05"), (-5, "-0.05"), (0, "0.00"), (100, "1.00")]
        {
            assert_eq!(hundredths::<16>(value).as_deref(), Some(text));
        }
        assert_eq!(hundredths::<16>(i32::MIN).as_deref(), Some("-21474836.48"));
    }

    #[test]
    fn objects() {
        let mut json = Json::<128>::object();
        json.str("version", "0.1.0").u64("uptime_ms", 1500).bool("led", true).u32_or_null("t", None);
        json.u32("a", 1).u32_or_null("b", None).str("esc", "a\"b\\c\n");
        assert_eq!(
            json.finish().as_deref(),
            Some(r#"{"version":"0.1.0","uptime_ms":1500,"led":true,"t":null,"a":1,"b":null,"esc":"a\"b\\c\u000a"}"#)
        );
        let mut small = Json::<8>::object();
        small.str("key", "longer than eight");
        assert_eq!(small.finish(), None);
    }
}
