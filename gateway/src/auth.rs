//! Client logins and per-client ACLs.
//!
//! # Login: a SCRAM-like challenge-response
//!
//! The token never crosses the wire, and the config keeps only a hash of it that does not work
//! as a proof (so a copied config logs nobody in). `‖` is concatenation, all hashes SHA-256:
//!
//! ```text
//! token      = 32 random bytes (printed and typed as 64 hex digits; the bytes are what count)
//! salt       = 16 random bytes, per client
//! salted     = SHA-256(salt ‖ token)
//! client_key = HMAC-SHA-256(key = salted, "Client Key")
//! stored_key = SHA-256(client_key)                       config: salt and stored_key, in hex
//! nonce      = salt ‖ server_random(16)                  the gateway's challenge, 32 bytes
//! signature  = HMAC-SHA-256(key = stored_key, nonce ‖ client_name)
//! proof      = client_key XOR signature                  the second init's credential, 32 bytes
//! ```
//!
//! The gateway answers an init with the challenge `nonce`; the client computes `proof` from its
//! token and the salt the nonce starts with, and inits again on the same connection with the
//! proof as its credential. The gateway recomputes `client_key' = proof XOR signature` and
//! accepts if `SHA-256(client_key') == stored_key` (compared in constant time). The scheme is
//! `rivulet_core::login`, which devices share, here over ring's SHA-256; this module keeps the
//! gateway's side of it: the clients, their challenges and their ACLs.
//!
//! - A nonce is good for one answer on the connection it was issued on, for [`CHALLENGE_TTL`].
//!   At most [`MAX_PENDING`] challenges wait at once, so a flood of inits cannot grow memory.
//! - A name the gateway does not know gets a challenge too, with a salt derived from the name
//!   and a secret hashed from the whole client table (stable across restarts of the same
//!   config), then the same refusal as a wrong token: [`WRONG_CREDENTIAL`]. Names cannot be
//!   probed.
//! - The tokens are random, not passwords, so there is no iteration count: a recorded login
//!   leaves nothing to guess offline. What is not protected: without TLS the traffic after the
//!   login is readable, and someone holding both the config (the stored key) and a recorded
//!   login can recover that client's `client_key` and log in as it.
//!
//! # ACLs
//!
//! Each `[[clients]]` entry may list the event-type patterns the client may `register` and
//! `subscribe` to (hat's rules: `?` one segment, a final `*` any rest). A list left out allows
//! everything; an empty list allows nothing. A registration is allowed if one `register`
//! pattern matches its type. A subscription (or a query's pattern) is allowed if one `subscribe`
//! pattern [`covers`] it. Queries without types are narrowed to the `subscribe` patterns; a
//! server query (every type) needs a client that may see everything.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use rivulet_core::login::{self, Key};
use rivulet_core::owned::{EventPath, Query};
use rivulet_tokio::client::ChallengeAnswer;
use rivulet_tokio::server::{Admission, ClientInfo};

use crate::config::ClientEntry;

pub use rivulet_core::login::{KEY_LEN, SALT_LEN, TOKEN_LEN};
/// Bytes of a challenge: the salt, then 16 random bytes.
pub const NONCE_LEN: usize = SALT_LEN + 16;
/// How long a challenge waits for its answer.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(30);
/// Challenges waiting for an answer at once; more inits are refused until some are answered or
/// expire.
pub const MAX_PENDING: usize = 4096;

/// The one refusal for an unknown name and a wrong token alike, so names cannot be probed.
pub const WRONG_CREDENTIAL: &str = "unknown client or wrong credential";
const EXPIRED: &str = "the login took too long (the challenge expired); connect again";
const BUSY: &str = "too many logins in progress; try again later";

const UNKNOWN_SECRET_LABEL: &[u8] = b"rivulet unknown-client secret";
const UNKNOWN_SALT_LABEL: &[u8] = b"salt";
const UNKNOWN_KEY_LABEL: &[u8] = b"stored key";

/// ring's SHA-256 for the core's login proof (`rivulet_core::login`, the scheme above).
struct Ring(digest::Context);

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

fn sha256(parts: &[&[u8]]) -> Key {
    login::sha256::<Ring>(parts)
}

/// A client's answer to the challenge `nonce`. A nonce shorter than a salt gives an empty proof,
/// which the gateway refuses.
pub fn proof(client_name: &str, token: &[u8], nonce: &[u8]) -> Vec<u8> {
    login::proof::<Ring>(token, nonce, client_name).map_or_else(Vec::new, |proof| proof.to_vec())
}

/// The client side in one closure, for [`rivulet_tokio::ClientOptions::challenge`].
pub fn answer(client_name: impl Into<String>, token: Vec<u8>) -> ChallengeAnswer {
    let client_name = client_name.into();
    Arc::new(move |nonce: &[u8]| proof(&client_name, &token, nonce))
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

/// Whether every event type `wanted` matches is matched by `allowed` (both valid patterns).
///
/// Walks both side by side: a `*` in `allowed` takes any rest; otherwise `wanted` must not reach
/// further (its own `*` reaches arbitrarily far), must end where `allowed` ends, and each of its
/// segments must be the same literal or fall under `allowed`'s `?`.
pub fn covers(allowed: &EventPath, wanted: &EventPath) -> bool {
    let (mut allowed, mut wanted) = (allowed.segments(), wanted.segments());
    loop {
        match (allowed.next(), wanted.next()) {
            (Some("*"), _) | (None, None) => return true,
            (Some(_), Some("*") | None) | (None, Some(_)) => return false,
            (Some("?"), Some(_)) => {}
            (Some(literal), Some(segment)) => {
                if segment == "?" || segment != literal {
                    return false;
                }
            }
        }
    }
}

fn listed(patterns: &[EventPath]) -> String {
    if patterns.is_empty() {
        return "nothing".into();
    }
    patterns.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// What one client may register and see. `None` allows everything, an empty list nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    pub register: Option<Vec<EventPath>>,
    pub subscribe: Option<Vec<EventPath>>,
    /// Clients whose requests it may call; any when `None`.
    pub request: Option<Vec<String>>,
}

/// Everything allowed: every client of a gateway without `[[clients]]`.
static OPEN: Acl = Acl { register: None, subscribe: None, request: None };

impl Acl {
    /// Whether it may call the request handlers of the client named `target`.
    pub fn may_request(&self, target: &str) -> bool {
        self.request.as_ref().is_none_or(|allowed| allowed.iter().any(|name| name == target))
    }

    pub fn may_register(&self, event_type: &EventPath) -> bool {
        self.register.as_ref().is_none_or(|allowed| allowed.iter().any(|p| p.matches(event_type)))
    }

    pub fn may_subscribe(&self, pattern: &EventPath) -> bool {
        self.subscribe.as_ref().is_none_or(|allowed| allowed.iter().any(|p| covers(p, pattern)))
    }

    /// Whether every event type is visible to the client (`*` or no `subscribe` list).
    pub fn sees_everything(&self) -> bool {
        self.may_subscribe(&EventPath::parse("*"))
    }

    pub fn check_register(&self, client: &str, event_type: &EventPath) -> Result<(), String> {
        match &self.register {
            Some(allowed) if !self.may_register(event_type) => {
                Err(format!("client {client:?} may not register {event_type} (allowed: {})", listed(allowed)))
            }
            _ => Ok(()),
        }
    }

    pub fn check_subscriptions(&self, client: &str, patterns: &[EventPath]) -> Result<(), String> {
        self.check_within(client, "subscribe to", patterns)
    }

    fn check_within(&self, client: &str, what: &str, patterns: &[EventPath]) -> Result<(), String> {
        let Some(allowed) = &self.subscribe else { return Ok(()) };
        match patterns.iter().find(|p| !self.may_subscribe(p)) {
            Some(bad) => Err(format!("client {client:?} may not {what} {bad} (allowed: {})", listed(allowed))),
            None => Ok(()),
        }
    }

    /// The query as the client may ask it: without types it gets the client's `subscribe`
    /// patterns, with types each must be covered, and a server query needs everything visible.
    pub fn restrict_query(&self, client: &str, query: Query) -> Result<Query, String> {
        let Some(allowed) = &self.subscribe else { return Ok(query) };
        let narrow = |types: Option<Vec<EventPath>>| match types {
            None => Ok(Some(allowed.clone())),
            Some(types) => self.check_within(client, "query", &types).map(|()| Some(types)),
        };
        match query {
            Query::Latest { event_types } => Ok(Query::Latest { event_types: narrow(event_types)? }),
            Query::Timeseries(mut q) => {
                q.event_types = narrow(q.event_types.take())?;
                Ok(Query::Timeseries(q))
            }
            Query::Server { .. } if self.sees_everything() => Ok(query),
            Query::Server { server_id, .. } => Err(format!(
                "client {client:?} may not query every event of server {server_id} (allowed: {}); query by type instead",
                listed(allowed)
            )),
        }
    }
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

    /// The salt a challenge to `name` starts with: its own, or one made up the same way each time.
    fn salt_for(&self, name: &str) -> [u8; SALT_LEN] {
        match self.known.get(name) {
            Some(known) => known.credential.salt,
            None => {
                let mut salt = [0u8; SALT_LEN];
                let made_up = login::hmac_sha256::<Ring>(&self.unknown_secret, &[UNKNOWN_SALT_LABEL, name.as_bytes()]);
                salt.iter_mut().zip(made_up).for_each(|(s, m)| *s = m);
                salt
            }
        }
    }

    /// Whether `proof` answers `nonce` for `name`. An unknown name is checked against a made-up
    /// key, so it costs the same, and fails.
    fn check(&self, name: &str, nonce: &[u8], proof: &[u8]) -> bool {
        match self.known.get(name) {
            Some(known) => login::verify::<Ring>(&known.credential.stored_key, nonce, name, proof),
            None => {
                let made_up = login::hmac_sha256::<Ring>(&self.unknown_secret, &[UNKNOWN_KEY_LABEL, name.as_bytes()]);
                let _ = login::verify::<Ring>(&made_up, nonce, name, proof);
                false
            }
        }
    }
}

/// A challenge waiting for its answer on one connection.
struct Pending {
    nonce: [u8; NONCE_LEN],
    /// SHA-256 of the name it was issued to (names can be long; this stays small).
    name: Key,
    issued: Instant,
}

/// The gateway's side of logins: issues challenges, checks proofs, forgets used nonces.
pub struct Authenticator {
    clients: Arc<Clients>,
    rng: SystemRandom,
    pending: Mutex<HashMap<u64, Pending>>,
    ttl: Duration,
    max_pending: usize,
}

impl Authenticator {
    pub fn new(clients: Arc<Clients>) -> Authenticator {
        Authenticator::with_limits(clients, CHALLENGE_TTL, MAX_PENDING)
    }

    /// With another challenge lifetime and bound (tests).
    pub fn with_limits(clients: Arc<Clients>, ttl: Duration, max_pending: usize) -> Authenticator {
        Authenticator { clients, rng: SystemRandom::new(), pending: Mutex::new(HashMap::new()), ttl, max_pending }
    }

    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Answers an init at `now`: accept everyone when no clients are configured; otherwise a
    /// challenge, unless the init answers this connection's pending one (used up either way).
    pub fn login(&self, client: &ClientInfo, now: Instant) -> Admission {
        if self.clients.is_empty() {
            return Admission::Accept;
        }
        let pending = self.pending().remove(&client.id);
        match (pending, client.credential.as_deref()) {
            (Some(pending), Some(proof)) => {
                if now.saturating_duration_since(pending.issued) > self.ttl {
                    return Admission::Refuse(EXPIRED.into());
                }
                let same_name = login::same(&pending.name, &sha256(&[client.client_name.as_bytes()]));
                let proven = self.clients.check(&client.client_name, &pending.nonce, proof);
                if proven && same_name { Admission::Accept } else { Admission::Refuse(WRONG_CREDENTIAL.into()) }
            }
            // A first init, or one that did not answer: (another) challenge. A credential
            // without a challenge is never taken, so a token or an old proof is no login.
            _ => self.challenge(client, now),
        }
    }

    fn challenge(&self, client: &ClientInfo, now: Instant) -> Admission {
        let mut nonce = [0u8; NONCE_LEN];
        let (salt, random) = nonce.split_at_mut(SALT_LEN);
        salt.copy_from_slice(&self.clients.salt_for(&client.client_name));
        if self.rng.fill(random).is_err() {
            return Admission::Refuse("the gateway has no randomness for a challenge; try again".into());
        }
        let mut pending = self.pending();
        if pending.len() >= self.max_pending {
            pending.retain(|_, p| now.saturating_duration_since(p.issued) <= self.ttl);
            if pending.len() >= self.max_pending {
                return Admission::Refuse(BUSY.into());
            }
        }
        pending.insert(client.id, Pending { nonce, name: sha256(&[client.client_name.as_bytes()]), issued: now });
        Admission::Challenge(nonce.to_vec())
    }

    /// The connection is gone: its challenge, if any, with it.
    pub fn forget(&self, connection: u64) {
        self.pending().remove(&connection);
    }

    /// Challenges waiting for an answer.
    pub fn pending_count(&self) -> usize {
        self.pending().len()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rivulet_core::owned::TimeseriesQuery;

    fn p(text: &str) -> EventPath {
        EventPath::parse(text)
    }

    fn entry(name: &str, token: &[u8], register: Option<&[&str]>, subscribe: Option<&[&str]>) -> ClientEntry {
        let credential = Credential::from_token(token, [7; SALT_LEN]);
        let list = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| s.to_string()).collect());
        ClientEntry {
            name: name.into(),
            salt: to_hex(&credential.salt),
            stored_key: to_hex(&credential.stored_key),
            register: list(register),
            subscribe: list(subscribe),
            request: None,
        }
    }

    fn info(id: u64, name: &str, credential: Option<Vec<u8>>) -> ClientInfo {
        ClientInfo {
            id,
            client_name: name.into(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            session: 1,
            subscriptions: Vec::new(),
            server_id: None,
            persisted: false,
            credential,
            max_packet: 65_536,
        }
    }

    const TOKEN: [u8; TOKEN_LEN] = [0x42; TOKEN_LEN];

    fn authenticator() -> Authenticator {
        let clients = Clients::from_entries(&[entry("dev", &TOKEN, None, None)]).unwrap();
        Authenticator::new(Arc::new(clients))
    }

    fn challenged(admission: Admission) -> Vec<u8> {
        match admission {
            Admission::Challenge(nonce) => nonce,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    #[test]
    fn a_proof_from_the_right_token_logs_in() {
        let auth = authenticator();
        let now = Instant::now();
        let nonce = challenged(auth.login(&info(1, "dev", None), now));
        assert_eq!(nonce.len(), NONCE_LEN);
        assert_eq!(nonce[..SALT_LEN], [7; SALT_LEN], "the nonce starts with the client's salt");
        let proof = proof("dev", &TOKEN, &nonce);
        assert_eq!(proof.len(), KEY_LEN);
        assert!(proof.len() <= 64, "fits in a client proof");
        assert_eq!(auth.login(&info(1, "dev", Some(proof)), now), Admission::Accept);
        assert_eq!(auth.pending_count(), 0, "the nonce is used up");
    }

    #[test]
    fn the_token_itself_or_the_stored_key_is_no_proof() {
        let auth = authenticator();
        let now = Instant::now();
        // A token sent in the first init is not taken: a challenge comes instead.
        challenged(auth.login(&info(1, "dev", Some(TOKEN.to_vec())), now));
        assert_eq!(auth.login(&info(1, "dev", Some(TOKEN.to_vec())), now), Admission::Refuse(WRONG_CREDENTIAL.into()));
        // Someone with the config knows the stored key; neither it nor a signature made with
        // it passes.
        let stored = Credential::from_token(&TOKEN, [7; SALT_LEN]).stored_key;
        let nonce = challenged(auth.login(&info(2, "dev", None), now));
        let forged = login::signature::<Ring>(&stored, &nonce, "dev");
        assert_eq!(auth.login(&info(2, "dev", Some(forged.to_vec())), now), Admission::Refuse(WRONG_CREDENTIAL.into()));
    }

    #[test]
    fn a_wrong_token_is_refused() {
        let auth = authenticator();
        let now = Instant::now();
        let nonce = challenged(auth.login(&info(1, "dev", None), now));
        let wrong = proof("dev", &[0x43; TOKEN_LEN], &nonce);
        assert_eq!(auth.login(&info(1, "dev", Some(wrong)), now), Admission::Refuse(WRONG_CREDENTIAL.into()));
        let nonce = challenged(auth.login(&info(2, "dev", None), now));
        let mut short = proof("dev", &TOKEN, &nonce);
        short.pop();
        assert_eq!(auth.login(&info(2, "dev", Some(short)), now), Admission::Refuse(WRONG_CREDENTIAL.into()));
    }

    #[test]
    fn a_nonce_answers_once_and_only_on_its_connection() {
        let auth = authenticator();
        let now = Instant::now();
        let first = challenged(auth.login(&info(1, "dev", None), now));
        let answer = proof("dev", &TOKEN, &first);
        assert_eq!(auth.login(&info(1, "dev", Some(answer.clone())), now), Admission::Accept);
        // Replayed on the same connection: no challenge is pending, so a fresh one comes, and
        // the old proof does not answer it.
        let second = challenged(auth.login(&info(1, "dev", Some(answer.clone())), now));
        assert_ne!(first, second);
        assert_eq!(auth.login(&info(1, "dev", Some(answer.clone())), now), Admission::Refuse(WRONG_CREDENTIAL.into()));
        // Replayed on another connection after its own challenge: refused.
        challenged(auth.login(&info(2, "dev", None), now));
        assert_eq!(auth.login(&info(2, "dev", Some(answer)), now), Admission::Refuse(WRONG_CREDENTIAL.into()));
        // A proof for connection 3's nonce, presented under another name, is refused.
        let third = challenged(auth.login(&info(3, "dev", None), now));
        let clients = Clients::from_entries(&[entry("dev", &TOKEN, None, None), entry("other", &TOKEN, None, None)]);
        let two = Authenticator::new(Arc::new(clients.unwrap()));
        let n = challenged(two.login(&info(3, "dev", None), now));
        assert_eq!(
            two.login(&info(3, "other", Some(proof("other", &TOKEN, &n))), now),
            Admission::Refuse(WRONG_CREDENTIAL.into())
        );
        assert_ne!(third, n);
    }

    #[test]
    fn an_unknown_name_looks_like_a_wrong_token() {
        let auth = authenticator();
        let now = Instant::now();
        let ghost = challenged(auth.login(&info(1, "ghost", None), now));
        assert_eq!(ghost.len(), NONCE_LEN, "challenged like a known client");
        let again = challenged(auth.login(&info(2, "ghost", None), now));
        assert_eq!(ghost[..SALT_LEN], again[..SALT_LEN], "a stable salt, like a real client's");
        assert_ne!(ghost[SALT_LEN..], again[SALT_LEN..]);
        let other = challenged(auth.login(&info(3, "phantom", None), now));
        assert_ne!(ghost[..SALT_LEN], other[..SALT_LEN], "each name its own salt");
        let unknown = auth.login(&info(2, "ghost", Some(proof("ghost", &TOKEN, &again))), now);
        let dev = challenged(auth.login(&info(4, "dev", None), now));
        let wrong = auth.login(&info(4, "dev", Some(proof("dev", &[1; TOKEN_LEN], &dev))), now);
        assert_eq!(unknown, wrong, "the same refusal");
        assert_eq!(unknown, Admission::Refuse(WRONG_CREDENTIAL.into()));
        // The same config gives the same made-up salts (a restart does not tell names apart).
        let restarted = authenticator();
        assert_eq!(challenged(restarted.login(&info(1, "ghost", None), now))[..SALT_LEN], ghost[..SALT_LEN]);
    }

    #[test]
    fn waiting_challenges_are_bounded_and_expire() {
        let clients = Arc::new(Clients::from_entries(&[entry("dev", &TOKEN, None, None)]).unwrap());
        let ttl = Duration::from_secs(30);
        let auth = Authenticator::with_limits(clients, ttl, 4);
        let start = Instant::now();
        for id in 0..4 {
            challenged(auth.login(&info(id, "flood", None), start));
        }
        assert_eq!(auth.login(&info(9, "dev", None), start), Admission::Refuse(BUSY.into()));
        assert_eq!(auth.pending_count(), 4);
        auth.forget(0);
        assert_eq!(auth.pending_count(), 3, "a closed connection's challenge goes");
        let later = start + ttl + Duration::from_secs(1);
        let n = challenged(auth.login(&info(10, "dev", None), start));
        // Full again; at `later` the old ones have expired and make room.
        let fresh = challenged(auth.login(&info(11, "dev", None), later));
        assert!(auth.pending_count() <= 4);
        assert_eq!(auth.login(&info(11, "dev", Some(proof("dev", &TOKEN, &fresh))), later), Admission::Accept);
        // An answer after the lifetime is refused even if its entry was still there.
        let n2 = challenged(auth.login(&info(12, "dev", None), start));
        assert_eq!(
            auth.login(&info(12, "dev", Some(proof("dev", &TOKEN, &n2))), later),
            Admission::Refuse(EXPIRED.into())
        );
        assert_ne!(n, n2);
    }

    #[test]
    fn without_clients_everyone_may_do_everything() {
        let auth = Authenticator::new(Arc::new(Clients::from_entries(&[]).unwrap()));
        assert_eq!(auth.login(&info(1, "anyone", None), Instant::now()), Admission::Accept);
        let acl = auth.clients().acl("anyone").expect("open");
        assert!(acl.may_register(&p("a/b")) && acl.sees_everything());
    }

    /// A vector for device implementations (docs/PROTOCOL.md §4.4.1 repeats it), computed
    /// independently with Python's hashlib and hmac.
    #[test]
    fn known_vector() {
        let token: Vec<u8> = (0u8..32).collect();
        let salt: [u8; SALT_LEN] = core::array::from_fn(|i| 0xa0 + i as u8);
        let nonce: Vec<u8> = salt.iter().copied().chain(0xb0..0xc0).collect();
        let credential = Credential::from_token(&token, salt);
        assert_eq!(to_hex(&credential.stored_key), STORED_KEY_VECTOR);
        let proof = proof("dev", &token, &nonce);
        assert_eq!(to_hex(&proof), PROOF_VECTOR);
        assert!(login::verify::<Ring>(&credential.stored_key, &nonce, "dev", &proof));
    }
    const STORED_KEY_VECTOR: &str = "636272c539fa3385ce42151610257523b36af158ad6c06e5f6a322f595ff9e34";
    const PROOF_VECTOR: &str = "119e79e7a1f671b21a58dd66b1ddba28e0854a1e3efc51dbca26e081037433cd";

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
    fn covers_examples() {
        let yes =
            [("a/*", "a/?/b"), ("a/*", "a"), ("a/*", "a/*"), ("a/?", "a/b"), ("*", "*"), ("*", ""), ("a/?", "a/?")];
        for (allowed, wanted) in yes {
            assert!(covers(&p(allowed), &p(wanted)), "{allowed} covers {wanted}");
        }
        let no = [
            ("a/?", "a/*"),
            ("a/b", "a/?"),
            ("a", "a/*"),
            ("a/?/*", "a/*"),
            ("a/b", "a"),
            ("a", "a/b"),
            ("", "*"),
            ("a/*", "b"),
        ];
        for (allowed, wanted) in no {
            assert!(!covers(&p(allowed), &p(wanted)), "{allowed} does not cover {wanted}");
        }
    }

    /// Every type over `segments`, up to `max_len` segments.
    fn all_types(segments: &[&str], max_len: usize) -> Vec<EventPath> {
        let mut out = vec![Vec::<&str>::new()];
        let mut frontier = out.clone();
        for _ in 0..max_len {
            frontier = frontier
                .iter()
                .flat_map(|t| segments.iter().map(move |s| t.iter().copied().chain([*s]).collect::<Vec<_>>()))
                .collect();
            out.extend(frontier.iter().cloned());
        }
        out.into_iter().map(EventPath::new).collect()
    }

    /// Every pattern over `segments` and `?`, up to `max_len`, with and without a final `*`.
    fn all_patterns(segments: &[&str], max_len: usize) -> Vec<EventPath> {
        let mut with_any: Vec<&str> = segments.to_vec();
        with_any.push("?");
        all_types(&with_any, max_len)
            .into_iter()
            .flat_map(|t| {
                let tail: Vec<String> = t.segments().map(String::from).chain(["*".to_string()]).collect();
                [t, EventPath::new(tail)]
            })
            .collect()
    }

    /// `covers` by definition over a finite world: a segment no pattern names (`z`) stands for
    /// all others, and types one longer than the longest pattern stand for all longer ones.
    fn covers_by_brute_force(allowed: &EventPath, wanted: &EventPath, world: &[EventPath]) -> bool {
        world.iter().filter(|t| wanted.matches(t)).all(|t| allowed.matches(t))
    }

    #[test]
    fn covers_agrees_with_brute_force_on_every_small_pair() {
        let patterns = all_patterns(&["a", "b"], 3);
        let world = all_types(&["a", "b", "z"], 5);
        for allowed in &patterns {
            for wanted in &patterns {
                assert_eq!(
                    covers(allowed, wanted),
                    covers_by_brute_force(allowed, wanted, &world),
                    "covers({allowed}, {wanted})"
                );
            }
        }
    }

    fn pattern() -> impl Strategy<Value = EventPath> {
        (prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "?"]), 0..5), any::<bool>()).prop_map(
            |(mut segments, tail)| {
                if tail {
                    segments.push("*");
                }
                EventPath::new(segments)
            },
        )
    }

    /// Types for the patterns above: up to one segment longer than the longest (4 and `*`).
    static WORLD: std::sync::LazyLock<Vec<EventPath>> =
        std::sync::LazyLock::new(|| all_types(&["a", "b", "c", "z"], 6));

    proptest! {
        #[test]
        fn covers_agrees_with_brute_force(allowed in pattern(), wanted in pattern()) {
            prop_assert_eq!(covers(&allowed, &wanted), covers_by_brute_force(&allowed, &wanted, &WORLD));
        }
    }

    fn acl(register: Option<&[&str]>, subscribe: Option<&[&str]>) -> Acl {
        let list = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| p(s)).collect());
        Acl { register: list(register), subscribe: list(subscribe), request: None }
    }

    #[test]
    fn requests_go_only_to_listed_clients() {
        let open = acl(None, None);
        assert!(open.may_request("anyone"));
        let narrow = Acl { request: Some(vec!["device-1".into()]), ..acl(None, None) };
        assert!(narrow.may_request("device-1"));
        assert!(!narrow.may_request("device-2"));
        let none = Acl { request: Some(Vec::new()), ..acl(None, None) };
        assert!(!none.may_request("device-1"));
    }

    #[test]
    fn registrations_need_a_matching_pattern() {
        let dev = acl(Some(&["sensor/*"]), None);
        assert!(dev.check_register("dev", &p("sensor/room1/temp")).is_ok());
        let e = dev.check_register("dev", &p("secret/door")).unwrap_err();
        assert_eq!(e, r#"client "dev" may not register secret/door (allowed: sensor/*)"#);
        let none = acl(Some(&[]), None);
        assert!(none.check_register("ro", &p("a")).unwrap_err().contains("allowed: nothing"));
        assert!(acl(None, Some(&[])).check_register("x", &p("any/thing")).is_ok());
    }

    #[test]
    fn subscriptions_must_be_covered() {
        let dev = acl(None, Some(&["sensor/*", "status/?"]));
        assert!(dev.check_subscriptions("dev", &[p("sensor/?/temp"), p("status/gw")]).is_ok());
        let e = dev.check_subscriptions("dev", &[p("sensor/*"), p("status/*")]).unwrap_err();
        assert!(e.contains("may not subscribe to status/*") && e.contains("sensor/*, status/?"), "{e}");
        assert!(!dev.sees_everything());
        assert!(acl(None, Some(&["*"])).sees_everything());
        assert!(acl(None, Some(&[])).check_subscriptions("x", &[p("a")]).is_err());
    }

    #[test]
    fn queries_stay_within_the_subscribe_list() {
        let dev = acl(None, Some(&["sensor/*"]));
        let latest = dev.restrict_query("dev", Query::Latest { event_types: None }).unwrap();
        assert_eq!(latest, Query::Latest { event_types: Some(vec![p("sensor/*")]) });
        let named = Query::Latest { event_types: Some(vec![p("sensor/a")]) };
        assert_eq!(dev.restrict_query("dev", named.clone()).unwrap(), named);
        let series = Query::Timeseries(TimeseriesQuery { max_results: Some(5), ..TimeseriesQuery::default() });
        match dev.restrict_query("dev", series).unwrap() {
            Query::Timeseries(q) => {
                assert_eq!(q.event_types, Some(vec![p("sensor/*")]));
                assert_eq!(q.max_results, Some(5), "the rest of the query stays");
            }
            other => panic!("{other:?}"),
        }
        let outside =
            Query::Timeseries(TimeseriesQuery { event_types: Some(vec![p("secret/*")]), ..Default::default() });
        let e = dev.restrict_query("dev", outside).unwrap_err();
        assert!(e.contains("may not query secret/*"), "{e}");
        let server = Query::Server { server_id: 1, persisted: false, max_results: None, last_event_id: None };
        assert!(dev.restrict_query("dev", server.clone()).unwrap_err().contains("server 1"));
        assert_eq!(acl(None, Some(&["*"])).restrict_query("all", server.clone()).unwrap(), server);
        assert_eq!(acl(None, None).restrict_query("all", server.clone()).unwrap(), server);
    }
}
