//! Issuers and their keys.
//!
//! Each issuer's key set is an immutable [`KeySet`] snapshot behind an `ArcSwap`:
//! verification loads it without locks and never awaits the network. A supervised task
//! per issuer refreshes it ([`keep_fresh`]); an unknown `kid` triggers one rate-limited,
//! single-flight refetch; the last good set stays in place while the issuer is down.

mod fetch;
mod refresh;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwapOption;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse},
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::opaque;
use crate::token::{Policy, Reason, Rejection};

pub use fetch::{KeysError, jwks_uri_from_discovery};

/// Smallest RSA modulus accepted (RFC 7518 section 3.3).
const MIN_RSA_BITS: usize = 2048;

/// Where an issuer's keys come from.
#[derive(Clone)]
pub enum Source {
    JwksUri(String),
    /// OIDC discovery from `{issuer}/.well-known/openid-configuration`; the `jwks_uri`
    /// it names must pass the same URL rule as a configured one.
    Discovery {
        allow_insecure_http: bool,
    },
    Inline(String),
    /// A JWKS file, re-read on every refresh.
    File(std::path::PathBuf),
    HmacSecret(Vec<u8>),
}

impl Source {
    /// Reads a source that needs no network (a JWKS file, an inline JWKS) as a load
    /// would, so that `check-config` finds a missing file or a bad document before
    /// `serve` does; fetched sources and secrets are not checked here.
    pub fn check_local(&self) -> Result<(), String> {
        let parsed = |bytes: &[u8]| KeySet::from_jwks(bytes).map(|_| ());
        match self {
            Self::File(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                parsed(&bytes).map_err(|e| format!("{}: {e}", path.display()))
            }
            Self::Inline(text) => parsed(text.as_bytes()).map_err(|e| e.to_string()),
            Self::JwksUri(_) | Self::Discovery { .. } | Self::HmacSecret(_) => Ok(()),
        }
    }
}

impl std::fmt::Debug for Source {
    // The secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::JwksUri(uri) => f.debug_tuple("JwksUri").field(uri).finish(),
            Self::Discovery { .. } => f.write_str("Discovery"),
            Self::Inline(_) => f.write_str("Inline(..)"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::HmacSecret(_) => f.write_str("HmacSecret(..)"),
        }
    }
}

/// When an issuer's keys are fetched again.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    pub default_interval: Duration,
    pub min_interval: Duration,
    pub max_interval: Duration,
    pub unknown_kid_min_interval: Duration,
    pub fetch_timeout: Duration,
}

impl RefreshPolicy {
    /// The next refresh delay for a response that said `max-age` (or nothing).
    pub fn interval_for(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .unwrap_or(self.default_interval)
            .clamp(self.min_interval, self.max_interval)
    }
}

/// Everything that defines one trusted issuer.
#[derive(Debug, Clone)]
pub struct IssuerSpec {
    pub policy: Policy,
    pub source: Source,
    pub refresh: RefreshPolicy,
    /// Where its opaque tokens are introspected, if anywhere.
    pub opaque: Option<opaque::Endpoint>,
    /// Calls in flight and per second to its introspection endpoint and enrichers.
    pub outbound: (usize, u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
    Hmac,
}

/// One public key (or the shared secret) an issuer signs with.
pub struct VerifyingKey {
    /// SHA-256 of the key as published: two keys are the same key when this is equal.
    thumb: [u8; 32],
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK's own `alg`, which then is the only algorithm it verifies.
    alg: Option<Algorithm>,
    key: DecodingKey,
    /// The key parsed once per algorithm it may verify, so a verification does not
    /// parse it again (jsonwebtoken's own path re-parses the key on every call).
    parsed: Vec<(Algorithm, aws_lc_rs::signature::ParsedPublicKey)>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Why a JWK published for something other than signatures is not used.
const NOT_FOR_SIGNING_USE: &str = "use is not sig";
const NOT_FOR_VERIFYING: &str = "key_ops lacks verify";

impl VerifyingKey {
    /// Reads a public signing key from a JWK. Symmetric (`oct`) keys are never taken
    /// from a key set: a published secret would let anyone sign.
    pub(crate) fn from_jwk(value: Value) -> Result<Self, &'static str> {
        let thumb = Sha256::digest(value.to_string().as_bytes()).into();
        let jwk: Jwk = serde_json::from_value(value).map_err(|_| "not a JWK we can read")?;
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            return Err(NOT_FOR_SIGNING_USE);
        }
        if let Some(ops) = &jwk.common.key_operations
            && !ops.contains(&KeyOperations::Verify)
        {
            return Err(NOT_FOR_VERIFYING);
        }
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let modulus = URL_SAFE_NO_PAD
                    .decode(&rsa.n)
                    .map_err(|_| "bad RSA modulus")?;
                let bits = modulus.iter().skip_while(|b| **b == 0).count() * 8;
                if bits < MIN_RSA_BITS {
                    return Err("RSA key shorter than 2048 bits");
                }
                KeyKind::Rsa
            }
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => KeyKind::EcP256,
                EllipticCurve::P384 => KeyKind::EcP384,
                _ => return Err("unsupported EC curve"),
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                KeyKind::Ed25519
            }
            _ => return Err("unsupported key type"),
        };
        let alg = match &jwk.common.key_algorithm {
            None => None,
            Some(alg) => Some(
                alg.to_string()
                    .parse::<Algorithm>()
                    .map_err(|_| "unsupported JWK alg")?,
            ),
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| "key material does not parse")?;
        let mut verifying = Self {
            thumb,
            kid: jwk.common.key_id.clone(),
            kind,
            alg,
            key,
            parsed: Vec::new(),
        };
        let parsed = parsed_keys(&jwk.algorithm);
        if parsed.is_empty() {
            // A point off its curve or of the wrong length (an EC `x` that lost its
            // leading zero byte), which jsonwebtoken takes as it is.
            return Err("key material does not parse");
        }
        verifying.parsed = parsed
            .into_iter()
            .filter(|(alg, _)| verifying.accepts(*alg))
            .collect();
        Ok(verifying)
    }

    fn hmac(secret: &[u8]) -> Self {
        Self {
            thumb: Sha256::digest(secret).into(),
            kid: None,
            kind: KeyKind::Hmac,
            alg: None,
            key: DecodingKey::from_secret(secret),
            parsed: Vec::new(),
        }
    }

    /// Whether this key may verify `alg`: the key's type decides the family (so a public
    /// key can never serve as an HMAC secret), and the JWK's `alg`, if any, pins it.
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        let family = match self.kind {
            KeyKind::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyKind::EcP256 => alg == Algorithm::ES256,
            KeyKind::EcP384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
            KeyKind::Hmac => matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512),
        };
        family && self.alg.is_none_or(|pinned| pinned == alg)
    }

    pub fn verify(&self, message: &[u8], signature: &str, alg: Algorithm) -> bool {
        if let Some((_, parsed)) = self.parsed.iter().find(|(parsed, _)| *parsed == alg) {
            // Up to RSA-8192 signatures; a longer one cannot be valid for these keys.
            let mut buffer = [0u8; 1024];
            return match URL_SAFE_NO_PAD.decode_slice(signature, &mut buffer) {
                Ok(length) => parsed.verify_sig(message, &buffer[..length]).is_ok(),
                Err(_) => false,
            };
        }
        jsonwebtoken::crypto::verify(signature, message, &self.key, alg).unwrap_or(false)
    }
}

/// A public JWK parsed by aws-lc for each algorithm its type can verify.
fn parsed_keys(
    params: &AlgorithmParameters,
) -> Vec<(Algorithm, aws_lc_rs::signature::ParsedPublicKey)> {
    use aws_lc_rs::signature::{self as sig, ParsedPublicKey, VerificationAlgorithm};
    let decode = |text: &str| URL_SAFE_NO_PAD.decode(text).ok();
    type Verifications = Vec<(Algorithm, &'static dyn VerificationAlgorithm)>;
    let (bytes, algorithms): (Option<Vec<u8>>, Verifications) = match params {
        AlgorithmParameters::RSA(rsa) => (
            decode(&rsa.n)
                .zip(decode(&rsa.e))
                .map(|(n, e)| rsa_public_key_der(&n, &e)),
            vec![
                (Algorithm::RS256, &sig::RSA_PKCS1_2048_8192_SHA256),
                (Algorithm::RS384, &sig::RSA_PKCS1_2048_8192_SHA384),
                (Algorithm::RS512, &sig::RSA_PKCS1_2048_8192_SHA512),
                (Algorithm::PS256, &sig::RSA_PSS_2048_8192_SHA256),
                (Algorithm::PS384, &sig::RSA_PSS_2048_8192_SHA384),
                (Algorithm::PS512, &sig::RSA_PSS_2048_8192_SHA512),
            ],
        ),
        AlgorithmParameters::EllipticCurve(ec) => {
            let point = decode(&ec.x).zip(decode(&ec.y)).map(|(x, y)| {
                let mut point = vec![0x04];
                point.extend(x);
                point.extend(y);
                point
            });
            match ec.curve {
                EllipticCurve::P256 => (
                    point,
                    vec![(Algorithm::ES256, &sig::ECDSA_P256_SHA256_FIXED)],
                ),
                EllipticCurve::P384 => (
                    point,
                    vec![(Algorithm::ES384, &sig::ECDSA_P384_SHA384_FIXED)],
                ),
                _ => (None, Vec::new()),
            }
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            (decode(&okp.x), vec![(Algorithm::EdDSA, &sig::ED25519)])
        }
        _ => (None, Vec::new()),
    };
    let Some(bytes) = bytes else {
        return Vec::new();
    };
    algorithms
        .into_iter()
        .filter_map(|(alg, verification)| {
            ParsedPublicKey::new(verification, &bytes)
                .ok()
                .map(|parsed| (alg, parsed))
        })
        .collect()
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn length(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend(&bytes[skip..]);
        }
    }
    fn integer(out: &mut Vec<u8>, value: &[u8]) {
        let value = &value[value
            .iter()
            .take_while(|b| **b == 0)
            .count()
            .min(value.len().saturating_sub(1))..];
        let pad = value.first().is_some_and(|b| b & 0x80 != 0);
        out.push(0x02);
        length(out, value.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend(value);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut out = Vec::with_capacity(body.len() + 8);
    out.push(0x30);
    length(&mut out, body.len());
    out.extend(body);
    out
}

/// An immutable set of an issuer's keys, indexed by `kid`. Keys may share a `kid` when
/// their types differ (RFC 7517 section 4.5: an RSA and an EC key as alternatives), so a
/// `kid` names a list; the token's `alg` picks among them.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    by_kid: HashMap<String, Vec<usize>>,
}

impl KeySet {
    /// Reads a JWKS document, skipping (and counting) keys that cannot verify tokens, so
    /// one encryption key or exotic curve does not take the issuer down.
    ///
    /// The second value names the signing keys that were skipped (`kid "k1": why`);
    /// keys published for something else (`use: enc`, `key_ops` without `verify`, as
    /// every Keycloak realm has) are left out quietly.
    pub fn from_jwks(bytes: &[u8]) -> Result<(Self, Vec<String>), KeysError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<Value>,
        }
        let document: Document = serde_json::from_slice(bytes).map_err(KeysError::Parse)?;
        let mut set = KeySet::default();
        let mut skipped = Vec::new();
        for value in document.keys {
            let kid = value.get("kid").and_then(Value::as_str).map(str::to_owned);
            match VerifyingKey::from_jwk(value) {
                Ok(key) => set.insert(key),
                Err(why) if why == NOT_FOR_SIGNING_USE || why == NOT_FOR_VERIFYING => {
                    tracing::debug!(why, "left out a JWK");
                }
                Err(why) => skipped.push(match kid {
                    Some(kid) => format!("kid {kid:?}: {why}"),
                    None => format!("a key without kid: {why}"),
                }),
            }
        }
        // In one order, so that the same keys read the same whatever the JWKS's order.
        skipped.sort();
        if set.keys.is_empty() {
            return Err(KeysError::NoUsableKeys(skipped));
        }
        Ok((set, skipped))
    }

    pub fn hmac(secret: &[u8]) -> Self {
        let mut set = KeySet::default();
        set.insert(VerifyingKey::hmac(secret));
        set
    }

    fn insert(&mut self, key: VerifyingKey) {
        if let Some(kid) = &key.kid {
            self.by_kid
                .entry(kid.clone())
                .or_default()
                .push(self.keys.len());
        }
        self.keys.push(key);
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// The keys that may have signed a token with this `kid` and `alg`. A `kid` selects
    /// its key; without one (or with an unknown one, for kid-less keys such as a shared
    /// secret) every key of the right type is a candidate.
    pub fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<impl Iterator<Item = &VerifyingKey>, Rejection> {
        let named: &[usize] = kid
            .and_then(|kid| self.by_kid.get(kid))
            .map_or(&[], Vec::as_slice);
        let mut direct = named
            .iter()
            .map(|&i| &self.keys[i])
            .filter(move |key| key.accepts(alg))
            .peekable();
        if !named.is_empty() && direct.peek().is_none() {
            return Err(Rejection::new(
                Reason::BadSignature,
                "the key for this kid does not allow alg",
            ));
        }
        let scan_kidless_only = kid.is_some();
        let scan = named.is_empty();
        let mut others = self
            .keys
            .iter()
            .filter(move |key| {
                scan && (!scan_kidless_only || key.kid.is_none()) && key.accepts(alg)
            })
            .peekable();
        if named.is_empty() && others.peek().is_none() {
            return Err(Rejection::new(
                Reason::UnknownKey,
                "no key of the issuer matches kid and alg",
            ));
        }
        Ok(direct.chain(others))
    }

    fn contains_key_material(&self, thumb: &[u8; 32]) -> bool {
        self.keys.iter().any(|key| &key.thumb == thumb)
    }
}

// === impl Issuer ===

/// A trusted issuer: its token rules, its key source and its current key set.
#[derive(Debug)]
pub struct Issuer {
    pub policy: Policy,
    source: Source,
    refresh: RefreshPolicy,
    /// Its RFC 7662 endpoint for opaque tokens, if any.
    pub opaque: Option<opaque::Endpoint>,
    /// What calls to its endpoint and enrichers may use.
    budget: Arc<crate::outbound::Budget>,
    current: ArcSwapOption<KeySet>,
    /// Bumped whenever a new key set lacks a key the previous one had (dropped, or
    /// replaced under the same kid), so cached verifications made with it are not
    /// served any more.
    epoch: AtomicU64,
    /// Unix seconds of the last successful load, 0 before the first.
    loaded_at: AtomicI64,
    /// Failed fetches since start.
    failures: AtomicU64,
    /// Successful loads since start.
    loads: AtomicU64,
    loaded: watch::Sender<bool>,
    /// Held while refetching for an unknown `kid`; remembers when that last started.
    refetch_gate: Mutex<Option<Instant>>,
    /// The signing keys the last load skipped, as logged.
    last_skipped: std::sync::Mutex<String>,
    http: reqwest::Client,
}

impl Issuer {
    pub fn new(spec: IssuerSpec, http: reqwest::Client) -> Self {
        let IssuerSpec {
            policy,
            source,
            refresh,
            opaque,
            outbound: (max_in_flight, per_second),
        } = spec;
        Self {
            policy,
            source,
            refresh,
            opaque,
            budget: Arc::new(crate::outbound::Budget::new(max_in_flight, per_second)),
            current: ArcSwapOption::empty(),
            epoch: AtomicU64::new(0),
            loaded_at: AtomicI64::new(0),
            failures: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            loaded: watch::Sender::new(false),
            refetch_gate: Mutex::new(None),
            last_skipped: std::sync::Mutex::new(String::new()),
            http,
        }
    }

    /// The HTTP client for this issuer's endpoints.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// What calls to this issuer's endpoint and enrichers may use.
    pub fn budget(&self) -> &Arc<crate::outbound::Budget> {
        &self.budget
    }

    /// The current key set; `None` until the first load.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Unix seconds of the last successful key load, if any.
    pub fn loaded_at(&self) -> Option<i64> {
        Some(self.loaded_at.load(Ordering::Relaxed)).filter(|at| *at > 0)
    }

    /// Failed key fetches since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Key sets loaded and published since start.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Resolves once the first key set is published.
    pub async fn wait_loaded(&self) {
        let mut loaded = self.loaded.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = loaded.wait_for(|loaded| *loaded).await;
    }

    /// Whether the key source can change at all (inline keys and secrets cannot).
    fn is_static(&self) -> bool {
        matches!(self.source, Source::Inline(_) | Source::HmacSecret(_))
    }

    fn publish(&self, set: KeySet) {
        let new = Arc::new(set);
        if let Some(old) = self.current.swap(Some(new.clone()))
            && old
                .keys
                .iter()
                .any(|key| !new.contains_key_material(&key.thumb))
        {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        self.loaded_at.store(crate::unix_now(), Ordering::Relaxed);
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.loaded.send_replace(true);
    }

    /// One fetch from the key source, published on success. Returns the source's
    /// `max-age`, if it gave one.
    pub async fn load(&self) -> Result<Option<std::time::Duration>, KeysError> {
        let fetched = fetch::fetch(
            &self.http,
            &self.policy.issuer,
            &self.source,
            self.refresh.fetch_timeout,
        )
        .await
        .inspect_err(|_| {
            self.failures.fetch_add(1, Ordering::Relaxed);
        })?;
        // Said when the skipped keys change, not on every refresh of the same set.
        let skipped = fetched.skipped.join("; ");
        if let Ok(mut last) = self.last_skipped.lock()
            && *last != skipped
        {
            if skipped.is_empty() {
                tracing::info!(iss = %self.policy.issuer, "every signing key of the issuer's JWKS is usable again");
            } else {
                tracing::warn!(
                    iss = %self.policy.issuer,
                    %skipped,
                    "some signing keys of the issuer's JWKS cannot verify tokens and were skipped"
                );
            }
            *last = skipped;
        }
        self.publish(fetched.set);
        Ok(fetched.max_age)
    }

    /// Refetches the key set now (a token whose `kid` is unknown, or whose kid's keys
    /// do not verify it; SIGHUP), unless a refetch started less than
    /// `unknown_kid_refetch_secs` ago. Concurrent callers wait for the refetch in flight
    /// instead of starting their own. Callers look at [`Self::keys`] again afterwards
    /// either way.
    pub async fn refetch_now(&self) {
        if self.is_static() {
            return;
        }
        let mut last = self.refetch_gate.lock().await;
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.refresh.unknown_kid_min_interval) {
            return;
        }
        *last = Some(now);
        match self.load().await {
            Ok(_) => tracing::info!(iss = %self.policy.issuer, "refetched keys"),
            Err(error) => tracing::warn!(
                iss = %self.policy.issuer,
                %error,
                "refetching keys failed; keeping the last key set"
            ),
        }
    }
}

/// Every configured issuer, by exact `iss`.
#[derive(Debug, Default)]
pub struct Issuers {
    by_iss: HashMap<String, Arc<Issuer>>,
    /// Issuers with an introspection endpoint for opaque tokens, in configuration order.
    opaque: Vec<Arc<Issuer>>,
}

impl Issuers {
    pub fn new(specs: Vec<IssuerSpec>, http: reqwest::Client) -> Self {
        let issuers: Vec<Arc<Issuer>> = specs
            .into_iter()
            .map(|spec| Arc::new(Issuer::new(spec, http.clone())))
            .collect();
        let opaque = issuers
            .iter()
            .filter(|issuer| issuer.opaque.is_some())
            .cloned()
            .collect();
        let by_iss = issuers
            .into_iter()
            .map(|issuer| (issuer.policy.issuer.clone(), issuer))
            .collect();
        Self { by_iss, opaque }
    }

    pub fn get(&self, iss: &str) -> Option<&Arc<Issuer>> {
        self.by_iss.get(iss)
    }

    /// Issuers with an introspection endpoint for opaque tokens, in configuration order.
    pub fn with_opaque_introspection(&self) -> &[Arc<Issuer>] {
        &self.opaque
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.by_iss.values()
    }

    /// Resolves once every issuer's keys have loaded once.
    pub async fn wait_all_loaded(&self) {
        for issuer in self.by_iss.values() {
            issuer.wait_loaded().await;
        }
    }
}

pub use refresh::keep_fresh;

#[cfg(test)]
mod tests;
