//! Fixed-size identities for in-memory keys: 128 bits of SHA-256 over a list of
//! strings, each prefixed by its length so that ("ab", "c") and ("a", "bc") differ.
//! Revocation records and per-subject claims are keyed this way.

use sha2::{Digest, Sha256};

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
