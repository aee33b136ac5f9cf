//! `sha2`'s SHA-256 bound to the core's [`Sha256`] trait, for the login's proof and the image
//! receiver's hash.

use rivulet_core::login::{Key, Sha256};

/// SHA-256 from `sha2` (no_std, no alloc).
#[derive(Clone)]
pub struct Sha2(sha2::Sha256);

impl core::fmt::Debug for Sha2 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Sha2")
    }
}

impl Sha256 for Sha2 {
    fn new() -> Self {
        Sha2(sha2::Digest::new())
    }

    fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }

    fn finalize(self) -> Key {
        sha2::Digest::finalize(self.0).into()
    }
}
