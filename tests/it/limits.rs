//! Bounded resources: half-open connections against a process with a normal descriptor
//! limit, a flood of random opaque tokens, server-side deadlines and load shedding.

use std::{
    io::Write,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, routing::post};
use introspectd::{config::IssuerSection, grpc::pb};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::*;

const ISS: &str = "https://limits.test/";

/// An introspection endpoint that answers "inactive" after `delay_ms`, counting calls.
#[derive(Default)]
pub(crate) struct SlowIdp {
    pub(crate) calls: AtomicUsize,
    delay_ms: AtomicU64,
}

pub(crate) async fn slow_idp(delay: Duration) -> (String, Arc<SlowIdp>) {
    async fn answer(State(idp): State<Arc<SlowIdp>>) -> Json<Value> {
        idp.calls.fetch_add(1, Ordering::SeqCst);
        let delay = idp.delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Json(json!({"active": false}))
    }
    let idp = Arc::new(SlowIdp::default());
    idp.delay_ms.store(
        u64::try_from(delay.as_millis()).unwrap_or(0),
        Ordering::SeqCst,
    );
    let app = Router::new()
        .route("/introspect", post(answer))
        .with_state(idp.clone());
    let addr = serve_on_loopback(app).await;
    (format!("http://{addr}/introspect"), idp)
}

fn opaque_issuer(endpoint: &str) -> IssuerSection {
    let signer = key(Algorithm::ES256, "es");
    IssuerSection {
        jwks_uri: None,
        jwks: Some(introspectd::token::sign::jwks(&[&signer]).to_string()),
        introspection_endpoint: Some(endpoint.into()),
        ..issuer_section(ISS, "http://unused", &["ES256"])
    }
}

async fn introspect_code(
    client: &mut pb::token_introspection_client::TokenIntrospectionClient<
        tonic::transport::Channel,
    >,
    token: String,
) -> Code {
    match client
        .introspect(pb::IntrospectRequest {
            token,
            ..Default::default()
        })
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn half_open_http_connections_do_not_starve_new_calls() -> TestResult {
    let dir = tempfile::tempdir()?;
    let signer = key(Algorithm::ES256, "es");
    let issuer = IssuerSection {
        jwks_uri: None,
        jwks: Some(introspectd::token::sign::jwks(&[&signer]).to_string()),
        ..issuer_section(ISS, "http://unused", &["ES256"])
    };
    let config = write_config(dir.path(), vec![issuer], |file| {
        file.server.http_header_read_timeout_ms = 1_000;
        file.server.first_byte_timeout_ms = 1_000;
    });
    // A normal descriptor limit: 1,100 connections are more than it allows.
    let process = spawn_serve_with_open_files(&config, 1024).await;

    let mut held = Vec::with_capacity(1100);
    for _ in 0..1100 {
        let Ok(Ok(mut stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(&process.http),
        )
        .await
        else {
            continue; // the kernel's backlog is full: that is the point.
        };
        let _ = tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        )
        .await;
        held.push(stream);
    }
    assert!(held.len() > 1024, "only {} connections opened", held.len());

    // gRPC is served at once; HTTP once the header timeout has cleared the half-open.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", process.grpc))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let health = tokio::time::timeout(
        Duration::from_secs(2),
        HealthClient::new(channel).check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await??;
    assert_eq!(health.into_inner().status, 1, "SERVING");
    let healthz = format!("http://{}/healthz", process.http);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let answer = http.get(&healthz).send().await?;
    assert_eq!(answer.status(), 200);
    drop(held);
    Ok(())
}

/// A connection that sends nothing is closed after `first_byte_timeout_ms`, on both
/// listeners: the gRPC one too, where no HTTP header timeout applies.
#[tokio::test]
async fn silent_connections_are_closed_after_the_first_byte_timeout() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let mut file = file_config(vec![inline_issuer(ISS, &signer)]);
    file.server.first_byte_timeout_ms = 300;
    let server = Introspectd::start_ready(file).await;
    for addr in [server.grpc_addr, server.http_addr] {
        let mut silent = tokio::net::TcpStream::connect(addr).await?;
        assert!(
            closed_within(&mut silent, Duration::from_secs(3)).await,
            "{addr}: a silent connection still open after 3 s"
        );
    }
    Ok(())
}

/// SIGINT stops the service as SIGTERM does: a call still in flight gets
/// `shutdown_grace_secs`, then is abandoned, and the process exits 0.
#[tokio::test]
async fn sigint_gives_calls_the_grace_period_then_exits_0() -> TestResult {
    let (endpoint, idp) = slow_idp(Duration::from_secs(30)).await;
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), vec![opaque_issuer(&endpoint)], |file| {
        file.server.shutdown_grace_secs = 1;
    });
    let mut process = spawn_serve(&config, Stdio::null).await;
    let mut client = pb::token_introspection_client::TokenIntrospectionClient::connect(format!(
        "http://{}",
        process.grpc
    ))
    .await?;
    let in_flight = tokio::spawn(async move { introspect_code(&mut client, "slow".into()).await });
    eventually("the call to reach the issuer", || async {
        idp.calls.load(Ordering::SeqCst) > 0
    })
    .await;
    let signalled = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || process.signal("INT")).await??;
    let took = signalled.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "the grace period is 1 s: {took:?}"
    );
    assert_ne!(
        in_flight.await?,
        Code::Ok,
        "the abandoned call did not succeed"
    );
    Ok(())
}

#[tokio::test]
async fn a_flood_of_random_opaque_tokens_reaches_the_issuer_at_a_bounded_rate() -> TestResult {
    let (endpoint, idp) = slow_idp(Duration::ZERO).await;
    let issuer = IssuerSection {
        max_outbound_per_second: 50,
        ..opaque_issuer(&endpoint)
    };
    let server = Introspectd::start_ready(file_config(vec![issuer])).await;
    let started = tokio::time::Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..16 {
        let mut client = server.client().await;
        callers.spawn(async move {
            let mut unavailable = 0;
            for n in 0..100 {
                let token = format!("random-{caller}-{n}");
                if introspect_code(&mut client, token).await == Code::Unavailable {
                    unavailable += 1;
                }
            }
            unavailable
        });
    }
    let mut unavailable = 0;
    while let Some(count) = callers.join_next().await {
        unavailable += count?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let reached = idp.calls.load(Ordering::SeqCst) as f64;
    // A burst of 50, then 50 per second.
    assert!(
        reached <= 50.0 + 50.0 * seconds + 5.0,
        "{reached} calls reached the issuer in {seconds:.1} s"
    );
    assert!(unavailable > 0, "none of 1,600 random tokens was refused");
    Ok(())
}

#[tokio::test]
async fn a_call_is_cut_at_the_server_deadline() -> TestResult {
    let (endpoint, _idp) = slow_idp(Duration::from_secs(5)).await;
    let mut file = file_config(vec![opaque_issuer(&endpoint)]);
    file.server.request_timeout_ms = 300;
    let server = Introspectd::start_ready(file).await;
    let mut client = server.client().await;
    let started = tokio::time::Instant::now();
    let code = introspect_code(&mut client, "slow-token".into()).await;
    assert_eq!(code, Code::DeadlineExceeded);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

/// A caller's `grpc-timeout` shorter than the server's deadline ends the call there: the
/// server stops waiting for the issuer instead of holding the call to its own limit.
#[tokio::test]
async fn a_callers_shorter_grpc_timeout_wins() -> TestResult {
    let (endpoint, _idp) = slow_idp(Duration::from_secs(5)).await;
    let file = file_config(vec![opaque_issuer(&endpoint)]);
    assert!(file.server.request_timeout_ms >= 5_000);
    let server = Introspectd::start_ready(file).await;
    let mut client = server.client().await;
    let mut request = tonic::Request::new(pb::IntrospectRequest {
        token: "slow-token".into(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let answer = client.introspect(request).await;
    assert!(answer.is_err(), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn calls_past_the_concurrency_limit_are_shed_and_health_is_not() -> TestResult {
    let (endpoint, _idp) = slow_idp(Duration::from_millis(800)).await;
    let mut file = file_config(vec![opaque_issuer(&endpoint)]);
    file.server.max_concurrent_requests = 2;
    let server = Introspectd::start_ready(file).await;
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..10 {
        let mut client = server.client().await;
        calls.spawn(async move { introspect_code(&mut client, format!("busy-{n}")).await });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        server.health("").await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let mut exhausted = 0;
    while let Some(code) = calls.join_next().await {
        if code? == Code::ResourceExhausted {
            exhausted += 1;
        }
    }
    assert!(exhausted >= 5, "only {exhausted} of 10 calls were shed");
    let _ = std::io::stderr().flush();
    Ok(())
}

/// `server.grpc_max_connection_age_secs`: a connection that old is asked to go away
/// (GOAWAY), its open streams get `shutdown_grace_secs` to finish, then it is closed,
/// so no client holds a connection slot for ever; a new connection works as before.
#[tokio::test]
async fn grpc_connections_are_closed_at_their_maximum_age() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let mut file = file_config(vec![inline_issuer(ISS, &signer)]);
    file.server.grpc_max_connection_age_secs = 1;
    file.server.shutdown_grace_secs = 1;
    let server = Introspectd::start_ready(file).await;
    let mut watch = server.health_watch("").await?;
    assert!(watch.message().await?.is_some(), "the first status");
    // The stream would stay open as long as the connection does.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other.err().map(|status| status.code()),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the old connection was closed");
    let mut fresh = HealthClient::new(server.channel().await);
    assert!(
        fresh
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_ok()
    );
    Ok(())
}

/// A gRPC call its caller gives up on (its deadline passed, or it cancelled) is counted
/// and timed as `CANCELLED`. Those are the slow calls; left out, they were invisible. (An
/// HTTP/1 request runs to its answer even when the client closes its side, which may be a
/// half-close: it is counted with the status it gets.)
#[tokio::test]
async fn calls_their_callers_abandon_are_counted() -> TestResult {
    let (endpoint, idp) = slow_idp(Duration::from_secs(3)).await;
    let server = Introspectd::start_ready(file_config(vec![opaque_issuer(&endpoint)])).await;
    let mut request = tonic::Request::new(pb::IntrospectRequest {
        token: "slow-opaque".into(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(300));
    let abandoned = server.client().await.introspect(request).await;
    assert!(abandoned.is_err());
    server
        .wait_for_metric_above(
            "introspectd_requests_total{method=\"Introspect\",code=\"CANCELLED\"}",
            0.0,
        )
        .await;
    assert!(idp.calls.load(Ordering::SeqCst) >= 1);
    Ok(())
}
