//! Enrichment: claims added to an active answer, so services stop asking a user
//! database on every request.
//!
//! Each issuer has a pipeline of enrichers, run in order on every active answer (never on
//! an inactive one), each producing one layer of claims:
//!
//! - `static`: fixed claims when conditions on the client, scopes or audience hold;
//! - `mapping`: token claims renamed or copied, a namespace prefix stripped, a string
//!   split into a list, a nested member picked;
//! - `subject`: claims set per subject through the admin API, kept in the state log;
//! - `remote`: an HTTP lookup with a timeout, a cache per subject, fail-open or closed.
//!
//! Static and mapping layers depend on the token alone and are computed once, when the
//! token is verified, and cached with it; subject and remote layers are read on every
//! answer, so a changed subject claim shows at once, cached tokens included. Layers
//! merge in pipeline order: a later enricher's claim replaces an earlier one's. No
//! enricher writes a registered claim (`iss`, `sub`, `scope`, ...) unless configured
//! with `overwrite_registered = true`.

mod admin;
mod remote;
mod subject;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::token::AccessToken;

pub use admin::{ClaimsAdmin, ClaimsError};
pub use remote::{Lookup, RemoteEnricher};
pub use subject::{SubjectClaims, SubjectKey};

/// Claims an enricher may not write unless told to.
pub const REGISTERED: &[&str] = &[
    "active",
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "scope",
    "client_id",
    "token_type",
    "username",
];
/// Deepest nesting of an enrichment value (objects and arrays).
pub const MAX_DEPTH: usize = 8;
/// Largest enrichment layer, serialized.
pub const MAX_LAYER_BYTES: usize = 16 * 1024;

// === configuration ===

/// One `[[issuers.enrich]]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnricherSection {
    Static(StaticSection),
    Mapping(MappingSection),
    Subject(SubjectSection),
    Remote(RemoteSection),
}

/// Conditions of a static enricher: each given list must contain a value of the token
/// (its client, one of its scopes, one of its audiences). No condition: always.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct When {
    pub client_id: Vec<String>,
    pub scope: Vec<String>,
    pub audience: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticSection {
    pub claims: Map<String, Value>,
    pub when: When,
    pub overwrite_registered: bool,
}

/// One mapping rule: either `strip_prefix` alone, or `from`/`from_path` → `to`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingRule {
    /// A claim name, taken literally (names like `https://example.com/roles` contain dots).
    pub from: Option<String>,
    /// A dotted path into nested objects, e.g. `realm_access.roles`.
    pub from_path: Option<String>,
    pub to: Option<String>,
    /// Split a string value on this separator into a list (e.g. " ").
    pub split: Option<String>,
    /// Every claim whose name starts with this prefix, under the rest of its name.
    pub strip_prefix: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingSection {
    pub rules: Vec<MappingRule>,
    pub overwrite_registered: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubjectSection {
    pub overwrite_registered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Answer without this enricher's claims (counted in a metric).
    #[default]
    Open,
    /// Answer UNAVAILABLE.
    Closed,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteSection {
    /// Receives a POST of the validated claims (JSON) and answers a JSON object of claims.
    pub url: String,
    pub timeout_ms: u64,
    /// How long an answer is reused for the same subject; 0: never.
    pub cache_ttl_secs: u64,
    pub max_response_bytes: usize,
    pub on_error: OnError,
    pub overwrite_registered: bool,
}

impl Default for RemoteSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout_ms: 200,
            cache_ttl_secs: 60,
            max_response_bytes: 64 * 1024,
            on_error: OnError::Open,
            overwrite_registered: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnrichConfigError {
    #[error("{0}")]
    Invalid(String),
}

// === the pipeline ===

/// Whether a layer may carry registered claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Guard {
    overwrite_registered: bool,
}

impl Guard {
    fn keep(self, name: &str) -> bool {
        self.overwrite_registered || !REGISTERED.contains(&name)
    }

    fn filter(self, mut claims: Map<String, Value>) -> Map<String, Value> {
        if !self.overwrite_registered {
            claims.retain(|name, _| self.keep(name));
        }
        claims
    }
}

#[derive(Debug)]
enum Stage {
    Static {
        claims: Arc<Map<String, Value>>,
        when: When,
    },
    Mapping(Vec<MappingRule>),
    Subject,
    Remote(RemoteEnricher),
}

#[derive(Debug)]
struct Enricher {
    stage: Stage,
    guard: Guard,
}

/// One issuer's enrichers, in order.
#[derive(Debug, Default)]
pub struct Pipeline {
    enrichers: Vec<Enricher>,
}

/// Why an answer cannot be given: a fail-closed enricher failed.
#[derive(Debug, thiserror::Error)]
#[error("enricher {name} failed: {detail}")]
pub struct EnrichError {
    pub name: String,
    pub detail: String,
}

/// The claims an answer gains, as layers in pipeline order (later wins when merged).
#[derive(Debug, Clone, Default)]
pub struct Enrichment {
    layers: Vec<Arc<Map<String, Value>>>,
}

impl Enrichment {
    pub fn is_empty(&self) -> bool {
        self.layers.iter().all(|layer| layer.is_empty())
    }

    /// The layers merged: a later enricher's claim replaces an earlier one's.
    pub fn merged(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for layer in &self.layers {
            for (name, value) in layer.iter() {
                out.insert(name.clone(), value.clone());
            }
        }
        out
    }
}

/// The token-only layers, computed once per verified token (`None` for enrichers that
/// run per answer).
pub type Precomputed = Vec<Option<Arc<Map<String, Value>>>>;

impl Pipeline {
    pub fn new(
        sections: &[EnricherSection],
        http: &reqwest::Client,
    ) -> Result<Self, EnrichConfigError> {
        let invalid =
            |i: usize, why: String| EnrichConfigError::Invalid(format!("enrich[{i}]: {why}"));
        let mut enrichers = Vec::with_capacity(sections.len());
        for (i, section) in sections.iter().enumerate() {
            let enricher = match section {
                EnricherSection::Static(s) => {
                    check_claims(&s.claims).map_err(|why| invalid(i, format!("claims: {why}")))?;
                    let guard = Guard {
                        overwrite_registered: s.overwrite_registered,
                    };
                    if let Some(name) = s.claims.keys().find(|name| !guard.keep(name)) {
                        return Err(invalid(
                            i,
                            format!(
                                "claims: {name:?} is a registered claim; set overwrite_registered = true to write it"
                            ),
                        ));
                    }
                    Enricher {
                        stage: Stage::Static {
                            claims: Arc::new(s.claims.clone()),
                            when: s.when.clone(),
                        },
                        guard,
                    }
                }
                EnricherSection::Mapping(m) => {
                    for (r, rule) in m.rules.iter().enumerate() {
                        let sources = usize::from(rule.from.is_some())
                            + usize::from(rule.from_path.is_some());
                        let valid = match &rule.strip_prefix {
                            Some(prefix) => !prefix.is_empty() && sources == 0 && rule.to.is_none(),
                            None => {
                                sources == 1 && rule.to.as_deref().is_some_and(|to| !to.is_empty())
                            }
                        };
                        if !valid {
                            return Err(invalid(
                                i,
                                format!(
                                    "rules[{r}]: give `strip_prefix` alone, or one of `from`/`from_path` with `to`"
                                ),
                            ));
                        }
                    }
                    Enricher {
                        stage: Stage::Mapping(m.rules.clone()),
                        guard: Guard {
                            overwrite_registered: m.overwrite_registered,
                        },
                    }
                }
                EnricherSection::Subject(s) => Enricher {
                    stage: Stage::Subject,
                    guard: Guard {
                        overwrite_registered: s.overwrite_registered,
                    },
                },
                EnricherSection::Remote(r) => Enricher {
                    stage: Stage::Remote(
                        RemoteEnricher::new(i, r, http.clone()).map_err(|why| invalid(i, why))?,
                    ),
                    guard: Guard {
                        overwrite_registered: r.overwrite_registered,
                    },
                },
            };
            enrichers.push(enricher);
        }
        Ok(Self { enrichers })
    }

    pub fn is_empty(&self) -> bool {
        self.enrichers.is_empty()
    }

    /// The layers that depend on the token alone.
    pub fn precompute(&self, token: &AccessToken) -> Precomputed {
        self.enrichers
            .iter()
            .map(|enricher| match &enricher.stage {
                Stage::Static { claims, when } => Some(if applies(when, token) {
                    claims.clone()
                } else {
                    Arc::new(Map::new())
                }),
                Stage::Mapping(rules) => {
                    Some(Arc::new(enricher.guard.filter(map_claims(rules, token))))
                }
                Stage::Subject | Stage::Remote(_) => None,
            })
            .collect()
    }

    /// Every layer for one answer: the precomputed ones, the subject's current claims,
    /// and remote lookups. A failing fail-open remote enricher is left out; a failing
    /// fail-closed one fails the answer.
    pub async fn enrich(
        &self,
        token: &AccessToken,
        precomputed: &Precomputed,
        subject: Option<&SubjectKey>,
        subjects: &SubjectClaims,
        now: i64,
    ) -> Result<Enrichment, EnrichError> {
        let mut layers = Vec::with_capacity(self.enrichers.len());
        for (i, enricher) in self.enrichers.iter().enumerate() {
            match &enricher.stage {
                Stage::Static { .. } | Stage::Mapping(_) => {
                    if let Some(Some(layer)) = precomputed.get(i) {
                        layers.push(layer.clone());
                    }
                }
                Stage::Subject => {
                    let stored = subject.and_then(|key| subjects.get(key));
                    if let Some(stored) = stored {
                        layers.push(if enricher.guard.overwrite_registered {
                            stored.all
                        } else {
                            stored.unregistered
                        });
                    }
                }
                Stage::Remote(remote) => {
                    let guard = enricher.guard;
                    let failure = match remote
                        .lookup(token, subject, |claims| guard.filter(claims), now)
                        .await
                    {
                        Ok(Lookup::Fetched(claims)) => {
                            layers.push(claims);
                            None
                        }
                        Ok(Lookup::Skipped) => {
                            Some("skipped: the service failed moments ago".to_owned())
                        }
                        Err(detail) => {
                            // Logged once per outage: later lookups are skipped by the breaker.
                            tracing::warn!(enricher = remote.name(), %detail, "remote enrichment failed");
                            Some(detail)
                        }
                    };
                    if let Some(detail) = failure {
                        remote.note_failure();
                        if remote.fails_closed() {
                            return Err(EnrichError {
                                name: remote.name().to_owned(),
                                detail,
                            });
                        }
                    }
                }
            }
        }
        Ok(Enrichment { layers })
    }

    /// (enricher name, failures) of the remote enrichers, for metrics.
    pub fn failures(&self) -> impl Iterator<Item = (&str, u64)> {
        self.enrichers
            .iter()
            .filter_map(|enricher| match &enricher.stage {
                Stage::Remote(remote) => Some((remote.name(), remote.failures())),
                _ => None,
            })
    }
}

fn applies(when: &When, token: &AccessToken) -> bool {
    let client = when.client_id.is_empty()
        || token
            .client_id
            .as_ref()
            .is_some_and(|c| when.client_id.contains(c));
    let scope = when.scope.is_empty() || token.scopes.iter().any(|s| when.scope.contains(s));
    let audience = when.audience.is_empty() || token.aud.iter().any(|a| when.audience.contains(a));
    client && scope && audience
}

/// The claim a mapping reads, from the token's claims including the members.
fn lookup<'a>(claims: &'a Map<String, Value>, rule: &MappingRule) -> Option<&'a Value> {
    if let Some(name) = &rule.from {
        return claims.get(name);
    }
    let path = rule.from_path.as_deref()?;
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn map_claims(rules: &[MappingRule], token: &AccessToken) -> Map<String, Value> {
    let claims = token.to_json();
    let mut out = Map::new();
    for rule in rules {
        if let Some(prefix) = &rule.strip_prefix {
            for (name, value) in &claims {
                if let Some(rest) = name.strip_prefix(prefix.as_str())
                    && !rest.is_empty()
                {
                    out.insert(rest.to_owned(), value.clone());
                }
            }
            continue;
        }
        let (Some(value), Some(to)) = (lookup(&claims, rule), &rule.to) else {
            continue;
        };
        let value = match (&rule.split, value) {
            (Some(separator), Value::String(text)) => Value::Array(
                text.split(separator.as_str())
                    .filter(|part| !part.is_empty())
                    .map(|part| Value::from(part.to_owned()))
                    .collect(),
            ),
            _ => value.clone(),
        };
        out.insert(to.clone(), value);
    }
    out
}

/// Bounds on a claims value: nesting and serialized size.
pub fn check_claims(claims: &Map<String, Value>) -> Result<(), String> {
    fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    if claims.values().map(depth).max().unwrap_or(0) > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    if serde_json::to_vec(claims).map_or(usize::MAX, |bytes| bytes.len()) > MAX_LAYER_BYTES {
        return Err(format!("larger than {MAX_LAYER_BYTES} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
