//! The remote enricher: an HTTP POST of the validated claims, answered with a JSON
//! object of claims; a timeout, a bounded answer, a cache per subject, and a breaker
//! so that an outage costs one timeout, not one per answer.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::{Map, Value};

use super::{OnError, OutOfBounds, RemoteSpec, SubjectKey, check_claims};
use crate::outbound::{self, Budget, OutboundError};
use crate::token::AccessToken;
use crate::ttl_map::TtlMap;

/// Most subjects whose answers are kept.
const MAX_CACHED_SUBJECTS: usize = 100_000;
/// How long an outage keeps the breaker open: lookups fail at once meanwhile.
const BREAKER_SECS: i64 = 5;

/// Why a lookup gave no claims.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Outbound(#[from] OutboundError),
    #[error("the answer is {0}")]
    OutOfBounds(#[from] OutOfBounds),
    /// Not asked: the service failed moments ago.
    #[error("skipped: the service failed moments ago")]
    BreakerOpen,
}

impl RemoteError {
    /// Whether this says the service is down or overloaded, rather than that this one
    /// lookup failed: introspectd's own budget spent, one subject unknown to the service
    /// (a 4xx other than 429) or its answer too large. Only an outage opens the breaker,
    /// so that a burst or one subject's answer does not cost every subject its claims.
    fn is_outage(&self) -> bool {
        match self {
            Self::Outbound(OutboundError::OverBudget | OutboundError::TooLarge(_)) => false,
            Self::Outbound(OutboundError::Status(status)) => *status >= 500 || *status == 429,
            Self::Outbound(_) => true,
            Self::OutOfBounds(_) | Self::BreakerOpen => false,
        }
    }
}

#[derive(Debug)]
pub struct RemoteEnricher {
    name: String,
    url: String,
    timeout: Duration,
    cache_ttl_secs: i64,
    max_response_bytes: usize,
    fail_closed: bool,
    http: reqwest::Client,
    /// The issuer's outbound budget, shared with its introspection endpoint.
    budget: Arc<Budget>,
    /// Claims by subject, as they are served.
    cache: TtlMap<SubjectKey, Arc<Map<String, Value>>>,
    failures: AtomicU64,
    /// Unix seconds until which lookups are skipped after a failure.
    open_until: AtomicI64,
}

impl RemoteEnricher {
    pub fn new(
        index: usize,
        spec: &RemoteSpec,
        http: reqwest::Client,
        budget: Arc<Budget>,
    ) -> Self {
        Self {
            name: format!("remote[{index}]"),
            url: spec.url.clone(),
            timeout: spec.timeout,
            cache_ttl_secs: spec.cache_ttl_secs,
            max_response_bytes: spec.max_response_bytes,
            fail_closed: spec.on_error == OnError::Closed,
            http,
            budget,
            cache: TtlMap::new(MAX_CACHED_SUBJECTS),
            failures: AtomicU64::new(0),
            open_until: AtomicI64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn fails_closed(&self) -> bool {
        self.fail_closed
    }

    pub fn note_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The claims for `token`, `filter` applied once per fetch (not per answer). Answers
    /// are cached per subject; a token without `sub` (client credentials) is never cached,
    /// since its answer may depend on more than a subject.
    pub async fn lookup(
        &self,
        token: &AccessToken,
        subject: Option<&SubjectKey>,
        filter: impl FnOnce(Map<String, Value>) -> Map<String, Value>,
        now: i64,
    ) -> Result<Arc<Map<String, Value>>, RemoteError> {
        if let Some(hit) = subject.and_then(|key| self.cache.get(key, now)) {
            return Ok(hit);
        }
        if self.open_until.load(Ordering::Relaxed) > now {
            return Err(RemoteError::BreakerOpen);
        }
        let claims = match self.fetch(token).await {
            Ok(claims) => Arc::new(filter(claims)),
            Err(error) => {
                if error.is_outage() {
                    self.open_until
                        .store(now.saturating_add(BREAKER_SECS), Ordering::Relaxed);
                }
                return Err(error);
            }
        };
        if let Some(key) = subject {
            let until = now.saturating_add(self.cache_ttl_secs);
            self.cache.insert(*key, claims.clone(), until, now);
        }
        Ok(claims)
    }

    async fn fetch(&self, token: &AccessToken) -> Result<Map<String, Value>, RemoteError> {
        let _slot = self.budget.spend()?;
        let request = self.http.post(&self.url).json(&token.to_json());
        // Kept for the configured `cache_ttl_secs`, whatever the service says.
        let (claims, _) =
            outbound::json_object(request, self.timeout, self.max_response_bytes).await?;
        check_claims(&claims)?;
        Ok(claims)
    }
}
