//! Sender-constrained access tokens: a token bound to a key (`cnf.jkt`, DPoP, RFC 9449)
//! or to a client certificate (`cnf.x5t#S256`, RFC 8705) is active only when the call
//! proves possession of that key or certificate. The binding is read from the verified
//! claims (a JWT's or an opaque token's introspection answer), so a cached verification
//! still has its proof checked on every call.
//!
//! Transports only extract what the request presents ([`Presentation`]); the decision
//! is here.

pub mod dpop;

use base64::{
    Engine,
    engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::token::{AccessToken, Reason, Rejection, TokenHash};

/// What a call presents besides the token itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presentation<'a> {
    /// The `DPoP` request header: a proof JWT.
    pub dpop_proof: Option<&'a str>,
    /// The scheme the token came with, where the caller saw it.
    pub scheme: Scheme,
    /// The method and URI of the request the proof is for.
    pub http_method: Option<&'a str>,
    pub http_uri: Option<&'a str>,
    /// SHA-256 of the TLS client certificate the request came with (its `x5t#S256`).
    pub client_certificate: Option<[u8; 32]>,
}

/// The `Authorization` scheme a token came with (RFC 9449 section 7.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scheme {
    /// The caller did not say (an introspection request that carries no scheme).
    #[default]
    Unstated,
    Bearer,
    Dpop,
}

/// What a token is bound to, from its `cnf` claim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confirmation<'a> {
    /// RFC 7638 thumbprint of the DPoP key.
    pub jkt: Option<&'a str>,
    /// base64url SHA-256 of the client certificate.
    pub x5t_s256: Option<&'a str>,
}

impl<'a> Confirmation<'a> {
    /// The token's binding. A `cnf` with members we must honour but cannot read (a
    /// non-string `jkt`, say), or a confirmation method we cannot check (RFC 7800's
    /// `jwk`, `kid`, `jku`, `jwe`, anything else), makes the token unusable rather
    /// than unbound.
    pub fn read(token: &'a AccessToken) -> Result<Self, Rejection> {
        const UNREADABLE: Rejection = Rejection::new(Reason::Malformed, "cnf is not readable");
        const UNCHECKABLE: Rejection = Rejection::new(
            Reason::WrongTokenType,
            "cnf binds the token by a method other than jkt or x5t#S256",
        );
        let cnf = match token.other_claims.get("cnf") {
            None => return Ok(Self::default()),
            Some(Value::Object(cnf)) => cnf,
            Some(_) => return Err(UNREADABLE),
        };
        if cnf.keys().any(|name| name != "jkt" && name != "x5t#S256") {
            return Err(UNCHECKABLE);
        }
        let member = |name: &str| match cnf.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.as_str())),
            Some(_) => Err(UNREADABLE),
        };
        Ok(Self {
            jkt: member("jkt")?,
            x5t_s256: member("x5t#S256")?,
        })
    }
}

pub const PROOF_REQUIRED: Rejection = Rejection::new(
    Reason::DpopProofRequired,
    "the token is DPoP-bound and no proof came with it",
);
pub const BEARER_SCHEME: Rejection = Rejection::new(
    Reason::DpopProofRequired,
    "the token is DPoP-bound and came with the Bearer scheme",
);
pub const CERTIFICATE_MISMATCH: Rejection = Rejection::new(
    Reason::CertificateMismatch,
    "the token is bound to a client certificate the call did not present",
);

/// Whether `token` has a `cnf` claim at all: found once, when the token is verified, and
/// kept with it, so that a cache hit of an unbound token (most are) does not look in its
/// claims again.
pub fn has_confirmation(token: &AccessToken) -> bool {
    token.other_claims.contains_key("cnf")
}

/// Checks the binding of verified tokens; holds the DPoP replay cache and nonces.
#[derive(Debug)]
pub struct Binder {
    dpop: dpop::Verifier,
}

impl Binder {
    pub fn new(settings: dpop::Settings) -> Self {
        Self {
            dpop: dpop::Verifier::new(settings),
        }
    }

    pub fn dpop(&self) -> &dpop::Verifier {
        &self.dpop
    }

    /// Whether the call proves what `token` is bound to. Unbound tokens pass, unless
    /// they came with the DPoP scheme (RFC 9449 section 7.1: a DPoP request needs a
    /// DPoP-bound token); a DPoP-bound token never passes with the Bearer scheme, proof
    /// or not (section 7.2).
    /// `has_confirmation`: [`has_confirmation`] of `token`.
    pub fn check(
        &self,
        token: &AccessToken,
        has_confirmation: bool,
        hash: &TokenHash,
        presented: &Presentation<'_>,
        now: i64,
    ) -> Result<(), Rejection> {
        debug_assert_eq!(has_confirmation, self::has_confirmation(token));
        let cnf = if has_confirmation {
            Confirmation::read(token)?
        } else {
            Confirmation::default()
        };
        if let Some(bound) = cnf.x5t_s256 {
            let presented = presented
                .client_certificate
                .map(|sha256| URL_SAFE_NO_PAD.encode(sha256));
            if presented.as_deref() != Some(bound) {
                return Err(CERTIFICATE_MISMATCH);
            }
        }
        match (cnf.jkt, presented.dpop_proof) {
            (None, _) if presented.scheme == Scheme::Dpop => Err(Rejection::new(
                Reason::WrongTokenType,
                "the DPoP scheme with a token that is not DPoP-bound",
            )),
            (None, _) => Ok(()),
            (Some(_), _) if presented.scheme == Scheme::Bearer => Err(BEARER_SCHEME),
            (Some(_), None) => Err(PROOF_REQUIRED),
            (Some(jkt), Some(proof)) => {
                // A proof is for one request: without its method and URI there is
                // nothing to check `htm` and `htu` against.
                let (Some(method), Some(uri)) = (
                    presented.http_method.filter(|method| !method.is_empty()),
                    presented.http_uri.filter(|uri| !uri.is_empty()),
                ) else {
                    return Err(Rejection::new(
                        Reason::DpopProofInvalid,
                        "the request's method or URI is not known, so the proof cannot be checked",
                    ));
                };
                let request = dpop::Request {
                    method,
                    uri,
                    token_hash: &hash.0,
                };
                self.dpop.verify(proof, jkt, &request, now)
            }
        }
    }
}

/// The thumbprint of a certificate given as text (a form field or a header, where DER
/// cannot be): a PEM text, base64 DER, or the SHA-256 thumbprint itself as the tools
/// print it: `x5t#S256` (base64url), standard base64, padded or not, or hex, with colons
/// or without (Envoy's `Hash=`, `openssl x509 -fingerprint -sha256`, whose whole line
/// may come). `None` for anything else: a text that is neither would only ever
/// mismatch, so the caller hears of it instead.
pub fn certificate_text_thumbprint(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().trim_start_matches('\u{feff}');
    if text.contains("-----BEGIN CERTIFICATE-----") {
        return pem_certificate(text).map(|der| Sha256::digest(der).into());
    }
    let text = text
        .rsplit_once("Fingerprint=")
        .map_or(text, |(_, fingerprint)| fingerprint.trim());
    let mut out = [0u8; 32];
    let unpadded = text.trim_end_matches('=');
    let decoded = match text.len() {
        43 | 44 => URL_SAFE_NO_PAD
            .decode_slice(unpadded, &mut out)
            .or_else(|_| STANDARD_NO_PAD.decode_slice(unpadded, &mut out))
            .ok(),
        64 => hex::decode_to_slice(text, &mut out).ok().map(|()| 32),
        95 => hex::decode_to_slice(text.replace(':', ""), &mut out)
            .ok()
            .map(|()| 32),
        // Longer: a certificate's DER in base64 (Traefik's header, PEM without armour).
        96.. => {
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            return base64::engine::general_purpose::STANDARD
                .decode(compact)
                .ok()
                .filter(|der| der.first() == Some(&0x30))
                .map(|der| Sha256::digest(der).into());
        }
        _ => None,
    };
    (decoded == Some(32)).then_some(out)
}

/// The SHA-256 thumbprint of a client certificate as a caller passes it: DER bytes (a
/// SEQUENCE, which is never UTF-8) or any text [`certificate_text_thumbprint`] reads.
pub fn certificate_thumbprint(presented: &[u8]) -> Option<[u8; 32]> {
    match std::str::from_utf8(presented) {
        Ok(text) => certificate_text_thumbprint(text),
        Err(_) if presented.first() == Some(&0x30) => Some(Sha256::digest(presented).into()),
        Err(_) => None,
    }
}

/// The DER of the first certificate in a PEM text.
fn pem_certificate(text: &str) -> Option<Vec<u8>> {
    let body = text
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)?
        .split("-----END CERTIFICATE-----")
        .next()?;
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

/// The client certificate's thumbprint from a header a gateway set: Envoy's
/// `x-forwarded-client-cert` (`Hash=<hex SHA-256>` or `Cert="<URL-encoded PEM>"`), a
/// URL-encoded PEM (nginx `$ssl_client_escaped_cert`, Caddy), or base64 DER (Traefik's
/// `X-Forwarded-Tls-Client-Cert`, PEM without its armour).
pub fn certificate_from_header(value: &str) -> Option<[u8; 32]> {
    let value = value.trim();
    if value.contains('=') && (value.contains("Hash=") || value.contains("Cert=")) {
        let pairs = xfcc_element(value)?;
        let value_of = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        if let Some(hex) = value_of("Hash") {
            let mut out = [0u8; 32];
            return hex::decode_to_slice(hex, &mut out).ok().map(|()| out);
        }
        return certificate_thumbprint(percent_decode(value_of("Cert")?)?.as_bytes());
    }
    if value.starts_with("-----BEGIN") {
        return certificate_text_thumbprint(&percent_decode(value)?);
    }
    let decoded = percent_decode(value)?;
    // Traefik's chain: the certificates joined with commas, the client's first.
    certificate_text_thumbprint(decoded.split(',').next().unwrap_or_default())
}

/// The pairs of an `x-forwarded-client-cert` holding one element, read by its grammar:
/// pairs split on `;`, elements on `,`, both outside `"` quotes, where `\` escapes the
/// next character. So what the client's own certificate says (a subject or a URI SAN,
/// which Envoy quotes) never adds a pair. `None` for a second element (which proxy's
/// client would this request be?), a key given twice, or a pair without `=`.
fn xfcc_element(header: &str) -> Option<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let (mut key, mut value) = (String::new(), String::new());
    let (mut in_value, mut quoted, mut escaped) = (false, false, false);
    let mut finish = |key: &mut String, value: &mut String, in_value: &mut bool| {
        let name = std::mem::take(key).trim().to_owned();
        let done = std::mem::take(value);
        let had_value = std::mem::replace(in_value, false);
        if !had_value || pairs.iter().any(|(seen, _)| *seen == name) {
            return false;
        }
        pairs.push((name, done));
        true
    };
    for c in header.chars() {
        if quoted {
            match c {
                _ if escaped => {
                    value.push(c);
                    escaped = false;
                }
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => value.push(c),
            }
            continue;
        }
        match c {
            ',' => return None,
            ';' => {
                if !finish(&mut key, &mut value, &mut in_value) {
                    return None;
                }
            }
            '=' if !in_value => in_value = true,
            '"' if in_value && value.is_empty() => quoted = true,
            _ if in_value => value.push(c),
            _ => key.push(c),
        }
    }
    if quoted || !finish(&mut key, &mut value, &mut in_value) {
        return None;
    }
    Some(pairs)
}

fn percent_decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests;
