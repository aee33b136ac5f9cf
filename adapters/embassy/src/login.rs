//! The device's answer to a gateway's login challenge (docs/PROTOCOL.md §4.4.1): a proof that it
//! holds its 32-byte token, computed from the challenge's nonce, without the token ever leaving
//! the device. The scheme is the core's (`rivulet_core::login`); SHA-256 comes from `sha2`, and
//! HMAC is the core's few lines on top of it, so no `hmac` crate.

use rivulet_core::login::{self, Key};

use crate::sha::Sha2;

/// Bytes of a token (`rivulet credential` prints them as 64 hex digits).
pub use rivulet_core::login::TOKEN_LEN;

/// The proof for `nonce` (salt ‖ server random) as client `client_name` holding `token`; `None`
/// if the nonce is too short to hold a salt.
pub fn proof(token: &[u8; TOKEN_LEN], nonce: &[u8], client_name: &str) -> Option<Key> {
    login::proof::<Sha2>(token, nonce, client_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector of docs/PROTOCOL.md §4.4.1 (the core's `login::tests::the_documented_vector`),
    /// through `sha2` as the device binds it.
    #[test]
    fn the_documented_vector() {
        let token: [u8; 32] = core::array::from_fn(|i| i as u8);
        let nonce: [u8; 32] = core::array::from_fn(|i| 0xa0 + i as u8);
        let proof = proof(&token, &nonce, "dev").expect("a nonce with a salt");
        let hex: String = proof.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "119e79e7a1f671b21a58dd66b1ddba28e0854a1e3efc51dbca26e081037433cd");
    }
}
