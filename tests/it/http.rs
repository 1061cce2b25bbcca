//! The RFC 7662 HTTP endpoint.

use std::time::Duration;

use introspectd::config::IssuerSection;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::support::*;

const ISS: &str = "https://http.test/";

async fn server(signer: &introspectd::token::sign::SigningKey) -> Introspectd {
    let section = IssuerSection {
        jwks_uri: None,
        jwks: Some(introspectd::token::sign::jwks(&[signer]).to_string()),
        ..issuer_section(ISS, "http://unused", &["ES256"])
    };
    Introspectd::start_ready(file_config(vec![section])).await
}

async fn post(server: &Introspectd, form: &[(&str, &str)]) -> Result<(u16, Value), reqwest::Error> {
    let response = reqwest::Client::new()
        .post(format!("http://{}/oauth2/introspect", server.http_addr))
        .form(form)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn active_token_answers_rfc7662_members() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = server(&signer).await;
    let token = mint(&signer, &claims(ISS));
    let (status, body) = post(
        &server,
        &[("token", &token), ("token_type_hint", "access_token")],
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(body["active"], json!(true));
    assert_eq!(body["iss"], json!(ISS));
    assert_eq!(body["aud"], json!(AUD));
    assert_eq!(body["scope"], json!("read write"));
    assert_eq!(body["client_id"], json!("client-1"));
    assert_eq!(body["token_type"], json!("Bearer"));
    assert_eq!(body["org_id"], json!("org-9"));
    Ok(())
}

/// Answers about tokens are never stored by a cache on the way (RFC 6749 section 5.1's
/// headers, RFC 7662 section 4): active, inactive, refused or malformed, and revocations.
#[tokio::test]
async fn oauth2_answers_are_never_cached() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = server(&signer).await;
    let http = reqwest::Client::new();
    let token = mint(&signer, &claims(ISS));
    let introspect = format!("http://{}/oauth2/introspect", server.http_addr);
    let revoke = format!("http://{}/oauth2/revoke", server.http_addr);
    for (what, request) in [
        (
            "active",
            http.post(&introspect).form(&[("token", token.as_str())]),
        ),
        (
            "inactive",
            http.post(&introspect).form(&[("token", "garbage")]),
        ),
        ("malformed", http.post(&introspect).body("")),
        ("refused", http.post(&revoke).form(&[("token", "garbage")])),
        (
            "revoked",
            http.post(&revoke)
                .bearer_auth(ADMIN_KEY)
                .form(&[("token", "garbage")]),
        ),
    ] {
        let answer = request.send().await?;
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            header("cache-control").as_deref(),
            Some("no-store"),
            "{what}"
        );
        assert_eq!(header("pragma").as_deref(), Some("no-cache"), "{what}");
    }
    Ok(())
}

#[tokio::test]
async fn inactive_token_is_only_active_false() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = server(&signer).await;
    let mut expired = claims(ISS);
    expired["exp"] = json!(now() - 3600);
    for token in [mint(&signer, &expired), "garbage".to_owned()] {
        let (status, body) = post(&server, &[("token", &token)]).await?;
        assert_eq!(status, 200);
        assert_eq!(body, json!({"active": false}));
    }
    let (status, body) = post(&server, &[("nothing", "here")]).await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"], json!("invalid_request"));
    Ok(())
}

#[tokio::test]
async fn rfc7009_revoke_endpoint_needs_the_revoke_role() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = server(&signer).await;
    let token = mint(&signer, &claims(ISS));
    let url = format!("http://{}/oauth2/revoke", server.http_addr);
    let http = reqwest::Client::new();
    let anonymous = http
        .post(&url)
        .form(&[("token", token.as_str())])
        .send()
        .await?;
    assert_eq!(anonymous.status(), 401);
    let reader = http
        .post(&url)
        .bearer_auth(READER_KEY)
        .form(&[("token", token.as_str())])
        .send()
        .await?;
    assert_eq!(reader.status(), 403);
    let missing = http
        .post(&url)
        .bearer_auth(ADMIN_KEY)
        .form(&[("nothing", "")])
        .send()
        .await?;
    assert_eq!(missing.status(), 400);
    for revoked in [token.as_str(), "not-even-a-token"] {
        let ok = http
            .post(&url)
            .bearer_auth(ADMIN_KEY)
            .form(&[("token", revoked), ("token_type_hint", "refresh_token")])
            .send()
            .await?;
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.text().await?, "", "RFC 7009: nothing revealed");
    }
    let (_, body) = post(&server, &[("token", &token)]).await?;
    assert_eq!(body, json!({"active": false}));
    Ok(())
}

#[tokio::test]
async fn malformed_forms_are_invalid_request_after_authentication() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = server(&signer).await;
    let http = reqwest::Client::new();
    for route in ["introspect", "revoke"] {
        let url = format!("http://{}/oauth2/{route}", server.http_addr);
        let garbage = http
            .post(&url)
            .bearer_auth(ADMIN_KEY)
            .body("token=a&token=b")
            .send()
            .await?;
        assert_eq!(garbage.status(), 400, "{route}");
        let body: Value = garbage.json().await?;
        assert_eq!(body["error"], json!("invalid_request"), "{route}");
    }
    // Without a key, the revoke endpoint answers 401 before looking at the body.
    let url = format!("http://{}/oauth2/revoke", server.http_addr);
    assert_eq!(http.post(&url).body("%%%").send().await?.status(), 401);
    Ok(())
}

#[tokio::test]
async fn bodies_past_max_request_bytes_are_refused_and_bodies_in_pieces_are_read_whole()
-> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = server(&signer).await;
    let http = reqwest::Client::new();
    let max = introspectd::config::ServerSection::default().max_request_bytes;
    for route in ["introspect", "revoke"] {
        let url = format!("http://{}/oauth2/{route}", server.http_addr);
        let oversized = format!("token={}", "a".repeat(max));
        let refused = http
            .post(&url)
            .bearer_auth(ADMIN_KEY)
            .body(oversized)
            .send()
            .await?;
        assert_eq!(refused.status(), 413, "{route}");
        let body: Value = refused.json().await?;
        assert_eq!(body["error"], json!("invalid_request"), "{route}");
    }
    // A body sent in several chunks (chunked transfer encoding) is read as one form.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let token = mint(&signer, &claims(ISS));
    let form = format!("token={token}&token_type_hint=access_token");
    let (head, tail) = form.split_at(form.len() / 2);
    let mut request = format!(
        "POST /oauth2/introspect HTTP/1.1\r\nhost: introspectd\r\nauthorization: Bearer {ADMIN_KEY}\r\n\
         content-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n"
    );
    for chunk in [head, tail] {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    let mut connection = tokio::net::TcpStream::connect(server.http_addr).await?;
    connection.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    connection.read_to_string(&mut answer).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""active":true"#), "{answer}");
    Ok(())
}

/// curl, as a user would send an oversized form: with its length announced, and
/// chunked. It must read the 413, not a reset connection, though the server answers
/// before reading the body.
#[tokio::test]
async fn curl_reads_the_413_for_a_body_past_the_limit() -> TestResult {
    const TEST: &str = "curl_reads_the_413_for_a_body_past_the_limit";
    if !tool_starts("curl", TEST, "apt-get install curl") {
        return Ok(());
    }
    let signer = key(Algorithm::ES256, "es");
    let server = server(&signer).await;
    let folder = tempfile::tempdir()?;
    let form = folder.path().join("form");
    std::fs::write(&form, format!("token={}", "a".repeat(200_000)))?;
    let url = format!("http://{}/oauth2/introspect", server.http_addr);
    for chunked in [false, true] {
        let mut curl = std::process::Command::new("curl");
        curl.args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(["-H", &format!("authorization: Bearer {ADMIN_KEY}")])
        .arg("--data-binary")
        .arg(format!("@{}", form.display()));
        if chunked {
            curl.args(["-H", "transfer-encoding: chunked"]);
        }
        curl.arg(&url);
        let output = tokio::task::spawn_blocking(move || curl.output()).await??;
        let code = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(code, "413", "chunked: {chunked}; {stderr}");
    }
    Ok(())
}

/// What an RFC 7662 client configured with a client id and secret sends, from curl
/// itself (`-u`): the key as the Basic password is taken, a wrong one answered with the
/// Basic challenge.
#[tokio::test]
async fn curl_authenticates_with_the_key_as_its_basic_password() -> TestResult {
    if !crate::cli::curl_available("curl_authenticates_with_the_key_as_its_basic_password") {
        return Ok(());
    }
    let signer = key(Algorithm::ES256, "es");
    let server = server(&signer).await;
    let url = format!("http://{}/oauth2/revoke", server.http_addr);
    let curl = |user: String| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args([
                    "-s",
                    "-D",
                    "-",
                    "-o",
                    "/dev/null",
                    "-u",
                    &user,
                    "-d",
                    "token=garbage",
                ])
                .arg(&url)
                .output()
        })
    };
    let taken = curl(format!("gateway:{ADMIN_KEY}")).await??;
    let taken = String::from_utf8_lossy(&taken.stdout);
    assert!(taken.starts_with("HTTP/1.1 200"), "{taken}");
    let refused = curl("gateway:wrong".into()).await??;
    let refused = String::from_utf8_lossy(&refused.stdout).to_ascii_lowercase();
    assert!(refused.starts_with("http/1.1 401"), "{refused}");
    assert!(
        refused.contains("www-authenticate: basic realm=\"introspectd\""),
        "{refused}"
    );
    Ok(())
}

/// A client may close its side of the connection once it has sent its request (`nc -N`,
/// scripts, some proxies) and still read the answer; a revocation sent that way is
/// applied, not dropped with the connection.
#[tokio::test]
async fn a_request_from_a_client_that_half_closed_is_answered() -> TestResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let signer = key(Algorithm::ES256, "es");
    let server = server(&signer).await;
    for n in 0..5 {
        let token = mint(&signer, &claims(ISS));
        let form = format!("token={token}");
        let request = format!(
            "POST /oauth2/revoke HTTP/1.1\r\nhost: introspectd\r\nauthorization: Bearer {ADMIN_KEY}\r\n\
             content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{form}",
            form.len()
        );
        let mut connection = tokio::net::TcpStream::connect(server.http_addr).await?;
        connection.write_all(request.as_bytes()).await?;
        connection.shutdown().await?;
        let mut answer = String::new();
        connection.read_to_string(&mut answer).await?;
        assert!(answer.starts_with("HTTP/1.1 200"), "try {n}: {answer:?}");
        assert!(!server.introspect(&token).await.active, "try {n}: revoked");
    }
    // The end of the request arrives while the answer is still being decided (here, by
    // an issuer's endpoint that takes 300 ms): the answer still comes.
    let (endpoint, _idp) = crate::limits::slow_idp(Duration::from_millis(300)).await;
    let slow = Introspectd::start_ready(file_config(vec![IssuerSection {
        jwks_uri: None,
        jwks: Some(introspectd::token::sign::jwks(&[&signer]).to_string()),
        introspection_endpoint: Some(endpoint),
        ..issuer_section(ISS, "http://unused", &["ES256"])
    }]))
    .await;
    let form = "token=an-opaque-token";
    let request = format!(
        "POST /oauth2/introspect HTTP/1.1\r\nhost: introspectd\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{form}",
        form.len()
    );
    let mut connection = tokio::net::TcpStream::connect(slow.http_addr).await?;
    connection.write_all(request.as_bytes()).await?;
    connection.shutdown().await?;
    let mut answer = String::new();
    connection.read_to_string(&mut answer).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    Ok(())
}

/// A client that sends requests and never reads the answers is closed once writes to it
/// have waited `server.write_stall_timeout_ms`, instead of holding its slot and buffers.
#[tokio::test]
async fn a_client_that_never_reads_is_closed_after_the_write_stall_timeout() -> TestResult {
    use tokio::io::AsyncWriteExt;
    let signer = key(Algorithm::ES256, "es");
    let mut file = file_config(vec![IssuerSection {
        jwks_uri: None,
        jwks: Some(introspectd::token::sign::jwks(&[&signer]).to_string()),
        ..issuer_section(ISS, "http://unused", &["ES256"])
    }]);
    file.server.write_stall_timeout_ms = 500;
    let server = Introspectd::start_ready(file).await;
    let socket = tokio::net::TcpSocket::new_v4()?;
    // A small receive window, so the server's writes wait soon.
    socket.set_recv_buffer_size(4096)?;
    let mut connection = socket.connect(server.http_addr).await?;
    let request = b"GET /metrics HTTP/1.1\r\nhost: introspectd\r\n\r\n".repeat(400);
    // The server stops reading once its buffers are full: write what it takes.
    let _ = tokio::time::timeout(Duration::from_secs(5), connection.write_all(&request)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        closed_within(&mut connection, Duration::from_secs(1)).await,
        "the connection stayed open"
    );
    Ok(())
}

/// `client_secret_post` (credentials in the form, as some resource servers send them by
/// default) is refused with a description of what is accepted, whether or not anonymous
/// callers may introspect: a wrong secret was silently ignored, a right one refused
/// without a hint.
#[tokio::test]
async fn credentials_in_the_form_are_refused_with_where_they_go() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = server(&signer).await;
    let token = mint(&signer, &claims(ISS));
    for route in ["/oauth2/introspect", "/oauth2/revoke"] {
        let answer = reqwest::Client::new()
            .post(format!("http://{}{route}", server.http_addr))
            .bearer_auth(ADMIN_KEY)
            .form(&[
                ("token", token.as_str()),
                ("client_id", "resource-server"),
                ("client_secret", "wrong"),
            ])
            .send()
            .await?;
        assert_eq!(answer.status(), 401, "{route}");
        let body: Value = answer.json().await?;
        assert_eq!(body["error"], json!("invalid_client"), "{route}");
        let said = body["error_description"].as_str().unwrap_or_default();
        assert!(said.contains("HTTP Basic"), "{route}: {said}");
    }
    let (status, body) = post(&server, &[("token", &token), ("client_secret", "x")]).await?;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("invalid_client")),
        "anonymous"
    );
    let in_query = reqwest::Client::new()
        .post(format!(
            "http://{}/oauth2/introspect?client_secret=x",
            server.http_addr
        ))
        .form(&[("token", token.as_str())])
        .send()
        .await?;
    assert_eq!(in_query.status(), 401, "a secret in the query");
    // Where a key is needed, the form is not read before the caller is known: the
    // refusal still says where credentials go.
    let keyless = reqwest::Client::new()
        .post(format!("http://{}/oauth2/revoke", server.http_addr))
        .form(&[("token", token.as_str()), ("client_secret", ADMIN_KEY)])
        .send()
        .await?;
    assert_eq!(keyless.status(), 401);
    let body: Value = keyless.json().await?;
    let said = body["error_description"].as_str().unwrap_or_default();
    assert!(
        said.contains("client_secret_post is not accepted"),
        "{said}"
    );
    Ok(())
}
