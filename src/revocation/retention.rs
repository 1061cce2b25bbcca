//! How long a revocation record is kept: until no token it covers can pass the token
//! rules any more, leeway included on both ends. Pure functions of the issuer's policy;
//! the property test in `tests.rs` checks them against the real validation.
//!
//! With `M` the issuer's maximum lifetime and `L` its leeway, a token passes at `t` only
//! while `t < exp + L`, and only if `exp - min(iat, t) <= M + L`. So:
//!
//! - a token known by its claims stays revoked until `exp + L` (never beyond
//!   `iat + M + 2L`, past which it cannot pass anyway);
//! - a cut-off covers tokens with `iat < before`, which pass at most until
//!   `before + M + 2L`;
//! - a `jti` whose token's `exp` is unknown belongs to a token issued by the time it is
//!   revoked (`iat <= now + L`, clocks apart by at most the leeway), which passes at most
//!   until `now + M + 3L`.
//!
//! Where an issuer does not require `iat` (`require_iat = false`), a token without it is
//! bounded by its `exp` alone: its own record is kept until `exp + L`; a `jti` or a
//! cut-off covers such tokens only as long as the issuer keeps to its maximum lifetime.

use crate::token::Policy;

/// Bounds for a token whose issuer is not configured (a token revoked as RFC 7009 asks,
/// whatever it is).
const UNKNOWN_ISSUER_LEEWAY_SECS: i64 = crate::token::MAX_LEEWAY_SECS;

/// A token revoked by its hash, with the claims it carries (unverified: the hash binds
/// them). `None` for `exp` (an opaque token): `fallback`.
pub fn token(policy: Option<&Policy>, iat: Option<i64>, exp: Option<i64>, fallback: i64) -> i64 {
    let Some(exp) = exp else {
        return fallback;
    };
    let leeway = policy.map_or(UNKNOWN_ISSUER_LEEWAY_SECS, |p| p.leeway_secs);
    let until = exp.saturating_add(leeway);
    match (policy, iat) {
        (Some(policy), Some(iat)) => until.min(
            iat.saturating_add(policy.acceptance_window_secs())
                .saturating_add(leeway),
        ),
        _ => until,
    }
}

/// A `jti` revoked at `now`, with the token's `exp` when the caller knows it.
pub fn jti(policy: &Policy, exp: Option<i64>, now: i64) -> i64 {
    let latest = now
        .saturating_add(policy.acceptance_window_secs())
        .saturating_add(policy.leeway_secs.saturating_mul(2));
    exp.map_or(latest, |exp| {
        exp.saturating_add(policy.leeway_secs).min(latest)
    })
}

/// A cut-off: every token with `iat < before`.
pub fn cutoff(policy: &Policy, before: i64) -> i64 {
    before
        .saturating_add(policy.acceptance_window_secs())
        .saturating_add(policy.leeway_secs)
}
