//! The verified-token cache against real issuers whose keys come from a file, so a
//! key can be dropped between two loads.

use std::{path::Path, sync::Arc, time::Duration};

use jsonwebtoken::Algorithm;
use serde_json::{Map, json};

use super::*;
use crate::keys::{IssuerSpec, RefreshPolicy, Source};
use crate::token::{Policy, sign::SigningKey};

const ISS: &str = "https://issuer.test/";
const NOW: i64 = 1_700_000_000;

fn signing_key(kid: &str) -> SigningKey {
    SigningKey::generate(Algorithm::ES256, kid).unwrap_or_else(|e| unreachable!("{e}"))
}

fn write_jwks(path: &Path, keys: &[&SigningKey]) {
    let text = crate::token::sign::jwks(keys).to_string();
    std::fs::write(path, text).unwrap_or_else(|e| unreachable!("{e}"));
}

async fn issuer_from_file(path: &Path) -> Arc<Issuer> {
    let refresh = RefreshPolicy {
        default_interval: Duration::from_secs(60),
        min_interval: Duration::from_secs(60),
        max_interval: Duration::from_secs(60),
        unknown_kid_min_interval: Duration::from_secs(60),
        fetch_timeout: Duration::from_secs(5),
    };
    let spec = IssuerSpec {
        policy: Policy::new(ISS, vec!["api".into()]),
        source: Source::File(path.to_owned()),
        refresh,
        opaque: None,
        outbound: (16, 1000),
    };
    let issuer = Arc::new(Issuer::new(spec, reqwest::Client::new()));
    issuer.load().await.unwrap_or_else(|e| unreachable!("{e}"));
    issuer
}

fn verified(sub: &str) -> Arc<Verified> {
    let claims = json!({"iss": ISS, "sub": sub, "aud": "api", "exp": NOW + 600});
    let claims: Map<_, _> = claims.as_object().cloned().unwrap_or_default();
    let policy = Policy::new(ISS, vec!["api".into()]);
    let token = AccessToken::from_claims_for_tests(claims, &policy)
        .unwrap_or_else(|e| unreachable!("{e:?}"));
    Arc::new(Verified {
        kept_answers: Default::default(),
        revocation_keys: TokenKeys::default(),
        pipeline: Arc::default(),
        precomputed: Vec::new(),
        subject_key: None,
        has_confirmation: false,
        token: Arc::new(token),
    })
}

fn origin(issuer: &Arc<Issuer>, until: i64) -> Origin {
    Origin {
        issuer: issuer.clone(),
        epoch: issuer.epoch(),
        until,
    }
}

#[tokio::test]
async fn an_entry_is_served_until_its_time_and_not_at_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let file = dir.path().join("jwks.json");
    write_jwks(&file, &[&signing_key("a")]);
    let issuer = issuer_from_file(&file).await;
    let cache = VerifiedCache::new(10);
    let hash = TokenHash::of("token");
    cache.insert(hash, verified("alice"), origin(&issuer, NOW + 600), NOW);
    let hit = cache.get(&hash, NOW + 599).map(|v| v.token.sub.clone());
    assert_eq!(hit, Some(Some("alice".to_owned())));
    assert!(cache.get(&hash, NOW + 600).is_none(), "served at exp");
    assert!(cache.is_empty(), "the expired entry stayed");
}

#[tokio::test]
async fn a_dropped_key_ends_every_entry_verified_before() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let file = dir.path().join("jwks.json");
    let (old, new) = (signing_key("old"), signing_key("new"));
    write_jwks(&file, &[&old, &new]);
    let issuer = issuer_from_file(&file).await;
    let cache = VerifiedCache::new(10);
    let hash = TokenHash::of("token");
    cache.insert(hash, verified("alice"), origin(&issuer, NOW + 600), NOW);

    // A key added leaves the entry alone; a key dropped does not.
    write_jwks(&file, &[&old, &new, &signing_key("newer")]);
    issuer.load().await.unwrap_or_else(|e| unreachable!("{e}"));
    assert!(cache.get(&hash, NOW).is_some());
    write_jwks(&file, &[&new]);
    issuer.load().await.unwrap_or_else(|e| unreachable!("{e}"));
    assert!(
        cache.get(&hash, NOW).is_none(),
        "served after its key was dropped"
    );
    assert!(cache.is_empty());
}

#[tokio::test]
async fn a_disabled_cache_keeps_nothing_and_a_full_one_stays_bounded() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let file = dir.path().join("jwks.json");
    write_jwks(&file, &[&signing_key("a")]);
    let issuer = issuer_from_file(&file).await;
    let disabled = VerifiedCache::new(0);
    disabled.insert(
        TokenHash::of("t"),
        verified("a"),
        origin(&issuer, NOW + 1),
        NOW,
    );
    assert!(disabled.is_empty());

    let bounded = VerifiedCache::new(8);
    for n in 0..100 {
        let token = format!("token-{n}");
        bounded.insert(
            TokenHash::of(&token),
            verified("a"),
            origin(&issuer, NOW + 10),
            NOW,
        );
        assert!(bounded.len() <= 8);
    }
    // Purging at a time past every entry empties it.
    bounded.purge_expired(NOW + 10);
    assert!(bounded.is_empty());
}
