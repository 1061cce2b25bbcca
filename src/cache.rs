//! The verified-token cache: SHA-256(token) → the verified token, so a repeated token
//! skips parsing and signature verification.
//!
//! It never serves a token at or past its `exp`, nor one verified with a key its issuer
//! has since dropped. What a call asks (scopes, audience) and revocation are checked by
//! the caller on every hit, never cached.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::enrich::{Pipeline, Precomputed, SubjectKey};
use crate::keys::Issuer;
use crate::revocation::TokenKeys;
use crate::token::{AccessToken, TokenHash};
use crate::ttl_map::TtlMap;

/// A verified token with what is derived from it once: the revocation keys, and the
/// issuer's enrichment pipeline with its token-only layers.
#[derive(Debug)]
pub struct Verified {
    pub token: Arc<AccessToken>,
    pub kept_answers: KeptAnswers,
    pub revocation_keys: TokenKeys,
    pub pipeline: Arc<Pipeline>,
    pub precomputed: Precomputed,
    pub subject_key: Option<SubjectKey>,
    /// [`crate::binding::has_confirmation`] of `token`.
    pub has_confirmation: bool,
}

/// The token's answer as each surface encodes it, where the answer is the same on every
/// call (active, no enrichment, no DPoP nonce): made by the first call that needs it,
/// then reused by every cache hit.
#[derive(Debug, Default)]
pub struct KeptAnswers {
    /// RFC 7662 JSON (HTTP).
    pub rfc7662_json: OnceLock<Arc<str>>,
    /// The encoded answer message (gRPC).
    pub encoded: OnceLock<Bytes>,
    /// The gateway's allow decision as Envoy's ext_authz `CheckResponse`, encoded.
    pub encoded_allow: OnceLock<Bytes>,
}

/// Where a verification came from, which bounds how long it may be served.
#[derive(Debug, Clone)]
pub struct Origin {
    pub issuer: Arc<Issuer>,
    /// The issuer's key epoch when the token was verified.
    pub epoch: u64,
    /// Unix seconds until which it may be served: the token's `exp`, or less for an
    /// answer from an introspection endpoint.
    pub until: i64,
}

struct Entry {
    verified: Arc<Verified>,
    issuer: Arc<Issuer>,
    epoch: u64,
}

pub struct VerifiedCache {
    entries: TtlMap<TokenHash, Entry, crate::digest::DigestHashing>,
}

impl VerifiedCache {
    /// `max_entries == 0` disables the cache.
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: TtlMap::new(max_entries),
        }
    }

    /// The verified token, unless its time is up or its issuer has since dropped or
    /// replaced a key (a new epoch).
    pub fn get(&self, hash: &TokenHash, now: i64) -> Option<Arc<Verified>> {
        self.entries.read(hash, now, |entry| {
            (entry.epoch == entry.issuer.epoch()).then(|| entry.verified.clone())
        })
    }

    pub fn insert(&self, hash: TokenHash, verified: Arc<Verified>, origin: Origin, now: i64) {
        let Origin {
            issuer,
            epoch,
            until,
        } = origin;
        let entry = Entry {
            verified,
            issuer,
            epoch,
        };
        self.entries.insert(hash, entry, until, now);
    }

    pub fn purge_expired(&self, now: i64) {
        self.entries.purge_expired(now);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
