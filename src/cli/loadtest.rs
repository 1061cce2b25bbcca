//! `introspectd loadtest`: load on a running server, reported as a ratio to the cheapest
//! call it serves (the gRPC health Check), measured in one run on one machine, so the
//! figure says what introspection costs beyond gRPC itself.
//!
//! Both phases run the same number of concurrent callers over the same connections for
//! the same time; each is bounded in time and stops by itself.

use std::{process::ExitCode, time::Duration};

use clap::Args;
use tokio::{task::JoinSet, time::Instant};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{ClientArgs, EXIT_CONFIG};
use crate::dev::{DevIssuer, MintRequest};
use crate::grpc::pb::{
    IntrospectRequest, IntrospectStreamRequest, RevokeRequest, TokenTarget,
    introspect_stream_response::Outcome, revoke_request,
    token_introspection_client::TokenIntrospectionClient,
    token_revocation_client::TokenRevocationClient,
};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, attribute_context, authorization_client::AuthorizationClient,
};

/// What is measured, each against the cheapest call of its surface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `Introspect` against the gRPC health Check (the server's cache decides whether
    /// answers are hot; run it with `cache.max_entries = 0` for cold ones).
    #[value(alias = "hot", alias = "cold")]
    Grpc,
    /// `IntrospectStream` (answers per second) against the unary gRPC health Check.
    Stream,
    /// Envoy's ext_authz `Check` against the gRPC health Check.
    ExtAuthz,
    /// `POST /oauth2/introspect` against `GET /healthz`, over HTTP/1.1.
    Http,
    /// Forward-auth `GET /authz` against `GET /healthz`, over HTTP/1.1.
    Authz,
    /// `Introspect` with the traffic a gateway sees, against the gRPC health Check: of
    /// every 100 calls, 90 ask for the `--tokens` (skewed), 5 for a token never seen
    /// before (verified cold), 3 for a revoked token and 2 for a malformed one. An answer
    /// other than the expected one (active for the first two) counts as an error. It
    /// mints with the dev issuer and revokes 100 of its tokens first (by token: the
    /// records go when the tokens expire), so it needs a key with the revoke role.
    Mixed,
    /// The gRPC health Check alone (for latency at a fixed --rps).
    Health,
}

impl Mode {
    /// (baseline, measured) phases.
    fn phases(self) -> Vec<(&'static str, Call)> {
        const HEALTH: (&str, Call) = ("grpc.health.v1.Health/Check", Call::Health);
        const HEALTHZ: (&str, Call) = ("GET /healthz", Call::Healthz);
        match self {
            Mode::Grpc => vec![HEALTH, ("Introspect", Call::Introspect)],
            Mode::Mixed => vec![HEALTH, ("Introspect (mixed)", Call::Introspect)],
            Mode::Stream => vec![HEALTH, ("IntrospectStream answers", Call::Stream)],
            Mode::ExtAuthz => vec![HEALTH, ("envoy ext_authz Check", Call::ExtAuthz)],
            Mode::Http => vec![HEALTHZ, ("POST /oauth2/introspect", Call::HttpIntrospect)],
            Mode::Authz => vec![HEALTHZ, ("GET /authz", Call::Authz)],
            Mode::Health => vec![HEALTH],
        }
    }
}

#[derive(Args)]
pub struct LoadtestArgs {
    /// The token to introspect; default: --tokens minted by the dev issuer in --data-dir.
    #[arg(long)]
    token: Option<String>,
    /// Distinct tokens to mint and introspect, skewed as real traffic is: nine calls in
    /// ten go to the first tenth of them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    tokens: u64,
    /// Calls per second in all (spread over the callers), for latency at a fixed rate;
    /// default: as fast as the server answers.
    #[arg(long)]
    rps: Option<u64>,
    /// IntrospectStream: requests each stream keeps in flight.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds per phase (the baseline, then the measured call); at most 600.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Grpc)]
    mode: Mode,
    /// The HTTP listener, for `--mode http` (`http://` is assumed without a scheme).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http_addr: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn loadtest(args: LoadtestArgs) -> ExitCode {
    let tokens = match args.token.clone() {
        Some(token) => vec![token],
        None => {
            let minted = DevIssuer::load(&args.client.data.data_dir).and_then(|issuer| {
                let now = crate::unix_now();
                (0..args.tokens)
                    .map(|_| issuer.mint(&MintRequest::default(), now))
                    .collect::<Result<Vec<_>, _>>()
            });
            match minted {
                Ok(tokens) => tokens,
                Err(error) => {
                    eprintln!("introspectd loadtest: no --token and no dev issuer: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
    };
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        match args.client.channel().await {
            Ok(channel) => channels.push(channel),
            Err(error) => {
                eprintln!("introspectd loadtest: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut tokens = Tokens::new(tokens);
    if args.mode == Mode::Mixed {
        match mixed_traffic(&args, &channels[0]).await {
            Ok(mix) => tokens.mix = Some(std::sync::Arc::new(mix)),
            Err(error) => {
                eprintln!("introspectd loadtest: --mode mixed: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let http_addr = if args.http_addr.contains("://") {
        args.http_addr.clone()
    } else {
        format!("http://{}", args.http_addr)
    };
    let plan = LoadPlan {
        concurrency: args.concurrency,
        duration: std::time::Duration::from_secs(args.seconds),
        api_key: args.client.api_key(),
        mode: args.mode,
        http_base: http_addr,
        rps: args.rps,
        window: args.window.max(1),
    };
    eprintln!(
        "introspectd loadtest: {} callers over {} connections, {} s per phase, {} distinct tokens, against {}",
        plan.concurrency,
        channels.len(),
        args.seconds,
        tokens.minted.len(),
        args.client.grpc_addr
    );
    let results = run(&channels, &tokens, &plan).await;
    if let Some(mix) = &tokens.mix
        && mix.fresh_reused() > 0
    {
        eprintln!(
            "introspectd loadtest: all {} fresh tokens were used; {} calls asked for one again (cached by then, so fewer than 5 in 100 calls were cold)",
            mix.fresh.len(),
            mix.fresh_reused()
        );
    }
    for result in &results {
        let cpu = result
            .server_cpu_per_call
            .map(|cpu| format!("  server CPU {:>6.1} µs/call", cpu.as_secs_f64() * 1e6))
            .unwrap_or_default();
        say!(
            "{:<30} {:>10.0} calls/s  p50 {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs{cpu}  ({} calls, {} errors)",
            result.name,
            result.per_second,
            result.p50.as_secs_f64() * 1e6,
            result.p99.as_secs_f64() * 1e6,
            result.p999.as_secs_f64() * 1e6,
            result.calls,
            result.errors
        );
    }
    if let [baseline, measured] = results.as_slice() {
        say!(
            "{} throughput is {:.2} of {} throughput on the same server",
            measured.name,
            measured.per_second / baseline.per_second.max(f64::MIN_POSITIVE),
            baseline.name
        );
        if let (Some(baseline_cpu), Some(measured_cpu)) =
            (baseline.server_cpu_per_call, measured.server_cpu_per_call)
            && !measured_cpu.is_zero()
        {
            // Where the load generator, not the server, sets the pace (one machine for
            // both), the throughput ratio says more about the client than the server.
            say!(
                "{}: {:.2} as many calls per second of server CPU as {} (the throughput ratio where the server sets the pace)",
                measured.name,
                baseline_cpu.as_secs_f64() / measured_cpu.as_secs_f64(),
                baseline.name
            );
        }
        if measured.errors > 0 {
            eprintln!(
                "introspectd loadtest: {} {} calls failed or were refused",
                measured.errors, measured.name
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub concurrency: usize,
    pub duration: Duration,
    /// Sent as `authorization: Bearer`, when the server wants a key.
    pub api_key: Option<String>,
    pub mode: Mode,
    /// `http://host:port` of the HTTP listener.
    pub http_base: String,
    /// Calls per second in all; `None`: as fast as answered.
    pub rps: Option<u64>,
    /// IntrospectStream: requests in flight per stream.
    pub window: usize,
}

/// Tokens never seen by the server that `--mode mixed` mints beforehand, per second of
/// the phase without `--rps`: enough for 160,000 calls/s. Once all are used they come
/// round again, cached by then, and the run says so.
const FRESH_TOKENS_PER_SECOND: u64 = 8_000;
const MAX_FRESH_TOKENS: u64 = 500_000;
/// Tokens `--mode mixed` mints and revokes beforehand.
const REVOKED_TOKENS: u64 = 100;
/// What `--mode mixed` asks for instead of a token: shaped like a JWT (so never sent to
/// an opaque-token endpoint), with a signature that is not base64url.
const MALFORMED: &str = "eyJhbGciOiJFUzI1NiJ9.e30.A";

/// The tokens to introspect, picked with a skew: nine calls in ten go to the first
/// tenth (a gateway sees a few busy clients and a long tail).
#[derive(Debug, Clone)]
pub struct Tokens {
    pub minted: std::sync::Arc<Vec<String>>,
    /// `--mode mixed`: the rest of the mix.
    pub mix: Option<std::sync::Arc<Mix>>,
}

/// The tokens of `--mode mixed` besides the skewed ones.
#[derive(Debug)]
pub struct Mix {
    fresh: Vec<String>,
    next_fresh: std::sync::atomic::AtomicUsize,
    revoked: Vec<String>,
}

impl Mix {
    /// Fresh tokens asked for more than once (all were used and came round again).
    fn fresh_reused(&self) -> usize {
        self.next_fresh
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(self.fresh.len())
    }
}

/// Mints the fresh and the revoked tokens of `--mode mixed`, and revokes the latter.
async fn mixed_traffic(args: &LoadtestArgs, channel: &Channel) -> Result<Mix, String> {
    let issuer = DevIssuer::load(&args.client.data.data_dir)
        .map_err(|error| format!("it mints its own tokens, with the dev issuer: {error}"))?;
    // 5 calls in 100 take a fresh token.
    let fresh_needed = match args.rps {
        Some(rps) => rps.saturating_mul(args.seconds) / 20 + 1_000,
        None => FRESH_TOKENS_PER_SECOND.saturating_mul(args.seconds),
    };
    let fresh = mint_in_parallel(&issuer, fresh_needed.min(MAX_FRESH_TOKENS))?;
    let revoked = mint_in_parallel(&issuer, REVOKED_TOKENS)?;
    let mut revocation = TokenRevocationClient::new(channel.clone());
    for token in &revoked {
        let request = RevokeRequest {
            target: Some(revoke_request::Target::Token(TokenTarget {
                token: token.clone(),
                token_type_hint: None,
            })),
            reason: "loadtest --mode mixed".into(),
        };
        revocation
            .revoke(keyed(request, args.client.api_key().as_deref()))
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => format!(
                    "it revokes tokens, which needs an API key with the revoke role: {}",
                    super::refusal(&status)
                ),
                _ => format!("revoking its tokens failed: {}", super::refusal(&status)),
            })?;
    }
    Ok(Mix {
        fresh,
        next_fresh: std::sync::atomic::AtomicUsize::new(0),
        revoked,
    })
}

/// `count` dev tokens, minted on every core (RS256 signs slowly).
fn mint_in_parallel(issuer: &DevIssuer, count: u64) -> Result<Vec<String>, String> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    let now = crate::unix_now();
    let minted: Vec<Result<Vec<String>, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let share = count / threads + u64::from(thread < count % threads);
                scope.spawn(move || {
                    (0..share)
                        .map(|_| issuer.mint(&MintRequest::default(), now))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|error| error.to_string())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err("a minting thread failed".into()))
            })
            .collect()
    });
    let mut tokens = Vec::new();
    for part in minted {
        tokens.append(&mut part?);
    }
    Ok(tokens)
}

impl Tokens {
    pub fn new(minted: Vec<String>) -> Self {
        Self {
            minted: std::sync::Arc::new(minted),
            mix: None,
        }
    }

    /// The token of call `n`, and whether it should be answered active.
    fn pick(&self, n: u64) -> (&str, bool) {
        let Some(mix) = &self.mix else {
            return (self.skewed(n), true);
        };
        // Scrambled, so each caller (every `--concurrency`-th call) sees the whole mix.
        match (n.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 32) % 100 {
            0..90 => (self.skewed(n), true),
            90..95 => {
                let next = mix
                    .next_fresh
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let token = mix.fresh.get(next % mix.fresh.len().max(1));
                (token.map_or("", String::as_str), true)
            }
            95..98 => {
                let token = mix
                    .revoked
                    .get((n / 100) as usize % mix.revoked.len().max(1));
                (token.map_or("", String::as_str), false)
            }
            _ => (MALFORMED, false),
        }
    }

    fn skewed(&self, n: u64) -> &str {
        let all = self.minted.len() as u64;
        let hot = (all / 10).max(1);
        // A cheap mix of the call number, so workers do not walk the list in step.
        let mixed = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
        let index = if n.is_multiple_of(10) {
            mixed % all
        } else {
            mixed % hot
        };
        self.minted.get(index as usize).map_or("", String::as_str)
    }
}

/// What one phase achieved.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub name: &'static str,
    pub calls: usize,
    pub errors: usize,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    /// The server's own CPU time per call (its `process_cpu_seconds_total`), where its
    /// `/metrics` was reachable.
    pub server_cpu_per_call: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Health,
    Introspect,
    ExtAuthz,
    Healthz,
    Authz,
    HttpIntrospect,
    Stream,
}

/// Runs the mode's baseline phase, then its measured phase (with `tokens`).
pub async fn run(channels: &[Channel], tokens: &Tokens, plan: &LoadPlan) -> Vec<PhaseResult> {
    let mut results = Vec::with_capacity(2);
    warm_up(channels, tokens, plan).await;
    let http = reqwest::Client::new();
    for (name, call) in plan.mode.phases() {
        let cpu_before = server_cpu(&http, &plan.http_base).await;
        let mut result = phase(name, call, channels, tokens, plan).await;
        let cpu_after = server_cpu(&http, &plan.http_base).await;
        if let (Some(before), Some(after)) = (cpu_before, cpu_after)
            && result.calls > 0
        {
            result.server_cpu_per_call = Some(Duration::from_secs_f64(
                (after - before).max(0.0) / result.calls as f64,
            ));
        }
        results.push(result);
    }
    results
}

/// Asks for every `--tokens` token once, through the measured call's surface, before any
/// phase: a hot phase then counts cache hits alone, not each token's first verification
/// (1,000 ES256 tokens: some 80 ms of server CPU inside a 3-second phase). The fresh
/// tokens of `--mode mixed` stay cold. Bounded by `--seconds`, like a phase: with the
/// cache off, or more tokens than it keeps, it warms nothing.
async fn warm_up(channels: &[Channel], tokens: &Tokens, plan: &LoadPlan) {
    let Some(&(_, call)) = plan.mode.phases().get(1) else {
        return;
    };
    // A stream's answers come from the same cache as the unary call's.
    let call = if call == Call::Stream {
        Call::Introspect
    } else {
        call
    };
    let started = Instant::now();
    let deadline = started + plan.duration;
    let http = reqwest::Client::new();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for worker in 0..plan.concurrency.max(1) {
        let mut clients = Clients::new(
            channels[worker % channels.len().max(1)].clone(),
            http.clone(),
        );
        let (tokens, plan, next) = (tokens.minted.clone(), plan.clone(), next.clone());
        workers.spawn(async move {
            let (mut asked, mut failed) = (0usize, 0usize);
            while Instant::now() < deadline
                && let Some(token) =
                    tokens.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
            {
                asked += 1;
                failed += usize::from(!clients.call(call, token, true, &plan).await);
            }
            (asked, failed)
        });
    }
    let (mut asked, mut failed) = (0, 0);
    while let Some(joined) = workers.join_next().await {
        let (worker_asked, worker_failed) = joined.unwrap_or_default();
        asked += worker_asked;
        failed += worker_failed;
    }
    let failures = if failed > 0 {
        format!("; {failed} answers were not active (those tokens stay cold)")
    } else {
        String::new()
    };
    eprintln!(
        "introspectd loadtest: asked for {asked} of the {} tokens once first, in {} ms{failures}",
        tokens.minted.len(),
        started.elapsed().as_millis()
    );
}

/// The server's `process_cpu_seconds_total`, if its `/metrics` answers.
async fn server_cpu(http: &reqwest::Client, base: &str) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("process_cpu_seconds_total "))
        .and_then(|value| value.trim().parse().ok())
}

/// The clients of one worker, one per surface.
struct Clients {
    health: HealthClient<Channel>,
    introspection: TokenIntrospectionClient<Channel>,
    ext_authz: AuthorizationClient<Channel>,
    http: reqwest::Client,
}

impl Clients {
    fn new(channel: Channel, http: reqwest::Client) -> Self {
        Self {
            health: HealthClient::new(channel.clone()),
            introspection: TokenIntrospectionClient::new(channel.clone()),
            ext_authz: AuthorizationClient::new(channel),
            http,
        }
    }

    /// One call; whether it succeeded with the expected answer (`active`, or allowed).
    async fn call(&mut self, call: Call, token: &str, active: bool, plan: &LoadPlan) -> bool {
        let key = plan.api_key.as_deref();
        match call {
            Call::Health => self
                .health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok(),
            Call::Introspect => self
                .introspection
                .introspect(keyed(
                    IntrospectRequest {
                        token: token.to_owned(),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .is_ok_and(|answer| answer.get_ref().active == active),
            Call::ExtAuthz => self
                .ext_authz
                .check(keyed(ext_authz_request(token), key))
                .await
                .is_ok_and(|answer| {
                    answer
                        .get_ref()
                        .status
                        .as_ref()
                        .is_some_and(|s| (s.code == 0) == active)
                }),
            Call::Healthz => self
                .http
                .get(format!("{}/healthz", plan.http_base))
                .send()
                .await
                .is_ok_and(|answer| answer.status().is_success()),
            Call::HttpIntrospect => {
                let mut request = self
                    .http
                    .post(format!("{}/oauth2/introspect", plan.http_base))
                    .form(&[("token", token)]);
                if let Some(key) = &plan.api_key {
                    request = request.bearer_auth(key);
                }
                match request.send().await {
                    Ok(answer) => answer
                        .json::<serde_json::Value>()
                        .await
                        .is_ok_and(|body| body["active"] == serde_json::Value::Bool(active)),
                    Err(_) => false,
                }
            }
            // Streams are driven by `stream`, not call by call.
            Call::Stream => false,
            Call::Authz => {
                let mut request = self
                    .http
                    .get(format!("{}/authz", plan.http_base))
                    .bearer_auth(token);
                if let Some(key) = &plan.api_key {
                    request = request.header("x-introspectd-api-key", key);
                }
                request
                    .send()
                    .await
                    .is_ok_and(|answer| answer.status().is_success() == active)
            }
        }
    }
}

impl Clients {
    /// One IntrospectStream kept `plan.window` requests deep until `deadline`: the
    /// latency of each answer, and how many failed.
    async fn stream(
        &mut self,
        tokens: &Tokens,
        plan: &LoadPlan,
        deadline: Instant,
        seed: u64,
    ) -> (Vec<Duration>, usize) {
        let window = plan.window;
        let slots = window * 2;
        let (tx, rx) = tokio::sync::mpsc::channel(slots);
        let mut sent_at = vec![Instant::now(); slots];
        let mut next_id = 0u64;
        let ask = |id: u64| IntrospectStreamRequest {
            id,
            request: Some(IntrospectRequest {
                token: tokens.pick(seed.wrapping_add(id)).0.to_owned(),
                ..Default::default()
            }),
        };
        for _ in 0..window {
            sent_at[(next_id as usize) % slots] = Instant::now();
            if tx.send(ask(next_id)).await.is_err() {
                return (Vec::new(), 1);
            }
            next_id += 1;
        }
        let request = keyed(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            plan.api_key.as_deref(),
        );
        let mut inbound = match self.introspection.introspect_stream(request).await {
            Ok(response) => response.into_inner(),
            Err(_) => return (Vec::new(), 1),
        };
        let mut latencies = Vec::new();
        let mut errors = 0usize;
        let mut in_flight = window;
        let mut tx = Some(tx);
        while in_flight > 0 {
            let Ok(Some(answer)) = inbound.message().await else {
                errors += in_flight;
                break;
            };
            in_flight -= 1;
            latencies.push(sent_at[(answer.id as usize) % slots].elapsed());
            let active = matches!(
                &answer.outcome,
                Some(Outcome::Response(response)) if response.active
            );
            errors += usize::from(!active);
            if Instant::now() < deadline
                && let Some(sender) = &tx
            {
                sent_at[(next_id as usize) % slots] = Instant::now();
                if sender.send(ask(next_id)).await.is_ok() {
                    next_id += 1;
                    in_flight += 1;
                }
            } else {
                // Ends the request stream once the last answers are in.
                tx = None;
            }
        }
        drop(tx);
        (latencies, errors)
    }
}

/// A request with the caller's API key, when it has one.
fn keyed<T>(message: T, api_key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = api_key.and_then(|key| format!("Bearer {key}").parse().ok()) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The CheckRequest Envoy sends for a request carrying `token`.
fn ext_authz_request(token: &str) -> CheckRequest {
    let headers = std::collections::HashMap::from([
        ("authorization".to_owned(), format!("Bearer {token}")),
        (":path".to_owned(), "/".to_owned()),
    ]);
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".into(),
                    path: "/".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn phase(
    name: &'static str,
    call: Call,
    channels: &[Channel],
    tokens: &Tokens,
    plan: &LoadPlan,
) -> PhaseResult {
    let deadline = Instant::now() + plan.duration;
    let mut workers = JoinSet::new();
    // One HTTP/1.1 connection pool for all workers, as a gateway would keep.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(plan.concurrency.max(1))
        .build()
        .unwrap_or_default();
    let callers = plan.concurrency.max(1);
    for worker in 0..callers {
        let channel = channels[worker % channels.len().max(1)].clone();
        let tokens = tokens.clone();
        let plan = plan.clone();
        let http = http.clone();
        workers.spawn(async move {
            let mut clients = Clients::new(channel, http);
            if call == Call::Stream {
                return clients
                    .stream(&tokens, &plan, deadline, worker as u64 * 1_000_003)
                    .await;
            }
            let mut pace = plan.rps.map(|rps| {
                let per_caller = (rps as f64 / callers as f64).max(0.001);
                let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_caller));
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks
            });
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut n = worker as u64;
            while Instant::now() < deadline {
                if let Some(ticks) = pace.as_mut() {
                    ticks.tick().await;
                }
                // The baselines take no token, and must not use up the fresh ones.
                let (token, active) = match call {
                    Call::Health | Call::Healthz => ("", true),
                    _ => tokens.pick(n),
                };
                n += callers as u64;
                let started = Instant::now();
                let ok = clients.call(call, token, active, &plan).await;
                latencies.push(started.elapsed());
                errors += usize::from(!ok);
            }
            (latencies, errors)
        });
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(joined) = workers.join_next().await {
        if let Ok((mut more, failed)) = joined {
            latencies.append(&mut more);
            errors += failed;
        }
    }
    let elapsed = started.elapsed().max(plan.duration);
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    PhaseResult {
        name,
        calls: latencies.len(),
        errors,
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(0.50),
        p99: percentile(0.99),
        p999: percentile(0.999),
        server_cpu_per_call: None,
    }
}
