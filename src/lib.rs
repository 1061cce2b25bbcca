//! introspectd: token introspection beside your services.
//!
//! ```text
//! main.rs ─► config (file + env → Config) ─► run(config, listeners, shutdown)
//!   run: keys (per-issuer key sets + refresh tasks)
//!        introspect (Introspector: cache → token validation → per-call policy)
//!        grpc (tonic: TokenIntrospection, health, reflection)   ─┐ translate only
//!        http (axum: RFC 7662 endpoint, /healthz, /readyz)       ─┘
//! ```
//!
//! | module | role |
//! | --- | --- |
//! | [`config`] | the TOML file and `INTROSPECTD_*` overrides, validated into [`config::Config`] |
//! | [`token`] | pure validation: token + issuer policy + key set + now → claims or a reason |
//! | [`keys`] | issuers, their key-set snapshots, JWKS fetch, discovery, refresh |
//! | [`cache`] | verified tokens by SHA-256 |
//! | [`opaque`] | opaque tokens, asked of their issuer's RFC 7662 endpoint |
//! | [`revocation`] | the revocation set; revoke, check and watch |
//! | [`statelog`] | the ordered log of changes: memory, embedded (redb), Redis Streams |
//! | [`enrich`] | enrichers and per-subject claims |
//! | [`auth`] | API keys and roles |
//! | [`introspect`] | the [`introspect::Introspector`] facade used by every surface |
//! | [`grpc`], [`http`] | transports |
//! | [`dev`] | the local issuer of `introspectd dev` and `introspectd mint` |
//! | [`loadtest`] | `introspectd loadtest`: load on a running server, as a ratio to health Check |
//! | [`telemetry`] | logs, traces, metrics |

#![forbid(unsafe_code)]

pub mod auth;
pub mod cache;
pub mod config;
pub mod dev;
pub mod enrich;
pub mod grpc;
pub mod http;
pub mod introspect;
pub mod keys;
pub mod loadtest;
pub mod opaque;
pub mod outbound;
pub mod revocation;
pub mod statelog;
pub mod telemetry;
pub mod token;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::grpc::pb::{
    subject_claims_admin_server::SubjectClaimsAdminServer,
    token_introspection_server::TokenIntrospectionServer,
    token_revocation_server::TokenRevocationServer,
};
use crate::introspect::Introspector;

/// Seconds since the Unix epoch: the one place the wall clock is read for token rules.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Listeners bound by the caller (port 0 in tests), so addresses are known before `run`.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            grpc: TcpListener::bind(config.grpc_addr).await?,
            http: TcpListener::bind(config.http_addr).await?,
        })
    }
}

/// What `run` serves beyond the configuration.
#[derive(Default)]
pub struct RunOptions {
    /// Dev mode: the local issuer's JWKS, served at `/.well-known/jwks.json`.
    pub dev_jwks: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] keys::KeysError),
    #[error("cannot open the state store: {0}")]
    Store(#[from] statelog::LogError),
    #[error("invalid enrichment: {0}")]
    Enrichment(enrich::EnrichConfigError),
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// How often expired entries leave the verified-token cache.
const CACHE_PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// Serves until `shutdown` resolves, then drains: health goes NOT_SERVING, listeners
/// stop accepting, and in-flight calls get `shutdown_grace` to finish.
pub async fn run(
    config: Config,
    listeners: Listeners,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let shown = |addr: std::io::Result<std::net::SocketAddr>| {
        addr.map_or_else(|e| e.to_string(), |a| a.to_string())
    };
    tracing::info!(
        grpc.addr = %shown(listeners.grpc.local_addr()),
        http.addr = %shown(listeners.http.local_addr()),
        "listening"
    );
    let stop_tasks = CancellationToken::new();
    let drain = CancellationToken::new();
    let _stop_on_exit = stop_tasks.clone().drop_guard();

    let http_client = keys::http_client()?;
    let issuers = Arc::new(keys::Issuers::new(
        config.issuers.clone(),
        http_client.clone(),
    ));
    let mut background = JoinSet::new();
    for issuer in issuers.iter() {
        let task = keys::spawn_refresh(issuer.clone(), stop_tasks.clone());
        background.spawn(async move {
            let _ = task.await;
        });
    }
    let revocation_set = Arc::new(revocation::RevocationSet::new());
    let subject_claims = Arc::new(enrich::SubjectClaims::new());
    let applier = statelog::Applier::new(revocation_set.clone(), subject_claims.clone());
    let (state_log, store_ready) =
        statelog::StateLog::open(&config.store, applier.clone(), stop_tasks.clone()).await?;
    let state_log = Arc::new(state_log);
    tracing::info!(
        backend = ?config.store,
        records = revocation_set.size().total(),
        "state store opened"
    );
    let claims_admin = Arc::new(enrich::ClaimsAdmin::new(
        state_log.clone(),
        applier.clone(),
        issuers.clone(),
    ));
    let revocations = Arc::new(revocation::Revocations::new(
        revocation_set.clone(),
        state_log.clone(),
        applier,
        issuers.clone(),
        config.opaque_token_ttl_secs,
    ));
    let mut pipelines = std::collections::HashMap::new();
    for issuer in &config.issuers {
        let pipeline =
            enrich::Pipeline::new(&issuer.enrich, &http_client).map_err(RunError::Enrichment)?;
        pipelines.insert(issuer.issuer.clone(), Arc::new(pipeline));
    }
    let introspector = Arc::new(Introspector::new(
        issuers.clone(),
        revocation_set,
        subject_claims,
        pipelines,
        config.cache_max_entries,
        config.max_token_bytes,
    ));
    {
        let introspector = introspector.clone();
        background.spawn(every(
            "cache purge",
            CACHE_PURGE_INTERVAL,
            stop_tasks.clone(),
            move || {
                introspector.cache().purge_expired(unix_now());
                std::future::ready(())
            },
        ));
        let revocations = revocations.clone();
        background.spawn(every(
            "revocation purge",
            config.purge_interval,
            stop_tasks.clone(),
            move || {
                let revocations = revocations.clone();
                async move { purge_revocations(&revocations).await }
            },
        ));
    }
    let api_keys = Arc::new(config.api_keys.clone());
    let metrics = telemetry::metrics::Metrics::new();
    {
        let metrics = metrics.clone();
        background.spawn(every(
            "metrics upkeep",
            METRICS_UPKEEP_INTERVAL,
            stop_tasks.clone(),
            move || {
                metrics.upkeep();
                std::future::ready(())
            },
        ));
    }
    let applier_for_metrics = revocations.applier().clone();

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<TokenIntrospectionServer<grpc::IntrospectionService>>()
        .await;
    health
        .set_service_status(grpc::LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    let (ready_tx, ready_rx) = watch::channel(false);
    {
        let issuers = issuers.clone();
        let health = health.clone();
        let ready_tx = ready_tx.clone();
        let stop = stop_tasks.clone();
        let mut store_ready = store_ready;
        background.spawn(async move {
            let everything_loaded = async {
                issuers.wait_all_loaded().await;
                let _ = store_ready.wait_for(|ready| *ready).await;
            };
            tokio::select! {
                () = everything_loaded => {
                    health.set_service_status("", ServingStatus::Serving).await;
                    health.set_serving::<TokenIntrospectionServer<grpc::IntrospectionService>>().await;
                    ready_tx.send_replace(true);
                    tracing::info!("ready: every issuer's keys loaded and the store caught up");
                }
                () = stop.cancelled() => {}
            }
        });
    }

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(grpc::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RunError::Http(std::io::Error::other(e)))?;
    let introspection = TokenIntrospectionServer::new(grpc::IntrospectionService::new(
        introspector.clone(),
        api_keys.clone(),
        metrics.clone(),
        config.expose_inactive_reason,
    ))
    .max_decoding_message_size(config.max_request_bytes);
    let revocation_service = TokenRevocationServer::new(grpc::RevocationService::new(
        revocations.clone(),
        api_keys.clone(),
        metrics.clone(),
        drain.clone(),
    ))
    .max_decoding_message_size(config.max_request_bytes);

    let grpc_drain = drain.clone();
    let grpc_server = tonic::transport::Server::builder()
        .trace_fn(|request| {
            let span = tracing::info_span!("grpc", grpc.path = %request.uri().path());
            telemetry::parent_from_headers(&span, request.headers());
            span
        })
        .add_service(health_service)
        .add_service(reflection)
        .add_service(introspection)
        .add_service(revocation_service)
        .add_service(
            SubjectClaimsAdminServer::new(grpc::ClaimsService::new(
                claims_admin,
                api_keys.clone(),
                metrics.clone(),
            ))
            .max_decoding_message_size(config.max_request_bytes),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listeners.grpc), async move {
            grpc_drain.cancelled().await;
        });
    let http_drain = drain.clone();
    let http_server = axum::serve(
        listeners.http,
        http::router(http::HttpState {
            observed: Arc::new(telemetry::metrics::Observed {
                metrics: metrics.clone(),
                issuers: issuers.clone(),
                introspector: introspector.clone(),
                applier: applier_for_metrics,
                state_log: state_log.clone(),
                ready: ready_rx.clone(),
            }),
            metrics,
            introspector,
            revocations,
            api_keys,
            ready: ready_rx,
            dev_jwks: options.dev_jwks.map(Arc::new),
        }),
    )
    .with_graceful_shutdown(async move { http_drain.cancelled().await });

    let mut grpc_server = std::pin::pin!(grpc_server);
    let mut http_server = std::pin::pin!(http_server.into_future());
    let early_exit = tokio::select! {
        () = shutdown => None,
        result = &mut grpc_server => Some(result.map_err(RunError::from)),
        result = &mut http_server => Some(result.map_err(RunError::from)),
    };
    if let Some(result) = early_exit {
        tracing::error!("a server stopped on its own; shutting down");
        return result;
    }

    tracing::info!(grace = ?config.shutdown_grace, "shutting down: draining in-flight calls");
    ready_tx.send_replace(false);
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<TokenIntrospectionServer<grpc::IntrospectionService>>()
        .await;
    drain.cancel();
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        let (grpc, http) = tokio::join!(grpc_server, http_server);
        grpc.map_err(RunError::from)?;
        http.map_err(RunError::from)
    })
    .await;
    stop_tasks.cancel();
    while background.join_next().await.is_some() {}
    match drained {
        Ok(result) => {
            tracing::info!("stopped");
            result
        }
        Err(_) => {
            tracing::warn!(grace = ?config.shutdown_grace, "grace period ran out; in-flight calls were cut");
            Ok(())
        }
    }
}

/// How often histogram samples are folded into buckets when nobody scrapes.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Runs `work` every `period` until `stop`; the background tasks of `run` are all this.
async fn every<F, Fut>(name: &'static str, period: Duration, stop: CancellationToken, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => work().await,
            () = stop.cancelled() => break,
        }
    }
    tracing::debug!(task = name, "stopped");
}

/// Forgets revocations past their `forget_after`, in memory and in the log.
async fn purge_revocations(revocations: &revocation::Revocations) {
    let now = unix_now();
    let forgotten = revocations.set().purge(now);
    match revocations.log().compact(now).await {
        Ok(removed) => tracing::debug!(forgotten, removed, "revocations purged"),
        Err(error) => tracing::warn!(%error, "state log compaction failed"),
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
