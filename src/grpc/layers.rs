//! What every gRPC call goes through before and after its handler, applied once to the
//! whole server as tower layers: caller authentication ([`AuthLayer`]) and per-method
//! timing and status counts ([`MetricsLayer`]). Handlers only translate.
//!
//! [`ROUTES`] says, for each method, who may call it and its name in metrics. A method
//! missing from it needs the admin role: a new method is closed until it is listed.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::time::Instant;
use tonic::Status;
use tower::{Layer, Service};

use super::status::code_name;
use crate::auth::{Access, ApiKeys, Credentials, Denied, Role, authorization_key, presented_key};
use crate::calls::{Admitted, Bounded, Holding};
use crate::listener::Peer;
use crate::telemetry::metrics::{MethodMetrics, Metrics};

/// One served method.
#[derive(Debug)]
pub struct Route {
    pub path: &'static str,
    /// Its name in metrics; `None`: not counted.
    pub method: Option<&'static str>,
    pub access: Access,
    /// A server-streaming method: its call ends long after the handler returns, so it
    /// is counted here and timed as a stream by its handler.
    pub streaming: bool,
}

const fn route(path: &'static str, method: &'static str, access: Access) -> Route {
    Route {
        path,
        method: Some(method),
        access,
        streaming: false,
    }
}

pub const ROUTES: &[Route] = &[
    route(
        "/introspectd.v1.TokenIntrospection/Introspect",
        "Introspect",
        Access::Introspection,
    ),
    Route {
        streaming: true,
        ..route(
            "/introspectd.v1.TokenIntrospection/IntrospectStream",
            "IntrospectStream",
            Access::Introspection,
        )
    },
    route(
        "/introspectd.v1.TokenRevocation/Revoke",
        "Revoke",
        Access::Role(Role::Revoke),
    ),
    route(
        "/introspectd.v1.TokenRevocation/CheckRevocation",
        "CheckRevocation",
        Access::Introspection,
    ),
    Route {
        streaming: true,
        ..route(
            "/introspectd.v1.TokenRevocation/WatchRevocations",
            "WatchRevocations",
            Access::Role(Role::Introspect),
        )
    },
    route(
        "/envoy.service.auth.v3.Authorization/Check",
        "Check",
        Access::Introspection,
    ),
    route(
        "/introspectd.v1.SubjectClaimsAdmin/SetSubjectClaims",
        "SetSubjectClaims",
        Access::Role(Role::Admin),
    ),
    route(
        "/introspectd.v1.SubjectClaimsAdmin/GetSubjectClaims",
        "GetSubjectClaims",
        Access::Role(Role::Admin),
    ),
    route(
        "/introspectd.v1.SubjectClaimsAdmin/DeleteSubjectClaims",
        "DeleteSubjectClaims",
        Access::Role(Role::Admin),
    ),
];

/// Services anyone may call, by path prefix.
const OPEN_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

const UNLISTED: Route = Route {
    path: "",
    method: None,
    access: Access::Role(Role::Admin),
    streaming: false,
};
const OPEN: Route = Route {
    path: "",
    method: None,
    access: Access::Open,
    streaming: false,
};

/// The route of a request path.
pub fn route_of(path: &str) -> &'static Route {
    if let Some(index) = route_index(path) {
        return &ROUTES[index];
    }
    if OPEN_SERVICES.iter().any(|prefix| path.starts_with(prefix)) {
        &OPEN
    } else {
        &UNLISTED
    }
}

/// Where `path` is in [`ROUTES`].
fn route_index(path: &str) -> Option<usize> {
    ROUTES.iter().position(|route| route.path == path)
}

// === impl AuthLayer ===

/// Authenticates every call by the `authorization: Bearer <api key>` metadata, and
/// puts the [`crate::auth::Caller`] (when there is one) in the request's extensions for the handler
/// to name in its logs.
#[derive(Clone)]
pub struct AuthLayer {
    keys: Arc<ApiKeys>,
}

impl AuthLayer {
    pub fn new(keys: Arc<ApiKeys>) -> Self {
        Self { keys }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            keys: self.keys.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    keys: Arc<ApiKeys>,
}

/// The status a refused call gets.
pub fn denied(denied: Denied) -> Status {
    match denied {
        Denied::Unauthenticated => Status::unauthenticated(
            "a known API key (authorization: Bearer <key>) or client certificate is required",
        ),
        Denied::Forbidden => Status::permission_denied("the caller lacks the role for this call"),
    }
}

impl<S, B, RB> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Admitted<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let route = route_of(request.uri().path());
        let access = route.access;
        let presented = presented_key(
            request
                .headers()
                .get_all(http::header::AUTHORIZATION)
                .iter()
                .map(http::HeaderValue::as_bytes),
            authorization_key,
        );
        let peer = request.extensions().get::<Peer>();
        let credentials = Credentials {
            key: presented.as_ref().map(|presented| presented.key.as_ref()),
            certificate: peer.and_then(|peer| peer.client_certificate.as_deref()),
        };
        match self.keys.admit(access, credentials) {
            Ok(caller) => {
                // A stream outlives this check: it asks again when the keys change.
                let admission = route.streaming.then(|| {
                    Arc::new(crate::auth::Admission::new(
                        self.keys.clone(),
                        access,
                        credentials.key,
                        peer.and_then(|peer| peer.client_certificate.clone()),
                    ))
                });
                if let Some(admission) = admission {
                    request.extensions_mut().insert(admission);
                }
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Admitted::Called {
                    call: self.inner.call(request),
                }
            }
            Err(refused) => Admitted::Refused {
                response: Some(denied(refused).into_http()),
            },
        }
    }
}

// === impl LimitLayer ===

/// The call limits, the gRPC twin of the HTTP guard's: refuses a call at once with
/// RESOURCE_EXHAUSTED when `limit` calls are in progress, instead of queueing it behind
/// them (a client that retries elsewhere does better than one that waits), and answers
/// DEADLINE_EXCEEDED for one still unanswered after `timeout`. Health checks and
/// reflection are never refused. tonic's own server timeout would answer CANCELLED;
/// it still applies a caller's shorter `grpc-timeout`.
#[derive(Clone)]
pub struct LimitLayer {
    in_flight: Arc<tokio::sync::Semaphore>,
    timeout: std::time::Duration,
}

impl LimitLayer {
    pub fn new(limit: usize, timeout: std::time::Duration) -> Self {
        Self {
            in_flight: Arc::new(tokio::sync::Semaphore::new(limit)),
            timeout,
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Limited {
            inner,
            in_flight: self.in_flight.clone(),
            timeout: self.timeout,
        }
    }
}

#[derive(Clone)]
pub struct Limited<S> {
    inner: S,
    in_flight: Arc<tokio::sync::Semaphore>,
    timeout: std::time::Duration,
}

impl<S, B, RB> Service<http::Request<B>> for Limited<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Admitted<Holding<Bounded<S::Future, S::Response>>, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let permit = if route_of(request.uri().path()).access == Access::Open {
            None
        } else {
            match self.in_flight.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let refused = Status::resource_exhausted("too many calls in progress; retry");
                    return Admitted::Refused {
                        response: Some(refused.into_http()),
                    };
                }
            }
        };
        let call = Bounded::new(self.inner.call(request), self.timeout, || {
            Status::deadline_exceeded("the call took longer than server.request_timeout_ms")
                .into_http()
        });
        Admitted::Called {
            call: Holding::new(call, permit),
        }
    }
}

// === impl MetricsLayer ===

/// Counts every listed call by method and status code, with the latency of unary
/// calls; each route's handles are registered once, so a call costs no lock.
#[derive(Clone)]
pub struct MetricsLayer {
    /// By the route's index in [`ROUTES`].
    by_route: Arc<[Option<Arc<MethodMetrics>>]>,
}

impl MetricsLayer {
    pub fn new(metrics: &Metrics) -> Self {
        let code_names: Vec<&'static str> = (0..17)
            .map(|code| code_name(tonic::Code::from_i32(code)))
            .collect();
        let by_route = ROUTES
            .iter()
            .map(|route| {
                route.method.map(|method| {
                    Arc::new(metrics.grpc_method(method, !route.streaming, &code_names))
                })
            })
            .collect();
        Self { by_route }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Measure<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Measure {
            inner,
            by_route: self.by_route.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Measure<S> {
    inner: S,
    by_route: Arc<[Option<Arc<MethodMetrics>>]>,
}

impl<S, B, RB> Service<http::Request<B>> for Measure<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Measured<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let handles = route_index(request.uri().path())
            .and_then(|index| self.by_route.get(index).cloned().flatten());
        Measured {
            call: self.inner.call(request),
            meter: handles.map(|handles| Meter {
                handles,
                started: Instant::now(),
            }),
        }
    }
}

struct Meter {
    handles: Arc<MethodMetrics>,
    started: Instant,
}

pin_project_lite::pin_project! {
    /// A call's future that records the call when it completes, or as `CANCELLED` when
    /// it is dropped first (the caller went away, or its deadline passed): those are
    /// the slow calls, and a count that left them out would hide them.
    pub struct Measured<F> {
        #[pin]
        call: F,
        meter: Option<Meter>,
    }

    impl<F> PinnedDrop for Measured<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(meter) = this.project().meter.take() {
                meter
                    .handles
                    .record(tonic::Code::Cancelled as usize, meter.started.elapsed());
            }
        }
    }
}

impl<F, RB, E> Future for Measured<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.call.poll(cx));
        if let Some(meter) = this.meter.take() {
            // An error is in the headers (trailers-only); a success says so in the
            // trailers, after the body.
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unknown,
            };
            meter.handles.record(code as usize, meter.started.elapsed());
            crate::telemetry::record_grpc_status(&tracing::Span::current(), code);
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn every_method_of_the_api_has_a_route() {
        let descriptors =
            match prost_types::FileDescriptorSet::decode(crate::grpc::pb::FILE_DESCRIPTOR_SET) {
                Ok(set) => set,
                Err(e) => unreachable!("{e}"),
            };
        let mut paths = Vec::new();
        for file in descriptors.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        assert!(!paths.is_empty());
        for path in &paths {
            assert!(
                ROUTES.iter().any(|route| route.path == path),
                "{path} has no route: it would need the admin role and go uncounted"
            );
        }
        // Plus Envoy's ext_authz Check, whose descriptors envoy-types does not ship.
        assert_eq!(paths.len() + 1, ROUTES.len(), "a route names no method");
    }

    #[test]
    fn unlisted_methods_need_admin_and_health_is_open() {
        assert_eq!(
            route_of("/introspectd.v1.TokenRevocation/Unknown").access,
            Access::Role(Role::Admin)
        );
        assert_eq!(
            route_of("/grpc.health.v1.Health/Check").access,
            Access::Open
        );
        assert_eq!(
            route_of("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo").access,
            Access::Open
        );
    }
}
