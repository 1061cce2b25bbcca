//! Proofs made here with ES256, EdDSA and RS256 keys, against every check of RFC 9449
//! section 4.3 and the certificate binding of RFC 8705.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::dpop::{self, ProofClaims, make_proof, proof_jwk, thumbprint};
use super::*;
use crate::token::sign::SigningKey;

const NOW: i64 = 1_700_000_000;
const TOKEN: &str = "eyJ.the.token";
const URI: &str = "https://api.example.com/orders";

fn key(alg: Algorithm) -> SigningKey {
    SigningKey::generate(alg, "k").unwrap_or_else(|e| unreachable!("{e}"))
}

fn jkt(key: &SigningKey) -> String {
    thumbprint(&proof_jwk(key)).unwrap_or_default()
}

fn bound_token(cnf: Value) -> AccessToken {
    let mut other_claims = Map::new();
    other_claims.insert("cnf".into(), cnf);
    AccessToken {
        iss: "https://issuer.test/".into(),
        sub: Some("alice".into()),
        aud: vec!["api".into()],
        exp: NOW + 600,
        iat: Some(NOW),
        nbf: None,
        jti: None,
        scopes: vec![],
        client_id: None,
        username: None,
        sid: None,
        other_claims,
    }
}

fn proof(key: &SigningKey, method: &str, uri: &str, at: i64) -> String {
    let claims = ProofClaims {
        method,
        uri,
        access_token: Some(TOKEN),
        nonce: None,
    };
    make_proof(key, &claims, at).unwrap_or_else(|e| unreachable!("{e}"))
}

fn presented<'a>(proof: Option<&'a str>, method: &'a str, uri: &'a str) -> Presentation<'a> {
    Presentation {
        dpop_proof: proof,
        http_method: Some(method),
        http_uri: Some(uri),
        ..Presentation::default()
    }
}

fn check(
    binder: &Binder,
    token: &AccessToken,
    presentation: &Presentation<'_>,
) -> Result<(), Reason> {
    binder
        .check(
            token,
            has_confirmation(token),
            &TokenHash::of(TOKEN),
            presentation,
            NOW,
        )
        .map_err(|rejection| rejection.reason)
}

/// A proof signed over the given header and claims, for hostile shapes.
fn forged(key: &SigningKey, header: Value, claims: Value) -> String {
    key.sign_compact(&header, &claims)
        .unwrap_or_else(|e| unreachable!("{e}"))
}

fn good_claims() -> Value {
    json!({
        "jti": "j-1",
        "htm": "GET",
        "htu": URI,
        "iat": NOW,
        "ath": URL_SAFE_NO_PAD.encode(Sha256::digest(TOKEN.as_bytes())),
    })
}

#[test]
fn a_valid_proof_passes_for_each_key_type_and_only_once() {
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
        let binder = Binder::new(dpop::Settings::default());
        let key = key(alg);
        let token = bound_token(json!({ "jkt": jkt(&key) }));
        let proof = proof(&key, "GET", URI, NOW);
        assert_eq!(
            check(&binder, &token, &presented(Some(&proof), "GET", URI)),
            Ok(()),
            "{alg:?}"
        );
        assert_eq!(
            check(&binder, &token, &presented(Some(&proof), "GET", URI)),
            Err(Reason::DpopProofInvalid),
            "{alg:?}: a replayed jti must fail"
        );
    }
}

#[test]
fn method_uri_and_time_must_match_the_request() {
    let binder = Binder::new(dpop::Settings::default());
    let key = key(Algorithm::ES256);
    let token = bound_token(json!({ "jkt": jkt(&key) }));
    let cases = [
        (
            proof(&key, "POST", URI, NOW),
            "GET",
            URI,
            Err(Reason::DpopProofInvalid),
        ),
        (
            proof(&key, "GET", "https://api.example.com/other", NOW),
            "GET",
            URI,
            Err(Reason::DpopProofInvalid),
        ),
        (
            proof(&key, "GET", "https://evil.example.com/orders", NOW),
            "GET",
            URI,
            Err(Reason::DpopProofInvalid),
        ),
        // Query and fragment do not matter; scheme and host case and the default port do not either.
        (
            proof(&key, "GET", "https://API.Example.com:443/orders#x", NOW),
            "GET",
            "https://api.example.com/orders?id=7",
            Ok(()),
        ),
        (
            proof(&key, "GET", URI, NOW - 61),
            "GET",
            URI,
            Err(Reason::DpopProofInvalid),
        ),
        (
            proof(&key, "GET", URI, NOW + 6),
            "GET",
            URI,
            Err(Reason::DpopProofInvalid),
        ),
        // Percent-encoding normalised (RFC 3986 section 6.2.2.2): an unreserved
        // character decoded, hex digits in either case.
        (
            proof(
                &key,
                "GET",
                "https://api.example.com/%6Frders/%7eme%2f",
                NOW,
            ),
            "GET",
            "https://api.example.com/orders/~me%2F",
            Ok(()),
        ),
        (proof(&key, "GET", URI, NOW - 59), "GET", URI, Ok(())),
        (proof(&key, "GET", URI, NOW + 4), "GET", URI, Ok(())),
    ];
    for (i, (proof, method, uri, expected)) in cases.into_iter().enumerate() {
        assert_eq!(
            check(&binder, &token, &presented(Some(&proof), method, uri)),
            expected,
            "case {i}"
        );
    }
}

/// What cannot be checked does not pass: a request without a method or URI, a proof
/// whose `htu` carries userinfo, a proof with a `crit` header (RFC 7515 section
/// 4.1.11); a fractional `iat` is a NumericDate like any other (RFC 7519).
#[test]
fn what_cannot_be_checked_refuses_the_proof() {
    let binder = Binder::new(dpop::Settings::default());
    let key = key(Algorithm::ES256);
    let token = bound_token(json!({ "jkt": jkt(&key) }));
    let header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": proof_jwk(&key) });
    let with = |name: &str, value: Value| {
        let mut claims = good_claims();
        claims[name] = value;
        claims
    };
    let empty_method = forged(&key, header.clone(), with("htm", json!("")));
    let no_method = Presentation {
        http_method: None,
        ..presented(Some(&empty_method), "", URI)
    };
    assert_eq!(
        check(&binder, &token, &no_method),
        Err(Reason::DpopProofInvalid)
    );
    let any = forged(&key, header.clone(), with("jti", json!("j-2")));
    let no_uri = Presentation {
        http_uri: None,
        ..presented(Some(&any), "GET", URI)
    };
    assert_eq!(
        check(&binder, &token, &no_uri),
        Err(Reason::DpopProofInvalid)
    );
    let userinfo = forged(
        &key,
        header.clone(),
        with("htu", json!("https://user:pw@api.example.com/orders")),
    );
    assert_eq!(
        check(&binder, &token, &presented(Some(&userinfo), "GET", URI)),
        Err(Reason::DpopProofInvalid),
        "userinfo in htu"
    );
    let mut critical = header.clone();
    critical["crit"] = json!(["foo"]);
    critical["foo"] = json!(1);
    let critical = forged(&key, critical, with("jti", json!("j-3")));
    assert_eq!(
        check(&binder, &token, &presented(Some(&critical), "GET", URI)),
        Err(Reason::DpopProofInvalid),
        "crit"
    );
    let fractional = forged(&key, header.clone(), with("iat", json!(NOW as f64 + 0.5)));
    assert_eq!(
        check(&binder, &token, &presented(Some(&fractional), "GET", URI)),
        Ok(()),
        "a fractional iat"
    );
    // `typ` is a media type: any case, `application/` or not (RFC 7515 section 4.1.9).
    for (n, typ) in ["application/dpop+jwt", "DPoP+JWT", "dpop", "jwt"]
        .iter()
        .enumerate()
    {
        let mut typed = header.clone();
        typed["typ"] = json!(typ);
        let proof = forged(&key, typed, with("jti", json!(format!("typ-{n}"))));
        let wanted = if typ.contains('+') {
            Ok(())
        } else {
            Err(Reason::DpopProofInvalid)
        };
        assert_eq!(
            check(&binder, &token, &presented(Some(&proof), "GET", URI)),
            wanted,
            "typ {typ}"
        );
    }
}

#[test]
fn the_proof_must_be_made_with_the_bound_key_for_this_token() {
    let binder = Binder::new(dpop::Settings::default());
    let key = key(Algorithm::ES256);
    let token = bound_token(json!({ "jkt": jkt(&key) }));
    let other = self::key(Algorithm::ES256);
    let by_other = proof(&other, "GET", URI, NOW);
    assert_eq!(
        check(&binder, &token, &presented(Some(&by_other), "GET", URI)),
        Err(Reason::DpopProofInvalid)
    );

    let header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": proof_jwk(&key) });
    let mut wrong_ath = good_claims();
    wrong_ath["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(b"another token")));
    let proof = forged(&key, header.clone(), wrong_ath);
    assert_eq!(
        check(&binder, &token, &presented(Some(&proof), "GET", URI)),
        Err(Reason::DpopProofInvalid)
    );

    let mut no_ath = good_claims();
    no_ath.as_object_mut().map(|c| c.remove("ath"));
    let proof = forged(&key, header, no_ath);
    assert_eq!(
        check(&binder, &token, &presented(Some(&proof), "GET", URI)),
        Err(Reason::DpopProofInvalid)
    );
}

#[test]
fn hostile_headers_are_refused() {
    let binder = Binder::new(dpop::Settings::default());
    let key = key(Algorithm::ES256);
    let token = bound_token(json!({ "jkt": jkt(&key) }));
    let jwk = proof_jwk(&key);
    let mut private_jwk = jwk.clone();
    private_jwk.insert("d".into(), json!("AAAA"));
    let hs_key =
        SigningKey::generate(Algorithm::HS256, "h").unwrap_or_else(|e| unreachable!("{e}"));
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({ "typ": "dpop+jwt", "alg": "none", "jwk": jwk }).to_string()),
        URL_SAFE_NO_PAD.encode(good_claims().to_string())
    );
    let cases = [
        (
            "a private key in jwk",
            forged(
                &key,
                json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": private_jwk }),
                good_claims(),
            ),
        ),
        (
            "typ JWT",
            forged(
                &key,
                json!({ "typ": "JWT", "alg": "ES256", "jwk": jwk }),
                good_claims(),
            ),
        ),
        (
            "no jwk",
            forged(
                &key,
                json!({ "typ": "dpop+jwt", "alg": "ES256" }),
                good_claims(),
            ),
        ),
        (
            "HS256",
            forged(
                &hs_key,
                json!({ "typ": "dpop+jwt", "alg": "HS256", "jwk": jwk }),
                good_claims(),
            ),
        ),
        ("alg none", unsigned),
        (
            "alg not fitting the key",
            forged(
                &key,
                json!({ "typ": "dpop+jwt", "alg": "ES384", "jwk": jwk }),
                good_claims(),
            ),
        ),
        ("not a JWS", "abc".to_owned()),
    ];
    for (what, proof) in cases {
        assert_eq!(
            check(&binder, &token, &presented(Some(&proof), "GET", URI)),
            Err(Reason::DpopProofInvalid),
            "{what}"
        );
    }
    // The same claims with a correct header pass: the refusals above are the header's.
    let good = forged(
        &key,
        json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": jwk }),
        good_claims(),
    );
    assert_eq!(
        check(&binder, &token, &presented(Some(&good), "GET", URI)),
        Ok(())
    );
}

/// RFC 7800 names other confirmation methods (`jwk`, `kid`, `jku`, `jwe`) than the two
/// checked here: a token bound by one is still bound, so it never passes as a bearer
/// token. An empty `cnf` binds nothing.
#[test]
fn tokens_bound_by_a_method_that_cannot_be_checked_never_pass() {
    let binder = Binder::new(dpop::Settings::default());
    let key = key(Algorithm::ES256);
    for cnf in [
        json!({ "jwk": proof_jwk(&key) }),
        json!({ "kid": "k1" }),
        json!({ "jku": "https://issuer.example/keys" }),
        json!({ "x5t": "c2hhMQ" }),
        json!({ "JKT": jkt(&key) }),
        json!({ "jkt": jkt(&key), "jwk": proof_jwk(&key) }),
    ] {
        assert_eq!(
            check(&binder, &bound_token(cnf.clone()), &Presentation::default()),
            Err(Reason::WrongTokenType),
            "{cnf}"
        );
    }
    assert_eq!(
        check(&binder, &bound_token(json!({})), &Presentation::default()),
        Ok(())
    );
}

#[test]
fn bound_tokens_need_a_proof_and_unbound_ones_the_bearer_scheme() {
    let binder = Binder::new(dpop::Settings::default());
    let key = key(Algorithm::ES256);
    let bound = bound_token(json!({ "jkt": jkt(&key) }));
    assert_eq!(
        check(&binder, &bound, &Presentation::default()),
        Err(Reason::DpopProofRequired)
    );
    let mut unbound = bound_token(json!({}));
    unbound.other_claims.clear();
    assert_eq!(check(&binder, &unbound, &Presentation::default()), Ok(()));
    let dpop_scheme = Presentation {
        scheme: Scheme::Dpop,
        ..Presentation::default()
    };
    assert_eq!(
        check(&binder, &unbound, &dpop_scheme),
        Err(Reason::WrongTokenType)
    );
    let unreadable = bound_token(json!({ "jkt": 7 }));
    assert_eq!(
        check(&binder, &unreadable, &Presentation::default()),
        Err(Reason::Malformed)
    );
}

#[test]
fn the_nonce_flow() {
    let settings = dpop::Settings {
        require_nonce: true,
        nonce_secret: Some(vec![7; 32]),
        ..dpop::Settings::default()
    };
    let binder = Binder::new(settings.clone());
    let key = key(Algorithm::ES256);
    let token = bound_token(json!({ "jkt": jkt(&key) }));
    let without = proof(&key, "GET", URI, NOW);
    assert_eq!(
        check(&binder, &token, &presented(Some(&without), "GET", URI)),
        Err(Reason::DpopNonceRequired)
    );
    let nonce = binder.dpop().nonce(NOW);
    let with = |nonce: &str| {
        let claims = ProofClaims {
            method: "GET",
            uri: URI,
            access_token: Some(TOKEN),
            nonce: Some(nonce),
        };
        make_proof(&key, &claims, NOW).unwrap_or_else(|e| unreachable!("{e}"))
    };
    assert_eq!(
        check(&binder, &token, &presented(Some(&with(&nonce)), "GET", URI)),
        Ok(())
    );
    assert_eq!(
        check(
            &binder,
            &token,
            &presented(Some(&with("made-up")), "GET", URI)
        ),
        Err(Reason::DpopNonceRequired)
    );
    // Another replica with the same secret accepts it; a nonce two periods old is refused.
    let replica = Binder::new(settings.clone());
    assert_eq!(
        check(
            &replica,
            &token,
            &presented(Some(&with(&nonce)), "GET", URI)
        ),
        Ok(())
    );
    let stale = binder.dpop().nonce(NOW - 2 * settings.nonce_period_secs);
    assert_eq!(
        check(&binder, &token, &presented(Some(&with(&stale)), "GET", URI)),
        Err(Reason::DpopNonceRequired)
    );
}

#[test]
fn certificate_bound_tokens_need_that_certificate() {
    let binder = Binder::new(dpop::Settings::default());
    let der = b"\x30\x82\x01\x00 not really DER, but hashed all the same";
    let x5t = URL_SAFE_NO_PAD.encode(Sha256::digest(der));
    let token = bound_token(json!({ "x5t#S256": x5t }));
    let with = |certificate: Option<[u8; 32]>| Presentation {
        client_certificate: certificate,
        ..Presentation::default()
    };
    assert_eq!(
        check(&binder, &token, &with(certificate_thumbprint(der))),
        Ok(())
    );
    assert_eq!(
        check(
            &binder,
            &token,
            &with(certificate_thumbprint(x5t.as_bytes()))
        ),
        Ok(())
    );
    assert_eq!(
        check(
            &binder,
            &token,
            &with(certificate_thumbprint(
                b"\x30\x82\x01\x00 another certificate"
            ))
        ),
        Err(Reason::CertificateMismatch)
    );
    assert_eq!(
        check(&binder, &token, &with(None)),
        Err(Reason::CertificateMismatch)
    );
}

#[test]
fn certificates_from_gateway_headers() {
    // A DER SEQUENCE's first bytes, and a certificate's length.
    let der = [&[0x30u8, 0x82, 0x01, 0x00][..], &[0xa5; 120]].concat();
    let der = der.as_slice();
    let sha: [u8; 32] = Sha256::digest(der).into();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
    let escaped = pem
        .replace('\n', "%0A")
        .replace(' ', "%20")
        .replace('=', "%3D");
    assert_eq!(
        certificate_from_header(&format!(
            "By=spiffe://a;Hash={};Subject=\"\"",
            hex::encode(sha)
        )),
        Some(sha)
    );
    assert_eq!(
        certificate_from_header(&format!("By=spiffe://a;Cert=\"{escaped}\"")),
        Some(sha)
    );
    // A subject with commas, inside its quotes, is one value.
    assert_eq!(
        certificate_from_header(&format!(
            "Hash={};Subject=\"CN=client,OU=Payments,O=Example Corp,C=US\"",
            hex::encode(sha)
        )),
        Some(sha)
    );
    // What the client's own certificate says (its subject, its URI SAN) never adds a
    // pair: the Hash is the one Envoy wrote.
    let victim = hex::encode([7u8; 32]);
    assert_eq!(
        certificate_from_header(&format!(
            "By=spiffe://gw;Hash={};Subject=\"CN=client,description=x\\;Hash={victim}\";URI=\"https://c.example/;Hash={victim}\"",
            hex::encode(sha)
        )),
        Some(sha)
    );
    // Unquoted, it would be a second Hash: refused, as are two elements (whose client
    // is this request's?).
    assert_eq!(
        certificate_from_header(&format!(
            "Hash={};URI=https://c.example/;Hash={victim}",
            hex::encode(sha)
        )),
        None
    );
    assert_eq!(
        certificate_from_header(&format!("Hash={victim},Hash={}", hex::encode(sha))),
        None
    );
    assert_eq!(certificate_from_header(&escaped), Some(sha));
    assert_eq!(certificate_from_header(&b64), Some(sha));
    // Traefik passes a chain as its certificates, leaf first, joined with commas.
    assert_eq!(
        certificate_from_header(&format!("{b64}%2C{}", URL_SAFE_NO_PAD.encode(b"ca"))),
        Some(sha)
    );
    assert_eq!(certificate_thumbprint(pem.as_bytes()), Some(sha));
    assert_eq!(certificate_from_header("%zz"), None);
    // Every surface reads the same texts: the thumbprint as the tools print it, base64
    // DER, PEM after a byte-order mark or `openssl pkcs12`'s `Bag Attributes`.
    let colons = sha
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    for text in [
        hex::encode(sha),
        format!("sha256 Fingerprint={colons}"),
        URL_SAFE_NO_PAD.encode(sha),
        b64.clone(),
        format!("\u{feff}{pem}"),
        format!("Bag Attributes\n    localKeyID: 01\nsubject=/CN=client\n{pem}"),
    ] {
        assert_eq!(
            certificate_thumbprint(text.as_bytes()),
            Some(sha),
            "{text:?}"
        );
        assert_eq!(certificate_from_header(&text), Some(sha), "header {text:?}");
    }
}

#[test]
fn thumbprint_matches_rfc_7638_example() {
    // RFC 7638 section 3.1.
    let jwk = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    let jwk = jwk.as_object().cloned().unwrap_or_default();
    assert_eq!(
        thumbprint(&jwk).as_deref(),
        Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
    );
}
