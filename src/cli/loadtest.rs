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
use crate::grpc::pb::{IntrospectRequest, token_introspection_client::TokenIntrospectionClient};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, attribute_context, authorization_client::AuthorizationClient,
};

/// What is measured, each against the cheapest call of its surface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `Introspect` against the gRPC health Check.
    Grpc,
    /// Envoy's ext_authz `Check` against the gRPC health Check.
    ExtAuthz,
    /// Forward-auth `GET /authz` against `GET /healthz`, over HTTP/1.1.
    Http,
}

impl Mode {
    /// (baseline, measured) phases.
    fn phases(self) -> [(&'static str, Call); 2] {
        match self {
            Mode::Grpc => [
                ("grpc.health.v1.Health/Check", Call::Health),
                ("Introspect", Call::Introspect),
            ],
            Mode::ExtAuthz => [
                ("grpc.health.v1.Health/Check", Call::Health),
                ("envoy ext_authz Check", Call::ExtAuthz),
            ],
            Mode::Http => [("GET /healthz", Call::Healthz), ("GET /authz", Call::Authz)],
        }
    }
}

#[derive(Args)]
pub struct LoadtestArgs {
    /// The token to introspect; default: one minted by the dev issuer in --data-dir.
    #[arg(long)]
    token: Option<String>,
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
    let token = match args.token.clone() {
        Some(token) => token,
        None => {
            let minted = DevIssuer::load(&args.client.data.data_dir)
                .and_then(|issuer| issuer.mint(&MintRequest::default(), crate::unix_now()));
            match minted {
                Ok(token) => token,
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
    };
    eprintln!(
        "introspectd loadtest: {} callers over {} connections, {} s per phase, against {}",
        plan.concurrency,
        channels.len(),
        args.seconds,
        args.client.grpc_addr
    );
    let results = run(&channels, &token, &plan).await;
    for result in &results {
        println!(
            "{:<30} {:>10.0} calls/s  p50 {:>8.1} µs  p99 {:>8.1} µs  ({} calls, {} errors)",
            result.name,
            result.per_second,
            result.p50.as_secs_f64() * 1e6,
            result.p99.as_secs_f64() * 1e6,
            result.calls,
            result.errors
        );
    }
    if let [baseline, measured] = results.as_slice() {
        println!(
            "{} throughput is {:.2} of {} throughput on the same server",
            measured.name,
            measured.per_second / baseline.per_second.max(f64::MIN_POSITIVE),
            baseline.name
        );
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Health,
    Introspect,
    ExtAuthz,
    Healthz,
    Authz,
}

/// Runs the mode's baseline phase, then its measured phase (with `token`).
pub async fn run(channels: &[Channel], token: &str, plan: &LoadPlan) -> Vec<PhaseResult> {
    let mut results = Vec::with_capacity(2);
    for (name, call) in plan.mode.phases() {
        results.push(phase(name, call, channels, token, plan).await);
    }
    results
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

    /// One call; whether it succeeded (and, for the decisions, allowed the token).
    async fn call(&mut self, call: Call, token: &str, plan: &LoadPlan) -> bool {
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
                .is_ok_and(|answer| answer.get_ref().active),
            Call::ExtAuthz => self
                .ext_authz
                .check(keyed(ext_authz_request(token), key))
                .await
                .is_ok_and(|answer| {
                    answer
                        .get_ref()
                        .status
                        .as_ref()
                        .is_some_and(|s| s.code == 0)
                }),
            Call::Healthz => self
                .http
                .get(format!("{}/healthz", plan.http_base))
                .send()
                .await
                .is_ok_and(|answer| answer.status().is_success()),
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
                    .is_ok_and(|answer| answer.status().is_success())
            }
        }
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
    token: &str,
    plan: &LoadPlan,
) -> PhaseResult {
    let deadline = Instant::now() + plan.duration;
    let mut workers = JoinSet::new();
    // One HTTP/1.1 connection pool for all workers, as a gateway would keep.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(plan.concurrency.max(1))
        .build()
        .unwrap_or_default();
    for worker in 0..plan.concurrency.max(1) {
        let channel = channels[worker % channels.len().max(1)].clone();
        let token = token.to_owned();
        let plan = plan.clone();
        let http = http.clone();
        workers.spawn(async move {
            let mut clients = Clients::new(channel, http);
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let started = Instant::now();
                let ok = clients.call(call, &token, &plan).await;
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
    }
}
