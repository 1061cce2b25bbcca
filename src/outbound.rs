//! Outbound HTTP, one way for every call introspectd makes (key sets, discovery, the
//! issuers' introspection endpoints, remote enrichers): a status check, a size cap on the
//! body, and errors that never carry the URL, which may hold credentials.

use std::time::Duration;

use reqwest::{RequestBuilder, header::HeaderMap};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// Connect, TLS, or the exchange itself failed (the error has its URL removed).
    #[error("request failed: {0}")]
    Request(#[source] reqwest::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the answer is not a JSON object")]
    NotAnObject,
}

/// The one HTTP client every outbound call shares: rustls, bounded connect time, no
/// cookies.
pub fn client() -> Result<reqwest::Client, OutboundError> {
    reqwest::Client::builder()
        .user_agent(concat!("introspectd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .map_err(OutboundError::Client)
}

/// Sends `request` and reads a 2xx answer's headers and body, at most `max_bytes` of it.
pub async fn body(
    request: RequestBuilder,
    max_bytes: usize,
) -> Result<(HeaderMap, Vec<u8>), OutboundError> {
    let failed = |e: reqwest::Error| OutboundError::Request(e.without_url());
    let mut response = request.send().await.map_err(failed)?;
    if !response.status().is_success() {
        return Err(OutboundError::Status(response.status().as_u16()));
    }
    let headers = response.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(OutboundError::TooLarge(max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((headers, body))
}

/// A JSON object answered to `request`, the whole exchange (body included) within
/// `timeout`.
pub async fn json_object(
    request: RequestBuilder,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Map<String, Value>, OutboundError> {
    let (_, bytes) = tokio::time::timeout(timeout, body(request.timeout(timeout), max_bytes))
        .await
        .map_err(|_| OutboundError::Timeout(timeout))??;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(OutboundError::NotAnObject),
    }
}
