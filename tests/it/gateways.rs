//! Gateways as they ask: Envoy's ext_authz through the `envoy-types` client over a real
//! socket, and forward-auth behind a real nginx (`auth_request`).

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, routing::any};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::config::core::v3 as envoy_core;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, attribute_context, authorization_client::AuthorizationClient,
};
use introspectd::{
    config::IssuerSection,
    grpc::pb::{self, revoke_request::Target},
};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tonic::Code;

use crate::support::*;

pub(crate) const ISS: &str = "https://gateway.test/";

pub(crate) fn check(token: Option<&str>, extensions: &[(&str, &str)]) -> CheckRequest {
    let mut headers = HashMap::from([(":path".to_owned(), "/orders/7".to_owned())]);
    if let Some(token) = token {
        headers.insert("authorization".into(), format!("Bearer {token}"));
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".into(),
                    path: "/orders/7".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: extensions
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }),
    }
}

/// (HTTP status Envoy would answer, headers for the upstream or the client, metadata).
pub(crate) fn outcome(response: &CheckResponse) -> (i32, HashMap<String, String>, Vec<String>) {
    let headers = |options: &[envoy_types::ext_authz::v3::pb::HeaderValueOption]| {
        options
            .iter()
            .filter_map(|option| option.header.as_ref())
            .map(|header| (header.key.clone(), header.value.clone()))
            .collect::<HashMap<_, _>>()
    };
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            (200, headers(&ok.headers), ok.headers_to_remove.clone())
        }
        Some(HttpResponse::DeniedResponse(denied)) => (
            denied.status.as_ref().map_or(403, |s| s.code),
            headers(&denied.headers),
            Vec::new(),
        ),
        _ => (0, HashMap::new(), Vec::new()),
    }
}

#[tokio::test]
async fn envoy_ext_authz_allows_denies_and_follows_revocation() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let mut file = file_config(vec![inline_issuer(ISS, &signer)]);
    file.gateway.remove_token_header = true;
    let server = Introspectd::start_ready(file).await;
    let mut client = AuthorizationClient::new(server.channel().await);
    let mut claims = claims(ISS);
    claims["jti"] = json!("gw-1");
    let token = mint(&signer, &claims);

    let allowed = client.check(check(Some(&token), &[])).await?.into_inner();
    assert_eq!(allowed.status.as_ref().map(|s| s.code), Some(0));
    let (status, headers, removed) = outcome(&allowed);
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("x-introspectd-sub").map(String::as_str),
        Some("user-1")
    );
    assert_eq!(
        headers.get("x-introspectd-scope").map(String::as_str),
        Some("read write")
    );
    let encoded = headers
        .get("x-introspectd-claims")
        .cloned()
        .unwrap_or_default();
    let decoded: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded)?)?;
    assert_eq!(decoded["org_id"], "org-9");
    assert_eq!(removed, vec!["authorization".to_owned()]);
    let metadata = allowed
        .dynamic_metadata
        .map(|m| m.fields)
        .unwrap_or_default();
    assert!(metadata.contains_key("sub"), "{metadata:?}");
    // The allow is kept with the cached token: the next one says the same.
    let again = client.check(check(Some(&token), &[])).await?.into_inner();
    assert_eq!(outcome(&again), (status, headers.clone(), removed.clone()));
    assert_eq!(again.dynamic_metadata.map(|m| m.fields), Some(metadata));

    // A token without scope (or sub): the client's own header of that name is removed.
    let mut scopeless = claims.clone();
    scopeless.as_object_mut().map(|c| c.remove("scope"));
    scopeless["jti"] = json!("gw-2");
    let mut forged = check(Some(&mint(&signer, &scopeless)), &[]);
    if let Some(http) = forged
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.headers
            .insert("x-introspectd-scope".into(), "admin".into());
    }
    let (status, headers, removed) = outcome(&client.check(forged).await?.into_inner());
    assert_eq!(status, 200);
    assert!(!headers.contains_key("x-introspectd-scope"));
    assert!(
        removed.contains(&"x-introspectd-scope".to_owned()),
        "{removed:?}"
    );

    let (status, headers, _) = outcome(&client.check(check(None, &[])).await?.into_inner());
    assert_eq!(status, 401);
    assert_eq!(
        headers.get("www-authenticate").map(String::as_str),
        Some("Bearer realm=\"introspectd\"")
    );
    let garbage = client
        .check(check(Some("not-a-token"), &[]))
        .await?
        .into_inner();
    let (status, headers, _) = outcome(&garbage);
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"].contains("error=\"invalid_token\""));

    // Per-route policy from context_extensions.
    let scoped = check(Some(&token), &[("required_scopes", "read admin")]);
    let (status, headers, _) = outcome(&client.check(scoped).await?.into_inner());
    assert_eq!(status, 403);
    assert!(
        headers["www-authenticate"].contains("error=\"insufficient_scope\", scope=\"read admin\""),
        "{headers:?}"
    );
    let other_api = check(Some(&token), &[("audience", "https://other.test")]);
    assert_eq!(outcome(&client.check(other_api).await?.into_inner()).0, 401);

    server
        .revoke(Target::Jti(pb::JtiTarget {
            iss: ISS.into(),
            jti: "gw-1".into(),
            exp: None,
        }))
        .await;
    let revoked = client.check(check(Some(&token), &[])).await?.into_inner();
    assert_eq!(outcome(&revoked).0, 401);
    Ok(())
}

/// `request` as Envoy sends it with `encode_raw_headers: true`: the headers in
/// `header_map`, each as its raw bytes, repeated names not joined, `headers` empty.
pub(crate) fn with_raw_headers(
    mut request: CheckRequest,
    headers: &[(&str, &[u8])],
) -> CheckRequest {
    if let Some(http) = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.headers.clear();
        http.header_map = Some(envoy_core::HeaderMap {
            headers: headers
                .iter()
                .map(|(key, raw_value)| envoy_core::HeaderValue {
                    key: (*key).to_owned(),
                    raw_value: raw_value.to_vec(),
                    ..Default::default()
                })
                .collect(),
        });
    }
    request
}

fn raw_headers_check(headers: &[(&str, &[u8])]) -> CheckRequest {
    with_raw_headers(check(None, &[]), headers)
}

#[tokio::test]
async fn envoy_ext_authz_reads_raw_headers() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(file_config(vec![inline_issuer(ISS, &signer)])).await;
    let mut client = AuthorizationClient::new(server.channel().await);
    let bearer = format!("Bearer {}", mint(&signer, &claims(ISS)));

    let allowed = raw_headers_check(&[
        (":path", b"/orders/7"),
        ("authorization", bearer.as_bytes()),
        // Raw bytes that are not UTF-8, in a header no decision reads: not refused.
        ("x-legacy", b"caf\xe9"),
    ]);
    let (status, headers, _) = outcome(&client.check(allowed).await?.into_inner());
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(
        headers.get("x-introspectd-sub").map(String::as_str),
        Some("user-1")
    );

    // Two tokens are read as Envoy's `headers` joins them, one value: not a token.
    let twice = raw_headers_check(&[
        ("authorization", bearer.as_bytes()),
        ("authorization", bearer.as_bytes()),
    ]);
    let (status, headers, _) = outcome(&client.check(twice).await?.into_inner());
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"].contains("error=\"invalid_token\""));

    // A token header that is not UTF-8 is no token.
    let latin1 = raw_headers_check(&[("authorization", b"Bearer caf\xe9")]);
    let (status, headers, _) = outcome(&client.check(latin1).await?.into_inner());
    assert_eq!(status, 401);
    assert_eq!(
        headers.get("www-authenticate").map(String::as_str),
        Some("Bearer realm=\"introspectd\"")
    );
    Ok(())
}

#[tokio::test]
async fn envoy_ext_authz_is_unavailable_when_the_issuer_cannot_answer() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let closed = free_addr();
    let file = file_config(vec![IssuerSection {
        introspection_endpoint: Some(format!("http://{closed}/introspect")),
        ..inline_issuer(ISS, &signer)
    }]);
    let server = Introspectd::start_ready(file).await;
    let mut client = AuthorizationClient::new(server.channel().await);
    let failed = client.check(check(Some("opaque-token"), &[])).await;
    assert_eq!(failed.err().map(|s| s.code()), Some(Code::Unavailable));
    Ok(())
}

/// A claim no header can carry (CR, LF or NUL in `sub` or `client_id`) reaches no
/// upstream header on either surface: ext_authz removes the header, `/authz` sends it
/// empty, so a client's own never passes and a gateway never forwards a mangled value.
#[tokio::test]
async fn claims_that_cannot_be_header_values_are_no_values() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(file_config(vec![inline_issuer(ISS, &signer)])).await;
    let mut shaped = claims(ISS);
    shaped["sub"] = json!("alice\r\nx-introspectd-scope: admin");
    shaped["client_id"] = json!("c\u{0}d");
    // A space at either end would be stripped by every parser: another value.
    let mut padded = claims(ISS);
    padded["sub"] = json!(" admin");
    padded["client_id"] = json!("client\t");
    let mut client = AuthorizationClient::new(server.channel().await);
    for token in [mint(&signer, &shaped), mint(&signer, &padded)] {
        let allowed = client.check(check(Some(&token), &[])).await?.into_inner();
        let (status, headers, removed) = outcome(&allowed);
        assert_eq!(status, 200);
        assert_eq!(headers.get("x-introspectd-sub"), None, "{headers:?}");
        assert_eq!(headers.get("x-introspectd-client-id"), None, "{headers:?}");
        assert!(
            removed.contains(&"x-introspectd-sub".to_owned()),
            "{removed:?}"
        );
        assert!(removed.contains(&"x-introspectd-client-id".to_owned()));
        assert_eq!(
            headers.get("x-introspectd-scope").map(String::as_str),
            Some("read write")
        );

        let forward = reqwest::Client::new()
            .get(format!("http://{}/authz", server.http_addr))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await?;
        assert_eq!(forward.status(), 200);
        for name in ["x-introspectd-sub", "x-introspectd-client-id"] {
            assert_eq!(
                forward.headers().get(name).map(|v| v.as_bytes().to_vec()),
                Some(Vec::new()),
                "{name}"
            );
        }
    }
    Ok(())
}

// === forward-auth, without a gateway in front ===

/// `/authz` as the README describes it, with settings other than the defaults: the
/// gateway's key in `X-Introspectd-Api-Key`, the token in `gateway.token_header`, the
/// route's policy from repeated `scope=` and `audience=`, the headers named in
/// `gateway.upstream_headers` and no others, the realm, and 503 when undecidable.
#[tokio::test]
async fn forward_auth_reads_its_settings_and_the_routes_policy() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let unreachable = free_addr();
    let mut file = file_config(vec![IssuerSection {
        introspection_endpoint: Some(format!("http://{unreachable}/introspect")),
        ..inline_issuer(ISS, &signer)
    }]);
    file.auth.anonymous_introspect = false;
    file.gateway.realm = "orders".into();
    file.gateway.token_header = "x-token".into();
    file.gateway.upstream_headers = vec!["sub".into(), "client_id".into()];
    let server = Introspectd::start_ready(file).await;
    let http = reqwest::Client::new();
    let token = format!("Bearer {}", mint(&signer, &claims(ISS)));
    let ask = |query: &str, token: &str| {
        http.get(format!("http://{}/authz{query}", server.http_addr))
            .header("x-introspectd-api-key", READER_KEY)
            .header("x-token", token)
    };

    let allowed = ask("?scope=read&scope=write", &token).send().await?;
    assert_eq!(allowed.status(), 200);
    let header = |name: &str| {
        allowed
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("x-introspectd-sub").as_deref(), Some("user-1"));
    assert_eq!(
        header("x-introspectd-client-id").as_deref(),
        Some("client-1")
    );
    assert_eq!(
        header("x-introspectd-scope"),
        None,
        "not in upstream_headers"
    );
    assert_eq!(
        header("x-introspectd-claims"),
        None,
        "not in upstream_headers"
    );

    let narrower = ask("?scope=read&scope=admin", &token).send().await?;
    assert_eq!(narrower.status(), 403, "every scope= must be granted");
    assert_eq!(
        ask(&format!("?audience={AUD}"), &token)
            .send()
            .await?
            .status(),
        200
    );
    assert_ne!(
        ask("?audience=https://elsewhere.example", &token)
            .send()
            .await?
            .status(),
        200,
        "audience= must be in aud"
    );
    // Two audiences: not the last one alone (which dropped the first), a denial.
    assert_eq!(
        ask(
            &format!("?audience=https://elsewhere.example&audience={AUD}"),
            &token
        )
        .send()
        .await?
        .status(),
        403
    );
    // A forward-auth address with a trailing slash reaches the Envoy route, whose query
    // is the client's: its policy would be dropped. X-Forwarded-Uri gives it away.
    for described_by in ["x-forwarded-uri", "x-forwarded-method", "x-original-url"] {
        let slashed = http
            .get(format!("http://{}/authz/?scope=admin", server.http_addr))
            .header("x-introspectd-api-key", READER_KEY)
            .header("x-token", &token)
            .header(described_by, "/orders")
            .send()
            .await?;
        assert_eq!(slashed.status(), 403, "{described_by}");
    }
    // A scope a client slipped into a policy header stays inside the challenge's quotes.
    let injected = ask("?scope=admin", &token)
        .header(
            "x-introspectd-required-scope",
            "a\", error_uri=\"https://evil.example",
        )
        .send()
        .await?;
    assert_eq!(injected.status(), 403);
    assert_eq!(
        challenges(&injected),
        vec!["Bearer realm=\"orders\", error=\"insufficient_scope\", scope=\"admin\"".to_owned()]
    );
    // The token in Authorization is not read where token_header says otherwise.
    let elsewhere = http
        .get(format!("http://{}/authz", server.http_addr))
        .header("x-introspectd-api-key", READER_KEY)
        .header("authorization", &token)
        .send()
        .await?;
    assert_eq!(elsewhere.status(), 401);
    assert_eq!(
        challenges(&elsewhere),
        vec!["Bearer realm=\"orders\"".to_owned()]
    );
    let keyless = http
        .get(format!("http://{}/authz", server.http_addr))
        .header("x-token", &token)
        .send()
        .await?;
    assert_eq!(keyless.status(), 401, "the gateway's own key is needed");
    let twice = ask("", &token)
        .header("x-introspectd-api-key", "another")
        .send()
        .await?;
    assert_eq!(twice.status(), 401, "two gateway keys are no key");
    // An opaque token whose issuer cannot be reached: no decision.
    assert_eq!(ask("", "Bearer opaque-token").send().await?.status(), 503);
    Ok(())
}

/// Envoy's HTTP ext_authz (`http_service` with `path_prefix: /authz`), asked as Envoy
/// asks: the client's method, path and query in the request line, its host in `Host`,
/// its `authorization`, and the route's policy in headers Envoy adds. The client's query
/// is not the route's policy, and with `remove_token_header` the allow names the token
/// header for Envoy to drop.
#[tokio::test]
async fn envoy_http_ext_authz_reads_the_clients_request_line() -> TestResult {
    use reqwest::Method;
    let signer = key(Algorithm::ES256, "es");
    let mut file = file_config(vec![inline_issuer(ISS, &signer)]);
    file.auth.anonymous_introspect = false;
    file.gateway.remove_token_header = true;
    let server = Introspectd::start_ready(file).await;
    let http = reqwest::Client::new();
    let mut claims = claims(ISS);
    claims["jti"] = "envoy-http-1".into();
    let token = format!("Bearer {}", mint(&signer, &claims));
    let ask = |method: Method, client_path: &str, token: &str| {
        http.request(
            method,
            format!("http://{}/authz{client_path}", server.http_addr),
        )
        .header("host", "api.example.com")
        .header("x-introspectd-api-key", READER_KEY)
        .header("authorization", token)
    };

    for (method, client_path) in [
        (Method::GET, "/orders/7?page=2"),
        (Method::DELETE, "/orders/7"),
        (Method::POST, "/"),
    ] {
        let allowed = ask(method.clone(), client_path, &token).send().await?;
        assert_eq!(allowed.status(), 200, "{method} {client_path}");
        let header = |name: &str| allowed.headers().get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header("x-introspectd-sub"), Some("user-1"));
        assert_eq!(
            header("x-envoy-auth-headers-to-remove"),
            Some("authorization")
        );
    }
    // The client's own query asks for nothing.
    let chosen_by_client = ask(
        Method::GET,
        "/orders?scope=admin&audience=https://elsewhere.example",
        &token,
    )
    .send()
    .await?;
    assert_eq!(chosen_by_client.status(), 200);
    // The route's policy, from the headers Envoy's `headers_to_add` sets.
    let narrower = ask(Method::GET, "/orders", &token)
        .header("x-introspectd-required-scope", "read admin")
        .send()
        .await?;
    assert_eq!(narrower.status(), 403);
    assert_eq!(
        challenges(&narrower),
        vec![
            "Bearer realm=\"introspectd\", error=\"insufficient_scope\", scope=\"read admin\""
                .to_owned()
        ]
    );
    let granted = ask(Method::GET, "/orders", &token)
        .header("x-introspectd-required-scope", "read,write")
        .header("x-introspectd-required-audience", AUD)
        .send()
        .await?;
    assert_eq!(granted.status(), 200);
    let other_api = ask(Method::GET, "/orders", &token)
        .header(
            "x-introspectd-required-audience",
            "https://elsewhere.example",
        )
        .send()
        .await?;
    assert_eq!(other_api.status(), 401);
    // A policy header that cannot be read is a requirement no token meets.
    for name in [
        "x-introspectd-required-scope",
        "x-introspectd-required-audience",
    ] {
        let unreadable = ask(Method::GET, "/orders", &token)
            .header(
                name,
                reqwest::header::HeaderValue::from_bytes(b"admin\xff")?,
            )
            .send()
            .await?;
        assert_eq!(unreadable.status(), 403, "{name}");
    }
    // On plain /authz the headers add to the query's policy; they never replace the
    // query's audience.
    let plain = |query: &str| {
        http.get(format!("http://{}/authz{query}", server.http_addr))
            .header("x-introspectd-api-key", READER_KEY)
            .header("authorization", &token)
    };
    let added = plain("?scope=read")
        .header("x-introspectd-required-scope", "admin")
        .send()
        .await?;
    assert_eq!(added.status(), 403);
    let kept = plain("?audience=https://elsewhere.example")
        .header("x-introspectd-required-audience", AUD)
        .send()
        .await?;
    assert_eq!(kept.status(), 401, "the query's audience stands");

    // Refusals Envoy passes on to the client (a 5xx it takes for an error).
    let no_token = http
        .get(format!("http://{}/authz/orders", server.http_addr))
        .header("x-introspectd-api-key", READER_KEY)
        .send()
        .await?;
    assert_eq!(no_token.status(), 401);
    assert_eq!(
        challenges(&no_token),
        vec!["Bearer realm=\"introspectd\"".to_owned()]
    );
    let keyless = http
        .get(format!("http://{}/authz/orders", server.http_addr))
        .header("authorization", &token)
        .send()
        .await?;
    assert_eq!(keyless.status(), 401, "the gateway's own key is needed");
    server
        .revoke(Target::Jti(pb::JtiTarget {
            iss: ISS.into(),
            jti: "envoy-http-1".into(),
            exp: None,
        }))
        .await;
    let revoked = ask(Method::GET, "/orders/7", &token).send().await?;
    assert_eq!(revoked.status(), 401);
    assert_eq!(
        challenges(&revoked),
        vec!["Bearer realm=\"introspectd\", error=\"invalid_token\"".to_owned()]
    );
    assert!(
        server
            .metric(
                "introspectd_http_requests_total{route=\"/authz/{*client_path}\",status=\"200\"}"
            )
            .await
            >= 4.0
    );
    Ok(())
}

// === nginx ===

/// What the upstream behind nginx received.
#[derive(Default)]
struct Upstream {
    requests: Mutex<Vec<HashMap<String, String>>>,
}

async fn upstream() -> (std::net::SocketAddr, Arc<Upstream>) {
    async fn record(State(upstream): State<Arc<Upstream>>, headers: HeaderMap) -> &'static str {
        let seen = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        upstream
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(seen);
        "upstream"
    }
    let state = Arc::new(Upstream::default());
    let app = Router::new()
        .route("/{*path}", any(record))
        .with_state(state.clone());
    (serve_on_loopback(app).await, state)
}

impl Upstream {
    /// Every request that reached the upstream, its headers by name.
    fn seen(&self) -> Vec<HashMap<String, String>> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// introspectd, a recording upstream, and a gateway between them listening on `url`'s
/// address, ready: what the nginx and Caddy tests share.
struct Setup {
    signer: introspectd::token::sign::SigningKey,
    server: Introspectd,
    upstream: Arc<Upstream>,
    http: reqwest::Client,
    url: String,
    _gateway: Gateway,
}

impl Setup {
    async fn start(name: &str, gateway: fn(&str, &str, std::net::SocketAddr) -> Gateway) -> Self {
        let signer = key(Algorithm::ES256, "es");
        let server = Introspectd::start_ready(file_config(vec![inline_issuer(ISS, &signer)])).await;
        let (upstream_addr, upstream) = upstream().await;
        let listen = free_addr();
        let gateway = gateway(&listen, &server.http_addr.to_string(), upstream_addr);
        let http = reqwest::Client::new();
        let url = format!("http://{listen}/orders/7");
        eventually(&format!("{name} to listen"), || async {
            http.get(&url).send().await.is_ok()
        })
        .await;
        Self {
            signer,
            server,
            upstream,
            http,
            url,
            _gateway: gateway,
        }
    }

    /// A token with `orders:read` (the examples' required scope) and these claims.
    fn token(&self, extra: serde_json::Value) -> String {
        let mut claims = claims(ISS);
        claims["scope"] = json!("orders:read");
        if let Value::Object(extra) = extra {
            for (name, value) in extra {
                claims[name] = value;
            }
        }
        mint(&self.signer, &claims)
    }

    /// A good token passes and the upstream sees who it belongs to; so does one whose
    /// claims make a large answer header (150 groups: some 5 KB of
    /// `x-introspectd-claims`, past nginx's default 4 KB for a proxied answer's headers).
    async fn a_good_token_reaches_the_upstream(&self) -> TestResult {
        let groups: Vec<String> = (0..150)
            .map(|n| format!("/org/engineering/team-{n:03}"))
            .collect();
        for (n, extra) in [json!({}), json!({ "groups": groups })]
            .into_iter()
            .enumerate()
        {
            let answer = self
                .http
                .get(&self.url)
                .bearer_auth(self.token(extra))
                .send()
                .await?;
            assert_eq!(answer.status(), 200, "token {n}");
            let seen = self.upstream.seen();
            assert_eq!(seen.len(), n + 1);
            assert_eq!(
                seen[n].get("x-introspectd-sub").map(String::as_str),
                Some("user-1")
            );
        }
        Ok(())
    }
}

/// Every `WWW-Authenticate` of an answer.
fn challenges(answer: &reqwest::Response) -> Vec<String> {
    answer
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|value| value.to_str().unwrap_or_default().to_owned())
        .collect()
}

fn nginx_available(test: &str) -> bool {
    tool_available("nginx", "-v", test, "apt-get install nginx")
}

/// A gateway process in the foreground with its own directory, killed on drop.
struct Gateway {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx running `examples/gateways/nginx.conf` as written, its addresses replaced by
/// the test's.
fn nginx(listen: &str, authz: &str, upstream: std::net::SocketAddr) -> Gateway {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let example = include_str!("../../examples/gateways/nginx.conf")
        .replace("listen 8000;", &format!("listen {listen};"))
        .replace("introspectd:8080", authz)
        .replace("orders-api:8080", &upstream.to_string());
    let conf = format!(
        r#"
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
{example}
}}
"#,
        dir = dir.path().display()
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap_or_else(|e| unreachable!("{e}"));
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| unreachable!("cannot start nginx: {e}"));
    Gateway { child, _dir: dir }
}

#[tokio::test]
async fn nginx_auth_request_passes_good_tokens_and_stops_the_rest() -> TestResult {
    if !nginx_available("nginx_auth_request_passes_good_tokens_and_stops_the_rest") {
        return Ok(());
    }
    let setup = Setup::start("nginx", nginx).await;
    let Setup {
        signer,
        server,
        upstream,
        http,
        url,
        ..
    } = &setup;
    let get = |token: Option<String>| {
        let mut request = http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    setup.a_good_token_reaches_the_upstream().await?;
    let token = setup.token(json!({ "jti": "ng-1" }));
    assert_eq!(get(Some(token.clone())).await?.status(), 200);
    let mut good = claims(ISS);
    good["scope"] = json!("orders:read");

    // A client's own x-introspectd-sub never reaches the upstream.
    let mut subless = good.clone();
    subless.as_object_mut().map(|c| c.remove("sub"));
    let forged = http
        .get(url)
        .bearer_auth(mint(signer, &subless))
        .header("x-introspectd-sub", "victim")
        .send()
        .await?;
    assert_eq!(forged.status(), 200);
    let last = upstream.seen().last().cloned().unwrap_or_default();
    assert_ne!(
        last.get("x-introspectd-sub").map(String::as_str),
        Some("victim")
    );

    // Each answer carries its challenge once: nginx passes a 401's on by itself, the
    // example copies a 403's.
    let missing = get(None).await?;
    assert_eq!(missing.status(), 401);
    assert_eq!(challenges(&missing), ["Bearer realm=\"introspectd\""]);
    let mut old = good.clone();
    old["exp"] = json!(now() - 3600);
    let expired = get(Some(mint(signer, &old))).await?;
    assert_eq!(expired.status(), 401);
    assert_eq!(
        challenges(&expired),
        ["Bearer realm=\"introspectd\", error=\"invalid_token\""]
    );
    let mut narrow = good.clone();
    narrow["scope"] = json!("orders:write");
    let forbidden = get(Some(mint(signer, &narrow))).await?;
    assert_eq!(forbidden.status(), 403);
    let challenge = challenges(&forbidden);
    assert_eq!(challenge.len(), 1, "{challenge:?}");
    assert!(challenge[0].contains("insufficient_scope"), "{challenge:?}");
    server
        .revoke(Target::Jti(pb::JtiTarget {
            iss: ISS.into(),
            jti: "ng-1".into(),
            exp: None,
        }))
        .await;
    assert_eq!(get(Some(token)).await?.status(), 401);
    assert_eq!(
        upstream.seen().len(),
        4,
        "a refused request reached the upstream"
    );

    // A DPoP-bound token: nginx passes the proof and the request it is for.
    let client_key = key(Algorithm::ES256, "client");
    let jkt =
        introspectd::binding::dpop::thumbprint(&introspectd::binding::dpop::proof_jwk(&client_key))
            .unwrap_or_default();
    let mut bound = good.clone();
    bound["jti"] = json!("ng-dpop");
    bound["cnf"] = json!({ "jkt": jkt });
    let token = mint(signer, &bound);
    let proof = introspectd::binding::dpop::make_proof(
        &client_key,
        &introspectd::binding::dpop::ProofClaims {
            method: "GET",
            uri: url,
            access_token: Some(&token),
            nonce: None,
        },
        now(),
    )?;
    let dpop = |proof: &str| {
        http.get(format!("{url}?page=2"))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .send()
    };
    assert_eq!(
        dpop(&proof).await?.status(),
        200,
        "a good proof through nginx"
    );
    let replayed = dpop(&proof).await?;
    assert_eq!(replayed.status(), 401);
    let challenge = challenges(&replayed);
    assert_eq!(challenge.len(), 1, "{challenge:?}");
    assert!(
        challenge[0].starts_with("DPoP ") && challenge[0].contains("invalid_dpop_proof"),
        "{challenge:?}"
    );
    assert_eq!(
        get(Some(token.clone())).await?.status(),
        401,
        "a DPoP-bound token as Bearer"
    );
    // A request routed by its absolute request line, whose Host header names another
    // server, carrying a proof made for that other server (RFC 9449 section 11.1):
    // the proof is checked against where nginx sent the request, and refused.
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("/", |(_, path)| path);
    let elsewhere = format!("http://other.example/{path}");
    let proof = introspectd::binding::dpop::make_proof(
        &client_key,
        &introspectd::binding::dpop::ProofClaims {
            method: "GET",
            uri: &elsewhere,
            access_token: Some(&token),
            nonce: None,
        },
        now(),
    )?;
    let authority = url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or_default());
    let mut raw = tokio::net::TcpStream::connect(authority).await?;
    let request = format!(
        "GET {url} HTTP/1.1\r\nHost: other.example\r\nAuthorization: DPoP {token}\r\n\
         DPoP: {proof}\r\nConnection: close\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut raw, request.as_bytes()).await?;
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut raw, &mut answer).await?;
    assert!(
        answer.starts_with("HTTP/1.1 401"),
        "a proof for another host: {}",
        answer.lines().next().unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

// === Caddy ===

fn caddy_available(test: &str) -> bool {
    tool_available("caddy", "version", test, "apt-get install caddy")
}

/// Caddy running `examples/gateways/Caddyfile` as written, its addresses replaced by the
/// test's, with its admin endpoint off.
fn caddy(listen: &str, authz: &str, upstream: std::net::SocketAddr) -> Gateway {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let example = include_str!("../../examples/gateways/Caddyfile")
        .replace(":8000", &format!("http://{listen}"))
        .replace("introspectd:8080", authz)
        .replace("orders-api:8080", &upstream.to_string());
    let path = dir.path().join("Caddyfile");
    std::fs::write(&path, format!("{{\n\tadmin off\n}}\n{example}"))
        .unwrap_or_else(|e| unreachable!("{e}"));
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .env("HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| unreachable!("cannot start caddy: {e}"));
    Gateway { child, _dir: dir }
}

#[tokio::test]
async fn caddy_forward_auth_passes_good_tokens_and_stops_the_rest() -> TestResult {
    if !caddy_available("caddy_forward_auth_passes_good_tokens_and_stops_the_rest") {
        return Ok(());
    }
    let setup = Setup::start("caddy", caddy).await;
    setup.a_good_token_reaches_the_upstream().await?;
    let Setup {
        signer, http, url, ..
    } = &setup;
    let mut good = claims(ISS);
    good["scope"] = json!("orders:read");

    // Caddy hands introspectd's denial to the client as it is.
    let missing = http.get(url).send().await?;
    assert_eq!(missing.status(), 401);
    assert!(missing.headers().contains_key("www-authenticate"));
    let mut narrow = good.clone();
    narrow["scope"] = json!("orders:write");
    let forbidden = http
        .get(url)
        .bearer_auth(mint(signer, &narrow))
        .send()
        .await?;
    assert_eq!(forbidden.status(), 403);
    assert_eq!(
        setup.upstream.seen().len(),
        2,
        "a refused request reached the upstream"
    );
    Ok(())
}
