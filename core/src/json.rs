//! JSON the protocol codecs write by hand and keep as text (features `kelvin`, `streamsea`,
//! `chaski`): strings escaped as serde_json escapes them (or as Python's `json.dumps` does, for
//! Chaski), and a payload passed on with its insignificant
//! whitespace removed, keys in the order they came and numbers and string escapes as the sender
//! wrote them (the Kelvin SDK's own output is already in that form, so its lines make the round
//! trip byte for byte).

#[cfg(any(feature = "kelvin", feature = "streamsea"))]
use alloc::borrow::Cow;
use alloc::string::String;

#[cfg(any(feature = "kelvin", feature = "streamsea"))]
use serde::Deserialize;
#[cfg(any(feature = "kelvin", feature = "streamsea"))]
use serde_json::value::RawValue;

/// `raw`, valid JSON, without whitespace outside strings.
#[cfg(feature = "kelvin")]
pub(crate) fn compact(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in raw.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// A JSON string's value (`raw` holds one, escapes and all); `None` for any other JSON.
#[cfg(any(feature = "kelvin", feature = "streamsea"))]
pub(crate) fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    <Cow<'_, str>>::deserialize(raw).ok()
}

/// Appends `text` as a JSON string, escaped as serde_json (and so pydantic) escapes.
pub fn write_string(text: &str, out: &mut String) {
    write_escaped(text, out, false);
}

/// Appends `text` as a JSON string as Python's `json.dumps` writes it (`ensure_ascii`): every
/// character outside ASCII as `\uXXXX`, a surrogate pair beyond the BMP, lower-case hex.
pub fn write_string_ascii(text: &str, out: &mut String) {
    write_escaped(text, out, true);
}

fn write_escaped(text: &str, out: &mut String, ascii: bool) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || (ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = core::fmt::Write::write_fmt(out, format_args!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(all(test, feature = "kelvin"))]
mod tests {
    use super::*;

    #[test]
    fn whitespace_goes_and_strings_stay() {
        assert_eq!(
            compact(" { \"a b\" : [1, 2.50 ,\"x \\\" y\"],\n\t\"c\":null } "),
            r#"{"a b":[1,2.50,"x \" y"],"c":null}"#
        );
        let mut out = String::new();
        write_string("é\n\"\\\u{1}", &mut out);
        assert_eq!(out, r#""é\n\"\\\u0001""#);
    }
}
