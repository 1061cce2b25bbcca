//! No log line, at any level, contains a token.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde_json::json;
use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

use crate::support::*;

const ISS: &str = "https://logs.test/";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn no_log_line_contains_a_token() -> TestResult {
    let captured = Captured::default();
    // The test runtime is single-threaded, so this thread-local subscriber sees the
    // server's tasks too.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("trace"))
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let signer = key(Algorithm::RS256, "rs");
    let jwks = JwksServer::start(&[&signer]).await;
    let server = Introspectd::start_ready(file_config(vec![issuer_section(
        ISS,
        &jwks.jwks_uri(),
        &["RS256"],
    )]))
    .await;
    let mut expired = claims(ISS);
    expired["exp"] = json!(now() - 3600);
    let tokens = vec![
        mint(&signer, &claims(ISS)),
        mint(&signer, &expired),
        mint(&key(Algorithm::RS256, "unknown"), &claims(ISS)),
        "opaque-secret-token-value-123456".to_owned(),
        format!(
            "{}.{}.bm90IGEgc2lnbmF0dXJl",
            URL_SAFE_NO_PAD.encode("{\"alg\":\"none\"}"),
            URL_SAFE_NO_PAD.encode("{}")
        ),
    ];
    for token in &tokens {
        server.introspect(token).await;
        let _ = reqwest::Client::new()
            .post(format!("http://{}/oauth2/introspect", server.http_addr))
            .form(&[("token", token.as_str())])
            .send()
            .await?;
    }
    server.stop().await?;

    let logs =
        String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    assert!(logs.contains("token inactive"), "debug logs were captured");
    for token in &tokens {
        assert!(
            !logs.contains(token.as_str()),
            "a log line holds a raw token"
        );
        // Nor any of its segments (a signature alone is a secret's worth).
        for segment in token.split('.').filter(|s| s.len() >= 16) {
            assert!(!logs.contains(segment), "a log line holds a token segment");
        }
    }
    Ok(())
}
