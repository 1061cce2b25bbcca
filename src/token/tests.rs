//! Every token rule, against the pure validation with a pinned clock.

use std::sync::LazyLock;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::sign::{SigningKey, jwks};
use super::*;
use crate::keys::KeySet;

const NOW: i64 = 1_700_000_000;
const ISS: &str = "https://issuer.test/";
const AUD: &str = "https://api.test";
const MAX: usize = 16 * 1024;

struct Keys {
    rs: SigningKey,
    ps: SigningKey,
    es256: SigningKey,
    es384: SigningKey,
    ed: SigningKey,
    /// A key of another issuer.
    other: SigningKey,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let gen_key = |alg, kid: &str| match SigningKey::generate(alg, kid) {
        Ok(key) => key,
        Err(e) => unreachable!("key generation failed: {e}"),
    };
    Keys {
        rs: gen_key(Algorithm::RS256, "rs"),
        ps: gen_key(Algorithm::PS256, "ps"),
        es256: gen_key(Algorithm::ES256, "es256"),
        es384: gen_key(Algorithm::ES384, "es384"),
        ed: gen_key(Algorithm::EdDSA, "ed"),
        other: gen_key(Algorithm::RS256, "other"),
    }
});

fn issuer() -> Policy {
    Policy {
        algorithms: vec![
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ],
        ..Policy::new(ISS, vec![AUD.to_owned()])
    }
}

fn key_set() -> KeySet {
    let k = &*KEYS;
    let doc = jwks(&[&k.rs, &k.ps, &k.es256, &k.es384, &k.ed]).to_string();
    match KeySet::from_jwks(doc.as_bytes()) {
        Ok((set, _)) => set,
        Err(e) => unreachable!("{e}"),
    }
}

fn claims() -> Value {
    json!({
        "iss": ISS,
        "sub": "user-1",
        "aud": AUD,
        "exp": NOW + 600,
        "iat": NOW - 10,
        "jti": "id-1",
        "client_id": "client-1",
        "scope": "read write",
        "org_id": "org-9",
    })
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    if let Value::Object(map) = &mut claims {
        map.remove(name);
    }
    claims
}

fn mint(key: &SigningKey, claims: &Value) -> String {
    key.mint("at+jwt", claims).unwrap_or_default()
}

fn signed(key: &SigningKey, header: Value, claims: &Value) -> String {
    key.sign_compact(&header, claims).unwrap_or_default()
}

fn check_with(token: &str, policy: &Policy) -> Result<AccessToken, Reason> {
    let keys = key_set();
    let jwt = parse(token, MAX).map_err(|r| r.reason)?;
    verify(jwt, policy, &keys, NOW).map_err(|r| r.reason)
}

fn check(token: &str) -> Result<AccessToken, Reason> {
    check_with(token, &issuer())
}

fn reason(token: &str) -> Option<Reason> {
    check(token).err()
}

// === accepted ===

#[test]
fn every_asymmetric_algorithm_verifies() {
    let k = &*KEYS;
    for key in [&k.rs, &k.ps, &k.es256, &k.es384, &k.ed] {
        let token = mint(key, &claims());
        assert_eq!(check(&token).err(), None, "{:?}", key.alg());
    }
}

#[test]
fn members_are_read_and_other_claims_kept() -> Result<(), Reason> {
    let token = check(&mint(&KEYS.rs, &claims()))?;
    assert_eq!(token.iss, ISS);
    assert_eq!(token.sub.as_deref(), Some("user-1"));
    assert_eq!(token.aud, vec![AUD]);
    assert_eq!(token.scopes, vec!["read", "write"]);
    assert_eq!(token.client_id.as_deref(), Some("client-1"));
    assert_eq!(token.jti.as_deref(), Some("id-1"));
    assert_eq!(token.other_claims.get("org_id"), Some(&json!("org-9")));
    for member in [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "jti",
        "scope",
        "client_id",
    ] {
        assert!(
            !token.other_claims.contains_key(member),
            "{member} repeated"
        );
    }
    Ok(())
}

#[test]
fn scp_array_and_azp_are_read() -> Result<(), Reason> {
    let shaped = without(without(claims(), "scope"), "client_id");
    let shaped = with(with(shaped, "scp", json!(["a", "b"])), "azp", json!("spa"));
    let token = check(&mint(&KEYS.rs, &shaped))?;
    assert_eq!(token.scopes, vec!["a", "b"]);
    assert_eq!(token.client_id.as_deref(), Some("spa"));
    // Read under another name, they stay among the claims as issued.
    assert!(token.other_claims.contains_key("scp"));
    assert!(token.other_claims.contains_key("azp"));
    Ok(())
}

/// RFC 6749 section 3.3: scopes are separated by spaces. Any other whitespace is
/// refused rather than split on: read as a separator it would grant
/// `admin` here, while the answer's `scope`, split on spaces as RFC 7662 clients do,
/// would not say so; and an array element with a space would say `admin` when the token
/// does not grant it.
#[test]
fn scopes_split_on_spaces_alone_and_other_whitespace_is_malformed() -> Result<(), Reason> {
    let spaced = with(claims(), "scope", json!("  read   write "));
    assert_eq!(
        check(&mint(&KEYS.rs, &spaced))?.scopes,
        vec!["read", "write"]
    );
    for smuggled in [
        "read\tadmin",
        "read\nadmin",
        "read\u{b}admin",
        "read\u{a0}admin",
        "read\u{2028}admin",
        "read\u{3000}admin",
        "read admin\n",
    ] {
        let token = mint(&KEYS.rs, &with(claims(), "scope", json!(smuggled)));
        assert_eq!(reason(&token), Some(Reason::Malformed), "{smuggled:?}");
    }
    let scopeless = without(claims(), "scope");
    for items in [json!(["read admin"]), json!(["read\tadmin"])] {
        let token = mint(&KEYS.rs, &with(scopeless.clone(), "scp", items.clone()));
        assert_eq!(reason(&token), Some(Reason::Malformed), "{items}");
    }
    // What cannot split passes: accents (Keycloak realms from before 19), an empty
    // element, which grants nothing.
    let accented = with(claims(), "scope", json!("caf\u{e9} read"));
    assert_eq!(
        check(&mint(&KEYS.rs, &accented))?.scopes,
        vec!["caf\u{e9}", "read"]
    );
    let with_empty = with(scopeless, "scp", json!(["read", ""]));
    assert_eq!(check(&mint(&KEYS.rs, &with_empty))?.scopes, vec!["read"]);
    Ok(())
}

/// Claims deeper than protobuf readers follow (as a gRPC Struct) are refused on every
/// surface, so HTTP and gRPC callers get the same answer.
#[test]
fn claims_nested_past_16_levels_are_malformed() {
    let nested = |levels: usize| {
        let mut value = json!("leaf");
        for level in 0..levels {
            value = if level % 2 == 0 {
                json!({ "in": value })
            } else {
                json!([value])
            };
        }
        mint(&KEYS.rs, &with(claims(), "deep", value))
    };
    assert_eq!(reason(&nested(16)), None);
    assert_eq!(reason(&nested(17)), Some(Reason::Malformed));
}

#[test]
fn aud_array_with_one_accepted_audience() {
    let token = mint(&KEYS.rs, &with(claims(), "aud", json!(["other", AUD])));
    assert_eq!(reason(&token), None);
}

#[test]
fn typ_with_media_type_prefix_is_accepted() {
    let header = json!({"alg": "RS256", "kid": "rs", "typ": "application/at+JWT"});
    assert_eq!(reason(&signed(&KEYS.rs, header, &claims())), None);
}

#[test]
fn fractional_numeric_dates_are_floored() -> Result<(), Reason> {
    let token = check(&mint(
        &KEYS.rs,
        &with(claims(), "exp", json!(NOW as f64 + 600.7)),
    ))?;
    assert_eq!(token.exp, NOW + 600);
    Ok(())
}

#[test]
fn hmac_issuer_verifies_hs256() {
    let secret = "0123456789abcdef0123456789abcdef";
    let policy = Policy {
        algorithms: vec![Algorithm::HS256],
        ..Policy::new(ISS, vec![AUD.to_owned()])
    };
    let key = match SigningKey::from_private(Algorithm::HS256, "hs", secret.as_bytes().to_vec()) {
        Ok(key) => key,
        Err(e) => unreachable!("{e}"),
    };
    let keys = KeySet::hmac(secret.as_bytes());
    let token = mint(&key, &claims());
    let verified = parse(&token, MAX).and_then(|jwt| verify(jwt, &policy, &keys, NOW));
    assert!(verified.is_ok(), "{verified:?}");
    // The same secret under another algorithm of the family is still refused if not allowed.
    let hs512 = SigningKey::from_private(Algorithm::HS512, "hs", secret.as_bytes().to_vec());
    let token = hs512.map(|k| mint(&k, &claims())).unwrap_or_default();
    let refused = parse(&token, MAX).and_then(|jwt| verify(jwt, &policy, &keys, NOW));
    assert_eq!(
        refused.map_err(|r| r.reason).err(),
        Some(Reason::BadSignature)
    );
}

// === signature and header rules ===

#[test]
fn alg_none_is_refused() {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    assert_eq!(
        reason(&format!("{header}.{payload}.")),
        Some(Reason::BadSignature)
    );
    let with_signature = format!("{header}.{payload}.c2lnbmF0dXJl");
    assert_eq!(reason(&with_signature), Some(Reason::BadSignature));
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion: the verifier's public key used as an HMAC secret.
    let public = KEYS.rs.public_jwk().to_string();
    let forged_key = match SigningKey::from_private(Algorithm::HS256, "rs", public.into_bytes()) {
        Ok(key) => key,
        Err(e) => unreachable!("{e}"),
    };
    let token = mint(&forged_key, &claims());
    assert_eq!(reason(&token), Some(Reason::BadSignature));
}

#[test]
fn algorithm_outside_the_allow_list_is_refused() {
    let policy = issuer();
    let mut rs_only = policy.clone();
    rs_only.algorithms = vec![Algorithm::RS256];
    let token = mint(&KEYS.es256, &claims());
    assert_eq!(
        check_with(&token, &rs_only).err(),
        Some(Reason::BadSignature)
    );
}

#[test]
fn kid_of_a_key_of_another_type_is_refused() {
    // ES256 signature, but the kid names the RSA key.
    let header = json!({"alg": "ES256", "kid": "rs", "typ": "at+jwt"});
    assert_eq!(
        reason(&signed(&KEYS.es256, header, &claims())),
        Some(Reason::BadSignature)
    );
}

#[test]
fn jwk_alg_pins_the_algorithm() {
    let mut jwk = KEYS.rs.public_jwk();
    jwk["alg"] = json!("RS384");
    let doc = json!({"keys": [jwk]}).to_string();
    let keys = match KeySet::from_jwks(doc.as_bytes()) {
        Ok((set, _)) => set,
        Err(e) => unreachable!("{e}"),
    };
    let mut policy = issuer();
    policy.algorithms = vec![Algorithm::RS256, Algorithm::RS384];
    let token = mint(&KEYS.rs, &claims());
    let result = parse(&token, MAX).and_then(|jwt| verify(jwt, &policy, &keys, NOW));
    assert_eq!(
        result.map_err(|r| r.reason).err(),
        Some(Reason::BadSignature)
    );
}

#[test]
fn key_of_another_issuer_is_refused() {
    // Unknown kid: the other issuer's key is not in this set.
    assert_eq!(
        reason(&mint(&KEYS.other, &claims())),
        Some(Reason::UnknownKey)
    );
    // Same kid as one of ours: the signature does not verify with our key.
    let header = json!({"alg": "RS256", "kid": "rs", "typ": "at+jwt"});
    assert_eq!(
        reason(&signed(&KEYS.other, header, &claims())),
        Some(Reason::BadSignature)
    );
    // No kid: every RSA key of ours is tried, none verifies.
    let header = json!({"alg": "RS256", "typ": "at+jwt"});
    assert_eq!(
        reason(&signed(&KEYS.other, header, &claims())),
        Some(Reason::BadSignature)
    );
}

#[test]
fn token_without_kid_finds_its_key() {
    let header = json!({"alg": "EdDSA", "typ": "at+jwt"});
    assert_eq!(reason(&signed(&KEYS.ed, header, &claims())), None);
}

#[test]
fn key_carrying_headers_are_refused() {
    let jwk = KEYS.other.public_jwk();
    for (name, value) in [
        ("jku", json!("https://evil.test/jwks.json")),
        ("x5u", json!("https://evil.test/cert.pem")),
        ("jwk", jwk),
        ("x5c", json!(["MIIB"])),
        // Present is present: `null` does not make them absent.
        ("jku", json!(null)),
        ("jwk", json!(null)),
        ("x5c", json!(null)),
        ("crit", json!(null)),
    ] {
        let mut header = json!({"alg": "RS256", "kid": "rs", "typ": "at+jwt"});
        header[name] = value;
        assert_eq!(
            reason(&signed(&KEYS.rs, header, &claims())),
            Some(Reason::Malformed),
            "{name}"
        );
    }
}

#[test]
fn unknown_crit_is_refused() {
    let header = json!({"alg": "RS256", "kid": "rs", "typ": "at+jwt", "crit": ["exp"], "exp": 1});
    assert_eq!(
        reason(&signed(&KEYS.rs, header, &claims())),
        Some(Reason::Malformed)
    );
}

#[test]
fn tampered_payload_is_refused() {
    let token = mint(&KEYS.rs, &claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(with(claims(), "sub", json!("admin")).to_string());
    let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
    assert_eq!(reason(&tampered), Some(Reason::BadSignature));
}

// === malformed input ===

#[test]
fn oversized_token_is_refused_before_decoding() {
    let big = "a".repeat(1024 * 1024);
    assert_eq!(
        reason(&format!("{big}.{big}.{big}")),
        Some(Reason::Malformed)
    );
}

/// A token whose header is a JOSE header (a JSON object with `alg`) is a JWS, however
/// malformed: `MALFORMED`, not an opaque token for the issuers' endpoints (which would
/// answer `UNKNOWN_ISSUER` and send it to them). Opaque tokens with dots stay opaque.
#[test]
fn a_malformed_jws_is_not_taken_for_an_opaque_token() {
    let good = mint(&KEYS.rs, &claims());
    let body = URL_SAFE_NO_PAD.encode(claims().to_string());
    let with_header = |header: &str| format!("{}.{body}.c2ln", URL_SAFE_NO_PAD.encode(header));
    let (head, rest) = good.split_once('.').unwrap_or_default();
    for token in [
        with_header(r#"{"alg":"RS256","kid":5}"#),
        with_header(r#"{"alg":"RS256","typ":1}"#),
        with_header(r#"{"alg":"RS256","kid":"rs","kid":"rs"}"#),
        format!("{good}\n"),
        format!(" {good}"),
        format!("{head}==.{rest}"),
        // The header in the standard alphabet, or wrapped over two lines.
        format!(
            "{}.{body}.c2ln",
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(r#"{"alg":"RS256","kid":"rs","x":"??>>"}"#)
        ),
        format!("{}\n{}.{rest}", &head[..10], &head[10..]),
    ] {
        assert!(
            matches!(classify(&token, MAX), Err(r) if r.reason == Reason::Malformed),
            "{token:?}"
        );
    }
    for opaque in ["abc.def.ghi", "ory_at_x.y.z", "a b.c.d", "e30.e30.sig"] {
        assert!(
            matches!(classify(opaque, MAX), Ok(Classified::Opaque)),
            "{opaque}"
        );
    }
}

#[test]
fn garbage_is_malformed() {
    let json_not_object = URL_SAFE_NO_PAD.encode("[1,2]");
    let not_json = URL_SAFE_NO_PAD.encode("not json");
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#);
    for token in [
        "".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        "!!!.@@@.###".to_owned(),
        format!("{not_json}.{not_json}.sig"),
        format!("{header}.{json_not_object}.sig"),
        format!("{header}.{not_json}.sig"),
        format!("{header}.{}.sig!", URL_SAFE_NO_PAD.encode("{}")),
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":7}"#),
            URL_SAFE_NO_PAD.encode("{}")
        ),
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":5}"#),
            URL_SAFE_NO_PAD.encode("{}")
        ),
    ] {
        assert_eq!(reason(&token), Some(Reason::Malformed), "{token}");
    }
}

#[test]
fn exp_as_string_is_malformed() {
    let token = mint(&KEYS.rs, &with(claims(), "exp", json!("1999999999")));
    assert_eq!(reason(&token), Some(Reason::Malformed));
}

#[test]
fn claims_of_the_wrong_type_are_malformed() {
    for (name, value) in [
        ("nbf", json!("soon")),
        ("iat", json!(true)),
        ("aud", json!(42)),
        ("aud", json!([AUD, 1])),
        ("sub", json!(7)),
        ("scope", json!({"read": true})),
        ("exp", json!(null)),
    ] {
        let token = mint(&KEYS.rs, &with(claims(), name, value));
        assert_eq!(reason(&token), Some(Reason::Malformed), "{name}");
    }
}

#[test]
fn missing_exp_is_malformed() {
    assert_eq!(
        reason(&mint(&KEYS.rs, &without(claims(), "exp"))),
        Some(Reason::Malformed)
    );
}

#[test]
fn missing_required_claim_is_malformed() {
    let policy = Policy {
        required_claims: vec!["sub".into(), "client_id".into()],
        ..issuer()
    };
    let token = mint(&KEYS.rs, &without(claims(), "client_id"));
    assert_eq!(check_with(&token, &policy).err(), Some(Reason::Malformed));
    assert_eq!(check_with(&mint(&KEYS.rs, &claims()), &policy).err(), None);
}

// === time ===

#[test]
fn expiry_honours_leeway() {
    let leeway = issuer().leeway_secs;
    let just_inside = mint(&KEYS.rs, &with(claims(), "exp", json!(NOW - leeway + 1)));
    assert_eq!(reason(&just_inside), None);
    let at_limit = mint(&KEYS.rs, &with(claims(), "exp", json!(NOW - leeway)));
    assert_eq!(reason(&at_limit), Some(Reason::Expired));
}

#[test]
fn nbf_and_iat_in_the_future_are_not_yet_valid() {
    let leeway = issuer().leeway_secs;
    for name in ["nbf", "iat"] {
        let inside = mint(&KEYS.rs, &with(claims(), name, json!(NOW + leeway)));
        assert_eq!(reason(&inside), None, "{name}");
        let beyond = mint(&KEYS.rs, &with(claims(), name, json!(NOW + leeway + 1)));
        assert_eq!(reason(&beyond), Some(Reason::NotYetValid), "{name}");
    }
}

#[test]
fn zero_leeway_is_exact() {
    let policy = Policy {
        leeway_secs: 0,
        ..issuer()
    };
    let token = mint(&KEYS.rs, &with(claims(), "exp", json!(NOW)));
    assert_eq!(check_with(&token, &policy).err(), Some(Reason::Expired));
}

// === audience and issuer ===

#[test]
fn wrong_or_missing_audience_is_refused() {
    assert_eq!(
        reason(&mint(&KEYS.rs, &with(claims(), "aud", json!("other")))),
        Some(Reason::WrongAudience)
    );
    assert_eq!(
        reason(&mint(&KEYS.rs, &without(claims(), "aud"))),
        Some(Reason::WrongAudience)
    );
}

#[test]
fn iss_other_than_the_policy_is_refused() {
    let token = mint(
        &KEYS.rs,
        &with(claims(), "iss", json!("https://elsewhere.test/")),
    );
    assert_eq!(reason(&token), Some(Reason::UnknownIssuer));
}

// === token type confusion ===

#[test]
fn strict_typ_requires_at_jwt() {
    for typ in [Some("JWT"), None, Some("JOSE")] {
        let mut header = json!({"alg": "RS256", "kid": "rs"});
        if let Some(typ) = typ {
            header["typ"] = json!(typ);
        }
        assert_eq!(
            reason(&signed(&KEYS.rs, header, &claims())),
            Some(Reason::WrongTokenType),
            "{typ:?}"
        );
    }
}

#[test]
fn compat_typ_accepts_jwt_and_no_typ() {
    let policy = Policy {
        typ: TypPolicy::Compat,
        ..issuer()
    };
    for typ in [Some("JWT"), None] {
        let mut header = json!({"alg": "RS256", "kid": "rs"});
        if let Some(typ) = typ {
            header["typ"] = json!(typ);
        }
        let token = signed(&KEYS.rs, header, &claims());
        assert_eq!(check_with(&token, &policy).err(), None, "{typ:?}");
    }
}

#[test]
fn id_tokens_are_wrong_token_type() {
    let policy = Policy {
        typ: TypPolicy::Compat,
        ..issuer()
    };
    let header = json!({"alg": "RS256", "kid": "rs", "typ": "JWT"});
    for (name, value) in [
        ("nonce", json!("n-0S6_WzA2Mj")),
        ("at_hash", json!("77QmUPtjPfzWtF2AnpK9RQ")),
        ("c_hash", json!("LDktKdoQak3Pk0cnXxCltA")),
        ("type", json!("id_token")),
        ("token_use", json!("id")),
        ("typ", json!("ID")),
    ] {
        let token = signed(&KEYS.rs, header.clone(), &with(claims(), name, value));
        assert_eq!(
            check_with(&token, &policy).err(),
            Some(Reason::WrongTokenType),
            "{name}"
        );
    }
    // Even typed at+jwt, an OIDC-only claim gives an ID token away.
    assert_eq!(
        reason(&mint(&KEYS.rs, &with(claims(), "nonce", json!("n")))),
        Some(Reason::WrongTokenType)
    );
}

/// Keycloak put the authentication request's `nonce` into access tokens until 2024
/// (keycloak/keycloak#26893; keycloak-js asks with a nonce by default). Its type claim
/// says `Bearer`, and that decides; the same token typed `ID` is an ID token.
#[test]
fn an_access_token_that_says_so_may_carry_a_nonce() {
    let policy = Policy {
        typ: TypPolicy::Compat,
        ..issuer()
    };
    let header = json!({"alg": "RS256", "kid": "rs", "typ": "JWT"});
    let keycloak = |typ: &str| {
        let shaped = with(claims(), "nonce", json!("0c3a5e2f-1d6b"));
        let shaped = with(with(shaped, "typ", json!(typ)), "azp", json!("spa"));
        signed(&KEYS.rs, header.clone(), &shaped)
    };
    assert_eq!(check_with(&keycloak("Bearer"), &policy).err(), None);
    assert_eq!(
        check_with(&keycloak("DPoP"), &policy).err(),
        None,
        "DPoP-bound"
    );
    assert_eq!(
        check_with(&keycloak("ID"), &policy).err(),
        Some(Reason::WrongTokenType)
    );
    let cognito = with(
        with(claims(), "nonce", json!("n")),
        "token_use",
        json!("access"),
    );
    assert_eq!(
        check_with(&signed(&KEYS.rs, header.clone(), &cognito), &policy).err(),
        None
    );
    // RFC 7662's `token_type: Bearer` is not such a claim: introspection answers carry it
    // whatever the token is.
    let answer_like = with(
        with(claims(), "nonce", json!("n")),
        "token_type",
        json!("Bearer"),
    );
    assert_eq!(
        check_with(&signed(&KEYS.rs, header, &answer_like), &policy).err(),
        Some(Reason::WrongTokenType)
    );
}

#[test]
fn refresh_tokens_are_wrong_token_type() {
    let policy = Policy {
        typ: TypPolicy::Compat,
        ..issuer()
    };
    let jwt = json!({"alg": "RS256", "kid": "rs", "typ": "JWT"});
    for (header, claims) in [
        (jwt.clone(), with(claims(), "typ", json!("Refresh"))),
        (jwt.clone(), with(claims(), "typ", json!("Offline"))),
        (
            jwt.clone(),
            with(claims(), "token_type", json!("refresh_token")),
        ),
        (
            json!({"alg": "RS256", "kid": "rs", "typ": "refresh+jwt"}),
            claims(),
        ),
    ] {
        let token = signed(&KEYS.rs, header, &claims);
        assert_eq!(
            check_with(&token, &policy).err(),
            Some(Reason::WrongTokenType)
        );
    }
}

#[test]
fn other_explicit_jwt_types_are_refused() {
    for typ in ["logout+jwt", "secevent+jwt", "dpop+jwt"] {
        let header = json!({"alg": "RS256", "kid": "rs", "typ": typ});
        assert_eq!(
            reason(&signed(&KEYS.rs, header, &claims())),
            Some(Reason::WrongTokenType),
            "{typ}"
        );
    }
}

// === per-call policy ===

#[test]
fn call_policy_narrows() -> Result<(), Reason> {
    let token = check(&mint(&KEYS.rs, &claims()))?;
    let read = vec!["read".to_owned()];
    let admin = vec!["read".to_owned(), "admin".to_owned()];
    let ok = CallPolicy {
        required_scopes: &read,
        audience: Some(AUD),
        ..CallPolicy::default()
    };
    assert!(ok.check(&token).is_ok());
    let scope = CallPolicy {
        required_scopes: &admin,
        audience: None,
        ..CallPolicy::default()
    };
    assert_eq!(
        scope.check(&token).map_err(|r| r.reason),
        Err(Reason::InsufficientScope)
    );
    let audience = CallPolicy {
        required_scopes: &[],
        audience: Some("https://other.test"),
        ..CallPolicy::default()
    };
    assert_eq!(
        audience.check(&token).map_err(|r| r.reason),
        Err(Reason::WrongAudience)
    );
    Ok(())
}

// === fingerprint ===

#[test]
fn fingerprint_is_the_sha256_prefix() {
    // SHA-256("abc") = ba7816bf8f01cfea...
    assert_eq!(
        TokenHash::of("abc").fingerprint().as_str(),
        "ba7816bf8f01cfea"
    );
}

// === no input panics ===

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_strings_never_panic(token in ".{0,300}") {
        let _ = check(&token);
    }

    #[test]
    fn arbitrary_json_segments_never_panic(
        header in prop::collection::vec(any::<u8>(), 0..64),
        payload in prop::collection::vec(any::<u8>(), 0..128),
        claim in prop_oneof![Just("exp"), Just("nbf"), Just("iat"), Just("aud"), Just("scope"), Just("iss")],
        value in prop_oneof![
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,8}".prop_map(|s| json!(s)),
            Just(json!(null)),
            Just(json!([1, "a"])),
            Just(json!({"nested": {}})),
        ],
    ) {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let _ = check(&format!("{}.{}.{}", b64(&header), b64(&payload), b64(b"x")));
        let _ = check(&mint(&KEYS.es256, &with(claims(), claim, value)));
    }
}

#[test]
fn lifetime_beyond_the_issuer_maximum_is_refused() {
    let policy = Policy {
        max_token_lifetime_secs: 3600,
        ..issuer()
    };
    let long = with(with(claims(), "iat", json!(NOW)), "exp", json!(NOW + 7200));
    assert_eq!(
        check_with(&mint(&KEYS.rs, &long), &policy).err(),
        Some(Reason::Malformed)
    );
    let no_iat = with(without(claims(), "iat"), "exp", json!(NOW + 7200));
    assert_eq!(
        check_with(&mint(&KEYS.rs, &no_iat), &policy).err(),
        Some(Reason::Malformed)
    );
    let fine = with(with(claims(), "iat", json!(NOW)), "exp", json!(NOW + 3600));
    assert_eq!(check_with(&mint(&KEYS.rs, &fine), &policy).err(), None);
}

#[test]
fn untyped_token_for_its_own_client_without_scope_is_an_id_token() {
    let policy = Policy {
        typ: TypPolicy::Compat,
        ..issuer()
    };
    let header = json!({"alg": "RS256", "kid": "rs", "typ": "JWT"});
    let id_like = with(without(claims(), "scope"), "azp", json!(AUD));
    assert_eq!(
        check_with(&signed(&KEYS.rs, header.clone(), &id_like), &policy).err(),
        Some(Reason::WrongTokenType)
    );
    // With scopes (Rollup-style access tokens addressed to the client) it is an access token.
    let access = with(claims(), "azp", json!(AUD));
    assert_eq!(
        check_with(&signed(&KEYS.rs, header, &access), &policy).err(),
        None
    );
}

/// Rollup's ID token (reference/002): untyped, addressed to the client, no `azp`, no
/// scope, the user's profile; a code-flow ID token has `auth_time` instead of a nonce.
/// An empty or null scope grants nothing, and Okta names the client `cid`.
#[test]
fn untyped_scopeless_tokens_with_a_profile_or_for_their_client_are_id_tokens() {
    let policy = Policy {
        typ: TypPolicy::Compat,
        ..issuer()
    };
    let header = json!({"alg": "RS256", "kid": "rs", "typ": "JWT"});
    let scopeless = || without(without(claims(), "scope"), "client_id");
    for (what, shaped) in [
        (
            "profile",
            with(
                with(scopeless(), "name", json!("Jane")),
                "email",
                json!("j@x"),
            ),
        ),
        ("auth_time", with(scopeless(), "auth_time", json!(NOW - 60))),
        (
            "email_verified",
            with(scopeless(), "email_verified", json!(true)),
        ),
        (
            "empty scope",
            with(with(claims(), "scope", json!("")), "azp", json!(AUD)),
        ),
        (
            "null scope",
            with(with(claims(), "scope", json!(null)), "azp", json!(AUD)),
        ),
        ("cid", with(without(claims(), "scope"), "cid", json!(AUD))),
    ] {
        assert_eq!(
            check_with(&signed(&KEYS.rs, header.clone(), &shaped), &policy).err(),
            Some(Reason::WrongTokenType),
            "{what}"
        );
    }
    // An access token may carry the profile too: its scope says what it is.
    let profiled_access = with(claims(), "email", json!("j@x"));
    assert_eq!(
        check_with(&signed(&KEYS.rs, header, &profiled_access), &policy).err(),
        None
    );
}

/// What `compat` cannot tell apart (the README says so): Rollup's refresh token reads as
/// an access token granting no scope, until the issuer requires a scope.
#[test]
fn an_untyped_scopeless_refresh_token_needs_required_scope_to_be_refused() {
    let compat = Policy {
        typ: TypPolicy::Compat,
        ..issuer()
    };
    let header = json!({"alg": "RS256", "kid": "rs", "typ": "JWT"});
    let refresh = without(without(claims(), "scope"), "client_id");
    let refresh = without(refresh, "org_id");
    let token = signed(&KEYS.rs, header, &refresh);
    assert_eq!(check_with(&token, &compat).err(), None);
    let requiring_scope = Policy {
        required_claims: vec!["scope".into()],
        ..compat
    };
    assert_eq!(
        check_with(&token, &requiring_scope).err(),
        Some(Reason::Malformed)
    );
}

/// Type claims as issuers write them: RFC 8693 URNs, arrays (a multi-valued claim),
/// stray spaces, and Keycloak's other kinds (logout, serialized ID tokens).
#[test]
fn type_claims_are_read_in_every_spelling() {
    for (name, value) in [
        (
            "token_type",
            json!("urn:ietf:params:oauth:token-type:refresh_token"),
        ),
        (
            "token_type",
            json!("urn:ietf:params:oauth:token-type:id_token"),
        ),
        ("typ", json!(["Refresh"])),
        ("type", json!("REFRESH ")),
        ("typ", json!("Logout")),
        ("typ", json!("Serialized-ID")),
    ] {
        assert_eq!(
            reason(&mint(&KEYS.rs, &with(claims(), name, value.clone()))),
            Some(Reason::WrongTokenType),
            "{name}: {value}"
        );
    }
    for (name, value) in [
        ("typ", json!("Bearer")),
        (
            "token_type",
            json!("urn:ietf:params:oauth:token-type:access_token"),
        ),
        ("token_use", json!(["access"])),
    ] {
        assert_eq!(
            reason(&mint(&KEYS.rs, &with(claims(), name, value.clone()))),
            None,
            "{name}: {value}"
        );
    }
}

#[test]
fn identity_hash_ignores_the_signature_bytes() {
    let token = mint(&KEYS.es256, &claims());
    let (signed, _) = token.rsplit_once('.').unwrap_or_default();
    let resigned = format!("{signed}.AAAA");
    assert_eq!(TokenHash::identity(&token), TokenHash::identity(&resigned));
    assert_ne!(TokenHash::of(&token), TokenHash::of(&resigned));
    assert_eq!(TokenHash::identity("opaque"), TokenHash::of("opaque"));
}

// === one set of access-token rules for opaque answers too ===

/// An RFC 7662 answer as Hydra or oidc-provider sends it for an access token.
fn answer(extra: Value) -> Map<String, Value> {
    let mut base = json!({"sub": "user-1", "aud": [AUD], "exp": NOW + 600, "iat": NOW - 10,
        "client_id": "client-1", "scope": "read", "token_type": "Bearer"});
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        for (name, value) in extra {
            if value.is_null() {
                base.remove(name);
            } else {
                base.insert(name.clone(), value.clone());
            }
        }
    }
    base.as_object().cloned().unwrap_or_default()
}

fn opaque_with(extra: Value, policy: &Policy) -> Result<AccessToken, Reason> {
    AccessToken::from_introspection(answer(extra), policy, NOW + 60, NOW).map_err(|r| r.reason)
}

fn opaque(extra: Value) -> Result<AccessToken, Reason> {
    opaque_with(extra, &issuer())
}

#[test]
fn an_access_token_answer_is_active() -> Result<(), Reason> {
    let token = opaque(json!({}))?;
    assert_eq!(
        token.iss, ISS,
        "the endpoint's issuer stands in for a missing iss"
    );
    assert!(!token.other_claims.contains_key("token_type"));
    // Without exp, the answer lives as long as it may be reused.
    assert_eq!(opaque(json!({"exp": null}))?.exp, NOW + 60);
    Ok(())
}

#[test]
fn refresh_and_id_token_answers_are_wrong_token_type() {
    for extra in [
        json!({"token_use": "refresh_token"}),  // Hydra
        json!({"token_type": "refresh_token"}), // spelled out
        json!({"token_type": "N_A"}),           // RFC 8693: not an access token
        json!({"typ": "Refresh"}),              // Keycloak
        json!({"token_type": "urn:ietf:params:oauth:token-type:id_token"}),
        json!({"nonce": "n-1"}), // only ID tokens have it
    ] {
        assert_eq!(
            opaque(extra.clone()).err(),
            Some(Reason::WrongTokenType),
            "{extra}"
        );
    }
    // oidc-provider omits token_type for refresh tokens only: an issuer can require it.
    let strict = Policy {
        require_token_type: true,
        ..issuer()
    };
    assert_eq!(
        opaque_with(json!({"token_type": null}), &strict).err(),
        Some(Reason::WrongTokenType)
    );
    assert!(opaque_with(json!({"token_type": "DPoP"}), &strict).is_ok());
}

#[test]
fn answers_meet_the_issuer_audiences_unless_it_opts_out() {
    assert_eq!(
        opaque(json!({"aud": null})).err(),
        Some(Reason::WrongAudience)
    );
    assert_eq!(
        opaque(json!({"aud": "https://other-api.test"})).err(),
        Some(Reason::WrongAudience)
    );
    let lenient = Policy {
        accept_opaque_without_aud: true,
        ..issuer()
    };
    assert!(opaque_with(json!({"aud": null}), &lenient).is_ok());
    assert_eq!(
        opaque_with(json!({"aud": "https://other-api.test"}), &lenient).err(),
        Some(Reason::WrongAudience),
        "an aud that is there must still match"
    );
}

#[test]
fn answers_meet_the_time_lifetime_and_claim_rules() {
    let fourteen_days = 14 * 24 * 3600;
    assert_eq!(
        opaque(json!({"exp": NOW + fourteen_days, "iat": NOW})).err(),
        Some(Reason::Malformed),
        "a refresh token's lifetime is past the issuer's maximum"
    );
    assert_eq!(
        opaque(json!({"nbf": NOW + 3600})).err(),
        Some(Reason::NotYetValid)
    );
    assert_eq!(
        opaque(json!({"exp": NOW - 3600})).err(),
        Some(Reason::Expired)
    );
    let needs_org = Policy {
        required_claims: vec!["org_id".into()],
        ..issuer()
    };
    assert_eq!(
        opaque_with(json!({}), &needs_org).err(),
        Some(Reason::Malformed)
    );
    assert_eq!(
        opaque(json!({"iss": "https://elsewhere.test/"})).err(),
        Some(Reason::UnknownIssuer)
    );
}

#[test]
fn jwts_without_iat_are_refused_where_iat_is_required() {
    let token = mint(&KEYS.rs, &without(claims(), "iat"));
    assert_eq!(check(&token).err(), Some(Reason::Malformed));
    let exp_only = Policy {
        require_iat: false,
        ..issuer()
    };
    assert!(check_with(&token, &exp_only).is_ok());
}

#[test]
fn only_three_base64url_segments_with_an_alg_header_are_a_jws() {
    assert!(is_jws(&mint(&KEYS.rs, &claims())));
    let header = |json: &str| URL_SAFE_NO_PAD.encode(json);
    for opaque in [
        "ory_at_Kx7yW3pZ0aS6b1c2d3e4f5g6h7i8j9k0l1m2n3o4p5q.Fz9yX8wV7uT6sR5qP4oN3mL2kJ1iH0gF9eD8cB7aZ6y",
        "a.b.c",
        "plain-random-string",
        &format!("{}.e30.sig", header(r#"{"typ":"JWT"}"#)),
        &format!("{}.e30.sig.extra", header(r#"{"alg":"RS256"}"#)),
    ] {
        assert!(!is_jws(opaque), "{opaque}");
    }
    assert!(is_jws(&format!("{}.e30.", header(r#"{"alg":"none"}"#))));
    // A JOSE header makes a JWS, a malformed one here: a signature in standard base64.
    assert!(is_jws(&format!("{}.e30.s+g", header(r#"{"alg":"RS256"}"#))));
}

#[test]
fn an_unknown_kid_beside_kidless_keys_asks_for_a_refetch() {
    let mut kidless = KEYS.rs.public_jwk();
    if let Some(jwk) = kidless.as_object_mut() {
        jwk.remove("kid");
    }
    let doc = json!({ "keys": [kidless] }).to_string();
    let keys = match KeySet::from_jwks(doc.as_bytes()) {
        Ok((set, _)) => set,
        Err(e) => unreachable!("{e}"),
    };
    let rotated = mint(&KEYS.other, &claims());
    let checked = parse(&rotated, MAX).and_then(|jwt| jwt.check_signature(&issuer(), &keys));
    assert_eq!(checked.err().map(|r| r.reason), Some(Reason::UnknownKey));
    // A token without kid that no key verifies is a bad signature, as before.
    let unsigned_kid = signed(
        &KEYS.other,
        json!({"alg": "RS256", "typ": "at+jwt"}),
        &claims(),
    );
    let checked = parse(&unsigned_kid, MAX).and_then(|jwt| jwt.check_signature(&issuer(), &keys));
    assert_eq!(checked.err().map(|r| r.reason), Some(Reason::BadSignature));
}
