//! A stream's schema, as stream-sea-client 0.7.0 writes it (`SchemaDefinition.json_serialize`):
//! `{"name": <stream>, "version": <as given>, "fields": [{"name", "type"[, "enum"][, "fields"]}]}`,
//! and the check of a message's JSON payload against it.
//!
//! Field types: `string`, `float` (any JSON number), `integer` (a number without fraction or
//! exponent), `date` (`YYYY-MM-DDTHH:mm:ssZ`, UTC), `array<string|float|integer|date>`, `enum`
//! (a string among the field's `enum` values: an array of strings, or the keys of an object,
//! which is what the client's `enumValues: dict` writes), `object` and `array<object>` (checked
//! against their `fields`; none listed takes any object, as the client cannot list any).
//!
//! A payload conforms when it is a JSON object with every field of the schema, each of its
//! type, and no other field. A violation names the field (a path like `a.b[2].c`) and why.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::json;

/// Why a schema could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaError {
    /// Not JSON of the schema's shape (`name` and `fields` missing, a field without `name`
    /// or `type`, nesting beyond serde_json's limit).
    Shape,
    /// A field type the protocol does not have.
    Type(String),
    /// An `enum` field without values.
    EnumValues(String),
    /// Two fields of one object with the same name.
    Duplicate(String),
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaError::Shape => {
                f.write_str("a schema is {\"name\", \"version\", \"fields\": [{\"name\", \"type\"}...]}")
            }
            SchemaError::Type(t) => write!(
                f,
                "no field type {t:?}: string, float, integer, date, enum, object, or array<string|float|integer|date|object>"
            ),
            SchemaError::EnumValues(name) => write!(f, "enum field {name:?} needs its values (\"enum\": [...])"),
            SchemaError::Duplicate(name) => write!(f, "field {name:?} is listed twice"),
        }
    }
}

/// A payload that does not conform: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field, as a path from the payload (`pressure`, `sensors[1].unit`); empty for the
    /// payload itself.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() { f.write_str(&self.reason) } else { write!(f, "{}: {}", self.field, self.reason) }
    }
}

/// A field's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    String,
    Float,
    Integer,
    Date,
    StringArray,
    FloatArray,
    IntegerArray,
    DateArray,
    Enum(Vec<String>),
    Object(Vec<Field>),
    ObjectArray(Vec<Field>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub kind: FieldKind,
}

/// A stream's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub name: String,
    /// The version as the definer wrote it: JSON text (a string or a number), compared as
    /// written.
    pub version: String,
    pub fields: Vec<Field>,
}

#[derive(Deserialize)]
struct WireSchema {
    name: String,
    #[serde(default)]
    version: Option<Box<RawValue>>,
    fields: Vec<WireField>,
}

#[derive(Deserialize)]
struct WireField {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "enum", default)]
    values: Option<Value>,
    #[serde(default)]
    fields: Option<Vec<WireField>>,
}

fn fields(wire: Vec<WireField>) -> Result<Vec<Field>, SchemaError> {
    let mut out: Vec<Field> = Vec::with_capacity(wire.len());
    for field in wire {
        if out.iter().any(|f| f.name == field.name) {
            return Err(SchemaError::Duplicate(field.name));
        }
        let kind = match field.kind.as_str() {
            "string" => FieldKind::String,
            "float" => FieldKind::Float,
            "integer" => FieldKind::Integer,
            "date" => FieldKind::Date,
            "array<string>" => FieldKind::StringArray,
            "array<float>" => FieldKind::FloatArray,
            "array<integer>" => FieldKind::IntegerArray,
            "array<date>" => FieldKind::DateArray,
            "enum" => {
                let values: Vec<String> = match &field.values {
                    Some(Value::Array(items)) => {
                        items.iter().filter_map(|v| v.as_str().map(ToString::to_string)).collect()
                    }
                    Some(Value::Object(map)) => map.keys().cloned().collect(),
                    _ => Vec::new(),
                };
                if values.is_empty() {
                    return Err(SchemaError::EnumValues(field.name));
                }
                FieldKind::Enum(values)
            }
            "object" => FieldKind::Object(fields(field.fields.unwrap_or_default())?),
            "array<object>" => FieldKind::ObjectArray(fields(field.fields.unwrap_or_default())?),
            other => return Err(SchemaError::Type(other.to_string())),
        };
        out.push(Field { name: field.name, kind });
    }
    Ok(out)
}

impl Schema {
    /// Reads a schema (a define's body, gzip already undone).
    pub fn parse(json: &[u8]) -> Result<Self, SchemaError> {
        let wire: WireSchema = serde_json::from_slice(json).map_err(|_| SchemaError::Shape)?;
        let version = wire.version.map_or_else(|| "null".to_string(), |v| v.get().to_string());
        Ok(Schema { name: wire.name, version, fields: fields(wire.fields)? })
    }

    /// The schema as JSON, the keys as the client writes them (what `describe_stream` reads).
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"name\":");
        json::write_string(&self.name, &mut out);
        out.push_str(",\"version\":");
        out.push_str(&self.version);
        out.push_str(",\"fields\":");
        write_fields(&self.fields, &mut out);
        out.push('}');
        out
    }

    /// Checks a message's payload (JSON text) against the schema.
    pub fn check(&self, payload: &str) -> Result<(), Violation> {
        let value: Value =
            serde_json::from_str(payload).map_err(|_| Violation { field: String::new(), reason: "not JSON".into() })?;
        check_object(&self.fields, &value, "")
    }
}

fn write_fields(fields: &[Field], out: &mut String) {
    out.push('[');
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        json::write_string(&field.name, out);
        let name = match &field.kind {
            FieldKind::String => "string",
            FieldKind::Float => "float",
            FieldKind::Integer => "integer",
            FieldKind::Date => "date",
            FieldKind::StringArray => "array<string>",
            FieldKind::FloatArray => "array<float>",
            FieldKind::IntegerArray => "array<integer>",
            FieldKind::DateArray => "array<date>",
            FieldKind::Enum(_) => "enum",
            FieldKind::Object(_) => "object",
            FieldKind::ObjectArray(_) => "array<object>",
        };
        out.push_str(",\"type\":\"");
        out.push_str(name);
        out.push('"');
        match &field.kind {
            FieldKind::Enum(values) => {
                out.push_str(",\"enum\":");
                out.push_str(&Value::from(values.clone()).to_string());
            }
            FieldKind::Object(children) | FieldKind::ObjectArray(children) => {
                out.push_str(",\"fields\":");
                write_fields(children, out);
            }
            _ => {}
        }
        out.push('}');
    }
    out.push(']');
}

fn violation(field: &str, reason: impl Into<String>) -> Violation {
    Violation { field: field.to_string(), reason: reason.into() }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_string() } else { alloc::format!("{path}.{name}") }
}

fn check_object(fields: &[Field], value: &Value, path: &str) -> Result<(), Violation> {
    let Value::Object(map) = value else { return Err(violation(path, "must be a JSON object")) };
    if fields.is_empty() {
        return Ok(());
    }
    for field in fields {
        let at = join(path, &field.name);
        let value = map.get(&field.name).ok_or_else(|| violation(&at, "missing"))?;
        check_value(&field.kind, value, &at)?;
    }
    if let Some(extra) = map.keys().find(|k| !fields.iter().any(|f| &f.name == *k)) {
        return Err(violation(&join(path, extra), "not in the schema"));
    }
    Ok(())
}

fn check_value(kind: &FieldKind, value: &Value, at: &str) -> Result<(), Violation> {
    let each = |check: &dyn Fn(&Value, &str) -> Result<(), Violation>| match value {
        Value::Array(items) => {
            items.iter().enumerate().try_for_each(|(i, item)| check(item, &alloc::format!("{at}[{i}]")))
        }
        _ => Err(violation(at, "must be an array")),
    };
    match kind {
        FieldKind::String => scalar(value.is_string(), at, "must be a string"),
        FieldKind::Float => scalar(value.is_number(), at, "must be a number"),
        FieldKind::Integer => scalar(is_integer(value), at, "must be an integer"),
        FieldKind::Date => scalar(value.as_str().is_some_and(is_date), at, "must be a date, YYYY-MM-DDTHH:mm:ssZ"),
        FieldKind::StringArray => each(&|v, at| scalar(v.is_string(), at, "must be a string")),
        FieldKind::FloatArray => each(&|v, at| scalar(v.is_number(), at, "must be a number")),
        FieldKind::IntegerArray => each(&|v, at| scalar(is_integer(v), at, "must be an integer")),
        FieldKind::DateArray => {
            each(&|v, at| scalar(v.as_str().is_some_and(is_date), at, "must be a date, YYYY-MM-DDTHH:mm:ssZ"))
        }
        FieldKind::Enum(values) => match value.as_str() {
            Some(s) if values.iter().any(|v| v == s) => Ok(()),
            _ => Err(violation(at, alloc::format!("must be one of {}", values.join(", ")))),
        },
        FieldKind::Object(children) => check_object(children, value, at),
        FieldKind::ObjectArray(children) => each(&|v, at| check_object(children, v, at)),
    }
}

fn scalar(ok: bool, at: &str, reason: &str) -> Result<(), Violation> {
    if ok { Ok(()) } else { Err(violation(at, reason)) }
}

fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64()
}

/// `YYYY-MM-DDTHH:mm:ssZ` with a real month, day, hour, minute and second.
pub fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: core::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let fixed = b.len() == 20
        && b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && b.get(10) == Some(&b'T')
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':')
        && b.get(19) == Some(&b'Z');
    match (fixed, digits(0..4), digits(5..7), digits(8..10), digits(11..13), digits(14..16), digits(17..19)) {
        (true, Some(_), Some(m), Some(d), Some(h), Some(mi), Some(s)) => {
            (1..=12).contains(&m) && (1..=31).contains(&d) && h < 24 && mi < 60 && s < 60
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOILER: &str = r#"{"name": "boiler_data", "version": "1", "fields": [
        {"name": "temperature", "type": "float"}, {"name": "count", "type": "integer"},
        {"name": "mode", "type": "enum", "enum": ["on", "off"]}, {"name": "at", "type": "date"},
        {"name": "tags", "type": "array<string>"}, {"name": "readings", "type": "array<float>"},
        {"name": "meta", "type": "object", "fields": [{"name": "site", "type": "string"}]},
        {"name": "parts", "type": "array<object>", "fields": [{"name": "n", "type": "integer"}]}]}"#;

    fn good() -> Value {
        serde_json::json!({
            "temperature": 91.5, "count": 3, "mode": "on", "at": "2024-01-02T03:04:05Z", "tags": ["a"],
            "readings": [1, 2.5], "meta": {"site": "x"}, "parts": [{"n": 1}, {"n": 2}]
        })
    }

    fn check_with(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Result<(), Violation> {
        let mut payload = good();
        change(payload.as_object_mut().unwrap());
        Schema::parse(BOILER.as_bytes()).unwrap().check(&payload.to_string())
    }

    #[test]
    fn a_schema_reads_and_writes_as_the_client_writes_it() {
        let schema = Schema::parse(BOILER.as_bytes()).unwrap();
        assert_eq!(schema.name, "boiler_data");
        assert_eq!(schema.version, "\"1\"");
        let again = Schema::parse(schema.to_json().as_bytes()).unwrap();
        assert_eq!(again, schema);
        let dict_enum = r#"{"name":"s","version":2,"fields":[{"name":"m","type":"enum","enum":{"on":1,"off":0}}]}"#;
        let schema = Schema::parse(dict_enum.as_bytes()).unwrap();
        assert_eq!(schema.fields[0].kind, FieldKind::Enum(vec!["off".into(), "on".into()]));
        assert_eq!(schema.version, "2");
    }

    #[test]
    fn bad_schemas_say_why() {
        assert_eq!(Schema::parse(b"[]"), Err(SchemaError::Shape));
        assert_eq!(
            Schema::parse(br#"{"name":"s","fields":[{"name":"a","type":"double"}]}"#),
            Err(SchemaError::Type("double".into()))
        );
        assert_eq!(
            Schema::parse(br#"{"name":"s","fields":[{"name":"a","type":"enum"}]}"#),
            Err(SchemaError::EnumValues("a".into()))
        );
        assert_eq!(
            Schema::parse(br#"{"name":"s","fields":[{"name":"a","type":"string"},{"name":"a","type":"float"}]}"#),
            Err(SchemaError::Duplicate("a".into()))
        );
        let deep = format!(
            "{{\"name\":\"s\",\"fields\":{}{}}}",
            "[{\"name\":\"a\",\"type\":\"object\",\"fields\":".repeat(200),
            "[]".to_string() + &"}]".repeat(200)
        );
        assert_eq!(Schema::parse(deep.as_bytes()), Err(SchemaError::Shape), "nesting beyond serde_json's limit");
    }

    #[test]
    fn payloads_conform_or_say_which_field_does_not() {
        assert_eq!(check_with(|_| {}), Ok(()));
        let reason = |r: Result<(), Violation>| r.map_err(|v| v.to_string()).unwrap_err();
        assert_eq!(
            reason(check_with(|p| {
                p.remove("count");
            })),
            "count: missing"
        );
        assert_eq!(
            reason(check_with(|p| {
                p.insert("count".into(), 1.5.into());
            })),
            "count: must be an integer"
        );
        assert_eq!(
            reason(check_with(|p| {
                p.insert("extra".into(), 1.into());
            })),
            "extra: not in the schema"
        );
        assert_eq!(
            reason(check_with(|p| {
                p.insert("mode".into(), "auto".into());
            })),
            "mode: must be one of on, off"
        );
        assert_eq!(
            reason(check_with(|p| {
                p.insert("at".into(), "2024-01-02 03:04:05".into());
            })),
            "at: must be a date, YYYY-MM-DDTHH:mm:ssZ"
        );
        assert_eq!(
            reason(check_with(|p| {
                p.insert("readings".into(), serde_json::json!([1, "2"]));
            })),
            "readings[1]: must be a number"
        );
        assert_eq!(
            reason(check_with(|p| {
                p.insert("meta".into(), serde_json::json!({"site": 1}));
            })),
            "meta.site: must be a string"
        );
        assert_eq!(
            reason(check_with(|p| {
                p.insert("parts".into(), serde_json::json!([{"n": 1}, {}]));
            })),
            "parts[1].n: missing"
        );
        let schema = Schema::parse(BOILER.as_bytes()).unwrap();
        assert_eq!(schema.check("[1]").unwrap_err().to_string(), "must be a JSON object");
        assert_eq!(schema.check("nope").unwrap_err().to_string(), "not JSON");
    }

    #[test]
    fn dates_are_exactly_the_specs() {
        assert!(is_date("2024-01-02T03:04:05Z"));
        for bad in [
            "2024-01-02T03:04:05",
            "2024-01-02T03:04:05.1Z",
            "2024-13-02T03:04:05Z",
            "2024-01-02T24:04:05Z",
            "24-01-02T03:04:05Z",
            "",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
    }
}
