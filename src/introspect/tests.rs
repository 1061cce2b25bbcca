//! The Introspector's flows with a pinned clock: a JWT verified once and then served
//! from the cache, with revocation and the call's policy checked on every answer; an
//! opaque token asked of a real RFC 7662 endpoint on a loopback socket.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Form, Json, Router, extract::State, routing::post};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use super::*;
use crate::keys::{IssuerSpec, RefreshPolicy, Source};
use crate::opaque::Endpoint;
use crate::revocation::{Record, Revocation};
use crate::token::{Policy, sign::SigningKey};

const ISS: &str = "https://issuer.test/";
const OPAQUE_ISS: &str = "https://opaque.test/";
const AUD: &str = "api";
const NOW: i64 = 1_700_000_000;

fn refresh() -> RefreshPolicy {
    RefreshPolicy {
        default_interval: Duration::from_secs(60),
        min_interval: Duration::from_secs(60),
        max_interval: Duration::from_secs(60),
        unknown_kid_min_interval: Duration::from_secs(60),
        fetch_timeout: Duration::from_secs(5),
    }
}

fn policy(iss: &str) -> Policy {
    Policy {
        algorithms: vec![Algorithm::ES256],
        ..Policy::new(iss, vec![AUD.into()])
    }
}

struct Fixture {
    introspector: Introspector,
    revocations: Arc<RevocationSet>,
    signer: SigningKey,
}

/// An introspector with one JWT issuer (inline keys, loaded unless `load` is false) and,
/// when given, one opaque issuer at `endpoint`.
async fn fixture(load: bool, endpoint: Option<String>) -> Fixture {
    let signer =
        SigningKey::generate(Algorithm::ES256, "k1").unwrap_or_else(|e| unreachable!("{e}"));
    let mut specs = vec![IssuerSpec {
        policy: policy(ISS),
        source: Source::Inline(crate::token::sign::jwks(&[&signer]).to_string()),
        refresh: refresh(),
        opaque: None,
        outbound: (16, 1000),
    }];
    if let Some(url) = endpoint {
        specs.push(IssuerSpec {
            policy: policy(OPAQUE_ISS),
            source: Source::Inline(crate::token::sign::jwks(&[&signer]).to_string()),
            refresh: refresh(),
            opaque: Some(Endpoint {
                url,
                prefixes: Vec::new(),
                credentials: None,
                cache_secs: 60,
                timeout: Duration::from_secs(2),
            }),
            outbound: (16, 1000),
        });
    }
    let issuers = Arc::new(Issuers::new(specs, reqwest::Client::new()));
    if load {
        for issuer in issuers.iter() {
            issuer.load().await.unwrap_or_else(|e| unreachable!("{e}"));
        }
    }
    let revocations = Arc::new(RevocationSet::new());
    revocations.mark_complete();
    let introspector = Introspector::new(
        issuers,
        revocations.clone(),
        Arc::new(SubjectClaims::new()),
        HashMap::new(),
        100,
        16 * 1024,
    );
    Fixture {
        introspector,
        revocations,
        signer,
    }
}

fn jwt(signer: &SigningKey, exp: i64) -> String {
    let claims = json!({"iss": ISS, "sub": "alice", "aud": AUD, "exp": exp, "iat": NOW - 10,
        "jti": "j-1", "scope": "read"});
    signer.mint("at+jwt", &claims).unwrap_or_default()
}

fn reason(answer: &Introspection) -> Option<Reason> {
    answer
        .outcome
        .as_ref()
        .err()
        .map(|rejection| rejection.reason)
}

async fn ask(introspector: &Introspector, token: &str, now: i64) -> Introspection {
    introspector
        .introspect(token, CallPolicy::default(), now)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"))
}

#[tokio::test]
async fn a_jwt_is_verified_once_and_then_served_from_the_cache() {
    let f = fixture(true, None).await;
    let token = jwt(&f.signer, NOW + 600);
    let first = ask(&f.introspector, &token, NOW).await;
    assert!(first.is_active() && !first.cache_hit);
    let second = ask(&f.introspector, &token, NOW + 1).await;
    assert!(second.is_active() && second.cache_hit);
    assert_eq!(first.fingerprint, second.fingerprint);
}

#[tokio::test]
async fn revocation_and_the_call_policy_apply_to_cache_hits() {
    let f = fixture(true, None).await;
    let token = jwt(&f.signer, NOW + 600);
    assert!(ask(&f.introspector, &token, NOW).await.is_active());

    let scopes = vec!["write".to_owned()];
    let needs_write = CallPolicy {
        required_scopes: &scopes,
        audience: None,
        ..CallPolicy::default()
    };
    let narrowed = f.introspector.introspect(&token, needs_write, NOW).await;
    let narrowed = narrowed.unwrap_or_else(|e| unreachable!("{e}"));
    assert!(narrowed.cache_hit);
    assert_eq!(reason(&narrowed), Some(Reason::InsufficientScope));

    f.revocations.apply(&Revocation {
        record: Record::Jti {
            iss: ISS.into(),
            jti: "j-1".into(),
        },
        forget_after: NOW + 3600,
        revoked_at: NOW,
        reason: String::new(),
    });
    let revoked = ask(&f.introspector, &token, NOW + 2).await;
    assert!(revoked.cache_hit, "the verification itself stays cached");
    assert_eq!(reason(&revoked), Some(Reason::Revoked));
}

#[tokio::test]
async fn the_cache_ends_at_exp_and_the_leeway_is_decided_afresh() {
    let f = fixture(true, None).await;
    let token = jwt(&f.signer, NOW + 600);
    assert!(ask(&f.introspector, &token, NOW).await.is_active());
    let in_leeway = ask(&f.introspector, &token, NOW + 610).await;
    assert!(in_leeway.is_active() && !in_leeway.cache_hit);
    let past = ask(&f.introspector, &token, NOW + 631).await;
    assert_eq!(reason(&past), Some(Reason::Expired));
}

#[tokio::test]
async fn no_answer_before_the_issuer_keys_load() {
    let f = fixture(false, None).await;
    let token = jwt(&f.signer, NOW + 600);
    let answer = f
        .introspector
        .introspect(&token, CallPolicy::default(), NOW)
        .await;
    assert!(matches!(answer, Err(IntrospectError::KeysNotReady(_))));
}

/// An RFC 7662 endpoint on a loopback socket: `good` is active, anything else not.
async fn endpoint(calls: Arc<AtomicUsize>) -> String {
    async fn answer(
        State(calls): State<Arc<AtomicUsize>>,
        Form(form): Form<HashMap<String, String>>,
    ) -> Json<Value> {
        calls.fetch_add(1, Ordering::SeqCst);
        Json(match form.get("token").map(String::as_str) {
            Some("good") => json!({"active": true, "iss": OPAQUE_ISS, "aud": AUD,
                "sub": "bob", "exp": NOW + 3600, "scope": "read"}),
            _ => json!({"active": false}),
        })
    }
    let app = Router::new()
        .route("/introspect", post(answer))
        .with_state(calls);
    let addr = crate::test_util::serve_on_loopback(app).await;
    format!("http://{addr}/introspect")
}

#[tokio::test]
async fn an_opaque_answer_is_cached_no_longer_than_configured() {
    let calls = Arc::new(AtomicUsize::new(0));
    let f = fixture(true, Some(endpoint(calls.clone()).await)).await;
    let first = ask(&f.introspector, "good", NOW).await;
    assert!(first.is_active() && !first.cache_hit);
    assert!(ask(&f.introspector, "good", NOW + 59).await.cache_hit);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // cache_secs is 60, although the answer's exp is an hour away.
    let asked_again = ask(&f.introspector, "good", NOW + 60).await;
    assert!(asked_again.is_active() && !asked_again.cache_hit);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_inactive_opaque_answer_is_remembered_briefly() {
    let calls = Arc::new(AtomicUsize::new(0));
    let f = fixture(true, Some(endpoint(calls.clone()).await)).await;
    for now in [NOW, NOW + 1, NOW + 9] {
        let answer = ask(&f.introspector, "unknown", now).await;
        assert_eq!(reason(&answer), Some(Reason::InactiveAtIssuer));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "asked again within 10 s");
    ask(&f.introspector, "unknown", NOW + 10).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_endpoint_that_cannot_answer_is_undecided_not_inactive() {
    // A port nothing listens on.
    let closed = crate::test_util::closed_port().await;
    let f = fixture(true, Some(format!("http://{closed}/introspect"))).await;
    let answer = f
        .introspector
        .introspect("opaque", CallPolicy::default(), NOW)
        .await;
    assert!(
        matches!(answer, Err(IntrospectError::Upstream(_))),
        "{answer:?}"
    );
}

#[tokio::test]
async fn no_answer_while_the_revocation_set_is_loading() {
    let f = fixture(true, None).await;
    let loading = Introspector::new(
        f.introspector.issuers().clone(),
        Arc::new(RevocationSet::new()),
        Arc::new(SubjectClaims::new()),
        HashMap::new(),
        100,
        16 * 1024,
    );
    let token = jwt(&f.signer, NOW + 600);
    let answer = loading.introspect(&token, CallPolicy::default(), NOW).await;
    assert!(
        matches!(answer, Err(IntrospectError::RevocationsIncomplete(_))),
        "{answer:?}"
    );
}

/// The answer's future is moved (and boxed) on every call: cold paths are boxed inside
/// it, so a cache hit does not carry their kilobytes of state.
#[tokio::test]
async fn a_cache_hit_carries_no_cold_path_state() {
    let f = fixture(true, None).await;
    let answer = f.introspector.introspect("x", CallPolicy::default(), NOW);
    assert!(
        std::mem::size_of_val(&answer) < 1024,
        "{} bytes",
        std::mem::size_of_val(&answer)
    );
}

#[tokio::test]
async fn the_json_answer_is_rendered_once_per_token() {
    let f = fixture(true, None).await;
    let token = jwt(&f.signer, NOW + 600);
    let first = ask(&f.introspector, &token, NOW).await;
    let second = ask(&f.introspector, &token, NOW + 1).await;
    let (a, b) = (first.rfc7662_json(), second.rfc7662_json());
    assert!(
        Arc::ptr_eq(&a, &b),
        "a cache hit reuses the rendered answer"
    );
    let parsed: serde_json::Value = serde_json::from_str(&a).unwrap_or_default();
    assert_eq!(parsed, second.rfc7662());
    let inactive = ask(&f.introspector, "not-a-token", NOW).await;
    assert_eq!(&*inactive.rfc7662_json(), r#"{"active":false}"#);
}
