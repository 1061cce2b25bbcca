//! The verified-token cache: SHA-256(token) → the verified token, so a repeated token
//! skips parsing and signature verification.
//!
//! It never serves a token at or past its `exp`, nor one verified with a key its issuer
//! has since dropped. What a call asks (scopes, audience) and revocation are checked by
//! the caller on every hit, never cached.

use std::sync::Arc;

use dashmap::DashMap;

use crate::enrich::{Pipeline, Precomputed, SubjectKey};
use crate::keys::Issuer;
use crate::revocation::TokenKeys;
use crate::token::{AccessToken, TokenHash};

/// A verified token with what is derived from it once: the revocation keys, and the
/// issuer's enrichment pipeline with its token-only layers.
#[derive(Debug)]
pub struct Verified {
    pub token: Arc<AccessToken>,
    pub revocation_keys: TokenKeys,
    pub pipeline: Arc<Pipeline>,
    pub precomputed: Precomputed,
    pub subject_key: Option<SubjectKey>,
}

struct Entry {
    verified: Arc<Verified>,
    /// Unix seconds until which the entry may be served: the token's `exp`, or less for
    /// an answer from an introspection endpoint.
    until: i64,
    issuer: Arc<Issuer>,
    /// The issuer's key epoch when the token was verified.
    epoch: u64,
}

pub struct VerifiedCache {
    entries: DashMap<TokenHash, Entry>,
    max_entries: usize,
}

impl VerifiedCache {
    /// `max_entries == 0` disables the cache.
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: DashMap::new(),
            max_entries,
        }
    }

    pub fn get(&self, hash: &TokenHash, now: i64) -> Option<Arc<Verified>> {
        let fresh = |entry: &Entry| now < entry.until && entry.epoch == entry.issuer.epoch();
        if let Some(entry) = self.entries.get(hash) {
            if fresh(&entry) {
                return Some(entry.verified.clone());
            }
        } else {
            return None;
        }
        // Only a stale entry goes: another caller may have just put a fresh one there.
        self.entries.remove_if(hash, |_, entry| !fresh(entry));
        None
    }

    pub fn insert(
        &self,
        hash: TokenHash,
        verified: Arc<Verified>,
        issuer: Arc<Issuer>,
        epoch: u64,
        until: i64,
        now: i64,
    ) {
        if self.max_entries == 0 {
            return;
        }
        if self.entries.len() >= self.max_entries {
            self.make_room(now);
        }
        self.entries.insert(
            hash,
            Entry {
                verified,
                until,
                issuer,
                epoch,
            },
        );
    }

    /// Drops expired entries, and if the cache is still full, an arbitrary eighth of it:
    /// cheaper than tracking recency on every hit, and a dropped entry costs one
    /// re-verification.
    fn make_room(&self, now: i64) {
        self.purge_expired(now);
        if self.entries.len() < self.max_entries {
            return;
        }
        let victims: Vec<TokenHash> = self
            .entries
            .iter()
            .take((self.max_entries / 8).max(1))
            .map(|entry| *entry.key())
            .collect();
        for hash in victims {
            self.entries.remove(&hash);
        }
    }

    pub fn purge_expired(&self, now: i64) {
        self.entries.retain(|_, entry| now < entry.until);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
