//! HTTP surface (axum), translation only:
//!
//! | route | what |
//! | --- | --- |
//! | `POST /oauth2/introspect` | RFC 7662: form `token` (+ `token_type_hint`), JSON answer |
//! | `POST /oauth2/revoke` | RFC 7009: form `token` (+ `token_type_hint`); API key with `revoke` |
//! | `ANY /authz` | forward-auth for nginx, Traefik, Caddy (see [`crate::gateway`]) |
//! | `ANY /authz/<path>` | Envoy's HTTP ext_authz (`path_prefix: /authz`): the client's request line |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once every issuer's keys loaded, 503 before and while draining |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /.well-known/jwks.json` | dev mode only: the local issuer's public keys |

use std::{borrow::Cow, sync::Arc};

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Request, State},
    handler::Handler,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::auth::{
    Access, ApiKeys, Caller, Credentials, Denied, PresentedKey, Role, authorization_key,
    header_key, presented_key,
};
use crate::calls::{Admitted, Bounded, Holding};
use crate::introspect::Introspector;
use crate::listener::Peer;
use crate::revocation::{Revocations, RevokeError, Target};
use crate::telemetry::metrics::{Metrics, Observed, Surface};
use crate::token::CallPolicy;

#[derive(Clone)]
pub struct HttpState {
    pub introspector: Arc<Introspector>,
    pub gateway: Arc<crate::gateway::Settings>,
    pub revocations: Arc<Revocations>,
    pub metrics: Arc<Metrics>,
    pub observed: Arc<Observed>,
    pub ready: watch::Receiver<bool>,
    /// `/.well-known/jwks.json`: the dev issuer's and the answer signer's public keys.
    pub published_jwks: Option<Arc<Value>>,
    pub signer: Option<Arc<crate::signing::AnswerSigner>>,
    /// The largest request body read (`server.max_request_bytes`, as for a gRPC message).
    pub max_request_bytes: usize,
}

/// What bounds the HTTP listener's connections beyond [`crate::listener::Limits`].
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// A request's headers must arrive within this; between requests on a kept-alive
    /// connection it is the idle timeout.
    pub header_read_timeout: std::time::Duration,
    /// The most a connection buffers each way: its request headers must fit, and a
    /// client that pipelines requests without reading the answers holds no more.
    pub max_buffer_bytes: usize,
}

impl ServeLimits {
    /// Room for the largest token in a header with the rest of a gateway's request
    /// around it, and at least 64 KiB (hyper's own default is about 400 KiB each way).
    pub fn buffer_for(max_token_bytes: usize) -> usize {
        max_token_bytes.saturating_mul(2).max(64 * 1024)
    }
}

/// Serves `router` on `incoming` until `drain` fires, then lets the connections finish
/// their requests. Unlike a bare `axum::serve`, a client that opens connections and
/// sends nothing, or half a request, cannot hold them: the header timeout closes them,
/// and `incoming` caps how many are open. Each request carries the connection's
/// [`Peer`] as an extension.
pub async fn serve(
    incoming: crate::listener::Incoming,
    router: Router,
    limits: ServeLimits,
    drain: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use tokio_stream::StreamExt;
    let connections = tokio_util::task::TaskTracker::new();
    let mut incoming = std::pin::pin!(incoming);
    loop {
        let stream = tokio::select! {
            Some(Ok(stream)) = incoming.next() => stream,
            () = drain.cancelled() => break,
        };
        let peer = stream.peer();
        let router = router.clone();
        let service = hyper::service::service_fn(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(peer.clone());
                tower::ServiceExt::oneshot(router.clone(), request)
            },
        );
        let drain = drain.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_buffer_bytes)
                // A client may close its side once it has sent the request (`nc -N`,
                // scripts): it still gets the answer, and a revocation is not lost.
                .half_close(true);
            let served = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut served = std::pin::pin!(served);
            tokio::select! {
                result = served.as_mut() => {
                    if let Err(error) = result {
                        tracing::trace!(%error, "HTTP connection ended");
                    }
                }
                () = drain.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    let _ = served.await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// How many calls run at once and how long one may take.
#[derive(Debug, Clone)]
pub struct CallLimits {
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub timeout: std::time::Duration,
}

/// The routes; `api_keys` decide who may call the ones that need a key, before their
/// handler (and before the body is parsed); `limits` bound the calls that do work.
pub fn router(state: HttpState, api_keys: Arc<ApiKeys>, limits: CallLimits) -> Router {
    let guarded = |access: Access, key_from: KeyFrom| {
        GuardLayer(Arc::new(Guard {
            keys: api_keys.clone(),
            access,
            key_from,
            limits: limits.clone(),
        }))
    };
    // Each guard wraps its handler rather than its route (`route_layer`), which would box
    // the route, and its future, a second time on every request.
    let mut router = Router::new()
        .route(
            "/oauth2/introspect",
            post(
                introspect
                    .layer(guarded(Access::Introspection, KeyFrom::Authorization))
                    .layer(tower::util::MapResponseLayer::new(no_store)),
            ),
        )
        .route(
            "/oauth2/revoke",
            post(
                revoke
                    .layer(guarded(Access::Role(Role::Revoke), KeyFrom::Authorization))
                    .layer(tower::util::MapResponseLayer::new(no_store)),
            ),
        )
        // Forward-auth: `Authorization` carries the token being checked, so the
        // gateway's own key (when one is needed) comes in `x-introspectd-api-key`.
        .route(
            "/authz",
            axum::routing::any(authz.layer(guarded(Access::Introspection, KeyFrom::ApiKeyHeader))),
        )
        // Envoy's HTTP ext_authz puts the client's path after its `path_prefix`.
        .route(
            "/authz/",
            axum::routing::any(authz.layer(guarded(Access::Introspection, KeyFrom::ApiKeyHeader))),
        )
        .route(
            "/authz/{*client_path}",
            axum::routing::any(authz.layer(guarded(Access::Introspection, KeyFrom::ApiKeyHeader))),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if state.published_jwks.is_some() {
        router = router.route("/.well-known/jwks.json", get(jwks));
    }
    router
        .layer(CountLayer(state.metrics.clone()))
        .with_state(Arc::new(state))
}

/// Marks an `/oauth2/*` answer, whatever it says, as one no cache may keep: it is about
/// a token (RFC 6749 section 5.1's headers, RFC 7662 section 4).
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        axum::http::header::PRAGMA,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    response
}

/// Counts and times every routed request by its route pattern (requests no route
/// matches are not counted: their paths are the caller's to choose). A tower layer, like
/// [`Guard`]'s, so that counting boxes nothing per request.
#[derive(Clone)]
struct CountLayer(Arc<Metrics>);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Counted {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<Request> for Counted<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Counting<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<axum::extract::MatchedPath>();
        let span = route.map_or_else(tracing::Span::none, |route| {
            request_span(request.method(), route.as_str(), request.headers())
        });
        let meter = route.map(|route| RouteMeter {
            metrics: self.metrics.clone(),
            route: route.clone(),
            started: std::time::Instant::now(),
        });
        Counting {
            call: self.inner.call(request),
            meter,
            span,
        }
    }
}

/// A request's one span, at debug (free unless logs or traces want it), a child of the
/// caller's W3C trace context, named and typed as OpenTelemetry's HTTP conventions say.
/// Probes and scrapes get none: they would be most of the spans and say nothing.
fn request_span(
    method: &axum::http::Method,
    route: &str,
    headers: &axum::http::HeaderMap,
) -> tracing::Span {
    if matches!(route, "/healthz" | "/readyz" | "/metrics") {
        return tracing::Span::none();
    }
    // A method the client made up (Envoy's HTTP service passes the client's on) is
    // `_OTHER`, as the conventions say: it is the client's text, in every span's name.
    let method = match *method {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::CONNECT => "CONNECT",
        axum::http::Method::TRACE => "TRACE",
        _ => "_OTHER",
    };
    let span = tracing::debug_span!(
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        token.fingerprint = tracing::field::Empty,
        iss = tracing::field::Empty,
        result = tracing::field::Empty,
        reason = tracing::field::Empty,
    );
    crate::telemetry::parent_from_headers(&span, headers);
    span
}

struct RouteMeter {
    metrics: Arc<Metrics>,
    route: axum::extract::MatchedPath,
    started: std::time::Instant,
}

pin_project_lite::pin_project! {
    /// A request's future that counts the request when its response is ready: the HTTP
    /// twin of the gRPC layers' `Measured`, which reads a `grpc-status` instead. A
    /// request dropped before its answer (the client went away) counts as `499`, as
    /// nginx logs it.
    struct Counting<F> {
        #[pin]
        call: F,
        meter: Option<RouteMeter>,
        span: tracing::Span,
    }

    impl<F> PinnedDrop for Counting<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(meter) = this.project().meter.take() {
                meter.metrics.record_http(
                    meter.route.as_str(),
                    CLIENT_CLOSED_REQUEST,
                    meter.started.elapsed(),
                );
            }
        }
    }
}

/// nginx's status for a request whose client closed the connection before the answer.
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl<F, E> std::future::Future for Counting<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let _in_span = this.span.enter();
        let answered = std::task::ready!(this.call.poll(cx));
        if let (Ok(response), Some(meter)) = (&answered, this.meter.take()) {
            let status = response.status().as_u16();
            meter
                .metrics
                .record_http(meter.route.as_str(), status, meter.started.elapsed());
            if !this.span.is_disabled() {
                this.span.record("http.response.status_code", status);
                if status >= 500 {
                    this.span.record("otel.status_code", "error");
                }
            }
        }
        std::task::Poll::Ready(answered)
    }
}

/// Where a caller's API key is.
#[derive(Debug, Clone, Copy)]
enum KeyFrom {
    /// `Authorization: Bearer <key>`.
    Authorization,
    /// `x-introspectd-api-key: <key>`.
    ApiKeyHeader,
}

const API_KEY_HEADER: &str = "x-introspectd-api-key";

/// A route's policy where the query is the client's (Envoy's HTTP ext_authz adds these
/// with `headers_to_add`): scopes separated by spaces or commas, and an audience.
const ROUTE_SCOPE_HEADER: &str = "x-introspectd-required-scope";

/// Headers forward-auth gateways describe the client's request in (nginx's example and
/// `X-Original-*` setups, ingress-nginx's `auth-url`, Traefik, Caddy).
const FORWARD_AUTH_HEADERS: &[&str] = &[
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-host",
    "x-original-uri",
    "x-original-url",
    "x-original-method",
    "x-auth-request-redirect",
];
const ROUTE_AUDIENCE_HEADER: &str = "x-introspectd-required-audience";

/// What a route that does work checks before its handler, in one layer: the call limits
/// first (503 at once when too many calls are in progress), then the caller (RFC 6750
/// answers for a refusal), then the handler within the call timeout (504). Written as a
/// tower layer rather than with `from_fn`, which boxes the rest of the route and the
/// middleware's future on every request.
struct Guard {
    keys: Arc<ApiKeys>,
    access: Access,
    key_from: KeyFrom,
    limits: CallLimits,
}

#[derive(Clone)]
struct GuardLayer(Arc<Guard>);

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            guard: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Guarded<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S> tower::Service<Request> for Guarded<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Admitted<Holding<Bounded<S::Future, Response>>, Response>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let limits = &self.guard.limits;
        let Ok(permit) = limits.in_flight.clone().try_acquire_owned() else {
            // Shed, not failed: another replica, or this one in a moment, will answer.
            let mut shed = temporarily_unavailable(StatusCode::SERVICE_UNAVAILABLE);
            shed.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            return Admitted::Refused {
                response: Some(shed),
            };
        };
        match self.guard.admit(&request) {
            // The handler names the caller in its logs and signed answers.
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
            }
            Err((denied, presented)) => {
                return Admitted::Refused {
                    response: Some(refused(denied, presented)),
                };
            }
        }
        let call = Bounded::new(self.inner.call(request), limits.timeout, || {
            temporarily_unavailable(StatusCode::GATEWAY_TIMEOUT)
        });
        Admitted::Called {
            call: Holding::new(call, Some(permit)),
        }
    }
}

/// RFC 6749's `temporarily_unavailable`, with a 503 or a 504.
fn temporarily_unavailable(status: StatusCode) -> Response {
    (status, Json(json!({ "error": "temporarily_unavailable" }))).into_response()
}

/// How a refused caller presented a key, which decides the challenge it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presented {
    Nothing,
    Key,
    /// HTTP Basic, `client_secret_basic`.
    Basic,
}

impl Guard {
    fn admit(&self, request: &Request) -> Result<Option<Arc<Caller>>, (Denied, Presented)> {
        let headers = request.headers();
        let presented = match self.key_from {
            KeyFrom::Authorization => presented_key(
                headers
                    .get_all(axum::http::header::AUTHORIZATION)
                    .iter()
                    .map(axum::http::HeaderValue::as_bytes),
                authorization_key,
            ),
            KeyFrom::ApiKeyHeader => presented_key(
                headers
                    .get_all(API_KEY_HEADER)
                    .iter()
                    .map(axum::http::HeaderValue::as_bytes),
                header_key,
            ),
        };
        let peer = request.extensions().get::<Peer>();
        let credentials = Credentials {
            key: presented.as_ref().map(|presented| presented.key.as_ref()),
            certificate: peer.and_then(|peer| peer.client_certificate.as_deref()),
        };
        self.keys.admit(self.access, credentials).map_err(|denied| {
            let how = match presented {
                None => Presented::Nothing,
                Some(PresentedKey { basic: true, .. }) => Presented::Basic,
                Some(_) => Presented::Key,
            };
            (denied, how)
        })
    }
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    if *state.ready.borrow() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.observed.render(crate::unix_now()),
    )
        .into_response()
}

async fn jwks(State(state): State<Arc<HttpState>>) -> Response {
    match &state.published_jwks {
        Some(jwks) => Json(jwks.as_ref().clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The RFC 7662 / RFC 7009 request form.
#[derive(Debug, Default, Deserialize)]
pub struct IntrospectForm {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    #[allow(dead_code)] // RFC 7662: a hint the server may ignore.
    token_type_hint: Option<String>,
    /// For sender-constrained tokens: the `DPoP` header of the request the token came
    /// with, that request's method and absolute URI, and its client certificate (PEM,
    /// or its `x5t#S256` thumbprint).
    #[serde(default)]
    pub dpop_proof: Option<String>,
    #[serde(default)]
    pub http_method: Option<String>,
    #[serde(default)]
    pub http_uri: Option<String>,
    #[serde(default)]
    pub client_certificate: Option<String>,
    /// RFC 6749 section 2.3.1's `client_secret_post`, which is not accepted: read only
    /// to say so, rather than to ignore credentials (a wrong one passed where anonymous
    /// callers may introspect).
    #[serde(default)]
    pub client_secret: Option<String>,
}

/// The form of a request, parsed only once the caller is authorized (RFC 6749 section
/// 5.2: a body that is not the expected form is `invalid_request`).
pub fn parse_form(body: &[u8]) -> Option<IntrospectForm> {
    plain_form(body).or_else(|| serde_urlencoded::from_bytes(body).ok())
}

/// A form with nothing to decode (no `%`, no `+`: a JWT is base64url and dots), read
/// without the percent-decoding pass; `None` sends anything else, duplicates included,
/// through `serde_urlencoded`.
fn plain_form(body: &[u8]) -> Option<IntrospectForm> {
    if memchr::memchr2(b'%', b'+', body).is_some() {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let mut form = IntrospectForm::default();
    let mut token = None;
    // Split with memchr's vector search: `str::split` walks a token-sized pair a word at
    // a time. `&` and `=` are ASCII, so every cut is on a character boundary.
    let mut start = 0;
    let ends = memchr::memchr_iter(b'&', body).chain(std::iter::once(body.len()));
    for end in ends {
        let pair = text.get(start..end)?;
        start = end + 1;
        if pair.is_empty() {
            continue;
        }
        let (key, value) = match memchr::memchr(b'=', pair.as_bytes()) {
            Some(at) => (pair.get(..at)?, pair.get(at + 1..)?),
            None => (pair, ""),
        };
        let slot = match key {
            "token" => &mut token,
            "token_type_hint" => &mut form.token_type_hint,
            "dpop_proof" => &mut form.dpop_proof,
            "http_method" => &mut form.http_method,
            "http_uri" => &mut form.http_uri,
            "client_certificate" => &mut form.client_certificate,
            "client_secret" => &mut form.client_secret,
            _ => continue,
        };
        if slot.replace(value.to_owned()).is_some() {
            return None;
        }
    }
    form.token = token.unwrap_or_default();
    Some(form)
}

/// The form of an `/oauth2/*` request: its body read whole, up to
/// `server.max_request_bytes` (413 past it), then parsed (400 for anything but a form).
/// Read here rather than by axum's `Bytes`, which boxes a `Limited` around the body on
/// every request and gathers its frames in a list, with axum's own 2 MB bound.
struct Form(IntrospectForm);

impl axum::extract::FromRequest<Arc<HttpState>> for Form {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Arc<HttpState>) -> Result<Self, Response> {
        // Credentials in the form or the query (`client_secret_post`) are not accepted,
        // and never ignored either: refused with where they go.
        let secret_in_query = request.uri().query().is_some_and(|query| {
            url::form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name == "client_secret")
        });
        let body = read_body(request.into_body(), state.max_request_bytes).await?;
        let form = parse_form(&body).ok_or_else(|| {
            // Said only when refusing: serde's reason (a repeated parameter, say).
            let reason = serde_urlencoded::from_bytes::<IntrospectForm>(&body)
                .err()
                .map_or_else(String::new, |error| format!(": {error}"));
            invalid_request(&format!("{NOT_A_FORM}{reason}"))
        })?;
        if secret_in_query || form.client_secret.is_some() {
            return Err(client_secret_post_refused());
        }
        Ok(Form(form))
    }
}

async fn read_body(mut body: axum::body::Body, limit: usize) -> Result<Bytes, Response> {
    use axum::body::HttpBody;
    use http_body_util::BodyExt;
    let too_large = || {
        let description =
            format!("the body is larger than server.max_request_bytes ({limit} bytes)");
        request_error(StatusCode::PAYLOAD_TOO_LARGE, &description)
    };
    // A Content-Length past the limit is refused before a byte is read.
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let mut first: Option<Bytes> = None;
    let mut joined = bytes::BytesMut::new();
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| invalid_request("the body could not be read"))?;
        // A form has no trailers; anything but data is skipped.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        read += data.len();
        if read > limit {
            return Err(too_large());
        }
        // One frame is kept as it came; a second starts the joined copy.
        match first.take() {
            Some(earlier) => {
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&data);
            }
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

/// JSON text kept with a verified token, as a response body without a copy.
struct JsonText(Arc<str>);

impl AsRef<[u8]> for JsonText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

const NOT_A_FORM: &str =
    "the body is not an application/x-www-form-urlencoded form with each parameter once";

/// What `/oauth2/introspect` reads from its headers, read in place rather than copied.
struct IntrospectHeaders {
    /// RFC 9701 section 4: the signed answer only when asked for by its media type.
    wants_signed: bool,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IntrospectHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let wants_signed = accepts_signed(
            parts
                .headers
                .get_all(axum::http::header::ACCEPT)
                .iter()
                .filter_map(|value| value.to_str().ok()),
        );
        Ok(Self { wants_signed })
    }
}

/// Whether `Accept` asks for the signed answer: its media type named (case-insensitive,
/// RFC 9110 section 8.3.1) with a weight above 0 (section 12.4.2: `q=0` refuses it).
fn accepts_signed<'a>(accept: impl Iterator<Item = &'a str>) -> bool {
    accept.flat_map(|value| value.split(',')).any(|media| {
        let mut parts = media.split(';').map(str::trim);
        let named = parts
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case(crate::signing::MEDIA_TYPE));
        let refused = parts.any(|parameter| {
            parameter.split_once('=').is_some_and(|(name, weight)| {
                name.trim().eq_ignore_ascii_case("q")
                    && weight.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            })
        });
        named && !refused
    })
}

async fn introspect(
    State(state): State<Arc<HttpState>>,
    caller: Option<Extension<Arc<Caller>>>,
    IntrospectHeaders { wants_signed }: IntrospectHeaders,
    Form(form): Form,
) -> Response {
    if form.token.is_empty() {
        return invalid_request("token is required, in an application/x-www-form-urlencoded body");
    }
    let signer = match (&state.signer, wants_signed) {
        (_, false) => None,
        (None, true) => {
            return (
                StatusCode::NOT_ACCEPTABLE,
                Json(json!({ "error": "invalid_request", "error_description": "signed answers are not configured" })),
            )
                .into_response();
        }
        (Some(signer), true) => match &caller {
            Some(Extension(caller)) => Some((signer, caller.name.clone())),
            None => {
                return invalid_request(
                    "a signed answer names its audience: authenticate with an API key or a client certificate",
                );
            }
        },
    };
    let client_certificate = match form.client_certificate.as_deref() {
        None | Some("") => None,
        Some(text) => match crate::binding::certificate_text_thumbprint(text) {
            Some(thumbprint) => Some(thumbprint),
            None => return invalid_request("client_certificate is neither PEM nor a thumbprint"),
        },
    };
    let policy = CallPolicy {
        presented: crate::binding::Presentation {
            dpop_proof: form.dpop_proof.as_deref().filter(|p| !p.is_empty()),
            scheme: crate::binding::Scheme::Unstated,
            http_method: form.http_method.as_deref(),
            http_uri: form.http_uri.as_deref(),
            client_certificate,
        },
        ..CallPolicy::default()
    };
    let now = crate::unix_now();
    match state
        .introspector
        .introspect(&form.token, policy, now)
        .await
    {
        Ok(answer) => {
            state.metrics.record_answer(Surface::Http, &answer);
            let mut response = match signer {
                None => (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    axum::body::Bytes::from_owner(JsonText(answer.rfc7662_json())),
                )
                    .into_response(),
                Some((signer, audience)) => match signer.sign(&answer.rfc7662(), &audience, now) {
                    Ok(jwt) => (
                        [(axum::http::header::CONTENT_TYPE, crate::signing::MEDIA_TYPE)],
                        jwt,
                    )
                        .into_response(),
                    Err(error) => {
                        tracing::error!(%error, "cannot sign the answer");
                        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                    }
                },
            };
            if let Some(Ok(nonce)) = answer
                .dpop_nonce
                .map(|nonce| axum::http::HeaderValue::from_str(&nonce))
            {
                response.headers_mut().insert("dpop-nonce", nonce);
            }
            response
        }
        Err(error) => {
            tracing::warn!(%error, "introspection could not be decided");
            temporarily_unavailable(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

/// Forward-auth for nginx `auth_request`, Traefik `ForwardAuth`, Caddy `forward_auth`
/// (`/authz`: the client's request in `X-Forwarded-*` headers, the route's policy in the
/// query, `?scope=a&scope=b&audience=x`), and for Envoy's HTTP ext_authz (`/authz/<path>`:
/// the client's method, path and query are this request's own, its host this request's,
/// so the query is the client's and the route's policy comes in
/// `x-introspectd-required-scope` / `-audience` headers Envoy adds). 200 with
/// `x-introspectd-*` headers, or 401/403 with `WWW-Authenticate`; 503 when introspectd
/// cannot decide (nginx makes that a 500, Envoy an error).
async fn authz(
    State(state): State<Arc<HttpState>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    request: Request,
) -> Response {
    let headers = request.headers();
    let header = |name: &str| {
        crate::gateway::joined_header(
            headers
                .get_all(name)
                .iter()
                .map(axum::http::HeaderValue::as_bytes),
        )
    };
    // Envoy's request line: `/authz` + the client's path and query.
    let envoy_path = request
        .uri()
        .path_and_query()
        .and_then(|line| line.as_str().strip_prefix("/authz"))
        .filter(|client| client.starts_with('/'));
    let mut route = crate::gateway::RoutePolicy::default();
    let mut conflicting_audiences = false;
    let (forwarded_uri, method, host) = match envoy_path {
        Some(client) => {
            // HTTP/2 carries the host as `:authority`, HTTP/1.1 as `Host`.
            let host = request
                .uri()
                .authority()
                .map(|authority| Cow::Borrowed(authority.as_str()))
                .or_else(|| header("host"));
            (
                Some(Cow::Borrowed(client)),
                Some(Cow::Borrowed(request.method().as_str())),
                host,
            )
        }
        None => {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_str(query.as_deref().unwrap_or_default())
                    .unwrap_or_default();
            for (name, value) in pairs {
                match name.as_str() {
                    "scope" => route
                        .required_scopes
                        .extend(value.split_whitespace().map(str::to_owned)),
                    // Two audiences cannot both be the one a token must carry: a
                    // requirement that cannot be read, denied below (the last one
                    // winning would drop the first).
                    "audience" if !value.is_empty() => match &route.audience {
                        Some(earlier) if *earlier != value => conflicting_audiences = true,
                        _ => route.audience = Some(value),
                    },
                    _ => {}
                }
            }
            (
                header("x-forwarded-uri").or_else(|| header("x-original-uri")),
                header("x-forwarded-method").or_else(|| header("x-original-method")),
                header("x-forwarded-host"),
            )
        }
    };
    let settings = &state.gateway;
    // The policy headers (set by Envoy's `headers_to_add`; on plain `/authz` they add to
    // the query's) only ever add requirements. One that is there but cannot be read is
    // a requirement that cannot be met: denied, never dropped.
    let present = |name: &str| headers.contains_key(name);
    let scopes = header(ROUTE_SCOPE_HEADER);
    let audience = header(ROUTE_AUDIENCE_HEADER);
    let unreadable_policy = (present(ROUTE_SCOPE_HEADER) && scopes.is_none())
        || (present(ROUTE_AUDIENCE_HEADER) && audience.is_none())
        || conflicting_audiences;
    // nginx, ingress-nginx, Traefik and Caddy describe the client's request in these
    // headers; Envoy's HTTP service never does. Here they mean a forward-auth address
    // with a trailing slash (`/authz/?scope=admin`), whose query would be taken for the
    // client's and its policy silently dropped.
    let misrouted = envoy_path.is_some() && FORWARD_AUTH_HEADERS.iter().any(|h| present(h));
    if let Some(scopes) = scopes {
        route.required_scopes.extend(
            scopes
                .split([' ', ','])
                .filter(|scope| !scope.is_empty())
                .map(str::to_owned),
        );
    }
    // The query's audience, where it names one, is the route's own: a header (which a
    // client may send through a gateway that forwards its headers) cannot replace it.
    if route.audience.is_none() {
        route.audience = audience
            .filter(|audience| !audience.is_empty())
            .map(Cow::into_owned);
    }
    // The path only: a query may carry an `access_token` (RFC 6750 section 2.3).
    let path = forwarded_uri
        .as_deref()
        .map(|uri| uri.split('?').next().unwrap_or_default());
    tracing::debug!(http.method = ?method, http.path = ?path, "forward-auth");
    let dpop = header("dpop");
    // Only a DPoP proof is checked against the URI: built for those requests alone.
    let uri = dpop.as_ref().and_then(|_| {
        crate::gateway::absolute_uri(
            header("x-forwarded-proto").as_deref(),
            host.as_deref(),
            forwarded_uri.as_deref(),
        )
    });
    let authorization = header(settings.token_header.as_str());
    let described = crate::gateway::GatewayRequest {
        authorization: authorization.as_deref(),
        dpop: dpop.as_deref(),
        method: method.as_deref(),
        uri: uri.as_deref(),
        client_certificate: settings
            .client_certificate_header
            .as_deref()
            .and_then(header)
            .and_then(|value| crate::binding::certificate_from_header(&value)),
    };
    let decision = match described.presented() {
        _ if misrouted => {
            tracing::warn!(
                "forward-auth: X-Forwarded-* or X-Original-* headers at /authz/<path>; the gateway's address ends in a slash (use /authz); denied"
            );
            settings.unreadable_policy()
        }
        _ if unreadable_policy => {
            tracing::warn!(
                "forward-auth: a route policy header is not UTF-8, or the query names two audiences; denied"
            );
            settings.unreadable_policy()
        }
        None => settings.missing_token(),
        Some((token, presented)) => {
            let policy = CallPolicy {
                required_scopes: &route.required_scopes,
                audience: route.audience.as_deref(),
                presented,
            };
            match state
                .introspector
                .introspect(token, policy, crate::unix_now())
                .await
            {
                Ok(answer) => {
                    state.metrics.record_answer(Surface::Http, &answer);
                    settings.decide(&answer, &route)
                }
                Err(error) => {
                    tracing::warn!(%error, "forward-auth could not be decided");
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
            }
        }
    };
    match decision {
        crate::gateway::Decision::Allow { headers, .. } => {
            let mut response = StatusCode::OK.into_response();
            for (name, value) in headers {
                if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
                    response.headers_mut().insert(name, value);
                }
            }
            // Envoy drops the request headers this names before the request goes on.
            if envoy_path.is_some()
                && settings.remove_token_header
                && let Ok(value) = axum::http::HeaderValue::from_str(&settings.token_header)
            {
                response
                    .headers_mut()
                    .insert("x-envoy-auth-headers-to-remove", value);
            }
            response
        }
        crate::gateway::Decision::Deny {
            status,
            www_authenticate,
            dpop_nonce,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
            let mut response = status.into_response();
            if let Ok(value) = axum::http::HeaderValue::from_str(&www_authenticate) {
                response
                    .headers_mut()
                    .insert(axum::http::header::WWW_AUTHENTICATE, value);
            }
            if let Some(Ok(value)) = dpop_nonce.map(|n| axum::http::HeaderValue::from_str(&n)) {
                response.headers_mut().insert("dpop-nonce", value);
            }
            response
        }
    }
}

/// The answer to a refused caller: RFC 6750 section 3's challenge for a bearer key (no
/// error code when none came), RFC 6749 section 5.2's `Basic` one for a client that
/// authenticated with HTTP Basic; the body names the error as RFC 6749 does.
fn refused(denied: Denied, presented: Presented) -> Response {
    let (status, error, challenge) = match (denied, presented) {
        (Denied::Forbidden, _) => (
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            r#"Bearer realm="introspectd", error="insufficient_scope""#,
        ),
        (Denied::Unauthenticated, Presented::Basic) => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            r#"Basic realm="introspectd""#,
        ),
        (Denied::Unauthenticated, Presented::Key) => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            r#"Bearer realm="introspectd", error="invalid_token""#,
        ),
        (Denied::Unauthenticated, Presented::Nothing) => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            r#"Bearer realm="introspectd""#,
        ),
    };
    // No credentials at all: say where they go (a client sending `client_secret_post`
    // lands here, its form unread).
    let body = if presented == Presented::Nothing {
        json!({ "error": error, "error_description": NO_CREDENTIALS })
    } else {
        json!({ "error": error })
    };
    (
        status,
        [(axum::http::header::WWW_AUTHENTICATE, challenge)],
        Json(body),
    )
        .into_response()
}

/// Where a caller's credentials go.
const NO_CREDENTIALS: &str = "send the API key as a Bearer token, or as the password of HTTP Basic (client_secret_basic); client_secret_post is not accepted";

/// RFC 6749 section 5.2's `invalid_client` for credentials in the form
/// (`client_secret_post`), saying where they go instead.
fn client_secret_post_refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            axum::http::header::WWW_AUTHENTICATE,
            r#"Basic realm="introspectd""#,
        )],
        Json(json!({
            "error": "invalid_client",
            "error_description": NO_CREDENTIALS,
        })),
    )
        .into_response()
}

fn invalid_request(description: &str) -> Response {
    request_error(StatusCode::BAD_REQUEST, description)
}

/// RFC 6749 section 5.2's `invalid_request`, with the status that says why.
fn request_error(status: StatusCode, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": "invalid_request", "error_description": description })),
    )
        .into_response()
}

/// RFC 7009: any token, valid or not, known or not, is "revoked" with 200 and an empty
/// body; the answer reveals nothing about it.
async fn revoke(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Form(form): Form,
) -> Response {
    if form.token.is_empty() {
        return invalid_request("token is required, in an application/x-www-form-urlencoded body");
    }
    match state
        .revocations
        .revoke(Target::Token(form.token), String::new(), crate::unix_now())
        .await
    {
        Ok(position) => {
            tracing::info!(
                http.route = "/oauth2/revoke",
                caller = caller.name.as_str(),
                record = "token",
                position,
                "revoked"
            );
            StatusCode::OK.into_response()
        }
        Err(RevokeError::Invalid(why)) => invalid_request(why),
        Err(RevokeError::Log(error)) => {
            tracing::warn!(%error, "revocation could not be stored");
            temporarily_unavailable(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use tower::ServiceExt;

    use super::*;
    use crate::auth::{ApiKeyEntry, hash_key};

    /// A route for callers with the `revoke` role, whose handler takes `work` and then
    /// names its caller; `admin-key` has the role, `reader-key` only `introspect`.
    fn guarded_route(
        in_flight: usize,
        timeout: Duration,
        work: Duration,
    ) -> (Router, Arc<tokio::sync::Semaphore>) {
        let entry = |name: &str, roles| ApiKeyEntry {
            name: name.into(),
            sha256: hash_key(&format!("{name}-key")),
            roles,
        };
        let keys = ApiKeys::new(
            vec![
                entry("admin", vec![Role::Revoke]),
                entry("reader", vec![Role::Introspect]),
            ],
            false,
        );
        let Ok(keys) = keys else {
            unreachable!("test keys")
        };
        let semaphore = Arc::new(tokio::sync::Semaphore::new(in_flight));
        let layer = GuardLayer(Arc::new(Guard {
            keys: Arc::new(keys),
            access: Access::Role(Role::Revoke),
            key_from: KeyFrom::Authorization,
            limits: CallLimits {
                in_flight: semaphore.clone(),
                timeout,
            },
        }));
        let handler = move |Extension(caller): Extension<Arc<Caller>>| async move {
            tokio::time::sleep(work).await;
            caller.name.clone()
        };
        let router = Router::new().route("/work", post(handler.layer(layer)));
        (router, semaphore)
    }

    fn call(key: Option<&str>) -> Request {
        let mut request = Request::post("/work");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        request
            .body(axum::body::Body::empty())
            .unwrap_or_else(|e| unreachable!("{e}"))
    }

    struct Answer {
        status: StatusCode,
        headers: axum::http::HeaderMap,
        body: String,
    }

    async fn answer(router: Router, request: Request) -> Answer {
        let response = router
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    #[tokio::test]
    async fn every_routed_request_is_counted_by_its_pattern_and_unrouted_ones_are_not() {
        let metrics = Metrics::new();
        let router = Router::new()
            .route("/items/{id}", get(|| async { "ok" }))
            .layer(CountLayer(metrics.clone()));
        for path in ["/items/1", "/items/2", "/elsewhere"] {
            let request = Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap_or_else(|e| unreachable!("{e}"));
            answer(router.clone(), request).await;
        }
        let text = metrics.render();
        let counted = r#"introspectd_http_requests_total{route="/items/{id}",status="200"} 2"#;
        assert!(text.lines().any(|line| line == counted), "{text}");
        assert!(
            !text.contains("elsewhere") && !text.contains("404"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_guard_admits_callers_with_the_role_and_refuses_the_rest_as_rfc_6750_says() {
        let (router, _) = guarded_route(4, Duration::from_secs(5), Duration::ZERO);
        let admitted = answer(router.clone(), call(Some("admin-key"))).await;
        assert_eq!(admitted.status, StatusCode::OK);
        assert_eq!(admitted.body, "admin", "the handler sees its caller");
        let forbidden = answer(router.clone(), call(Some("reader-key"))).await;
        assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
        assert!(
            forbidden.body.contains("insufficient_scope"),
            "{}",
            forbidden.body
        );
        assert_eq!(
            forbidden.headers["www-authenticate"],
            r#"Bearer realm="introspectd", error="insufficient_scope""#
        );
        for (key, challenge) in [
            (
                Some("wrong"),
                r#"Bearer realm="introspectd", error="invalid_token""#,
            ),
            // No credentials: no error code (RFC 6750 section 3.1).
            (None, r#"Bearer realm="introspectd""#),
        ] {
            let refused = answer(router.clone(), call(key)).await;
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{key:?}");
            assert_eq!(refused.headers["www-authenticate"], challenge);
            assert!(refused.body.contains("invalid_client"), "{}", refused.body);
        }
        // client_secret_basic: the key as the password; a wrong one is answered in
        // the scheme it came in (RFC 6749 section 5.2).
        let basic = |password: &str| {
            use base64::Engine;
            let credentials =
                base64::engine::general_purpose::STANDARD.encode(format!("gateway:{password}"));
            with_authorization(&format!("Basic {credentials}"))
        };
        let admitted = answer(router.clone(), basic("admin-key")).await;
        assert_eq!(admitted.status, StatusCode::OK);
        let refused = answer(router.clone(), basic("wrong")).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            refused.headers["www-authenticate"],
            r#"Basic realm="introspectd""#
        );
        // Two Authorization headers are no key, whichever is good.
        let mut twice = call(Some("admin-key"));
        twice.headers_mut().append(
            axum::http::header::AUTHORIZATION,
            axum::http::HeaderValue::from_static("Bearer wrong"),
        );
        assert_eq!(
            answer(router.clone(), twice).await.status,
            StatusCode::UNAUTHORIZED
        );
    }

    fn with_authorization(value: &str) -> Request {
        Request::post("/work")
            .header("authorization", value)
            .body(axum::body::Body::empty())
            .unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn the_signed_answer_is_asked_for_by_its_media_type_in_any_case_and_not_with_q_0() {
        let asks = |accept: &[&str]| accepts_signed(accept.iter().copied());
        assert!(asks(&["application/token-introspection+jwt"]));
        assert!(asks(&[
            "application/json, Application/Token-Introspection+JWT;q=0.5"
        ]));
        assert!(!asks(&["application/token-introspection+jwt;q=0"]));
        assert!(!asks(&["application/token-introspection+jwt; q=0.0"]));
        assert!(!asks(&["application/json"]));
        assert!(!asks(&[]));
    }

    #[tokio::test]
    async fn the_guard_sheds_calls_beyond_its_limit_and_frees_the_slot_when_a_call_ends() {
        let (router, slots) = guarded_route(1, Duration::from_secs(30), Duration::from_millis(200));
        let first = tokio::spawn(answer(router.clone(), call(Some("admin-key"))));
        while slots.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let shed = answer(router.clone(), call(Some("admin-key"))).await;
        assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers["retry-after"], "1");
        assert!(
            shed.body.contains("temporarily_unavailable"),
            "{}",
            shed.body
        );
        let first = first.await.unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(first.status, StatusCode::OK);
        assert_eq!(slots.available_permits(), 1);
        // A refused caller gives its slot back too.
        let refused = answer(router.clone(), call(Some("wrong"))).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert_eq!(slots.available_permits(), 1);
    }

    #[tokio::test]
    async fn the_guard_answers_504_when_the_handler_outlasts_the_call_timeout() {
        let (router, slots) = guarded_route(1, Duration::from_millis(50), Duration::from_secs(60));
        let timed_out = answer(router, call(Some("admin-key"))).await;
        assert_eq!(timed_out.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(
            timed_out.body.contains("temporarily_unavailable"),
            "{}",
            timed_out.body
        );
        assert_eq!(
            slots.available_permits(),
            1,
            "the dropped call freed its slot"
        );
    }

    fn same(left: Option<IntrospectForm>, right: Option<IntrospectForm>) -> bool {
        match (left, right) {
            (None, None) => true,
            (Some(a), Some(b)) => format!("{a:?}") == format!("{b:?}"),
            _ => false,
        }
    }

    fn in_pieces(pieces: &[&'static str]) -> axum::body::Body {
        let pieces: Vec<Result<&'static str, std::io::Error>> =
            pieces.iter().copied().map(Ok).collect();
        axum::body::Body::from_stream(tokio_stream::iter(pieces))
    }

    #[tokio::test]
    async fn a_body_is_read_whole_up_to_its_limit_however_it_is_cut() {
        for pieces in [&["token=abc"][..], &["tok", "", "en=a", "bc"], &[]] {
            let read = read_body(in_pieces(pieces), 9).await;
            assert_eq!(read.ok(), Some(Bytes::from(pieces.concat())), "{pieces:?}");
        }
        // Past the limit, whether the length is announced or only counted as it comes.
        for body in [
            axum::body::Body::from("token=abcd"),
            in_pieces(&["token", "=abcd"]),
        ] {
            let refused = read_body(body, 9).await.err();
            let status = refused.map(|response| response.status());
            assert_eq!(status, Some(StatusCode::PAYLOAD_TOO_LARGE));
        }
    }

    #[test]
    fn a_plain_form_reads_as_serde_reads_it() {
        for body in [
            "token=eyJ.a.b",
            "token=eyJ.a.b&token_type_hint=access_token",
            "token_type_hint=&token=x&unknown=1",
            "token=x&dpop_proof=a.b.c&http_method=GET&http_uri=https://a.example/b",
            "",
            "token",
            "&&token=x&&",
            "token=x=y&=z&token_type_hint",
            "token=é.ü&http_uri=https://ä.example/",
            "token=x&client_id=c&client_secret=s",
        ] {
            let fast = plain_form(body.as_bytes());
            assert!(fast.is_some(), "{body:?} takes the fast path");
            assert!(
                same(fast, serde_urlencoded::from_bytes(body.as_bytes()).ok()),
                "{body:?}"
            );
        }
        // Encoded, or repeated: serde decides.
        for body in ["token=a%2Eb", "token=a+b", "token=a&token=b"] {
            assert!(plain_form(body.as_bytes()).is_none(), "{body:?}");
        }
    }

    proptest! {
        #[test]
        fn any_form_parses_as_serde_parses_it(body in "[a-z_=&.%+0-9A-F]{0,40}") {
            prop_assert!(same(parse_form(body.as_bytes()), serde_urlencoded::from_bytes(body.as_bytes()).ok()));
        }
    }
}
