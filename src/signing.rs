//! Signed introspection answers (RFC 9701): the RFC 7662 answer inside a JWT of type
//! `token-introspection+jwt`, signed with introspectd's own key, for callers that pass
//! the answer on to a party that must trust it without calling introspectd itself.
//! The public keys (the current one, and the next one during a rotation) are served at
//! `/.well-known/jwks.json`.

use std::path::PathBuf;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, pem::PemObject};

use crate::token::sign::{SignError, SigningKey};

/// `[answer_signing]`, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `iss` of the signed answers: introspectd's own identifier.
    pub issuer: String,
    /// PEM PKCS#8 private key.
    pub key_file: PathBuf,
    pub algorithm: Algorithm,
    /// `kid` of the key; default: its RFC 7638 thumbprint.
    pub kid: Option<String>,
    /// A JWKS of further public keys to publish (the next key, before it signs).
    pub publish_jwks_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Key { path: String, what: String },
}

pub const MEDIA_TYPE: &str = "application/token-introspection+jwt";
const TYP: &str = "token-introspection+jwt";

/// Signs answers with one key and publishes its public half (and any others given).
pub struct AnswerSigner {
    issuer: String,
    key: SigningKey,
    published: Vec<Value>,
}

impl std::fmt::Debug for AnswerSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerSigner")
            .field("issuer", &self.issuer)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl AnswerSigner {
    pub fn new(issuer: impl Into<String>, key: SigningKey) -> Self {
        Self {
            published: vec![key.public_jwk()],
            issuer: issuer.into(),
            key,
        }
    }

    /// Loads the key (and the extra public keys) the settings name.
    pub fn load(settings: &Settings) -> Result<Self, SigningError> {
        let shown = |path: &PathBuf| path.display().to_string();
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| SigningError::Read {
                path: shown(path),
                source,
            })
        };
        let key_error = |what: String| SigningError::Key {
            path: shown(&settings.key_file),
            what,
        };
        let pem = read(&settings.key_file)?;
        let pkcs8 = match PrivateKeyDer::from_pem_slice(&pem) {
            Ok(PrivateKeyDer::Pkcs8(der)) => der.secret_pkcs8_der().to_vec(),
            Ok(_) => return Err(key_error("not a PKCS#8 key (BEGIN PRIVATE KEY)".into())),
            Err(e) => return Err(key_error(e.to_string())),
        };
        let probe = SigningKey::from_private(settings.algorithm, "", pkcs8.clone())
            .map_err(|e| key_error(e.to_string()))?;
        let kid = match &settings.kid {
            Some(kid) => kid.clone(),
            None => probe
                .public_jwk()
                .as_object()
                .and_then(crate::binding::dpop::thumbprint)
                .unwrap_or_default(),
        };
        let key = SigningKey::from_private(settings.algorithm, kid, pkcs8)
            .map_err(|e| key_error(e.to_string()))?;
        let mut signer = Self::new(settings.issuer.clone(), key);
        if let Some(path) = &settings.publish_jwks_file {
            let jwks: Value =
                serde_json::from_slice(&read(path)?).map_err(|e| SigningError::Key {
                    path: shown(path),
                    what: e.to_string(),
                })?;
            let keys =
                jwks.get("keys")
                    .and_then(Value::as_array)
                    .ok_or_else(|| SigningError::Key {
                        path: shown(path),
                        what: "not a JWKS (no \"keys\" array)".into(),
                    })?;
            for key in keys {
                if ["d", "p", "q", "k"].iter().any(|m| key.get(m).is_some()) {
                    return Err(SigningError::Key {
                        path: shown(path),
                        what: "holds a private key: publish public keys only".into(),
                    });
                }
                signer.published.push(key.clone());
            }
        }
        Ok(signer)
    }

    /// Public keys to publish.
    pub fn public_jwks(&self) -> &[Value] {
        &self.published
    }

    /// The answer as a `token-introspection+jwt` for `audience` (the calling client).
    pub fn sign(&self, answer: &Value, audience: &str, now: i64) -> Result<String, SignError> {
        let header = json!({
            "alg": format!("{:?}", self.key.alg()),
            "kid": self.key.kid(),
            "typ": TYP,
        });
        let claims = json!({
            "iss": self.issuer,
            "aud": audience,
            "iat": now,
            "token_introspection": answer,
        });
        self.key.sign_compact(&header, &claims)
    }
}

/// A PEM PKCS#8 text for `key`, as `key_file` holds it.
pub fn pkcs8_pem(key: &SigningKey) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(key.private_bytes());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|chunk| std::str::from_utf8(chunk).ok())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}
