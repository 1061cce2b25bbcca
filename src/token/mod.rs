//! Tokens: what a verified access token is, why a token is refused, and the pure
//! validation that decides between the two.
//!
//! Nothing here touches the network or the clock: [`parse`] and [`verify`] take the token, the
//! issuer's policy and key set, and `now`.

mod claims;
mod jwt;
mod policy;
mod rules;
pub mod sign;

use std::fmt;

use sha2::{Digest, Sha256};

pub use claims::{AccessToken, nesting_depth, numeric_date};
pub use jwt::{Classified, ParsedJwt, classify, media_type_name, parse, unverified_claims, verify};
pub use policy::{
    DEFAULT_CLIENT_CLAIMS, DEFAULT_LEEWAY_SECS, DEFAULT_MAX_TOKEN_LIFETIME_SECS,
    DEFAULT_SCOPE_CLAIMS, DEFAULT_USERNAME_CLAIMS, MAX_LEEWAY_SECS, Policy, TypPolicy,
};
pub use rules::is_jws;

/// SHA-256 of a token: its identity in the cache and the revocation set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// What identifies a token for revocation: for a JWS, the SHA-256 of what its
    /// signature covers (`header.payload`), because an ECDSA signature can be re-encoded
    /// (s → n − s) without the key, so the same token can come with other signature
    /// bytes; for anything else, the SHA-256 of the whole text.
    pub fn identity(token: &str) -> Self {
        match token.rsplit_once('.') {
            Some((signed, _)) if token.split('.').count() == 3 => Self::of(signed),
            _ => Self::of(token),
        }
    }

    /// `hex(SHA-256(token))[..16]`: what logs and traces show instead of the token.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut out = [0u8; 16];
        // 8 bytes always fill 16 hex digits exactly.
        let _ = hex::encode_to_slice(&self.0[..8], &mut out);
        Fingerprint(out)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", self.fingerprint())
    }
}

/// The first 16 hex digits of a token's SHA-256. Safe to log.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 16]);

impl Fingerprint {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a token is inactive. The names are the wire names of `InactiveReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Expired,
    Revoked,
    BadSignature,
    UnknownIssuer,
    UnknownKey,
    WrongAudience,
    WrongTokenType,
    NotYetValid,
    Malformed,
    InsufficientScope,
    /// An opaque token its issuer's introspection endpoint calls inactive.
    InactiveAtIssuer,
    /// A DPoP-bound token (`cnf.jkt`) without a proof: presented as a bearer token.
    DpopProofRequired,
    /// A DPoP proof that fails a check (signature, key, method, URI, time, replay, `ath`).
    DpopProofInvalid,
    /// A DPoP proof without a current server nonce, where nonces are required.
    DpopNonceRequired,
    /// A certificate-bound token (`cnf.x5t#S256`) without that client certificate.
    CertificateMismatch,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::Expired,
        Reason::Revoked,
        Reason::BadSignature,
        Reason::UnknownIssuer,
        Reason::UnknownKey,
        Reason::WrongAudience,
        Reason::WrongTokenType,
        Reason::NotYetValid,
        Reason::Malformed,
        Reason::InsufficientScope,
        Reason::InactiveAtIssuer,
        Reason::DpopProofRequired,
        Reason::DpopProofInvalid,
        Reason::DpopNonceRequired,
        Reason::CertificateMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Expired => "EXPIRED",
            Reason::Revoked => "REVOKED",
            Reason::BadSignature => "BAD_SIGNATURE",
            Reason::UnknownIssuer => "UNKNOWN_ISSUER",
            Reason::UnknownKey => "UNKNOWN_KEY",
            Reason::WrongAudience => "WRONG_AUDIENCE",
            Reason::WrongTokenType => "WRONG_TOKEN_TYPE",
            Reason::NotYetValid => "NOT_YET_VALID",
            Reason::Malformed => "MALFORMED",
            Reason::InsufficientScope => "INSUFFICIENT_SCOPE",
            Reason::InactiveAtIssuer => "INACTIVE_AT_ISSUER",
            Reason::DpopProofRequired => "DPOP_PROOF_REQUIRED",
            Reason::DpopProofInvalid => "DPOP_PROOF_INVALID",
            Reason::DpopNonceRequired => "DPOP_NONCE_REQUIRED",
            Reason::CertificateMismatch => "CERTIFICATE_MISMATCH",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused token: the reason callers may see, and a detail for the operator's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: &'static str,
}

impl Rejection {
    pub const fn new(reason: Reason, detail: &'static str) -> Self {
        Self { reason, detail }
    }
}

/// What a caller asks of a token beyond its issuer's rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallPolicy<'a> {
    pub required_scopes: &'a [String],
    pub audience: Option<&'a str>,
    /// How the call proves possession, for sender-constrained tokens.
    pub presented: crate::binding::Presentation<'a>,
}

impl CallPolicy<'_> {
    /// Narrows an already verified token to this call; cache hits run it again.
    pub fn check(&self, token: &AccessToken) -> Result<(), Rejection> {
        if let Some(audience) = self.audience
            && !token.aud.iter().any(|aud| aud == audience)
        {
            return Err(Rejection::new(
                Reason::WrongAudience,
                "the requested audience is not in aud",
            ));
        }
        if !self
            .required_scopes
            .iter()
            .all(|needed| token.scopes.iter().any(|scope| scope == needed))
        {
            return Err(Rejection::new(
                Reason::InsufficientScope,
                "a required scope is missing",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
