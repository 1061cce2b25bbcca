//! Opaque tokens through the issuer's own RFC 7662 endpoint (a real HTTP server on port 0).

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
};
use introspectd::{
    config::IssuerSection,
    grpc::pb::{self, InactiveReason, revoke_request::Target},
};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tonic::Code;

use crate::support::*;

const ISS: &str = "https://hydra.test/";
/// `Basic base64("introspectd:s3cret")`.
const CREDENTIALS: &str = "Basic aW50cm9zcGVjdGQ6czNjcmV0";

#[derive(Default)]
struct Idp {
    calls: AtomicUsize,
    down: AtomicBool,
}

async fn introspection(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    idp.calls.fetch_add(1, Ordering::SeqCst);
    if idp.down.load(Ordering::SeqCst) {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(CREDENTIALS) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let token = body
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .unwrap_or_default()
        .to_owned();
    let answer: Value = match token.as_str() {
        t if t.starts_with("active-") => json!({
            "active": true, "sub": "alice", "scope": "read write", "client_id": "spa",
            "exp": now() + 600, "iat": now(), "token_type": "Bearer", "org_id": "org-9",
        }),
        "no-exp" => json!({"active": true, "sub": "bob"}),
        "other-issuer" => {
            json!({"active": true, "sub": "eve", "iss": "https://elsewhere.test/", "exp": now() + 600})
        }
        _ => json!({"active": false}),
    };
    Json(answer).into_response()
}

async fn idp() -> (String, Arc<Idp>) {
    let state = Arc::new(Idp::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    let url = format!(
        "http://{}/oauth2/introspect",
        listener
            .local_addr()
            .unwrap_or_else(|e| unreachable!("{e}"))
    );
    let app = Router::new()
        .route("/oauth2/introspect", post(introspection))
        .with_state(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, state)
}

async fn server(endpoint: &str, cache_secs: u64) -> Introspectd {
    let signer = key(Algorithm::ES256, "es");
    let section = IssuerSection {
        jwks_uri: None,
        jwks: Some(introspectd::token::sign::jwks(&[&signer]).to_string()),
        introspection_endpoint: Some(endpoint.into()),
        introspection_client_id: Some("introspectd".into()),
        introspection_client_secret: Some("s3cret".into()),
        introspection_cache_secs: cache_secs,
        ..issuer_section(ISS, "http://unused", &["ES256"])
    };
    Introspectd::start_ready(file_config(vec![section])).await
}

#[tokio::test]
async fn opaque_tokens_are_asked_of_the_issuer_and_cached() -> TestResult {
    let (endpoint, idp) = idp().await;
    let server = server(&endpoint, 60).await;

    let answer = server.introspect("active-1").await;
    assert!(answer.active, "{answer:?}");
    assert_eq!(answer.iss.as_deref(), Some(ISS));
    assert_eq!(answer.sub.as_deref(), Some("alice"));
    assert_eq!(answer.scope.as_deref(), Some("read write"));
    assert_eq!(answer.client_id.as_deref(), Some("spa"));
    let org = answer
        .claims
        .as_ref()
        .and_then(|c| c.fields.get("org_id"))
        .and_then(|v| v.kind.clone());
    assert_eq!(
        org,
        Some(prost_types::value::Kind::StringValue("org-9".into()))
    );
    assert!(server.introspect("active-1").await.active);
    assert_eq!(
        idp.calls.load(Ordering::SeqCst),
        1,
        "the second answer came from the cache"
    );

    let inactive = server.introspect("unknown-token").await;
    assert!(!inactive.active);
    assert_eq!(reason(&inactive), InactiveReason::InactiveAtIssuer);
    let asked = idp.calls.load(Ordering::SeqCst);
    for _ in 0..5 {
        let again = server.introspect("unknown-token").await;
        assert_eq!(reason(&again), InactiveReason::InactiveAtIssuer);
    }
    assert_eq!(
        idp.calls.load(Ordering::SeqCst),
        asked,
        "repeated unknown tokens do not reach the issuer"
    );
    assert_eq!(
        reason(&server.introspect("other-issuer").await),
        InactiveReason::UnknownIssuer
    );
    let no_exp = server.introspect("no-exp").await;
    assert!(
        no_exp.active,
        "an answer without exp is active, and reused only for the cache time"
    );

    // Revocation applies to opaque tokens too, cached or not.
    server
        .revoke(Target::Token(pb::TokenTarget {
            token: "active-1".into(),
            token_type_hint: None,
        }))
        .await;
    assert_eq!(
        reason(&server.introspect("active-1").await),
        InactiveReason::Revoked
    );

    // An endpoint that cannot answer is an error, not an inactive token.
    idp.down.store(true, Ordering::SeqCst);
    let failed = server
        .client()
        .await
        .introspect(pb::IntrospectRequest {
            token: "active-2".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(failed.err().map(|e| e.code()), Some(Code::Unavailable));
    Ok(())
}

#[tokio::test]
async fn opaque_answers_are_reused_no_longer_than_configured() -> TestResult {
    let (endpoint, idp) = idp().await;
    let server = server(&endpoint, 1).await;
    assert!(server.introspect("active-short").await.active);
    let asked = idp.calls.load(Ordering::SeqCst);
    let until = now() + 1;
    while now() <= until {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(server.introspect("active-short").await.active);
    assert_eq!(
        idp.calls.load(Ordering::SeqCst),
        asked + 1,
        "asked again once the cache time passed"
    );
    Ok(())
}
