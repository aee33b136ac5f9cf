//! `[streamsea]`: the stream-sea front-end (`--streamsea-listen`): where its HTTP API listens
//! and how large a request body may be.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[streamsea]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamSeaSection {
    listen: Option<SocketAddr>,
    max_body: Option<usize>,
    #[serde(default)]
    jwt_secrets: Vec<String>,
    #[serde(default)]
    streams: Vec<StreamMapping>,
}

/// A stream that is another event type than `streamsea/<name>`: what Kelvin apps, hat clients
/// or devices register under it becomes the stream's messages, and the other way round.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamMapping {
    pub name: String,
    #[serde(rename = "type")]
    pub event_type: String,
}

/// The stream-sea front-end: stream-sea clients (stream-sea-client 0.7.0) and raw HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSeaSettings {
    /// HTTP (REST under `/api/v1`); off when `None`.
    pub listen: Option<SocketAddr>,
    /// Largest request body, in bytes, after gzip is undone (a larger one is refused, 413).
    pub max_body: usize,
    /// Secrets a websocket client's JWT may be signed with (HS256); none: no JWT login.
    pub jwt_secrets: Vec<String>,
    /// Streams mapped onto other event types.
    pub streams: Vec<StreamMapping>,
}

impl Default for StreamSeaSettings {
    fn default() -> Self {
        StreamSeaSettings { listen: None, max_body: 1 << 20, jwt_secrets: Vec::new(), streams: Vec::new() }
    }
}

impl StreamSeaSettings {
    pub(super) fn from_section(section: Option<StreamSeaSection>) -> Self {
        let d = StreamSeaSettings::default();
        let Some(s) = section else { return d };
        StreamSeaSettings {
            listen: s.listen,
            max_body: s.max_body.unwrap_or(d.max_body),
            jwt_secrets: s.jwt_secrets,
            streams: s.streams,
        }
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.max_body < 1024 {
            return Err(format!("[streamsea] max_body {} is too small: at least 1024 bytes", self.max_body));
        }
        for (i, stream) in self.streams.iter().enumerate() {
            rivulet_core::owned::EventPath::parse_type(&stream.event_type)
                .map_err(|e| format!("[[streamsea.streams]] {:?}: type {:?}: {e}", stream.name, stream.event_type))?;
            let twice = self.streams[..i].iter().find(|s| s.name == stream.name || s.event_type == stream.event_type);
            if let Some(other) = twice {
                return Err(format!(
                    "[[streamsea.streams]] {:?} and {:?} share a name or a type",
                    other.name, stream.name
                ));
            }
        }
        if self.jwt_secrets.iter().any(|s| s.len() < 32) {
            return Err(
                "[streamsea] jwt_secrets: each at least 32 bytes (HS256 keys guessed by brute force otherwise)".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{File, GatewayArgs, Settings};

    fn from_toml(text: &str) -> Result<Settings, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        Settings::from_file(file)
    }

    #[test]
    fn the_section_its_flag_and_its_exposure() {
        let s = from_toml("[streamsea]\nlisten = \"127.0.0.1:8080\"\nmax_body = 4096\njwt_secrets = [\"0123456789abcdef0123456789abcdef\"]")
            .unwrap()
            .streamsea;
        assert_eq!(s.jwt_secrets.len(), 1);
        let mapped = from_toml("[[streamsea.streams]]\nname = \"speed\"\ntype = \"kelvin/ad/pump/speed\"").unwrap();
        assert_eq!(mapped.streamsea.streams[0].event_type, "kelvin/ad/pump/speed");
        let twice =
            "[[streamsea.streams]]\nname = \"a\"\ntype = \"x/y\"\n[[streamsea.streams]]\nname = \"a\"\ntype = \"x/z\"";
        assert!(from_toml(twice).unwrap().check().unwrap_err().contains("share"));
        assert!(from_toml("[[streamsea.streams]]\nname = \"a\"\ntype = \"x/*\"").unwrap().check().is_err());
        assert!(from_toml("[streamsea]\njwt_secrets = [\"short\"]").unwrap().check().unwrap_err().contains("32 bytes"));
        assert_eq!((s.listen.map(|a| a.port()), s.max_body), (Some(8080), 4096));
        let flag =
            Settings::load(&GatewayArgs { streamsea_listen: "127.0.0.1:9090".parse().ok(), ..GatewayArgs::default() });
        assert_eq!(flag.unwrap().streamsea.listen.map(|a| a.port()), Some(9090));
        assert!(from_toml("[streamsea]\nmax_body = 10").unwrap().check().unwrap_err().contains("max_body"));
        let mut open = from_toml("[streamsea]\nlisten = \"0.0.0.0:8080\"").unwrap();
        let refused = open.exposure().expect("refused");
        assert!(refused.contains("--streamsea-listen") && refused.contains("Basic"), "{refused}");
        open.insecure = true;
        assert_eq!(open.exposure(), None);
    }
}
