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
/// The client introspectd is at the issuer, with characters RFC 6749 section 2.3.1 has it
/// form-urlencode before HTTP Basic joins the two.
const CLIENT_ID: &str = "introspect d";
const CLIENT_SECRET: &str = "s3:c%r+t é";
/// `Basic base64("introspect+d:s3%3Ac%25r%2Bt+%C3%A9")`.
const CREDENTIALS: &str = "Basic aW50cm9zcGVjdCtkOnMzJTNBYyUyNXIlMkJ0KyVDMyVBOQ==";

#[derive(Default)]
struct Idp {
    calls: AtomicUsize,
    down: AtomicBool,
    /// Every token this endpoint was asked about, in order.
    received: std::sync::Mutex<Vec<String>>,
}

impl Idp {
    fn received(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
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
    let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    let token = field("token");
    idp.received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(token.clone());
    if field("token_type_hint") != "access_token" {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let access = |extra: Value| {
        let mut answer = json!({
            "active": true, "sub": "alice", "scope": "read write", "client_id": "spa",
            "aud": [AUD], "exp": now() + 600, "iat": now(), "token_type": "Bearer", "org_id": "org-9",
        });
        if let (Some(answer), Some(extra)) = (answer.as_object_mut(), extra.as_object()) {
            for (name, value) in extra {
                if value.is_null() {
                    answer.remove(name);
                } else {
                    answer.insert(name.clone(), value.clone());
                }
            }
        }
        answer
    };
    // A refresh token is active at the issuer: only the answer's members tell.
    let refresh_lifetime = 14 * 24 * 3600;
    let answer: Value = match token.as_str() {
        // What the issuer says of how long its answer may be kept.
        t if t.starts_with("kept-") => {
            let cache_control = if t.starts_with("kept-no-store") {
                "no-store"
            } else {
                "private, max-age=1"
            };
            return ([("cache-control", cache_control)], Json(access(json!({})))).into_response();
        }
        // Expired five seconds ago: within the leeway, as for a JWT.
        "just-expired" => access(json!({"exp": now() - 5})),
        "long-expired" => access(json!({"exp": now() - 3600})),
        t if t.starts_with("active-") || t.starts_with("ory_at_") => access(json!({})),
        "no-exp" => access(json!({"exp": null})),
        "other-issuer" => access(json!({"iss": "https://elsewhere.test/"})),
        // Hydra: refresh tokens say so in token_use.
        t if t.starts_with("ory_rt_") => access(json!({
            "token_use": "refresh_token", "token_type": null, "exp": now() + refresh_lifetime,
        })),
        // oidc-provider: no token_type for refresh tokens, a long lifetime.
        "oidc-provider-refresh" => {
            access(json!({"token_type": null, "exp": now() + refresh_lifetime}))
        }
        "no-aud" => access(json!({"aud": null})),
        "foreign-aud" => access(json!({"aud": "https://another-api.test"})),
        _ => json!({"active": false}),
    };
    Json(answer).into_response()
}

async fn idp() -> (String, Arc<Idp>) {
    let state = Arc::new(Idp::default());
    let app = Router::new()
        .route("/oauth2/introspect", post(introspection))
        .with_state(state.clone());
    let url = format!("http://{}/oauth2/introspect", serve_on_loopback(app).await);
    (url, state)
}

fn section(endpoint: &str, cache_secs: u64) -> IssuerSection {
    let signer = key(Algorithm::ES256, "es");
    IssuerSection {
        jwks_uri: None,
        jwks: Some(introspectd::token::sign::jwks(&[&signer]).to_string()),
        introspection_endpoint: Some(endpoint.into()),
        introspection_client_id: Some(CLIENT_ID.into()),
        introspection_client_secret: Some(CLIENT_SECRET.into()),
        introspection_cache_secs: cache_secs,
        ..issuer_section(ISS, "http://unused", &["ES256"])
    }
}

async fn server(endpoint: &str, cache_secs: u64) -> Introspectd {
    Introspectd::start_ready(file_config(vec![section(endpoint, cache_secs)])).await
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

/// RFC 7662 section 4: an answer is kept no longer than the issuer allows, and the
/// issuer's `Cache-Control` says how long that is (shorter than the configured time).
#[tokio::test]
async fn opaque_answers_are_kept_no_longer_than_their_cache_control_says() -> TestResult {
    let (endpoint, idp) = idp().await;
    let server = server(&endpoint, 60).await;
    let calls = || idp.calls.load(Ordering::SeqCst);
    assert!(server.introspect("kept-no-store").await.active);
    assert!(server.introspect("kept-no-store").await.active);
    assert_eq!(calls(), 2, "no-store: never reused");

    assert!(server.introspect("kept-max-age-1").await.active);
    assert!(server.introspect("kept-max-age-1").await.active);
    assert_eq!(calls(), 3, "max-age=1: reused within the second");
    let until = now() + 1;
    while now() <= until {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(server.introspect("kept-max-age-1").await.active);
    assert_eq!(
        calls(),
        4,
        "asked again once max-age passed, though 60 s are configured"
    );
    Ok(())
}

/// `exp` gets the leeway, as a JWT's does; and an answer the issuer calls active that
/// the rules refuse is remembered as an inactive one is, so repeats do not reach the
/// issuer each time.
#[tokio::test]
async fn opaque_expiry_has_the_leeway_and_refusals_are_remembered() -> TestResult {
    let (endpoint, idp) = idp().await;
    let server = server(&endpoint, 60).await;
    let just = server.introspect("just-expired").await;
    assert!(just.active, "within the leeway: {just:?}");
    assert_eq!(
        reason(&server.introspect("long-expired").await),
        InactiveReason::Expired
    );
    let asked = idp.calls.load(Ordering::SeqCst);
    for refused in ["ory_rt_abc", "foreign-aud", "long-expired"] {
        for _ in 0..3 {
            assert!(!server.introspect(refused).await.active);
        }
    }
    assert_eq!(
        idp.calls.load(Ordering::SeqCst),
        asked + 2,
        "each refused answer asked once (long-expired was already remembered)"
    );
    Ok(())
}

/// A burst of calls for one new opaque token costs its issuer one call: the others wait
/// for that answer.
#[tokio::test]
async fn a_burst_of_one_new_opaque_token_asks_its_issuer_once() -> TestResult {
    let (endpoint, idp) = crate::limits::slow_idp(std::time::Duration::from_millis(500)).await;
    let server = server(&endpoint, 60).await;
    let mut client = server.client().await;
    let calls = (0..20).map(|_| {
        let mut client = client.clone();
        async move {
            client
                .introspect(pb::IntrospectRequest {
                    token: "burst-token".into(),
                    ..Default::default()
                })
                .await
                .map(|answer| reason(&answer.into_inner()))
                .map_err(|status| status.code())
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    for answer in answers {
        assert_eq!(answer, Ok(InactiveReason::InactiveAtIssuer));
    }
    assert_eq!(idp.calls.load(Ordering::SeqCst), 1);
    // Later calls find the remembered answer.
    let again = client
        .introspect(pb::IntrospectRequest {
            token: "burst-token".into(),
            ..Default::default()
        })
        .await?;
    assert_eq!(
        reason(&again.into_inner()),
        InactiveReason::InactiveAtIssuer
    );
    assert_eq!(idp.calls.load(Ordering::SeqCst), 1);
    Ok(())
}

/// A caller that goes away while its issuer is asked leaves the lookup to those still
/// waiting: one of them asks again, and a call that comes later waits for that answer
/// rather than asking a third time.
#[tokio::test]
async fn a_cancelled_caller_leaves_the_shared_lookup_to_the_others() -> TestResult {
    let (endpoint, idp) = crate::limits::slow_idp(std::time::Duration::from_secs(1)).await;
    let server = server(&endpoint, 60).await;
    let client = server.client().await;
    let call = || {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .introspect(pb::IntrospectRequest {
                    token: "shared-token".into(),
                    ..Default::default()
                })
                .await
                .map(|answer| reason(&answer.into_inner()))
                .map_err(|status| status.code())
        })
    };
    let pause = |ms| tokio::time::sleep(std::time::Duration::from_millis(ms));
    let first = call();
    pause(200).await;
    let waiting = [call(), call()];
    pause(200).await;
    first.abort();
    pause(200).await;
    let later = call();
    for answer in waiting.into_iter().chain([later]) {
        assert_eq!(answer.await?, Ok(InactiveReason::InactiveAtIssuer));
    }
    assert_eq!(
        idp.calls.load(Ordering::SeqCst),
        2,
        "the cancelled call's, and one more for everyone else"
    );
    Ok(())
}

#[tokio::test]
async fn refresh_tokens_are_never_active_whatever_the_issuer_says() -> TestResult {
    let (endpoint, _idp) = idp().await;
    let server = server(&endpoint, 60).await;
    let hydra = server.introspect("ory_rt_abc.def").await;
    assert!(!hydra.active, "{hydra:?}");
    assert_eq!(reason(&hydra), InactiveReason::WrongTokenType);
    // No token_type and fourteen days to live: past the issuer's maximum lifetime.
    let long = server.introspect("oidc-provider-refresh").await;
    assert!(!long.active, "{long:?}");

    let (endpoint, _idp) = idp().await;
    let strict = IssuerSection {
        require_token_type: true,
        max_token_lifetime_secs: 30 * 24 * 3600,
        ..section(&endpoint, 60)
    };
    let server = Introspectd::start_ready(file_config(vec![strict])).await;
    let refused = server.introspect("oidc-provider-refresh").await;
    assert_eq!(
        reason(&refused),
        InactiveReason::WrongTokenType,
        "{refused:?}"
    );
    assert!(server.introspect("active-1").await.active);
    Ok(())
}

#[tokio::test]
async fn opaque_answers_meet_the_issuer_audiences() -> TestResult {
    let (endpoint, _idp) = idp().await;
    let server = server(&endpoint, 60).await;
    assert_eq!(
        reason(&server.introspect("no-aud").await),
        InactiveReason::WrongAudience
    );
    assert_eq!(
        reason(&server.introspect("foreign-aud").await),
        InactiveReason::WrongAudience
    );

    let (endpoint, _idp) = idp().await;
    let lenient = IssuerSection {
        accept_opaque_without_aud: true,
        ..section(&endpoint, 60)
    };
    let server = Introspectd::start_ready(file_config(vec![lenient])).await;
    assert!(server.introspect("no-aud").await.active);
    assert_eq!(
        reason(&server.introspect("foreign-aud").await),
        InactiveReason::WrongAudience
    );
    Ok(())
}

#[tokio::test]
async fn hydra_tokens_with_a_dot_are_opaque() -> TestResult {
    let (endpoint, idp) = idp().await;
    let server = server(&endpoint, 60).await;
    let token = "ory_at_Kx7yW3pZ0aS6b1c2d3e4f5g6h7i8j9k0l1m2n3o4p5q.Fz9yX8wV7uT6sR5qP4oN3mL2kJ1iH0gF9eD8cB7aZ6y";
    let answer = server.introspect(token).await;
    assert!(answer.active, "{answer:?}");
    assert_eq!(idp.received(), vec![token.to_owned()]);
    Ok(())
}

#[tokio::test]
async fn each_opaque_token_goes_only_to_its_own_issuer() -> TestResult {
    let (hydra_endpoint, hydra) = idp().await;
    let (other_endpoint, other) = idp().await;
    let hydra_section = IssuerSection {
        opaque_token_prefixes: vec!["ory_at_".into(), "ory_rt_".into()],
        ..section(&hydra_endpoint, 60)
    };
    let other_section = IssuerSection {
        issuer: "https://other.test/".into(),
        opaque_token_prefixes: vec!["other_".into()],
        ..section(&other_endpoint, 60)
    };
    let server = Introspectd::start_ready(file_config(vec![hydra_section, other_section])).await;
    assert!(server.introspect("ory_at_one.two").await.active);
    // The other issuer's endpoint answers with iss = the hydra issuer (its fixture),
    // which is not its own: inactive, but it was asked and nobody else was.
    server.introspect("other_token").await;
    let unclaimed = server.introspect("nobody-claims-me").await;
    assert_eq!(reason(&unclaimed), InactiveReason::UnknownIssuer);
    assert_eq!(hydra.received(), vec!["ory_at_one.two".to_owned()]);
    assert_eq!(other.received(), vec!["other_token".to_owned()]);
    Ok(())
}

/// The routing rules of the README: the longest matching prefix wins; with
/// `try_unprefixed_in_order`, unprefixed issuers are asked in order until one says
/// active; an answer without `exp` reports the end of its cache time as `exp`.
#[tokio::test]
async fn opaque_tokens_are_routed_by_longest_prefix_or_in_order() -> TestResult {
    let (short_endpoint, short) = idp().await;
    let (long_endpoint, long) = idp().await;
    let server = Introspectd::start_ready(file_config(vec![
        IssuerSection {
            opaque_token_prefixes: vec!["ory_".into()],
            ..section(&short_endpoint, 60)
        },
        IssuerSection {
            issuer: "https://long.test/".into(),
            opaque_token_prefixes: vec!["ory_at_".into()],
            ..section(&long_endpoint, 60)
        },
    ]))
    .await;
    server.introspect("ory_at_longest").await;
    server.introspect("ory_rt_shorter").await;
    assert_eq!(long.received(), vec!["ory_at_longest".to_owned()]);
    assert_eq!(short.received(), vec!["ory_rt_shorter".to_owned()]);
    server.stop().await?;

    let (first_endpoint, first) = idp().await;
    let (second_endpoint, second) = idp().await;
    let mut file = file_config(vec![
        section(&first_endpoint, 60),
        IssuerSection {
            issuer: "https://second.test/".into(),
            ..section(&second_endpoint, 60)
        },
    ]);
    file.opaque.try_unprefixed_in_order = true;
    let server = Introspectd::start_ready(file).await;
    let active = server.introspect("active-first").await;
    assert!(active.active);
    assert_eq!(active.iss.as_deref(), Some(ISS));
    assert!(!server.introspect("unknown-to-both").await.active);
    assert_eq!(first.received(), vec!["active-first", "unknown-to-both"]);
    assert_eq!(
        second.received(),
        vec!["unknown-to-both"],
        "asked only once the first said inactive"
    );

    let no_exp = server.introspect("no-exp").await;
    assert!(no_exp.active);
    let exp = no_exp.exp.unwrap_or_default();
    assert!(
        (now() + 55..=now() + 61).contains(&exp),
        "the end of the 60 s cache time: {exp}"
    );
    Ok(())
}

#[tokio::test]
async fn a_redirect_never_carries_a_token_elsewhere() -> TestResult {
    let (elsewhere, thief) = idp().await;
    let app = Router::new().route(
        "/oauth2/introspect",
        post(move || {
            let location = elsewhere.clone();
            async move { axum::response::Redirect::temporary(&location) }
        }),
    );
    let addr = serve_on_loopback(app).await;
    let server = server(&format!("http://{addr}/oauth2/introspect"), 60).await;
    let answer = server
        .client()
        .await
        .introspect(pb::IntrospectRequest {
            token: "active-secret".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(answer.err().map(|e| e.code()), Some(Code::Unavailable));
    assert!(
        thief.received().is_empty(),
        "the token was re-sent: {:?}",
        thief.received()
    );
    Ok(())
}
