//! Token rules over real gRPC, with RSA, EC P-256 and Ed25519 issuers.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use introspectd::grpc::pb::{self, InactiveReason};
use jsonwebtoken::Algorithm;
use serde_json::json;
use tonic::Code;

use crate::support::*;

const ALGS: &[&str] = &["RS256", "ES256", "EdDSA"];

struct Setup {
    server: Introspectd,
    jwks_a: JwksServer,
    _jwks_b: JwksServer,
    iss_a: String,
    iss_b: String,
    rs: introspectd::token::sign::SigningKey,
    es: introspectd::token::sign::SigningKey,
    ed: introspectd::token::sign::SigningKey,
    b_key: introspectd::token::sign::SigningKey,
}

/// Two issuers, A (RSA, EC, Ed25519 keys) and B (its own RSA key), each with its JWKS server.
async fn setup() -> Setup {
    let rs = key(Algorithm::RS256, "a-rs");
    let es = key(Algorithm::ES256, "a-es");
    let ed = key(Algorithm::EdDSA, "a-ed");
    let b_key = key(Algorithm::RS256, "b-rs");
    let jwks_a = JwksServer::start(&[&rs, &es, &ed]).await;
    let jwks_b = JwksServer::start(&[&b_key]).await;
    let iss_a = "https://a.issuer.test/".to_owned();
    let iss_b = "https://b.issuer.test/".to_owned();
    let server = Introspectd::start_ready(file_config(vec![
        issuer_section(&iss_a, &jwks_a.jwks_uri(), ALGS),
        issuer_section(&iss_b, &jwks_b.jwks_uri(), ALGS),
    ]))
    .await;
    Setup {
        server,
        jwks_a,
        _jwks_b: jwks_b,
        iss_a,
        iss_b,
        rs,
        es,
        ed,
        b_key,
    }
}

#[tokio::test]
async fn valid_tokens_of_every_key_type_are_active() -> TestResult {
    let s = setup().await;
    for key in [&s.rs, &s.es, &s.ed] {
        let answer = s.server.introspect(&mint(key, &claims(&s.iss_a))).await;
        assert!(answer.active, "{:?}: {answer:?}", key.alg());
        assert_eq!(answer.iss.as_deref(), Some(s.iss_a.as_str()));
        assert_eq!(answer.sub.as_deref(), Some("user-1"));
        assert_eq!(answer.scope.as_deref(), Some("read write"));
        assert_eq!(answer.client_id.as_deref(), Some("client-1"));
        assert_eq!(answer.token_type.as_deref(), Some("Bearer"));
        assert_eq!(answer.aud, vec![AUD]);
        assert_eq!(answer.fingerprint.len(), 16);
        let org = answer
            .claims
            .as_ref()
            .and_then(|c| c.fields.get("org_id"))
            .and_then(|v| v.kind.clone());
        assert_eq!(
            org,
            Some(prost_types::value::Kind::StringValue("org-9".into()))
        );
    }
    // B's own token is active too.
    assert!(
        s.server
            .introspect(&mint(&s.b_key, &claims(&s.iss_b)))
            .await
            .active
    );
    Ok(())
}

#[tokio::test]
async fn refused_tokens_are_inactive_with_their_reason() -> TestResult {
    let s = setup().await;
    let c = claims(&s.iss_a);
    let with = |name: &str, value: serde_json::Value| {
        let mut c = c.clone();
        c[name] = value;
        c
    };
    let hdr = |extra: serde_json::Value| {
        let mut h = json!({"alg": "RS256", "kid": "a-rs", "typ": "at+jwt"});
        if let (Some(h), Some(extra)) = (h.as_object_mut(), extra.as_object()) {
            h.extend(extra.clone());
        }
        h
    };
    let sign = |header: serde_json::Value, claims: &serde_json::Value| {
        s.rs.sign_compact(&header, claims).unwrap_or_default()
    };
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#),
        URL_SAFE_NO_PAD.encode(c.to_string())
    );
    let hs_with_public_key = introspectd::token::sign::SigningKey::from_private(
        Algorithm::HS256,
        "a-rs",
        s.rs.public_jwk().to_string().into_bytes(),
    )
    .map(|k| mint(&k, &c))
    .unwrap_or_default();
    let id_token = s
        .rs
        .mint("JWT", &json!({"iss": s.iss_a, "sub": "u", "aud": "client-1", "exp": now() + 60, "iat": now(), "nonce": "n"}))
        .unwrap_or_default();
    let refresh_token = sign(hdr(json!({"typ": "JWT"})), &with("typ", json!("Refresh")));

    let cases: Vec<(&str, String, InactiveReason)> = vec![
        ("alg none", unsigned, InactiveReason::BadSignature),
        (
            "HS256 with the RSA public key as secret",
            hs_with_public_key,
            InactiveReason::BadSignature,
        ),
        (
            "issuer B's key on a token claiming A",
            mint(&s.b_key, &c),
            InactiveReason::UnknownKey,
        ),
        (
            "B's key under A's kid",
            sign_other(&s.b_key, "a-rs", &c),
            InactiveReason::BadSignature,
        ),
        (
            "unknown kid",
            mint(&key(Algorithm::ES256, "nobody"), &c),
            InactiveReason::UnknownKey,
        ),
        (
            "jku header",
            sign(hdr(json!({"jku": "http://evil.test/jwks"})), &c),
            InactiveReason::Malformed,
        ),
        (
            "x5u header",
            sign(hdr(json!({"x5u": "http://evil.test/c.pem"})), &c),
            InactiveReason::Malformed,
        ),
        (
            "jwk header",
            sign(hdr(json!({"jwk": s.rs.public_jwk()})), &c),
            InactiveReason::Malformed,
        ),
        (
            "unknown crit",
            sign(hdr(json!({"crit": ["urn:x"], "urn:x": 1})), &c),
            InactiveReason::Malformed,
        ),
        // Not a JWS by shape, so an opaque token, and no issuer takes opaque tokens.
        (
            "not base64",
            "@@@.###.$$$".into(),
            InactiveReason::UnknownIssuer,
        ),
        (
            "a header that is not JSON: opaque by shape",
            format!("{0}.{0}.AA", URL_SAFE_NO_PAD.encode("hello")),
            InactiveReason::UnknownIssuer,
        ),
        (
            "a JWS whose payload is not JSON",
            format!(
                "{}.{}.AA",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"at+jwt"}"#),
                URL_SAFE_NO_PAD.encode("hello")
            ),
            InactiveReason::Malformed,
        ),
        (
            "exp as a string",
            mint(&s.rs, &with("exp", json!("9999999999"))),
            InactiveReason::Malformed,
        ),
        (
            "expired",
            mint(&s.rs, &with("exp", json!(now() - 3600))),
            InactiveReason::Expired,
        ),
        (
            "not yet valid",
            mint(&s.rs, &with("nbf", json!(now() + 3600))),
            InactiveReason::NotYetValid,
        ),
        (
            "wrong audience",
            mint(&s.rs, &with("aud", json!("https://other.test"))),
            InactiveReason::WrongAudience,
        ),
        (
            "unknown issuer",
            mint(&s.rs, &with("iss", json!("https://nobody.test/"))),
            InactiveReason::UnknownIssuer,
        ),
        ("ID token", id_token, InactiveReason::WrongTokenType),
        (
            "refresh token",
            refresh_token,
            InactiveReason::WrongTokenType,
        ),
        (
            "opaque token",
            "2YotnFZFEjr1zCsicMWpAA".into(),
            InactiveReason::UnknownIssuer,
        ),
        (
            "17 KiB token",
            format!("{}.{}.AA", "a".repeat(17 * 1024), "b"),
            InactiveReason::Malformed,
        ),
    ];
    for (what, token, expected) in cases {
        let answer = s.server.introspect(&token).await;
        assert!(!answer.active, "{what}: active");
        assert_eq!(reason(&answer), expected, "{what}");
        // Inactive answers carry nothing but the fingerprint and reason.
        assert_eq!(answer.sub, None, "{what}");
        assert_eq!(answer.claims, None, "{what}");
        assert_eq!(answer.fingerprint.len(), 16, "{what}");
    }
    drop(s.jwks_a);
    Ok(())
}

fn sign_other(
    key: &introspectd::token::sign::SigningKey,
    kid: &str,
    claims: &serde_json::Value,
) -> String {
    key.sign_compact(
        &json!({"alg": "RS256", "kid": kid, "typ": "at+jwt"}),
        claims,
    )
    .unwrap_or_default()
}

#[tokio::test]
async fn per_call_scopes_and_audience_narrow_the_answer() -> TestResult {
    let s = setup().await;
    let token = mint(&s.rs, &claims(&s.iss_a));
    let ask = |scopes: &[&str], audience: Option<&str>| pb::IntrospectRequest {
        token: token.clone(),
        token_type_hint: Some("access_token".into()),
        required_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        audience: audience.map(str::to_owned),
        ..Default::default()
    };
    assert!(
        s.server
            .introspect_with(ask(&["read"], Some(AUD)))
            .await
            .active
    );
    let answer = s.server.introspect_with(ask(&["admin"], None)).await;
    assert_eq!(reason(&answer), InactiveReason::InsufficientScope);
    let answer = s
        .server
        .introspect_with(ask(&[], Some("https://other.test")))
        .await;
    assert_eq!(reason(&answer), InactiveReason::WrongAudience);
    // The cached verification does not carry one call's narrowing into the next.
    assert!(s.server.introspect_with(ask(&["write"], None)).await.active);
    Ok(())
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_the_server_keeps_serving() -> TestResult {
    let s = setup().await;
    let mut client = s.server.client().await;
    let empty = client.introspect(pb::IntrospectRequest::default()).await;
    assert_eq!(empty.err().map(|e| e.code()), Some(Code::InvalidArgument));
    // A 1 MiB token is over the request size limit: refused before it is decoded.
    let huge = client
        .introspect(pb::IntrospectRequest {
            token: "a".repeat(1024 * 1024),
            ..Default::default()
        })
        .await;
    assert_eq!(huge.err().map(|e| e.code()), Some(Code::OutOfRange));
    assert!(
        s.server
            .introspect(&mint(&s.es, &claims(&s.iss_a)))
            .await
            .active
    );
    Ok(())
}

#[tokio::test]
async fn reasons_are_hidden_unless_configured() -> TestResult {
    let rs = key(Algorithm::RS256, "k");
    let jwks = JwksServer::start(&[&rs]).await;
    let iss = "https://hidden.test/";
    let mut file = file_config(vec![issuer_section(iss, &jwks.jwks_uri(), &["RS256"])]);
    file.server.expose_inactive_reason = false;
    let server = Introspectd::start_ready(file).await;
    let mut expired = claims(iss);
    expired["exp"] = json!(now() - 3600);
    let answer = server.introspect(&mint(&rs, &expired)).await;
    assert!(!answer.active);
    assert_eq!(reason(&answer), InactiveReason::Unspecified);
    Ok(())
}

/// Sends `bytes` as the request message of a gRPC method, unchecked.
async fn raw_call(server: &Introspectd, path: &'static str, bytes: Vec<u8>) -> tonic::Code {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    if grpc.ready().await.is_err() {
        unreachable!("the channel is not ready");
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    let mut request = tonic::Request::new(bytes);
    let Ok(key) = format!("Bearer {ADMIN_KEY}").parse() else {
        unreachable!()
    };
    request.metadata_mut().insert("authorization", key);
    match grpc.unary(request, path, RawCodec).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// A codec that sends bytes as they are and ignores the answer's.
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        let remaining = prost::bytes::Buf::remaining(src);
        prost::bytes::Buf::advance(src, remaining);
        Ok(Some(()))
    }
}

#[tokio::test]
async fn undecodable_requests_are_invalid_argument() -> TestResult {
    let s = setup().await;
    // Field 1 (token) as a length-delimited string of bytes that are not UTF-8.
    let bad_utf8 = vec![0x0a, 0x02, 0xff, 0xfe];
    // A length prefix running past the end of the message.
    let truncated = vec![0x0a, 0x20, b'a'];
    // A wire type that does not exist.
    let nonsense = vec![0x0f, 0x01, 0x02];
    for path in [
        "/introspectd.v1.TokenIntrospection/Introspect",
        "/introspectd.v1.TokenRevocation/Revoke",
        "/introspectd.v1.TokenRevocation/CheckRevocation",
        "/introspectd.v1.SubjectClaimsAdmin/SetSubjectClaims",
        "/envoy.service.auth.v3.Authorization/Check",
    ] {
        for bytes in [&bad_utf8, &truncated, &nonsense] {
            let code = raw_call(&s.server, path, bytes.clone()).await;
            assert_eq!(code, Code::InvalidArgument, "{path} {bytes:?}");
        }
    }
    // And the server keeps serving.
    let token = mint(&s.rs, &claims(&s.iss_a));
    assert!(s.server.introspect(&token).await.active);
    Ok(())
}
