//! Configuration: one TOML file, every key overridable from the environment, validated
//! once at start.
//!
//! This module owns only what operators write: the file is parsed into [`FileConfig`]
//! (unknown keys refused), environment variables `INTROSPECTD_<SECTION>__<KEY>` (levels
//! joined by `__`, array items by index: `INTROSPECTD_ISSUERS__0__AUDIENCES`) are laid
//! over it, and [`FileConfig::validate`] turns it into [`Config`], made of the types
//! each module owns ([`token::Policy`], [`keys::Source`], [`opaque::Endpoint`],
//! [`enrich::Spec`], [`StoreSpec`], [`telemetry::Settings`]). Validation is pure: it
//! reads the API-key file it names and nothing else, and builds no client. Every error
//! names the key it is about.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::{ApiKeyEntry, ApiKeys, ClientEntry};
use crate::enrich;
use crate::keys::{self, IssuerSpec, RefreshPolicy};
use crate::opaque;
use crate::outbound;
use crate::statelog::{RedisSpec, StoreSpec};
use crate::telemetry;
use crate::tls;
use crate::token::{self, Policy, TypPolicy};

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "INTROSPECTD_";

pub const DEFAULT_GRPC_ADDR: &str = "0.0.0.0:50051";
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8080";
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
pub const DEFAULT_CACHE_MAX_ENTRIES: usize = 100_000;
pub const DEFAULT_REFRESH_SECS: u64 = 300;
pub const DEFAULT_REFRESH_MIN_SECS: u64 = 60;
pub const DEFAULT_REFRESH_MAX_SECS: u64 = 3600;
pub const DEFAULT_UNKNOWN_KID_REFETCH_SECS: u64 = 10;
pub const DEFAULT_FETCH_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_STORE_PATH: &str = "data/state.redb";
pub const DEFAULT_REDIS_STREAM: &str = "introspectd:state";
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 2_000;
/// Opaque (refresh) tokens carry no `exp`; their revocation is kept this long.
pub const DEFAULT_OPAQUE_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;
pub const DEFAULT_PURGE_INTERVAL_SECS: u64 = 60;
pub const DEFAULT_INTROSPECTION_CACHE_SECS: u64 = 60;
pub const DEFAULT_INTROSPECTION_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_REMOTE_TIMEOUT_MS: u64 = 200;
pub const DEFAULT_REMOTE_CACHE_TTL_SECS: u64 = 60;
pub const DEFAULT_REMOTE_MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

mod explained;

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

// === the file ===

/// The configuration file as operators write it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Listen addresses and request limits.
    pub server: ServerSection,
    /// Log output.
    pub log: LogSection,
    /// The verified-token cache.
    pub cache: CacheSection,
    /// Who may call: API keys, mTLS clients, and their roles.
    pub auth: AuthSection,
    /// TLS (and mTLS) on both listeners; plaintext when absent.
    pub tls: Option<TlsSection>,
    /// Where revocations are kept and how replicas share them.
    pub store: StoreSection,
    /// Trace export (OpenTelemetry).
    pub telemetry: TelemetrySection,
    /// How opaque tokens find their issuer's endpoint.
    pub opaque: OpaqueSection,
    /// How gateways (Envoy ext_authz, forward-auth) are answered.
    pub gateway: GatewaySection,
    /// How DPoP proofs of sender-constrained tokens are checked.
    pub dpop: DpopSection,
    /// Signed introspection answers (RFC 9701); off when absent.
    pub answer_signing: Option<AnswerSigningSection>,
    /// The issuers whose tokens are accepted. At least one.
    pub issuers: Vec<IssuerSection>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// `realm` of the `WWW-Authenticate` answers.
    pub realm: String,
    /// The request header that carries the bearer token.
    pub token_header: String,
    /// Headers added to the upstream request: any of `sub`, `client_id`, `scope`,
    /// `claims` (the answer as base64url JSON), as `x-introspectd-<name>`.
    pub upstream_headers: Vec<String>,
    /// Envoy: remove the token header from the upstream request.
    pub remove_token_header: bool,
    /// A request header holding the client certificate the gateway terminated TLS for
    /// (`x-forwarded-client-cert`, `x-ssl-client-cert`, ...), for certificate-bound
    /// tokens. Trusted as the gateway states it: set it only where clients cannot reach
    /// introspectd except through that gateway, which overwrites the header.
    pub client_certificate_header: Option<String>,
}

impl Default for GatewaySection {
    fn default() -> Self {
        let defaults = crate::gateway::Settings::default();
        Self {
            realm: defaults.realm,
            token_header: defaults.token_header,
            upstream_headers: ["sub", "client_id", "scope", "claims"]
                .map(String::from)
                .to_vec(),
            remove_token_header: defaults.remove_token_header,
            client_certificate_header: None,
        }
    }
}

impl GatewaySection {
    fn validate(&self) -> Result<crate::gateway::Settings, ConfigError> {
        use crate::gateway::UpstreamHeader;
        let upstream_headers = self
            .upstream_headers
            .iter()
            .map(|name| match name.as_str() {
                "sub" => Ok(UpstreamHeader::Sub),
                "client_id" => Ok(UpstreamHeader::ClientId),
                "scope" => Ok(UpstreamHeader::Scope),
                "claims" => Ok(UpstreamHeader::Claims),
                other => Err(invalid(
                    "gateway.upstream_headers",
                    format!("{other:?} is not one of sub, client_id, scope, claims"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.realm.contains('"') {
            return Err(invalid("gateway.realm", "must not contain a quote"));
        }
        // A name no request header can have would refuse every request, silently.
        let is_header_name =
            |name: &str| axum::http::HeaderName::from_bytes(name.as_bytes()).is_ok();
        if !is_header_name(&self.token_header) {
            return Err(invalid(
                "gateway.token_header",
                "must be an HTTP header name",
            ));
        }
        if let Some(name) = self
            .client_certificate_header
            .as_deref()
            .filter(|n| !n.is_empty())
            && !is_header_name(name)
        {
            return Err(invalid(
                "gateway.client_certificate_header",
                "must be an HTTP header name",
            ));
        }
        Ok(crate::gateway::Settings {
            realm: self.realm.clone(),
            token_header: self.token_header.to_ascii_lowercase(),
            upstream_headers,
            remove_token_header: self.remove_token_header,
            client_certificate_header: self
                .client_certificate_header
                .as_ref()
                .filter(|header| !header.is_empty())
                .map(|header| header.to_ascii_lowercase()),
            // Set by `FileConfig::validate`, which knows `[dpop]` too.
            dpop_algorithms: String::new(),
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpaqueSection {
    /// Several issuers with an introspection endpoint and no `opaque_token_prefixes`:
    /// try them in configuration order until one calls a token active. Each of them then
    /// sees (and could replay) the others' tokens, so this is off unless chosen.
    pub try_unprefixed_in_order: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// gRPC listen address.
    pub grpc_addr: String,
    /// HTTP listen address (RFC 7662 endpoint, health, metrics).
    pub http_addr: String,
    /// Longest token accepted; longer ones are inactive (MALFORMED) without being parsed.
    pub max_token_bytes: usize,
    /// Largest gRPC request message and HTTP request body accepted.
    pub max_request_bytes: usize,
    /// Time in-flight calls get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Whether gRPC answers carry the machine-readable reason for an inactive token.
    pub expose_inactive_reason: bool,
    /// Longest a call may take (gRPC callers' own `grpc-timeout` is honoured when
    /// shorter); past it the call is DEADLINE_EXCEEDED (HTTP 504).
    pub request_timeout_ms: u64,
    /// Calls in progress at once, per listener; more are refused at once with
    /// RESOURCE_EXHAUSTED (HTTP 503) rather than queued. Health checks are never refused.
    pub max_concurrent_requests: usize,
    /// Open connections per listener; further clients wait in the kernel's backlog.
    /// Lowered at start to 40% of the process's open-file limit.
    pub max_connections: usize,
    /// A connection that sends nothing this long after it opens is closed.
    pub first_byte_timeout_ms: u64,
    /// HTTP: the request headers must arrive within this (also the keep-alive idle
    /// timeout).
    pub http_header_read_timeout_ms: u64,
    /// A connection whose client reads none of what is sent to it this long is closed
    /// (a client that sends requests and never reads the answers would hold its slot
    /// and buffers for ever).
    pub write_stall_timeout_ms: u64,
    /// gRPC: an HTTP/2 ping on connections quiet this long, and the connection closed
    /// when the ping is not answered within `grpc_keepalive_timeout_secs`.
    pub grpc_keepalive_interval_secs: u64,
    pub grpc_keepalive_timeout_secs: u64,
    /// gRPC: a connection this old is asked to go away (GOAWAY; its calls get
    /// `shutdown_grace_secs` to finish), so clients spread over new replicas and no
    /// client holds a connection slot for ever; 0: no limit.
    pub grpc_max_connection_age_secs: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            grpc_addr: DEFAULT_GRPC_ADDR.into(),
            http_addr: DEFAULT_HTTP_ADDR.into(),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            expose_inactive_reason: false,
            request_timeout_ms: 10_000,
            max_concurrent_requests: 4_096,
            max_connections: 4_096,
            first_byte_timeout_ms: 10_000,
            http_header_read_timeout_ms: 10_000,
            write_stall_timeout_ms: 30_000,
            grpc_keepalive_interval_secs: 30,
            grpc_keepalive_timeout_secs: 10,
            grpc_max_connection_age_secs: 1_800,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `introspectd=debug`; `RUST_LOG` wins if set.
    pub filter: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[telemetry]`: trace export. Unset keys fall back to the standard `OTEL_*` variables.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317`.
    pub otlp_endpoint: Option<String>,
    /// PEM CA certificates an `https://` collector's certificate is checked against
    /// (default: `OTEL_EXPORTER_OTLP_CERTIFICATE`, else the system's roots).
    pub otlp_ca_file: Option<PathBuf>,
    /// `service.name` of the spans (default: `OTEL_SERVICE_NAME`, else "introspectd").
    pub service_name: Option<String>,
    /// Fraction of new traces sampled, 0.0 to 1.0; traces whose caller sampled them are
    /// always followed (default: `OTEL_TRACES_SAMPLER`, else 1.0).
    pub sample_ratio: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Most verified tokens kept; 0 turns the cache off.
    pub max_entries: usize,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_CACHE_MAX_ENTRIES,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Allow Introspect without an API key (inside a trusted network). Revoke and
    /// administration always need a key.
    pub anonymous_introspect: bool,
    /// A TOML file of `[[api_keys]]` entries (name, sha256, roles), e.g. a mounted Secret.
    pub api_keys_file: Option<PathBuf>,
    /// How often that file is read again (a changed one replaces its keys).
    pub api_keys_reload_secs: u64,
    /// API keys inline: `[[auth.api_keys]]` with name, sha256 (hex SHA-256 of the key), roles.
    pub api_keys: Vec<ApiKeyEntry>,
    /// mTLS clients: `[[auth.clients]]` with name, identity (a URI or DNS SAN of the
    /// client certificate, e.g. a SPIFFE ID), roles. Needs `tls.client_ca_file`.
    pub clients: Vec<ClientEntry>,
}

/// `[dpop]`: DPoP proofs (RFC 9449).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpopSection {
    /// Algorithms a proof may be signed with (asymmetric only).
    pub algorithms: Vec<String>,
    /// A proof's `iat` may be this old at most.
    pub max_age_secs: u64,
    /// ...and this far in the future at most.
    pub clock_skew_secs: u64,
    /// Require server nonces: a proof must carry a `nonce` from a recent `DPoP-Nonce`.
    pub require_nonce: bool,
    /// Secret (at least 32 bytes) the nonces derive from, the same on every replica so
    /// that each accepts the others' nonces; prefer INTROSPECTD_DPOP__NONCE_SECRET.
    /// Unset: a random secret per process.
    pub nonce_secret: Option<String>,
    /// A nonce is accepted during its period and the next.
    pub nonce_period_secs: u64,
    /// Proofs remembered per replica against replay.
    pub replay_cache_entries: usize,
}

impl Default for DpopSection {
    fn default() -> Self {
        let defaults = crate::binding::dpop::Settings::default();
        Self {
            algorithms: defaults
                .algorithms
                .iter()
                .map(|alg| format!("{alg:?}"))
                .collect(),
            max_age_secs: defaults.max_age_secs.unsigned_abs(),
            clock_skew_secs: defaults.clock_skew_secs.unsigned_abs(),
            require_nonce: defaults.require_nonce,
            nonce_secret: None,
            nonce_period_secs: defaults.nonce_period_secs.unsigned_abs(),
            replay_cache_entries: defaults.replay_cache_entries,
        }
    }
}

impl DpopSection {
    fn validate(&self) -> Result<crate::binding::dpop::Settings, ConfigError> {
        let algorithms = self
            .algorithms
            .iter()
            .map(|name| {
                name.parse::<Algorithm>()
                    .ok()
                    .filter(|alg| ASYMMETRIC.contains(alg))
                    .ok_or_else(|| {
                        invalid(
                            "dpop.algorithms",
                            format!("{name:?} is not an asymmetric JWS algorithm"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if algorithms.is_empty() {
            return Err(invalid("dpop.algorithms", "list at least one algorithm"));
        }
        let secs = |key: &str, value: u64| {
            i64::try_from(value)
                .ok()
                .filter(|v| *v > 0 && *v <= 86_400)
                .ok_or_else(|| invalid(key, "must be between 1 and 86400"))
        };
        let nonce_secret = match &self.nonce_secret {
            Some(secret) if secret.len() < 32 => {
                return Err(invalid("dpop.nonce_secret", "must be at least 32 bytes"));
            }
            other => other.as_ref().map(|s| s.as_bytes().to_vec()),
        };
        if self.replay_cache_entries == 0 {
            return Err(invalid("dpop.replay_cache_entries", "must be positive"));
        }
        Ok(crate::binding::dpop::Settings {
            algorithms,
            max_age_secs: secs("dpop.max_age_secs", self.max_age_secs)?,
            clock_skew_secs: i64::try_from(self.clock_skew_secs)
                .ok()
                .filter(|v| *v <= 3600)
                .ok_or_else(|| invalid("dpop.clock_skew_secs", "must be at most 3600"))?,
            require_nonce: self.require_nonce,
            nonce_secret,
            nonce_period_secs: secs("dpop.nonce_period_secs", self.nonce_period_secs)?,
            replay_cache_entries: self.replay_cache_entries,
        })
    }
}

/// `[answer_signing]`: signed introspection answers (RFC 9701).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerSigningSection {
    /// `iss` of the signed answers: introspectd's own identifier, e.g. its URL.
    pub issuer: String,
    /// PEM PKCS#8 private key (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`).
    pub key_file: PathBuf,
    /// The key's algorithm: ES256 (default), ES384, EdDSA, RS256, PS256, ...
    #[serde(default = "default_answer_algorithm")]
    pub algorithm: String,
    /// `kid`; default: the key's RFC 7638 thumbprint.
    pub kid: Option<String>,
    /// A JWKS file of further public keys to publish (the next key during a rotation).
    pub publish_jwks_file: Option<PathBuf>,
}

fn default_answer_algorithm() -> String {
    "ES256".into()
}

impl AnswerSigningSection {
    fn validate(&self) -> Result<crate::signing::Settings, ConfigError> {
        if self.issuer.is_empty() {
            return Err(invalid("answer_signing.issuer", "is required"));
        }
        let algorithm = self
            .algorithm
            .parse::<Algorithm>()
            .ok()
            .filter(|alg| ASYMMETRIC.contains(alg))
            .ok_or_else(|| {
                invalid(
                    "answer_signing.algorithm",
                    format!("{:?} is not an asymmetric JWS algorithm", self.algorithm),
                )
            })?;
        Ok(crate::signing::Settings {
            issuer: self.issuer.clone(),
            key_file: self.key_file.clone(),
            algorithm,
            kid: self.kid.clone(),
            publish_jwks_file: self.publish_jwks_file.clone(),
        })
    }
}

/// `[tls]`: both listeners serve TLS with this certificate.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first (`tls.crt` of a Kubernetes TLS Secret).
    pub cert_file: PathBuf,
    /// PEM private key (`tls.key`).
    pub key_file: PathBuf,
    /// PEM CA bundle for client certificates (`ca.crt`). When set, clients may present
    /// a certificate (mTLS); one that does not chain to this CA is refused in the
    /// handshake. Clients without one still authenticate with an API key.
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are checked for changes (a renewed certificate is served to
    /// new connections; open ones keep theirs).
    #[serde(default = "default_tls_reload_secs")]
    pub reload_interval_secs: u64,
}

fn default_tls_reload_secs() -> u64 {
    10
}

impl TlsSection {
    fn validate(&self) -> Result<tls::Settings, ConfigError> {
        if self.reload_interval_secs == 0 {
            return Err(invalid("tls.reload_interval_secs", "must be positive"));
        }
        Ok(tls::Settings {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            client_ca_file: self.client_ca_file.clone(),
            reload_interval: Duration::from_secs(self.reload_interval_secs),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Memory,
    Embedded,
    Redis,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `memory` (nothing kept), `embedded` (a local file, one replica), or `redis`
    /// (shared by every replica).
    pub backend: StoreBackend,
    /// The embedded store's file.
    pub path: PathBuf,
    /// `redis://[user:password@]host:port[/db]`; prefer INTROSPECTD_STORE__REDIS_URL.
    pub redis_url: Option<String>,
    /// The Redis Stream that holds the log.
    pub redis_stream: String,
    /// Timeout of every Redis command.
    pub redis_timeout_ms: u64,
    /// The CA (PEM) that signed Redis's certificate, for `rediss://` URLs, instead of
    /// the system's roots.
    pub redis_ca_file: Option<PathBuf>,
    /// Redis replicas that must confirm a write (`WAIT`) before it is acknowledged; 0
    /// acknowledges once the master has it. With Sentinel, the number of replicas keeps
    /// every acknowledged revocation through a failover.
    pub redis_wait_replicas: u32,
    /// How long a revoked opaque token (no readable `exp`) is remembered.
    pub opaque_token_ttl_secs: u64,
    /// How often forgotten records are purged from memory and the log.
    pub purge_interval_secs: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Embedded,
            path: PathBuf::from(DEFAULT_STORE_PATH),
            redis_url: None,
            redis_stream: DEFAULT_REDIS_STREAM.into(),
            redis_timeout_ms: DEFAULT_REDIS_TIMEOUT_MS,
            redis_ca_file: None,
            redis_wait_replicas: 0,
            opaque_token_ttl_secs: DEFAULT_OPAQUE_TOKEN_TTL_SECS,
            purge_interval_secs: DEFAULT_PURGE_INTERVAL_SECS,
        }
    }
}

/// One trusted issuer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuerSection {
    /// Exact `iss` value of its tokens.
    pub issuer: String,
    /// Accepted audiences; a token's `aud` must contain at least one.
    pub audiences: Vec<String>,
    /// Allowed signature algorithms. Never taken from the token.
    pub algorithms: Vec<String>,
    /// Key source: a JWKS URL.
    pub jwks_uri: Option<String>,
    /// Key source: OIDC discovery from `{issuer}/.well-known/openid-configuration`.
    pub discovery: bool,
    /// Key source: a JWKS document inline.
    pub jwks: Option<String>,
    /// Key source: a JWKS file, re-read on every refresh.
    pub jwks_file: Option<PathBuf>,
    /// Key source: a shared secret for HS256/384/512. Prefer the environment for it.
    pub hmac_secret: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// `strict`: the `typ` header must be `at+jwt` (RFC 9068). `compat`: also `JWT` or
    /// no `typ`, for issuers that do not type their access tokens.
    pub typ: TypSetting,
    /// Claims that must be present beyond `iss`, `exp` and `aud`.
    pub required_claims: Vec<String>,
    /// Refuse JWTs without `iat`. Default: yes for `typ = "strict"` (RFC 9068 section
    /// 2.2), no for `compat`. Without it, revocations are kept from `exp` alone.
    pub require_iat: Option<bool>,
    /// Claims read for scopes, first present wins (`scope` string or `scp` array).
    pub scope_claims: Vec<String>,
    /// Claims read for the client, first present wins.
    pub client_claims: Vec<String>,
    /// Claims read for `username`, first present wins.
    pub username_claims: Vec<String>,
    /// Refresh interval when the JWKS response has no `Cache-Control: max-age`.
    pub refresh_secs: u64,
    /// Lower bound on the refresh interval (a short max-age is raised to it).
    pub refresh_min_secs: u64,
    /// Upper bound on the refresh interval (a long max-age is lowered to it).
    pub refresh_max_secs: u64,
    /// At most one refetch for an unknown `kid` per this many seconds.
    pub unknown_kid_refetch_secs: u64,
    /// Timeout of each key fetch, connect included.
    pub fetch_timeout_ms: u64,
    /// Longest lifetime of this issuer's tokens; bounds how long revocation cut-offs are kept.
    pub max_token_lifetime_secs: u64,
    /// Enrichers run in order on this issuer's active answers.
    pub enrich: Vec<EnricherSection>,
    /// The issuer's RFC 7662 endpoint: opaque tokens (not JWTs) are sent there.
    pub introspection_endpoint: Option<String>,
    /// Client credentials for that endpoint (HTTP Basic), if it wants them.
    pub introspection_client_id: Option<String>,
    /// Prefer INTROSPECTD_ISSUERS__N__INTROSPECTION_CLIENT_SECRET.
    pub introspection_client_secret: Option<String>,
    /// Longest time an active answer of the endpoint is reused (never past its `exp`).
    pub introspection_cache_secs: u64,
    /// Timeout of each call to the endpoint.
    pub introspection_timeout_ms: u64,
    /// Opaque tokens starting with one of these (e.g. `["ory_at_"]` for Hydra) go to this
    /// issuer's endpoint and no other.
    pub opaque_token_prefixes: Vec<String>,
    /// Calls in flight at once to this issuer's introspection endpoint and remote
    /// enrichers; more are refused (UNAVAILABLE) rather than queued.
    pub max_outbound_concurrency: usize,
    /// Calls per second to them, at most (a burst of as many is allowed).
    pub max_outbound_per_second: u32,
    /// Allow `http://` URLs to non-loopback hosts for this issuer's keys, discovery,
    /// introspection endpoint and remote enrichers. Tokens and secrets then cross the
    /// network in clear: only inside a network that encrypts for you.
    pub allow_insecure_http: bool,
    /// Refuse endpoint answers without `token_type` (oidc-provider omits it for refresh
    /// tokens, and only for them).
    pub require_token_type: bool,
    /// Let endpoint answers without `aud` pass the audience rule (for issuers that never
    /// send it); an answer that has `aud` must still name one of `audiences`.
    pub accept_opaque_without_aud: bool,
}

impl Default for IssuerSection {
    fn default() -> Self {
        let names = |list: &[&str]| list.iter().map(|name| (*name).to_owned()).collect();
        Self {
            issuer: String::new(),
            audiences: Vec::new(),
            algorithms: vec!["RS256".into()],
            jwks_uri: None,
            discovery: false,
            jwks: None,
            jwks_file: None,
            hmac_secret: None,
            leeway_secs: token::DEFAULT_LEEWAY_SECS.unsigned_abs(),
            typ: TypSetting::Strict,
            required_claims: Vec::new(),
            scope_claims: names(token::DEFAULT_SCOPE_CLAIMS),
            client_claims: names(token::DEFAULT_CLIENT_CLAIMS),
            username_claims: names(token::DEFAULT_USERNAME_CLAIMS),
            refresh_secs: DEFAULT_REFRESH_SECS,
            refresh_min_secs: DEFAULT_REFRESH_MIN_SECS,
            refresh_max_secs: DEFAULT_REFRESH_MAX_SECS,
            unknown_kid_refetch_secs: DEFAULT_UNKNOWN_KID_REFETCH_SECS,
            fetch_timeout_ms: DEFAULT_FETCH_TIMEOUT_MS,
            max_token_lifetime_secs: token::DEFAULT_MAX_TOKEN_LIFETIME_SECS,
            enrich: Vec::new(),
            introspection_endpoint: None,
            introspection_client_id: None,
            introspection_client_secret: None,
            introspection_cache_secs: DEFAULT_INTROSPECTION_CACHE_SECS,
            introspection_timeout_ms: DEFAULT_INTROSPECTION_TIMEOUT_MS,
            opaque_token_prefixes: Vec::new(),
            allow_insecure_http: false,
            max_outbound_concurrency: 32,
            max_outbound_per_second: 200,
            require_iat: None,
            require_token_type: false,
            accept_opaque_without_aud: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TypSetting {
    Strict,
    Compat,
}

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
pub struct WhenSection {
    pub client_id: Vec<String>,
    pub scope: Vec<String>,
    pub audience: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticSection {
    pub claims: Map<String, Value>,
    pub when: WhenSection,
    pub overwrite_registered: bool,
}

/// One mapping rule: either `strip_prefix` alone, or `from`/`from_path` → `to`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingRuleSection {
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
    pub rules: Vec<MappingRuleSection>,
    pub overwrite_registered: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubjectSection {
    pub overwrite_registered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnErrorSetting {
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
    pub on_error: OnErrorSetting,
    pub overwrite_registered: bool,
}

impl Default for RemoteSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout_ms: DEFAULT_REMOTE_TIMEOUT_MS,
            cache_ttl_secs: DEFAULT_REMOTE_CACHE_TTL_SECS,
            max_response_bytes: DEFAULT_REMOTE_MAX_RESPONSE_BYTES,
            on_error: OnErrorSetting::Open,
            overwrite_registered: false,
        }
    }
}

// === the validated configuration ===

#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub max_token_bytes: usize,
    pub max_request_bytes: usize,
    pub shutdown_grace: Duration,
    pub expose_inactive_reason: bool,
    pub limits: Limits,
    pub gateway: crate::gateway::Settings,
    pub telemetry: telemetry::Settings,
    pub cache_max_entries: usize,
    pub api_keys: ApiKeys,
    /// How often `api_keys`' file is read again.
    pub api_keys_reload: Duration,
    pub tls: Option<tls::Settings>,
    pub dpop: crate::binding::dpop::Settings,
    pub answer_signing: Option<crate::signing::Settings>,
    pub store: StoreSpec,
    pub opaque_token_ttl_secs: i64,
    pub purge_interval: Duration,
    pub issuers: Vec<IssuerSettings>,
}

/// What bounds the listeners and calls.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub max_connections: usize,
    pub first_byte_timeout: Duration,
    pub http_header_read_timeout: Duration,
    pub write_stall_timeout: Duration,
    pub grpc_keepalive_interval: Duration,
    pub grpc_keepalive_timeout: Duration,
    /// `None`: connections may live for ever.
    pub grpc_max_connection_age: Option<Duration>,
}

/// One issuer, validated: what the key registry needs, and its enrichers.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    pub keys: IssuerSpec,
    pub enrich: Vec<enrich::Spec>,
}

const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
const SYMMETRIC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Most calls in progress at once that can be configured: far above any real limit, and
/// within what a tokio semaphore holds.
const MAX_CONCURRENT_REQUESTS: usize = 1 << 32;

/// Shortest HMAC secret accepted: RFC 7518 section 3.2 asks for at least the hash size.
const MIN_HMAC_SECRET_BYTES: usize = 32;

impl FileConfig {
    /// Parses a file's text, with environment overrides laid over it.
    pub fn parse(text: &str, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let overrides = env_overrides(env)?;
        if overrides.is_empty() {
            // Parse the operator's text itself so error positions point into their file.
            return explained::deserialize(text).map_err(|e| ConfigError::Parse(e.to_string()));
        }
        // The error's message and line, not its rendering, which quotes the line (a
        // secret on it included).
        let mut table: toml::Table =
            explained::parse_table(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        for (var, path, value) in &overrides {
            set_path(&mut table, path, value.clone()).map_err(|reason| ConfigError::Env {
                var: var.clone(),
                reason,
            })?;
        }
        let merged = toml::to_string(&table).map_err(|e| ConfigError::Parse(e.to_string()))?;
        explained::deserialize(&merged).map_err(|error| {
            // A value that came from the environment is the variable's fault: name it.
            match overrides
                .iter()
                .find(|(_, path, _)| explained::same_path(path, &error.path))
            {
                Some((var, _, _)) => ConfigError::Env {
                    var: var.clone(),
                    reason: error.without_line(),
                },
                None => ConfigError::Parse(format!(
                    "{} (after environment overrides)",
                    error.without_line()
                )),
            }
        })
    }

    /// Reads and parses a file, with environment overrides.
    pub fn load(path: &std::path::Path, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, env)
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let server = self.server;
        let grpc_addr = parse_addr("server.grpc_addr", &server.grpc_addr)?;
        let http_addr = parse_addr("server.http_addr", &server.http_addr)?;
        if server.max_token_bytes == 0 {
            return Err(invalid("server.max_token_bytes", "must be positive"));
        }
        if server.max_request_bytes < server.max_token_bytes {
            return Err(invalid(
                "server.max_request_bytes",
                "must be at least server.max_token_bytes",
            ));
        }
        let limits = server.limits()?;
        let mut gateway = self.gateway.validate()?;
        let issuers = validate_issuers(self.issuers, &self.opaque)?;
        let tls = self.tls.as_ref().map(TlsSection::validate).transpose()?;
        let dpop = self.dpop.validate()?;
        // Challenges name the algorithms proofs may use.
        gateway.dpop_algorithms = dpop
            .algorithms
            .iter()
            .map(|alg| format!("{alg:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        let answer_signing = self
            .answer_signing
            .as_ref()
            .map(AnswerSigningSection::validate)
            .transpose()?;
        let api_keys = self.auth.validate(tls.as_ref())?;
        let api_keys_reload = Duration::from_secs(self.auth.api_keys_reload_secs);
        let telemetry = validate_telemetry(self.log, self.telemetry)?;
        let store = &self.store;
        let opaque_token_ttl_secs = i64::try_from(store.opaque_token_ttl_secs)
            .map_err(|_| invalid("store.opaque_token_ttl_secs", "is too large"))?;
        if store.purge_interval_secs == 0 {
            return Err(invalid("store.purge_interval_secs", "must be positive"));
        }
        // The log must keep every record until it can be forgotten: the longest a record
        // lives is a jti revoked now (window + 2 leeways, see `revocation::retention`), a
        // cut-off up to a minute ahead, or a revoked opaque token.
        let longest_lifetime = issuers
            .iter()
            .map(|issuer| {
                let policy = &issuer.keys.policy;
                let window = policy
                    .acceptance_window_secs()
                    .saturating_add(policy.leeway_secs.saturating_mul(2))
                    .saturating_add(60);
                u64::try_from(window).unwrap_or(u64::MAX)
            })
            .chain([store.opaque_token_ttl_secs])
            .max()
            .unwrap_or(token::DEFAULT_MAX_TOKEN_LIFETIME_SECS);
        Ok(Config {
            grpc_addr,
            http_addr,
            max_token_bytes: server.max_token_bytes,
            max_request_bytes: server.max_request_bytes,
            shutdown_grace: Duration::from_secs(server.shutdown_grace_secs),
            expose_inactive_reason: server.expose_inactive_reason,
            limits,
            gateway,
            telemetry,
            cache_max_entries: self.cache.max_entries,
            api_keys,
            api_keys_reload,
            tls,
            dpop,
            answer_signing,
            store: store.validate(longest_lifetime)?,
            opaque_token_ttl_secs,
            purge_interval: Duration::from_secs(store.purge_interval_secs),
            issuers,
        })
    }
}

fn validate_issuers(
    sections: Vec<IssuerSection>,
    opaque: &OpaqueSection,
) -> Result<Vec<IssuerSettings>, ConfigError> {
    if sections.is_empty() {
        return Err(invalid("issuers", "configure at least one [[issuers]]"));
    }
    check_opaque_routing(&sections, opaque)?;
    let mut issuers: Vec<IssuerSettings> = Vec::with_capacity(sections.len());
    for (index, section) in sections.into_iter().enumerate() {
        let issuer = section.validate(&format!("issuers[{index}]"))?;
        let iss = &issuer.keys.policy.issuer;
        if issuers.iter().any(|known| &known.keys.policy.issuer == iss) {
            return Err(invalid(
                format!("issuers[{index}].issuer"),
                format!("{iss:?} is configured twice"),
            ));
        }
        issuers.push(issuer);
    }
    Ok(issuers)
}

/// Every opaque token must have at most one issuer to go to, unless the operator chose
/// to try several in order.
fn check_opaque_routing(
    sections: &[IssuerSection],
    opaque: &OpaqueSection,
) -> Result<(), ConfigError> {
    let mut seen: Vec<&str> = Vec::new();
    let mut unprefixed = 0;
    for (index, section) in sections.iter().enumerate() {
        let key = format!("issuers[{index}].opaque_token_prefixes");
        if section.introspection_endpoint.is_none() {
            if !section.opaque_token_prefixes.is_empty() {
                return Err(invalid(key, "needs introspection_endpoint"));
            }
            continue;
        }
        if section.opaque_token_prefixes.is_empty() {
            unprefixed += 1;
            if unprefixed > 1 && !opaque.try_unprefixed_in_order {
                return Err(invalid(
                    key,
                    "several issuers introspect opaque tokens: give each its token prefixes, or set opaque.try_unprefixed_in_order = true (each then sees the others' tokens)",
                ));
            }
        }
        for prefix in &section.opaque_token_prefixes {
            if prefix.is_empty() {
                return Err(invalid(key, "a prefix must not be empty"));
            }
            if seen.contains(&prefix.as_str()) {
                return Err(invalid(key, format!("{prefix:?} belongs to two issuers")));
            }
            seen.push(prefix);
        }
    }
    Ok(())
}

fn validate_telemetry(
    log: LogSection,
    section: TelemetrySection,
) -> Result<telemetry::Settings, ConfigError> {
    if section
        .sample_ratio
        .is_some_and(|ratio| !(0.0..=1.0).contains(&ratio))
    {
        return Err(invalid(
            "telemetry.sample_ratio",
            "must be between 0.0 and 1.0",
        ));
    }
    if let Some(endpoint) = &section.otlp_endpoint {
        check_url("telemetry.otlp_endpoint", endpoint)?;
    }
    Ok(telemetry::Settings {
        log_format: match log.format {
            LogFormat::Text => telemetry::LogFormat::Text,
            LogFormat::Json => telemetry::LogFormat::Json,
        },
        log_filter: log.filter,
        otlp_endpoint: section.otlp_endpoint,
        otlp_ca_file: section.otlp_ca_file,
        service_name: section.service_name,
        sample_ratio: section.sample_ratio,
    })
}

impl ServerSection {
    fn limits(&self) -> Result<Limits, ConfigError> {
        for (key, value) in [
            ("server.request_timeout_ms", self.request_timeout_ms),
            ("server.first_byte_timeout_ms", self.first_byte_timeout_ms),
            (
                "server.http_header_read_timeout_ms",
                self.http_header_read_timeout_ms,
            ),
            ("server.write_stall_timeout_ms", self.write_stall_timeout_ms),
            (
                "server.grpc_keepalive_interval_secs",
                self.grpc_keepalive_interval_secs,
            ),
            (
                "server.grpc_keepalive_timeout_secs",
                self.grpc_keepalive_timeout_secs,
            ),
            (
                "server.max_concurrent_requests",
                self.max_concurrent_requests as u64,
            ),
            ("server.max_connections", self.max_connections as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        // A semaphore holds at most this many permits (tokio's limit is 2^61 - 1).
        if self.max_concurrent_requests > MAX_CONCURRENT_REQUESTS {
            return Err(invalid(
                "server.max_concurrent_requests",
                format!("must be at most {MAX_CONCURRENT_REQUESTS}"),
            ));
        }
        Ok(Limits {
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_concurrent_requests: self.max_concurrent_requests,
            max_connections: self.max_connections,
            first_byte_timeout: Duration::from_millis(self.first_byte_timeout_ms),
            http_header_read_timeout: Duration::from_millis(self.http_header_read_timeout_ms),
            write_stall_timeout: Duration::from_millis(self.write_stall_timeout_ms),
            grpc_keepalive_interval: Duration::from_secs(self.grpc_keepalive_interval_secs),
            grpc_keepalive_timeout: Duration::from_secs(self.grpc_keepalive_timeout_secs),
            grpc_max_connection_age: (self.grpc_max_connection_age_secs > 0)
                .then(|| Duration::from_secs(self.grpc_max_connection_age_secs)),
        })
    }
}

impl StoreSection {
    /// `longest_lifetime`: how long any record may have to be kept.
    fn validate(&self, longest_lifetime: u64) -> Result<StoreSpec, ConfigError> {
        Ok(match self.backend {
            StoreBackend::Memory => StoreSpec::Memory,
            StoreBackend::Embedded => StoreSpec::Embedded {
                path: self.path.clone(),
            },
            StoreBackend::Redis => {
                let url = self
                    .redis_url
                    .clone()
                    .filter(|url| !url.is_empty())
                    .ok_or_else(|| {
                        invalid("store.redis_url", "is required with backend = \"redis\"")
                    })?;
                if !["redis://", "rediss://", "unix://", "redis+sentinel://"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme))
                {
                    return Err(invalid(
                        "store.redis_url",
                        "must start with redis://, rediss://, unix:// or redis+sentinel://",
                    ));
                }
                if self.redis_timeout_ms == 0 {
                    return Err(invalid("store.redis_timeout_ms", "must be positive"));
                }
                if self.redis_ca_file.is_some() && !url.starts_with("rediss://") {
                    return Err(invalid(
                        "store.redis_ca_file",
                        "is for TLS: the URL must start with rediss://",
                    ));
                }
                crate::statelog::redis::check_url(&url)
                    .map_err(|reason| invalid("store.redis_url", reason))?;
                StoreSpec::Redis(RedisSpec {
                    ca_file: self.redis_ca_file.clone(),
                    url,
                    stream: self.redis_stream.clone(),
                    timeout: Duration::from_millis(self.redis_timeout_ms),
                    retention: Duration::from_secs(longest_lifetime.saturating_add(3600)),
                    wait_replicas: self.redis_wait_replicas,
                })
            }
        })
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            anonymous_introspect: false,
            api_keys_file: None,
            api_keys_reload_secs: 10,
            api_keys: Vec::new(),
            clients: Vec::new(),
        }
    }
}

impl AuthSection {
    fn validate(&self, tls: Option<&tls::Settings>) -> Result<ApiKeys, ConfigError> {
        let mut keys = ApiKeys::new(self.api_keys.clone(), self.anonymous_introspect)
            .map_err(|e| invalid("auth.api_keys", e.to_string()))?;
        if let Some(path) = &self.api_keys_file {
            keys = keys
                .with_file(path)
                .map_err(|e| invalid("auth.api_keys_file", e.to_string()))?;
            if self.api_keys_reload_secs == 0 {
                return Err(invalid("auth.api_keys_reload_secs", "must be positive"));
            }
        }
        let keys = keys
            .with_clients(self.clients.clone())
            .map_err(|e| invalid("auth.clients", e.to_string()))?;
        if keys.has_clients() && tls.and_then(|t| t.client_ca_file.as_ref()).is_none() {
            return Err(invalid(
                "auth.clients",
                "mTLS clients need tls.client_ca_file (and tls.cert_file, tls.key_file)",
            ));
        }
        if keys.is_empty() && !keys.has_clients() && !self.anonymous_introspect {
            return Err(invalid(
                "auth",
                "no API keys, no mTLS clients and anonymous_introspect = false: nobody could call introspectd",
            ));
        }
        Ok(keys)
    }
}

impl IssuerSection {
    fn validate(self, key: &str) -> Result<IssuerSettings, ConfigError> {
        if self.issuer.is_empty() {
            return Err(invalid(format!("{key}.issuer"), "is required"));
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(invalid(
                format!("{key}.audiences"),
                "list at least one non-empty audience",
            ));
        }
        let algorithms = parse_algorithms(key, &self.algorithms)?;
        let source = self.key_source(key)?;
        check_algorithms_fit(key, &algorithms, &source)?;
        for (name, list) in [
            ("scope_claims", &self.scope_claims),
            ("client_claims", &self.client_claims),
        ] {
            if list.iter().any(String::is_empty) {
                return Err(invalid(
                    format!("{key}.{name}"),
                    "claim names must not be empty",
                ));
            }
        }
        let refresh = self.refresh(key)?;
        let leeway_secs = i64::try_from(self.leeway_secs)
            .ok()
            .filter(|secs| *secs <= token::MAX_LEEWAY_SECS)
            .ok_or_else(|| {
                invalid(
                    format!("{key}.leeway_secs"),
                    format!("must be at most {}", token::MAX_LEEWAY_SECS),
                )
            })?;
        let enrich = self
            .enrich
            .iter()
            .enumerate()
            .map(|(i, section)| {
                section.validate(&format!("{key}.enrich[{i}]"), self.allow_insecure_http)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let opaque = self.opaque_endpoint(key)?;
        let policy = Policy {
            issuer: self.issuer,
            audiences: self.audiences,
            algorithms,
            leeway_secs,
            typ: match self.typ {
                TypSetting::Strict => TypPolicy::Strict,
                TypSetting::Compat => TypPolicy::Compat,
            },
            required_claims: self.required_claims,
            require_iat: self.require_iat.unwrap_or(self.typ == TypSetting::Strict),
            require_token_type: self.require_token_type,
            accept_opaque_without_aud: self.accept_opaque_without_aud,
            scope_claims: self.scope_claims,
            client_claims: self.client_claims,
            username_claims: self.username_claims,
            max_token_lifetime_secs: self.max_token_lifetime_secs,
        };
        Ok(IssuerSettings {
            keys: IssuerSpec {
                policy,
                source,
                refresh,
                opaque,
                outbound: (self.max_outbound_concurrency, self.max_outbound_per_second),
            },
            enrich,
        })
    }

    /// Exactly one of the key sources.
    fn key_source(&self, key: &str) -> Result<keys::Source, ConfigError> {
        let mut sources = Vec::new();
        let insecure = self.allow_insecure_http;
        if let Some(uri) = &self.jwks_uri {
            check_outbound(&format!("{key}.jwks_uri"), uri, insecure)?;
            sources.push(keys::Source::JwksUri(uri.clone()));
        }
        if self.discovery {
            check_outbound(&format!("{key}.issuer"), &self.issuer, insecure)?;
            sources.push(keys::Source::Discovery {
                allow_insecure_http: insecure,
            });
        }
        if let Some(jwks) = &self.jwks {
            sources.push(keys::Source::Inline(jwks.clone()));
        }
        if let Some(path) = &self.jwks_file {
            sources.push(keys::Source::File(path.clone()));
        }
        if let Some(secret) = &self.hmac_secret {
            if secret.len() < MIN_HMAC_SECRET_BYTES {
                return Err(invalid(
                    format!("{key}.hmac_secret"),
                    format!("must be at least {MIN_HMAC_SECRET_BYTES} bytes"),
                ));
            }
            sources.push(keys::Source::HmacSecret(secret.clone().into_bytes()));
        }
        match sources.len() {
            1 => Ok(sources.remove(0)),
            0 => Err(invalid(
                key,
                "needs one key source: jwks_uri, discovery = true, jwks, jwks_file or hmac_secret",
            )),
            _ => Err(invalid(
                key,
                "has more than one key source: choose one of jwks_uri, discovery, jwks, jwks_file, hmac_secret",
            )),
        }
    }

    fn refresh(&self, key: &str) -> Result<RefreshPolicy, ConfigError> {
        if self.refresh_min_secs == 0 || self.refresh_min_secs > self.refresh_max_secs {
            return Err(invalid(
                format!("{key}.refresh_min_secs"),
                "must be positive and at most refresh_max_secs",
            ));
        }
        if self.fetch_timeout_ms == 0 {
            return Err(invalid(
                format!("{key}.fetch_timeout_ms"),
                "must be positive",
            ));
        }
        Ok(RefreshPolicy {
            default_interval: Duration::from_secs(self.refresh_secs),
            min_interval: Duration::from_secs(self.refresh_min_secs),
            max_interval: Duration::from_secs(self.refresh_max_secs),
            unknown_kid_min_interval: Duration::from_secs(self.unknown_kid_refetch_secs),
            fetch_timeout: Duration::from_millis(self.fetch_timeout_ms),
        })
    }

    fn opaque_endpoint(&self, key: &str) -> Result<Option<opaque::Endpoint>, ConfigError> {
        let Some(url) = &self.introspection_endpoint else {
            return Ok(None);
        };
        check_outbound(
            &format!("{key}.introspection_endpoint"),
            url,
            self.allow_insecure_http,
        )?;
        let credentials = match (
            &self.introspection_client_id,
            &self.introspection_client_secret,
        ) {
            (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    format!("{key}.introspection_client_id"),
                    "give both introspection_client_id and introspection_client_secret, or neither",
                ));
            }
        };
        if self.introspection_timeout_ms == 0 {
            return Err(invalid(
                format!("{key}.introspection_timeout_ms"),
                "must be positive",
            ));
        }
        Ok(Some(opaque::Endpoint {
            url: url.clone(),
            prefixes: self.opaque_token_prefixes.clone(),
            credentials,
            cache_secs: i64::try_from(self.introspection_cache_secs).unwrap_or(i64::MAX),
            timeout: Duration::from_millis(self.introspection_timeout_ms),
        }))
    }
}

fn parse_algorithms(key: &str, names: &[String]) -> Result<Vec<Algorithm>, ConfigError> {
    let algorithms = names
        .iter()
        .map(|name| {
            Algorithm::from_str(name).map_err(|_| {
                invalid(
                    format!("{key}.algorithms"),
                    format!("{name:?} is not a supported algorithm (RS256/384/512, PS256/384/512, ES256/384, EdDSA, HS256/384/512)"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if algorithms.is_empty() {
        return Err(invalid(
            format!("{key}.algorithms"),
            "list at least one algorithm",
        ));
    }
    Ok(algorithms)
}

/// HMAC only with a shared secret, and a shared secret only with HMAC: otherwise a
/// public key could be used as an HMAC secret (the classic RS256→HS256 confusion).
fn check_algorithms_fit(
    key: &str,
    algorithms: &[Algorithm],
    source: &keys::Source,
) -> Result<(), ConfigError> {
    if let keys::Source::HmacSecret(secret) = source {
        for alg in algorithms {
            // RFC 7518 section 3.2: at least as long as the hash.
            let needed = match alg {
                Algorithm::HS384 => 48,
                Algorithm::HS512 => 64,
                _ => MIN_HMAC_SECRET_BYTES,
            };
            if secret.len() < needed {
                return Err(invalid(
                    format!("{key}.hmac_secret"),
                    format!("must be at least {needed} bytes for {alg:?} (RFC 7518 section 3.2)"),
                ));
            }
        }
    }
    let symmetric_source = matches!(source, keys::Source::HmacSecret(_));
    for alg in algorithms {
        let allowed = if symmetric_source {
            SYMMETRIC.contains(alg)
        } else {
            ASYMMETRIC.contains(alg)
        };
        if !allowed {
            return Err(invalid(
                format!("{key}.algorithms"),
                if symmetric_source {
                    format!(
                        "{alg:?} needs a public key source; hmac_secret allows only HS256/384/512"
                    )
                } else {
                    format!("{alg:?} needs hmac_secret; key sets allow only asymmetric algorithms")
                },
            ));
        }
    }
    Ok(())
}

impl EnricherSection {
    fn validate(&self, key: &str, allow_insecure_http: bool) -> Result<enrich::Spec, ConfigError> {
        Ok(match self {
            EnricherSection::Static(s) => {
                enrich::check_claims(&s.claims)
                    .map_err(|why| invalid(format!("{key}.claims"), format!("is {why}")))?;
                if !s.overwrite_registered
                    && let Some(name) = s.claims.keys().find(|name| enrich::is_registered(name))
                {
                    return Err(invalid(
                        format!("{key}.claims"),
                        format!(
                            "{name:?} is a registered claim; set overwrite_registered = true to write it"
                        ),
                    ));
                }
                enrich::Spec::Static {
                    claims: s.claims.clone(),
                    when: enrich::When {
                        client_id: s.when.client_id.clone(),
                        scope: s.when.scope.clone(),
                        audience: s.when.audience.clone(),
                    },
                    overwrite_registered: s.overwrite_registered,
                }
            }
            EnricherSection::Mapping(m) => enrich::Spec::Mapping {
                rules: m
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(r, rule)| rule.validate(&format!("{key}.rules[{r}]")))
                    .collect::<Result<_, _>>()?,
                overwrite_registered: m.overwrite_registered,
            },
            EnricherSection::Subject(s) => enrich::Spec::Subject {
                overwrite_registered: s.overwrite_registered,
            },
            EnricherSection::Remote(r) => {
                enrich::Spec::Remote(r.validate(key, allow_insecure_http)?)
            }
        })
    }
}

impl MappingRuleSection {
    fn validate(&self, key: &str) -> Result<enrich::MappingRule, ConfigError> {
        let shape = || {
            invalid(
                key,
                "give `strip_prefix` alone, or one of `from`/`from_path` with `to`",
            )
        };
        let to = self.to.as_ref().filter(|to| !to.is_empty());
        match (&self.strip_prefix, &self.from, &self.from_path, to) {
            (Some(prefix), None, None, None) if !prefix.is_empty() => {
                Ok(enrich::MappingRule::StripPrefix(prefix.clone()))
            }
            (None, Some(name), None, Some(to)) => Ok(enrich::MappingRule::Copy {
                from: enrich::ClaimRef::Name(name.clone()),
                to: to.clone(),
                split: self.split.clone(),
            }),
            (None, None, Some(path), Some(to)) => Ok(enrich::MappingRule::Copy {
                from: enrich::ClaimRef::Path(path.split('.').map(str::to_owned).collect()),
                to: to.clone(),
                split: self.split.clone(),
            }),
            _ => Err(shape()),
        }
    }
}

impl RemoteSection {
    fn validate(
        &self,
        key: &str,
        allow_insecure_http: bool,
    ) -> Result<enrich::RemoteSpec, ConfigError> {
        check_outbound(&format!("{key}.url"), &self.url, allow_insecure_http)?;
        if self.timeout_ms == 0 {
            return Err(invalid(format!("{key}.timeout_ms"), "must be positive"));
        }
        Ok(enrich::RemoteSpec {
            url: self.url.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            cache_ttl_secs: i64::try_from(self.cache_ttl_secs).unwrap_or(i64::MAX),
            max_response_bytes: self.max_response_bytes,
            on_error: match self.on_error {
                OnErrorSetting::Open => enrich::OnError::Open,
                OnErrorSetting::Closed => enrich::OnError::Closed,
            },
            overwrite_registered: self.overwrite_registered,
        })
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            key,
            format!("{value:?} is not an address like 0.0.0.0:50051"),
        )
    })
}

/// Whether `value` is an http(s) URL, as every outbound endpoint must be.
fn is_http_url(value: &str) -> bool {
    value.starts_with("https://") || value.starts_with("http://")
}

fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    if is_http_url(value) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{} is not an http(s) URL", shown_url(value)),
        ))
    }
}

/// A URL introspectd sends tokens or credentials to: https, or http to loopback, or
/// http anywhere where the issuer allows it.
fn check_outbound(key: &str, value: &str, allow_insecure_http: bool) -> Result<(), ConfigError> {
    outbound::check_url(value, allow_insecure_http)
        .map_err(|why| invalid(key, format!("{}: {why}", shown_url(value))))
}

/// A URL as an error may show it: without credentials, query or fragment, which may
/// hold secrets; one that does not parse is not shown at all.
fn shown_url(value: &str) -> String {
    match url::Url::parse(value) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            format!("{:?}", url.as_str())
        }
        Err(_) => "the value".into(),
    }
}

// === environment overlay ===

/// Where environment variables come from: the process, or a map in tests.
pub trait EnvSource {
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

type Override = (String, Vec<String>, toml::Value);

/// Variables `INTROSPECTD_A__B` become overrides of key `a.b`. Variables without `__`
/// (`INTROSPECTD_CONFIG`, ...) belong to the command line, not the file.
fn env_overrides(env: &dyn EnvSource) -> Result<Vec<Override>, ConfigError> {
    let mut overrides = Vec::new();
    for (var, raw) in env.vars() {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Env {
                var,
                reason: "empty key segment".into(),
            });
        }
        let value = if takes_text_as_is(&path) {
            toml::Value::String(raw)
        } else {
            env_value(&raw)
        };
        overrides.push((var, path, value));
    }
    overrides.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(overrides)
}

/// Whether the key at `path` holds a secret or a URL, whose variable is taken as it is:
/// a numeric secret is no number, a quoted one keeps its quotes, and an error never
/// shows it as a value of the wrong type.
fn takes_text_as_is(path: &[String]) -> bool {
    path.last().is_some_and(|key| holds_secret_or_url(key))
}

/// Whether a key (its last segment) holds a secret or a URL (which may carry
/// credentials): its value is never shown in an error.
pub(crate) fn holds_secret_or_url(key: &str) -> bool {
    ["secret", "password", "_url", "_uri", "endpoint"]
        .iter()
        .any(|ending| key.ends_with(ending))
        || key == "url"
}

/// A value is read as TOML when it parses as one (`true`, `42`, `["a", "b"]`,
/// `"quoted"`), and as a plain string otherwise.
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        return Err("empty key".into());
    };
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let is_array = first == "issuers";
    let child = table.entry(first.clone()).or_insert_with(|| {
        if is_array {
            toml::Value::Array(Vec::new())
        } else {
            toml::Value::Table(toml::Table::new())
        }
    });
    set_value(child, rest, value)
}

fn set_value(node: &mut toml::Value, path: &[String], value: toml::Value) -> Result<(), String> {
    match node {
        toml::Value::Table(table) => set_path(table, path, value),
        toml::Value::Array(items) => {
            let Some((index, rest)) = path.split_first() else {
                return Err("an array needs an index".into());
            };
            let index: usize = index
                .parse()
                .map_err(|_| format!("{index:?} is not an array index"))?;
            if index > items.len() {
                return Err(format!(
                    "index {index} skips entries: the array has {} entries",
                    items.len()
                ));
            }
            if index == items.len() {
                items.push(toml::Value::Table(toml::Table::new()));
            }
            if rest.is_empty() {
                items[index] = value;
                Ok(())
            } else {
                set_value(&mut items[index], rest, value)
            }
        }
        _ => Err(format!("{} is not a section", path.join("."))),
    }
}

#[cfg(test)]
mod tests;
