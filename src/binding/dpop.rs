//! DPoP proofs (RFC 9449 section 4.3): a JWT the client signs per request with the key
//! its token is bound to. Checked here: `typ`, an asymmetric `alg` from the allow-list,
//! a public `jwk` header, the signature, `htm`, `htu` (normalised), `iat` within the
//! window, `jti` not seen before, `ath`, the server `nonce` when required, and the key's
//! RFC 7638 thumbprint against the token's `cnf.jkt`.
//!
//! The replay cache is per replica and bounded: a proof replayed to another replica
//! within the window is not caught, and when the cache is full its oldest proofs are
//! dropped first (a replay of one of them, still inside its window, then passes).
//! Server nonces narrow both gaps: a proof must then carry a nonce issued within the
//! last nonce period, and every replica derives the same nonces from the shared
//! `nonce_secret`.

use aws_lc_rs::{
    constant_time, hmac,
    rand::{SecureRandom, SystemRandom},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::keys::VerifyingKey;
use crate::token::sign::{SignError, SigningKey};
use crate::token::{Reason, Rejection};
use crate::ttl_map::TtlMap;

/// `[dpop]`, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Algorithms a proof may be signed with (asymmetric only).
    pub algorithms: Vec<Algorithm>,
    /// A proof's `iat` may be at most this old...
    pub max_age_secs: i64,
    /// ...and at most this far in the future.
    pub clock_skew_secs: i64,
    /// Proofs must carry a server nonce (the `DPoP-Nonce` flow).
    pub require_nonce: bool,
    /// Secret the nonces derive from; replicas sharing it accept each other's nonces.
    /// `None`: a random one per process.
    pub nonce_secret: Option<Vec<u8>>,
    /// A nonce is good for this period and the next.
    pub nonce_period_secs: i64,
    /// Proofs (`jti`s) remembered at once, per replica.
    pub replay_cache_entries: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            max_age_secs: 60,
            clock_skew_secs: 5,
            require_nonce: false,
            nonce_secret: None,
            nonce_period_secs: 300,
            replay_cache_entries: 100_000,
        }
    }
}

pub const DEFAULT_ALGORITHMS: &[Algorithm] = &[
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::RS256,
    Algorithm::PS256,
];

/// The request a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    /// SHA-256 of the access token (`ath`).
    pub token_hash: &'a [u8; 32],
}

const fn invalid(detail: &'static str) -> Rejection {
    Rejection::new(Reason::DpopProofInvalid, detail)
}

pub const NONCE_REQUIRED: Rejection = Rejection::new(
    Reason::DpopNonceRequired,
    "the proof lacks a current server nonce",
);

/// Members of a JWK that only a private key has.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
const MAX_JTI_BYTES: usize = 256;
const MAX_PROOF_BYTES: usize = 8 * 1024;

pub struct Verifier {
    settings: Settings,
    /// `jti`s seen (keyed with the key's thumbprint), until they can no longer pass.
    seen: TtlMap<[u8; 16], (), crate::digest::DigestHashing>,
    nonce_key: hmac::Key,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("settings.algorithms", &self.settings.algorithms)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(settings: Settings) -> Self {
        let secret = settings.nonce_secret.clone().unwrap_or_else(|| {
            let mut secret = vec![0u8; 32];
            // Without randomness the nonces are predictable, not unsafe to accept: a
            // nonce only shortens the window, the proof's signature still decides.
            let _ = SystemRandom::new().fill(&mut secret);
            secret
        });
        Self {
            seen: TtlMap::new(settings.replay_cache_entries.max(1)),
            nonce_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            settings,
        }
    }

    /// Whether proofs must carry a nonce; then every DPoP answer offers a fresh one.
    pub fn requires_nonce(&self) -> bool {
        self.settings.require_nonce
    }

    /// The nonce to hand out now (`DPoP-Nonce`).
    pub fn nonce(&self, now: i64) -> String {
        self.nonce_for(now.div_euclid(self.settings.nonce_period_secs.max(1)))
    }

    fn nonce_for(&self, period: i64) -> String {
        let period = period.to_be_bytes();
        let tag = hmac::sign(&self.nonce_key, &period);
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&period);
        bytes[8..].copy_from_slice(&tag.as_ref()[..16]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn nonce_is_current(&self, nonce: &str, now: i64) -> bool {
        let current = now.div_euclid(self.settings.nonce_period_secs.max(1));
        [current, current - 1].into_iter().any(|period| {
            constant_time::verify_slices_are_equal(
                self.nonce_for(period).as_bytes(),
                nonce.as_bytes(),
            )
            .is_ok()
        })
    }

    /// Checks `proof` for `request`, made with the key whose thumbprint is `jkt`.
    pub fn verify(
        &self,
        proof: &str,
        jkt: &str,
        request: &Request<'_>,
        now: i64,
    ) -> Result<(), Rejection> {
        if proof.len() > MAX_PROOF_BYTES {
            return Err(invalid("the proof is too large"));
        }
        let mut parts = proof.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("the proof is not a compact JWS"));
        };
        let header = decode_object(header).ok_or(invalid("the proof header is not JSON"))?;
        let typ = header.get("typ").and_then(Value::as_str);
        if typ.map(crate::token::media_type_name).as_deref() != Some("dpop+jwt") {
            return Err(invalid("typ is not dpop+jwt"));
        }
        // No JWS extension is understood (RFC 7515 section 4.1.11).
        if header.contains_key("crit") {
            return Err(invalid("crit names an extension that is not understood"));
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(|alg| alg.parse::<Algorithm>().ok())
            .filter(|alg| self.settings.algorithms.contains(alg))
            .ok_or(invalid("alg is not an allowed asymmetric algorithm"))?;
        let Some(Value::Object(jwk)) = header.get("jwk") else {
            return Err(invalid("no jwk header"));
        };
        if PRIVATE_MEMBERS
            .iter()
            .any(|member| jwk.contains_key(*member))
        {
            return Err(invalid("the jwk header holds a private key"));
        }
        let thumbprint = thumbprint(jwk).ok_or(invalid("the jwk header is not a public key"))?;
        let key = VerifyingKey::from_jwk(Value::Object(jwk.clone()))
            .map_err(|_| invalid("the jwk header is not a usable public key"))?;
        if !key.accepts(alg) {
            return Err(invalid("the jwk does not fit alg"));
        }
        let signing_input = &proof[..header_and_payload_len(proof)];
        if !key.verify(signing_input.as_bytes(), signature, alg) {
            return Err(invalid("the proof's signature does not verify"));
        }
        if constant_time::verify_slices_are_equal(thumbprint.as_bytes(), jkt.as_bytes()).is_err() {
            return Err(invalid(
                "the proof's key is not the one the token is bound to",
            ));
        }
        let claims = decode_object(payload).ok_or(invalid("the proof claims are not JSON"))?;
        if claims.get("htm").and_then(Value::as_str) != Some(request.method) {
            return Err(invalid("htm is not the request's method"));
        }
        let htu = claims
            .get("htu")
            .and_then(Value::as_str)
            .and_then(normalize_uri);
        if htu.is_none() || htu != normalize_uri(request.uri) {
            return Err(invalid("htu is not the request's URI"));
        }
        let iat = crate::token::numeric_date(claims.get("iat"))
            .ok()
            .flatten()
            .ok_or(invalid("iat is missing or not a NumericDate"))?;
        if iat < now - self.settings.max_age_secs {
            return Err(invalid("iat is too old"));
        }
        if iat > now + self.settings.clock_skew_secs {
            return Err(invalid("iat is in the future"));
        }
        let ath = URL_SAFE_NO_PAD.encode(request.token_hash);
        if claims.get("ath").and_then(Value::as_str) != Some(ath.as_str()) {
            return Err(invalid("ath is not the hash of the access token"));
        }
        if self.settings.require_nonce {
            let nonce = claims.get("nonce").and_then(Value::as_str);
            if !nonce.is_some_and(|nonce| self.nonce_is_current(nonce, now)) {
                return Err(NONCE_REQUIRED);
            }
        }
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .filter(|jti| !jti.is_empty() && jti.len() <= MAX_JTI_BYTES)
            .ok_or(invalid("jti is missing or too long"))?;
        // Last: only a proof good in every other way takes a place in the cache.
        let seen_key = crate::digest::digest128(&[&thumbprint, jti]);
        let until = iat + self.settings.max_age_secs + 1;
        if !self.seen.insert_new(seen_key, (), until.max(now + 1), now) {
            return Err(invalid("the proof's jti was already used"));
        }
        Ok(())
    }

    /// Drops remembered `jti`s that can no longer pass.
    pub fn purge_expired(&self, now: i64) {
        self.seen.purge_expired(now);
    }
}

/// The public JWK a proof carries for `key`: its key members only.
pub fn proof_jwk(key: &SigningKey) -> Map<String, Value> {
    let mut jwk = match key.public_jwk() {
        Value::Object(jwk) => jwk,
        _ => Map::new(),
    };
    for member in ["kid", "alg", "use"] {
        jwk.remove(member);
    }
    jwk
}

/// What a client puts in a proof; `introspectd dpop-proof` and the tests make them.
#[derive(Debug, Clone, Default)]
pub struct ProofClaims<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    /// The access token the proof goes with (`ath`).
    pub access_token: Option<&'a str>,
    pub nonce: Option<&'a str>,
}

/// A proof signed by `key`, issued at `now` with a fresh `jti`.
pub fn make_proof(
    key: &SigningKey,
    claims: &ProofClaims<'_>,
    now: i64,
) -> Result<String, SignError> {
    let header = serde_json::json!({
        "typ": "dpop+jwt",
        "alg": format!("{:?}", key.alg()),
        "jwk": proof_jwk(key),
    });
    let mut body = serde_json::json!({
        "jti": crate::token::sign::random_id()?,
        "htm": claims.method,
        "htu": claims.uri,
        "iat": now,
    });
    if let Some(token) = claims.access_token {
        body["ath"] = Value::from(URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())));
    }
    if let Some(nonce) = claims.nonce {
        body["nonce"] = Value::from(nonce);
    }
    key.sign_compact(&header, &body)
}

fn header_and_payload_len(proof: &str) -> usize {
    proof.rfind('.').unwrap_or(0)
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// RFC 7638 JWK thumbprint: SHA-256 of the required members, in lexicographic order,
/// without whitespace; base64url.
pub fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    let quoted = |text: &str| serde_json::to_string(text).ok();
    let canonical = match member("kty")? {
        "EC" => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            quoted(member("crv")?)?,
            quoted(member("x")?)?,
            quoted(member("y")?)?
        ),
        "RSA" => format!(
            r#"{{"e":{},"kty":"RSA","n":{}}}"#,
            quoted(member("e")?)?,
            quoted(member("n")?)?
        ),
        "OKP" => format!(
            r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
            quoted(member("crv")?)?,
            quoted(member("x")?)?
        ),
        _ => return None,
    };
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// `htu` comparison form (RFC 9449 section 4.3, with RFC 3986 section 6.2.2's
/// normalisation): scheme and host in lower case, the default port dropped, dot
/// segments removed, percent-encoding normalised, no query or fragment; `None` for what
/// is not an absolute http(s) URI, or one with userinfo (which would be dropped, and
/// another host's URI could then read as this one's).
pub fn normalize_uri(uri: &str) -> Option<String> {
    let parsed = url::Url::parse(uri).ok()?;
    if !matches!(parsed.scheme(), "http" | "https")
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return None;
    }
    let host = parsed.host_str()?;
    let port = parsed
        .port()
        .map(|port| format!(":{port}"))
        .unwrap_or_default();
    Some(format!(
        "{}://{host}{port}{}",
        parsed.scheme(),
        normalize_percent_encoding(parsed.path())
    ))
}

/// RFC 3986 section 6.2.2.2: a percent-encoded unreserved character is that character,
/// and the hex digits of any other are upper case.
fn normalize_percent_encoding(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains('%') {
        return std::borrow::Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) => {
                out.push(char::from(byte));
                i += 3;
            }
            Some(byte) => {
                out.push_str(&format!("%{byte:02X}"));
                i += 3;
            }
            None => {
                out.push(char::from(bytes[i]));
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}
