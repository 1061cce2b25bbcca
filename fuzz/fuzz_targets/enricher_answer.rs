//! A remote enricher's answer: bounded, then mapped like a token's claims.
#![no_main]

use std::sync::{Arc, LazyLock};

use introspectd::enrich::{self, ClaimRef, MappingRule, Pipeline, Spec};
use introspectd::outbound::Budget;
use introspectd::token::{AccessToken, Policy};
use libfuzzer_sys::fuzz_target;

static PIPELINE: LazyLock<Option<Pipeline>> = LazyLock::new(|| {
    let rules = vec![
        MappingRule::StripPrefix("https://example.com/".into()),
        MappingRule::Copy {
            from: ClaimRef::Path(vec!["realm_access".into(), "roles".into()]),
            to: "roles".into(),
            split: None,
        },
        MappingRule::Copy {
            from: ClaimRef::Name("permissions".into()),
            to: "permissions".into(),
            split: Some(" ".into()),
        },
    ];
    let specs = [Spec::Mapping {
        rules,
        overwrite_registered: false,
    }];
    let http = introspectd::outbound::client().ok()?;
    Some(Pipeline::new(&specs, &http, &Arc::new(Budget::new(1, 1))))
});

fuzz_target!(|data: &[u8]| {
    let Ok(claims) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data)
    else {
        return;
    };
    if enrich::check_claims(&claims).is_err() {
        return;
    }
    let mut answer = claims;
    answer.insert("exp".into(), 2_000_000_000.into());
    answer.insert("aud".into(), "api".into());
    answer.remove("token_type");
    let policy = Policy::new("https://issuer.test/", vec!["api".into()]);
    if let Ok(token) = AccessToken::from_introspection(answer, &policy, 2_000_000_000, 1_700_000_000) {
        if let Some(pipeline) = PIPELINE.as_ref() {
            let _ = pipeline.precompute(&token);
        }
    }
});
