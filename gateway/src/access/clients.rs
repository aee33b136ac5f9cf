//! The configured clients (`[[clients]]`): each one's name, the credential its login checks (a
//! salt and a stored key, never the token) and its ACL. Empty: no login, everyone may do
//! everything.

use std::collections::BTreeMap;

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use rivulet_core::login::{self, Key};
use rivulet_core::owned::EventPath;

use super::acl::{Acl, OPEN};
use crate::config::ClientEntry;

pub use rivulet_core::login::{KEY_LEN, SALT_LEN, TOKEN_LEN};

/// Labels the secret the login makes up salts and keys for unknown names from.
const UNKNOWN_SECRET_LABEL: &[u8] = b"rivulet unknown-client secret";

/// ring's SHA-256 for the core's login proof (`rivulet_core::login`, the scheme above).
#[derive(Clone)]
pub(crate) struct Ring(digest::Context);

impl login::Sha256 for Ring {
    fn new() -> Self {
        Ring(digest::Context::new(&digest::SHA256))
    }

    fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finalize(self) -> Key {
        let mut key = [0u8; KEY_LEN];
        key.iter_mut().zip(self.0.finish().as_ref()).for_each(|(k, b)| *k = *b);
        key
    }
}

/// What the gateway keeps of a client's token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: [u8; SALT_LEN],
    pub stored_key: Key,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("salt", &to_hex(&self.salt)).finish_non_exhaustive()
    }
}

impl Credential {
    pub fn from_token(token: &[u8], salt: [u8; SALT_LEN]) -> Credential {
        Credential { salt, stored_key: login::stored_key::<Ring>(&login::client_key::<Ring>(&salt, token)) }
    }

    /// A new random token and its credential, as `rivulet credential` makes them.
    pub fn generate() -> Result<([u8; TOKEN_LEN], Credential), String> {
        let rng = SystemRandom::new();
        let (mut token, mut salt) = ([0u8; TOKEN_LEN], [0u8; SALT_LEN]);
        rng.fill(&mut token).and_then(|()| rng.fill(&mut salt)).map_err(|_| "the system has no randomness to give")?;
        Ok((token, Credential::from_token(&token, salt)))
    }
}

/// Lower-case hex, as the config and `rivulet credential` write bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex digits (either case); `None` if anything else is there.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let value = |d: u8| char::from(d).to_digit(16);
    digits.chunks(2).map(|pair| u8::try_from(value(pair[0])? * 16 + value(pair[1])?).ok()).collect()
}

/// Hex of exactly `N` bytes, or why not.
fn hex_array<const N: usize>(text: &str) -> Result<[u8; N], String> {
    from_hex(text)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| format!("{text:?} is not {} hex digits", 2 * N))
}

#[derive(Clone, PartialEq, Eq)]
struct Known {
    credential: Credential,
    acl: Acl,
}

/// The configured clients, checked: credentials decoded, ACL patterns parsed. Empty: no login,
/// everyone may do everything.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Clients {
    known: BTreeMap<String, Known>,
    /// Keys the salts and stored keys made up for unknown names.
    unknown_secret: Key,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.known.keys()).finish()
    }
}

impl Clients {
    /// Checks the `[[clients]]` entries; an error names the client and what is wrong.
    pub fn from_entries(entries: &[ClientEntry]) -> Result<Clients, String> {
        let mut known = BTreeMap::new();
        let mut secret = <Ring as login::Sha256>::new();
        login::Sha256::update(&mut secret, UNKNOWN_SECRET_LABEL);
        for entry in entries {
            let name = &entry.name;
            let fix = "copy the entry `rivulet credential NAME` prints";
            let salt = hex_array(&entry.salt).map_err(|e| format!("client {name:?}: salt {e}; {fix}"))?;
            let stored_key =
                hex_array(&entry.stored_key).map_err(|e| format!("client {name:?}: stored_key {e}; {fix}"))?;
            let patterns = |kind: &str, list: &Option<Vec<String>>| -> Result<Option<Vec<EventPath>>, String> {
                list.as_ref()
                    .map(|list| {
                        list.iter()
                            .map(|p| {
                                EventPath::parse_pattern(p)
                                    .map_err(|e| format!("client {name:?}: {kind} pattern {p:?}: {e}"))
                            })
                            .collect()
                    })
                    .transpose()
            };
            let acl = Acl {
                register: patterns("register", &entry.register)?,
                subscribe: patterns("subscribe", &entry.subscribe)?,
                request: entry.request.clone(),
                federate: entry.federate,
                files: entry.files,
            };
            for part in [name.as_bytes(), &[0], &salt, &stored_key] {
                login::Sha256::update(&mut secret, part);
            }
            let credential = Credential { salt, stored_key };
            if known.insert(name.clone(), Known { credential, acl }).is_some() {
                return Err(format!("client {name:?} is configured twice"));
            }
        }
        Ok(Clients { known, unknown_secret: login::Sha256::finalize(secret) })
    }

    /// No clients configured: logins are off.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// What `name` may do: everything when no clients are configured, `None` for a name that
    /// is not configured.
    pub fn acl(&self, name: &str) -> Option<&Acl> {
        if self.is_empty() {
            return Some(&OPEN);
        }
        self.known.get(name).map(|known| &known.acl)
    }

    /// Whether `token` (its 64 hex digits, as protocols that send it in clear carry it: hat's
    /// `clientToken`) is the token of the client named `name`. An unknown name is checked
    /// against a made-up credential, so it costs the same, and fails.
    pub fn token_matches(&self, name: &str, token: &str) -> bool {
        let bytes = from_hex(token.trim()).unwrap_or_default();
        match self.credential(name) {
            Some(credential) => {
                let computed = Credential::from_token(&bytes, credential.salt);
                login::same(&computed.stored_key, &credential.stored_key)
            }
            None => {
                let made_up = Credential::from_token(&bytes, [0; SALT_LEN]);
                let _ = login::same(&made_up.stored_key, &self.unknown_secret);
                false
            }
        }
    }

    /// Whether a protocol that sends tokens in clear lets `name` in: everyone when no clients
    /// are configured, else only with its token ([`Clients::token_matches`]).
    pub fn admits(&self, name: &str, token: &str) -> bool {
        self.is_empty() || self.token_matches(name, token)
    }

    /// The credential of the client named `name`, if it is configured (its login checks it).
    pub(crate) fn credential(&self, name: &str) -> Option<&Credential> {
        self.known.get(name).map(|known| &known.credential)
    }

    /// The secret the login makes salts and keys up for unknown names from: a hash of the whole
    /// table, so the same config makes up the same ones after a restart.
    pub(crate) fn unknown_secret(&self) -> &Key {
        &self.unknown_secret
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `[[clients]]` entry for `name` with `token` (salt 7…).
    pub(crate) fn entry(
        name: &str,
        token: &[u8],
        register: Option<&[&str]>,
        subscribe: Option<&[&str]>,
    ) -> ClientEntry {
        let credential = Credential::from_token(token, [7; SALT_LEN]);
        let list = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| s.to_string()).collect());
        ClientEntry {
            name: name.into(),
            salt: to_hex(&credential.salt),
            stored_key: to_hex(&credential.stored_key),
            register: list(register),
            subscribe: list(subscribe),
            request: None,
            federate: false,
            files: Default::default(),
        }
    }

    pub(crate) const TOKEN: [u8; TOKEN_LEN] = [0x42; TOKEN_LEN];

    #[test]
    fn hex() {
        assert_eq!(to_hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(from_hex("00AB10"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é0"), None);
    }

    #[test]
    fn config_mistakes_name_the_client_and_pattern() {
        let mut bad = entry("dev", &TOKEN, Some(&["sensor/*", "a/*/b"]), None);
        let e = Clients::from_entries(&[bad.clone()]).unwrap_err();
        assert!(e.contains("\"dev\"") && e.contains("register") && e.contains("a/*/b") && e.contains("last"), "{e}");
        bad.register = None;
        bad.subscribe = Some(vec!["x//y".into()]);
        let e = Clients::from_entries(&[bad.clone()]).unwrap_err();
        assert!(e.contains("\"dev\"") && e.contains("subscribe") && e.contains("x//y"), "{e}");
        bad.subscribe = None;
        bad.salt = "00".into();
        let e = Clients::from_entries(&[bad.clone()]).unwrap_err();
        assert!(e.contains("\"dev\"") && e.contains("salt") && e.contains("rivulet credential"), "{e}");
        bad.salt = to_hex(&[1; SALT_LEN]);
        bad.stored_key = "nothex".into();
        let e = Clients::from_entries(&[bad]).unwrap_err();
        assert!(e.contains("stored_key"), "{e}");
        let twice = Clients::from_entries(&[entry("a", &TOKEN, None, None), entry("a", &TOKEN, None, None)]);
        assert!(twice.unwrap_err().contains("twice"));
    }

    #[test]
    fn a_token_in_clear_matches_only_its_client() {
        let other = [0x17; TOKEN_LEN];
        let clients = Clients::from_entries(&[entry("dev", &TOKEN, None, None), entry("other", &other, None, None)]);
        let clients = clients.unwrap();
        assert!(clients.token_matches("dev", &to_hex(&TOKEN)));
        assert!(clients.token_matches("dev", &to_hex(&TOKEN).to_uppercase()), "hex either case");
        assert!(!clients.token_matches("dev", &to_hex(&other)), "another client's token");
        assert!(!clients.token_matches("ghost", &to_hex(&TOKEN)), "an unknown name");
        assert!(!clients.token_matches("dev", "not hex"));
        assert!(!clients.token_matches("dev", ""));
    }
}
