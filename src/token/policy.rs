//! What validation needs to know about one issuer, and nothing else: the rules its
//! access tokens must pass. Built from the configuration once, at start.

use jsonwebtoken::Algorithm;

/// Largest leeway an issuer may be given.
pub const MAX_LEEWAY_SECS: i64 = 3600;
pub const DEFAULT_LEEWAY_SECS: i64 = 30;
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECS: u64 = 24 * 3600;
/// Claims read for scopes unless configured: `scope` (RFC 9068) or `scp` (Okta, Entra).
pub const DEFAULT_SCOPE_CLAIMS: &[&str] = &["scope", "scp"];
/// Claims read for the client unless configured, first present wins.
pub const DEFAULT_CLIENT_CLAIMS: &[&str] = &["client_id", "azp", "cid"];
/// Claims read for `username` unless configured.
pub const DEFAULT_USERNAME_CLAIMS: &[&str] = &["username", "preferred_username"];

/// How strictly the `typ` header is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypPolicy {
    /// `typ` must be `at+jwt` (RFC 9068).
    Strict,
    /// Also `JWT` or no `typ`, for issuers that do not type their access tokens.
    Compat,
}

/// One issuer's token rules.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Exact `iss` of its tokens.
    pub issuer: String,
    /// A token's `aud` must name at least one.
    pub audiences: Vec<String>,
    /// Allowed signature algorithms; never taken from the token.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway_secs: i64,
    pub typ: TypPolicy,
    /// Claims that must be present beyond `iss`, `exp` and `aud`.
    pub required_claims: Vec<String>,
    /// Claim names read for scopes, the client and the username, first present wins.
    pub scope_claims: Vec<String>,
    pub client_claims: Vec<String>,
    pub username_claims: Vec<String>,
    /// Longest lifetime of the issuer's tokens.
    pub max_token_lifetime_secs: u64,
    /// JWTs without `iat` are refused (RFC 9068 section 2.2): revocations are kept for
    /// as long as a token issued before them can pass, which `iat` bounds.
    pub require_iat: bool,
    /// Opaque answers without `token_type` are refused (for issuers that omit it only
    /// for refresh tokens, like oidc-provider).
    pub require_token_type: bool,
    /// Opaque answers without `aud` may pass (for issuers that never send it).
    pub accept_opaque_without_aud: bool,
}

impl Policy {
    /// A policy with the defaults every issuer starts from; tests and config fill in
    /// the rest.
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>) -> Self {
        let names = |list: &[&str]| list.iter().map(|name| (*name).to_owned()).collect();
        Self {
            issuer: issuer.into(),
            audiences,
            algorithms: vec![Algorithm::RS256],
            leeway_secs: DEFAULT_LEEWAY_SECS,
            typ: TypPolicy::Strict,
            required_claims: Vec::new(),
            scope_claims: names(DEFAULT_SCOPE_CLAIMS),
            client_claims: names(DEFAULT_CLIENT_CLAIMS),
            username_claims: names(DEFAULT_USERNAME_CLAIMS),
            max_token_lifetime_secs: DEFAULT_MAX_TOKEN_LIFETIME_SECS,
            require_iat: true,
            require_token_type: false,
            accept_opaque_without_aud: false,
        }
    }

    /// How long after `iat` (or a cut-off) one of these tokens can still be accepted:
    /// the maximum lifetime plus the leeway granted on `exp`.
    pub fn acceptance_window_secs(&self) -> i64 {
        i64::try_from(self.max_token_lifetime_secs)
            .unwrap_or(i64::MAX)
            .saturating_add(self.leeway_secs)
    }
}
