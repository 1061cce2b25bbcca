//! Introspection cost: cold validation per algorithm, the cache-hit path, fingerprinting.
//!
//! `cargo bench --bench introspect`. Compare `introspector/cache_hit` with
//! `introspector/cold_RS256` (same Introspector, cache off): the ratio is the cache's
//! gain; and `introspector/cache_hit_enriched` (static + mapping + subject enrichers)
//! with `introspector/cache_hit`: the cost of enrichment; `introspector/cache_hit_dpop_ES256`
//! with `introspector/cache_hit`: the cost of checking a DPoP proof (one ES256 signature);
//! `grpc_answer/build_and_encode` with `grpc_answer/kept`: what keeping a token's encoded
//! answer saves per call.

use std::{collections::BTreeMap, hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use introspectd::{
    binding::dpop,
    config::{Config, FileConfig},
    enrich::{ClaimRef, MappingRule, Pipeline, Spec, When},
    grpc::answer_message,
    introspect::Introspector,
    keys::{Issuers, KeySet},
    token::{self, CallPolicy, TokenHash, sign::SigningKey},
};
use jsonwebtoken::Algorithm;
use prost::Message;
use serde_json::json;

mod common;

const ISS: &str = "https://bench.test/";
const AUD: &str = "https://api.test";
const NOW: i64 = 1_700_000_000;

fn claims() -> serde_json::Value {
    json!({
        "iss": ISS, "sub": "user-1", "aud": AUD, "exp": NOW + 3600, "iat": NOW,
        "jti": "bench-1", "client_id": "client-1", "scope": "read write orders:read",
        "org_id": "org-9", "roles": ["admin", "reader"],
    })
}

fn config(jwks: &str, algorithms: &[&str], hmac: Option<&str>) -> Config {
    let source = match hmac {
        Some(secret) => format!("hmac_secret = {secret:?}"),
        None => format!("jwks = '''{jwks}'''"),
    };
    let algorithms = algorithms
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "[auth]\nanonymous_introspect = true\n[store]\nbackend = \"memory\"\n[[issuers]]\nissuer = {ISS:?}\naudiences = [{AUD:?}]\nalgorithms = [{algorithms}]\n{source}\n"
    );
    match FileConfig::parse(&text, &BTreeMap::new()).and_then(FileConfig::validate) {
        Ok(config) => config,
        Err(e) => unreachable!("bench config: {e}"),
    }
}

fn key(alg: Algorithm) -> SigningKey {
    SigningKey::generate(alg, format!("{alg:?}")).unwrap_or_else(|e| unreachable!("{e}"))
}

fn cold_validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_cold");
    let secret = "0123456789abcdef0123456789abcdef";
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ] {
        let (signer, keys, policy) = if alg == Algorithm::HS256 {
            let signer = SigningKey::from_private(alg, "hs", secret.as_bytes().to_vec())
                .unwrap_or_else(|e| unreachable!("{e}"));
            (
                signer,
                KeySet::hmac(secret.as_bytes()),
                config("", &["HS256"], Some(secret)),
            )
        } else {
            let signer = key(alg);
            let jwks = token::sign::jwks(&[&signer]).to_string();
            let (keys, _) =
                KeySet::from_jwks(jwks.as_bytes()).unwrap_or_else(|e| unreachable!("{e}"));
            let name = format!("{alg:?}");
            (signer, keys, config(&jwks, &[&name], None))
        };
        let policy = &policy.issuers[0].keys.policy;
        let token = signer.mint("at+jwt", &claims()).unwrap_or_default();
        group.bench_function(format!("{alg:?}"), |b| {
            b.iter(|| {
                let jwt = token::parse(black_box(&token), 16 * 1024);
                let verified = jwt.and_then(|jwt| token::verify(jwt, policy, &keys, NOW));
                assert!(verified.is_ok());
                verified
            })
        });
    }
    group.finish();
}

fn introspector_paths(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| unreachable!("{e}"));
    let signer = key(Algorithm::RS256);
    let jwks = token::sign::jwks(&[&signer]).to_string();
    let config = config(&jwks, &["RS256"], None);
    let http = introspectd::outbound::client().unwrap_or_else(|e| unreachable!("{e}"));
    let specs = config.issuers.iter().map(|issuer| issuer.keys.clone());
    let issuers = Arc::new(Issuers::new(specs.collect(), http.clone()));
    runtime.block_on(async {
        for issuer in issuers.iter() {
            issuer.load().await.unwrap_or_else(|e| unreachable!("{e}"));
        }
    });
    let token = signer.mint("at+jwt", &claims()).unwrap_or_default();
    let revocations = Arc::new(introspectd::revocation::RevocationSet::new());
    revocations.mark_complete();
    let subjects = Arc::new(introspectd::enrich::SubjectClaims::new());
    let none = std::collections::HashMap::new();
    let cached = Introspector::new(
        issuers.clone(),
        revocations.clone(),
        subjects.clone(),
        none.clone(),
        1_000,
        16 * 1024,
    );
    let uncached = Introspector::new(issuers, revocations.clone(), subjects, none, 0, 16 * 1024);
    let scopes = vec!["read".to_owned()];
    let policy = CallPolicy {
        required_scopes: &scopes,
        audience: Some(AUD),
        ..CallPolicy::default()
    };

    // The same cache-hit path with a static + mapping + subject pipeline.
    let object = |value: serde_json::Value| value.as_object().cloned().unwrap_or_default();
    let copy = |from: &str, to: &str, split: Option<&str>| MappingRule::Copy {
        from: ClaimRef::Name(from.into()),
        to: to.into(),
        split: split.map(str::to_owned),
    };
    let enrich = [
        Spec::Static {
            claims: object(json!({"tenant": "acme", "tier": "gold"})),
            when: When {
                client_id: vec!["client-1".into()],
                ..When::default()
            },
            overwrite_registered: false,
        },
        Spec::Mapping {
            rules: vec![
                copy("org_id", "organization", None),
                copy("scope", "scopes", Some(" ")),
            ],
            overwrite_registered: false,
        },
        Spec::Subject {
            overwrite_registered: false,
        },
    ];
    let budget = Arc::new(introspectd::outbound::Budget::new(16, 1000));
    let pipeline = Pipeline::new(&enrich, &http, &budget);
    let enriched_subjects = Arc::new(introspectd::enrich::SubjectClaims::new());
    let subject_claims = json!({"role": "admin", "manager": "bob"});
    if let serde_json::Value::Object(claims) = subject_claims {
        enriched_subjects.set(ISS, "user-1", claims);
    }
    let pipelines = std::collections::HashMap::from([(ISS.to_owned(), Arc::new(pipeline))]);
    let enriched = Introspector::new(
        cached.issuers().clone(),
        revocations.clone(),
        enriched_subjects,
        pipelines,
        1_000,
        16 * 1024,
    );

    // A DPoP-bound token: the same cache hit plus one proof verification per call. Each
    // iteration gets a fresh proof (made outside the measurement), so none is a replay.
    let client_key = key(Algorithm::ES256);
    let jkt = dpop::thumbprint(&dpop::proof_jwk(&client_key)).unwrap_or_default();
    let mut bound_claims = claims();
    bound_claims["cnf"] = json!({ "jkt": jkt });
    let bound = signer.mint("at+jwt", &bound_claims).unwrap_or_default();
    let uri = "https://api.example.com/orders";
    let dpop_checked = Introspector::new(
        cached.issuers().clone(),
        revocations.clone(),
        Arc::new(introspectd::enrich::SubjectClaims::new()),
        std::collections::HashMap::new(),
        1_000,
        16 * 1024,
    )
    .with_dpop(dpop::Settings {
        replay_cache_entries: 50_000_000,
        ..dpop::Settings::default()
    });

    let mut group = c.benchmark_group("introspector");
    group.bench_function("cache_hit_dpop_ES256", |b| {
        b.iter_batched(
            || {
                let claims = dpop::ProofClaims {
                    method: "GET",
                    uri,
                    access_token: Some(&bound),
                    nonce: None,
                };
                dpop::make_proof(&client_key, &claims, NOW).unwrap_or_default()
            },
            |proof| {
                let policy = CallPolicy {
                    presented: introspectd::binding::Presentation {
                        dpop_proof: Some(&proof),
                        http_method: Some("GET"),
                        http_uri: Some(uri),
                        ..Default::default()
                    },
                    ..policy
                };
                let answer =
                    runtime.block_on(dpop_checked.introspect(black_box(&bound), policy, NOW));
                assert!(answer.as_ref().is_ok_and(|a| a.is_active()));
                answer
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("cache_hit_enriched", |b| {
        b.iter(|| {
            let answer = runtime.block_on(enriched.introspect(black_box(&token), policy, NOW));
            assert!(
                answer
                    .as_ref()
                    .is_ok_and(|a| a.is_active() && !a.enrichment.is_empty())
            );
            answer
        })
    });
    group.bench_function("cache_hit", |b| {
        b.iter(|| {
            let answer = runtime.block_on(cached.introspect(black_box(&token), policy, NOW));
            assert!(answer.as_ref().is_ok_and(|a| a.is_active()));
            answer
        })
    });
    group.bench_function("cold_RS256", |b| {
        b.iter(|| {
            let answer = runtime.block_on(uncached.introspect(black_box(&token), policy, NOW));
            assert!(answer.as_ref().is_ok_and(|a| a.is_active()));
            answer
        })
    });
    group.finish();

    // The gRPC answer of a cache hit: built and encoded on each call, or kept with the
    // cached token (what the server does where the answer does not vary by call).
    let answer = runtime
        .block_on(cached.introspect(&token, policy, NOW))
        .unwrap_or_else(|e| unreachable!("{e}"));
    let mut group = c.benchmark_group("grpc_answer");
    group.bench_function("build_and_encode", |b| {
        b.iter(|| answer_message(black_box(&answer), false).encode_to_vec())
    });
    group.bench_function("kept", |b| {
        b.iter(|| {
            black_box(&answer).encoded_answer(|a| answer_message(a, false).encode_to_vec().into())
        })
    });
    group.finish();
}

fn fingerprinting(c: &mut Criterion) {
    let token = key(Algorithm::RS256)
        .mint("at+jwt", &claims())
        .unwrap_or_default();
    c.bench_function("fingerprint_sha256", |b| {
        b.iter(|| TokenHash::of(black_box(&token)).fingerprint())
    });
}

/// Memory per cached verification: RSS growth while the cache fills with distinct
/// tokens (HS256, so filling is quick; the entry does not depend on the algorithm).
/// Printed, not timed; `CACHE_BENCH_TOKENS` sets how many (default 100,000).
fn cache_memory(_: &mut Criterion) {
    let count: usize = std::env::var("CACHE_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| unreachable!("{e}"));
    let secret = "a-shared-secret-of-at-least-32-bytes!!";
    let config = config("", &["HS256"], Some(secret));
    let http = introspectd::outbound::client().unwrap_or_else(|e| unreachable!("{e}"));
    let issuers = Arc::new(Issuers::new(
        config.issuers.iter().map(|i| i.keys.clone()).collect(),
        http,
    ));
    runtime.block_on(async {
        for issuer in issuers.iter() {
            issuer.load().await.unwrap_or_else(|e| unreachable!("{e}"));
        }
    });
    let signer = SigningKey::from_private(Algorithm::HS256, "hs", secret.as_bytes().to_vec())
        .unwrap_or_else(|e| unreachable!("{e}"));
    let tokens: Vec<String> = (0..count)
        .map(|n| {
            let mut claims = claims();
            claims["jti"] = json!(format!("bench-{n:09}"));
            signer.mint("at+jwt", &claims).unwrap_or_default()
        })
        .collect();
    let revocations = Arc::new(introspectd::revocation::RevocationSet::new());
    revocations.mark_complete();
    let introspector = Introspector::new(
        issuers,
        revocations,
        Arc::new(introspectd::enrich::SubjectClaims::new()),
        std::collections::HashMap::new(),
        count,
        16 * 1024,
    );
    let before = common::rss_bytes();
    for token in &tokens {
        let answer = runtime.block_on(introspector.introspect(token, CallPolicy::default(), NOW));
        assert!(answer.is_ok_and(|a| a.is_active()));
    }
    let grown = common::rss_bytes().saturating_sub(before);
    println!(
        "cache memory: {:.0} bytes per cached token (RSS growth / {} tokens of {} bytes, {} cached)",
        grown as f64 / count as f64,
        count,
        tokens.first().map_or(0, String::len),
        introspector.cache().len()
    );
    // Answered over HTTP, a token also keeps its rendered JSON answer.
    let before = common::rss_bytes();
    for token in &tokens {
        let answer = runtime.block_on(introspector.introspect(token, CallPolicy::default(), NOW));
        assert!(answer.is_ok_and(|a| !a.rfc7662_json().is_empty()));
    }
    let grown = common::rss_bytes().saturating_sub(before);
    println!(
        "cache memory: {:.0} more bytes per cached token once answered over HTTP (its JSON)",
        grown as f64 / count as f64
    );
    // And over gRPC, its encoded answer message.
    let before = common::rss_bytes();
    for token in &tokens {
        let answer = runtime.block_on(introspector.introspect(token, CallPolicy::default(), NOW));
        assert!(answer.is_ok_and(|a| {
            !a.encoded_answer(|a| answer_message(a, false).encode_to_vec().into())
                .is_empty()
        }));
    }
    let grown = common::rss_bytes().saturating_sub(before);
    println!(
        "cache memory: {:.0} more bytes per cached token once answered over gRPC (its encoded answer)",
        grown as f64 / count as f64
    );
}

criterion_group!(
    benches,
    cold_validation,
    introspector_paths,
    fingerprinting,
    cache_memory
);
criterion_main!(benches);
