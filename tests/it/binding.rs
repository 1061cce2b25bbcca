//! Sender-constrained tokens on every surface: Introspect over gRPC, the RFC 7662
//! endpoint, Envoy's ext_authz and forward-auth; signed answers (RFC 9701) verified
//! with jsonwebtoken against the served JWKS.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, attribute_context, authorization_client::AuthorizationClient,
};
use introspectd::binding::dpop::{self, ProofClaims};
use introspectd::config::{AnswerSigningSection, FileConfig};
use introspectd::grpc::pb;
use introspectd::token::sign::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::{Value, json};

use crate::gateways::{ISS, outcome, with_raw_headers};
use crate::support::*;

const URI: &str = "https://api.example.com/orders";

fn jkt(key: &SigningKey) -> String {
    dpop::thumbprint(&dpop::proof_jwk(key)).unwrap_or_default()
}

fn proof(key: &SigningKey, method: &str, uri: &str, token: &str, nonce: Option<&str>) -> String {
    let claims = ProofClaims {
        method,
        uri,
        access_token: Some(token),
        nonce,
    };
    dpop::make_proof(key, &claims, now()).unwrap_or_else(|e| unreachable!("{e}"))
}

fn bound(signer: &SigningKey, cnf: Value) -> String {
    let mut claims = claims(ISS);
    claims["cnf"] = cnf;
    mint(signer, &claims)
}

fn request(token: &str) -> pb::IntrospectRequest {
    pb::IntrospectRequest {
        token: token.to_owned(),
        ..Default::default()
    }
}

fn with_proof(token: &str, proof: &str) -> pb::IntrospectRequest {
    pb::IntrospectRequest {
        dpop_proof: Some(proof.to_owned()),
        http_method: Some("GET".into()),
        http_uri: Some(format!("{URI}?page=2")),
        ..request(token)
    }
}

fn config(signer: &SigningKey) -> FileConfig {
    file_config(vec![inline_issuer(ISS, signer)])
}

#[tokio::test]
async fn dpop_bound_tokens_need_a_fresh_proof_on_every_call() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(config(&signer)).await;
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
        let client_key = key(alg, "client");
        let token = bound(&signer, json!({ "jkt": jkt(&client_key) }));

        let bare = server.introspect(&token).await;
        assert!(!bare.active, "{alg:?}: a DPoP-bound token without a proof");
        assert_eq!(reason(&bare), pb::InactiveReason::DpopProofRequired);

        let first = proof(&client_key, "GET", URI, &token, None);
        let answer = server.introspect_with(with_proof(&token, &first)).await;
        assert!(answer.active, "{alg:?}: {answer:?}");
        assert_eq!(answer.token_type.as_deref(), Some("DPoP"));

        // The verification is cached now; the proof is still checked.
        let replayed = server.introspect_with(with_proof(&token, &first)).await;
        assert_eq!(
            reason(&replayed),
            pb::InactiveReason::DpopProofInvalid,
            "{alg:?}: replay"
        );
        let other_key = key(Algorithm::ES256, "thief");
        let stolen = proof(&other_key, "GET", URI, &token, None);
        let answer = server.introspect_with(with_proof(&token, &stolen)).await;
        assert_eq!(
            reason(&answer),
            pb::InactiveReason::DpopProofInvalid,
            "{alg:?}: another key"
        );
        let second = proof(&client_key, "GET", URI, &token, None);
        assert!(
            server
                .introspect_with(with_proof(&token, &second))
                .await
                .active
        );
    }
    assert!(
        server
            .metric("introspectd_cache_lookups_total{result=\"hit\"}")
            .await
            >= 1.0
    );
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn certificate_bound_tokens_need_their_certificate() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(config(&signer)).await;
    let pki = crate::tls::Pki::new("client CA");
    let mine = pki.leaf(&[], &[crate::tls::GATEWAY_SPIFFE_ID]);
    let theirs = pki.leaf(&[], &[crate::tls::GATEWAY_SPIFFE_ID]);
    let x5t = introspectd::binding::certificate_thumbprint(&mine.der)
        .map(|sha| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sha))
        .unwrap_or_default();
    let token = bound(&signer, json!({ "x5t#S256": x5t }));
    let with_cert = |der: Vec<u8>| pb::IntrospectRequest {
        client_certificate: Some(der),
        ..request(&token)
    };
    assert!(
        server
            .introspect_with(with_cert(mine.der.clone()))
            .await
            .active
    );
    assert!(
        server
            .introspect_with(with_cert(x5t.clone().into_bytes()))
            .await
            .active
    );
    // The thumbprint as other tools print it: hex (Envoy's `Hash=`), with colons
    // (`openssl x509 -fingerprint -sha256`), base64 with padding.
    let sha = introspectd::binding::certificate_thumbprint(&mine.der).unwrap_or_default();
    let hex = hex::encode(sha);
    let colons = sha
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let padded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sha);
    for text in [hex, colons, padded] {
        let answer = server
            .introspect_with(with_cert(text.clone().into_bytes()))
            .await;
        assert!(answer.active, "{text}: {answer:?}");
    }
    let other = server.introspect_with(with_cert(theirs.der.clone())).await;
    assert_eq!(reason(&other), pb::InactiveReason::CertificateMismatch);
    assert_eq!(
        reason(&server.introspect(&token).await),
        pb::InactiveReason::CertificateMismatch
    );
    // Text that is no thumbprint is a caller's mistake to hear about, not a certificate
    // to hash: it would only ever mismatch.
    for garbage in [
        b"short".to_vec(),
        format!("{x5t}x").into_bytes(),
        b"\x01\x02".to_vec(),
        vec![0xff, 0x00],
    ] {
        let refused = server
            .client()
            .await
            .introspect(with_cert(garbage.clone()))
            .await;
        assert_eq!(
            refused.map(|_| ()).map_err(|status| status.code()),
            Err(tonic::Code::InvalidArgument),
            "{garbage:?}"
        );
    }
    server.stop().await?;
    Ok(())
}

/// `POST /oauth2/introspect` takes the same inputs as form fields: `dpop_proof`,
/// `http_method`, `http_uri`, and `client_certificate` as PEM or its `x5t#S256`.
#[tokio::test]
async fn the_http_form_carries_proofs_and_certificates() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(config(&signer)).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/oauth2/introspect", server.http_addr);
    let ask = |form: Vec<(&'static str, String)>| {
        let request = http.post(&url).form(&form);
        async move {
            let answer = request.send().await?;
            let status = answer.status().as_u16();
            let body: Value = answer.json().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
    };

    let client_key = key(Algorithm::ES256, "client");
    let token = bound(&signer, json!({ "jkt": jkt(&client_key) }));
    let (_, bare) = ask(vec![("token", token.clone())]).await?;
    assert_eq!(bare["active"], json!(false), "no proof: {bare}");
    let fresh = proof(&client_key, "GET", URI, &token, None);
    let with_proof = |proof: &str| {
        vec![
            ("token", token.clone()),
            ("dpop_proof", proof.to_owned()),
            ("http_method", "GET".to_owned()),
            ("http_uri", format!("{URI}?page=2")),
        ]
    };
    let (_, answer) = ask(with_proof(&fresh)).await?;
    assert_eq!(answer["active"], json!(true), "{answer}");
    assert_eq!(answer["token_type"], json!("DPoP"));
    let (_, replay) = ask(with_proof(&fresh)).await?;
    assert_eq!(replay["active"], json!(false), "a replayed proof: {replay}");

    let pki = crate::tls::Pki::new("client CA");
    let mine = pki.leaf(&[], &[crate::tls::GATEWAY_SPIFFE_ID]);
    let theirs = pki.leaf(&[], &[crate::tls::GATEWAY_SPIFFE_ID]);
    let x5t = introspectd::binding::certificate_thumbprint(&mine.der)
        .map(|sha| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sha))
        .unwrap_or_default();
    let token = bound(&signer, json!({ "x5t#S256": x5t }));
    let with_cert = |certificate: String| {
        vec![
            ("token", token.clone()),
            ("client_certificate", certificate),
        ]
    };
    for (what, certificate, active) in [
        ("PEM", mine.cert_pem.clone(), true),
        ("x5t#S256", x5t.clone(), true),
        ("another certificate", theirs.cert_pem.clone(), false),
    ] {
        let (status, answer) = ask(with_cert(certificate)).await?;
        assert_eq!(status, 200, "{what}");
        assert_eq!(answer["active"], json!(active), "{what}: {answer}");
    }
    let (status, _) = ask(with_cert("neither".into())).await?;
    assert_eq!(status, 400, "neither PEM nor a thumbprint");
    server.stop().await?;
    Ok(())
}

fn envoy_check(headers: &[(&str, &str)], certificate: Option<&str>) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: certificate.map(|pem| attribute_context::Peer {
                certificate: pem.to_owned(),
                ..Default::default()
            }),
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".into(),
                    scheme: "https".into(),
                    host: "api.example.com".into(),
                    path: "/orders?page=2".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect::<HashMap<_, _>>(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Envoy's HTTP ext_authz: the proof is checked against the client's request as Envoy
/// passes it on, its method and path in the request line (after `/authz`), its host in
/// `Host` and its scheme in `x-forwarded-proto`.
#[tokio::test]
async fn envoy_http_ext_authz_checks_a_proof_against_the_clients_request_line() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(config(&signer)).await;
    let http = reqwest::Client::new();
    let client_key = key(Algorithm::ES256, "client");
    let token = bound(&signer, json!({ "jkt": jkt(&client_key) }));
    let ask = |method: reqwest::Method, host: &str, proof: &str| {
        http.request(
            method,
            format!("http://{}/authz/orders?page=2", server.http_addr),
        )
        .header("host", host)
        .header("x-forwarded-proto", "https")
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
    };
    let host = "api.example.com";
    let fresh = || proof(&client_key, "GET", URI, &token, None);
    assert_eq!(
        ask(reqwest::Method::GET, host, &fresh())
            .send()
            .await?
            .status(),
        200
    );
    for (method, host, why) in [
        (reqwest::Method::POST, host, "another method"),
        (reqwest::Method::GET, "other.example", "another host"),
    ] {
        let refused = ask(method, host, &fresh()).send().await?;
        assert_eq!(refused.status(), 401, "{why}");
        let challenge = refused
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            challenge.contains("error=\"invalid_dpop_proof\""),
            "{why}: {challenge}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn gateways_check_proofs_and_run_the_nonce_flow() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let mut file = config(&signer);
    file.dpop.require_nonce = true;
    file.gateway.client_certificate_header = Some("X-SSL-Client-Cert".into());
    let server = Introspectd::start_ready(file).await;
    let mut envoy = AuthorizationClient::new(server.channel().await);
    let client_key = key(Algorithm::ES256, "client");
    let token = bound(&signer, json!({ "jkt": jkt(&client_key) }));
    let authorization = format!("DPoP {token}");

    // ext_authz: no nonce yet, so the answer asks for one.
    let first = proof(&client_key, "GET", URI, &token, None);
    let response = envoy
        .check(envoy_check(
            &[("authorization", &authorization), ("dpop", &first)],
            None,
        ))
        .await?
        .into_inner();
    let (status, headers, _) = outcome(&response);
    assert_eq!(status, 401);
    assert!(
        headers["www-authenticate"].starts_with("DPoP "),
        "{headers:?}"
    );
    assert!(headers["www-authenticate"].contains("error=\"use_dpop_nonce\""));
    let nonce = headers["dpop-nonce"].clone();

    let with_nonce = proof(&client_key, "GET", URI, &token, Some(&nonce));
    let response = envoy
        .check(envoy_check(
            &[("authorization", &authorization), ("dpop", &with_nonce)],
            None,
        ))
        .await?
        .into_inner();
    assert_eq!(outcome(&response).0, 200, "{response:?}");
    // The same from Envoy with `encode_raw_headers: true`, and a fresh proof.
    let raw = proof(&client_key, "GET", URI, &token, Some(&nonce));
    let headers = [
        ("authorization", authorization.as_bytes()),
        ("dpop", raw.as_bytes()),
    ];
    let response = envoy
        .check(with_raw_headers(envoy_check(&[], None), &headers))
        .await?
        .into_inner();
    assert_eq!(outcome(&response).0, 200, "{response:?}");

    // The same token as Bearer, without a proof.
    let response = envoy
        .check(envoy_check(
            &[("authorization", &format!("Bearer {token}"))],
            None,
        ))
        .await?
        .into_inner();
    let (status, headers, _) = outcome(&response);
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"].contains("error=\"invalid_token\""));
    assert!(
        headers["www-authenticate"].contains("algs=\""),
        "{headers:?}"
    );

    // A proof for another request.
    let elsewhere = proof(&client_key, "DELETE", URI, &token, Some(&nonce));
    let response = envoy
        .check(envoy_check(
            &[("authorization", &authorization), ("dpop", &elsewhere)],
            None,
        ))
        .await?
        .into_inner();
    let (status, headers, _) = outcome(&response);
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"].contains("error=\"invalid_dpop_proof\""));

    // Certificate-bound, through Envoy's view of the client certificate.
    let pki = crate::tls::Pki::new("client CA");
    let leaf = pki.leaf(&["client.example"], &[]);
    let x5t = introspectd::binding::certificate_thumbprint(&leaf.der)
        .map(|sha| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sha))
        .unwrap_or_default();
    let cert_bound = bound(&signer, json!({ "x5t#S256": x5t }));
    let escaped = leaf.cert_pem.replace('\n', "%0A").replace(' ', "%20");
    let bearer = format!("Bearer {cert_bound}");
    let response = envoy
        .check(envoy_check(&[("authorization", &bearer)], Some(&escaped)))
        .await?
        .into_inner();
    assert_eq!(outcome(&response).0, 200);
    let response = envoy
        .check(envoy_check(&[("authorization", &bearer)], None))
        .await?
        .into_inner();
    assert_eq!(outcome(&response).0, 401);
    // Or through the gateway's header, in Envoy's `header_map`.
    let headers = [
        ("authorization", bearer.as_bytes()),
        ("x-ssl-client-cert", escaped.as_bytes()),
    ];
    let response = envoy
        .check(with_raw_headers(envoy_check(&[], None), &headers))
        .await?
        .into_inner();
    assert_eq!(outcome(&response).0, 200, "{response:?}");

    // Forward-auth: the same rules from the forwarded headers.
    let http = reqwest::Client::new();
    let authz = format!("http://{}/authz", server.http_addr);
    let forwarded_as = |authorization: &str, proof: &str| {
        http.get(&authz)
            .header("authorization", authorization)
            .header("dpop", proof)
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "api.example.com")
            .header("x-forwarded-uri", "/orders?page=2")
    };
    let forwarded = |proof: &str| forwarded_as(&authorization, proof);
    let fresh = proof(&client_key, "GET", URI, &token, None);
    let answer = forwarded(&fresh).send().await?;
    assert_eq!(answer.status(), 401);
    let nonce = answer
        .headers()
        .get("dpop-nonce")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(!nonce.is_empty());
    let good = proof(&client_key, "GET", URI, &token, Some(&nonce));
    let answer = forwarded(&good).send().await?;
    assert_eq!(answer.status(), 200);
    let replay = forwarded(&good).send().await?;
    assert_eq!(replay.status(), 401);
    assert!(
        replay.headers()["www-authenticate"]
            .to_str()?
            .contains("invalid_dpop_proof")
    );
    // RFC 9449 section 4.3: one DPoP header, no more; a second is not ignored.
    let valid = proof(&client_key, "GET", URI, &token, Some(&nonce));
    let answer = forwarded(&valid).header("dpop", "garbage").send().await?;
    assert_eq!(answer.status(), 401, "a proof and a second DPoP header");
    // Two Authorization headers are no valid token, whichever comes first (Envoy's
    // path joins them the same way).
    let valid = proof(&client_key, "GET", URI, &token, Some(&nonce));
    let answer = forwarded(&valid)
        .header("authorization", "DPoP garbage")
        .send()
        .await?;
    assert_eq!(answer.status(), 401, "two Authorization headers");
    // RFC 9449 section 7.2: a DPoP-bound token with the Bearer scheme is refused, even
    // with a valid proof beside it; on both gateway surfaces.
    let as_bearer = format!("Bearer {token}");
    let valid = proof(&client_key, "GET", URI, &token, Some(&nonce));
    let answer = forwarded_as(&as_bearer, &valid).send().await?;
    assert_eq!(
        answer.status(),
        401,
        "a DPoP-bound token as Bearer, forward-auth"
    );
    let valid = proof(&client_key, "GET", URI, &token, Some(&nonce));
    let response = envoy
        .check(envoy_check(
            &[("authorization", &as_bearer), ("dpop", &valid)],
            None,
        ))
        .await?
        .into_inner();
    assert_eq!(
        outcome(&response).0,
        401,
        "a DPoP-bound token as Bearer, ext_authz"
    );
    let by_header = http
        .get(&authz)
        .header("authorization", &bearer)
        .header("x-ssl-client-cert", &escaped)
        .send()
        .await?;
    assert_eq!(
        by_header.status(),
        200,
        "certificate from the configured header"
    );
    server.stop().await?;
    Ok(())
}

fn signing_config(
    signer: &SigningKey,
    dir: &std::path::Path,
) -> Result<FileConfig, Box<dyn std::error::Error>> {
    let answer_key = key(Algorithm::ES256, "answers");
    let key_file = dir.join("answer-signing.pem");
    std::fs::write(&key_file, introspectd::signing::pkcs8_pem(&answer_key))?;
    // The next key, published before it signs.
    let next = key(Algorithm::ES256, "next");
    let next_file = dir.join("next.jwks.json");
    std::fs::write(
        &next_file,
        introspectd::token::sign::jwks(&[&next]).to_string(),
    )?;
    let mut file = config(signer);
    file.answer_signing = Some(AnswerSigningSection {
        issuer: "https://introspectd.test".into(),
        key_file,
        algorithm: "ES256".into(),
        kid: None,
        publish_jwks_file: Some(next_file),
    });
    Ok(file)
}

#[tokio::test]
async fn signed_answers_verify_against_the_served_jwks() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let dir = tempfile::tempdir()?;
    let server = Introspectd::start_ready(signing_config(&signer, dir.path())?).await;
    let token = mint(&signer, &claims(ISS));
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.http_addr);
    let jwks: JwkSet = http
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(jwks.keys.len(), 2, "the signing key and the next one");

    let ask = |accept: Option<&str>, key: Option<&str>| {
        let mut request = http
            .post(format!("{base}/oauth2/introspect"))
            .form(&[("token", token.as_str())]);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let signed = ask(
        Some("application/token-introspection+jwt"),
        Some(READER_KEY),
    )
    .await?;
    assert_eq!(signed.status(), 200);
    assert_eq!(
        signed.headers()["content-type"],
        "application/token-introspection+jwt"
    );
    let jwt = signed.text().await?;
    let header = jsonwebtoken::decode_header(&jwt)?;
    assert_eq!(header.typ.as_deref(), Some("token-introspection+jwt"));
    let kid = header.kid.clone().unwrap_or_default();
    let jwk = jwks
        .find(&kid)
        .ok_or("the signing kid is not in the served JWKS")?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["test-reader"]);
    validation.set_issuer(&["https://introspectd.test"]);
    validation.set_required_spec_claims(&["iss", "aud", "iat"]);
    validation.validate_exp = false;
    let verified = jsonwebtoken::decode::<Value>(&jwt, &DecodingKey::from_jwk(jwk)?, &validation)?;
    let answer = &verified.claims["token_introspection"];
    assert_eq!(answer["active"], json!(true));
    assert_eq!(answer["sub"], json!("user-1"));

    // Without the media type the answer is plain JSON; anonymous callers get no JWT.
    let plain: Value = ask(None, Some(READER_KEY)).await?.json().await?;
    assert_eq!(plain["active"], json!(true));
    let anonymous = ask(Some("application/token-introspection+jwt"), None).await?;
    assert_eq!(anonymous.status(), 400);

    // gRPC callers ask with a field.
    let mut client = server.client().await;
    let response = client
        .introspect(with_key(
            READER_KEY,
            pb::IntrospectRequest {
                signed_answer: true,
                ..request(&token)
            },
        ))
        .await?
        .into_inner();
    let jwt = response.signed_answer.ok_or("no signed answer over gRPC")?;
    let verified = jsonwebtoken::decode::<Value>(&jwt, &DecodingKey::from_jwk(jwk)?, &validation)?;
    assert_eq!(
        verified.claims["token_introspection"]["active"],
        json!(true)
    );
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn signed_answers_are_refused_where_not_configured() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(config(&signer)).await;
    let token = mint(&signer, &claims(ISS));
    let answer = reqwest::Client::new()
        .post(format!("http://{}/oauth2/introspect", server.http_addr))
        .header("accept", "application/token-introspection+jwt")
        .bearer_auth(READER_KEY)
        .form(&[("token", token.as_str())])
        .send()
        .await?;
    assert_eq!(answer.status(), 406);
    let grpc = server
        .client()
        .await
        .introspect(with_key(
            READER_KEY,
            pb::IntrospectRequest {
                signed_answer: true,
                ..request(&token)
            },
        ))
        .await;
    assert_eq!(
        grpc.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::FailedPrecondition)
    );
    server.stop().await?;
    Ok(())
}
