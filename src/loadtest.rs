//! `introspectd loadtest`: load on a running server, reported as a ratio to the cheapest
//! call it serves (the gRPC health Check), measured in one run on one machine, so the
//! figure says what introspection costs beyond gRPC itself.
//!
//! Both phases run the same number of concurrent callers over the same connections for
//! the same time; each is bounded in time and stops by itself.

use std::time::Duration;

use tokio::{task::JoinSet, time::Instant};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::grpc::pb::{IntrospectRequest, token_introspection_client::TokenIntrospectionClient};

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
