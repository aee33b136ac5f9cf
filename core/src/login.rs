//! The gateway login's proof (docs/PROTOCOL.md §4.4.1), for both ends: a client proves that it
//! holds its token without sending it, and the gateway checks the proof against a stored key
//! that does not work as one. `‖` is concatenation:
//!
//! ```text
//! salted     = SHA-256(salt ‖ token)
//! client_key = HMAC-SHA-256(key = salted, "Client Key")
//! stored_key = SHA-256(client_key)                        what the gateway keeps
//! nonce      = salt ‖ server_random                       the gateway's challenge
//! signature  = HMAC-SHA-256(key = stored_key, nonce ‖ client_name)
//! proof      = client_key XOR signature                   the client's answer
//! ```
//!
//! The gateway accepts if `SHA-256(proof XOR signature) == stored_key`, compared in constant
//! time. SHA-256 comes from the caller ([`Sha256`]: `ring` on a host, `sha2` on a device);
//! HMAC (RFC 2104) is built on it here, for the 32-byte keys the scheme uses.

/// Bytes of a token.
pub const TOKEN_LEN: usize = 32;
/// Bytes of a client's salt; a nonce starts with it.
pub const SALT_LEN: usize = 16;
/// Bytes of a SHA-256 digest, and so of a client key, a stored key, a signature and a proof.
pub const KEY_LEN: usize = 32;
/// A digest, a key or a proof.
pub type Key = [u8; KEY_LEN];

/// SHA-256's input block, which HMAC pads its key to.
const BLOCK: usize = 64;
const CLIENT_KEY_LABEL: &[u8] = b"Client Key";

/// An incremental SHA-256.
pub trait Sha256 {
    fn new() -> Self;
    fn update(&mut self, bytes: &[u8]);
    fn finalize(self) -> Key;
}

/// SHA-256 of the concatenated `parts`.
pub fn sha256<H: Sha256>(parts: &[&[u8]]) -> Key {
    let mut hash = H::new();
    for part in parts {
        hash.update(part);
    }
    hash.finalize()
}

/// HMAC-SHA-256 (RFC 2104) of the concatenated `parts`. The key is shorter than a block, so it
/// is zero-padded, never hashed first.
pub fn hmac_sha256<H: Sha256>(key: &Key, parts: &[&[u8]]) -> Key {
    let (mut inner_pad, mut outer_pad) = ([0x36u8; BLOCK], [0x5cu8; BLOCK]);
    for ((i, o), k) in inner_pad.iter_mut().zip(outer_pad.iter_mut()).zip(key) {
        *i ^= k;
        *o ^= k;
    }
    let mut inner = H::new();
    inner.update(&inner_pad);
    for part in parts {
        inner.update(part);
    }
    sha256::<H>(&[&outer_pad, &inner.finalize()])
}

/// `HMAC(SHA-256(salt ‖ token), "Client Key")`: what a proof carries, masked.
pub fn client_key<H: Sha256>(salt: &[u8], token: &[u8]) -> Key {
    hmac_sha256::<H>(&sha256::<H>(&[salt, token]), &[CLIENT_KEY_LABEL])
}

/// `SHA-256(client_key)`: what the gateway keeps.
pub fn stored_key<H: Sha256>(client_key: &Key) -> Key {
    sha256::<H>(&[client_key])
}

/// `HMAC(stored_key, nonce ‖ client_name)`: the mask over the client key.
pub fn signature<H: Sha256>(stored_key: &Key, nonce: &[u8], client_name: &str) -> Key {
    hmac_sha256::<H>(stored_key, &[nonce, client_name.as_bytes()])
}

/// The answer to the challenge `nonce` (salt ‖ server random) of client `client_name` holding
/// `token`; `None` if the nonce is too short to hold a salt.
pub fn proof<H: Sha256>(token: &[u8], nonce: &[u8], client_name: &str) -> Option<Key> {
    let salt = nonce.get(..SALT_LEN)?;
    let key = client_key::<H>(salt, token);
    Some(xor(&key, &signature::<H>(&stored_key::<H>(&key), nonce, client_name)))
}

/// Whether `proof` answers `nonce` for client `client_name` whose stored key is `stored_key`.
/// Takes as long whatever the proof, its length included.
pub fn verify<H: Sha256>(stored_key: &Key, nonce: &[u8], client_name: &str, proof: &[u8]) -> bool {
    // A proof of another length is padded or cut, checked all the same, then refused.
    let mut padded = [0u8; KEY_LEN];
    padded.iter_mut().zip(proof).for_each(|(p, b)| *p = *b);
    let recovered = xor(&padded, &signature::<H>(stored_key, nonce, client_name));
    let matches = same(&sha256::<H>(&[&recovered]), stored_key);
    matches & (proof.len() == KEY_LEN)
}

/// Equal bytes, in time that does not depend on where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    core::hint::black_box(diff) == 0
}

fn xor(a: &Key, b: &Key) -> Key {
    let mut out = *a;
    out.iter_mut().zip(b).for_each(|(o, b)| *o ^= b);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sha2`'s SHA-256, as a device uses it.
    impl Sha256 for sha2::Sha256 {
        fn new() -> Self {
            sha2::Digest::new()
        }

        fn update(&mut self, bytes: &[u8]) {
            sha2::Digest::update(self, bytes);
        }

        fn finalize(self) -> Key {
            sha2::Digest::finalize(self).into()
        }
    }

    type H = sha2::Sha256;

    fn hex(text: &str) -> Key {
        let mut out = [0u8; KEY_LEN];
        for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
            *byte = u8::from_str_radix(core::str::from_utf8(pair).unwrap(), 16).unwrap();
        }
        out
    }

    /// The vector of docs/PROTOCOL.md §4.4.1, every step (computed independently with Python's
    /// hashlib and hmac; the gateway's `frontend::native::login::tests::known_vector` checks it through ring).
    #[test]
    fn the_documented_vector() {
        let token: [u8; TOKEN_LEN] = core::array::from_fn(|i| i as u8);
        let salt: [u8; SALT_LEN] = core::array::from_fn(|i| 0xa0 + i as u8);
        let nonce: [u8; 32] = core::array::from_fn(|i| 0xa0 + i as u8);
        let salted = sha256::<H>(&[&salt, &token]);
        assert_eq!(salted, hex("4353e662d8b7b4127e2231bb7dc448dc35cc5a893631bdd01574e802d768244a"));
        let client_key = client_key::<H>(&salt, &token);
        assert_eq!(client_key, hex("28347a2771c92ddacfea9a4351776cb39f0986df486b32ea7cd64b27da03c547"));
        let stored_key = stored_key::<H>(&client_key);
        assert_eq!(stored_key, hex("636272c539fa3385ce42151610257523b36af158ad6c06e5f6a322f595ff9e34"));
        let signature = signature::<H>(&stored_key, &nonce, "dev");
        assert_eq!(signature, hex("39aa03c0d03f5c68d5b24725e0aad69b7f8cccc176976331b6f0aba6d977f68a"));
        let proof = proof::<H>(&token, &nonce, "dev").expect("a nonce with a salt");
        assert_eq!(proof, hex("119e79e7a1f671b21a58dd66b1ddba28e0854a1e3efc51dbca26e081037433cd"));
        assert!(verify::<H>(&stored_key, &nonce, "dev", &proof));
    }

    #[test]
    fn only_the_right_proof_verifies() {
        let token = [0x42; TOKEN_LEN];
        let nonce = [7u8; 32];
        let stored = stored_key::<H>(&client_key::<H>(&nonce[..SALT_LEN], &token));
        let answer = proof::<H>(&token, &nonce, "dev").expect("a salt");
        assert!(verify::<H>(&stored, &nonce, "dev", &answer));
        assert!(!verify::<H>(&stored, &nonce, "other", &answer), "another name");
        assert!(!verify::<H>(&stored, &[8u8; 32], "dev", &answer), "another nonce");
        let wrong = proof::<H>(&[0x43; TOKEN_LEN], &nonce, "dev").expect("a salt");
        assert!(!verify::<H>(&stored, &nonce, "dev", &wrong), "another token");
        let mut flipped = answer;
        flipped[31] ^= 1;
        assert!(!verify::<H>(&stored, &nonce, "dev", &flipped), "one bit off");
        assert!(!verify::<H>(&stored, &nonce, "dev", &answer[..31]), "cut short");
        let longer = [&answer[..], &[0]].concat();
        assert!(!verify::<H>(&stored, &nonce, "dev", &longer), "a byte too many");
        let forged = signature::<H>(&stored, &nonce, "dev");
        assert!(!verify::<H>(&stored, &nonce, "dev", &forged), "the signature alone");
    }

    #[test]
    fn a_nonce_without_a_salt_has_no_proof() {
        assert_eq!(proof::<H>(&[0; TOKEN_LEN], &[1; SALT_LEN - 1], "dev"), None);
        assert!(proof::<H>(&[0; TOKEN_LEN], &[1; SALT_LEN], "dev").is_some());
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // Case 2's key is "Jefe"; zero-padded to 32 bytes it gives the same HMAC, since HMAC
        // pads short keys with zeros anyway.
        let mut key = [0u8; KEY_LEN];
        key[..4].copy_from_slice(b"Jefe");
        let mac = hmac_sha256::<H>(&key, &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(mac, hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
    }

    #[test]
    fn same_compares_whole_slices() {
        assert!(same(b"abc", b"abc"));
        assert!(same(b"", b""));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
