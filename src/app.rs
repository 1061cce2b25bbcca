//! The application: [`App::build`] assembles the components from a validated
//! [`Config`] (opening the state store is its only I/O), and [`App::serve`] runs them
//! on listeners the caller bound, until shutdown.
//!
//! Every background task is started through one [`Tasks`] set, by name, and is stopped
//! and joined before `serve` returns; the state store is closed then too, so a second
//! `App` can open the same embedded file at once.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;
use tonic_health::{
    ServingStatus,
    pb::health_server::{Health, HealthServer},
    server::HealthReporter,
};

use crate::auth::ApiKeys;
use crate::config::Config;
use crate::enrich::{ClaimsAdmin, Pipeline, SubjectClaims};
use crate::grpc::{
    self,
    layers::{AuthLayer, LimitLayer, MetricsLayer},
    pb::{
        subject_claims_admin_server::SubjectClaimsAdminServer,
        token_revocation_server::TokenRevocationServer,
    },
};
use crate::http;
use crate::introspect::Introspector;
use crate::keys::{self, Issuers};
use crate::listener::{self, Incoming};
use crate::outbound::{self, OutboundError};
use crate::revocation::{RevocationSet, Revocations};
use crate::signing::AnswerSigner;
use crate::statelog::{Applier, LogError, StateLog};
use crate::tasks::Tasks;
use crate::telemetry::metrics::{Metrics, Observed};
use crate::tls::{Protocol, Tls};
use crate::unix_now;

/// How often expired entries leave the verified-token cache.
const CACHE_PURGE_INTERVAL: Duration = Duration::from_secs(30);
/// How often histogram samples are folded into buckets when nobody scrapes.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Listeners bound by the caller (port 0 in tests), so addresses are known before
/// serving.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Self::bind_to(config.grpc_addr, config.http_addr).await
    }

    pub async fn bind_to(grpc: SocketAddr, http: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            grpc: bind(grpc).await?,
            http: bind(http).await?,
        })
    }
}

/// Binds `addr`; the error names the address.
async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// What the app serves beyond the configuration.
#[derive(Default)]
pub struct RunOptions {
    /// Dev mode: the local issuer's JWKS, served at `/.well-known/jwks.json`.
    pub dev_jwks: Option<serde_json::Value>,
    /// Dev mode: a signer for answers, instead of `[answer_signing]`.
    pub answer_signer: Option<AnswerSigner>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] OutboundError),
    #[error("cannot open the state store: {0}")]
    Store(#[from] LogError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("answer signing: {0}")]
    Signing(#[from] crate::signing::SigningError),
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// The assembled service, ready to serve.
pub struct App {
    config: Config,
    dev_jwks: Option<Arc<serde_json::Value>>,
    issuers: Arc<Issuers>,
    introspector: Arc<Introspector>,
    revocations: Arc<Revocations>,
    claims_admin: Arc<ClaimsAdmin>,
    state_log: Arc<StateLog>,
    /// Applies the state log; caught up once the revocation set is complete.
    applier: Arc<Applier>,
    api_keys: Arc<ApiKeys>,
    metrics: Arc<Metrics>,
    /// How gateways are answered (ext_authz and /authz share it).
    gateway: Arc<crate::gateway::Settings>,
    /// TLS for both listeners, when configured.
    tls: Option<Arc<Tls>>,
    /// Signs answers for callers that ask (RFC 9701), when configured.
    signer: Option<Arc<AnswerSigner>>,
    tasks: Tasks,
}

impl App {
    /// Assembles every component. The state store is opened (and replayed, or its
    /// tailer started); nothing is fetched and nothing listens yet.
    pub async fn build(config: Config, options: RunOptions) -> Result<Self, BuildError> {
        // First: a wrong certificate path should not wait for the store to open.
        let tls = config.tls.clone().map(Tls::load).transpose()?;
        let signer = match options.answer_signer {
            Some(signer) => Some(Arc::new(signer)),
            None => config
                .answer_signing
                .as_ref()
                .map(AnswerSigner::load)
                .transpose()?
                .map(Arc::new),
        };
        let http_client = outbound::client()?;
        let issuers = Arc::new(Issuers::new(
            config
                .issuers
                .iter()
                .map(|issuer| issuer.keys.clone())
                .collect(),
            http_client.clone(),
        ));
        let tasks = Tasks::new();
        let revocation_set = Arc::new(RevocationSet::new());
        let subject_claims = Arc::new(SubjectClaims::new());
        let applier = Applier::new(revocation_set.clone(), subject_claims.clone());
        let state_log = StateLog::open(&config.store, applier.clone(), &tasks).await?;
        let state_log = Arc::new(state_log);
        tracing::info!(
            backend = ?config.store,
            records = revocation_set.size().total(),
            "state store opened"
        );
        let claims_admin = Arc::new(ClaimsAdmin::new(
            state_log.clone(),
            applier.clone(),
            issuers.clone(),
        ));
        let revocations = Arc::new(Revocations::new(
            revocation_set.clone(),
            state_log.clone(),
            applier.clone(),
            issuers.clone(),
            config.opaque_token_ttl_secs,
        ));
        let pipelines = config
            .issuers
            .iter()
            .filter_map(|settings| {
                let iss = &settings.keys.policy.issuer;
                let budget = issuers.get(iss)?.budget();
                let pipeline = Pipeline::new(&settings.enrich, &http_client, budget);
                Some((iss.clone(), Arc::new(pipeline)))
            })
            .collect();
        let introspector = Arc::new(
            Introspector::new(
                issuers.clone(),
                revocation_set,
                subject_claims,
                pipelines,
                config.cache_max_entries,
                config.max_token_bytes,
            )
            .with_dpop(config.dpop.clone()),
        );
        Ok(Self {
            tls,
            signer,
            api_keys: Arc::new(config.api_keys.clone()),
            gateway: Arc::new(config.gateway.clone()),
            dev_jwks: options.dev_jwks.map(Arc::new),
            config,
            issuers,
            introspector,
            revocations,
            claims_admin,
            state_log,
            applier,
            metrics: Metrics::new(),
            tasks,
        })
    }

    /// Serves until `shutdown` resolves, then drains: health goes NOT_SERVING,
    /// listeners stop accepting, in-flight calls get `shutdown_grace` to finish, and
    /// every task is stopped and joined.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let shown = |addr: std::io::Result<SocketAddr>| {
            addr.map_or_else(|e| e.to_string(), |a| a.to_string())
        };
        tracing::info!(
            tls = self.tls.is_some(),
            grpc.addr = %shown(listeners.grpc.local_addr()),
            http.addr = %shown(listeners.http.local_addr()),
            max_connections = self.listener_limits().max_connections,
            "listening"
        );
        self.start_background_tasks();
        let (health, health_service) = tonic_health::server::health_reporter();
        set_serving(&health, false).await;
        health
            .set_service_status(grpc::LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
        let (ready_tx, ready_rx) = watch::channel(false);
        let drain = CancellationToken::new();
        let stop_readiness = CancellationToken::new();
        self.report_readiness(health.clone(), ready_tx.clone(), stop_readiness.clone());

        let grpc_server = self.grpc_server(health_service, listeners.grpc, drain.clone())?;
        let http_server = self.http_server(listeners.http, ready_rx, drain.clone());
        let mut grpc_server = std::pin::pin!(grpc_server);
        let mut http_server = std::pin::pin!(http_server);
        let early_exit = tokio::select! {
            () = shutdown => None,
            result = &mut grpc_server => Some(result.map_err(ServeError::from)),
            result = &mut http_server => Some(result.map_err(ServeError::from)),
        };
        let result = match early_exit {
            Some(result) => {
                tracing::error!("a server stopped on its own; shutting down");
                result
            }
            None => {
                let grace = self.config.shutdown_grace;
                tracing::info!(?grace, "shutting down: draining in-flight calls");
                stop_readiness.cancel();
                ready_tx.send_replace(false);
                set_serving(&health, false).await;
                drain.cancel();
                drained(grace, grpc_server, http_server).await
            }
        };
        self.tasks.shutdown().await;
        self.state_log.close().await;
        tracing::info!("stopped");
        result
    }

    fn start_background_tasks(&self) {
        if let Some(tls) = &self.tls {
            self.tasks
                .spawn("TLS reload", tls.clone().keep_fresh(self.tasks.rereads()));
        }
        for issuer in self.issuers.iter() {
            let name = format!("key refresh {}", issuer.policy.issuer);
            self.tasks
                .spawn(name, keys::keep_fresh(issuer.clone(), self.tasks.rereads()));
        }
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hangups) => {
                let tasks = self.tasks.clone();
                self.tasks.spawn("SIGHUP", async move {
                    while hangups.recv().await.is_some() {
                        tracing::info!(
                            "SIGHUP received: reading the API keys file, the TLS files and the issuers' key sets again"
                        );
                        tasks.reread_now();
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "cannot listen for SIGHUP"),
        }
        if self.api_keys.has_file() {
            let api_keys = self.api_keys.clone();
            // Said once when the file goes bad and once when it is good again, not on
            // every check in between.
            let failing = std::sync::atomic::AtomicBool::new(false);
            self.tasks
                .every("API keys reload", self.config.api_keys_reload, move || {
                    let outcome = api_keys.reread_file();
                    let was_failing =
                        failing.swap(outcome.is_err(), std::sync::atomic::Ordering::Relaxed);
                    match outcome {
                        Ok(true) => tracing::info!("API keys file changed; its keys now decide"),
                        Ok(false) if was_failing => {
                            tracing::info!("API keys file usable again; its keys decide");
                        }
                        Ok(false) => {}
                        Err(error) if !was_failing => tracing::warn!(
                            %error,
                            "API keys file cannot be used; its previous keys still decide"
                        ),
                        Err(_) => {}
                    }
                    std::future::ready(())
                });
        }
        let introspector = self.introspector.clone();
        self.tasks
            .every("cache purge", CACHE_PURGE_INTERVAL, move || {
                introspector.purge_expired(unix_now());
                std::future::ready(())
            });
        let revocations = self.revocations.clone();
        self.tasks
            .every("revocation purge", self.config.purge_interval, move || {
                let revocations = revocations.clone();
                async move { purge_revocations(&revocations).await }
            });
        let metrics = self.metrics.clone();
        self.tasks
            .every("metrics upkeep", METRICS_UPKEEP_INTERVAL, move || {
                metrics.upkeep();
                std::future::ready(())
            });
    }

    /// Serving once every issuer's keys have loaded and the store has caught up, and
    /// for as long as the store can commit; never again once draining starts.
    fn report_readiness(
        &self,
        health: HealthReporter,
        ready: watch::Sender<bool>,
        stop: CancellationToken,
    ) {
        let issuers = self.issuers.clone();
        let applier = self.applier.clone();
        self.tasks.spawn("readiness", async move {
            issuers.wait_all_loaded().await;
            applier.wait_caught_up().await;
            let mut store = applier.store_health();
            loop {
                let healthy = *store.borrow_and_update();
                if stop.is_cancelled() {
                    return;
                }
                set_serving(&health, healthy).await;
                ready.send_replace(healthy);
                if healthy {
                    tracing::info!("ready: every issuer's keys loaded and the store caught up");
                } else {
                    tracing::warn!("not ready: the state store cannot commit");
                }
                tokio::select! {
                    changed = store.changed() => if changed.is_err() { return },
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    fn grpc_server<H: Health>(
        &self,
        health_service: HealthServer<H>,
        listener: TcpListener,
        drain: CancellationToken,
    ) -> Result<impl Future<Output = Result<(), tonic::transport::Error>>, ServeError> {
        // Both reflection versions: grpcurl up to 1.8, grpcio-reflection, evans and older
        // GUI clients speak only v1alpha.
        let described = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(grpc::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection = described().build_v1()?;
        let reflection_v1alpha = described().build_v1alpha()?;
        let max = self.config.max_request_bytes;
        let introspection = grpc::IntrospectionService::new(
            self.introspector.clone(),
            self.metrics.clone(),
            self.config.expose_inactive_reason,
            self.signer.clone(),
            max,
            drain.clone(),
        );
        let revocation = TokenRevocationServer::new(grpc::RevocationService::new(
            self.revocations.clone(),
            self.tasks.clone(),
            drain.clone(),
            &self.metrics,
        ))
        .max_decoding_message_size(max);
        let claims =
            SubjectClaimsAdminServer::new(grpc::ClaimsService::new(self.claims_admin.clone()))
                .max_decoding_message_size(max);
        let ext_authz = grpc::ExtAuthzService::new(
            self.introspector.clone(),
            self.metrics.clone(),
            self.gateway.clone(),
            max,
        );
        let limits = self.config.limits;
        let layers = tower::ServiceBuilder::new()
            .layer(MetricsLayer::new(&self.metrics))
            .layer(LimitLayer::new(
                limits.max_concurrent_requests,
                limits.request_timeout,
            ))
            .layer(AuthLayer::new(self.api_keys.clone()));
        let incoming = Incoming::new(
            listener,
            self.listener_limits(),
            self.tls.clone().map(|tls| (tls, Protocol::Grpc)),
        );
        let mut server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(limits.grpc_keepalive_interval))
            .http2_keepalive_timeout(Some(limits.grpc_keepalive_timeout));
        if let Some(age) = limits.grpc_max_connection_age {
            server = server
                .max_connection_age(age)
                .max_connection_age_grace(self.config.shutdown_grace);
        }
        Ok(server
            .trace_fn(|request| {
                let path = request.uri().path();
                // Probes and reflection would be half the spans, and say nothing.
                if path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") {
                    return tracing::Span::none();
                }
                // The call's one span, at debug: free unless logs or traces want it. Named
                // and typed as OpenTelemetry's RPC conventions say.
                let span = tracing::debug_span!(
                    "grpc",
                    otel.name = path.trim_start_matches('/'),
                    otel.kind = "server",
                    otel.status_code = tracing::field::Empty,
                    rpc.system = "grpc",
                    rpc.grpc.status_code = tracing::field::Empty,
                    grpc.path = %path,
                    token.fingerprint = tracing::field::Empty,
                    iss = tracing::field::Empty,
                    result = tracing::field::Empty,
                    reason = tracing::field::Empty,
                );
                crate::telemetry::parent_from_headers(&span, request.headers());
                span
            })
            .layer(layers)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(grpc::Served(introspection))
            .add_service(revocation)
            .add_service(claims)
            .add_service(grpc::Served(ext_authz))
            .serve_with_incoming_shutdown(incoming, async move {
                drain.cancelled().await;
            }))
    }

    fn http_server(
        &self,
        listener: TcpListener,
        ready: watch::Receiver<bool>,
        drain: CancellationToken,
    ) -> impl Future<Output = std::io::Result<()>> {
        let state = http::HttpState {
            observed: Arc::new(Observed {
                metrics: self.metrics.clone(),
                issuers: self.issuers.clone(),
                introspector: self.introspector.clone(),
                applier: self.revocations.applier().clone(),
                state_log: self.state_log.clone(),
                ready: ready.clone(),
                tls: self.tls.clone(),
            }),
            metrics: self.metrics.clone(),
            introspector: self.introspector.clone(),
            gateway: self.gateway.clone(),
            revocations: self.revocations.clone(),
            ready,
            published_jwks: self.published_jwks(),
            signer: self.signer.clone(),
            max_request_bytes: self.config.max_request_bytes,
        };
        let limits = self.config.limits;
        let call_limits = http::CallLimits {
            in_flight: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests)),
            timeout: limits.request_timeout,
        };
        let router = http::router(state, self.api_keys.clone(), call_limits);
        let serve_limits = http::ServeLimits {
            header_read_timeout: limits.http_header_read_timeout,
            max_buffer_bytes: http::ServeLimits::buffer_for(self.config.max_token_bytes),
        };
        let incoming = Incoming::new(
            listener,
            self.listener_limits(),
            self.tls.clone().map(|tls| (tls, Protocol::Http)),
        );
        http::serve(incoming, router, serve_limits, drain)
    }

    /// What `/.well-known/jwks.json` serves: the dev issuer's keys and the answer
    /// signer's, where there are any.
    fn published_jwks(&self) -> Option<Arc<serde_json::Value>> {
        let mut keys: Vec<serde_json::Value> = self
            .dev_jwks
            .as_ref()
            .and_then(|jwks| jwks.get("keys"))
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(signer) = &self.signer {
            keys.extend(signer.public_jwks().iter().cloned());
        }
        (self.dev_jwks.is_some() || self.signer.is_some())
            .then(|| Arc::new(serde_json::json!({ "keys": keys })))
    }

    /// Each listener gets at most 40% of the descriptors the process may open.
    fn listener_limits(&self) -> listener::Limits {
        let limits = self.config.limits;
        listener::Limits {
            max_connections: listener::cap_connections(limits.max_connections, 0.4),
            first_byte_timeout: limits.first_byte_timeout,
            write_stall_timeout: limits.write_stall_timeout,
        }
    }
}

/// The overall status `""` and every served service's follow readiness.
async fn set_serving(health: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for service in SERVED {
        health.set_service_status(*service, status).await;
    }
}

/// What the health service reports on: overall, then each served service.
const SERVED: &[&str] = &[
    "",
    <grpc::IntrospectionService as tonic::server::NamedService>::NAME,
    <TokenRevocationServer<grpc::RevocationService> as tonic::server::NamedService>::NAME,
    <SubjectClaimsAdminServer<grpc::ClaimsService> as tonic::server::NamedService>::NAME,
    <grpc::ExtAuthzService as tonic::server::NamedService>::NAME,
];

/// Waits up to `grace` for both servers to finish their in-flight calls.
async fn drained(
    grace: Duration,
    grpc: impl Future<Output = Result<(), tonic::transport::Error>>,
    http: impl Future<Output = std::io::Result<()>>,
) -> Result<(), ServeError> {
    let both = async {
        let (grpc, http) = tokio::join!(grpc, http);
        grpc?;
        http.map_err(ServeError::from)
    };
    match tokio::time::timeout(grace, both).await {
        Ok(result) => result,
        Err(_) => {
            // Connections still busy are left to end on their own; the store is closed
            // under them, so their calls answer UNAVAILABLE.
            tracing::warn!(
                ?grace,
                "grace period ran out; calls still in flight are abandoned"
            );
            Ok(())
        }
    }
}

/// Forgets revocations past their `forget_after`, in memory and in the log.
async fn purge_revocations(revocations: &Revocations) {
    let now = unix_now();
    let forgotten = revocations.set().purge(now);
    match revocations.log().compact(now).await {
        Ok(removed) => tracing::debug!(forgotten, removed, "revocations purged"),
        Err(error) => tracing::warn!(%error, "state log compaction failed"),
    }
}

/// Builds the app and serves it: what `introspectd serve` does.
pub async fn run(
    config: Config,
    listeners: Listeners,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let app = App::build(config, options).await?;
    Ok(app.serve(listeners, shutdown).await?)
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}
