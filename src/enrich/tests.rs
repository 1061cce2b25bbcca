use serde_json::json;

use super::*;
use crate::token::Policy;

fn token(claims: serde_json::Value) -> AccessToken {
    let policy = Policy::new("https://iss.test/", vec!["api".into()]);
    let mut base = json!({"iss": "https://iss.test/", "sub": "alice", "aud": "api", "exp": 2_000_000_000, "iat": 1_000,
        "client_id": "spa", "scope": "read write"});
    if let (Some(base), Some(extra)) = (base.as_object_mut(), claims.as_object()) {
        base.extend(extra.clone());
    }
    let Value::Object(map) = base else {
        unreachable!()
    };
    match crate::token::AccessToken::from_claims_for_tests(map, &policy) {
        Ok(token) => token,
        Err(e) => unreachable!("{e:?}"),
    }
}

fn object(value: serde_json::Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn fixed(claims: serde_json::Value, when: When) -> Spec {
    Spec::Static {
        claims: object(claims),
        when,
        overwrite_registered: false,
    }
}

fn copy(from: ClaimRef, to: &str, split: Option<&str>) -> MappingRule {
    MappingRule::Copy {
        from,
        to: to.into(),
        split: split.map(str::to_owned),
    }
}

fn name(claim: &str) -> ClaimRef {
    ClaimRef::Name(claim.into())
}

fn path(dotted: &str) -> ClaimRef {
    ClaimRef::Path(dotted.split('.').map(str::to_owned).collect())
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn pipeline(specs: &[Spec]) -> Pipeline {
    let budget = Arc::new(crate::outbound::Budget::new(16, 1000));
    Pipeline::new(specs, &reqwest::Client::new(), &budget)
}

async fn enrich(
    pipeline: &Pipeline,
    token: &AccessToken,
    subjects: &SubjectClaims,
) -> Map<String, Value> {
    let precomputed = pipeline.precompute(token);
    let key = token
        .sub
        .as_deref()
        .map(|sub| SubjectKey::new(&token.iss, sub));
    let awaited = match pipeline
        .enrich(token, &precomputed, key.as_ref(), subjects, 0)
        .await
    {
        Ok(enrichment) => enrichment.merged(),
        Err(e) => unreachable!("{e}"),
    };
    // These pipelines look nothing up: the path that awaits nothing answers the same.
    let local = pipeline
        .enrich_locally(&precomputed, key.as_ref(), subjects)
        .map(|enrichment| enrichment.merged());
    assert_eq!(local.as_ref(), Some(&awaited));
    awaited
}

#[test]
fn only_a_pipeline_without_remote_lookups_enriches_locally() {
    let remote = Spec::Remote(RemoteSpec {
        url: "http://127.0.0.1:9/claims".into(),
        timeout: std::time::Duration::from_millis(100),
        cache_ttl_secs: 0,
        max_response_bytes: 1024,
        on_error: OnError::Open,
        overwrite_registered: false,
    });
    let token = token(json!({}));
    for specs in [
        vec![remote.clone()],
        vec![fixed(json!({"tier": "gold"}), When::default()), remote],
    ] {
        let p = pipeline(&specs);
        let precomputed = p.precompute(&token);
        assert!(
            p.enrich_locally(&precomputed, None, &SubjectClaims::new())
                .is_none()
        );
    }
    let empty = pipeline(&[]);
    let enrichment = empty.enrich_locally(&[].into(), None, &SubjectClaims::new());
    assert!(enrichment.is_some_and(|e| e.is_empty()));
}

#[tokio::test]
async fn static_claims_apply_when_their_conditions_hold() {
    let p = pipeline(&[
        fixed(json!({"tier": "gold"}), When::default()),
        fixed(
            json!({"admin_ui": true}),
            When {
                scope: strings(&["admin"]),
                ..When::default()
            },
        ),
        fixed(
            json!({"spa": true}),
            When {
                client_id: strings(&["spa"]),
                audience: strings(&["api"]),
                ..When::default()
            },
        ),
    ]);
    let out = enrich(&p, &token(json!({})), &SubjectClaims::new()).await;
    assert_eq!(out.get("tier"), Some(&json!("gold")));
    assert_eq!(out.get("admin_ui"), None);
    assert_eq!(out.get("spa"), Some(&json!(true)));
    let admin = enrich(&p, &token(json!({"scope": "admin"})), &SubjectClaims::new()).await;
    assert_eq!(admin.get("admin_ui"), Some(&json!(true)));
}

#[tokio::test]
async fn mapping_renames_strips_splits_and_picks() {
    let p = pipeline(&[Spec::Mapping {
        rules: vec![
            MappingRule::StripPrefix("https://example.com/".into()),
            copy(name("org_id"), "organization", None),
            copy(name("permissions"), "permissions", Some(" ")),
            copy(path("realm_access.roles"), "realm_roles", None),
            copy(path("realm_access.missing"), "nothing", None),
            copy(name("sub"), "user", None),
        ],
        overwrite_registered: false,
    }]);
    let t = token(json!({
        "https://example.com/roles": ["admin"],
        "https://example.com/": "empty-rest-ignored",
        "org_id": "org-9",
        "permissions": "read:a  write:b",
        "realm_access": {"roles": ["ops"]},
    }));
    let out = enrich(&p, &t, &SubjectClaims::new()).await;
    assert_eq!(out.get("roles"), Some(&json!(["admin"])));
    assert_eq!(out.get("organization"), Some(&json!("org-9")));
    assert_eq!(out.get("permissions"), Some(&json!(["read:a", "write:b"])));
    assert_eq!(out.get("realm_roles"), Some(&json!(["ops"])));
    assert_eq!(
        out.get("user"),
        Some(&json!("alice")),
        "members can be read"
    );
    assert!(!out.contains_key("nothing"));
    assert!(!out.contains_key(""));
}

#[tokio::test]
async fn registered_claims_are_never_written_unless_allowed() {
    let subjects = SubjectClaims::new();
    subjects.set(
        "https://iss.test/",
        "alice",
        serde_json::from_value(json!({"sub": "root", "scope": "all", "role": "admin"}))
            .unwrap_or_default(),
    );
    let guarded = pipeline(&[
        Spec::Mapping {
            rules: vec![copy(name("org_id"), "iss", None)],
            overwrite_registered: false,
        },
        Spec::Subject {
            overwrite_registered: false,
        },
    ]);
    let out = enrich(&guarded, &token(json!({"org_id": "x"})), &subjects).await;
    assert_eq!(out.get("role"), Some(&json!("admin")));
    for registered in ["sub", "scope", "iss"] {
        assert!(!out.contains_key(registered), "{registered} written");
    }
    let allowed = pipeline(&[Spec::Subject {
        overwrite_registered: true,
    }]);
    let out = enrich(&allowed, &token(json!({})), &subjects).await;
    assert_eq!(out.get("sub"), Some(&json!("root")));
}

#[tokio::test]
async fn later_enrichers_win_conflicts() {
    let subjects = SubjectClaims::new();
    subjects.set(
        "https://iss.test/",
        "alice",
        serde_json::from_value(json!({"plan": "enterprise"})).unwrap_or_default(),
    );
    let p = pipeline(&[
        fixed(json!({"plan": "free", "region": "eu"}), When::default()),
        Spec::Subject {
            overwrite_registered: false,
        },
    ]);
    let out = enrich(&p, &token(json!({})), &subjects).await;
    assert_eq!(out.get("plan"), Some(&json!("enterprise")));
    assert_eq!(out.get("region"), Some(&json!("eu")));
}

#[test]
fn values_are_bounded() {
    assert!(check_claims(&object(json!({"a": {"b": {"c": 1}}}))).is_ok());
    assert!(check_claims(&object(json!({"big": "x".repeat(MAX_LAYER_BYTES)}))).is_err());
    let mut deep = json!(1);
    for _ in 0..MAX_DEPTH + 1 {
        deep = json!([deep]);
    }
    assert!(check_claims(&object(json!({ "deep": deep }))).is_err());
    // Exactly the deepest nesting allowed passes.
    let mut deepest = json!(1);
    for _ in 0..MAX_DEPTH {
        deepest = json!([deepest]);
    }
    assert!(check_claims(&object(json!({ "ok": deepest }))).is_ok());
}
