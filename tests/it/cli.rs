//! The `introspectd` binary, as the README uses it.

use std::{
    net::TcpListener,
    process::{Command, Output, Stdio},
    time::Duration,
};

use crate::support::{TestResult, tool_available};

const BIN: &str = env!("CARGO_BIN_EXE_introspectd");

fn run(args: &[&str]) -> std::io::Result<Output> {
    Command::new(BIN).args(args).stdin(Stdio::null()).output()
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[test]
fn check_config_accepts_the_example_and_names_the_bad_key() -> TestResult {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/introspectd.toml");
    let ok = run(&["check-config", "--config", example])?;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\ngrpc_adr = \"0.0.0.0:1\"\n")?;
    let refused = run(&["check-config", "--config", bad.to_str().unwrap_or_default()])?;
    assert_eq!(refused.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("grpc_adr"));

    std::fs::write(
        &bad,
        "[[issuers]]\nissuer = \"https://x.test/\"\naudiences = [\"a\"]\nalgorithms = [\"HS256\"]\njwks_uri = \"https://x.test/jwks\"\n",
    )?;
    let refused = run(&["check-config", "--config", bad.to_str().unwrap_or_default()])?;
    assert_eq!(refused.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("issuers[0].algorithms"));

    // Files the configuration names are read as `serve` reads them at start.
    let missing = dir.path().join("missing");
    for (what, section) in [
        (
            "jwks_file",
            format!(
                "[[issuers]]\nissuer = \"https://x.test/\"\naudiences = [\"a\"]\nalgorithms = [\"ES256\"]\njwks_file = \"{}/jwks.json\"\n",
                missing.display()
            ),
        ),
        (
            "tls",
            format!(
                "[tls]\ncert_file = \"{0}/tls.crt\"\nkey_file = \"{0}/tls.key\"\n",
                missing.display()
            ),
        ),
        (
            "answer_signing",
            format!(
                "[answer_signing]\nissuer = \"https://answers.test\"\nkey_file = \"{}/signing.pem\"\n",
                missing.display()
            ),
        ),
    ] {
        let issuer = "[[issuers]]\nissuer = \"https://y.test/\"\naudiences = [\"a\"]\nalgorithms = [\"ES256\"]\njwks_uri = \"https://y.test/jwks\"\n";
        std::fs::write(
            &bad,
            format!("[auth]\nanonymous_introspect = true\n{section}{issuer}"),
        )?;
        let refused = run(&["check-config", "--config", bad.to_str().unwrap_or_default()])?;
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(64), "{what}: {stderr}");
        assert!(
            stderr.contains(&missing.display().to_string()),
            "{what}: {stderr}"
        );
    }
    Ok(())
}

/// What `serve` refuses at start from the environment (a log filter, RUST_LOG, an OTLP
/// endpoint) or a Redis CA file, check-config refuses too, with 64 and the culprit named.
#[test]
fn check_config_refuses_what_serve_would_at_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("introspectd.toml");
    std::fs::write(
        &config,
        "[auth]\nanonymous_introspect = true\n[store]\nbackend = \"memory\"\n[[issuers]]\nissuer = \"https://y.test/\"\naudiences = [\"a\"]\nalgorithms = [\"ES256\"]\njwks_uri = \"https://y.test/jwks\"\n",
    )?;
    let path = config.to_str().unwrap_or_default();
    let check = |vars: &[(&str, &str)]| {
        Command::new(BIN)
            .args(["check-config", "--config", path])
            .env_remove("RUST_LOG")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .output()
    };
    assert_eq!(check(&[])?.status.code(), Some(0));
    let missing_ca = dir.path().join("missing-ca.pem");
    let missing_ca = missing_ca.to_str().unwrap_or_default();
    // Looks like a certificate, is none.
    let fake_ca = dir.path().join("fake-ca.pem");
    std::fs::write(
        &fake_ca,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )?;
    let fake_ca = fake_ca.to_str().unwrap_or_default();
    for (vars, named) in [
        (&[("INTROSPECTD_LOG__FILTER", "[[[")][..], "log.filter"),
        (&[("RUST_LOG", "info,[[[")][..], "RUST_LOG"),
        (
            &[(
                "INTROSPECTD_TELEMETRY__OTLP_ENDPOINT",
                "http://bad host:4317",
            )][..],
            "telemetry.otlp_endpoint",
        ),
        (
            &[
                ("INTROSPECTD_STORE__BACKEND", "redis"),
                (
                    "INTROSPECTD_STORE__REDIS_URL",
                    "rediss://:pw@127.0.0.1:6380",
                ),
                ("INTROSPECTD_STORE__REDIS_CA_FILE", missing_ca),
            ][..],
            "store.redis_ca_file",
        ),
        (
            &[
                ("INTROSPECTD_STORE__BACKEND", "redis"),
                (
                    "INTROSPECTD_STORE__REDIS_URL",
                    "rediss://:pw@127.0.0.1:6380",
                ),
                ("INTROSPECTD_STORE__REDIS_CA_FILE", fake_ca),
            ][..],
            "store.redis_ca_file",
        ),
        // A trace collector's CA that is not there, for an https collector.
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:4317"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", missing_ca),
            ][..],
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ),
        // introspectd's own CA key, given for a plain collector: a mistake.
        (
            &[
                (
                    "INTROSPECTD_TELEMETRY__OTLP_ENDPOINT",
                    "http://127.0.0.1:4317",
                ),
                ("INTROSPECTD_TELEMETRY__OTLP_CA_FILE", fake_ca),
            ][..],
            "telemetry.otlp_ca_file",
        ),
        // Credentials in the endpoint, which the exporter would not send.
        (
            &[(
                "INTROSPECTD_TELEMETRY__OTLP_ENDPOINT",
                "https://user:hunter2@127.0.0.1:4317",
            )][..],
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
    ] {
        let refused = check(vars)?;
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(64), "{vars:?}: {stderr}");
        assert!(stderr.contains(named), "{vars:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{vars:?}: {stderr}");
    }
    // The standard variables as other SDKs read them: the certificate variable is for
    // https collectors and ignored for a plain one; OTEL_SDK_DISABLED turns export off,
    // endpoint and all.
    for vars in [
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", missing_ca),
        ][..],
        &[
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://bad host:4317"),
        ][..],
    ] {
        let accepted = check(vars)?;
        let stderr = String::from_utf8_lossy(&accepted.stderr);
        assert_eq!(accepted.status.code(), Some(0), "{vars:?}: {stderr}");
    }
    Ok(())
}

#[test]
fn mint_prints_the_token_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().unwrap_or_default();
    // Where no dev issuer ever ran, mint refuses (its token would be UNKNOWN_KEY).
    let refused = run(&["mint", "--data-dir", data])?;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("where `introspectd dev` runs"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(dir.path())?.count(),
        0,
        "mint created a key"
    );
    introspectd::dev::DevIssuer::load_or_create(dir.path(), introspectd::dev::DEV_ALG)?;
    let out = run(&[
        "mint",
        "--data-dir",
        data,
        "--sub",
        "alice",
        "--scope",
        "orders:read",
        "--claim",
        "jti=chosen",
    ])?;
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout)?;
    let token = stdout.trim_end();
    assert_eq!(token.split('.').count(), 3);
    assert!(!token.contains(char::is_whitespace));
    let claims = introspectd::token::unverified_claims(token).ok_or("no claims")?;
    assert_eq!(
        claims["jti"], "chosen",
        "an explicit claim replaces the default"
    );
    assert_eq!(claims["sub"], "alice");
    // The key is created once and reused.
    let again = run(&["mint", "--data-dir", data])?;
    let first_kid = token.split('.').next();
    let second = String::from_utf8(again.stdout)?;
    assert_eq!(
        first_kid,
        second.split('.').next(),
        "same header: same key id"
    );
    // A reader that went away (`| head -0`) is no reason to panic.
    let mut child = Command::new(BIN)
        .args(["mint", "--data-dir", data])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    drop(child.stdout.take());
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    Ok(())
}

/// `dev --alg RS256` makes an RS256 issuer, `mint` follows it, and the directory keeps
/// its algorithm: asking for another is an error naming the file.
#[test]
fn dev_issuer_algorithm_is_chosen_once_per_directory() -> TestResult {
    use introspectd::dev::DevIssuer;
    use jsonwebtoken::Algorithm;
    let dir = tempfile::tempdir()?;
    DevIssuer::load_or_create(dir.path(), Algorithm::RS256)?;
    let data = dir.path().to_str().unwrap_or_default();
    let token = String::from_utf8(run(&["mint", "--data-dir", data])?.stdout)?;
    let header = jsonwebtoken::decode_header(token.trim())?;
    assert_eq!(header.alg, Algorithm::RS256);
    let other = DevIssuer::load_or_create(dir.path(), Algorithm::ES256).map(|_| ());
    let error = other.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        error.contains("dev-issuer-key.json") && error.contains("RS256"),
        "{error}"
    );
    let refused = run(&["dev", "--alg", "HS256", "--data-dir", data])?;
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a symmetric dev issuer is a usage error"
    );
    Ok(())
}

/// The README's walkthrough: `introspectd dev`, `mint`, `introspect`, an ID token refused.
#[test]
fn dev_mint_introspect_walkthrough() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().unwrap_or_default().to_owned();
    let grpc = format!("127.0.0.1:{}", free_port()?);
    let http = format!("127.0.0.1:{}", free_port()?);
    let mut dev = Command::new(BIN)
        .args([
            "dev",
            "--data-dir",
            &data,
            "--grpc-addr",
            &grpc,
            "--http-addr",
            &http,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let ready = wait_ready(&http);

    // A bare host:port works as well as a URL.
    let grpc_url = grpc.clone();
    let outcome = (|| -> TestResult {
        ready?;
        let token = String::from_utf8(run(&["mint", "--data-dir", &data])?.stdout)?;
        let answer = run(&["introspect", "--grpc-addr", &grpc_url, token.trim()])?;
        let answer: serde_json::Value = serde_json::from_slice(&answer.stdout)?;
        assert_eq!(answer["active"], true, "{answer}");
        assert_eq!(answer["sub"], "dev-user");

        // The README's SetSubjectClaims, as written: the claim shows in the next answer.
        if crate::tools::grpcurl_available("dev_mint_introspect_walkthrough (SetSubjectClaims)") {
            let admin_key = std::fs::read_to_string(dir.path().join("admin-api-key"))?;
            crate::tools::grpcurl(&[
                "-plaintext",
                "-H",
                &format!("authorization: Bearer {}", admin_key.trim()),
                "-d",
                r#"{"iss": "https://dev.introspectd.invalid", "sub": "dev-user", "claims": {"role": "admin"}}"#,
                &grpc,
                "introspectd.v1.SubjectClaimsAdmin/SetSubjectClaims",
            ])?;
            let answer = run(&["introspect", "--grpc-addr", &grpc_url, token.trim()])?;
            let answer: serde_json::Value = serde_json::from_slice(&answer.stdout)?;
            assert_eq!(answer["enrichment"]["role"], "admin", "{answer}");
        }

        let id_token =
            String::from_utf8(run(&["mint", "--data-dir", &data, "--id-token"])?.stdout)?;
        let answer = run(&["introspect", "--grpc-addr", &grpc_url, id_token.trim()])?;
        let answer: serde_json::Value = serde_json::from_slice(&answer.stdout)?;
        assert_eq!(answer["active"], false);
        assert_eq!(answer["inactive_reason"], "WRONG_TOKEN_TYPE");

        // A refused call exits 1, with a hint where a key comes from.
        let refused = run(&[
            "introspect",
            "--grpc-addr",
            &grpc_url,
            "--api-key",
            "not-a-key",
            token.trim(),
        ])?;
        assert_eq!(refused.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("--api-key"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );

        // One-second loadtest runs against this server, with `extra` arguments.
        let loadtest = |mode: &str, extra: &[&str]| {
            let mut args = vec![
                "loadtest",
                "--mode",
                mode,
                "--grpc-addr",
                &grpc_url,
                "--http-addr",
                &http,
                "--data-dir",
                &data,
                "--seconds",
                "1",
            ];
            args.extend_from_slice(extra);
            run(&args)
        };
        for (mode, baseline) in [
            ("grpc", "of grpc.health.v1.Health/Check throughput"),
            // Revoked and malformed tokens too: any answer but the expected one fails it.
            ("mixed", "of grpc.health.v1.Health/Check throughput"),
            ("stream", "of grpc.health.v1.Health/Check throughput"),
            ("ext-authz", "of grpc.health.v1.Health/Check throughput"),
            ("http", "of GET /healthz throughput"),
            ("authz", "of GET /healthz throughput"),
        ] {
            let load = loadtest(mode, &["--concurrency", "4", "--tokens", "20"])?;
            let report = String::from_utf8_lossy(&load.stdout);
            assert!(
                load.status.success(),
                "{mode}: {report}\n{}",
                String::from_utf8_lossy(&load.stderr)
            );
            assert!(report.contains(baseline), "{mode}: {report}");
            assert!(report.contains("server CPU"), "{mode}: {report}");
            assert!(
                report.contains("as many calls per second of server CPU as"),
                "{mode}: {report}"
            );
            let progress = String::from_utf8_lossy(&load.stderr);
            assert!(
                progress.contains("asked for 20 of the 20 tokens once first"),
                "{mode}: {progress}"
            );
        }

        // A warm-up the server refused says so: those tokens would be cold in the phase.
        let refused = loadtest(
            "grpc",
            &[
                "--concurrency",
                "2",
                "--tokens",
                "3",
                "--api-key",
                "not-the-key",
            ],
        )?;
        let progress = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{progress}");
        assert!(
            progress.contains("3 answers were not active (those tokens stay cold)"),
            "{progress}"
        );

        // A wrong key is refused with a hint at where keys come from.
        let refused = run(&[
            "revoke",
            "--grpc-addr",
            &grpc_url,
            "--api-key",
            "not-the-key",
            "--jti",
            "j-1",
        ])?;
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("a known API key"), "{stderr}");
        assert!(stderr.contains("./data/admin-api-key"), "{stderr}");

        let jwks = http_get(&http, "/.well-known/jwks.json").ok_or("no JWKS response")?;
        assert!(jwks.starts_with("HTTP/1.1 200"), "{jwks}");
        assert!(jwks.contains(r#""kty":"EC""#), "{jwks}");
        Ok(())
    })();

    // SIGTERM: a clean stop with exit code 0.
    let _ = Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status();
    let status = dev.wait()?;
    let mut stderr = String::new();
    if let Some(mut pipe) = dev.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
    }
    outcome.map_err(|e| format!("{e}\n--- dev stderr ---\n{stderr}"))?;
    assert!(status.success(), "dev exited with {status}\n{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
    Ok(())
}

/// The shell block of the README that follows `marker`, as written.
fn readme_block(marker: &str) -> Result<String, Box<dyn std::error::Error>> {
    let readme = include_str!("../../README.md");
    let after = readme
        .split_once(marker)
        .ok_or_else(|| format!("README has no {marker}"))?
        .1;
    let body = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .ok_or("no sh block after the marker")?
        .0;
    Ok(body.to_owned())
}

/// An `introspectd dev` in a directory of its own, and README blocks run by bash in
/// that directory as written (only the addresses differ, so tests run side by side).
struct ReadmeSession {
    dir: tempfile::TempDir,
    grpc: String,
    http: String,
    dev: Option<std::process::Child>,
}

impl ReadmeSession {
    fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let mut session = Self {
            dir: tempfile::tempdir()?,
            grpc: format!("127.0.0.1:{}", free_port()?),
            http: format!("127.0.0.1:{}", free_port()?),
            dev: None,
        };
        session.restart()?;
        Ok(session)
    }

    /// Starts `introspectd dev` (again) on the same data and addresses, until ready.
    fn restart(&mut self) -> TestResult {
        self.stop();
        self.dev = Some(
            Command::new(BIN)
                .args(["dev", "--grpc-addr", &self.grpc, "--http-addr", &self.http])
                .arg("--data-dir")
                .arg(self.dir.path().join("data"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        wait_ready(&self.http)
    }

    fn stop(&mut self) {
        if let Some(mut dev) = self.dev.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &dev.id().to_string()])
                .status();
            let _ = dev.wait();
        }
    }

    /// The README block after `marker`, with this session's addresses.
    fn block(&self, marker: &str) -> Result<String, Box<dyn std::error::Error>> {
        Ok(readme_block(marker)?
            .replace("127.0.0.1:8080", &self.http)
            .replace("127.0.0.1:50051", &self.grpc))
    }

    /// Runs `script` with bash (`-euo pipefail`), the built binary first on PATH; its
    /// stdout, or an error with both outputs.
    fn bash(&self, script: &str) -> Result<String, Box<dyn std::error::Error>> {
        let bin_dir = std::path::Path::new(BIN).parent().ok_or("no bin dir")?;
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let output = Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env("INTROSPECTD_GRPC_ADDR", &self.grpc)
            .env_remove("INTROSPECTD_DATA_DIR")
            .env_remove("INTROSPECTD_API_KEY")
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            return Err(format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr)).into());
        }
        Ok(stdout)
    }
}

impl Drop for ReadmeSession {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn curl_available(test: &str) -> bool {
    tool_available("curl", "--version", test, "apt-get install curl")
}

/// The README's DPoP walkthrough, as written, against `introspectd dev`.
#[test]
fn dpop_walkthrough_runs_as_written() -> TestResult {
    if !curl_available("dpop_walkthrough_runs_as_written") {
        return Ok(());
    }
    let session = ReadmeSession::start()?;
    let stdout = session.bash(&session.block("<!-- dpop-walkthrough")?)?;
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("DPOP_PROOF_REQUIRED"), "{stdout}");
    assert!(lines[1].contains("\"active\": true"), "{stdout}");
    assert!(lines[2].contains("DPOP_PROOF_INVALID"), "{stdout}");
    assert_eq!(lines[3], "200", "{stdout}");
    let claims = lines[4].split('.').nth(1).ok_or("not a JWT")?;
    let signed: serde_json::Value = serde_json::from_slice(&base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        claims,
    )?)?;
    assert_eq!(signed["aud"], "dev-admin", "{signed}");
    assert_eq!(signed["token_introspection"]["active"], true, "{signed}");
    // What `helm test` runs.
    let health = run(&["health", "--grpc-addr", &session.grpc])?;
    assert!(health.status.success());
    assert_eq!(String::from_utf8_lossy(&health.stdout).trim(), "SERVING");
    Ok(())
}

/// The README's walkthrough blocks (introspect, revoke, grpcurl), as written, against
/// `introspectd dev`, then the revoked token asked again after a restart.
#[test]
fn readme_walkthrough_runs_as_written() -> TestResult {
    if !curl_available("readme_walkthrough_runs_as_written") {
        return Ok(());
    }
    let mut session = ReadmeSession::start()?;
    // The build line is what the test binary already is.
    let first: String = session
        .block("<!-- walkthrough:")?
        .lines()
        .filter(|line| !line.starts_with("cargo build"))
        .collect::<Vec<_>>()
        .join("\n");
    let revoke = session.block("<!-- walkthrough-revoke -->")?;
    let stdout = session.bash(&format!("{first}\n{revoke}\necho \"$TOKEN\" > token.txt"))?;
    for shown in [
        "\"active\": true",
        "WRONG_TOKEN_TYPE",
        "WRONG_AUDIENCE",
        "EXPIRED",
        "INSUFFICIENT_SCOPE",
        "\"active\":true",
    ] {
        assert!(stdout.contains(shown), "{shown} not shown:\n{stdout}");
    }
    assert!(
        stdout.matches("REVOKED").count() >= 2,
        "both revocations shown: {stdout}"
    );
    // The last command's token (alice's, minted after the cut-off) is active.
    let last = stdout.rsplit("\"active\":").next().unwrap_or_default();
    assert!(last.trim_start().starts_with("true"), "{stdout}");
    if crate::tools::grpcurl_available("readme_walkthrough_runs_as_written (grpcurl)") {
        let grpcurl = session.block("<!-- walkthrough-grpcurl -->")?;
        let stdout = session.bash(&format!("TOKEN=$(cat token.txt)\n{grpcurl}"))?;
        assert!(
            stdout.contains("REVOKED") && stdout.contains("SERVING"),
            "{stdout}"
        );
    }
    // "also after restarting `introspectd dev`"
    session.restart()?;
    let after = session.bash("introspectd introspect \"$(cat token.txt)\"")?;
    assert!(after.contains("REVOKED"), "after a restart: {after}");
    Ok(())
}

/// Polls `/readyz` (10 s at most): the dev server is a separate process.
fn wait_ready(http: &str) -> TestResult {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if http_get(http, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("dev server not ready within 10 s".into())
}

/// A plain HTTP/1.1 GET over a blocking socket: status line, headers and body as text.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn usage_errors_exit_2_and_a_port_in_use_is_named() -> TestResult {
    let unknown = run(&["no-such-command"])?;
    assert_eq!(unknown.status.code(), Some(2));
    let unknown_flag = run(&["introspect", "--no-such-flag", "token"])?;
    assert_eq!(unknown_flag.status.code(), Some(2));

    // `serve` itself refuses an invalid configuration with 64, as check-config does.
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\ngrpc_adr = \"0.0.0.0:1\"\n")?;
    let refused = run(&["serve", "--config", bad.to_str().unwrap_or_default()])?;
    assert_eq!(refused.status.code(), Some(64));

    let taken = TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().unwrap_or_default().to_owned();
    let http = format!("127.0.0.1:{}", free_port()?);
    let out = run(&[
        "dev",
        "--data-dir",
        &data,
        "--grpc-addr",
        &addr,
        "--http-addr",
        &http,
    ])?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    Ok(())
}

/// `api-key --format keys-file` prints an entry the keys file accepts as it is, and the
/// default an entry the configuration accepts.
#[test]
fn api_key_entries_fit_where_they_go() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = run(&[
        "api-key",
        "--name",
        "gw",
        "--role",
        "introspect",
        "--format",
        "keys-file",
    ])?;
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout)?.trim().to_owned();
    let stderr = String::from_utf8(out.stderr)?;
    let entry = stderr
        .split_once("\n\n")
        .map(|(_, entry)| entry)
        .unwrap_or_default();
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, entry)?;
    let entries = introspectd::auth::ApiKeys::read_file(&path)?;
    let keys = introspectd::auth::ApiKeys::new(entries, false)?;
    assert_eq!(
        keys.authenticate(&key).map(|caller| caller.name.clone()),
        Some("gw".into())
    );

    let out = run(&["api-key", "--name", "gw", "--role", "admin"])?;
    let stderr = String::from_utf8(out.stderr)?;
    let entry = stderr
        .split_once("\n\n")
        .map(|(_, entry)| entry)
        .unwrap_or_default();
    let config = format!(
        "{entry}\n[[issuers]]\nissuer = \"https://i.test/\"\naudiences = [\"a\"]\njwks_uri = \"https://i.test/jwks\"\n"
    );
    let parsed =
        introspectd::config::FileConfig::parse(&config, &std::collections::BTreeMap::new())?;
    assert!(parsed.validate().is_ok());
    Ok(())
}

/// `--append-to` builds a keys file (the Secret's content) one key at a time, creating it
/// on first use; every key in it authenticates.
#[test]
fn api_key_appends_entries_to_a_keys_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("api-keys.toml");
    let path_arg = path.to_str().unwrap_or_default();
    let mut issued = Vec::new();
    for (name, role) in [("gateway", "introspect"), ("ops", "revoke")] {
        let out = run(&[
            "api-key",
            "--name",
            name,
            "--role",
            role,
            "--format",
            "keys-file",
            "--append-to",
            path_arg,
        ])?;
        assert!(out.status.success(), "{out:?}");
        issued.push((name, String::from_utf8(out.stdout)?.trim().to_owned()));
    }
    let entries = introspectd::auth::ApiKeys::read_file(&path)?;
    let keys = introspectd::auth::ApiKeys::new(entries, false)?;
    for (name, key) in issued {
        assert_eq!(
            keys.authenticate(&key).map(|caller| caller.name.clone()),
            Some(name.into())
        );
    }
    Ok(())
}

/// The container image's `docker run … dev --grpc-addr 0.0.0.0:… --http-addr 0.0.0.0:…`,
/// as close as this machine allows without a container engine: the binary runs as UID
/// 65532 (the image's user) in a working directory that user owns (the image's
/// WORKDIR/VOLUME), with no home directory, and must serve, keeping its key, admin key
/// and store in `./data` there. Switching user needs root (`setpriv`).
#[test]
fn dev_runs_as_the_image_user_in_its_working_directory() -> TestResult {
    const TEST: &str = "dev_runs_as_the_image_user_in_its_working_directory";
    if !tool_available("setpriv", "--version", TEST, "util-linux") {
        return Ok(());
    }
    let workdir = tempfile::tempdir()?;
    std::fs::set_permissions(
        workdir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )?;
    if let Err(error) = std::os::unix::fs::chown(workdir.path(), Some(65532), Some(65532)) {
        if std::env::var("INTROSPECTD_REQUIRE_ALL").is_ok_and(|v| v == "1") {
            unreachable!("{TEST}: cannot hand a directory to UID 65532 ({error}): run as root");
        }
        eprintln!("SKIPPED {TEST}: switching to UID 65532 needs root ({error})");
        return Ok(());
    }
    let grpc_port = free_port()?;
    let http_port = free_port()?;
    let mut dev = Command::new("setpriv")
        .args(["--reuid=65532", "--regid=65532", "--clear-groups", "--"])
        .arg(BIN)
        .args([
            "dev",
            "--grpc-addr",
            &format!("0.0.0.0:{grpc_port}"),
            "--http-addr",
            &format!("0.0.0.0:{http_port}"),
        ])
        .current_dir(workdir.path())
        .env_clear()
        .env("HOME", "/nonexistent")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let http = format!("127.0.0.1:{http_port}");
    let outcome = (|| -> TestResult {
        wait_ready(&http)?;
        let data = workdir.path().join("data");
        let token = run(&["mint", "--data-dir", data.to_str().unwrap_or_default()])?;
        assert!(
            token.status.success(),
            "{}",
            String::from_utf8_lossy(&token.stderr)
        );
        let answer = run(&[
            "introspect",
            "--grpc-addr",
            &format!("127.0.0.1:{grpc_port}"),
            String::from_utf8(token.stdout)?.trim(),
        ])?;
        let answer: serde_json::Value = serde_json::from_slice(&answer.stdout)?;
        assert_eq!(answer["active"], true, "{answer}");
        for kept in ["admin-api-key", "state.redb"] {
            let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(data.join(kept))?);
            assert_eq!(owner, 65532, "{kept} belongs to the image's user");
        }
        Ok(())
    })();
    let _ = dev.kill();
    let _ = dev.wait();
    let mut stderr = String::new();
    if let Some(mut pipe) = dev.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
    }
    outcome.map_err(|e| format!("{e}\n--- dev stderr ---\n{stderr}").into())
}
