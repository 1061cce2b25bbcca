//! Fixed-size identities for in-memory keys: 128 bits of SHA-256 over a list of
//! strings, each prefixed by its length so that ("ab", "c") and ("a", "bc") differ.
//! Revocation records and per-subject claims are keyed this way.

use std::hash::{BuildHasherDefault, Hasher};

use sha2::{Digest, Sha256};

/// Hashing for maps keyed by digests: the keys are already uniform (SHA-256), so
/// hashing them again (SipHash) would only cost time. Not for keys a caller chooses.
pub type DigestHashing = BuildHasherDefault<DigestHasher>;

#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
}

/// The first 128 bits of SHA-256 over the length-prefixed `parts`.
pub fn digest128(parts: &[&str]) -> [u8; 16] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    truncate128(&hasher.finalize().into())
}

/// The first 128 bits of a SHA-256 digest.
pub fn truncate128(digest: &[u8; 32]) -> [u8; 16] {
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

#[cfg(test)]
mod tests {
    use super::digest128;

    #[test]
    fn parts_are_kept_apart() {
        assert_ne!(digest128(&["ab", "c"]), digest128(&["a", "bc"]));
        assert_ne!(digest128(&["abc"]), digest128(&["abc", ""]));
        assert_eq!(digest128(&["a", "b"]), digest128(&["a", "b"]));
    }
}
