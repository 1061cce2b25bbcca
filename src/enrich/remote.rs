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

use dashmap::DashMap;
use serde_json::{Map, Value};

use super::{OnError, RemoteSection, SubjectKey, check_claims};
use crate::outbound;
use crate::token::AccessToken;

/// Most subjects whose answers are kept; beyond it the cache is cleared and refilled.
const MAX_CACHED_SUBJECTS: usize = 100_000;
/// How long a failure keeps the breaker open: lookups fail at once meanwhile.
const BREAKER_SECS: i64 = 5;

/// What a lookup gave.
#[derive(Debug)]
pub enum Lookup {
    Fetched(Arc<Map<String, Value>>),
    /// Not asked: the service failed moments ago (the breaker is open).
    Skipped,
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
    /// subject → (expires at, claims as they are served).
    cache: DashMap<SubjectKey, (i64, Arc<Map<String, Value>>)>,
    failures: AtomicU64,
    /// Unix seconds until which lookups are skipped after a failure.
    open_until: AtomicI64,
}

impl RemoteEnricher {
    pub fn new(
        index: usize,
        section: &RemoteSection,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        if !crate::config::is_http_url(&section.url) {
            return Err("url is not an http(s) URL".into());
        }
        if section.timeout_ms == 0 {
            return Err("timeout_ms must be positive".into());
        }
        Ok(Self {
            name: format!("remote[{index}]"),
            url: section.url.clone(),
            timeout: Duration::from_millis(section.timeout_ms),
            cache_ttl_secs: i64::try_from(section.cache_ttl_secs).unwrap_or(i64::MAX),
            max_response_bytes: section.max_response_bytes,
            fail_closed: section.on_error == OnError::Closed,
            http,
            cache: DashMap::new(),
            failures: AtomicU64::new(0),
            open_until: AtomicI64::new(0),
        })
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
    ) -> Result<Lookup, String> {
        if let Some(key) = subject
            && let Some(hit) = self.cache.get(key)
            && hit.0 > now
        {
            return Ok(Lookup::Fetched(hit.1.clone()));
        }
        if self.open_until.load(Ordering::Relaxed) > now {
            return Ok(Lookup::Skipped);
        }
        let claims = match self.fetch(token).await {
            Ok(claims) => Arc::new(filter(claims)),
            Err(detail) => {
                self.open_until
                    .store(now.saturating_add(BREAKER_SECS), Ordering::Relaxed);
                return Err(detail);
            }
        };
        if let Some(key) = subject
            && self.cache_ttl_secs > 0
        {
            if self.cache.len() >= MAX_CACHED_SUBJECTS {
                self.cache.clear();
            }
            self.cache.insert(
                *key,
                (now.saturating_add(self.cache_ttl_secs), claims.clone()),
            );
        }
        Ok(Lookup::Fetched(claims))
    }

    async fn fetch(&self, token: &AccessToken) -> Result<Map<String, Value>, String> {
        let request = self.http.post(&self.url).json(&token.to_json());
        let claims = outbound::json_object(request, self.timeout, self.max_response_bytes)
            .await
            .map_err(|e| e.to_string())?;
        check_claims(&claims)?;
        Ok(claims)
    }
}
