use jsonwebtoken::Algorithm;
use serde_json::json;

use super::*;
use crate::token::sign::SigningKey;

fn key(alg: Algorithm, kid: &str) -> SigningKey {
    match SigningKey::generate(alg, kid) {
        Ok(key) => key,
        Err(e) => unreachable!("{e}"),
    }
}

fn set(keys: Vec<serde_json::Value>) -> Result<(KeySet, usize), KeysError> {
    KeySet::from_jwks(json!({ "keys": keys }).to_string().as_bytes())
}

#[test]
fn unusable_keys_are_skipped_not_fatal() -> Result<(), KeysError> {
    let good = key(Algorithm::ES256, "good").public_jwk();
    let mut encryption = key(Algorithm::ES256, "enc").public_jwk();
    encryption["use"] = json!("enc");
    let secret = json!({"kty": "oct", "kid": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"});
    let mut weak_rsa = key(Algorithm::RS256, "weak").public_jwk();
    weak_rsa["n"] = json!("AQAB"); // a toy modulus
    let p521 = json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AQ", "y": "AQ"});
    let garbage = json!({"kty": "RSA", "kid": "broken"});
    let (set, skipped) = set(vec![good, encryption, secret, weak_rsa, p521, garbage])?;
    assert_eq!(set.len(), 1);
    assert_eq!(skipped, 5);
    assert!(set.contains_kid("good"));
    assert!(
        !set.contains_kid("oct"),
        "a symmetric key from a JWKS must never be used"
    );
    Ok(())
}

#[test]
fn a_set_with_no_usable_key_is_an_error() {
    let mut encryption = key(Algorithm::ES256, "enc").public_jwk();
    encryption["use"] = json!("enc");
    assert!(matches!(
        set(vec![encryption]),
        Err(KeysError::NoUsableKeys)
    ));
    assert!(matches!(
        KeySet::from_jwks(b"{\"nope\": 1}"),
        Err(KeysError::Parse(_))
    ));
}

#[test]
fn duplicate_kid_keeps_the_first() -> Result<(), KeysError> {
    let first = key(Algorithm::ES256, "same");
    let second = key(Algorithm::ES256, "same");
    let (set, _) = set(vec![first.public_jwk(), second.public_jwk()])?;
    let token = first.mint("at+jwt", &json!({})).unwrap_or_default();
    let (signing_input, signature) = token.rsplit_once('.').unwrap_or_default();
    let mut candidates = set
        .candidates(Some("same"), Algorithm::ES256)
        .map_err(|_| KeysError::NoUsableKeys)?;
    assert!(candidates.any(|k| k.verify(signing_input.as_bytes(), signature, Algorithm::ES256)));
    Ok(())
}

#[test]
fn candidates_follow_kid_then_type() -> Result<(), KeysError> {
    let (set, _) = set(vec![
        key(Algorithm::RS256, "r").public_jwk(),
        key(Algorithm::ES256, "e").public_jwk(),
    ])?;
    let reason = |kid, alg| set.candidates(kid, alg).err().map(|r| r.reason);
    assert_eq!(reason(Some("r"), Algorithm::RS256), None);
    assert_eq!(
        reason(Some("r"), Algorithm::ES256),
        Some(Reason::BadSignature)
    );
    assert_eq!(
        reason(Some("missing"), Algorithm::RS256),
        Some(Reason::UnknownKey)
    );
    assert_eq!(reason(None, Algorithm::EdDSA), Some(Reason::UnknownKey));
    assert_eq!(
        set.candidates(None, Algorithm::RS256)
            .map(Iterator::count)
            .ok(),
        Some(1)
    );
    Ok(())
}

#[test]
fn keys_are_parsed_once_and_verify_without_jsonwebtoken() {
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let signer = key(alg, "k");
        let mut jwk = signer.public_jwk();
        // Without a pinned alg, an RSA key is parsed for every RSA algorithm.
        jwk.as_object_mut().map(|j| j.remove("alg"));
        let verifying = VerifyingKey::from_jwk(jwk).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(
            verifying.parsed.iter().any(|(parsed, _)| *parsed == alg),
            "{alg:?} was not parsed"
        );
        let token = signer
            .sign_compact(&json!({"alg": format!("{alg:?}")}), &json!({"a": 1}))
            .unwrap_or_default();
        let (input, signature) = token.rsplit_once('.').unwrap_or_default();
        assert!(
            verifying.verify(input.as_bytes(), signature, alg),
            "{alg:?}"
        );
        assert!(!verifying.verify(b"other input", signature, alg), "{alg:?}");
        let mut bad = signature.to_owned();
        bad.replace_range(0..2, if bad.starts_with("AA") { "BB" } else { "AA" });
        assert!(!verifying.verify(input.as_bytes(), &bad, alg), "{alg:?}");
        assert!(
            !verifying.verify(input.as_bytes(), "!!not base64!!", alg),
            "{alg:?}"
        );
    }
    let rsa = VerifyingKey::from_jwk(key(Algorithm::RS256, "r").public_jwk())
        .unwrap_or_else(|e| unreachable!("{e}"));
    // The JWK's own alg pins it: only RS256 is parsed.
    assert_eq!(rsa.parsed.len(), 1);
}
