//! Key sets over real HTTP: rotation, removal, an issuer that is down, discovery.

use std::time::Duration;

use introspectd::{config::IssuerSection, grpc::pb::InactiveReason};
use jsonwebtoken::Algorithm;

use crate::support::*;

const ISS: &str = "https://rotating.test/";

#[tokio::test]
async fn new_kid_is_accepted_after_one_refetch() -> TestResult {
    let old = key(Algorithm::ES256, "old");
    let new = key(Algorithm::ES256, "new");
    let jwks = JwksServer::start(&[&old]).await;
    let server = Introspectd::start_ready(file_config(vec![issuer_section(
        ISS,
        &jwks.jwks_uri(),
        &["ES256"],
    )]))
    .await;
    let fetches_at_start = jwks.fetches();

    jwks.set_keys(&[&old, &new]);
    // Many concurrent tokens with the new kid share one refetch.
    let token = mint(&new, &claims(ISS));
    let answers = futures_util::future::join_all((0..20).map(|_| server.introspect(&token))).await;
    assert!(answers.iter().all(|a| a.active), "{answers:?}");
    assert_eq!(
        jwks.fetches(),
        fetches_at_start + 1,
        "one refetch for the unknown kid"
    );

    // A kid that is still unknown after the refetch is refused, and the refetch is
    // rate-limited: a burst of unknown kids costs at most one more fetch.
    let stranger = key(Algorithm::ES256, "stranger");
    for _ in 0..5 {
        let answer = server.introspect(&mint(&stranger, &claims(ISS))).await;
        assert_eq!(reason(&answer), InactiveReason::UnknownKey);
    }
    assert!(jwks.fetches() <= fetches_at_start + 2);
    Ok(())
}

/// A key published under a `kid` the set already has (an EC key beside the RSA one,
/// RFC 7517 section 4.5, or the same kid re-keyed) is taken after one refetch, as a new
/// kid is, instead of being refused until the next scheduled refresh.
#[tokio::test]
async fn a_new_key_under_a_known_kid_is_taken_after_one_refetch() -> TestResult {
    let rsa = key(Algorithm::RS256, "k1");
    let jwks = JwksServer::start(&[&rsa]).await;
    let issuer = IssuerSection {
        refresh_secs: 3_600,
        refresh_min_secs: 3_600,
        ..issuer_section(ISS, &jwks.jwks_uri(), &["RS256", "ES256"])
    };
    let server = Introspectd::start_ready(file_config(vec![issuer])).await;
    assert!(server.introspect(&mint(&rsa, &claims(ISS))).await.active);
    let ec = key(Algorithm::ES256, "k1");
    jwks.set_keys(&[&rsa, &ec]);
    assert!(
        server.introspect(&mint(&ec, &claims(ISS))).await.active,
        "a second type"
    );
    // Re-keyed: the same kid, a new RSA key.
    tokio::time::sleep(Duration::from_millis(1_100)).await; // past the refetch rate limit
    let rekeyed = key(Algorithm::RS256, "k1");
    jwks.set_keys(&[&rekeyed]);
    assert!(
        server
            .introspect(&mint(&rekeyed, &claims(ISS)))
            .await
            .active,
        "re-keyed"
    );
    Ok(())
}

#[tokio::test]
async fn removed_key_is_refused_after_refresh_even_when_cached() -> TestResult {
    let kept = key(Algorithm::RS256, "kept");
    let dropped = key(Algorithm::RS256, "dropped");
    let jwks = JwksServer::start(&[&kept, &dropped]).await;
    let mut section = issuer_section(ISS, &jwks.jwks_uri(), &["RS256"]);
    section.refresh_secs = 1;
    let server = Introspectd::start_ready(file_config(vec![section])).await;

    let token = mint(&dropped, &claims(ISS));
    assert!(
        server.introspect(&token).await.active,
        "verified and cached"
    );
    let loads = server.metric("introspectd_keyset_loads_total").await;
    jwks.set_keys(&[&kept]);
    // Published here, not merely served by the fake issuer.
    server
        .wait_for_metric_above("introspectd_keyset_loads_total", loads)
        .await;
    let answer = server.introspect(&token).await;
    assert!(
        !answer.active,
        "a cached verification must not outlive its key"
    );
    assert!(
        matches!(reason(&answer), InactiveReason::UnknownKey),
        "{answer:?}"
    );
    assert!(server.introspect(&mint(&kept, &claims(ISS))).await.active);
    Ok(())
}

#[tokio::test]
async fn last_good_keys_serve_while_the_issuer_is_down() -> TestResult {
    let signer = key(Algorithm::EdDSA, "ed");
    let jwks = JwksServer::start(&[&signer]).await;
    let mut section = issuer_section(ISS, &jwks.jwks_uri(), &["EdDSA"]);
    section.refresh_secs = 1;
    let server = Introspectd::start_ready(file_config(vec![section])).await;

    jwks.set_down(true);
    server
        .wait_for_metric_above("introspectd_keyset_refresh_failures_total", 0.0)
        .await;
    assert!(server.introspect(&mint(&signer, &claims(ISS))).await.active);
    // An unknown kid while down: refused promptly, not hung.
    let stranger = key(Algorithm::EdDSA, "stranger");
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        server.introspect(&mint(&stranger, &claims(ISS))),
    )
    .await?;
    assert_eq!(reason(&answer), InactiveReason::UnknownKey);

    // Gone entirely (connection refused): still serving from the last set.
    jwks.stop();
    assert!(server.introspect(&mint(&signer, &claims(ISS))).await.active);
    Ok(())
}

#[tokio::test]
async fn keys_come_from_oidc_discovery() -> TestResult {
    let signer = key(Algorithm::PS256, "ps");
    let jwks = JwksServer::start(&[&signer]).await;
    let mut section = issuer_section(&jwks.issuer(), &jwks.jwks_uri(), &["PS256"]);
    section.jwks_uri = None;
    section.discovery = true;
    let server = Introspectd::start_ready(file_config(vec![section])).await;
    let answer = server
        .introspect(&mint(&signer, &claims(&jwks.issuer())))
        .await;
    assert!(answer.active, "{answer:?}");
    Ok(())
}

#[tokio::test]
async fn discovery_naming_another_issuer_never_becomes_ready() -> TestResult {
    let signer = key(Algorithm::RS256, "rs");
    let jwks = JwksServer::start(&[&signer]).await;
    // Configured issuer differs from what the discovery document says (trailing slash).
    let mut section = issuer_section(&format!("{}/", jwks.issuer()), &jwks.jwks_uri(), &["RS256"]);
    section.jwks_uri = None;
    section.discovery = true;
    let server = Introspectd::start(file_config(vec![section])).await;
    // Discovery has been tried and refused, not merely not tried yet.
    server
        .wait_for_metric_above("introspectd_keyset_refresh_failures_total", 0.0)
        .await;
    assert_eq!(
        server.health("").await,
        tonic_health::pb::health_check_response::ServingStatus::NotServing
    );
    Ok(())
}

#[tokio::test]
async fn inline_and_file_key_sets_need_no_network() -> TestResult {
    let signer = key(Algorithm::ES384, "es384");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("jwks.json");
    std::fs::write(
        &path,
        introspectd::token::sign::jwks(&[&signer]).to_string(),
    )?;
    let mut from_file = issuer_section("https://file.test/", "http://unused", &["ES384"]);
    from_file.jwks_uri = None;
    from_file.jwks_file = Some(path.clone());
    let mut inline = issuer_section("https://inline.test/", "http://unused", &["ES384"]);
    inline.jwks_uri = None;
    inline.jwks = Some(introspectd::token::sign::jwks(&[&signer]).to_string());
    let server = Introspectd::start_ready(file_config(vec![from_file, inline])).await;
    assert!(
        server
            .introspect(&mint(&signer, &claims("https://file.test/")))
            .await
            .active
    );
    assert!(
        server
            .introspect(&mint(&signer, &claims("https://inline.test/")))
            .await
            .active
    );
    // The file is read again when it is refreshed: a key added to it since the start
    // is found by the refetch its unknown `kid` triggers.
    let added = key(Algorithm::ES384, "es384-next");
    std::fs::write(
        &path,
        introspectd::token::sign::jwks(&[&signer, &added]).to_string(),
    )?;
    assert!(
        server
            .introspect(&mint(&added, &claims("https://file.test/")))
            .await
            .active
    );
    Ok(())
}

#[tokio::test]
async fn key_replaced_under_the_same_kid_invalidates_cached_tokens() -> TestResult {
    let original = key(Algorithm::ES256, "same-kid");
    let replacement = key(Algorithm::ES256, "same-kid");
    let jwks = JwksServer::start(&[&original]).await;
    let mut section = issuer_section(ISS, &jwks.jwks_uri(), &["ES256"]);
    section.refresh_secs = 1;
    let server = Introspectd::start_ready(file_config(vec![section])).await;
    let token = mint(&original, &claims(ISS));
    assert!(
        server.introspect(&token).await.active,
        "verified and cached"
    );
    let loads = server.metric("introspectd_keyset_loads_total").await;
    jwks.set_keys(&[&replacement]);
    server
        .wait_for_metric_above("introspectd_keyset_loads_total", loads)
        .await;
    let answer = server.introspect(&token).await;
    assert_eq!(reason(&answer), InactiveReason::BadSignature, "{answer:?}");
    assert!(
        server
            .introspect(&mint(&replacement, &claims(ISS)))
            .await
            .active
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_kid_is_refetched_even_beside_kidless_keys() -> TestResult {
    let kidless = key(Algorithm::RS256, "kidless");
    let mut kidless_jwk = kidless.public_jwk();
    if let Some(jwk) = kidless_jwk.as_object_mut() {
        jwk.remove("kid");
    }
    let jwks = JwksServer::start(&[]).await;
    jwks.set_jwks(vec![kidless_jwk.clone()]);
    // The periodic refresh is far away: only the unknown-kid refetch can help.
    let section = IssuerSection {
        refresh_secs: 3600,
        refresh_min_secs: 3600,
        refresh_max_secs: 3600,
        ..issuer_section(ISS, &jwks.jwks_uri(), &["RS256"])
    };
    let server = Introspectd::start_ready(file_config(vec![section])).await;
    let rotated = key(Algorithm::RS256, "rotated");
    jwks.set_jwks(vec![kidless_jwk, rotated.public_jwk()]);
    let answer = server.introspect(&mint(&rotated, &claims(ISS))).await;
    assert!(answer.active, "{answer:?}");
    Ok(())
}

#[tokio::test]
async fn a_discovered_jwks_uri_meets_the_url_rule_too() -> TestResult {
    let signer = key(Algorithm::RS256, "rs");
    let jwks = JwksServer::start(&[&signer]).await;
    jwks.set_discovered_jwks_uri("http://keys.example.invalid/jwks.json");
    let mut section = issuer_section(&jwks.issuer(), &jwks.jwks_uri(), &["RS256"]);
    section.jwks_uri = None;
    section.discovery = true;
    let server = Introspectd::start(file_config(vec![section])).await;
    server
        .wait_for_metric_above("introspectd_keyset_refresh_failures_total", 0.0)
        .await;
    assert_eq!(
        server.health("").await,
        tonic_health::pb::health_check_response::ServingStatus::NotServing
    );
    assert_eq!(jwks.fetches(), 0, "no key set came from anywhere");
    Ok(())
}

#[tokio::test]
async fn key_fetches_follow_no_redirect() -> TestResult {
    let signer = key(Algorithm::RS256, "rs");
    let target = JwksServer::start(&[&signer]).await;
    let redirect_to = target.jwks_uri();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let location = redirect_to.clone();
            async move { axum::response::Redirect::temporary(&location) }
        }),
    );
    let addr = serve_on_loopback(app).await;
    let section = issuer_section(ISS, &format!("http://{addr}/jwks.json"), &["RS256"]);
    let server = Introspectd::start(file_config(vec![section])).await;
    server
        .wait_for_metric_above("introspectd_keyset_refresh_failures_total", 0.0)
        .await;
    assert_eq!(target.requests_started(), 0, "the redirect was followed");
    Ok(())
}
