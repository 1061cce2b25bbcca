//! Opaque tokens (anything that is not a JWS): asked of their issuer's own RFC 7662
//! endpoint. This module owns the endpoint's settings, the call, the reading of its
//! answer into an [`AccessToken`], and the short memory of tokens it called inactive.

use std::{sync::Arc, time::Duration};

use serde_json::{Map, Value};

use crate::keys::Issuer;
use crate::outbound::{self, OutboundError};
use crate::token::{AccessToken, Reason, Rejection, TokenHash};
use crate::ttl_map::TtlMap;

/// Largest answer read from an introspection endpoint.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long an opaque token every endpoint called inactive is answered without asking
/// again (at most each endpoint's `cache_secs`): a flood of unknown tokens costs the
/// issuers one call each per few seconds, not one per request.
const INACTIVE_SECS: i64 = 10;
/// Most such tokens remembered.
const MAX_INACTIVE: usize = 100_000;

const INACTIVE_AT_ISSUER: Rejection = Rejection::new(
    Reason::InactiveAtIssuer,
    "the issuer's introspection endpoint calls it inactive",
);
const NO_ENDPOINT: Rejection = Rejection::new(
    Reason::UnknownIssuer,
    "opaque token, and no issuer's introspection endpoint takes it",
);

/// An issuer's RFC 7662 endpoint.
#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    /// Opaque tokens that start with one of these go to this endpoint and no other. An
    /// issuer without prefixes gets the tokens no prefix claims.
    pub prefixes: Vec<String>,
    /// HTTP Basic credentials (client id, secret), if the endpoint wants them.
    pub credentials: Option<(String, String)>,
    /// Longest time an active answer is reused (never past its `exp`).
    pub cache_secs: i64,
    pub timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    // The client secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("prefixes", &self.prefixes)
            .field("client_id", &self.credentials.as_ref().map(|(id, _)| id))
            .field("cache_secs", &self.cache_secs)
            .finish_non_exhaustive()
    }
}

/// Why an endpoint could not decide (down, slow, nonsense).
#[derive(Debug, thiserror::Error)]
pub enum OpaqueError {
    #[error("the introspection endpoint of {iss:?} failed: {source}")]
    Outbound {
        iss: String,
        #[source]
        source: OutboundError,
    },
    #[error("the introspection endpoint of {iss:?} answered without a boolean `active`")]
    NoActiveMember { iss: String },
}

/// What the endpoints made of a token.
#[derive(Debug)]
pub enum Answer {
    Active {
        token: Box<AccessToken>,
        issuer: Arc<Issuer>,
        /// The issuer's key epoch before asking (for the cache's bookkeeping).
        epoch: u64,
        /// Until when the answer may be reused.
        until: i64,
    },
    Inactive(Rejection),
}

/// Routes opaque tokens to their issuer's endpoint, and remembers for a moment what
/// the endpoints called inactive.
pub struct OpaqueIntrospector {
    /// (prefix, issuer), longest prefix first.
    prefixed: Vec<(String, Arc<Issuer>)>,
    /// Issuers without prefixes, in configuration order: they get the tokens no prefix
    /// claims (configuration allows several only when the operator opted in).
    unprefixed: Vec<Arc<Issuer>>,
    inactive: TtlMap<TokenHash, (), crate::digest::DigestHashing>,
}

impl OpaqueIntrospector {
    /// Routes to the endpoints of `issuers` (those without one are ignored).
    pub fn new(issuers: &[Arc<Issuer>]) -> Self {
        let mut prefixed = Vec::new();
        let mut unprefixed = Vec::new();
        for issuer in issuers {
            let Some(endpoint) = &issuer.opaque else {
                continue;
            };
            if endpoint.prefixes.is_empty() {
                unprefixed.push(issuer.clone());
            }
            for prefix in &endpoint.prefixes {
                prefixed.push((prefix.clone(), issuer.clone()));
            }
        }
        prefixed.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self {
            prefixed,
            unprefixed,
            inactive: TtlMap::new(MAX_INACTIVE),
        }
    }

    /// The issuers a token may be sent to: the one whose prefix it carries, or else
    /// those without prefixes. A token never reaches any other issuer, who could replay
    /// it.
    fn route(&self, raw: &str) -> &[Arc<Issuer>] {
        match self
            .prefixed
            .iter()
            .find(|(prefix, _)| raw.starts_with(prefix.as_str()))
        {
            Some((_, issuer)) => std::slice::from_ref(issuer),
            None => &self.unprefixed,
        }
    }

    /// Asks the token's issuer (or, where configured, each unprefixed issuer in order
    /// until one calls it active). An endpoint that cannot answer makes it an error,
    /// never `active: false`.
    pub async fn introspect(
        &self,
        raw: &str,
        hash: &TokenHash,
        now: i64,
    ) -> Result<Answer, OpaqueError> {
        let issuers = self.route(raw);
        if self.inactive.get(hash, now).is_some() {
            return Ok(Answer::Inactive(INACTIVE_AT_ISSUER));
        }
        let mut remember_inactive = INACTIVE_SECS;
        for issuer in issuers {
            let Some(endpoint) = &issuer.opaque else {
                continue;
            };
            let epoch = issuer.epoch();
            let Some(members) = ask(issuer, endpoint, raw).await? else {
                remember_inactive = remember_inactive.min(endpoint.cache_secs);
                continue;
            };
            // The answer is reused no longer than the endpoint allows (`exp`) and than
            // configured, so a revocation at the issuer shows within that time.
            let horizon = now.saturating_add(endpoint.cache_secs);
            let token = match AccessToken::from_introspection(members, &issuer.policy, horizon, now)
            {
                Ok(token) => token,
                Err(rejection) => return Ok(Answer::Inactive(rejection)),
            };
            if token.exp <= now {
                return Ok(Answer::Inactive(Rejection::new(
                    Reason::Expired,
                    "exp has passed",
                )));
            }
            let until = token.exp.min(horizon);
            return Ok(Answer::Active {
                token: Box::new(token),
                issuer: issuer.clone(),
                epoch,
                until,
            });
        }
        if issuers.is_empty() {
            return Ok(Answer::Inactive(NO_ENDPOINT));
        }
        self.inactive
            .insert(*hash, (), now.saturating_add(remember_inactive), now);
        Ok(Answer::Inactive(INACTIVE_AT_ISSUER))
    }

    pub fn purge_expired(&self, now: i64) {
        self.inactive.purge_expired(now);
    }
}

/// The endpoint's answer: `Some(members)` for an active token, `None` for an inactive
/// one.
async fn ask(
    issuer: &Issuer,
    endpoint: &Endpoint,
    token: &str,
) -> Result<Option<Map<String, Value>>, OpaqueError> {
    let iss = || issuer.policy.issuer.clone();
    let _slot = issuer
        .budget()
        .spend()
        .map_err(|source| OpaqueError::Outbound { iss: iss(), source })?;
    let mut request = issuer
        .http()
        .post(&endpoint.url)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&[("token", token), ("token_type_hint", "access_token")]);
    if let Some((id, secret)) = &endpoint.credentials {
        request = request.basic_auth(id, Some(secret));
    }
    let answer = outbound::json_object(request, endpoint.timeout, MAX_ANSWER_BYTES)
        .await
        .map_err(|source| OpaqueError::Outbound { iss: iss(), source })?;
    members_if_active(answer).ok_or_else(|| OpaqueError::NoActiveMember { iss: iss() })
}

/// An RFC 7662 answer: `Some(Some(members))` for an active token, `Some(None)` for an
/// inactive one, `None` for an answer without a boolean `active`.
pub fn members_if_active(mut answer: Map<String, Value>) -> Option<Option<Map<String, Value>>> {
    match answer.remove("active") {
        Some(Value::Bool(true)) => Some(Some(answer)),
        Some(Value::Bool(false)) => Some(None),
        _ => None,
    }
}
