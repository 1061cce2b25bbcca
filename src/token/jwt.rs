//! JWS compact tokens: parsing, signature verification and the claims rules of
//! RFC 9068 and RFC 8725.
//!
//! jsonwebtoken is used for the signature only; every header and claim rule is ours,
//! because the crate leaves `typ`, `crit`, `iat` and a JWK's own `alg`/`use` unchecked,
//! skips `nbf` unless told, and checks `iss`/`aud` only when present.

use std::str::FromStr;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{AccessToken, Policy, Reason, Rejection, TypPolicy, rules};
use crate::keys::KeySet;

/// A token split and decoded, its signature not yet checked: nothing in it is trusted
/// except for choosing the issuer and the key.
#[derive(Debug)]
pub struct ParsedJwt<'a> {
    header: Header,
    claims: Map<String, Value>,
    signing_input: &'a str,
    signature: &'a str,
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
    // Headers that carry or point to key material. Trusting them would let the token
    // choose its own key (RFC 8725 section 3.10), so their mere presence refuses it.
    #[serde(default, deserialize_with = "present")]
    jku: bool,
    #[serde(default, deserialize_with = "present")]
    x5u: bool,
    #[serde(default, deserialize_with = "present")]
    jwk: bool,
    #[serde(default, deserialize_with = "present")]
    x5c: bool,
}

/// Whether a header member is there at all: `null` included, which `Option` would
/// read as absent, for members whose presence alone refuses a token.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
}

const MALFORMED: Rejection = Rejection::new(Reason::Malformed, "not a JWS compact token");

/// Splits and decodes a token. Size is checked before any decoding.
pub fn parse(token: &str, max_bytes: usize) -> Result<ParsedJwt<'_>, Rejection> {
    match classify(token, max_bytes)? {
        Classified::Jws(jwt) => Ok(jwt),
        Classified::Opaque => Err(MALFORMED),
    }
}

/// What a token is, decided in the one pass that also parses a JWS.
#[derive(Debug)]
// The large variant is the common one and lives on the stack for one verification;
// boxing it would add an allocation to every cold token.
#[allow(clippy::large_enum_variant)]
pub enum Classified<'a> {
    Jws(ParsedJwt<'a>),
    /// Not a JWS by shape (see [`super::is_jws`]): for the issuers' endpoints.
    Opaque,
}

/// Splits and decodes a JWS, or says the token is opaque: exactly three base64url
/// segments whose header decodes to a JSON object with an `alg` is a JWS, anything else
/// opaque. Size is checked before any decoding; a JWS whose payload or signature does
/// not decode, or whose header names an `alg` but is not otherwise a JOSE header we can
/// read (or has padding or whitespace around it), is `MALFORMED`.
pub fn classify(token: &str, max_bytes: usize) -> Result<Classified<'_>, Rejection> {
    if token.len() > max_bytes {
        return Err(Rejection::new(
            Reason::Malformed,
            "token longer than the limit",
        ));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(Classified::Opaque);
    };
    // An empty signature is well-formed (that is what `alg: none` looks like); the
    // algorithm check refuses it.
    if header.is_empty() || payload.is_empty() {
        return Ok(Classified::Opaque);
    }
    // A JOSE header all the same, however mangled: `MALFORMED`, never sent to an issuer's
    // endpoint as an opaque token.
    let malformed_if_jose = |why: &'static str| {
        if names_an_alg(header) {
            Err(Rejection::new(Reason::Malformed, why))
        } else {
            Ok(Classified::Opaque)
        }
    };
    if !is_base64url(token) {
        return malformed_if_jose(
            "a JWS with padding, whitespace or other characters base64url does not have",
        );
    }
    let Ok(header) = decode_json::<Header>(header) else {
        return malformed_if_jose(
            "the JOSE header has a member twice or of the wrong type (kid and typ are strings)",
        );
    };
    let claims: Map<String, Value> = decode_json(payload)?;
    if URL_SAFE_NO_PAD.decode(signature).is_err() {
        return Err(Rejection::new(
            Reason::Malformed,
            "signature is not base64url",
        ));
    }
    let signing_input = &token[..token.len() - signature.len() - 1];
    Ok(Classified::Jws(ParsedJwt {
        header,
        claims,
        signing_input,
        signature,
    }))
}

/// Whether a segment is a JSON object with an `alg`: a JOSE header, however malformed
/// otherwise.
fn names_an_alg(segment: &str) -> bool {
    // Read as leniently as a JWS could have been mangled: wrapped lines, padding,
    // the standard alphabet.
    let compact: String = segment
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .collect();
    URL_SAFE_NO_PAD
        .decode(&compact)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
        .is_some_and(|header| header.contains_key("alg"))
}

/// Only base64url characters and the segment dots.
fn is_base64url(token: &str) -> bool {
    token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The claims of a JWS, not verified: for callers that verified it themselves
/// (CheckRevocation) or only need a bound (how long to keep a revocation).
pub fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    decode_json(token.split('.').nth(1)?).ok()
}

fn decode_json<T: for<'de> Deserialize<'de>>(segment: &str) -> Result<T, Rejection> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Rejection::new(Reason::Malformed, "segment is not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| Rejection::new(Reason::Malformed, "segment is not the expected JSON"))
}

/// Both steps of verification, for callers that need no refetch in between.
pub fn verify(
    jwt: ParsedJwt<'_>,
    policy: &Policy,
    keys: &KeySet,
    now: i64,
) -> Result<AccessToken, Rejection> {
    jwt.check_signature(policy, keys)?;
    jwt.into_access_token(policy, now)
}

impl ParsedJwt<'_> {
    /// The unverified `iss`, used only to pick the issuer whose keys must verify it.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    pub fn kid(&self) -> Option<&str> {
        self.header.kid.as_deref()
    }

    /// Header rules and the signature, against this issuer's policy and key set.
    /// `UNKNOWN_KEY` means a refetch of the key set may help.
    pub fn check_signature(&self, policy: &Policy, keys: &KeySet) -> Result<(), Rejection> {
        let header = &self.header;
        if header.jku || header.x5u || header.jwk || header.x5c {
            return Err(Rejection::new(
                Reason::Malformed,
                "header carries or points to a key (jku, x5u, jwk, x5c)",
            ));
        }
        if header.crit {
            // No JWS extension is understood, so any `crit` must be refused (RFC 7515 4.1.11).
            return Err(Rejection::new(
                Reason::Malformed,
                "crit names an extension that is not understood",
            ));
        }
        let alg = Algorithm::from_str(&header.alg)
            .map_err(|_| Rejection::new(Reason::BadSignature, "alg is none or unsupported"))?;
        if !policy.algorithms.contains(&alg) {
            return Err(Rejection::new(
                Reason::BadSignature,
                "alg is not allowed for this issuer",
            ));
        }
        let candidates = keys.candidates(header.kid.as_deref(), alg)?;
        for key in candidates {
            if key.verify(self.signing_input.as_bytes(), self.signature, alg) {
                return Ok(());
            }
        }
        // A kid the set does not name, tried against its kid-less keys in vain: most
        // likely a rotation, so the caller's refetch must get its chance.
        if header
            .kid
            .as_deref()
            .is_some_and(|kid| !keys.contains_kid(kid))
        {
            return Err(Rejection::new(
                Reason::UnknownKey,
                "no key of the issuer has this kid",
            ));
        }
        Err(Rejection::new(
            Reason::BadSignature,
            "signature does not verify",
        ))
    }

    /// Claims rules, once the signature holds.
    pub fn into_access_token(self, policy: &Policy, now: i64) -> Result<AccessToken, Rejection> {
        check_header_type(self.header.typ.as_deref(), &self.claims, policy.typ)?;
        rules::accept(self.claims, policy, rules::Source::Jwt, now)
    }
}

/// A JOSE `typ` as the media type it names: case-insensitive, and `application/` may be
/// left out (RFC 7515 section 4.1.9), so `application/AT+JWT` is `at+jwt`.
pub fn media_type_name(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(name) => name.to_owned(),
        None => lower,
    }
}

fn audience_contains(aud: Option<&Value>, wanted: &str) -> bool {
    super::claims::audiences(aud).is_ok_and(|list| list.contains(&wanted))
}

/// The header's `typ` (RFC 8725 section 3.11: explicitly typed JWTs of other kinds are
/// refused) and the shape of an untyped OIDC ID token; the claims' own type is checked
/// with every other rule in [`rules::accept`].
fn check_header_type(
    header_typ: Option<&str>,
    claims: &Map<String, Value>,
    policy: TypPolicy,
) -> Result<(), Rejection> {
    let typ = header_typ.map(media_type_name);
    match typ.as_deref() {
        Some("at+jwt") => {}
        Some("refresh+jwt" | "rt+jwt") => return Err(rules::WRONG_TYPE_REFRESH),
        Some("id_token+jwt" | "id+jwt") => return Err(rules::WRONG_TYPE_ID),
        Some(other) if other.ends_with("+jwt") => {
            return Err(Rejection::new(
                Reason::WrongTokenType,
                "typ names another kind of JWT",
            ));
        }
        Some("jwt") | None if policy == TypPolicy::Compat => {}
        _ => {
            return Err(Rejection::new(
                Reason::WrongTokenType,
                "typ is not at+jwt (the issuer's typ policy is strict)",
            ));
        }
    }
    // An untyped JWT that grants no scope is how an OIDC ID token without a nonce looks
    // (code flow) when it is addressed to its own client, or carries the user's profile
    // or the time they authenticated; access tokens carry scopes.
    if typ.as_deref() != Some("at+jwt")
        && !grants_a_scope(claims)
        && (["azp", "client_id", "cid"].iter().any(|name| {
            claims
                .get(*name)
                .and_then(Value::as_str)
                .is_some_and(|client| audience_contains(claims.get("aud"), client))
        }) || ID_TOKEN_PROFILE_CLAIMS
            .iter()
            .any(|name| claims.contains_key(*name)))
    {
        return Err(rules::WRONG_TYPE_ID);
    }
    Ok(())
}

/// OIDC Core section 2 and 5.1 claims an ID token carries for its client; with no scope
/// granted they mark an untyped JWT as one.
const ID_TOKEN_PROFILE_CLAIMS: &[&str] = &[
    "auth_time",
    "name",
    "given_name",
    "family_name",
    "picture",
    "email",
    "email_verified",
    "phone_number",
];

/// Whether `scope` or `scp` grants anything: an empty or null one grants nothing.
fn grants_a_scope(claims: &Map<String, Value>) -> bool {
    ["scope", "scp"].iter().any(|name| match claims.get(*name) {
        None | Some(Value::Null) => false,
        Some(Value::String(scope)) => !scope.trim().is_empty(),
        Some(Value::Array(scopes)) => !scopes.is_empty(),
        Some(_) => true,
    })
}
