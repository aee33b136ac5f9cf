//! Kelvin message types, `<type>[;key=value]...`, read and written as the SDK's classes do
//! (`kelvin.message.msg_type`): `data` and `parameter` keep their primitive type (`pt`, `object`
//! when absent) and `icd`, and an object type is written `data;icd=<icd>` (`data;icd=None`
//! without one, the SDK's quirk); the control, recommendation, manifest and action types drop
//! their components (`custom-action-create` keeps its `type`); any other type keeps its
//! components in order. Components with an empty value are not written.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use super::Error;

/// A `data` or `parameter` message's primitive type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primitive {
    Number,
    String,
    Boolean,
    Object,
}

impl Primitive {
    pub const fn name(self) -> &'static str {
        match self {
            Primitive::Number => "number",
            Primitive::String => "string",
            Primitive::Boolean => "boolean",
            Primitive::Object => "object",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Primitive::Number, Primitive::String, Primitive::Boolean, Primitive::Object]
            .into_iter()
            .find(|p| p.name() == text)
    }
}

/// The types whose components the SDK drops.
const BARE: [&str; 9] = [
    "control",
    "control-status",
    "control-ack",
    "recommendation",
    "parameters",
    "runtime_manifest",
    "datatag",
    "custom-action-result",
    "custom-action-report",
];

/// A message type: its name and components, as the SDK keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MsgType {
    pub name: String,
    pub components: Vec<(String, String)>,
}

impl MsgType {
    /// A type without components (`control`, `runtime_manifest`, ...).
    pub fn new(name: impl Into<String>) -> Self {
        MsgType { name: name.into(), components: Vec::new() }
    }

    /// `data;pt=<primitive>`.
    pub fn data(primitive: Primitive) -> Self {
        MsgType { name: "data".to_string(), components: alloc::vec![("pt".to_string(), primitive.name().to_string())] }
    }

    /// Reads a type as the SDK's `KMessageType.from_string` and the class it names do.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut parts = text.split(';');
        let name = parts.next().unwrap_or_default();
        let mut components: Vec<(String, String)> = Vec::new();
        for part in parts {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            match components.iter_mut().find(|(k, _)| k == key) {
                Some(existing) => existing.1 = value.to_string(),
                None => components.push((key.to_string(), value.to_string())),
            }
        }
        let get = |key: &str| components.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let components = match name {
            "data" | "parameter" => {
                let pt = get("pt").unwrap_or_else(|| "object".to_string());
                Primitive::parse(&pt).ok_or(Error::Type)?;
                let mut normal = alloc::vec![("pt".to_string(), pt)];
                normal.extend(get("icd").map(|icd| ("icd".to_string(), icd)));
                normal
            }
            "custom-action-create" => {
                get("type").filter(|t| !t.is_empty()).map(|t| ("type".to_string(), t)).into_iter().collect()
            }
            bare if BARE.contains(&bare) => Vec::new(),
            _ => components,
        };
        Ok(MsgType { name: name.to_string(), components })
    }

    fn component(&self, key: &str) -> Option<&str> {
        self.components.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The primitive of a `data` or `parameter` type.
    pub fn primitive(&self) -> Option<Primitive> {
        match self.name.as_str() {
            "data" | "parameter" => self.component("pt").and_then(Primitive::parse),
            _ => None,
        }
    }

    /// The payload kind the SDK insists on: `data;pt=number` (exactly, no `icd`) and its kin are
    /// `Number`, `String`, `Boolean` messages with strictly typed payloads; every other type takes
    /// any JSON.
    pub fn strict_primitive(&self) -> Option<Primitive> {
        match (self.primitive(), self.components.len()) {
            (Some(Primitive::Object), _) | (_, 2..) => None,
            (primitive, _) => primitive,
        }
    }
}

impl fmt::Display for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.primitive() == Some(Primitive::Object) {
            return write!(f, "{};icd={}", self.name, self.component("icd").unwrap_or("None"));
        }
        f.write_str(&self.name)?;
        for (key, value) in self.components.iter().filter(|(_, v)| !v.is_empty()) {
            write!(f, ";{key}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    fn normal(text: &str) -> String {
        format!("{}", MsgType::parse(text).unwrap())
    }

    #[test]
    fn types_are_written_as_the_sdks_classes_write_them() {
        assert_eq!(normal("data;pt=number"), "data;pt=number");
        assert_eq!(normal("data;icd=x;pt=number"), "data;pt=number;icd=x", "pt first");
        assert_eq!(normal("data;pt=object;icd=foo"), "data;icd=foo");
        assert_eq!(normal("data"), "data;icd=None");
        assert_eq!(normal("parameter;pt=boolean"), "parameter;pt=boolean");
        assert_eq!(normal("control;foo=bar"), "control");
        assert_eq!(normal("recommendation;x=1"), "recommendation");
        assert_eq!(normal("custom-action-create;type=reboot;x=1"), "custom-action-create;type=reboot");
        assert_eq!(normal("weird;x=1;y;z="), "weird;x=1");
        assert_eq!(normal("weird;x=1;x=2"), "weird;x=2");
        assert_eq!(normal(""), "");
        assert_eq!(MsgType::parse("data;pt=float"), Err(Error::Type));
    }

    #[test]
    fn only_the_sdks_primitive_classes_are_strict() {
        let strict = |t: &str| MsgType::parse(t).unwrap().strict_primitive();
        assert_eq!(strict("data;pt=number"), Some(Primitive::Number));
        assert_eq!(strict("parameter;pt=string"), Some(Primitive::String));
        assert_eq!(strict("data;pt=number;icd=x"), None);
        assert_eq!(strict("data;icd=x"), None);
        assert_eq!(strict("control"), None);
    }
}
