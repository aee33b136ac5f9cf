//! The device's answer to a gateway's login challenge (docs/PROTOCOL.md §4.4.1): a proof that it
//! holds its 32-byte token, computed from the challenge's nonce, without the token ever leaving
//! the device. SHA-256 from `sha2`; HMAC-SHA-256 (RFC 2104) is a few lines on top, so no
//! `hmac` crate.

use sha2::{Digest, Sha256};

/// Bytes of a token (`rivulet credential` prints them as 64 hex digits).
pub const TOKEN_LEN: usize = 32;
/// The nonce starts with the client's salt.
const SALT_LEN: usize = 16;
const BLOCK: usize = 64;

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part);
    }
    hash.finalize().into()
}

/// HMAC-SHA-256 with a 32-byte key (shorter than the block: zero-padded, never hashed).
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let (mut inner_pad, mut outer_pad) = ([0x36u8; BLOCK], [0x5cu8; BLOCK]);
    for ((i, o), k) in inner_pad.iter_mut().zip(outer_pad.iter_mut()).zip(key) {
        *i ^= k;
        *o ^= k;
    }
    let mut inner = Sha256::new();
    inner.update(inner_pad);
    for part in parts {
        inner.update(part);
    }
    let inner: [u8; 32] = inner.finalize().into();
    sha256(&[&outer_pad, &inner])
}

/// The proof for `nonce` (salt ‖ server random) as client `client_name` holding `token`; `None`
/// if the nonce is too short to hold a salt.
pub fn proof(token: &[u8; TOKEN_LEN], nonce: &[u8], client_name: &str) -> Option<[u8; 32]> {
    let salt = nonce.get(..SALT_LEN)?;
    let salted = sha256(&[salt, token]);
    let client_key = hmac(&salted, &[b"Client Key"]);
    let stored_key = sha256(&[&client_key]);
    let signature = hmac(&stored_key, &[nonce, client_name.as_bytes()]);
    let mut proof = client_key;
    for (p, s) in proof.iter_mut().zip(signature) {
        *p ^= s;
    }
    Some(proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
            *byte = u8::from_str_radix(core::str::from_utf8(pair).unwrap(), 16).unwrap();
        }
        out
    }

    /// The vector of docs/PROTOCOL.md §4.4.1 (the gateway's `auth::tests::known_vector`).
    #[test]
    fn the_documented_vector() {
        let token: [u8; 32] = core::array::from_fn(|i| i as u8);
        let nonce: [u8; 32] = core::array::from_fn(|i| 0xa0 + i as u8);
        let expected = hex("119e79e7a1f671b21a58dd66b1ddba28e0854a1e3efc51dbca26e081037433cd");
        assert_eq!(proof(&token, &nonce, "dev"), Some(expected));
    }

    #[test]
    fn a_nonce_without_a_salt_has_no_proof() {
        assert_eq!(proof(&[0; 32], &[1; 15], "dev"), None);
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2_shape() {
        // RFC 4231 test case 2 uses a 4-byte key ("Jefe"); zero-padding it to 32 bytes gives the
        // same HMAC, since HMAC pads short keys with zeros anyway.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = hmac(&key, &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(mac, hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
    }
}
