//! Reading a key set from its source: a JWKS URL, OIDC discovery, a file, inline JWKS,
//! or a shared secret. Every network step has the issuer's fetch timeout and a size cap.

use std::time::Duration;

use reqwest::header::HeaderMap;

use super::{KeySet, Source};
use crate::outbound::{self, OutboundError};

/// Largest JWKS or discovery document read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Why a key set could not be loaded. No variant carries a URL: one may hold
/// credentials, and the issuer's name already says which source failed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("fetching the key set failed: {0}")]
    Fetch(#[source] OutboundError),
    #[error("discovery failed: {0}")]
    DiscoveryFetch(#[source] OutboundError),
    #[error("not a JWKS document: {0}")]
    Parse(#[source] serde_json::Error),
    #[error("the key set has no key that can verify tokens{}", skipped_keys(.0))]
    NoUsableKeys(Vec<String>),
    #[error("the discovery document does not parse: {0}")]
    DiscoveryParse(#[source] serde_json::Error),
    #[error("the discovery document's jwks_uri: {0}")]
    DiscoveredUrl(#[source] outbound::InsecureUrl),
    #[error("the discovery document names issuer {found:?}, not {expected:?}")]
    DiscoveryIssuer { found: String, expected: String },
    #[error("cannot read the JWKS file: {0}")]
    File(#[from] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

pub(super) struct Fetched {
    pub set: KeySet,
    /// The signing keys that cannot be used, each with why.
    pub skipped: Vec<String>,
    /// `Cache-Control: max-age` of the JWKS response, when it had one.
    pub max_age: Option<Duration>,
}

pub(super) async fn fetch(
    http: &reqwest::Client,
    issuer: &str,
    source: &Source,
    timeout: Duration,
) -> Result<Fetched, KeysError> {
    let work = async {
        match source {
            Source::JwksUri(uri) => fetch_jwks(http, uri).await,
            Source::Discovery {
                allow_insecure_http,
            } => {
                let uri = discover(http, issuer).await?;
                outbound::check_url(&uri, *allow_insecure_http)
                    .map_err(KeysError::DiscoveredUrl)?;
                fetch_jwks(http, &uri).await
            }
            Source::Inline(text) => from_bytes(text.as_bytes(), None),
            Source::File(path) => from_bytes(&tokio::fs::read(path).await?, None),
            Source::HmacSecret(secret) => Ok(Fetched {
                set: KeySet::hmac(secret),
                skipped: Vec::new(),
                max_age: None,
            }),
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| KeysError::Timeout(timeout))?
}

fn from_bytes(bytes: &[u8], max_age: Option<Duration>) -> Result<Fetched, KeysError> {
    let (set, skipped) = KeySet::from_jwks(bytes)?;
    Ok(Fetched {
        set,
        skipped,
        max_age,
    })
}

async fn fetch_jwks(http: &reqwest::Client, uri: &str) -> Result<Fetched, KeysError> {
    let (headers, body) = get(http, uri).await.map_err(KeysError::Fetch)?;
    // `no-cache`/`no-store` count as zero, which the refresh bounds raise to the minimum
    // interval.
    from_bytes(&body, outbound::cache_max_age(&headers))
}

/// OIDC Discovery 1.0 section 4: the document's `issuer` must equal the configured one
/// exactly, or the keys would belong to someone else.
async fn discover(http: &reqwest::Client, issuer: &str) -> Result<String, KeysError> {
    let uri = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let (_, body) = get(http, &uri).await.map_err(KeysError::DiscoveryFetch)?;
    jwks_uri_from_discovery(&body, issuer)
}

/// The `jwks_uri` of an OIDC discovery document, which must name `issuer` exactly.
pub fn jwks_uri_from_discovery(document: &[u8], issuer: &str) -> Result<String, KeysError> {
    #[derive(serde::Deserialize)]
    struct Metadata {
        issuer: String,
        jwks_uri: String,
    }
    let metadata: Metadata = serde_json::from_slice(document).map_err(KeysError::DiscoveryParse)?;
    if metadata.issuer != issuer {
        return Err(KeysError::DiscoveryIssuer {
            found: metadata.issuer,
            expected: issuer.to_owned(),
        });
    }
    Ok(metadata.jwks_uri)
}

/// GET `uri` for a JSON document (JWKS or discovery), at most 1 MiB of it.
async fn get(http: &reqwest::Client, uri: &str) -> Result<(HeaderMap, Vec<u8>), OutboundError> {
    let request = http
        .get(uri)
        .header(reqwest::header::ACCEPT, "application/json");
    outbound::body(request, MAX_DOCUMENT_BYTES).await
}

/// The signing keys a set skipped, as an error names them.
fn skipped_keys(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" (skipped: {})", skipped.join("; "))
    }
}
