//! Fixtures: a controllable JWKS server and an introspectd instance, both on port 0.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use introspectd::{
    Listeners, RunError, RunOptions,
    auth::{ApiKeyEntry, Role, hash_key},
    config::{
        AuthSection, Config, FileConfig, IssuerSection, ServerSection, StoreBackend, StoreSection,
    },
    grpc::pb::{
        self, token_introspection_client::TokenIntrospectionClient,
        token_revocation_client::TokenRevocationClient,
    },
    token::sign::SigningKey,
};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    health_client::HealthClient,
};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub const AUD: &str = "https://api.test";

pub fn now() -> i64 {
    introspectd::unix_now()
}

pub fn key(alg: Algorithm, kid: &str) -> SigningKey {
    match SigningKey::generate(alg, kid) {
        Ok(key) => key,
        Err(e) => unreachable!("key generation failed: {e}"),
    }
}

/// Access-token claims for `iss`, valid for ten minutes.
pub fn claims(iss: &str) -> Value {
    json!({
        "iss": iss,
        "sub": "user-1",
        "aud": AUD,
        "exp": now() + 600,
        "iat": now(),
        "jti": introspectd::token::sign::random_id().unwrap_or_default(),
        "client_id": "client-1",
        "scope": "read write",
        "org_id": "org-9",
    })
}

pub fn mint(key: &SigningKey, claims: &Value) -> String {
    key.mint("at+jwt", claims).unwrap_or_default()
}

// === JWKS server ===

#[derive(Default)]
pub struct JwksState {
    keys: Mutex<Vec<Value>>,
    down: AtomicBool,
    delay_ms: AtomicU64,
    started: AtomicUsize,
    fetches: AtomicUsize,
    cache_control: Mutex<Option<String>>,
    issuer: Mutex<String>,
    /// The `jwks_uri` discovery names, when not this server's own.
    discovered_jwks_uri: Mutex<Option<String>>,
}

/// A JWKS (and OIDC discovery) server whose keys, availability and latency tests change.
pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<JwksState>,
    task: JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let state = Arc::new(JwksState::default());
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(e) => unreachable!("bind: {e}"),
        };
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| unreachable!("{e}"));
        *state.issuer.lock().unwrap_or_else(|e| e.into_inner()) = format!("http://{addr}");
        let app = Router::new()
            .route("/jwks.json", get(jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let server = Self { addr, state, task };
        server.set_keys(keys);
        server
    }

    /// The issuer URL that discovery on this server describes.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn jwks_uri(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn set_keys(&self, keys: &[&SigningKey]) {
        *self.state.keys.lock().unwrap_or_else(|e| e.into_inner()) =
            keys.iter().map(|k| k.public_jwk()).collect();
    }

    /// Publishes these JWKs as they are (a key without `kid`, say).
    pub fn set_jwks(&self, jwks: Vec<Value>) {
        *self.state.keys.lock().unwrap_or_else(|e| e.into_inner()) = jwks;
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Makes discovery name `uri` as the key set's location.
    pub fn set_discovered_jwks_uri(&self, uri: &str) {
        *self
            .state
            .discovered_jwks_uri
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(uri.into());
    }

    pub fn set_cache_control(&self, value: &str) {
        *self
            .state
            .cache_control
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(value.into());
    }

    /// Successful JWKS responses served so far.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// JWKS requests received so far, answered or not.
    pub fn requests_started(&self) -> usize {
        self.state.started.load(Ordering::SeqCst)
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn jwks(State(state): State<Arc<JwksState>>) -> axum::response::Response {
    state.started.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let keys = state.keys.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let cache_control = state
        .cache_control
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut response = Json(json!({ "keys": keys })).into_response();
    if let Some(value) = cache_control.and_then(|v| v.parse().ok()) {
        response.headers_mut().insert("cache-control", value);
    }
    response
}

async fn discovery(State(state): State<Arc<JwksState>>) -> Json<Value> {
    let issuer = state
        .issuer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let jwks_uri = state
        .discovered_jwks_uri
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| format!("{issuer}/jwks.json"));
    Json(json!({ "issuer": issuer, "jwks_uri": jwks_uri }))
}

// === introspectd ===

/// An issuer section for tokens of `iss` with keys from `jwks_uri`.
pub fn issuer_section(iss: &str, jwks_uri: &str, algorithms: &[&str]) -> IssuerSection {
    IssuerSection {
        issuer: iss.into(),
        audiences: vec![AUD.into()],
        algorithms: algorithms.iter().map(|a| (*a).to_owned()).collect(),
        jwks_uri: Some(jwks_uri.into()),
        refresh_min_secs: 1,
        unknown_kid_refetch_secs: 1,
        fetch_timeout_ms: 2_000,
        ..IssuerSection::default()
    }
}

/// An ES256 issuer `iss` whose keys are `signer`'s, inline: no JWKS server needed.
pub fn inline_issuer(iss: &str, signer: &SigningKey) -> IssuerSection {
    IssuerSection {
        jwks_uri: None,
        jwks: Some(introspectd::token::sign::jwks(&[signer]).to_string()),
        ..issuer_section(iss, "http://unused", &["ES256"])
    }
}

pub fn file_config(issuers: Vec<IssuerSection>) -> FileConfig {
    FileConfig {
        server: ServerSection {
            grpc_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            expose_inactive_reason: true,
            shutdown_grace_secs: 5,
            ..ServerSection::default()
        },
        auth: AuthSection {
            anonymous_introspect: true,
            api_keys: vec![
                ApiKeyEntry {
                    name: "test-admin".into(),
                    sha256: hash_key(ADMIN_KEY),
                    roles: vec![Role::Admin],
                },
                ApiKeyEntry {
                    name: "test-reader".into(),
                    sha256: hash_key(READER_KEY),
                    roles: vec![Role::Introspect],
                },
            ],
            ..AuthSection::default()
        },
        store: StoreSection {
            backend: StoreBackend::Memory,
            ..StoreSection::default()
        },
        issuers,
        ..FileConfig::default()
    }
}

pub struct Introspectd {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

impl Introspectd {
    /// Starts the service without waiting for readiness.
    pub async fn start(file: FileConfig) -> Self {
        let config: Config = match file.validate() {
            Ok(config) => config,
            Err(e) => unreachable!("test config invalid: {e}"),
        };
        let listeners = match Listeners::bind(&config).await {
            Ok(listeners) => listeners,
            Err(e) => unreachable!("bind: {e}"),
        };
        let grpc_addr = listeners
            .grpc
            .local_addr()
            .unwrap_or_else(|e| unreachable!("{e}"));
        let http_addr = listeners
            .http
            .local_addr()
            .unwrap_or_else(|e| unreachable!("{e}"));
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(introspectd::run(
            config,
            listeners,
            RunOptions::default(),
            async {
                let _ = rx.await;
            },
        ));
        Self {
            grpc_addr,
            http_addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Starts the service and waits until health reports SERVING.
    pub async fn start_ready(file: FileConfig) -> Self {
        let server = Self::start(file).await;
        server.wait_for_health("", ServingStatus::Serving).await;
        server
    }

    pub async fn channel(&self) -> Channel {
        match Channel::from_shared(format!("http://{}", self.grpc_addr)) {
            Ok(endpoint) => match endpoint.connect().await {
                Ok(channel) => channel,
                Err(e) => unreachable!("connect: {e}"),
            },
            Err(e) => unreachable!("{e}"),
        }
    }

    pub async fn client(&self) -> TokenIntrospectionClient<Channel> {
        TokenIntrospectionClient::new(self.channel().await)
    }

    pub async fn revocation(&self) -> TokenRevocationClient<Channel> {
        TokenRevocationClient::new(self.channel().await)
    }

    /// Revokes as the test admin; panics on an error status.
    pub async fn revoke(&self, target: pb::revoke_request::Target) {
        let request = with_key(
            ADMIN_KEY,
            pb::RevokeRequest {
                target: Some(target),
                reason: "test".into(),
            },
        );
        if let Err(status) = self.revocation().await.revoke(request).await {
            unreachable!("Revoke failed: {status:?}");
        }
    }

    pub async fn health(&self, service: &str) -> ServingStatus {
        let mut health = HealthClient::new(self.channel().await);
        match health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
        {
            Ok(response) => response.into_inner().status(),
            Err(_) => ServingStatus::Unknown,
        }
    }

    /// The health Watch stream of `service`, on a connection of its own.
    pub async fn health_watch(
        &self,
        service: &str,
    ) -> Result<tonic::Streaming<HealthCheckResponse>, tonic::Status> {
        let mut health = HealthClient::new(self.channel().await);
        let request = HealthCheckRequest {
            service: service.into(),
        };
        Ok(health.watch(request).await?.into_inner())
    }

    /// Follows the health Watch stream until `service` reports `wanted` (10 s at most).
    pub async fn wait_for_health(&self, service: &str, wanted: ServingStatus) {
        let watch = async {
            let mut stream = match self.health_watch(service).await {
                Ok(stream) => stream,
                Err(e) => unreachable!("watch: {e}"),
            };
            while let Ok(Some(update)) = stream.message().await {
                if update.status() == wanted {
                    return;
                }
            }
            unreachable!("health stream ended before {wanted:?}");
        };
        if tokio::time::timeout(Duration::from_secs(10), watch)
            .await
            .is_err()
        {
            unreachable!("health of {service:?} never became {wanted:?}");
        }
    }

    pub async fn introspect(&self, token: &str) -> pb::IntrospectResponse {
        self.introspect_with(pb::IntrospectRequest {
            token: token.into(),
            ..Default::default()
        })
        .await
    }

    pub async fn introspect_with(&self, request: pb::IntrospectRequest) -> pb::IntrospectResponse {
        match self.client().await.introspect(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => unreachable!("Introspect failed: {status:?}"),
        }
    }

    /// The value of a metric on `/metrics` whose line starts with `series` (a name, or
    /// a name with its labels); 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let url = format!("http://{}/metrics", self.http_addr);
        let text = match reqwest::get(url).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(e) => unreachable!("metrics: {e}"),
        };
        metric_in(&text, series)
    }

    /// Waits until the metric `series` exceeds `floor`.
    pub async fn wait_for_metric_above(&self, series: &str, floor: f64) {
        eventually(&format!("{series} > {floor}"), || async {
            self.metric(series).await > floor
        })
        .await;
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), RunError> {
        self.begin_stop();
        self.join().await
    }

    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn join(&mut self) -> Result<(), RunError> {
        match self.task.take() {
            Some(task) => match tokio::time::timeout(Duration::from_secs(15), task).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => unreachable!("run panicked: {e}"),
                Err(_) => unreachable!("run did not return after shutdown"),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Introspectd {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An admin API key every test server accepts (see `file_config`).
pub const ADMIN_KEY: &str = "test-admin-key";
/// A key with the introspect role only.
pub const READER_KEY: &str = "test-reader-key";

/// A request carrying `key` as `authorization: Bearer`.
pub fn with_key<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {key}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

pub fn reason(response: &pb::IntrospectResponse) -> pb::InactiveReason {
    pb::InactiveReason::try_from(response.inactive_reason)
        .unwrap_or(pb::InactiveReason::Unspecified)
}

/// Serves `app` on a fresh loopback port for the rest of the test.
pub async fn serve_on_loopback(app: axum::Router) -> SocketAddr {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(e) => unreachable!("bind: {e}"),
    };
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| unreachable!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The sum of the samples in a `/metrics` text whose line starts with `series`.
pub fn metric_in(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(series))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

/// Polls `check` every 50 ms until it holds (10 s at most): for background refreshes,
/// whose timing the test does not control.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!("timed out waiting for: {what}");
}

// === introspectd as a separate process ===

pub struct Process {
    pub child: std::process::Child,
    pub grpc: String,
    pub http: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.signal("TERM")
    }

    /// Sends `signal` (a name `kill` takes) and waits for the process to exit.
    pub fn signal(&mut self, signal: &str) -> std::io::Result<std::process::ExitStatus> {
        self.send(signal)?;
        self.child.wait()
    }

    /// Sends `signal` and returns at once.
    pub fn send(&self, signal: &str) -> std::io::Result<()> {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()?;
        if sent.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("kill -{signal}: {sent}")))
        }
    }
}

pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| unreachable!("{e}"));
    format!("127.0.0.1:{port}")
}

/// Writes a test configuration (see `file_config`) to `dir`, adjusted by `adjust`.
pub fn write_config(
    dir: &std::path::Path,
    issuers: Vec<IssuerSection>,
    adjust: impl FnOnce(&mut FileConfig),
) -> std::path::PathBuf {
    let mut file = file_config(issuers);
    adjust(&mut file);
    let path = dir.join("introspectd.toml");
    std::fs::write(&path, toml::to_string(&file).unwrap_or_default())
        .unwrap_or_else(|e| unreachable!("{e}"));
    path
}

/// Runs `introspectd serve --config config` as its own process and waits for /readyz;
/// `stderr` gives where its standard error goes (called once per try).
pub async fn spawn_serve(
    config: &std::path::Path,
    stderr: impl Fn() -> std::process::Stdio,
) -> Process {
    spawn_with(
        || std::process::Command::new(env!("CARGO_BIN_EXE_introspectd")),
        config,
        stderr,
    )
    .await
}

/// [`spawn_serve`] with the process's open-file limit set to `limit` (`ulimit -n`).
pub async fn spawn_serve_with_open_files(config: &std::path::Path, limit: u32) -> Process {
    spawn_in_shell(
        &format!("ulimit -n {limit}"),
        config,
        std::process::Stdio::null,
    )
    .await
}

/// [`spawn_serve`] after `setup`, a shell command (`ulimit`, an environment variable the
/// spawn itself would remove).
pub async fn spawn_in_shell(
    setup: &str,
    config: &std::path::Path,
    stderr: impl Fn() -> std::process::Stdio,
) -> Process {
    let command = || {
        let mut command = std::process::Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{setup} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_introspectd"));
        command
    };
    spawn_with(command, config, stderr).await
}

async fn spawn_with(
    command: impl Fn() -> std::process::Command,
    config: &std::path::Path,
    stderr: impl Fn() -> std::process::Stdio,
) -> Process {
    // free_addr's ports are free when picked, not when the process binds them: another
    // test may take one in between, and the process then exits. Try fresh ports then.
    for _ in 0..3 {
        let grpc = free_addr();
        let http = free_addr();
        let mut child = command()
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--grpc-addr", &grpc, "--http-addr", &http])
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(stderr())
            .spawn()
            .unwrap_or_else(|e| unreachable!("cannot start introspectd: {e}"));
        let readyz = format!("http://{http}/readyz");
        // A separate process on a loaded 2-core machine: allow it 30 s.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if reqwest::get(&readyz).await.is_ok_and(|r| r.status() == 200) {
                return Process { child, grpc, http };
            }
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    unreachable!("introspectd did not become ready (three tries, fresh ports each)");
}

/// Whether `binary` runs (`binary version_arg` succeeds). When it does not, CI
/// (`INTROSPECTD_REQUIRE_ALL=1`) fails the test and other runs skip it loudly, saying
/// how to install it.
pub fn tool_available(binary: &str, version_arg: &str, test: &str, install: &str) -> bool {
    let found = std::process::Command::new(binary)
        .arg(version_arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    required(found, binary, test, install)
}

/// [`tool_available`] for a binary that has no way to exit 0 without work (wrk): it
/// counts as there when it starts at all.
pub fn tool_starts(binary: &str, test: &str, install: &str) -> bool {
    let found = std::process::Command::new(binary)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    required(found, binary, test, install)
}

fn required(found: bool, binary: &str, test: &str, install: &str) -> bool {
    if !found {
        if std::env::var("INTROSPECTD_REQUIRE_ALL").is_ok_and(|v| v == "1") {
            unreachable!("{test}: {binary} is not installed and INTROSPECTD_REQUIRE_ALL=1");
        }
        eprintln!("SKIPPED {test}: {binary} is not on PATH ({install})");
    }
    found
}

/// Whether the other end closes `stream` (or fails it) within `limit`, whatever it
/// sends before.
pub async fn closed_within(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: Duration,
) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 256];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}
