//! The local issuer of `introspectd dev`: a generated signing key kept in the data
//! directory, the configuration that trusts it, and `introspectd mint`.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::auth::{ApiKeyEntry, Role, hash_key};
use crate::config::{
    AuthSection, EnricherSection, FileConfig, IssuerSection, ServerSection, StoreBackend,
    StoreSection, SubjectSection,
};
use crate::signing::AnswerSigner;
use crate::token::sign::{self, SignError, SigningKey};

pub const DEV_ISSUER: &str = "https://dev.introspectd.invalid";
pub const DEV_AUDIENCE: &str = "dev-api";
pub const DEV_CLIENT_ID: &str = "dev-client";
pub const DEV_SUBJECT: &str = "dev-user";
pub const DEV_SCOPE: &str = "read write";
pub const DEV_GRPC_ADDR: &str = "127.0.0.1:50051";
pub const DEV_HTTP_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./data";
const KEY_FILE: &str = "dev-issuer-key.json";
const ANSWER_KEY_FILE: &str = "dev-answer-signing-key.json";
const DPOP_KEY_FILE: &str = "dev-dpop-client-key.json";
/// `iss` of dev mode's signed answers.
pub const DEV_ANSWER_ISSUER: &str = "https://introspectd.dev.invalid";
/// The admin API key of dev mode, which `introspectd revoke` run beside it picks up.
pub const ADMIN_KEY_FILE: &str = "admin-api-key";
const STORE_FILE: &str = "state.redb";
/// The dev issuer's algorithm unless `dev --alg` chooses another; also that of the dev
/// client and answer-signing keys.
pub const DEV_ALG: Algorithm = Algorithm::ES256;

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a dev issuer key file; delete it to generate a new key")]
    BadKeyFile(PathBuf),
    #[error(
        "{path} holds the dev issuer's {has:?} key, not {asked:?}: use another --data-dir, or delete the file to make a new key"
    )]
    OtherAlgorithm {
        path: PathBuf,
        has: Algorithm,
        asked: Algorithm,
    },
    #[error(transparent)]
    Sign(#[from] SignError),
    /// `mint` (or `loadtest`) where no `introspectd dev` ever ran.
    #[error(
        "no dev issuer key in {0}: run this where `introspectd dev` runs, or pass --data-dir with its directory"
    )]
    NoIssuer(PathBuf),
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    kid: String,
    /// PKCS#8 DER, base64.
    pkcs8: String,
    /// The key's algorithm (files written before it existed are ES256).
    #[serde(default = "default_alg")]
    alg: String,
}

fn default_alg() -> String {
    format!("{DEV_ALG:?}")
}

/// The dev issuer's signing key.
pub struct DevIssuer {
    key: SigningKey,
}

/// What `introspectd mint` puts in a token.
#[derive(Debug, Clone)]
pub struct MintRequest {
    pub subject: String,
    pub scope: String,
    pub audiences: Vec<String>,
    pub client_id: String,
    pub lifetime_secs: i64,
    /// An OIDC ID token instead of an access token, to see it refused.
    pub id_token: bool,
    /// Added to the token, replacing a default claim of the same name.
    pub extra_claims: Map<String, Value>,
}

impl Default for MintRequest {
    fn default() -> Self {
        Self {
            subject: DEV_SUBJECT.into(),
            scope: DEV_SCOPE.into(),
            audiences: vec![DEV_AUDIENCE.into()],
            client_id: DEV_CLIENT_ID.into(),
            lifetime_secs: 3600,
            id_token: false,
            extra_claims: Map::new(),
        }
    }
}

impl DevIssuer {
    /// Loads the key from `data_dir`, generating and saving one (mode 0600) on first use.
    /// A directory keeps the algorithm its key was made with: asking for another one
    /// there is an error naming the file, rather than a silent new key that would make
    /// every token minted before unknown.
    pub fn load_or_create(data_dir: &Path, alg: Algorithm) -> Result<Self, DevError> {
        let path = data_dir.join(KEY_FILE);
        let key = load_or_create_key(&path, alg)?;
        if key.alg() != alg {
            return Err(DevError::OtherAlgorithm {
                path,
                has: key.alg(),
                asked: alg,
            });
        }
        Ok(Self { key })
    }

    /// Loads the key `introspectd dev` saved in `data_dir`; never creates one, since a
    /// token signed by a key no server trusts is only confusing.
    pub fn load(data_dir: &Path) -> Result<Self, DevError> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Self::from_file(&path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(DevError::NoIssuer(data_dir.to_owned()))
            }
            Err(source) => Err(DevError::Io { path, source }),
        }
    }

    fn from_file(path: &Path, bytes: &[u8]) -> Result<Self, DevError> {
        Ok(Self {
            key: key_from_file(path, bytes)?,
        })
    }

    pub fn jwks(&self) -> Value {
        sign::jwks(&[&self.key])
    }

    /// A configuration trusting only this issuer (with per-subject claims), with reasons
    /// shown to callers, anonymous introspection, the admin key for everything else, and the embedded
    /// store in the data directory.
    pub fn file_config(
        &self,
        data_dir: &Path,
        admin_key: &str,
        grpc_addr: &str,
        http_addr: &str,
    ) -> FileConfig {
        FileConfig {
            server: ServerSection {
                grpc_addr: grpc_addr.into(),
                http_addr: http_addr.into(),
                expose_inactive_reason: true,
                ..ServerSection::default()
            },
            auth: AuthSection {
                anonymous_introspect: true,
                api_keys: vec![ApiKeyEntry {
                    name: "dev-admin".into(),
                    sha256: hash_key(admin_key),
                    roles: vec![Role::Admin],
                }],
                ..AuthSection::default()
            },
            store: StoreSection {
                backend: StoreBackend::Embedded,
                path: data_dir.join(STORE_FILE),
                ..StoreSection::default()
            },
            issuers: vec![IssuerSection {
                issuer: DEV_ISSUER.into(),
                audiences: vec![DEV_AUDIENCE.into()],
                algorithms: vec![format!("{:?}", self.key.alg())],
                jwks: Some(self.jwks().to_string()),
                // So the walkthrough's SetSubjectClaims shows in the next answer.
                enrich: vec![EnricherSection::Subject(SubjectSection::default())],
                ..IssuerSection::default()
            }],
            ..FileConfig::default()
        }
    }

    pub fn mint(&self, request: &MintRequest, now: i64) -> Result<String, DevError> {
        let mut claims = request.extra_claims.clone();
        let base = if request.id_token {
            // Shaped like an OIDC ID token: audience is the client, with a nonce.
            json!({
                "iss": DEV_ISSUER,
                "sub": request.subject,
                "aud": request.client_id,
                "azp": request.client_id,
                "iat": now,
                "exp": now + request.lifetime_secs,
                "auth_time": now,
                "nonce": sign::random_id()?,
            })
        } else {
            json!({
                "iss": DEV_ISSUER,
                "sub": request.subject,
                "aud": if request.audiences.len() == 1 { json!(request.audiences[0]) } else { json!(request.audiences) },
                "client_id": request.client_id,
                "scope": request.scope,
                "iat": now,
                "nbf": now,
                "exp": now + request.lifetime_secs,
                "jti": sign::random_id()?,
            })
        };
        // Claims asked for explicitly replace the defaults (a chosen `jti`, say).
        if let Value::Object(base) = base {
            for (name, value) in base {
                claims.entry(name).or_insert(value);
            }
        }
        let typ = if request.id_token { "JWT" } else { "at+jwt" };
        Ok(self.key.mint(typ, &Value::Object(claims))?)
    }
}

/// A key saved in `path`, generated (mode 0600, for `alg`) on first use.
fn load_or_create_key(path: &Path, alg: Algorithm) -> Result<SigningKey, DevError> {
    let bytes = read_or_create(path, || {
        let key = SigningKey::generate(alg, sign::random_id()?)?;
        let file = KeyFile {
            kid: key.kid().to_owned(),
            pkcs8: STANDARD.encode(key.private_bytes()),
            alg: format!("{alg:?}"),
        };
        serde_json::to_vec_pretty(&file).map_err(|e| DevError::Io {
            path: path.to_owned(),
            source: e.into(),
        })
    })?;
    key_from_file(path, &bytes)
}

fn key_from_file(path: &Path, bytes: &[u8]) -> Result<SigningKey, DevError> {
    let bad = || DevError::BadKeyFile(path.to_owned());
    let file: KeyFile = serde_json::from_slice(bytes).map_err(|_| bad())?;
    let pkcs8 = STANDARD.decode(file.pkcs8).map_err(|_| bad())?;
    let alg = file.alg.parse::<Algorithm>().map_err(|_| bad())?;
    SigningKey::from_private(alg, file.kid, pkcs8).map_err(|_| bad())
}

/// The dev DPoP client key: what `introspectd dpop-proof` signs proofs with.
pub fn dpop_client_key(data_dir: &Path) -> Result<SigningKey, DevError> {
    load_or_create_key(&data_dir.join(DPOP_KEY_FILE), DEV_ALG)
}

/// Dev mode's signer of answers (RFC 9701): its own key beside the issuer's, published
/// at the same `/.well-known/jwks.json`.
pub fn answer_signer(data_dir: &Path) -> Result<AnswerSigner, DevError> {
    let key = load_or_create_key(&data_dir.join(ANSWER_KEY_FILE), DEV_ALG)?;
    Ok(AnswerSigner::new(DEV_ANSWER_ISSUER, key))
}

/// The dev admin API key from `data_dir`, generated on first use.
pub fn admin_key(data_dir: &Path) -> Result<String, DevError> {
    let path = data_dir.join(ADMIN_KEY_FILE);
    let bytes = read_or_create(&path, || {
        Ok(format!("dev-admin-{}", sign::random_id()?).into_bytes())
    })?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
}

/// The admin key saved by `introspectd dev`, if there is one.
pub fn saved_admin_key(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(ADMIN_KEY_FILE))
        .ok()
        .map(|key| key.trim().to_owned())
        .filter(|key| !key.is_empty())
}

/// Reads a secret file, or creates it (mode 0600) with `make`'s bytes. When two
/// processes race to create it, the loser reads the winner's.
fn read_or_create(
    path: &Path,
    make: impl FnOnce() -> Result<Vec<u8>, DevError>,
) -> Result<Vec<u8>, DevError> {
    let io = |source| DevError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => return Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let bytes = make()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut out) => {
            out.write_all(&bytes).map_err(io)?;
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path).map_err(io),
        Err(e) => Err(io(e)),
    }
}
