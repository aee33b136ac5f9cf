//! Chaski's messages in the JSON codec a Chaski node is given with `serializer=` and
//! `deserializer=` (docs/CHASKI.md has the Python module): `json.dumps(obj, separators=(',',
//! ':'))` with `ensure_ascii`, where a `chaski.node.Message` is `{"$msg": {"command", "topic",
//! "data", "timestamp", "ttl", "uuid"}}`, bytes are `{"$b64": base64}`, datetimes
//! `{"$dt": isoformat}` and sets `{"$set": sorted list}`. Stock chaski pickles instead, and
//! unpickling network bytes lets a peer run code: pickle is never read or written here.
//!
//! [`Value`] is what such JSON holds, read by a small parser that keeps object keys in order and
//! numbers as written (so a message makes the round trip byte for byte) and refuses nesting
//! deeper than [`MAX_DEPTH`]; [`Value::to_json`] writes it as Python's `json.dumps` does.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use base64::Engine;

use crate::json::write_string_ascii as write_string;

/// Deepest nesting read (Python's own limit is about 1000; a peer has no need of more).
pub const MAX_DEPTH: usize = 64;

/// What the JSON codec carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    /// A JSON number, as written.
    Number(String),
    String(String),
    Array(Vec<Value>),
    /// Keys in the order written.
    Object(Vec<(String, Value)>),
    Bytes(Vec<u8>),
    /// `datetime.isoformat()` text, as written.
    DateTime(String),
    /// Items in the order written (the sender sorted them).
    Set(Vec<Value>),
    Message(Box<Message>),
}

/// A `chaski.node.Message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub command: String,
    pub topic: String,
    pub data: Value,
    /// A [`Value::DateTime`] when a node wrote it (the dataclass default is the number 0).
    pub timestamp: Value,
    pub ttl: i64,
    pub uuid: Option<String>,
}

/// Why bytes are not a message of the codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Not JSON (at this byte offset).
    Syntax(usize),
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A `$b64` that is not base64, a `$dt` that is not a string, a `$set` that is not a list.
    BadTag(&'static str),
    /// A `$msg` without a `command`, with a field of the wrong kind, or one `Message` lacks.
    BadMessage(&'static str),
    /// The JSON is not the expected kind (a message where a topic was expected, say).
    Unexpected(&'static str),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Syntax(at) => write!(f, "not JSON (byte {at})"),
            Error::TooDeep => write!(f, "nested deeper than {MAX_DEPTH}"),
            Error::BadTag(tag) => write!(f, "a malformed {tag}"),
            Error::BadMessage(why) => write!(f, "not a chaski Message: {why}"),
            Error::Unexpected(what) => write!(f, "expected {what}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

impl Value {
    /// Reads one JSON value (whitespace around it allowed, nothing else after it).
    pub fn parse(bytes: &[u8]) -> Result<Value, Error> {
        let mut parser = Parser { bytes, at: 0 };
        let value = parser.value(0)?;
        parser.skip_space();
        if parser.at != bytes.len() {
            return Err(Error::Syntax(parser.at));
        }
        Ok(value)
    }

    /// Writes it as `json.dumps(value, separators=(',', ':'))` with the codec's tags.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(n),
            Value::String(s) => write_string(s, out),
            Value::Array(items) => write_list(items, out),
            Value::Object(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(key, out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
            Value::Bytes(bytes) => {
                out.push_str("{\"$b64\":\"");
                out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
                out.push_str("\"}");
            }
            Value::DateTime(text) => {
                out.push_str("{\"$dt\":");
                write_string(text, out);
                out.push('}');
            }
            Value::Set(items) => {
                out.push_str("{\"$set\":");
                write_list(items, out);
                out.push('}');
            }
            Value::Message(m) => {
                out.push_str("{\"$msg\":{\"command\":");
                write_string(&m.command, out);
                out.push_str(",\"topic\":");
                write_string(&m.topic, out);
                out.push_str(",\"data\":");
                m.data.write(out);
                out.push_str(",\"timestamp\":");
                m.timestamp.write(out);
                let _ = core::fmt::Write::write_fmt(out, format_args!(",\"ttl\":{}", m.ttl));
                out.push_str(",\"uuid\":");
                match &m.uuid {
                    Some(uuid) => write_string(uuid, out),
                    None => out.push_str("null"),
                }
                out.push_str("}}");
            }
        }
    }

    /// The value of key `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

impl Message {
    /// A message frame's data: a `$msg`.
    pub fn parse(data: &[u8]) -> Result<Message, Error> {
        match Value::parse(data)? {
            Value::Message(m) => Ok(*m),
            _ => Err(Error::Unexpected("a $msg")),
        }
    }

    /// The frame data of this message.
    pub fn to_json(&self) -> String {
        Value::Message(Box::new(self.clone())).to_json()
    }
}

/// A frame's topic: a JSON string.
pub fn parse_topic(topic: &[u8]) -> Result<String, Error> {
    match Value::parse(topic)? {
        Value::String(s) => Ok(s),
        _ => Err(Error::Unexpected("a topic string")),
    }
}

/// The topic as a frame carries it.
pub fn topic_json(topic: &str) -> String {
    let mut out = String::new();
    write_string(topic, &mut out);
    out
}

fn write_list(items: &[Value], out: &mut String) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        item.write(out);
    }
    out.push(']');
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Takes `byte` if it is next; a syntax error otherwise.
    fn eat(&mut self, byte: u8) -> Result<(), Error> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(Error::Syntax(self.at))
        }
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Result<Value, Error> {
        match self.bytes.get(self.at..self.at + word.len()) {
            Some(found) if found == word => {
                self.at += word.len();
                Ok(value)
            }
            _ => Err(Error::Syntax(self.at)),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        self.skip_space();
        match self.peek() {
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'[') => {
                self.at += 1;
                let items = self.items(depth, b']', |p, depth| p.value(depth))?;
                Ok(Value::Array(items))
            }
            Some(b'{') => {
                self.at += 1;
                let entries = self.items(depth, b'}', |p, depth| {
                    p.skip_space();
                    let key = p.string()?;
                    p.skip_space();
                    p.eat(b':')?;
                    Ok((key, p.value(depth)?))
                })?;
                tagged(entries)
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Error::Syntax(self.at)),
        }
    }

    /// Comma-separated items up to `close` (the opening bracket taken).
    fn items<T>(
        &mut self,
        depth: usize,
        close: u8,
        mut item: impl FnMut(&mut Self, usize) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(items);
        }
        loop {
            items.push(item(self, depth + 1)?);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(c) if c == close => {
                    self.at += 1;
                    return Ok(items);
                }
                _ => return Err(Error::Syntax(self.at)),
            }
        }
    }

    fn number(&mut self) -> Result<Value, Error> {
        let start = self.at;
        let digits = |p: &mut Self| {
            let from = p.at;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.at += 1;
            }
            p.at > from
        };
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        if self.peek() == Some(b'0') {
            self.at += 1;
        } else if !digits(self) {
            return Err(Error::Syntax(self.at));
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !digits(self) {
                return Err(Error::Syntax(self.at));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !digits(self) {
                return Err(Error::Syntax(self.at));
            }
        }
        let text = self.bytes.get(start..self.at).ok_or(Error::Syntax(start))?;
        // ASCII digits and signs only: always UTF-8.
        Ok(Value::Number(String::from_utf8_lossy(text).into_owned()))
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let digits = self.bytes.get(self.at..self.at + 4).ok_or(Error::Syntax(self.at))?;
        let text = core::str::from_utf8(digits).map_err(|_| Error::Syntax(self.at))?;
        let unit = u32::from_str_radix(text, 16).map_err(|_| Error::Syntax(self.at))?;
        self.at += 4;
        Ok(unit)
    }

    fn string(&mut self) -> Result<String, Error> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.at;
            while matches!(self.peek(), Some(c) if c != b'"' && c != b'\\' && c >= 0x20) {
                self.at += 1;
            }
            let run = self.bytes.get(start..self.at).unwrap_or(&[]);
            out.push_str(core::str::from_utf8(run).map_err(|e| Error::Syntax(start + e.valid_up_to()))?);
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let escape = self.peek().ok_or(Error::Syntax(self.at))?;
                    self.at += 1;
                    let c = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode()?,
                        _ => return Err(Error::Syntax(self.at - 1)),
                    };
                    out.push(c);
                }
                _ => return Err(Error::Syntax(self.at)),
            }
        }
    }

    /// After `\u`: one code point, a surrogate pair joined (a lone surrogate is refused).
    fn unicode(&mut self) -> Result<char, Error> {
        let at = self.at;
        let unit = self.hex4()?;
        let code = if (0xd800..0xdc00).contains(&unit) {
            if self.bytes.get(self.at..self.at + 2) != Some(b"\\u") {
                return Err(Error::Syntax(at));
            }
            self.at += 2;
            let low = self.hex4()?;
            if !(0xdc00..0xe000).contains(&low) {
                return Err(Error::Syntax(at));
            }
            0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
        } else {
            unit
        };
        char::from_u32(code).ok_or(Error::Syntax(at))
    }
}

/// An object, or the codec's tagged value it spells (exactly one key, a tag).
fn tagged(mut entries: Vec<(String, Value)>) -> Result<Value, Error> {
    if entries.len() != 1 {
        return Ok(Value::Object(entries));
    }
    let Some((key, value)) = entries.pop() else { return Ok(Value::Object(entries)) };
    match (key.as_str(), value) {
        ("$b64", Value::String(text)) => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Value::Bytes)
            .map_err(|_| Error::BadTag("$b64")),
        ("$b64", _) => Err(Error::BadTag("$b64")),
        ("$dt", Value::String(text)) => Ok(Value::DateTime(text)),
        ("$dt", _) => Err(Error::BadTag("$dt")),
        ("$set", Value::Array(items)) => Ok(Value::Set(items)),
        ("$set", _) => Err(Error::BadTag("$set")),
        ("$msg", Value::Object(fields)) => message(fields).map(|m| Value::Message(Box::new(m))),
        ("$msg", _) => Err(Error::BadMessage("not an object")),
        (_, value) => Ok(Value::Object(alloc::vec![(key, value)])),
    }
}

/// `Message(**fields)`: `command` needed, the others default as the dataclass does.
fn message(fields: Vec<(String, Value)>) -> Result<Message, Error> {
    let mut m = Message {
        command: String::new(),
        topic: String::new(),
        data: Value::Null,
        timestamp: Value::Number("0".into()),
        ttl: 64,
        uuid: None,
    };
    let mut command = false;
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("command", Value::String(s)) => {
                m.command = s;
                command = true;
            }
            ("topic", Value::String(s)) => m.topic = s,
            ("data", v) => m.data = v,
            ("timestamp", v) => m.timestamp = v,
            ("ttl", Value::Number(n)) => m.ttl = n.parse().map_err(|_| Error::BadMessage("ttl is not an integer"))?,
            ("uuid", Value::String(s)) => m.uuid = Some(s),
            ("uuid", Value::Null) => m.uuid = None,
            ("command" | "topic" | "ttl" | "uuid", _) => return Err(Error::BadMessage("a field of the wrong kind")),
            _ => return Err(Error::BadMessage("a field Message does not have")),
        }
    }
    if !command {
        return Err(Error::BadMessage("no command"));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn the_push_of_the_capture_reads_and_writes_back_byte_for_byte() {
        // peers.md §5: `push('topic1', b'hello')` with the JSON codec (uuid and time made up).
        let text = r#"{"$msg":{"command":"ChaskiMessage","topic":"topic1","data":{"$b64":"aGVsbG8="},"timestamp":{"$dt":"2026-12-07T16:20:01.123456"},"ttl":64,"uuid":"0b7e4a56-3c1f-4f0a-9d1e-2a6f3c7e8d90"}}"#;
        let m = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(
            (m.command.as_str(), m.topic.as_str(), &m.data),
            ("ChaskiMessage", "topic1", &Value::Bytes(b"hello".to_vec()))
        );
        assert_eq!(m.timestamp, Value::DateTime("2026-12-07T16:20:01.123456".into()));
        assert_eq!(m.to_json(), text);
        assert_eq!(parse_topic(b"\"topic1\""), Ok("topic1".into()));
        assert_eq!(topic_json("All"), "\"All\"");
    }

    #[test]
    fn strings_escape_as_python_does_and_numbers_stay_as_written() {
        let v = Value::Object(vec![
            ("k\u{e4}se".into(), Value::String("\u{1f600}\"\n\u{1}\u{7f}/".into())),
            ("n".into(), Value::Number("1e+16".into())),
            ("s".into(), Value::Set(vec![Value::String("a".into()), Value::String("b".into())])),
        ]);
        let json = v.to_json();
        assert_eq!(
            json,
            "{\"k\\u00e4se\":\"\\ud83d\\ude00\\\"\\n\\u0001\u{7f}/\",\"n\":1e+16,\"s\":{\"$set\":[\"a\",\"b\"]}}"
        );
        assert_eq!(Value::parse(json.as_bytes()), Ok(v));
    }

    #[test]
    fn bad_input_is_an_error() {
        let deep = "[".repeat(MAX_DEPTH + 2);
        assert_eq!(Value::parse(deep.as_bytes()), Err(Error::TooDeep));
        for bad in [&b"{\"a\":}"[..], b"[1,]", b"\"\\ud800\"", b"01", b"1.", b"\"\xff\"", b"nul", b"{} x", b""] {
            assert!(matches!(Value::parse(bad), Err(Error::Syntax(_))), "{bad:?}");
        }
        assert_eq!(Value::parse(br#"{"$b64":"%%"}"#), Err(Error::BadTag("$b64")));
        assert_eq!(Value::parse(br#"{"$msg":{"topic":"x"}}"#), Err(Error::BadMessage("no command")));
        assert_eq!(
            Value::parse(br#"{"$msg":{"command":"x","extra":1}}"#),
            Err(Error::BadMessage("a field Message does not have"))
        );
        assert_eq!(Message::parse(b"{}"), Err(Error::Unexpected("a $msg")));
        let defaults = Message::parse(br#"{"$msg":{"command":"x"}}"#).unwrap();
        assert_eq!((defaults.ttl, defaults.uuid, defaults.timestamp), (64, None, Value::Number("0".into())));
    }
}
