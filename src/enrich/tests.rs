use serde_json::json;

use super::*;
use crate::config::{FileConfig, IssuerConfig};

fn token(claims: serde_json::Value) -> AccessToken {
    let text = r#"
[auth]
anonymous_introspect = true
[store]
backend = "memory"
[[issuers]]
issuer = "https://iss.test/"
audiences = ["api"]
jwks_uri = "https://iss.test/jwks"
"#;
    let policy: IssuerConfig = match FileConfig::parse(text, &std::collections::BTreeMap::new())
        .and_then(FileConfig::validate)
    {
        Ok(mut config) => config.issuers.remove(0),
        Err(e) => unreachable!("{e}"),
    };
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

fn pipeline(sections: serde_json::Value) -> Result<Pipeline, EnrichConfigError> {
    let sections: Vec<EnricherSection> =
        serde_json::from_value(sections).map_err(|e| EnrichConfigError::Invalid(e.to_string()))?;
    let http = reqwest::Client::builder()
        .build()
        .map_err(|e| EnrichConfigError::Invalid(e.to_string()))?;
    Pipeline::new(&sections, &http)
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
    match pipeline
        .enrich(token, &precomputed, key.as_ref(), subjects, 0)
        .await
    {
        Ok(enrichment) => enrichment.merged(),
        Err(e) => unreachable!("{e}"),
    }
}

#[tokio::test]
async fn static_claims_apply_when_their_conditions_hold() -> Result<(), EnrichConfigError> {
    let p = pipeline(json!([
        {"kind": "static", "claims": {"tier": "gold"}},
        {"kind": "static", "claims": {"admin_ui": true}, "when": {"scope": ["admin"]}},
        {"kind": "static", "claims": {"spa": true}, "when": {"client_id": ["spa"], "audience": ["api"]}},
    ]))?;
    let out = enrich(&p, &token(json!({})), &SubjectClaims::new()).await;
    assert_eq!(out.get("tier"), Some(&json!("gold")));
    assert_eq!(out.get("admin_ui"), None);
    assert_eq!(out.get("spa"), Some(&json!(true)));
    let admin = enrich(&p, &token(json!({"scope": "admin"})), &SubjectClaims::new()).await;
    assert_eq!(admin.get("admin_ui"), Some(&json!(true)));
    Ok(())
}

#[tokio::test]
async fn mapping_renames_strips_splits_and_picks() -> Result<(), EnrichConfigError> {
    let p = pipeline(json!([{"kind": "mapping", "rules": [
        {"strip_prefix": "https://example.com/"},
        {"from": "org_id", "to": "organization"},
        {"from": "permissions", "to": "permissions", "split": " "},
        {"from_path": "realm_access.roles", "to": "realm_roles"},
        {"from_path": "realm_access.missing", "to": "nothing"},
        {"from": "sub", "to": "user"},
    ]}]))?;
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
    Ok(())
}

#[tokio::test]
async fn registered_claims_are_never_written_unless_allowed() -> Result<(), EnrichConfigError> {
    let subjects = SubjectClaims::new();
    subjects.set(
        "https://iss.test/",
        "alice",
        serde_json::from_value(json!({"sub": "root", "scope": "all", "role": "admin"}))
            .unwrap_or_default(),
    );
    let guarded = pipeline(json!([
        {"kind": "mapping", "rules": [{"from": "org_id", "to": "iss"}]},
        {"kind": "subject"},
    ]))?;
    let out = enrich(&guarded, &token(json!({"org_id": "x"})), &subjects).await;
    assert_eq!(out.get("role"), Some(&json!("admin")));
    for registered in ["sub", "scope", "iss"] {
        assert!(!out.contains_key(registered), "{registered} written");
    }
    let allowed = pipeline(json!([{"kind": "subject", "overwrite_registered": true}]))?;
    let out = enrich(&allowed, &token(json!({})), &subjects).await;
    assert_eq!(out.get("sub"), Some(&json!("root")));
    // A static claim naming a registered claim is a configuration error, not a silent drop.
    assert!(pipeline(json!([{"kind": "static", "claims": {"exp": 1}}])).is_err());
    Ok(())
}

#[tokio::test]
async fn later_enrichers_win_conflicts() -> Result<(), EnrichConfigError> {
    let subjects = SubjectClaims::new();
    subjects.set(
        "https://iss.test/",
        "alice",
        serde_json::from_value(json!({"plan": "enterprise"})).unwrap_or_default(),
    );
    let p = pipeline(json!([
        {"kind": "static", "claims": {"plan": "free", "region": "eu"}},
        {"kind": "subject"},
    ]))?;
    let out = enrich(&p, &token(json!({})), &subjects).await;
    assert_eq!(out.get("plan"), Some(&json!("enterprise")));
    assert_eq!(out.get("region"), Some(&json!("eu")));
    Ok(())
}

#[test]
fn invalid_configurations_are_named() {
    for bad in [
        json!([{"kind": "mapping", "rules": [{"from": "a"}]}]),
        json!([{"kind": "mapping", "rules": [{"from": "a", "from_path": "b", "to": "c"}]}]),
        json!([{"kind": "mapping", "rules": [{"strip_prefix": "p", "to": "c"}]}]),
        json!([{"kind": "remote", "url": "ftp://x"}]),
        json!([{"kind": "remote", "url": "http://x", "timeout_ms": 0}]),
        json!([{"kind": "static", "claims": {"deep": [[[[[[[[[[1]]]]]]]]]]}}]),
        json!([{"kind": "telepathy"}]),
        json!([{"kind": "static", "claimz": {}}]),
    ] {
        assert!(pipeline(bad.clone()).is_err(), "{bad}");
    }
}

#[test]
fn values_are_bounded() {
    let object = |value: serde_json::Value| value.as_object().cloned().unwrap_or_default();
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
