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

use std::{sync::Arc, time::Duration};

use serde_json::{Map, Value};

use crate::outbound::Budget;
use crate::token::AccessToken;

pub use admin::{ClaimsAdmin, ClaimsError};
pub use remote::{RemoteEnricher, RemoteError};
pub use subject::{SubjectClaims, SubjectKey};

/// Claims an enricher may not write unless told to: RFC 7662's members, and the claims
/// a resource server reads as the token's binding (`cnf`, RFC 9449 section 6.2 and RFC
/// 8705), client, session, scopes or authentication.
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
    "cnf",
    "azp",
    "cid",
    "sid",
    "scp",
    "acr",
    "amr",
    "auth_time",
];
/// Deepest nesting of an enrichment value (objects and arrays).
pub const MAX_DEPTH: usize = 8;
/// Largest enrichment layer, serialized.
pub const MAX_LAYER_BYTES: usize = 16 * 1024;

// === what an enricher is ===

/// One enricher, validated.
#[derive(Debug, Clone)]
pub enum Spec {
    /// Fixed claims when `when` holds.
    Static {
        claims: Map<String, Value>,
        when: When,
        overwrite_registered: bool,
    },
    Mapping {
        rules: Vec<MappingRule>,
        overwrite_registered: bool,
    },
    /// The subject's claims as set through the admin API.
    Subject {
        overwrite_registered: bool,
    },
    Remote(RemoteSpec),
}

/// Conditions of a static enricher: each non-empty list must contain a value of the
/// token (its client, one of its scopes, one of its audiences). No condition: always.
#[derive(Debug, Clone, Default)]
pub struct When {
    pub client_id: Vec<String>,
    pub scope: Vec<String>,
    pub audience: Vec<String>,
}

/// One mapping rule.
#[derive(Debug, Clone)]
pub enum MappingRule {
    /// Every claim whose name starts with the prefix, under the rest of its name.
    StripPrefix(String),
    /// A claim copied under another name, a string optionally split into a list.
    Copy {
        from: ClaimRef,
        to: String,
        split: Option<String>,
    },
}

/// Where a mapping reads: a claim name taken literally (names like
/// `https://example.com/roles` contain dots), or a path into nested objects.
#[derive(Debug, Clone)]
pub enum ClaimRef {
    Name(String),
    Path(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Answer without this enricher's claims (counted in a metric).
    #[default]
    Open,
    /// Answer UNAVAILABLE.
    Closed,
}

/// A remote lookup: a POST of the validated claims, answered with a JSON object.
#[derive(Debug, Clone)]
pub struct RemoteSpec {
    pub url: String,
    pub timeout: Duration,
    /// How long an answer is reused for the same subject; 0: never.
    pub cache_ttl_secs: i64,
    pub max_response_bytes: usize,
    pub on_error: OnError,
    pub overwrite_registered: bool,
}

/// Whether `name` is a registered claim, which enrichers write only when allowed.
pub fn is_registered(name: &str) -> bool {
    REGISTERED.contains(&name)
}

// === the pipeline ===

/// Whether a layer may carry registered claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Guard {
    overwrite_registered: bool,
}

impl Guard {
    fn keep(self, name: &str) -> bool {
        self.overwrite_registered || !is_registered(name)
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

impl Enricher {
    /// The layer of an enricher that looks nothing up: its precomputed claims, or the
    /// subject's as stored now (`None`: nothing to add, or a remote enricher).
    fn local_layer(
        &self,
        precomputed: Option<&Arc<Map<String, Value>>>,
        subject: Option<&SubjectKey>,
        subjects: &SubjectClaims,
    ) -> Option<Arc<Map<String, Value>>> {
        let layer = match &self.stage {
            Stage::Static { .. } | Stage::Mapping(_) => precomputed.cloned(),
            Stage::Subject => {
                let stored = subject.and_then(|key| subjects.get(key))?;
                Some(if self.guard.overwrite_registered {
                    stored.all
                } else {
                    stored.unregistered
                })
            }
            Stage::Remote(_) => None,
        };
        // An empty layer adds nothing to the answer: leaving it out keeps a token's
        // enrichment empty, and its answer kept, where no enricher has claims for it.
        layer.filter(|claims| !claims.is_empty())
    }
}

/// One issuer's enrichers, in order.
#[derive(Debug, Default)]
pub struct Pipeline {
    enrichers: Vec<Enricher>,
    /// Whether an enricher looks claims up remotely, so that an answer awaits it.
    looks_up: bool,
}

/// Why an answer cannot be given: a fail-closed enricher failed.
#[derive(Debug, thiserror::Error)]
#[error("enricher {name} failed: {source}")]
pub struct EnrichError {
    pub name: String,
    #[source]
    pub source: RemoteError,
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
    /// The enrichers of `specs`, in order; remote ones share `http` and the issuer's
    /// outbound `budget`.
    pub fn new(specs: &[Spec], http: &reqwest::Client, budget: &Arc<Budget>) -> Self {
        let enrichers = specs
            .iter()
            .enumerate()
            .map(|(index, spec)| {
                let (stage, overwrite_registered) = match spec {
                    Spec::Static {
                        claims,
                        when,
                        overwrite_registered,
                    } => (
                        Stage::Static {
                            claims: Arc::new(claims.clone()),
                            when: when.clone(),
                        },
                        *overwrite_registered,
                    ),
                    Spec::Mapping {
                        rules,
                        overwrite_registered,
                    } => (Stage::Mapping(rules.clone()), *overwrite_registered),
                    Spec::Subject {
                        overwrite_registered,
                    } => (Stage::Subject, *overwrite_registered),
                    Spec::Remote(remote) => (
                        Stage::Remote(RemoteEnricher::new(
                            index,
                            remote,
                            http.clone(),
                            budget.clone(),
                        )),
                        remote.overwrite_registered,
                    ),
                };
                Enricher {
                    stage,
                    guard: Guard {
                        overwrite_registered,
                    },
                }
            })
            .collect::<Vec<_>>();
        let looks_up = enrichers
            .iter()
            .any(|enricher| matches!(enricher.stage, Stage::Remote(_)));
        Self {
            enrichers,
            looks_up,
        }
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
            let Stage::Remote(remote) = &enricher.stage else {
                layers.extend(enricher.local_layer(
                    precomputed.get(i).and_then(Option::as_ref),
                    subject,
                    subjects,
                ));
                continue;
            };
            let guard = enricher.guard;
            match remote
                .lookup(token, subject, |claims| guard.filter(claims), now)
                .await
            {
                Ok(claims) => layers.push(claims),
                Err(error) => {
                    if !matches!(error, RemoteError::BreakerOpen) {
                        // Logged once per outage: later lookups meet the open breaker.
                        tracing::warn!(enricher = remote.name(), %error, "remote enrichment failed");
                    }
                    remote.note_failure();
                    if remote.fails_closed() {
                        return Err(EnrichError {
                            name: remote.name().to_owned(),
                            source: error,
                        });
                    }
                }
            }
        }
        Ok(Enrichment { layers })
    }

    /// [`Self::enrich`] for a pipeline that looks nothing up remotely, so that nothing
    /// is awaited, nor a future built; and nothing allocated while no layer has claims
    /// for this answer. `None` for a pipeline with a remote enricher.
    pub fn enrich_locally(
        &self,
        precomputed: &Precomputed,
        subject: Option<&SubjectKey>,
        subjects: &SubjectClaims,
    ) -> Option<Enrichment> {
        if self.looks_up {
            return None;
        }
        let mut layers = Vec::new();
        for (i, enricher) in self.enrichers.iter().enumerate() {
            layers.extend(enricher.local_layer(
                precomputed.get(i).and_then(Option::as_ref),
                subject,
                subjects,
            ));
        }
        Some(Enrichment { layers })
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
fn lookup<'a>(claims: &'a Map<String, Value>, from: &ClaimRef) -> Option<&'a Value> {
    match from {
        ClaimRef::Name(name) => claims.get(name),
        ClaimRef::Path(path) => {
            let (first, rest) = path.split_first()?;
            rest.iter().try_fold(claims.get(first)?, |value, part| {
                value.as_object()?.get(part)
            })
        }
    }
}

fn map_claims(rules: &[MappingRule], token: &AccessToken) -> Map<String, Value> {
    let claims = token.to_json();
    let mut out = Map::new();
    for rule in rules {
        match rule {
            MappingRule::StripPrefix(prefix) => {
                for (name, value) in &claims {
                    if let Some(rest) = name.strip_prefix(prefix.as_str())
                        && !rest.is_empty()
                    {
                        out.insert(rest.to_owned(), value.clone());
                    }
                }
            }
            MappingRule::Copy { from, to, split } => {
                let Some(value) = lookup(&claims, from) else {
                    continue;
                };
                let value = match (split, value) {
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
        }
    }
    out
}

/// A claims value outside the bounds every layer keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutOfBounds {
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("larger than {MAX_LAYER_BYTES} bytes")]
    TooLarge,
}

/// Bounds on a claims value: nesting and serialized size.
pub fn check_claims(claims: &Map<String, Value>) -> Result<(), OutOfBounds> {
    if crate::token::nesting_depth(claims) > MAX_DEPTH {
        return Err(OutOfBounds::TooDeep);
    }
    if serde_json::to_vec(claims).map_or(usize::MAX, |bytes| bytes.len()) > MAX_LAYER_BYTES {
        return Err(OutOfBounds::TooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
