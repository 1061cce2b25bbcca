//! The Introspector: the data flow of one introspection, independent of any transport.
//!
//! ```text
//! token ─► cache lookup by SHA-256(token) ── hit ──────────────────────────┐
//!       ─► parse ─► issuer by iss ─► key by kid (one refetch if unknown)   │
//!       ─► signature ─► claims rules ─► cache insert ──────────────────────┤
//!       ─► revocation set (always, cache hits too) ◄───────────────────────┘
//!       ─► per-call policy (required scopes, audience)
//!       ─► Introspection { fingerprint, Active(token) | Inactive(rejection) }
//! ```

use std::{collections::HashMap, sync::Arc};

use dashmap::DashMap;

use crate::cache::{Verified, VerifiedCache};
use crate::enrich::{EnrichError, Enrichment, Pipeline, SubjectClaims, SubjectKey};
use crate::keys::Issuers;
use crate::revocation::{RevocationSet, TokenKeys};
use crate::token::{self, AccessToken, CallPolicy, Fingerprint, Reason, Rejection, TokenHash};

/// Answer to one introspection.
#[derive(Debug, Clone)]
pub struct Introspection {
    pub fingerprint: Fingerprint,
    pub outcome: Result<Arc<AccessToken>, Rejection>,
    /// Claims added by the issuer's enrichers; empty for inactive tokens.
    pub enrichment: Enrichment,
    /// Whether the verification came from the cache.
    pub cache_hit: bool,
}

impl Introspection {
    pub fn is_active(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// Cases where the service cannot decide; an invalid token is never one of them.
#[derive(Debug, thiserror::Error)]
pub enum IntrospectError {
    #[error("the keys of issuer {0:?} have not loaded yet")]
    KeysNotReady(String),
    /// An issuer's introspection endpoint could not answer for an opaque token.
    #[error("the introspection endpoint of {iss:?} failed: {detail}")]
    Upstream { iss: String, detail: String },
    /// A fail-closed enricher could not answer.
    #[error(transparent)]
    Enrichment(#[from] EnrichError),
}

pub struct Introspector {
    issuers: Arc<Issuers>,
    revocations: Arc<RevocationSet>,
    subjects: Arc<SubjectClaims>,
    /// Enrichment pipeline by issuer.
    pipelines: HashMap<String, Arc<Pipeline>>,
    /// Opaque tokens every endpoint called inactive, until when: a flood of unknown
    /// tokens costs the issuers one call each per few seconds, not one per request.
    inactive_opaque: DashMap<TokenHash, i64>,
    cache: VerifiedCache,
    max_token_bytes: usize,
}

const INACTIVE_AT_ISSUER: Rejection = Rejection::new(
    Reason::InactiveAtIssuer,
    "the issuer's introspection endpoint calls it inactive",
);
/// How long an opaque token every endpoint called inactive is answered without asking
/// again (at most each endpoint's `introspection_cache_secs`).
const INACTIVE_OPAQUE_SECS: i64 = 10;
/// Most such tokens remembered.
const MAX_INACTIVE_OPAQUE: usize = 100_000;

const OPAQUE: Rejection = Rejection::new(
    Reason::UnknownIssuer,
    "opaque token, and no issuer introspects opaque tokens",
);

impl Introspector {
    pub fn new(
        issuers: Arc<Issuers>,
        revocations: Arc<RevocationSet>,
        subjects: Arc<SubjectClaims>,
        pipelines: HashMap<String, Arc<Pipeline>>,
        cache_max_entries: usize,
        max_token_bytes: usize,
    ) -> Self {
        Self {
            issuers,
            revocations,
            subjects,
            pipelines,
            inactive_opaque: DashMap::new(),
            cache: VerifiedCache::new(cache_max_entries),
            max_token_bytes,
        }
    }

    pub fn issuers(&self) -> &Arc<Issuers> {
        &self.issuers
    }

    pub fn cache(&self) -> &VerifiedCache {
        &self.cache
    }

    pub fn pipelines(&self) -> impl Iterator<Item = (&str, &Pipeline)> {
        self.pipelines
            .iter()
            .map(|(iss, pipeline)| (iss.as_str(), pipeline.as_ref()))
    }

    /// Introspects `token` as of `now` (Unix seconds).
    pub async fn introspect(
        &self,
        token: &str,
        policy: CallPolicy<'_>,
        now: i64,
    ) -> Result<Introspection, IntrospectError> {
        let hash = TokenHash::of(token);
        let cached = self.cache.get(&hash, now);
        let cache_hit = cached.is_some();
        let verified = match cached {
            Some(hit) => Ok(hit),
            None => self.verify(token, hash, now).await?,
        };
        let checked = verified.and_then(|verified| {
            if let Some(matched) = self.revocations.check(&verified.revocation_keys) {
                tracing::debug!(record = matched.kind.as_str(), "revoked");
                return Err(Rejection::new(
                    Reason::Revoked,
                    "a revocation record matches",
                ));
            }
            policy.check(&verified.token)?;
            Ok(verified)
        });
        // Only active answers are enriched: no lookup ever runs for an inactive token.
        let (outcome, enrichment) = match checked {
            Ok(verified) => {
                let enrichment = if verified.pipeline.is_empty() {
                    Enrichment::default()
                } else {
                    verified
                        .pipeline
                        .enrich(
                            &verified.token,
                            &verified.precomputed,
                            verified.subject_key.as_ref(),
                            &self.subjects,
                            now,
                        )
                        .await?
                };
                (Ok(verified.token.clone()), enrichment)
            }
            Err(rejection) => (Err(rejection), Enrichment::default()),
        };
        let fingerprint = hash.fingerprint();
        if let Err(rejection) = &outcome {
            tracing::debug!(%fingerprint, reason = %rejection.reason, detail = rejection.detail, "token inactive");
        }
        Ok(Introspection {
            fingerprint,
            outcome,
            enrichment,
            cache_hit,
        })
    }

    async fn verify(
        &self,
        raw: &str,
        hash: TokenHash,
        now: i64,
    ) -> Result<Result<Arc<Verified>, Rejection>, IntrospectError> {
        if !raw.contains('.') {
            return self.verify_opaque(raw, hash, now).await;
        }
        let jwt = match token::parse(raw, self.max_token_bytes) {
            Ok(jwt) => jwt,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let Some(issuer) = jwt.issuer().and_then(|iss| self.issuers.get(iss)) else {
            return Ok(Err(Rejection::new(
                Reason::UnknownIssuer,
                "iss is missing or not a configured issuer",
            )));
        };
        // Read the epoch before the keys: a key dropped in between makes the entry stale
        // rather than wrongly fresh.
        let epoch = issuer.epoch();
        let not_ready = || IntrospectError::KeysNotReady(issuer.config.issuer.clone());
        let keys = issuer.keys().ok_or_else(not_ready)?;
        let mut checked = jwt.check_signature(&issuer.config, &keys);
        if matches!(checked, Err(r) if r.reason == Reason::UnknownKey) {
            issuer.refetch_for_unknown_kid().await;
            let keys = issuer.keys().ok_or_else(not_ready)?;
            checked = jwt.check_signature(&issuer.config, &keys);
        }
        if let Err(rejection) = checked {
            return Ok(Err(rejection));
        }
        Ok(jwt.into_access_token(&issuer.config, now).map(|token| {
            let until = token.exp;
            self.remember(raw, hash, token, issuer, epoch, until, now)
        }))
    }

    /// An opaque token: asked of each issuer with an introspection endpoint, in
    /// configuration order, until one calls it active. An endpoint that cannot answer
    /// makes the answer an error (UNAVAILABLE), not `active: false`.
    async fn verify_opaque(
        &self,
        raw: &str,
        hash: TokenHash,
        now: i64,
    ) -> Result<Result<Arc<Verified>, Rejection>, IntrospectError> {
        let issuers = self.issuers.with_opaque_introspection();
        if raw.len() > self.max_token_bytes {
            return Ok(Err(Rejection::new(
                Reason::Malformed,
                "token longer than the limit",
            )));
        }
        if self
            .inactive_opaque
            .get(&hash)
            .is_some_and(|until| *until > now)
        {
            return Ok(Err(INACTIVE_AT_ISSUER));
        }
        let mut remember_inactive = INACTIVE_OPAQUE_SECS;
        for issuer in issuers {
            let Some(endpoint) = &issuer.config.opaque else {
                continue;
            };
            let epoch = issuer.epoch();
            let answer = crate::opaque::introspect(issuer.http(), endpoint, raw)
                .await
                .map_err(|detail| IntrospectError::Upstream {
                    iss: issuer.config.issuer.clone(),
                    detail,
                })?;
            let Some(answer) = answer else {
                remember_inactive = remember_inactive.min(endpoint.cache_secs);
                continue;
            };
            // The answer is reused no longer than the endpoint allows (`exp`) and than
            // configured, so a revocation at the issuer shows within that time.
            let horizon = now.saturating_add(endpoint.cache_secs);
            let token = match AccessToken::from_introspection(answer, &issuer.config, horizon) {
                Ok(token) => token,
                Err(rejection) => return Ok(Err(rejection)),
            };
            if token.exp <= now {
                return Ok(Err(Rejection::new(Reason::Expired, "exp has passed")));
            }
            let until = token.exp.min(horizon);
            return Ok(Ok(
                self.remember(raw, hash, token, issuer, epoch, until, now)
            ));
        }
        if issuers.is_empty() {
            return Ok(Err(OPAQUE));
        }
        if self.inactive_opaque.len() >= MAX_INACTIVE_OPAQUE {
            self.inactive_opaque.retain(|_, until| *until > now);
            if self.inactive_opaque.len() >= MAX_INACTIVE_OPAQUE {
                self.inactive_opaque.clear();
            }
        }
        if remember_inactive > 0 {
            self.inactive_opaque
                .insert(hash, now.saturating_add(remember_inactive));
        }
        Ok(Err(INACTIVE_AT_ISSUER))
    }

    /// Derives what a verified token needs on every answer, and caches it until `until`.
    #[allow(clippy::too_many_arguments)]
    fn remember(
        &self,
        raw: &str,
        hash: TokenHash,
        token: AccessToken,
        issuer: &Arc<crate::keys::Issuer>,
        epoch: u64,
        until: i64,
        now: i64,
    ) -> Arc<Verified> {
        let pipeline = self.pipelines.get(&token.iss).cloned().unwrap_or_default();
        let verified = Arc::new(Verified {
            revocation_keys: TokenKeys::of_access_token(&TokenHash::identity(raw), &token),
            precomputed: pipeline.precompute(&token),
            subject_key: token
                .sub
                .as_deref()
                .map(|sub| SubjectKey::new(&token.iss, sub)),
            pipeline,
            token: Arc::new(token),
        });
        self.cache
            .insert(hash, verified.clone(), issuer.clone(), epoch, until, now);
        verified
    }
}
