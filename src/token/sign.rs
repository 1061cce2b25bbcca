//! Signing keys and token minting: the dev issuer's key and `introspectd mint`, and the
//! fixtures of tests and benches. Signs with aws-lc-rs directly so every key kind
//! round-trips through PKCS#8.

use aws_lc_rs::{
    encoding::AsDer,
    hmac,
    rand::{SecureRandom, SystemRandom},
    rsa::KeySize,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0:?} keys cannot be generated or loaded")]
    Unsupported(Algorithm),
    #[error("the key material is not a valid {0:?} key")]
    BadKey(Algorithm),
    #[error("signing failed")]
    Crypto,
}

enum Material {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Hmac(Box<hmac::Key>),
}

/// A private key with its algorithm and `kid`.
pub struct SigningKey {
    alg: Algorithm,
    kid: String,
    /// PKCS#8 for asymmetric keys, the raw secret for HMAC.
    private: Vec<u8>,
    material: Material,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key: RSA 2048 for RS*/PS*, P-256/P-384 for ES256/384, Ed25519 for EdDSA,
    /// 32 random bytes for HS*.
    pub fn generate(alg: Algorithm, kid: impl Into<String>) -> Result<Self, SignError> {
        let rng = SystemRandom::new();
        let private = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => RsaKeyPair::generate(KeySize::Rsa2048)
                .and_then(|pair| pair.as_der().map(|der| der.as_ref().to_vec()))
                .map_err(|_| SignError::Crypto)?,
            Algorithm::ES256 | Algorithm::ES384 => {
                EcdsaKeyPair::generate_pkcs8(ecdsa_signing(alg)?, &rng)
                    .map_err(|_| SignError::Crypto)?
                    .as_ref()
                    .to_vec()
            }
            Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| SignError::Crypto)?
                .as_ref()
                .to_vec(),
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let mut secret = vec![0u8; 32];
                rng.fill(&mut secret).map_err(|_| SignError::Crypto)?;
                secret
            }
            _ => return Err(SignError::Unsupported(alg)),
        };
        Self::from_private(alg, kid, private)
    }

    /// Loads a key saved with [`SigningKey::private_bytes`].
    pub fn from_private(
        alg: Algorithm,
        kid: impl Into<String>,
        private: Vec<u8>,
    ) -> Result<Self, SignError> {
        let bad = |_| SignError::BadKey(alg);
        let material = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Material::Rsa(RsaKeyPair::from_pkcs8(&private).map_err(bad)?),
            Algorithm::ES256 | Algorithm::ES384 => {
                Material::Ec(EcdsaKeyPair::from_pkcs8(ecdsa_signing(alg)?, &private).map_err(bad)?)
            }
            Algorithm::EdDSA => Material::Ed(Ed25519KeyPair::from_pkcs8(&private).map_err(bad)?),
            Algorithm::HS256 => {
                Material::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA256, &private)))
            }
            Algorithm::HS384 => {
                Material::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA384, &private)))
            }
            Algorithm::HS512 => {
                Material::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA512, &private)))
            }
            _ => return Err(SignError::Unsupported(alg)),
        };
        Ok(Self {
            alg,
            kid: kid.into(),
            private,
            material,
        })
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// PKCS#8 DER, or the HMAC secret.
    pub fn private_bytes(&self) -> &[u8] {
        &self.private
    }

    /// The public half as a JWK (with `kid`, `alg` and `use: sig`). For an HMAC key this
    /// is the secret itself (`kty: oct`), which only tests should publish.
    pub fn public_jwk(&self) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut jwk = match &self.material {
            Material::Rsa(pair) => {
                let public = pair.public_key();
                json!({
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
            Material::Ec(pair) => {
                // Uncompressed SEC1 point: 0x04 || X || Y.
                let point = pair.public_key().as_ref();
                let coordinate = (point.len() - 1) / 2;
                json!({
                    "kty": "EC",
                    "crv": if self.alg == Algorithm::ES256 { "P-256" } else { "P-384" },
                    "x": b64(&point[1..=coordinate]),
                    "y": b64(&point[1 + coordinate..]),
                })
            }
            Material::Ed(pair) => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64(pair.public_key().as_ref()),
            }),
            Material::Hmac(_) => json!({ "kty": "oct", "k": b64(&self.private) }),
        };
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!(format!("{:?}", self.alg));
        jwk["use"] = json!("sig");
        jwk
    }

    /// Signs the exact header and claims given: tests use it to forge hostile headers.
    pub fn sign_compact(&self, header: &Value, claims: &Value) -> Result<String, SignError> {
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let signature = self.sign_bytes(signing_input.as_bytes())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// A token with header `{alg, kid, typ}`.
    pub fn mint(&self, typ: &str, claims: &Value) -> Result<String, SignError> {
        let header = json!({ "alg": format!("{:?}", self.alg), "kid": self.kid, "typ": typ });
        self.sign_compact(&header, claims)
    }

    fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let rng = SystemRandom::new();
        match &self.material {
            Material::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match self.alg {
                    Algorithm::RS256 => &signature::RSA_PKCS1_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_SHA384,
                    _ => &signature::RSA_PSS_SHA512,
                };
                let mut out = vec![0u8; pair.public_modulus_len()];
                pair.sign(padding, &rng, message, &mut out)
                    .map_err(|_| SignError::Crypto)?;
                Ok(out)
            }
            Material::Ec(pair) => pair
                .sign(&rng, message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| SignError::Crypto),
            Material::Ed(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Material::Hmac(key) => Ok(hmac::sign(key, message).as_ref().to_vec()),
        }
    }
}

fn ecdsa_signing(alg: Algorithm) -> Result<&'static signature::EcdsaSigningAlgorithm, SignError> {
    match alg {
        Algorithm::ES256 => Ok(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
        Algorithm::ES384 => Ok(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
        _ => Err(SignError::Unsupported(alg)),
    }
}

/// A JWKS document publishing the public halves of `keys`.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}

/// 128 random bits, base64url: for `jti` values, `kid`s and generated API keys.
pub fn random_id() -> Result<String, SignError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SignError::Crypto)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}
