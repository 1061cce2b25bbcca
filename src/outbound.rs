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
    #[error("{0}")]
    Insecure(#[from] InsecureUrl),
    /// This issuer's outbound budget (calls in flight, calls per second) is spent.
    #[error("too many calls to this issuer's services right now")]
    OverBudget,
}

/// What calls to one issuer's services (its introspection endpoint, its remote
/// enrichers) may use: a number in flight, and a rate. Requests that would go past
/// either are refused at once, so a flood of unknown tokens cannot turn introspectd into
/// a reflector onto the issuer, nor pile up waiting.
#[derive(Debug)]
pub struct Budget {
    in_flight: tokio::sync::Semaphore,
    bucket: std::sync::Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    per_second: f64,
    refilled_at: tokio::time::Instant,
}

impl Budget {
    pub fn new(max_in_flight: usize, per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self {
            in_flight: tokio::sync::Semaphore::new(max_in_flight.max(1)),
            bucket: std::sync::Mutex::new(Bucket {
                tokens: per_second,
                per_second,
                refilled_at: tokio::time::Instant::now(),
            }),
        }
    }

    /// A slot for one call, held until dropped.
    pub fn spend(&self) -> Result<tokio::sync::SemaphorePermit<'_>, OutboundError> {
        let permit = self
            .in_flight
            .try_acquire()
            .map_err(|_| OutboundError::OverBudget)?;
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        let elapsed = now.duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * bucket.per_second).min(bucket.per_second);
        bucket.refilled_at = now;
        if bucket.tokens < 1.0 {
            return Err(OutboundError::OverBudget);
        }
        bucket.tokens -= 1.0;
        Ok(permit)
    }
}

/// Why a URL may not be called. It names the rule, not the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsecureUrl {
    #[error("not an http(s) URL")]
    NotHttp,
    #[error("http:// is allowed only to a loopback address, or with allow_insecure_http = true")]
    PlainHttp,
}

/// Which URLs outbound calls may go to: `https://` anywhere, `http://` only to a
/// loopback address (a sidecar on the same host) unless the operator allows it for an
/// issuer. Tokens and client secrets are sent to these URLs.
pub fn check_url(url: &str, allow_insecure_http: bool) -> Result<(), InsecureUrl> {
    let parsed = reqwest::Url::parse(url).map_err(|_| InsecureUrl::NotHttp)?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(&parsed) => Ok(()),
        "http" => Err(InsecureUrl::PlainHttp),
        _ => Err(InsecureUrl::NotHttp),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    url.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// The one HTTP client every outbound call shares: rustls, bounded connect time, no
/// cookies, and no redirects: a 307 would re-send a token (or credentials) to wherever
/// it points, so a redirect is an answer like any other non-2xx.
pub fn client() -> Result<reqwest::Client, OutboundError> {
    reqwest::Client::builder()
        .user_agent(concat!("introspectd/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
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
/// `timeout`, with how long the answer may be kept (its `Cache-Control`, where it says).
pub async fn json_object(
    request: RequestBuilder,
    timeout: Duration,
    max_bytes: usize,
) -> Result<(Map<String, Value>, Option<Duration>), OutboundError> {
    let (headers, bytes) = tokio::time::timeout(timeout, body(request.timeout(timeout), max_bytes))
        .await
        .map_err(|_| OutboundError::Timeout(timeout))?
        .map_err(|error| match error {
            // reqwest's own timer may fire first: the same outcome.
            OutboundError::Request(e) if e.is_timeout() => OutboundError::Timeout(timeout),
            other => other,
        })?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok((object, cache_max_age(&headers))),
        _ => Err(OutboundError::NotAnObject),
    }
}

/// How long an answer may be kept by its `Cache-Control`: `no-store` or `no-cache`
/// anywhere in it is zero, else its `max-age`; `None` where it says neither.
pub fn cache_max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    for value in headers.get_all(reqwest::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for directive in value.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-cache" || lower == "no-store" {
                return Some(Duration::ZERO);
            }
            // The shortest of several, and a negative one as zero (RFC 9111 4.2.1 asks
            // a cache to treat a doubtful freshness as stale).
            if let Some(secs) = lower
                .strip_prefix("max-age=")
                .and_then(|secs| secs.trim_matches('"').parse::<i64>().ok())
            {
                let secs = Duration::from_secs(secs.max(0).unsigned_abs());
                max_age = Some(max_age.map_or(secs, |shortest: Duration| shortest.min(secs)));
            }
        }
    }
    max_age
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn plain_http_only_to_loopback_or_where_allowed() {
        for allowed in [
            "https://id.example.com/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://127.9.9.9/jwks",
            "http://localhost:4444/introspect",
            "http://[::1]:4444/introspect",
        ] {
            assert_eq!(check_url(allowed, false), Ok(()), "{allowed}");
        }
        for (refused, why) in [
            ("http://id.example.com/jwks", InsecureUrl::PlainHttp),
            ("http://127.0.0.1.example.com/jwks", InsecureUrl::PlainHttp),
            ("http://10.0.0.1/jwks", InsecureUrl::PlainHttp),
            ("ftp://id.example.com/jwks", InsecureUrl::NotHttp),
            ("id.example.com/jwks", InsecureUrl::NotHttp),
        ] {
            assert_eq!(check_url(refused, false), Err(why), "{refused}");
        }
        assert_eq!(check_url("http://id.example.com/jwks", true), Ok(()));
    }

    use axum::{Router, http::StatusCode, routing::get};

    use super::*;

    /// A server on a loopback socket with one route per way an answer can go wrong.
    async fn server() -> String {
        let app = Router::new()
            .route("/object", get(|| async { r#"{"a": 1}"# }))
            .route("/array", get(|| async { "[1, 2]" }))
            .route("/large", get(|| async { "x".repeat(4096) }))
            .route("/down", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "{}"
                }),
            );
        let addr = crate::test_util::serve_on_loopback(app).await;
        // Credentials and a query in the URL: no error may show them.
        format!("http://user:s3cret@{addr}")
    }

    async fn object(url: &str, timeout: Duration) -> Result<Map<String, Value>, OutboundError> {
        let http = client().unwrap_or_else(|e| unreachable!("{e}"));
        json_object(http.get(format!("{url}?token=t0ken")), timeout, 1024)
            .await
            .map(|(object, _)| object)
    }

    #[test]
    fn cache_control_max_age() {
        let said = |values: &[&str]| {
            let mut headers = super::HeaderMap::new();
            for value in values {
                if let Ok(value) = reqwest::header::HeaderValue::from_str(value) {
                    headers.append(reqwest::header::CACHE_CONTROL, value);
                }
            }
            super::cache_max_age(&headers)
        };
        assert_eq!(
            said(&["public, max-age=600"]),
            Some(Duration::from_secs(600))
        );
        assert_eq!(said(&["no-store"]), Some(Duration::ZERO));
        assert_eq!(said(&["max-age=60, no-store"]), Some(Duration::ZERO));
        assert_eq!(said(&["max-age=60", "No-Cache"]), Some(Duration::ZERO));
        assert_eq!(
            said(&["max-age=2, max-age=600"]),
            Some(Duration::from_secs(2))
        );
        assert_eq!(said(&["max-age=-1"]), Some(Duration::ZERO));
        assert_eq!(said(&["public"]), None);
        assert_eq!(said(&["max-age=soon"]), None);
        assert_eq!(said(&[]), None);
    }

    fn assert_no_url(error: &OutboundError) {
        let text = format!("{error} {error:?}");
        for secret in ["s3cret", "t0ken", "/jwks", "/slow", "/down"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[tokio::test]
    async fn each_failure_has_its_own_error_and_none_names_the_url() {
        let base = server().await;
        let second = Duration::from_secs(1);
        assert!(object(&format!("{base}/object"), second).await.is_ok());
        let cases = [
            ("/down", "Status(503)"),
            ("/large", "TooLarge(1024)"),
            ("/array", "NotAnObject"),
            ("/slow", "Timeout"),
        ];
        for (path, expected) in cases {
            let timeout = Duration::from_millis(300);
            match object(&format!("{base}{path}"), timeout).await {
                Ok(answer) => unreachable!("{path} answered {answer:?}"),
                Err(error) => {
                    assert!(
                        format!("{error:?}").starts_with(expected),
                        "{path}: {error:?}"
                    );
                    assert_no_url(&error);
                }
            }
        }
    }

    #[tokio::test]
    async fn a_refused_connection_keeps_its_cause_but_not_the_url() {
        let closed = crate::test_util::closed_port().await;
        let url = format!("http://user:s3cret@{closed}/jwks");
        let error = object(&url, Duration::from_secs(2)).await;
        let Err(error) = error else {
            unreachable!("a closed port answered")
        };
        assert!(matches!(error, OutboundError::Request(_)), "{error:?}");
        assert!(
            std::error::Error::source(&error).is_some(),
            "the cause is kept"
        );
        assert_no_url(&error);
    }
}
