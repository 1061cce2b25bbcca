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
    /// Seconds per phase (health Check, then Introspect); at most 600.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn loadtest(args: LoadtestArgs) -> ExitCode {
    let token = match args.token.clone() {
        Some(token) => token,
        None => {
            let minted = DevIssuer::load_or_create(&args.client.data.data_dir)
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
    let plan = LoadPlan {
        concurrency: args.concurrency,
        duration: std::time::Duration::from_secs(args.seconds),
        api_key: args.client.api_key(),
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
    if let [health, introspect] = results.as_slice() {
        println!(
            "Introspect throughput is {:.2} of health Check throughput on the same server",
            introspect.per_second / health.per_second.max(f64::MIN_POSITIVE)
        );
        if introspect.errors > 0 {
            eprintln!(
                "introspectd loadtest: {} Introspect calls failed or were inactive",
                introspect.errors
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

#[derive(Clone, Copy)]
enum Call {
    Health,
    Introspect,
}

/// Runs the health Check phase, then the Introspect phase (with `token`), over `channels`.
pub async fn run(channels: &[Channel], token: &str, plan: &LoadPlan) -> Vec<PhaseResult> {
    let mut results = Vec::with_capacity(2);
    for (name, call) in [
        ("grpc.health.v1.Health/Check", Call::Health),
        ("Introspect", Call::Introspect),
    ] {
        results.push(phase(name, call, channels, token, plan).await);
    }
    results
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
    for worker in 0..plan.concurrency.max(1) {
        let channel = channels[worker % channels.len().max(1)].clone();
        let token = token.to_owned();
        let api_key = plan.api_key.clone();
        workers.spawn(async move {
            let mut health = HealthClient::new(channel.clone());
            let mut introspection = TokenIntrospectionClient::new(channel);
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let started = Instant::now();
                let ok = match call {
                    Call::Health => health
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .is_ok(),
                    Call::Introspect => {
                        let mut request = tonic::Request::new(IntrospectRequest {
                            token: token.clone(),
                            ..Default::default()
                        });
                        if let Some(value) = api_key
                            .as_ref()
                            .and_then(|key| format!("Bearer {key}").parse().ok())
                        {
                            request.metadata_mut().insert("authorization", value);
                        }
                        introspection
                            .introspect(request)
                            .await
                            .is_ok_and(|answer| answer.get_ref().active)
                    }
                };
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
