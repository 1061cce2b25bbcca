//! Opaque tokens (anything that is not a JWS): asked of their issuer's own RFC 7662
//! endpoint. This module owns the endpoint's settings, the call, the reading of its
//! answer into an [`AccessToken`], and the short memory of tokens it called inactive.

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;
use serde_json::{Map, Value};

use crate::keys::Issuer;
use crate::outbound::{self, OutboundError};
use crate::token::{AccessToken, Reason, Rejection, TokenHash};
use crate::ttl_map::TtlMap;

/// Largest answer read from an introspection endpoint.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long an opaque token every endpoint called inactive (or active, but refused by
/// the access-token rules) is answered without asking again (at most each endpoint's
/// `cache_secs` and `Cache-Control`): a flood of unknown tokens costs the issuers one
/// call each per few seconds, not one per request.
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

impl OpaqueError {
    /// Not asked at all: this issuer's outbound budget is spent.
    pub fn over_budget(&self) -> bool {
        matches!(
            self,
            Self::Outbound {
                source: OutboundError::OverBudget,
                ..
            }
        )
    }
}

/// What the endpoints made of a token.
#[derive(Debug, Clone)]
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
    /// What the endpoints called inactive, or active but the rules refused, by token.
    inactive: TtlMap<TokenHash, Rejection, crate::digest::DigestHashing>,
    /// Lookups in progress, by token.
    in_flight: DashMap<TokenHash, Arc<Lookup>, crate::digest::DigestHashing>,
}

/// One lookup's outcome, shared by every call that asked for the token meanwhile.
type Lookup = tokio::sync::OnceCell<Result<Answer, Arc<OpaqueError>>>;

/// Ends a lookup's sharing when a caller is done with it (answered, or cancelled): a
/// later call asks again (or finds the answer cached), never reads an old outcome.
struct InFlight<'a> {
    lookups: &'a DashMap<TokenHash, Arc<Lookup>, crate::digest::DigestHashing>,
    hash: TokenHash,
    lookup: &'a Arc<Lookup>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Done: later calls ask again (or find the answer cached). Not done: a caller
        // that went away leaves the lookup to those still waiting (one of them takes
        // it over), unless it was the last (the map and this caller hold it), so
        // cancelled lookups do not pile up. The shard lock keeps new waiters out
        // meanwhile.
        self.lookups.remove_if(&self.hash, |_, lookup| {
            Arc::ptr_eq(lookup, self.lookup)
                && (lookup.initialized() || Arc::strong_count(lookup) <= 2)
        });
    }
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
            in_flight: DashMap::default(),
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
    /// never `active: false`. A token asked for again while its issuer is being asked
    /// waits for that answer rather than asking too (a burst of one new token costs the
    /// issuer one call, not one per request, nor the outbound budget of the others).
    pub async fn introspect(
        &self,
        raw: &str,
        hash: &TokenHash,
        now: i64,
    ) -> Result<Answer, Arc<OpaqueError>> {
        let lookup = self.in_flight.entry(*hash).or_default().clone();
        let _done = InFlight {
            lookups: &self.in_flight,
            hash: *hash,
            lookup: &lookup,
        };
        // Whoever gets here first asks; if that caller goes away (its call cancelled),
        // the next waiting one asks instead.
        lookup
            .get_or_init(|| async { self.look_up(raw, hash, now).await.map_err(Arc::new) })
            .await
            .clone()
    }

    async fn look_up(&self, raw: &str, hash: &TokenHash, now: i64) -> Result<Answer, OpaqueError> {
        let issuers = self.route(raw);
        if let Some(rejection) = self.inactive.get(hash, now) {
            return Ok(Answer::Inactive(rejection));
        }
        let mut remember_inactive = INACTIVE_SECS;
        for issuer in issuers {
            let Some(endpoint) = &issuer.opaque else {
                continue;
            };
            let epoch = issuer.epoch();
            let (members, max_age) = ask(issuer, endpoint, raw).await?;
            // An answer is reused no longer than configured, than its `Cache-Control`
            // allows and than its `exp`, so a revocation at the issuer shows within that.
            let keep_secs = max_age.map_or(endpoint.cache_secs, |max_age| {
                endpoint
                    .cache_secs
                    .min(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX))
            });
            let Some(members) = members else {
                remember_inactive = remember_inactive.min(keep_secs);
                continue;
            };
            let horizon = now.saturating_add(keep_secs);
            let token = match AccessToken::from_introspection(members, &issuer.policy, horizon, now)
            {
                Ok(token) => token,
                Err(rejection) => {
                    // Active at the issuer, refused by the access-token rules (a refresh
                    // token, another audience): remembered as an inactive answer is, so
                    // that repeats do not reach the issuer each time; not a token refused
                    // for an `nbf` or `iat` ahead, which time will change.
                    if rejection.reason != Reason::NotYetValid {
                        let until = now.saturating_add(INACTIVE_SECS.min(keep_secs));
                        self.inactive.insert(*hash, rejection, until, now);
                    }
                    return Ok(Answer::Inactive(rejection));
                }
            };
            // Past `exp` within the leeway it is active, as a JWT is, and not kept.
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
        self.inactive.insert(
            *hash,
            INACTIVE_AT_ISSUER,
            now.saturating_add(remember_inactive),
            now,
        );
        Ok(Answer::Inactive(INACTIVE_AT_ISSUER))
    }

    pub fn purge_expired(&self, now: i64) {
        self.inactive.purge_expired(now);
    }
}

/// The endpoint's answer, `Some(members)` for an active token, `None` for an inactive
/// one, and how long its `Cache-Control` lets it be kept, where it says.
async fn ask(
    issuer: &Issuer,
    endpoint: &Endpoint,
    token: &str,
) -> Result<(Option<Map<String, Value>>, Option<Duration>), OpaqueError> {
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
        // RFC 6749 section 2.3.1: each form-urlencoded before Basic joins them, so a
        // secret with `:`, `%` or `+` reaches an issuer that decodes them as it was.
        let encoded =
            |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        request = request.basic_auth(encoded(id), Some(encoded(secret)));
    }
    let (answer, max_age) = outbound::json_object(request, endpoint.timeout, MAX_ANSWER_BYTES)
        .await
        .map_err(|source| OpaqueError::Outbound { iss: iss(), source })?;
    let members =
        members_if_active(answer).ok_or_else(|| OpaqueError::NoActiveMember { iss: iss() })?;
    Ok((members, max_age))
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
