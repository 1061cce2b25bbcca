//! The revocation set: what is revoked, held in memory and checked on every answer.
//!
//! Records are `Token{sha256}`, `Jti{iss, jti}` and cut-offs `Subject`/`Client`/`Session`
//! `{iss, value, before}` (a token whose `iat` is earlier than `before` is revoked). In
//! memory each is a 16-byte key (a SHA-256 prefix of its kind and identifiers) in a
//! `DashMap`, with the time after which it no longer matters (`forget_after`); the full
//! records live in the state log. The hot path is a few map lookups with keys computed
//! once per verified token.

mod retention;
mod service;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::digest::{digest128, truncate128};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::token::{AccessToken, TokenHash};

pub use service::{Revocations, RevokeError, Target, WatchError, WatchEvent};

/// Longest free-text reason kept with a record.
pub const MAX_REASON_BYTES: usize = 256;

/// What is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// One token, by the hex SHA-256 of its text.
    Token { sha256: String },
    /// One token, by issuer and `jti`.
    Jti { iss: String, jti: String },
    /// Every token of a subject issued before `before`.
    Subject {
        iss: String,
        sub: String,
        before: i64,
    },
    /// Every token of a client issued before `before`.
    Client {
        iss: String,
        client_id: String,
        before: i64,
    },
    /// Every token of a session issued before `before`.
    Session {
        iss: String,
        sid: String,
        before: i64,
    },
}

/// A record with its bookkeeping: the unit of the state log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub record: Record,
    /// Unix seconds after which no token can match any more (it would have expired).
    pub forget_after: i64,
    pub revoked_at: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Token,
    Jti,
    Subject,
    Client,
    Session,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Token => "token",
            RecordKind::Jti => "jti",
            RecordKind::Subject => "subject",
            RecordKind::Client => "client",
            RecordKind::Session => "session",
        }
    }
}

/// Which record revoked a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched {
    pub kind: RecordKind,
    /// The cut-off's `before`, for cut-offs.
    pub before: Option<i64>,
}

/// A record's in-memory identity: 128 bits of SHA-256 over its kind and identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 16]);

impl Key {
    fn of(kind: RecordKind, iss: &str, value: &str) -> Self {
        Self(digest128(&[kind.as_str(), iss, value]))
    }

    pub fn of_token(hash: &TokenHash) -> Self {
        Self(truncate128(&hash.0))
    }
}

/// The identifiers of a token the set is checked against, computed once per verified
/// token (and cached with it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenKeys {
    pub token: Option<Key>,
    pub jti: Option<Key>,
    pub subject: Option<Key>,
    pub client: Option<Key>,
    pub session: Option<Key>,
    pub iat: Option<i64>,
}

/// Identifiers of a token as a caller states them (CheckRevocation).
#[derive(Debug, Clone, Default)]
pub struct TokenIdentity<'a> {
    pub token_hash: Option<TokenHash>,
    pub iss: &'a str,
    pub jti: Option<&'a str>,
    pub sub: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub sid: Option<&'a str>,
    pub iat: Option<i64>,
}

impl TokenKeys {
    pub fn of(identity: &TokenIdentity<'_>) -> Self {
        let key = |kind, value: Option<&str>| value.map(|v| Key::of(kind, identity.iss, v));
        Self {
            token: identity.token_hash.as_ref().map(Key::of_token),
            jti: key(RecordKind::Jti, identity.jti),
            subject: key(RecordKind::Subject, identity.sub),
            client: key(RecordKind::Client, identity.client_id),
            session: key(RecordKind::Session, identity.sid),
            iat: identity.iat,
        }
    }

    pub fn of_access_token(hash: &TokenHash, token: &AccessToken) -> Self {
        Self::of(&TokenIdentity {
            token_hash: Some(*hash),
            iss: &token.iss,
            jti: token.jti.as_deref(),
            sub: token.sub.as_deref(),
            client_id: token.client_id.as_deref(),
            sid: token.sid.as_deref(),
            iat: token.iat,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Cutoff {
    before: i64,
    forget_after: i64,
}

type KeyMap<V> = DashMap<Key, V, crate::digest::DigestHashing>;

/// The set is still loading: it cannot say a token is not revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the revocation set has not caught up with the state log yet")]
pub struct Incomplete;

/// Every live revocation, by key; one map per kind, so sizes by kind cost nothing.
#[derive(Default)]
pub struct RevocationSet {
    /// Whether every record up to the log's head at start has been applied. Until then
    /// no check can answer "not revoked".
    complete: AtomicBool,
    /// key → forget_after.
    tokens: KeyMap<i64>,
    jtis: KeyMap<i64>,
    subjects: KeyMap<Cutoff>,
    clients: KeyMap<Cutoff>,
    sessions: KeyMap<Cutoff>,
}

/// Counts of records by kind, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetSize {
    pub tokens: usize,
    pub jtis: usize,
    pub subjects: usize,
    pub clients: usize,
    pub sessions: usize,
}

impl SetSize {
    pub fn total(&self) -> usize {
        self.tokens + self.jtis + self.subjects + self.clients + self.sessions
    }

    pub fn by_kind(&self) -> [(RecordKind, usize); 5] {
        [
            (RecordKind::Token, self.tokens),
            (RecordKind::Jti, self.jtis),
            (RecordKind::Subject, self.subjects),
            (RecordKind::Client, self.clients),
            (RecordKind::Session, self.sessions),
        ]
    }
}

impl RevocationSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a revocation. Applying the same revocation twice changes nothing; of two
    /// cut-offs for the same subject/client/session the later `before` wins.
    pub fn apply(&self, revocation: &Revocation) {
        let forget_after = revocation.forget_after;
        let (map, kind, iss, value, before) = match &revocation.record {
            Record::Token { sha256 } => {
                if let Some(key) = token_key_from_hex(sha256) {
                    insert_exact(&self.tokens, key, forget_after);
                }
                return;
            }
            Record::Jti { iss, jti } => {
                insert_exact(&self.jtis, Key::of(RecordKind::Jti, iss, jti), forget_after);
                return;
            }
            Record::Subject { iss, sub, before } => {
                (&self.subjects, RecordKind::Subject, iss, sub, *before)
            }
            Record::Client {
                iss,
                client_id,
                before,
            } => (&self.clients, RecordKind::Client, iss, client_id, *before),
            Record::Session { iss, sid, before } => {
                (&self.sessions, RecordKind::Session, iss, sid, *before)
            }
        };
        let key = Key::of(kind, iss, value);
        map.entry(key)
            .and_modify(|cutoff| {
                cutoff.before = cutoff.before.max(before);
                cutoff.forget_after = cutoff.forget_after.max(forget_after);
            })
            .or_insert(Cutoff {
                before,
                forget_after,
            });
    }

    /// The log has been applied up to the head it had at start: from now on a check
    /// may answer "not revoked". It stays so (a replica that later loses its store
    /// answers from memory, its lag in a metric).
    pub fn mark_complete(&self) {
        self.complete.store(true, Ordering::Release);
    }

    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// Which record revokes the token, if any: its hash, its `jti`, or a cut-off for its
    /// subject, client or session later than its `iat` (a token without `iat` cannot be
    /// shown to be newer, so a cut-off revokes it). Never "not revoked" from a set that
    /// is still loading.
    pub fn check(&self, keys: &TokenKeys) -> Result<Option<Matched>, Incomplete> {
        if !self.is_complete() {
            return Err(Incomplete);
        }
        Ok(self.lookup(keys))
    }

    fn lookup(&self, keys: &TokenKeys) -> Option<Matched> {
        for (map, key, kind) in [
            (&self.tokens, keys.token, RecordKind::Token),
            (&self.jtis, keys.jti, RecordKind::Jti),
        ] {
            if let Some(key) = key
                && map.contains_key(&key)
            {
                return Some(Matched { kind, before: None });
            }
        }
        for (map, key, kind) in [
            (&self.subjects, keys.subject, RecordKind::Subject),
            (&self.clients, keys.client, RecordKind::Client),
            (&self.sessions, keys.session, RecordKind::Session),
        ] {
            let Some(key) = key else { continue };
            if let Some(cutoff) = map.get(&key)
                && keys.iat.is_none_or(|iat| iat < cutoff.before)
            {
                return Some(Matched {
                    kind,
                    before: Some(cutoff.before),
                });
            }
        }
        None
    }

    /// Drops records whose `forget_after` has passed; returns how many.
    pub fn purge(&self, now: i64) -> usize {
        let before = self.size().total();
        for map in [&self.tokens, &self.jtis] {
            map.retain(|_, forget_after| *forget_after > now);
        }
        for map in [&self.subjects, &self.clients, &self.sessions] {
            map.retain(|_, cutoff| cutoff.forget_after > now);
        }
        before - self.size().total()
    }

    pub fn size(&self) -> SetSize {
        SetSize {
            tokens: self.tokens.len(),
            jtis: self.jtis.len(),
            subjects: self.subjects.len(),
            clients: self.clients.len(),
            sessions: self.sessions.len(),
        }
    }
}

fn insert_exact(map: &KeyMap<i64>, key: Key, forget_after: i64) {
    map.entry(key)
        .and_modify(|at| *at = (*at).max(forget_after))
        .or_insert(forget_after);
}

fn token_key_from_hex(text: &str) -> Option<Key> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text, &mut digest).ok()?;
    Some(Key(truncate128(&digest)))
}

/// Hex SHA-256 of a token, as records carry it.
pub fn token_hex(hash: &TokenHash) -> String {
    hex::encode(hash.0)
}

#[cfg(test)]
mod tests;
