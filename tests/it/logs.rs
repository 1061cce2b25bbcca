//! No log line, at any level and in either format, contains a token.

use std::process::Stdio;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use introspectd::{
    config::{IssuerSection, LogFormat},
    grpc::pb::{
        self, token_introspection_client::TokenIntrospectionClient,
        token_revocation_client::TokenRevocationClient,
    },
    token::sign::SigningKey,
};
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::support::*;

const ISS: &str = "https://logs.test/";

/// Runs the real binary at `trace` for every target, sends it valid, invalid and
/// revoked tokens over gRPC and HTTP, and searches everything it wrote.
async fn logs_hold_no_token(format: LogFormat) -> TestResult {
    let signer = key(Algorithm::RS256, "rs");
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), vec![rs256_issuer(&signer)], |file| {
        file.log.format = format;
        file.log.filter = "trace".into();
    });
    let log_path = dir.path().join("stderr.log");
    let mut process = spawn_serve(&config, || log_file(&log_path)).await;

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
    let endpoint = format!("http://{}", process.grpc);
    let mut introspection = TokenIntrospectionClient::connect(endpoint.clone()).await?;
    let mut revocation = TokenRevocationClient::connect(endpoint).await?;
    let http = reqwest::Client::new();
    for token in &tokens {
        introspection
            .introspect(pb::IntrospectRequest {
                token: token.clone(),
                ..Default::default()
            })
            .await?;
        http.post(format!("http://{}/oauth2/introspect", process.http))
            .form(&[("token", token.as_str())])
            .send()
            .await?;
        let target = pb::revoke_request::Target::Token(pb::TokenTarget {
            token: token.clone(),
            token_type_hint: None,
        });
        revocation
            .revoke(with_key(
                ADMIN_KEY,
                pb::RevokeRequest {
                    target: Some(target),
                    reason: String::new(),
                },
            ))
            .await?;
        let subject = pb::check_revocation_request::Subject::Token(token.clone());
        revocation
            .check_revocation(pb::CheckRevocationRequest {
                subject: Some(subject),
            })
            .await?;
        introspection
            .introspect(pb::IntrospectRequest {
                token: token.clone(),
                ..Default::default()
            })
            .await?;
    }
    drop(introspection);
    drop(revocation);
    assert!(process.terminate()?.success());

    let logs = std::fs::read_to_string(&log_path)?;
    assert!(
        logs.contains("token inactive"),
        "debug events were written:\n{logs}"
    );
    if matches!(format, LogFormat::Json) {
        for line in logs.lines().filter(|line| !line.trim().is_empty()) {
            let parsed: Result<serde_json::Map<String, serde_json::Value>, _> =
                serde_json::from_str(line);
            assert!(
                parsed.is_ok(),
                "log.format = json wrote a line that is not a JSON object: {line}"
            );
        }
    }
    for token in &tokens {
        assert!(
            !logs.contains(token.as_str()),
            "a log line holds a raw token"
        );
        // Nor any of its segments: a signature alone is a secret's worth.
        for segment in token.split('.').filter(|s| s.len() >= 16) {
            assert!(!logs.contains(segment), "a log line holds a token segment");
        }
    }
    Ok(())
}

#[tokio::test]
async fn no_text_log_line_contains_a_token() -> TestResult {
    logs_hold_no_token(LogFormat::Text).await
}

#[tokio::test]
async fn no_json_log_line_contains_a_token() -> TestResult {
    logs_hold_no_token(LogFormat::Json).await
}

/// `RUST_LOG` wins over `log.filter` when set: a configuration that logs errors alone
/// still writes the start-up events `RUST_LOG` asks for.
#[tokio::test]
async fn rust_log_wins_over_the_configured_filter() -> TestResult {
    let dir = tempfile::tempdir()?;
    let issuer = rs256_issuer(&key(Algorithm::RS256, "rs"));
    let config = write_config(dir.path(), vec![issuer], |file| {
        file.log.filter = "error".into();
    });
    let log_path = dir.path().join("stderr.log");
    let mut process = spawn_in_shell("export RUST_LOG=info", &config, || log_file(&log_path)).await;
    assert!(process.terminate()?.success());
    let logs = std::fs::read_to_string(&log_path)?;
    assert!(logs.contains("state store opened"), "{logs}");
    Ok(())
}

/// An embedded store file that is there but empty (a restore gone wrong) starts a new
/// store, as redb does, but not silently.
#[tokio::test]
async fn an_empty_store_file_is_said_in_the_log() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("state.redb");
    std::fs::write(&store, b"")?;
    let issuer = rs256_issuer(&key(Algorithm::RS256, "rs"));
    let config = write_config(dir.path(), vec![issuer], |file| {
        file.store = introspectd::config::StoreSection {
            backend: introspectd::config::StoreBackend::Embedded,
            path: store.clone(),
            ..Default::default()
        };
    });
    let log_path = dir.path().join("stderr.log");
    let mut process = spawn_serve(&config, || log_file(&log_path)).await;
    assert!(process.terminate()?.success());
    let logs = std::fs::read_to_string(&log_path)?;
    assert!(logs.contains("the state store file is empty"), "{logs}");
    Ok(())
}

fn rs256_issuer(signer: &SigningKey) -> IssuerSection {
    IssuerSection {
        jwks_uri: None,
        jwks: Some(introspectd::token::sign::jwks(&[signer]).to_string()),
        ..issuer_section(ISS, "http://unused", &["RS256"])
    }
}

/// The log file, truncated: a retried start (fresh ports) begins it again.
fn log_file(path: &std::path::Path) -> Stdio {
    std::fs::File::create(path)
        .map(Stdio::from)
        .unwrap_or_else(|e| unreachable!("cannot create {}: {e}", path.display()))
}
