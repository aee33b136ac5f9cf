//! `[kelvin]`: the Kelvin front-end (`--kelvin-listen`): where it listens, who its apps are to
//! the ACLs, and what its runtime manifest tells them (assets, their input and output
//! datastreams, the app configuration).

use std::net::SocketAddr;

use rivulet_core::owned::EventPath;
use serde::Deserialize;

/// `[kelvin]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KelvinSection {
    listen: Option<SocketAddr>,
    client: Option<String>,
    max_line: Option<usize>,
    subscribe: Option<Vec<String>>,
    configuration: Option<toml::Table>,
    #[serde(default)]
    assets: Vec<KelvinAsset>,
    #[serde(default)]
    datastreams: Vec<KelvinDatastream>,
}

/// An asset of the manifest and the datastreams its apps read and write.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KelvinAsset {
    pub name: String,
    /// Datastreams the apps read (`way = "input"`).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Datastreams the apps write (`way = "output"`).
    #[serde(default)]
    pub outputs: Vec<String>,
}

/// A datastream of the manifest: its name, primitive type and unit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KelvinDatastream {
    pub name: String,
    /// `number`, `string`, `boolean` or `object`.
    #[serde(rename = "type")]
    pub primitive: String,
    pub unit: Option<String>,
}

/// The Kelvin front-end: Kelvin apps (kelvin-python-sdk `KelvinApp`) as clients.
#[derive(Debug, Clone, PartialEq)]
pub struct KelvinSettings {
    /// Plain TCP (Kelvin has no TLS or login); off when `None`.
    pub listen: Option<SocketAddr>,
    /// The client name every app on the listener is to the ACLs: a `[[clients]]` entry when
    /// clients are configured.
    pub client: String,
    /// Longest line an app may send, in bytes (the SDK's own limit is 4 MiB).
    pub max_line: usize,
    /// What the apps are sent: events matching these patterns.
    pub subscribe: Vec<String>,
    /// The manifest's app configuration (a JSON object).
    pub configuration: serde_json::Value,
    pub assets: Vec<KelvinAsset>,
    pub datastreams: Vec<KelvinDatastream>,
}

impl Default for KelvinSettings {
    fn default() -> Self {
        KelvinSettings {
            listen: None,
            client: "kelvin".into(),
            max_line: 4 << 20,
            subscribe: vec!["kelvin/*".into()],
            configuration: serde_json::Value::Object(serde_json::Map::new()),
            assets: Vec::new(),
            datastreams: Vec::new(),
        }
    }
}

impl KelvinSettings {
    pub(super) fn from_section(section: Option<KelvinSection>) -> Result<Self, String> {
        let d = KelvinSettings::default();
        let Some(s) = section else { return Ok(d) };
        let configuration = match s.configuration {
            Some(table) => serde_json::to_value(table).map_err(|e| format!("[kelvin] configuration: {e}"))?,
            None => d.configuration,
        };
        Ok(KelvinSettings {
            listen: s.listen,
            client: s.client.unwrap_or(d.client),
            max_line: s.max_line.unwrap_or(d.max_line),
            subscribe: s.subscribe.unwrap_or(d.subscribe),
            configuration,
            assets: s.assets,
            datastreams: s.datastreams,
        })
    }

    /// What cannot work, refused at start.
    pub(super) fn check(&self, clients: &[super::ClientEntry]) -> Result<(), String> {
        if self.max_line < 1024 {
            return Err(format!("[kelvin] max_line {} is too small: at least 1024 bytes", self.max_line));
        }
        for pattern in &self.subscribe {
            EventPath::parse_pattern(pattern).map_err(|e| format!("[kelvin] subscribe {pattern:?}: {e}"))?;
        }
        if self.listen.is_some() && !clients.is_empty() && !clients.iter().any(|c| c.name == self.client) {
            return Err(format!(
                "[kelvin] client {:?} is not among the [[clients]]: Kelvin apps have no login, so the listener's \
                 apps are that client to the ACLs (add it with `rivulet credential {}`)",
                self.client, self.client
            ));
        }
        let known = |name: &String| self.datastreams.iter().any(|d| &d.name == name);
        for asset in &self.assets {
            if let Some(missing) = asset.inputs.iter().chain(&asset.outputs).find(|n| !known(n)) {
                return Err(format!(
                    "[kelvin] asset {:?} names datastream {missing:?}, which [[kelvin.datastreams]] lacks",
                    asset.name
                ));
            }
        }
        if let Some(bad) =
            self.datastreams.iter().find(|d| !["number", "string", "boolean", "object"].contains(&d.primitive.as_str()))
        {
            return Err(format!(
                "[kelvin] datastream {:?}: type {:?} is none of number, string, boolean, object",
                bad.name, bad.primitive
            ));
        }
        Ok(())
    }

    /// The payload of the `runtime_manifest` message every app gets first: the assets with
    /// their datastreams' ways, the datastreams' types and units, the configuration.
    pub fn manifest_payload(&self) -> serde_json::Value {
        let resources: Vec<serde_json::Value> = self
            .assets
            .iter()
            .map(|asset| {
                let ways = asset.inputs.iter().map(|n| (n, "input")).chain(asset.outputs.iter().map(|n| (n, "output")));
                let datastreams: serde_json::Map<String, serde_json::Value> =
                    ways.map(|(name, way)| (name.clone(), serde_json::json!({ "way": way }))).collect();
                serde_json::json!({ "resource": format!("krn:asset:{}", asset.name), "datastreams": datastreams })
            })
            .collect();
        let datastreams: Vec<serde_json::Value> = self
            .datastreams
            .iter()
            .map(|d| serde_json::json!({ "name": d.name, "primitive_type_name": d.primitive, "unit_name": d.unit }))
            .collect();
        serde_json::json!({ "resources": resources, "configuration": self.configuration, "datastreams": datastreams })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ClientEntry, File, GatewayArgs, Settings};
    use serde_json::json;

    fn from_toml(text: &str) -> Result<Settings, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        Settings::from_file(file)
    }

    const SECTION: &str = r#"
[kelvin]
listen = "127.0.0.1:49167"
client = "apps"
max_line = 65536
subscribe = ["kelvin/ad/*"]
configuration = { threshold = 3, modes = ["eco", "fast"] }

[[kelvin.assets]]
name = "pump"
inputs = ["temp"]
outputs = ["speed"]

[[kelvin.datastreams]]
name = "temp"
type = "number"
unit = "degC"

[[kelvin.datastreams]]
name = "speed"
type = "number"
"#;

    #[test]
    fn the_section_and_the_manifest_it_makes() {
        let kelvin = from_toml(SECTION).unwrap().kelvin;
        assert_eq!(kelvin.listen.map(|a| a.port()), Some(49167));
        assert_eq!(
            (kelvin.client.as_str(), kelvin.max_line, kelvin.subscribe.clone()),
            ("apps", 65536, vec!["kelvin/ad/*".to_string()])
        );
        assert_eq!(
            kelvin.manifest_payload(),
            json!({
                "resources": [{ "resource": "krn:asset:pump", "datastreams": { "temp": { "way": "input" }, "speed": { "way": "output" } } }],
                "configuration": { "threshold": 3, "modes": ["eco", "fast"] },
                "datastreams": [
                    { "name": "temp", "primitive_type_name": "number", "unit_name": "degC" },
                    { "name": "speed", "primitive_type_name": "number", "unit_name": null }
                ]
            })
        );
        let flag =
            Settings::load(&GatewayArgs { kelvin_listen: "127.0.0.1:4000".parse().ok(), ..GatewayArgs::default() });
        assert_eq!(flag.unwrap().kelvin.listen.map(|a| a.port()), Some(4000));
    }

    #[test]
    fn what_cannot_work_is_refused_at_start() {
        let check = |text: &str| from_toml(text).unwrap().check().unwrap_err();
        assert!(check("[kelvin]\nmax_line = 10").contains("max_line"));
        assert!(check("[kelvin]\nsubscribe = [\"a/*/b\"]").contains("subscribe"));
        let missing = "[[kelvin.assets]]\nname = \"pump\"\ninputs = [\"temp\"]";
        assert!(check(missing).contains("datastream \"temp\""));
        let bad_type = "[[kelvin.datastreams]]\nname = \"t\"\ntype = \"float\"";
        assert!(check(bad_type).contains("float"));
        let mut with_clients = from_toml("[kelvin]\nlisten = \"127.0.0.1:49167\"\nclient = \"apps\"").unwrap();
        with_clients.clients = vec![ClientEntry {
            name: "someone".into(),
            salt: "00".into(),
            stored_key: "00".into(),
            register: None,
            subscribe: None,
            request: None,
            federate: false,
            files: Default::default(),
        }];
        assert!(with_clients.check().unwrap_err().contains("[kelvin] client \"apps\""));
        with_clients.kelvin.listen = None;
        assert_eq!(with_clients.check(), Ok(()), "no listener, no Kelvin client needed");
    }

    #[test]
    fn a_kelvin_listener_beyond_loopback_needs_insecure() {
        let mut open = from_toml("[kelvin]\nlisten = \"0.0.0.0:49167\"").unwrap();
        let refused = open.exposure().expect("refused");
        assert!(refused.contains("--kelvin-listen") && refused.contains("no login"), "{refused}");
        open.insecure = true;
        assert_eq!(open.exposure(), None);
        assert_eq!(from_toml("[kelvin]\nlisten = \"127.0.0.1:49167\"").unwrap().exposure(), None);
    }
}
