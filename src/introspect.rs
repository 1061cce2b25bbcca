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

use bytes::Bytes;

use crate::binding::{Binder, dpop};
use crate::cache::{KeptAnswers, Origin, Verified, VerifiedCache};
use crate::enrich::{EnrichError, Enrichment, Pipeline, SubjectClaims, SubjectKey};
use crate::keys::Issuers;
use crate::opaque::{Answer, OpaqueError, OpaqueIntrospector};
use crate::revocation::{Incomplete, RevocationSet, TokenKeys};
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
    /// A fresh DPoP server nonce, where nonces are required and the call used DPoP.
    pub dpop_nonce: Option<String>,
    /// The verification an active answer came from, for what it keeps per token.
    verified: Option<Arc<Verified>>,
}

impl Introspection {
    pub fn is_active(&self) -> bool {
        self.outcome.is_ok()
    }

    /// RFC 7662 section 2.2: members at the top level, the token's other claims beside
    /// them (never replacing a member), then enrichment claims (which replace a member
    /// only where their enricher is configured to); an inactive token is
    /// `{"active": false}` and nothing else.
    pub fn rfc7662(&self) -> serde_json::Value {
        let Ok(token) = &self.outcome else {
            return serde_json::json!({ "active": false });
        };
        let mut out = token.to_json();
        out.extend(self.enrichment.merged());
        out.insert("active".into(), serde_json::Value::Bool(true));
        serde_json::Value::Object(out)
    }

    /// [`Self::rfc7662`] as JSON text, kept with the token where the answer does not
    /// vary by call. A DPoP nonce is not part of it (HTTP sends it as a header).
    pub fn rfc7662_json(&self) -> Arc<str> {
        let render = || Arc::<str>::from(self.rfc7662().to_string());
        match self.kept_answers() {
            Some(kept) => kept.rfc7662_json.get_or_init(render).clone(),
            None => render(),
        }
    }

    /// The answer as the gRPC surface's `encode` renders it, kept with the token where
    /// the answer, the DPoP nonce included, does not vary by call.
    pub fn encoded_answer(&self, encode: impl FnOnce(&Self) -> Bytes) -> Bytes {
        match self.kept_answers() {
            Some(kept) if self.dpop_nonce.is_none() => {
                kept.encoded.get_or_init(|| encode(self)).clone()
            }
            _ => encode(self),
        }
    }

    /// The gateway's allow as Envoy's ext_authz surface's `encode` renders it, kept with
    /// the token where the answer does not vary by call. Only an active answer has an
    /// allow; a route's policy, a binding or a revocation makes the answer inactive, and
    /// an inactive answer keeps nothing.
    pub fn encoded_allow(&self, encode: impl FnOnce(&Self) -> Bytes) -> Bytes {
        match self.kept_answers() {
            Some(kept) => kept.encoded_allow.get_or_init(|| encode(self)).clone(),
            None => encode(self),
        }
    }

    /// Where an active answer without enrichment keeps its renderings: it is the same for
    /// every call on its token, but for a DPoP nonce.
    fn kept_answers(&self) -> Option<&KeptAnswers> {
        match &self.verified {
            Some(verified) if self.is_active() && self.enrichment.is_empty() => {
                Some(&verified.kept_answers)
            }
            _ => None,
        }
    }
}

/// Cases where the service cannot decide; an invalid token is never one of them.
#[derive(Debug, thiserror::Error)]
pub enum IntrospectError {
    #[error("the keys of issuer {0:?} have not loaded yet")]
    KeysNotReady(String),
    /// The revocation set is still loading: a revoked token could look active.
    #[error(transparent)]
    RevocationsIncomplete(#[from] Incomplete),
    /// An issuer's introspection endpoint could not answer for an opaque token.
    #[error(transparent)]
    Upstream(#[from] Arc<OpaqueError>),
    /// A fail-closed enricher could not answer.
    #[error(transparent)]
    Enrichment(#[from] EnrichError),
}

/// What verifying a token (signature and issuer rules, or the issuer's endpoint) gave,
/// before revocation and the call's own policy.
#[derive(Debug)]
pub enum Verification {
    Active(Arc<Verified>),
    Inactive(Rejection),
    Undecided(IntrospectError),
}

impl Verification {
    /// The next step, for an active token only.
    fn and_then(self, next: impl FnOnce(Arc<Verified>) -> Verification) -> Verification {
        match self {
            Self::Active(verified) => next(verified),
            other => other,
        }
    }
}

impl From<Rejection> for Verification {
    fn from(rejection: Rejection) -> Self {
        Self::Inactive(rejection)
    }
}

pub struct Introspector {
    issuers: Arc<Issuers>,
    revocations: Arc<RevocationSet>,
    subjects: Arc<SubjectClaims>,
    /// Enrichment pipeline by issuer.
    pipelines: HashMap<String, Arc<Pipeline>>,
    opaque: OpaqueIntrospector,
    cache: VerifiedCache,
    max_token_bytes: usize,
    binder: Binder,
}

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
            opaque: OpaqueIntrospector::new(issuers.with_opaque_introspection()),
            issuers,
            revocations,
            subjects,
            pipelines,
            cache: VerifiedCache::new(cache_max_entries),
            max_token_bytes,
            binder: Binder::new(dpop::Settings::default()),
        }
    }

    /// How DPoP proofs are checked (the defaults otherwise).
    pub fn with_dpop(mut self, settings: dpop::Settings) -> Self {
        self.binder = Binder::new(settings);
        self
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

    /// Drops cached verifications and remembered inactive answers whose time is up.
    pub fn purge_expired(&self, now: i64) {
        self.cache.purge_expired(now);
        self.opaque.purge_expired(now);
        self.binder.dpop().purge_expired(now);
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
        let verification = match cached {
            Some(hit) => Verification::Active(hit),
            // Boxed: the verification's state (key refetch, the issuer's endpoint) is
            // kilobytes, which every cache hit would otherwise carry and move.
            None => Box::pin(self.verify(token, hash, now)).await,
        };
        let checked =
            match verification.and_then(|verified| self.check(verified, &hash, &policy, now)) {
                Verification::Active(verified) => Ok(verified),
                Verification::Inactive(rejection) => Err(rejection),
                Verification::Undecided(error) => return Err(error),
            };
        // Only active answers are enriched: no lookup ever runs for an inactive token.
        let mut kept = None;
        let (outcome, enrichment) = match checked {
            Ok(verified) => {
                let local = verified.pipeline.enrich_locally(
                    &verified.precomputed,
                    verified.subject_key.as_ref(),
                    &self.subjects,
                );
                let enrichment = match local {
                    Some(enrichment) => enrichment,
                    // Boxed, like the verification: a remote lookup's state is large.
                    None => Box::pin(self.enrich(&verified, now)).await?,
                };
                let token = verified.token.clone();
                kept = Some(verified);
                (Ok(token), enrichment)
            }
            Err(rejection) => (Err(rejection), Enrichment::default()),
        };
        let fingerprint = hash.fingerprint();
        if let Err(rejection) = &outcome {
            tracing::debug!(%fingerprint, reason = %rejection.reason, detail = rejection.detail, "token inactive");
        }
        let dpop = self.binder.dpop();
        let used_dpop = policy.presented.dpop_proof.is_some()
            || matches!(&outcome, Err(r) if r.reason == Reason::DpopProofRequired);
        Ok(Introspection {
            fingerprint,
            outcome,
            enrichment,
            cache_hit,
            dpop_nonce: (dpop.requires_nonce() && used_dpop).then(|| dpop.nonce(now)),
            verified: kept,
        })
    }

    /// What is checked on every answer, cache hits included: revocation, what this call
    /// asks, then the proof of possession of a sender-constrained token.
    fn check(
        &self,
        verified: Arc<Verified>,
        hash: &TokenHash,
        policy: &CallPolicy<'_>,
        now: i64,
    ) -> Verification {
        match self.revocations.check(&verified.revocation_keys) {
            Err(incomplete) => Verification::Undecided(incomplete.into()),
            Ok(Some(matched)) => {
                tracing::debug!(record = matched.kind.as_str(), "revoked");
                Rejection::new(Reason::Revoked, "a revocation record matches").into()
            }
            Ok(None) => match policy.check(&verified.token).and_then(|()| {
                self.binder.check(
                    &verified.token,
                    verified.has_confirmation,
                    hash,
                    &policy.presented,
                    now,
                )
            }) {
                Ok(()) => Verification::Active(verified),
                Err(rejection) => rejection.into(),
            },
        }
    }

    async fn enrich(&self, verified: &Verified, now: i64) -> Result<Enrichment, EnrichError> {
        verified
            .pipeline
            .enrich(
                &verified.token,
                &verified.precomputed,
                verified.subject_key.as_ref(),
                &self.subjects,
                now,
            )
            .await
    }

    /// Verifies a token the cache did not have, and caches what is active.
    async fn verify(&self, raw: &str, hash: TokenHash, now: i64) -> Verification {
        let jwt = match token::classify(raw, self.max_token_bytes) {
            Ok(token::Classified::Jws(jwt)) => jwt,
            Ok(token::Classified::Opaque) => return self.verify_opaque(raw, hash, now).await,
            Err(rejection) => return rejection.into(),
        };
        let Some(issuer) = jwt.issuer().and_then(|iss| self.issuers.get(iss)) else {
            return Rejection::new(
                Reason::UnknownIssuer,
                "iss is missing or not a configured issuer",
            )
            .into();
        };
        // Read the epoch before the keys: a key dropped in between makes the entry stale
        // rather than wrongly fresh.
        let epoch = issuer.epoch();
        let not_ready =
            || Verification::Undecided(IntrospectError::KeysNotReady(issuer.policy.issuer.clone()));
        let Some(keys) = issuer.keys() else {
            return not_ready();
        };
        let mut checked = jwt.check_signature(&issuer.policy, &keys);
        // An unknown kid, or a known one whose keys do not verify: the issuer may have
        // published a key since (another type under that kid, or the kid re-keyed).
        // The refetch is rate-limited and shared, so forged tokens cannot hammer the
        // issuer.
        if matches!(checked, Err(r) if matches!(r.reason, Reason::UnknownKey | Reason::BadSignature))
        {
            issuer.refetch_now().await;
            let Some(keys) = issuer.keys() else {
                return not_ready();
            };
            checked = jwt.check_signature(&issuer.policy, &keys);
        }
        if let Err(rejection) = checked {
            return rejection.into();
        }
        match jwt.into_access_token(&issuer.policy, now) {
            Ok(token) => {
                let origin = Origin {
                    issuer: issuer.clone(),
                    epoch,
                    until: token.exp,
                };
                Verification::Active(self.remember(raw, hash, token, origin, now))
            }
            Err(rejection) => rejection.into(),
        }
    }

    async fn verify_opaque(&self, raw: &str, hash: TokenHash, now: i64) -> Verification {
        match self.opaque.introspect(raw, &hash, now).await {
            Ok(Answer::Active {
                token,
                issuer,
                epoch,
                until,
            }) => {
                let origin = Origin {
                    issuer,
                    epoch,
                    until,
                };
                Verification::Active(self.remember(raw, hash, *token, origin, now))
            }
            Ok(Answer::Inactive(rejection)) => rejection.into(),
            Err(error) => Verification::Undecided(error.into()),
        }
    }

    /// Derives what a verified token needs on every answer, and caches it.
    fn remember(
        &self,
        raw: &str,
        hash: TokenHash,
        token: AccessToken,
        origin: Origin,
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
            has_confirmation: crate::binding::has_confirmation(&token),
            pipeline,
            token: Arc::new(token),
            kept_answers: Default::default(),
        });
        self.cache.insert(hash, verified.clone(), origin, now);
        verified
    }
}

#[cfg(test)]
mod tests;
