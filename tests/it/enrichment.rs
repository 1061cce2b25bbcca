//! Enrichment over real sockets: static, mapping and subject enrichers, the admin API,
//! the remote enricher against a real HTTP server that can be slow, fail or answer
//! garbage, subject claims across replicas (Redis) and restarts (embedded).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::post};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use introspectd::{
    config::{EnricherSection, IssuerSection, StoreBackend, StoreSection},
    grpc::{
        json_to_struct,
        pb::{self, subject_claims_admin_client::SubjectClaimsAdminClient},
    },
};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};
use tonic::Code;

use crate::redis_server::{RedisServer, redis_available};
use crate::support::*;

const ISS: &str = "https://enriched.test/";

fn sections(value: Value) -> Vec<EnricherSection> {
    serde_json::from_value(value).unwrap_or_else(|e| unreachable!("{e}"))
}

fn issuer(signer: &introspectd::token::sign::SigningKey, enrich: Value) -> IssuerSection {
    IssuerSection {
        enrich: sections(enrich),
        ..inline_issuer(ISS, signer)
    }
}

fn enrichment(answer: &pb::IntrospectResponse) -> Map<String, Value> {
    answer
        .enrichment
        .as_ref()
        .map(introspectd::grpc::struct_to_json)
        .unwrap_or_default()
}

async fn admin(server: &Introspectd) -> SubjectClaimsAdminClient<tonic::transport::Channel> {
    SubjectClaimsAdminClient::new(server.channel().await)
}

async fn set_claims(server: &Introspectd, sub: &str, claims: Value) -> Result<(), tonic::Status> {
    let Value::Object(claims) = claims else {
        unreachable!()
    };
    let request = with_key(
        ADMIN_KEY,
        pb::SetSubjectClaimsRequest {
            iss: ISS.into(),
            sub: sub.into(),
            claims: Some(json_to_struct(&claims)),
        },
    );
    admin(server)
        .await
        .set_subject_claims(request)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn static_mapping_and_subject_claims_on_grpc_and_http() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let enrich = json!([
        {"kind": "static", "claims": {"tenant": "acme", "plan": "free"}},
        {"kind": "mapping", "rules": [
            {"strip_prefix": "https://example.com/"},
            {"from_path": "realm_access.roles", "to": "roles"},
        ]},
        {"kind": "subject"},
    ]);
    let server = Introspectd::start_ready(file_config(vec![issuer(&signer, enrich)])).await;
    let mut shaped = claims(ISS);
    shaped["https://example.com/department"] = json!("finance");
    shaped["realm_access"] = json!({"roles": ["auditor"]});
    let token = mint(&signer, &shaped);

    let answer = server.introspect(&token).await;
    assert!(answer.active);
    let added = enrichment(&answer);
    assert_eq!(added.get("tenant"), Some(&json!("acme")));
    assert_eq!(added.get("department"), Some(&json!("finance")));
    assert_eq!(added.get("roles"), Some(&json!(["auditor"])));
    assert_eq!(added.get("plan"), Some(&json!("free")));

    // A subject claim set now shows on the very next answer, though the token is cached.
    set_claims(
        &server,
        "user-1",
        json!({"plan": "enterprise", "sub": "root", "manager": "bob",
               "cnf": {"jkt": "an-attackers-key"}, "scp": ["admin"]}),
    )
    .await?;
    let answer = server.introspect(&token).await;
    let added = enrichment(&answer);
    assert_eq!(
        added.get("plan"),
        Some(&json!("enterprise")),
        "later enrichers win"
    );
    assert_eq!(added.get("manager"), Some(&json!("bob")));
    for registered in ["sub", "cnf", "scp"] {
        assert!(
            !added.contains_key(registered),
            "{registered}: registered claims are never written by default"
        );
    }
    assert_eq!(answer.sub.as_deref(), Some("user-1"));

    // HTTP: enrichment claims at the top level, registered members untouched.
    let body: Value = reqwest::Client::new()
        .post(format!("http://{}/oauth2/introspect", server.http_addr))
        .form(&[("token", token.as_str())])
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(body["plan"], json!("enterprise"));
    assert_eq!(body["department"], json!("finance"));
    assert_eq!(body["sub"], json!("user-1"));
    assert_eq!(
        body.get("cnf"),
        None,
        "a bearer token's answer gains no binding"
    );

    let request = with_key(
        ADMIN_KEY,
        pb::GetSubjectClaimsRequest {
            iss: ISS.into(),
            sub: "user-1".into(),
        },
    );
    let got = admin(&server)
        .await
        .get_subject_claims(request)
        .await?
        .into_inner();
    assert!(got.found);
    delete_claims(&server, "user-1").await?;
    assert_eq!(
        enrichment(&server.introspect(&token).await).get("plan"),
        Some(&json!("free"))
    );

    // Inactive answers carry no enrichment.
    let mut expired = claims(ISS);
    expired["exp"] = json!(now() - 3600);
    let inactive = server.introspect(&mint(&signer, &expired)).await;
    assert!(!inactive.active);
    assert_eq!(inactive.enrichment, None);
    Ok(())
}

#[tokio::test]
async fn subject_claims_admin_needs_admin_and_bounded_claims() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(file_config(vec![issuer(
        &signer,
        json!([{"kind": "subject"}]),
    )]))
    .await;
    let request = |key: &str, iss: &str, sub: &str, claims: Value| {
        let Value::Object(claims) = claims else {
            unreachable!()
        };
        with_key(
            key,
            pb::SetSubjectClaimsRequest {
                iss: iss.into(),
                sub: sub.into(),
                claims: Some(json_to_struct(&claims)),
            },
        )
    };
    let mut client = admin(&server).await;
    let code = |r: Result<tonic::Response<pb::SetSubjectClaimsResponse>, tonic::Status>| {
        r.err().map(|e| e.code())
    };
    assert_eq!(
        code(
            client
                .set_subject_claims(request(READER_KEY, ISS, "a", json!({})))
                .await
        ),
        Some(Code::PermissionDenied)
    );
    assert_eq!(
        code(
            client
                .set_subject_claims(request("nope", ISS, "a", json!({})))
                .await
        ),
        Some(Code::Unauthenticated)
    );
    assert_eq!(
        code(
            client
                .set_subject_claims(request(ADMIN_KEY, "https://other/", "a", json!({})))
                .await
        ),
        Some(Code::InvalidArgument)
    );
    assert_eq!(
        code(
            client
                .set_subject_claims(request(ADMIN_KEY, ISS, "", json!({})))
                .await
        ),
        Some(Code::InvalidArgument)
    );
    let mut deep = json!(1);
    for _ in 0..12 {
        deep = json!({ "d": deep });
    }
    assert_eq!(
        code(
            client
                .set_subject_claims(request(ADMIN_KEY, ISS, "a", json!({"x": deep})))
                .await
        ),
        Some(Code::InvalidArgument)
    );
    assert_eq!(
        code(
            client
                .set_subject_claims(request(
                    ADMIN_KEY,
                    ISS,
                    "a",
                    json!({"big": "x".repeat(20_000)})
                ))
                .await
        ),
        Some(Code::InvalidArgument)
    );
    assert!(
        client
            .set_subject_claims(request(ADMIN_KEY, ISS, "a", json!({"ok": true})))
            .await
            .is_ok()
    );
    Ok(())
}

// === remote enricher ===

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ok,
    Slow,
    Fail,
    Garbage,
    /// 404: the service knows nothing of this subject.
    Unknown,
}

const MODES: [Mode; 5] = [
    Mode::Ok,
    Mode::Slow,
    Mode::Fail,
    Mode::Garbage,
    Mode::Unknown,
];

#[derive(Default)]
struct Remote {
    mode: AtomicUsize,
    calls: AtomicU64,
}

async fn remote_claims(
    State(remote): State<Arc<Remote>>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    remote.calls.fetch_add(1, Ordering::SeqCst);
    match MODES[remote.mode.load(Ordering::SeqCst)] {
        Mode::Ok => Json(json!({"org_name": format!("Org of {}", body["org_id"].as_str().unwrap_or("?")), "iss": "forged"})).into_response(),
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Json(json!({"late": true})).into_response()
        }
        Mode::Fail => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Mode::Garbage => "<html>not json</html>".into_response(),
        Mode::Unknown => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn remote_server() -> (String, Arc<Remote>) {
    let remote = Arc::new(Remote::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    let url = format!(
        "http://{}/claims",
        listener
            .local_addr()
            .unwrap_or_else(|e| unreachable!("{e}"))
    );
    let app = Router::new()
        .route("/claims", post(remote_claims))
        .with_state(remote.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, remote)
}

fn set_mode(remote: &Remote, mode: Mode) {
    let index = MODES.iter().position(|m| *m == mode).unwrap_or(0);
    remote.mode.store(index, Ordering::SeqCst);
}

#[tokio::test]
async fn remote_enricher_caches_times_out_and_fails_open_or_closed() -> TestResult {
    let (url, remote) = remote_server().await;
    let signer = key(Algorithm::ES256, "es");
    let open = issuer(
        &signer,
        json!([{"kind": "remote", "url": url, "timeout_ms": 300, "cache_ttl_secs": 60}]),
    );
    let closed_iss = "https://closed.test/";
    let closed = IssuerSection {
        issuer: closed_iss.into(),
        ..issuer(
            &signer,
            json!([{"kind": "remote", "url": url, "timeout_ms": 300, "cache_ttl_secs": 0, "on_error": "closed"}]),
        )
    };
    let own_breaker = |iss: &str| IssuerSection {
        issuer: iss.into(),
        ..issuer(
            &signer,
            json!([{"kind": "remote", "url": url, "timeout_ms": 300, "cache_ttl_secs": 60}]),
        )
    };
    let server = Introspectd::start_ready(file_config(vec![
        open,
        closed,
        own_breaker(SLOW_ISS),
        own_breaker(FAIL_ISS),
        own_breaker(GARBAGE_ISS),
    ]))
    .await;
    let token = mint(&signer, &claims(ISS));

    let answer = server.introspect(&token).await;
    assert_eq!(
        enrichment(&answer).get("org_name"),
        Some(&json!("Org of org-9")),
        "the validated claims were posted"
    );
    assert!(
        !enrichment(&answer).contains_key("iss"),
        "a remote answer never overwrites a registered claim"
    );
    assert_eq!(answer.iss.as_deref(), Some(ISS));
    server.introspect(&token).await;
    assert_eq!(remote.calls.load(Ordering::SeqCst), 1, "cached per subject");

    // Inactive tokens never reach the remote service.
    let mut expired = claims(ISS);
    expired["exp"] = json!(now() - 3600);
    expired["sub"] = json!("someone-else");
    server.introspect(&mint(&signer, &expired)).await;
    assert_eq!(remote.calls.load(Ordering::SeqCst), 1);

    // Tokens without `sub` are never cached: each asks again.
    let anonymous = without_sub(claims(ISS));
    let before = remote.calls.load(Ordering::SeqCst);
    server.introspect(&mint(&signer, &anonymous)).await;
    server.introspect(&mint(&signer, &anonymous)).await;
    assert_eq!(
        remote.calls.load(Ordering::SeqCst),
        before + 2,
        "no sub, no cache"
    );

    // Fail-open: slow, failing and garbage answers leave the claims out, the token
    // active. Each on an enricher of its own, whose breaker no earlier failure opened,
    // so that each reaches the remote service.
    for (mode, iss) in [
        (Mode::Slow, SLOW_ISS),
        (Mode::Fail, FAIL_ISS),
        (Mode::Garbage, GARBAGE_ISS),
    ] {
        set_mode(&remote, mode);
        let before = remote.calls.load(Ordering::SeqCst);
        let started = std::time::Instant::now();
        let answer = server.introspect(&mint(&signer, &claims(iss))).await;
        assert!(answer.active, "{iss}");
        assert!(!enrichment(&answer).contains_key("org_name"), "{iss}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "the timeout bounds the wait"
        );
        assert_eq!(
            remote.calls.load(Ordering::SeqCst),
            before + 1,
            "{iss} reached the remote service"
        );
    }
    // The breaker: after a failure, lookups are skipped for 5 s (counted as failures)...
    set_mode(&remote, Mode::Ok);
    let before = remote.calls.load(Ordering::SeqCst);
    let skipped = server
        .introspect(&mint(&signer, &with_sub(claims(FAIL_ISS), "other")))
        .await;
    assert!(skipped.active);
    assert!(!enrichment(&skipped).contains_key("org_name"));
    assert_eq!(remote.calls.load(Ordering::SeqCst), before, "skipped");
    // ...then asked again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = server
        .introspect(&mint(&signer, &with_sub(claims(FAIL_ISS), "third")))
        .await;
    assert_eq!(
        enrichment(&after).get("org_name"),
        Some(&json!("Org of org-9"))
    );
    assert_eq!(remote.calls.load(Ordering::SeqCst), before + 1);

    // Fail-closed: UNAVAILABLE.
    set_mode(&remote, Mode::Fail);
    let refused = server
        .client()
        .await
        .introspect(pb::IntrospectRequest {
            token: mint(&signer, &claims(closed_iss)),
            ..Default::default()
        })
        .await;
    assert_eq!(refused.err().map(|e| e.code()), Some(Code::Unavailable));

    let metrics = reqwest::get(format!("http://{}/metrics", server.http_addr))
        .await?
        .text()
        .await?;
    let failures = |iss: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("introspectd_enrichment_failures_total") && l.contains(iss))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(failures(SLOW_ISS), Some(1.0), "{metrics}");
    assert_eq!(
        failures(FAIL_ISS),
        Some(2.0),
        "the failure and the skip: {metrics}"
    );
    assert_eq!(failures(GARBAGE_ISS), Some(1.0), "{metrics}");
    Ok(())
}

/// The breaker is for outages: a lookup introspectd itself refused (the issuer's outbound
/// budget spent) or one the service refused for one subject (a 4xx) fails that answer
/// alone, and the next lookup reaches the service.
#[tokio::test]
async fn only_an_outage_opens_the_remote_enrichers_breaker() -> TestResult {
    let (url, remote) = remote_server().await;
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(file_config(vec![IssuerSection {
        max_outbound_concurrency: 1,
        ..issuer(
            &signer,
            json!([{"kind": "remote", "url": url, "timeout_ms": 5000, "cache_ttl_secs": 0, "on_error": "closed"}]),
        )
    }]))
    .await;
    let code = |result: Result<tonic::Response<pb::IntrospectResponse>, tonic::Status>| {
        result
            .map(|answer| answer.into_inner().active)
            .map_err(|status| status.code())
    };
    let ask = |sub: &str| {
        let token = mint(&signer, &with_sub(claims(ISS), sub));
        let server = &server;
        async move {
            server
                .client()
                .await
                .introspect(pb::IntrospectRequest {
                    token,
                    ..Default::default()
                })
                .await
        }
    };

    // One slow lookup holds the issuer's only outbound slot; a second is refused.
    set_mode(&remote, Mode::Slow);
    let holding = ask("holding");
    let (held, refused) = tokio::join!(holding, async {
        eventually("the slow lookup to start", || async {
            remote.calls.load(Ordering::SeqCst) == 1
        })
        .await;
        ask("over-budget").await
    });
    assert_eq!(code(held), Ok(true));
    assert_eq!(code(refused), Err(Code::Unavailable), "over budget, closed");
    set_mode(&remote, Mode::Ok);
    assert_eq!(
        code(ask("next").await),
        Ok(true),
        "the breaker stayed closed"
    );

    set_mode(&remote, Mode::Unknown);
    assert_eq!(code(ask("unknown").await), Err(Code::Unavailable));
    set_mode(&remote, Mode::Ok);
    assert_eq!(
        code(ask("known").await),
        Ok(true),
        "one subject's 404 is no outage"
    );

    set_mode(&remote, Mode::Fail);
    assert_eq!(code(ask("during").await), Err(Code::Unavailable));
    set_mode(&remote, Mode::Ok);
    let calls = remote.calls.load(Ordering::SeqCst);
    assert_eq!(
        code(ask("after").await),
        Err(Code::Unavailable),
        "a 500 opens it"
    );
    assert_eq!(remote.calls.load(Ordering::SeqCst), calls, "skipped");
    Ok(())
}

const SLOW_ISS: &str = "https://slow.test/";
const FAIL_ISS: &str = "https://fail.test/";
const GARBAGE_ISS: &str = "https://garbage.test/";

fn with_sub(mut claims: Value, sub: &str) -> Value {
    claims["sub"] = json!(sub);
    claims
}

fn without_sub(mut claims: Value) -> Value {
    if let Value::Object(map) = &mut claims {
        map.remove("sub");
    }
    claims
}

// === replication and restarts ===

#[tokio::test]
async fn subject_claims_reach_every_replica_through_redis() -> TestResult {
    if !redis_available("subject_claims_reach_every_replica_through_redis") {
        return Ok(());
    }
    let redis = RedisServer::start();
    let signer = key(Algorithm::ES256, "es");
    let store = StoreSection {
        backend: StoreBackend::Redis,
        redis_url: Some(redis.url()),
        redis_stream: "claims".into(),
        redis_timeout_ms: 500,
        ..StoreSection::default()
    };
    let start = || {
        let mut file = file_config(vec![issuer(&signer, json!([{"kind": "subject"}]))]);
        file.store = store.clone();
        Introspectd::start_ready(file)
    };
    let a = start().await;
    let b = start().await;
    let token = mint(&signer, &claims(ISS));
    assert!(b.introspect(&token).await.active);
    set_claims(&a, "user-1", json!({"role": "admin"})).await?;
    eventually("B to see the claims", || async {
        enrichment(&b.introspect(&token).await).get("role") == Some(&json!("admin"))
    })
    .await;
    // A replica started later gets them too (from the snapshot and the stream).
    let late = start().await;
    assert_eq!(
        enrichment(&late.introspect(&token).await).get("role"),
        Some(&json!("admin"))
    );
    Ok(())
}

#[tokio::test]
async fn subject_claims_survive_a_restart_with_the_embedded_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    let signer = key(Algorithm::ES256, "es");
    let config = || {
        let mut file = file_config(vec![issuer(&signer, json!([{"kind": "subject"}]))]);
        file.store = StoreSection {
            backend: StoreBackend::Embedded,
            path: dir.path().join("state.redb"),
            ..StoreSection::default()
        };
        file
    };
    let server = Introspectd::start_ready(config()).await;
    set_claims(&server, "user-1", json!({"plan": "gold"})).await?;
    server.stop().await?;
    let server = Introspectd::start_ready(config()).await;
    let answer = server.introspect(&mint(&signer, &claims(ISS))).await;
    assert_eq!(enrichment(&answer).get("plan"), Some(&json!("gold")));
    Ok(())
}

/// An active answer without enrichment is encoded once and kept with the cached token:
/// it must equal what a fresh answer says, on the unary call and on a stream, and stop
/// being served the moment subject claims or a revocation change the answer.
#[tokio::test]
async fn a_kept_answer_never_outlives_what_changes_it() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(file_config(vec![issuer(
        &signer,
        json!([{"kind": "subject"}]),
    )]))
    .await;
    let mut shaped = claims(ISS);
    shaped["jti"] = json!("kept-1");
    shaped["department"] = json!("finance");
    let token = mint(&signer, &shaped);

    let first = server.introspect(&token).await;
    assert!(first.active);
    assert_eq!(first.sub.as_deref(), Some("user-1"));
    assert_eq!(first.iss.as_deref(), Some(ISS));
    assert_eq!(first.enrichment, None);
    let other_claims = first
        .claims
        .as_ref()
        .map(introspectd::grpc::struct_to_json)
        .unwrap_or_default();
    assert_eq!(other_claims.get("department"), Some(&json!("finance")));
    assert_eq!(first.fingerprint.len(), 16);
    let kept = server.introspect(&token).await;
    assert_eq!(kept, first, "the kept answer is the fresh one");
    let streamed = stream_answer(&server, &token).await?;
    assert_eq!(streamed, first, "a stream sends the same kept answer");
    // Envoy's allow is kept too: its metadata must follow the subject claims as well.
    for _ in 0..2 {
        let metadata = envoy_metadata(&server, &token).await?;
        assert_eq!(metadata.get("department"), Some(&json!("finance")));
        assert_eq!(metadata.get("plan"), None);
    }

    set_claims(&server, "user-1", json!({"plan": "enterprise"})).await?;
    let enriched = server.introspect(&token).await;
    assert_eq!(
        enrichment(&enriched).get("plan"),
        Some(&json!("enterprise"))
    );
    assert_eq!(stream_answer(&server, &token).await?, enriched);
    assert_eq!(
        envoy_metadata(&server, &token).await?.get("plan"),
        Some(&json!("enterprise"))
    );

    delete_claims(&server, "user-1").await?;
    assert_eq!(server.introspect(&token).await, first);
    assert_eq!(envoy_metadata(&server, &token).await?.get("plan"), None);

    server
        .revoke(pb::revoke_request::Target::Jti(pb::JtiTarget {
            iss: ISS.into(),
            jti: "kept-1".into(),
            exp: None,
        }))
        .await;
    assert!(!server.introspect(&token).await.active);
    assert!(!stream_answer(&server, &token).await?.active);
    let refused = envoy_client(&server)
        .await
        .check(crate::gateways::check(Some(&token), &[]))
        .await?
        .into_inner();
    assert_eq!(crate::gateways::outcome(&refused).0, 401);
    server.stop().await?;
    Ok(())
}

/// The answer to `token` on an IntrospectStream of one request.
async fn stream_answer(
    server: &Introspectd,
    token: &str,
) -> Result<pb::IntrospectResponse, tonic::Status> {
    let mut answers = crate::stream::answers(
        server,
        Some(READER_KEY),
        vec![crate::stream::ask(42, token)],
    )
    .await?;
    match answers.remove(&42) {
        Some(pb::introspect_stream_response::Outcome::Response(answer)) => Ok(answer),
        other => Err(tonic::Status::internal(format!("unexpected {other:?}"))),
    }
}

async fn delete_claims(server: &Introspectd, sub: &str) -> Result<(), tonic::Status> {
    let request = with_key(
        ADMIN_KEY,
        pb::DeleteSubjectClaimsRequest {
            iss: ISS.into(),
            sub: sub.into(),
        },
    );
    admin(server)
        .await
        .delete_subject_claims(request)
        .await
        .map(|_| ())
}

async fn envoy_client(server: &Introspectd) -> AuthorizationClient<tonic::transport::Channel> {
    AuthorizationClient::new(server.channel().await)
}

/// The metadata Envoy's `Check` allows `token` with (its claims, enrichment included).
async fn envoy_metadata(
    server: &Introspectd,
    token: &str,
) -> Result<Map<String, Value>, tonic::Status> {
    let allowed = envoy_client(server)
        .await
        .check(crate::gateways::check(Some(token), &[]))
        .await?
        .into_inner();
    // Envoy's Struct has prost's Struct's wire format.
    let metadata = prost::Message::encode_to_vec(&allowed.dynamic_metadata.unwrap_or_default());
    let metadata = <prost_types::Struct as prost::Message>::decode(metadata.as_slice())
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(introspectd::grpc::struct_to_json(&metadata))
}
