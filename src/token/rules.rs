//! The access-token rules every answer passes, whether its claims come from a verified
//! JWT or from an issuer's RFC 7662 endpoint: what kind of token it is, the required
//! claims, `iss`, the times with leeway, the lifetime bound and the audience.

use serde_json::{Map, Value};

use super::{AccessToken, Policy, Reason, Rejection};

/// Where the claims came from; a few rules differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Jwt,
    /// An RFC 7662 answer: its `token_type` member is read strictly, `iat` is optional
    /// (revocations of opaque tokens are kept by their hash, not by `iat`), and an issuer
    /// may let answers without `aud` pass.
    Introspection,
}

pub(super) const WRONG_TYPE_ID: Rejection = Rejection::new(
    Reason::WrongTokenType,
    "an ID token presented as an access token",
);
pub(super) const WRONG_TYPE_REFRESH: Rejection = Rejection::new(
    Reason::WrongTokenType,
    "a refresh token presented as an access token",
);
const WRONG_TYPE_OTHER: Rejection = Rejection::new(
    Reason::WrongTokenType,
    "token_type names something other than an access token",
);
const NO_TOKEN_TYPE: Rejection = Rejection::new(
    Reason::WrongTokenType,
    "token_type is missing and the issuer requires it",
);

/// `token_type` values (RFC 7662 section 2.2, RFC 8693 section 3) that name an access
/// token, lower-cased.
const ACCESS_TOKEN_TYPES: &[&str] = &[
    "bearer",
    "dpop",
    "access_token",
    "urn:ietf:params:oauth:token-type:access_token",
];

/// How deep a token's claims may nest (real issuers' go 3 or 4 levels deep).
pub const MAX_CLAIMS_DEPTH: usize = 16;

/// Every rule after the signature (or the endpoint's `active: true`).
pub(super) fn accept(
    claims: Map<String, Value>,
    policy: &Policy,
    source: Source,
    now: i64,
) -> Result<AccessToken, Rejection> {
    check_claimed_type(&claims)?;
    // gRPC answers carry the claims as a protobuf Struct, some three message levels per
    // JSON level, and protobuf's usual readers stop at 100 levels (Python, C++, Envoy):
    // deeper claims would be an answer the caller cannot read.
    if super::nesting_depth(&claims) > MAX_CLAIMS_DEPTH {
        return Err(Rejection::new(
            Reason::Malformed,
            "claims nested deeper than 16 levels",
        ));
    }
    if source == Source::Introspection {
        check_token_type_member(&claims, policy)?;
    }
    for name in &policy.required_claims {
        if claims.get(name).is_none_or(Value::is_null) {
            return Err(Rejection::new(
                Reason::Malformed,
                "a required claim is missing",
            ));
        }
    }
    let token = AccessToken::from_claims(claims, policy)?;
    if token.iss != policy.issuer {
        return Err(Rejection::new(
            Reason::UnknownIssuer,
            "iss does not match the issuer",
        ));
    }
    check_times(&token, policy, source, now)?;
    let without_aud_allowed =
        source == Source::Introspection && policy.accept_opaque_without_aud && token.aud.is_empty();
    if !without_aud_allowed && !token.aud.iter().any(|aud| policy.audiences.contains(aud)) {
        return Err(Rejection::new(
            Reason::WrongAudience,
            "aud names none of the issuer's audiences",
        ));
    }
    Ok(token)
}

fn check_times(
    token: &AccessToken,
    policy: &Policy,
    source: Source,
    now: i64,
) -> Result<(), Rejection> {
    let leeway = policy.leeway_secs;
    if now >= token.exp.saturating_add(leeway) {
        return Err(Rejection::new(Reason::Expired, "exp has passed"));
    }
    if token
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(leeway))
    {
        return Err(Rejection::new(Reason::NotYetValid, "nbf is in the future"));
    }
    if token
        .iat
        .is_some_and(|iat| iat > now.saturating_add(leeway))
    {
        return Err(Rejection::new(Reason::NotYetValid, "iat is in the future"));
    }
    // Revocations are kept for as long as a token issued before them can pass; without
    // `iat` that bound would not exist.
    if source == Source::Jwt && policy.require_iat && token.iat.is_none() {
        return Err(Rejection::new(
            Reason::Malformed,
            "iat is missing (required for this issuer)",
        ));
    }
    let lifetime = token.exp.saturating_sub(token.iat.unwrap_or(now).min(now));
    let max_lifetime = i64::try_from(policy.max_token_lifetime_secs).unwrap_or(i64::MAX);
    if lifetime > max_lifetime.saturating_add(leeway) {
        return Err(Rejection::new(
            Reason::Malformed,
            "lifetime longer than the issuer's max_token_lifetime_secs",
        ));
    }
    Ok(())
}

/// Claims that say the token is an ID or refresh token: the type claims issuers use
/// (Keycloak `typ`, Cognito `token_use`, Cotter `type`, Hydra `token_use`), and
/// OIDC-only claims, unless a type claim (not `token_type`) names an access token: Keycloak copied the
/// authentication request's `nonce` into its access tokens (`typ: Bearer`) until 2024
/// (keycloak/keycloak#26893), and those are still issued.
fn check_claimed_type(claims: &Map<String, Value>) -> Result<(), Rejection> {
    let mut claimed_access = false;
    for name in ["typ", "type", "token_use", "token_type"] {
        let kinds: &[Value] = match claims.get(name) {
            Some(Value::Array(kinds)) => kinds,
            Some(kind) => std::slice::from_ref(kind),
            None => continue,
        };
        for kind in kinds.iter().filter_map(Value::as_str) {
            let kind = kind.trim().to_ascii_lowercase();
            let kind = kind.strip_prefix(TOKEN_TYPE_URN).unwrap_or(&kind);
            match kind.replace(['-', ' '], "_").as_str() {
                "id" | "id_token" | "idtoken" => return Err(WRONG_TYPE_ID),
                "refresh" | "refresh_token" | "refreshtoken" | "offline" => {
                    return Err(WRONG_TYPE_REFRESH);
                }
                // Keycloak's back-channel logout and serialized ID tokens.
                "logout" | "logout_token" | "serialized_id" => return Err(WRONG_TYPE_CLAIMED),
                // Not from `token_type`: an RFC 7662 answer says `Bearer` there whatever
                // the token.
                // Keycloak types DPoP-bound access tokens `DPoP`.
                "bearer" | "dpop" | "access" | "access_token" | "accesstoken"
                    if name != "token_type" =>
                {
                    claimed_access = true;
                }
                _ => {}
            }
        }
    }
    if !claimed_access
        && ["nonce", "at_hash", "c_hash", "s_hash"]
            .iter()
            .any(|name| claims.contains_key(*name))
    {
        return Err(WRONG_TYPE_ID);
    }
    Ok(())
}

/// RFC 8693 section 3's prefix of token type identifiers.
const TOKEN_TYPE_URN: &str = "urn:ietf:params:oauth:token-type:";

const WRONG_TYPE_CLAIMED: Rejection = Rejection::new(
    Reason::WrongTokenType,
    "a type claim names something other than an access token",
);

/// An RFC 7662 `token_type` must name an access token; an issuer that omits it for
/// refresh tokens (oidc-provider) can require it.
fn check_token_type_member(claims: &Map<String, Value>, policy: &Policy) -> Result<(), Rejection> {
    match claims.get("token_type") {
        None | Some(Value::Null) if policy.require_token_type => Err(NO_TOKEN_TYPE),
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(kind))
            if ACCESS_TOKEN_TYPES.contains(&kind.to_ascii_lowercase().as_str()) =>
        {
            Ok(())
        }
        Some(_) => Err(WRONG_TYPE_OTHER),
    }
}

/// Whether `token` has the shape of a JWS: exactly three segments whose first decodes
/// to a JSON object naming an `alg` (with characters base64url lacks, a malformed one).
/// Anything else (Hydra's `ory_at_….…`, random strings) is an opaque token.
pub fn is_jws(token: &str) -> bool {
    matches!(
        super::jwt::classify(token, usize::MAX),
        Ok(super::jwt::Classified::Jws(_)) | Err(_)
    )
}
