//! Claims set per subject through the admin API, replicated by the state log.

use std::sync::Arc;

use crate::digest::digest128;
use dashmap::DashMap;
use serde_json::{Map, Value};

/// A subject's identity in the store: 128 bits of SHA-256 over issuer and subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubjectKey([u8; 16]);

impl SubjectKey {
    pub fn new(iss: &str, sub: &str) -> Self {
        Self(digest128(&["subject-claims", iss, sub]))
    }
}

/// One subject's claims, as set and without the registered claims: filtered once when
/// set rather than on every answer.
#[derive(Debug, Clone)]
pub struct Stored {
    pub all: Arc<Map<String, Value>>,
    pub unregistered: Arc<Map<String, Value>>,
}

/// Every subject's claims, as last set.
#[derive(Debug, Default)]
pub struct SubjectClaims {
    claims: DashMap<SubjectKey, Stored>,
}

impl SubjectClaims {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self, iss: &str, sub: &str, claims: Map<String, Value>) {
        let mut unregistered = claims.clone();
        unregistered.retain(|name, _| !super::REGISTERED.contains(&name.as_str()));
        let stored = Stored {
            all: Arc::new(claims),
            unregistered: Arc::new(unregistered),
        };
        self.claims.insert(SubjectKey::new(iss, sub), stored);
    }

    pub fn delete(&self, iss: &str, sub: &str) {
        self.claims.remove(&SubjectKey::new(iss, sub));
    }

    /// Replaces every subject's claims with `subjects`, without a moment where a subject
    /// that stays has none.
    pub fn replace_all(&self, subjects: Vec<(String, String, Map<String, Value>)>) {
        let keep: std::collections::HashSet<SubjectKey> = subjects
            .iter()
            .map(|(iss, sub, _)| SubjectKey::new(iss, sub))
            .collect();
        for (iss, sub, claims) in subjects {
            self.set(&iss, &sub, claims);
        }
        self.claims.retain(|key, _| keep.contains(key));
    }

    pub fn get(&self, key: &SubjectKey) -> Option<Stored> {
        self.claims.get(key).map(|stored| stored.clone())
    }

    pub fn len(&self) -> usize {
        self.claims.len()
    }

    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }
}
