//! Reading a key set from its source: a JWKS URL, OIDC discovery, a file, inline JWKS,
//! or a shared secret. Every network step has the issuer's fetch timeout and a size cap.

use std::time::Duration;

use reqwest::header::HeaderMap;

use super::KeySet;
use crate::config::{IssuerConfig, KeySource};
use crate::outbound::{self, OutboundError};

/// Largest JWKS or discovery document read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("HTTP request failed: {0}")]
    Http(String),
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{0} is larger than 1 MiB")]
    TooLarge(String),
    #[error("{0}")]
    Parse(String),
    #[error("the key set has no key that can verify tokens")]
    NoUsableKeys,
    #[error("discovery: {0}")]
    Discovery(String),
    #[error("cannot read the JWKS file: {0}")]
    File(#[from] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

pub(super) struct Fetched {
    pub set: KeySet,
    pub skipped: usize,
    /// `Cache-Control: max-age` of the JWKS response, when it had one.
    pub max_age: Option<Duration>,
}

pub(super) async fn fetch(
    http: &reqwest::Client,
    config: &IssuerConfig,
) -> Result<Fetched, KeysError> {
    let timeout = config.refresh.fetch_timeout;
    let work = async {
        match &config.key_source {
            KeySource::JwksUri(uri) => fetch_jwks(http, uri).await,
            KeySource::Discovery => {
                let uri = discover(http, &config.issuer).await?;
                fetch_jwks(http, &uri).await
            }
            KeySource::Inline(text) => from_bytes(text.as_bytes(), None),
            KeySource::File(path) => from_bytes(&tokio::fs::read(path).await?, None),
            KeySource::HmacSecret(secret) => Ok(Fetched {
                set: KeySet::hmac(secret),
                skipped: 0,
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
    let (headers, body) = get(http, uri).await?;
    let max_age = headers
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|value| value.to_str().ok())
        .and_then(max_age);
    from_bytes(&body, max_age)
}

/// OIDC Discovery 1.0 section 4: the document's `issuer` must equal the configured one
/// exactly, or the keys would belong to someone else.
async fn discover(http: &reqwest::Client, issuer: &str) -> Result<String, KeysError> {
    #[derive(serde::Deserialize)]
    struct Metadata {
        issuer: String,
        jwks_uri: String,
    }
    let uri = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let (_, body) = get(http, &uri).await?;
    let metadata: Metadata =
        serde_json::from_slice(&body).map_err(|e| KeysError::Discovery(format!("{uri}: {e}")))?;
    if metadata.issuer != issuer {
        return Err(KeysError::Discovery(format!(
            "{uri} names issuer {:?}, not {issuer:?}",
            metadata.issuer
        )));
    }
    Ok(metadata.jwks_uri)
}

/// GET `uri` for a JSON document (JWKS or discovery), at most 1 MiB of it.
async fn get(http: &reqwest::Client, uri: &str) -> Result<(HeaderMap, Vec<u8>), KeysError> {
    let request = http
        .get(uri)
        .header(reqwest::header::ACCEPT, "application/json");
    outbound::body(request, MAX_DOCUMENT_BYTES)
        .await
        .map_err(|error| match error {
            OutboundError::Status(status) => KeysError::Status {
                url: uri.to_owned(),
                status,
            },
            OutboundError::TooLarge(_) => KeysError::TooLarge(uri.to_owned()),
            other => KeysError::Http(format!("{uri}: {other}")),
        })
}

/// `max-age` of a Cache-Control header value; `no-cache`/`no-store` count as zero, which
/// the refresh bounds raise to the minimum interval.
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').map(str::trim).find_map(|directive| {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        lower
            .strip_prefix("max-age=")
            .and_then(|secs| secs.trim_matches('"').parse().ok())
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }
}
