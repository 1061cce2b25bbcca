//! Claims set per subject through the admin API, replicated by the state log.

use std::sync::Arc;

use dashmap::DashMap;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A subject's identity in the store: 128 bits of SHA-256 over issuer and subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubjectKey([u8; 16]);

impl SubjectKey {
    pub fn new(iss: &str, sub: &str) -> Self {
        let mut hasher = Sha256::new();
        for part in ["subject-claims", iss, sub] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        let digest: [u8; 32] = hasher.finalize().into();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        Self(key)
    }
}

/// Every subject's claims, as last set.
#[derive(Debug, Default)]
pub struct SubjectClaims {
    claims: DashMap<SubjectKey, Arc<Map<String, Value>>>,
}

impl SubjectClaims {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self, iss: &str, sub: &str, claims: Map<String, Value>) {
        self.claims
            .insert(SubjectKey::new(iss, sub), Arc::new(claims));
    }

    pub fn delete(&self, iss: &str, sub: &str) {
        self.claims.remove(&SubjectKey::new(iss, sub));
    }

    pub fn get(&self, key: &SubjectKey) -> Option<Arc<Map<String, Value>>> {
        self.claims.get(key).map(|claims| claims.clone())
    }

    pub fn len(&self) -> usize {
        self.claims.len()
    }

    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }
}
