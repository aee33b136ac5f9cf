//! The native protocol's login: a SCRAM-like challenge-response.
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
//! gateway's side of it: the challenges (the clients and their ACLs are `crate::access`).
//!
//! - A nonce is good for one answer on the connection it was issued on, for [`CHALLENGE_TTL`].
//!   At most [`MAX_PENDING`] challenges wait at once, so a flood of inits cannot grow memory,
//!   and at most [`MAX_PENDING_PER_ADDRESS`] for one address, so a flood from one peer leaves
//!   room for the others' logins.
//! - A name the gateway does not know gets a challenge too, with a salt derived from the name
//!   and a secret hashed from the whole client table (stable across restarts of the same
//!   config), then the same refusal as a wrong token: [`WRONG_CREDENTIAL`]. Names cannot be
//!   probed.
//! - The tokens are random, not passwords, so there is no iteration count: a recorded login
//!   leaves nothing to guess offline. What is not protected: without TLS the traffic after the
//!   login is readable, and someone holding both the config (the stored key) and a recorded
//!   login can recover that client's `client_key` and log in as it.
//!

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use rivulet_core::login::{self, Key};
use rivulet_tokio::client::ChallengeAnswer;
use rivulet_tokio::server::{Admission, ClientInfo};

use crate::access::{Clients, Ring, SALT_LEN, WRONG_CREDENTIAL};

/// Bytes of a challenge: the salt, then 16 random bytes.
pub const NONCE_LEN: usize = SALT_LEN + 16;
/// How long a challenge waits for its answer.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(30);
/// Challenges waiting for an answer at once; more inits are refused until some are answered or
/// expire.
pub const MAX_PENDING: usize = 4096;
/// Challenges waiting for an answer for connections from one address (IP): a peer flooding
/// inits gets [`BUSY`] past it while everyone else still logs in.
pub const MAX_PENDING_PER_ADDRESS: usize = 64;

const EXPIRED: &str = "the login took too long (the challenge expired); connect again";
const BUSY: &str = "too many logins in progress; try again later";
const UNKNOWN_SALT_LABEL: &[u8] = b"salt";
const UNKNOWN_KEY_LABEL: &[u8] = b"stored key";

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

/// The salt a challenge to `name` starts with: its own, or one made up the same way each time.
fn salt_for(clients: &Clients, name: &str) -> [u8; SALT_LEN] {
    match clients.credential(name) {
        Some(credential) => credential.salt,
        None => {
            let mut salt = [0u8; SALT_LEN];
            let made_up = login::hmac_sha256::<Ring>(clients.unknown_secret(), &[UNKNOWN_SALT_LABEL, name.as_bytes()]);
            salt.iter_mut().zip(made_up).for_each(|(s, m)| *s = m);
            salt
        }
    }
}

/// Whether `proof` answers `nonce` for `name`. An unknown name is checked against a made-up
/// key, so it costs the same, and fails.
fn proven(clients: &Clients, name: &str, nonce: &[u8], proof: &[u8]) -> bool {
    match clients.credential(name) {
        Some(credential) => login::verify::<Ring>(&credential.stored_key, nonce, name, proof),
        None => {
            let made_up = login::hmac_sha256::<Ring>(clients.unknown_secret(), &[UNKNOWN_KEY_LABEL, name.as_bytes()]);
            let _ = login::verify::<Ring>(&made_up, nonce, name, proof);
            false
        }
    }
}

/// A challenge waiting for its answer on one connection.
struct Pending {
    nonce: [u8; NONCE_LEN],
    /// SHA-256 of the name it was issued to (names can be long; this stays small).
    name: Key,
    issued: Instant,
    from: IpAddr,
}

/// The waiting challenges, by connection, and how many each address holds.
#[derive(Default)]
struct Challenges {
    by_connection: HashMap<u64, Pending>,
    by_address: HashMap<IpAddr, usize>,
}

impl Challenges {
    fn len(&self) -> usize {
        self.by_connection.len()
    }

    fn of_address(&self, ip: IpAddr) -> usize {
        self.by_address.get(&ip).copied().unwrap_or(0)
    }

    fn insert(&mut self, connection: u64, pending: Pending) {
        *self.by_address.entry(pending.from).or_default() += 1;
        if let Some(replaced) = self.by_connection.insert(connection, pending) {
            self.forget_address(replaced.from);
        }
    }

    fn remove(&mut self, connection: u64) -> Option<Pending> {
        let pending = self.by_connection.remove(&connection)?;
        self.forget_address(pending.from);
        Some(pending)
    }

    /// Drops the challenges issued longer than `ttl` before `now`.
    fn expire(&mut self, now: Instant, ttl: Duration) {
        let old: Vec<u64> = (self.by_connection.iter())
            .filter(|(_, p)| now.saturating_duration_since(p.issued) > ttl)
            .map(|(&id, _)| id)
            .collect();
        for id in old {
            self.remove(id);
        }
    }

    fn forget_address(&mut self, ip: IpAddr) {
        if let Some(count) = self.by_address.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.by_address.remove(&ip);
            }
        }
    }
}

/// The gateway's side of logins: issues challenges, checks proofs, forgets used nonces.
pub struct Authenticator {
    clients: Arc<Clients>,
    rng: SystemRandom,
    pending: Mutex<Challenges>,
    ttl: Duration,
    max_pending: usize,
    max_per_address: usize,
}

impl Authenticator {
    pub fn new(clients: Arc<Clients>) -> Authenticator {
        Authenticator::with_limits(clients, CHALLENGE_TTL, MAX_PENDING, MAX_PENDING_PER_ADDRESS)
    }

    /// With another challenge lifetime and bounds (tests).
    pub fn with_limits(
        clients: Arc<Clients>,
        ttl: Duration,
        max_pending: usize,
        max_per_address: usize,
    ) -> Authenticator {
        let pending = Mutex::new(Challenges::default());
        Authenticator { clients, rng: SystemRandom::new(), pending, ttl, max_pending, max_per_address }
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
        let pending = self.pending().remove(client.id);
        match (pending, client.credential.as_deref()) {
            (Some(pending), Some(proof)) => {
                if now.saturating_duration_since(pending.issued) > self.ttl {
                    return Admission::Refuse(EXPIRED.into());
                }
                let same_name = login::same(&pending.name, &sha256(&[client.client_name.as_bytes()]));
                let proven = proven(&self.clients, &client.client_name, &pending.nonce, proof);
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
        salt.copy_from_slice(&salt_for(&self.clients, &client.client_name));
        if self.rng.fill(random).is_err() {
            return Admission::Refuse("the gateway has no randomness for a challenge; try again".into());
        }
        // (This connection's earlier challenge, if any, went in `login`.)
        let mut pending = self.pending();
        let from = client.peer.ip();
        let full = |p: &Challenges| p.len() >= self.max_pending || p.of_address(from) >= self.max_per_address;
        if full(&pending) {
            pending.expire(now, self.ttl);
            if full(&pending) {
                tracing::debug!(peer = %client.peer, "login refused: {BUSY}");
                return Admission::Refuse(BUSY.into());
            }
        }
        let name = sha256(&[client.client_name.as_bytes()]);
        pending.insert(client.id, Pending { nonce, name, issued: now, from });
        Admission::Challenge(nonce.to_vec())
    }

    /// The connection is gone: its challenge, if any, with it.
    pub fn forget(&self, connection: u64) {
        self.pending().remove(connection);
    }

    /// Challenges waiting for an answer.
    pub fn pending_count(&self) -> usize {
        self.pending().len()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Challenges> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::clients::tests::{TOKEN, entry};
    use crate::access::{Credential, KEY_LEN, TOKEN_LEN, to_hex};

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
    fn a_flood_from_one_address_leaves_room_for_the_others() {
        let clients = Arc::new(Clients::from_entries(&[entry("dev", &TOKEN, None, None)]).unwrap());
        let auth = Authenticator::with_limits(clients, Duration::from_secs(30), 100, 3);
        let now = Instant::now();
        let from = |id: u64, peer: &str| ClientInfo { peer: peer.parse().unwrap(), ..info(id, "dev", None) };
        for id in 0..3 {
            challenged(auth.login(&from(id, "10.0.0.1:1000"), now));
        }
        // Another port of the same address counts as the same peer.
        assert_eq!(auth.login(&from(3, "10.0.0.1:2000"), now), Admission::Refuse(BUSY.into()));
        let other = challenged(auth.login(&from(4, "10.0.0.2:1000"), now));
        let answer = ClientInfo { credential: Some(proof("dev", &TOKEN, &other)), ..from(4, "10.0.0.2:1000") };
        assert_eq!(auth.login(&answer, now), Admission::Accept, "the other address logs in");
        // One of the flood's connections goes: its address has room for one more.
        auth.forget(1);
        challenged(auth.login(&from(5, "10.0.0.1:3000"), now));
        assert_eq!(auth.pending_count(), 3);
    }

    #[test]
    fn waiting_challenges_are_bounded_and_expire() {
        let clients = Arc::new(Clients::from_entries(&[entry("dev", &TOKEN, None, None)]).unwrap());
        let ttl = Duration::from_secs(30);
        let auth = Authenticator::with_limits(clients, ttl, 4, 4);
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
        assert!(acl.may_register(&rivulet_core::owned::EventPath::parse("a/b")) && acl.sees_everything());
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
}
