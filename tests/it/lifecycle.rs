//! Readiness, graceful shutdown and cache expiry.

use std::time::Duration;

use introspectd::grpc::pb::{self, InactiveReason};
use jsonwebtoken::Algorithm;
use serde_json::json;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::*;

const ISS: &str = "https://lifecycle.test/";

#[tokio::test]
async fn not_ready_until_keys_load_then_serving() -> TestResult {
    let signer = key(Algorithm::RS256, "rs");
    let jwks = JwksServer::start(&[&signer]).await;
    jwks.set_down(true);
    let server = Introspectd::start(file_config(vec![issuer_section(
        ISS,
        &jwks.jwks_uri(),
        &["RS256"],
    )]))
    .await;
    let readyz = format!("http://{}/readyz", server.http_addr);

    assert_eq!(server.health("").await, ServingStatus::NotServing);
    assert_eq!(
        server.health("introspectd.v1.TokenIntrospection").await,
        ServingStatus::NotServing
    );
    assert_eq!(server.health("liveness").await, ServingStatus::Serving);
    assert_eq!(reqwest::get(&readyz).await?.status(), 503);
    let early = server
        .client()
        .await
        .introspect(pb::IntrospectRequest {
            token: mint(&signer, &claims(ISS)),
            ..Default::default()
        })
        .await;
    assert_eq!(early.err().map(|s| s.code()), Some(Code::Unavailable));

    jwks.set_down(false);
    server.wait_for_health("", ServingStatus::Serving).await;
    assert_eq!(
        server.health("introspectd.v1.TokenIntrospection").await,
        ServingStatus::Serving
    );
    assert_eq!(reqwest::get(&readyz).await?.status(), 200);
    assert!(server.introspect(&mint(&signer, &claims(ISS))).await.active);
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn shutdown_reports_not_serving_and_finishes_in_flight_calls() -> TestResult {
    let old = key(Algorithm::ES256, "old");
    let new = key(Algorithm::ES256, "new");
    let jwks = JwksServer::start(&[&old]).await;
    let mut server = Introspectd::start_ready(file_config(vec![issuer_section(
        ISS,
        &jwks.jwks_uri(),
        &["ES256"],
    )]))
    .await;
    let mut watch = server.health_watch("").await?;
    assert_eq!(
        watch.message().await?.map(|m| m.status()),
        Some(ServingStatus::Serving)
    );

    // An Introspect held up by a slow key refetch is in flight when shutdown starts.
    jwks.set_keys(&[&old, &new]);
    jwks.set_delay(Duration::from_millis(700));
    let started = jwks.requests_started();
    let mut client = server.client().await;
    let token = mint(&new, &claims(ISS));
    let in_flight = tokio::spawn(async move {
        client
            .introspect(pb::IntrospectRequest {
                token,
                ..Default::default()
            })
            .await
    });
    eventually("the refetch to start", || async {
        jwks.requests_started() > started
    })
    .await;
    server.begin_stop();

    let mut saw_not_serving = false;
    while let Ok(Some(update)) = watch.message().await {
        if update.status() == ServingStatus::NotServing {
            saw_not_serving = true;
            break;
        }
    }
    assert!(
        saw_not_serving,
        "health must go NOT_SERVING when shutdown starts"
    );
    // The listeners are closed while the call drains: a readiness probe on a new
    // connection fails, as the README says.
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()?
        .get(format!("http://{}/readyz", server.http_addr))
        .send()
        .await;
    assert!(probe.is_err(), "a probe during shutdown: {probe:?}");
    let answer = in_flight.await??.into_inner();
    assert!(answer.active, "the in-flight call completes: {answer:?}");
    drop(watch);
    server.join().await?;
    Ok(())
}

#[tokio::test]
async fn cached_answer_ends_at_exp() -> TestResult {
    let signer = key(Algorithm::EdDSA, "ed");
    let jwks = JwksServer::start(&[&signer]).await;
    let mut section = issuer_section(ISS, &jwks.jwks_uri(), &["EdDSA"]);
    section.leeway_secs = 0;
    let server = Introspectd::start_ready(file_config(vec![section])).await;
    let exp = now() + 2;
    let mut short = claims(ISS);
    short["exp"] = json!(exp);
    let token = mint(&signer, &short);
    assert!(server.introspect(&token).await.active);
    assert!(
        server.introspect(&token).await.active,
        "served again, from the cache"
    );
    while now() < exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = server.introspect(&token).await;
    assert!(!answer.active);
    assert_eq!(reason(&answer), InactiveReason::Expired);
    Ok(())
}

/// The services a reflection client lists, v1alpha (grpcurl up to 1.8) or v1.
macro_rules! list_services {
    ($version:ident, $channel:expr) => {{
        use tokio_stream::StreamExt;
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = ServerReflectionClient::new($channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await?
            .into_inner();
        let Some(Ok(response)) = responses.next().await else {
            return Err("no reflection answer".into());
        };
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            return Err("not a service list".into());
        };
        list.service
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<String>>()
    }};
}

#[tokio::test]
async fn reflection_lists_every_service() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(file_config(vec![issuer_section(
        ISS,
        &JwksServer::start(&[&signer]).await.jwks_uri(),
        &["ES256"],
    )]))
    .await;
    let v1 = list_services!(v1, server.channel().await);
    let v1alpha = list_services!(v1alpha, server.channel().await);
    for wanted in [
        "introspectd.v1.TokenIntrospection",
        "introspectd.v1.TokenRevocation",
        "introspectd.v1.SubjectClaimsAdmin",
        "grpc.health.v1.Health",
    ] {
        for names in [&v1, &v1alpha] {
            assert!(
                names.iter().any(|n| n == wanted),
                "{wanted} missing from {names:?}"
            );
        }
        // Health knows every service by its name, too.
        if wanted.starts_with("introspectd") {
            assert_eq!(
                server.health(wanted).await,
                ServingStatus::Serving,
                "{wanted}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn right_after_serve_returns_the_embedded_store_opens_again() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let jwks = JwksServer::start(&[&signer]).await;
    let dir = tempfile::tempdir()?;
    let mut file = file_config(vec![issuer_section(ISS, &jwks.jwks_uri(), &["ES256"])]);
    file.store = introspectd::config::StoreSection {
        backend: introspectd::config::StoreBackend::Embedded,
        path: dir.path().join("state.redb"),
        ..introspectd::config::StoreSection::default()
    };
    let server = Introspectd::start_ready(file.clone()).await;
    server
        .revoke(pb::revoke_request::Target::Jti(pb::JtiTarget {
            iss: ISS.into(),
            jti: "kept".into(),
            exp: Some(now() + 3600),
        }))
        .await;
    // A watch stream left open: its task must not keep the store open.
    let mut watch = server
        .revocation()
        .await
        .watch_revocations(with_key(
            ADMIN_KEY,
            pb::WatchRevocationsRequest { after: None },
        ))
        .await?
        .into_inner();
    while let Some(event) = watch.message().await? {
        if event.caught_up {
            break;
        }
    }
    server.stop().await?;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .is_ok(),
        "the watch stream ended with the server"
    );

    let config = file.validate()?;
    let again = introspectd::App::build(config, introspectd::RunOptions::default()).await;
    assert!(again.is_ok(), "the store is still open: {:?}", again.err());
    Ok(())
}
