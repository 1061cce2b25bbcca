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

fn set(keys: Vec<serde_json::Value>) -> Result<(KeySet, Vec<String>), KeysError> {
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
    // The encryption key is not a signing key that failed: it is left out unnamed.
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .any(|why| why == "kid \"weak\": RSA key shorter than 2048 bits"),
        "{skipped:?}"
    );
    assert!(set.contains_kid("good"));
    assert!(
        !set.contains_kid("oct"),
        "a symmetric key from a JWKS must never be used"
    );
    Ok(())
}

/// An EC point whose coordinate lost its leading zero byte (31 bytes for P-256) is not
/// a key: taken, it would fail every signature with nothing said.
#[test]
fn a_point_of_the_wrong_length_is_skipped() -> Result<(), KeysError> {
    let good = key(Algorithm::ES256, "good").public_jwk();
    let mut short = key(Algorithm::ES256, "short").public_jwk();
    let x = URL_SAFE_NO_PAD
        .decode(short["x"].as_str().unwrap_or_default())
        .unwrap_or_default();
    short["x"] = json!(URL_SAFE_NO_PAD.encode(&x[1..]));
    let (set_of_both, skipped) = set(vec![good, short.clone()])?;
    assert_eq!(set_of_both.len(), 1);
    assert_eq!(skipped, vec!["kid \"short\": key material does not parse"]);
    // Alone, it leaves the issuer without keys: the error (in the log while the issuer
    // keeps the replica not ready) names it.
    let alone = set(vec![short])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        alone.contains("kid \"short\": key material does not parse"),
        "{alone}"
    );
    Ok(())
}

#[test]
fn a_set_with_no_usable_key_is_an_error() {
    let mut encryption = key(Algorithm::ES256, "enc").public_jwk();
    encryption["use"] = json!("enc");
    assert!(matches!(
        set(vec![encryption]),
        Err(KeysError::NoUsableKeys(_))
    ));
    assert!(matches!(
        KeySet::from_jwks(b"{\"nope\": 1}"),
        Err(KeysError::Parse(_))
    ));
}

/// RFC 7517 section 4.5: keys may share a `kid` when their types differ. Each is found
/// by the token's `alg`; two keys of one type under one `kid` are both tried.
#[test]
fn keys_sharing_a_kid_are_told_apart_by_alg() -> Result<(), KeysError> {
    let rsa = key(Algorithm::RS256, "k1");
    let ec = key(Algorithm::ES256, "k1");
    let ec_again = key(Algorithm::ES256, "k1");
    let (set, skipped) = set(vec![
        rsa.public_jwk(),
        ec.public_jwk(),
        ec_again.public_jwk(),
    ])?;
    assert_eq!((set.len(), skipped.len()), (3, 0));
    for (signer, alg) in [
        (&rsa, Algorithm::RS256),
        (&ec, Algorithm::ES256),
        (&ec_again, Algorithm::ES256),
    ] {
        let token = signer.mint("at+jwt", &json!({})).unwrap_or_default();
        let (signing_input, signature) = token.rsplit_once('.').unwrap_or_default();
        let mut candidates = set
            .candidates(Some("k1"), alg)
            .map_err(|_| KeysError::NoUsableKeys(Vec::new()))?;
        assert!(
            candidates.any(|k| k.verify(signing_input.as_bytes(), signature, alg)),
            "{alg:?}"
        );
    }
    assert_eq!(
        set.candidates(Some("k1"), Algorithm::EdDSA)
            .err()
            .map(|r| r.reason),
        Some(Reason::BadSignature),
        "no key under k1 takes EdDSA"
    );
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
