//! Metrics after a known sequence of calls; spans exported to a real OTLP receiver with
//! the parent taken from an incoming `traceparent`.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
};

use introspectd::grpc::pb::{
    self, revoke_request::Target, token_introspection_client::TokenIntrospectionClient,
};
use jsonwebtoken::Algorithm;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use serde_json::json;

use crate::support::*;

const ISS: &str = "https://observed.test/";

/// The value of the sample `name{labels...}` in a Prometheus text exposition.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            if series_name != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
}

#[tokio::test]
async fn metrics_count_a_known_sequence_of_calls() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(file_config(vec![inline_issuer(ISS, &signer)])).await;
    let token = mint(&signer, &claims(ISS));
    let mut expired = claims(ISS);
    expired["exp"] = json!(now() - 3600);
    server.introspect(&token).await; // miss, active
    server.introspect(&token).await; // hit, active
    server.introspect(&mint(&signer, &expired)).await; // miss, EXPIRED
    server
        .revoke(Target::Token(pb::TokenTarget {
            token: token.clone(),
            token_type_hint: None,
        }))
        .await;
    server.introspect(&token).await; // hit, REVOKED
    reqwest::Client::new()
        .post(format!("http://{}/oauth2/introspect", server.http_addr))
        .form(&[("token", "opaque")])
        .send()
        .await?;
    let denied = server
        .revocation()
        .await
        .revoke(pb::RevokeRequest::default())
        .await;
    assert!(denied.is_err());

    let response = reqwest::get(format!("http://{}/metrics", server.http_addr)).await?;
    assert_eq!(response.status(), 200);
    let text = response.text().await?;
    let expect = |name: &str, labels: &[(&str, &str)], value: f64| {
        assert_eq!(
            sample(&text, name, labels),
            Some(value),
            "{name}{labels:?} in\n{text}"
        );
    };
    expect(
        "introspectd_introspections_total",
        &[("surface", "grpc"), ("result", "active")],
        2.0,
    );
    expect(
        "introspectd_introspections_total",
        &[("surface", "grpc"), ("result", "inactive")],
        2.0,
    );
    expect(
        "introspectd_introspections_total",
        &[("surface", "http"), ("result", "inactive")],
        1.0,
    );
    expect("introspectd_inactive_total", &[("reason", "EXPIRED")], 1.0);
    expect("introspectd_inactive_total", &[("reason", "REVOKED")], 1.0);
    expect(
        "introspectd_inactive_total",
        &[("reason", "UNKNOWN_ISSUER")],
        1.0,
    );
    expect("introspectd_cache_lookups_total", &[("result", "hit")], 2.0);
    expect(
        "introspectd_cache_lookups_total",
        &[("result", "miss")],
        3.0,
    );
    expect(
        "introspectd_requests_total",
        &[("method", "Introspect"), ("code", "OK")],
        4.0,
    );
    expect(
        "introspectd_requests_total",
        &[("method", "Revoke"), ("code", "OK")],
        1.0,
    );
    expect(
        "introspectd_requests_total",
        &[("method", "Revoke"), ("code", "UNAUTHENTICATED")],
        1.0,
    );
    expect(
        "introspectd_request_duration_seconds_count",
        &[("method", "Introspect")],
        4.0,
    );
    expect("introspectd_revocation_records", &[("kind", "token")], 1.0);
    expect("introspectd_keyset_keys", &[("issuer", ISS)], 1.0);
    expect(
        "introspectd_keyset_refresh_failures_total",
        &[("issuer", ISS)],
        0.0,
    );
    expect("introspectd_ready", &[], 1.0);
    expect(
        "introspectd_http_requests_total",
        &[("route", "/oauth2/introspect"), ("status", "200")],
        1.0,
    );
    expect(
        "introspectd_http_request_duration_seconds_count",
        &[("route", "/oauth2/introspect")],
        1.0,
    );
    expect(
        "introspectd_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    // The process_* family Prometheus client libraries export, from /proc.
    let process = |name: &str| sample(&text, name, &[]).ok_or(format!("{name} in\n{text}"));
    assert!(process("process_resident_memory_bytes")? > 1e6);
    assert!(process("process_virtual_memory_bytes")? > 1e6);
    assert!(process("process_cpu_seconds_total")? > 0.0);
    let open_fds = process("process_open_fds")?;
    assert!(open_fds >= 3.0 && open_fds <= process("process_max_fds")?);
    let started = process("process_start_time_seconds")?;
    assert!(
        started <= now() as f64 + 1.0 && started > (now() - 3600) as f64,
        "{started}"
    );
    assert!(sample(&text, "introspectd_keyset_age_seconds", &[("issuer", ISS)]).is_some());
    assert_eq!(
        sample(&text, "introspectd_statelog_lag_seconds", &[]),
        Some(0.0),
        "a local store is never behind"
    );
    Ok(())
}

/// An OTLP/gRPC trace receiver that keeps what it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

// Multi-threaded: the receiver must keep serving while the test waits for the process.
#[tokio::test]
async fn watch_streams_are_measured_as_streams() -> TestResult {
    let signer = key(Algorithm::ES256, "es");
    let server = Introspectd::start_ready(file_config(vec![inline_issuer(ISS, &signer)])).await;
    let url = format!("http://{}/metrics", server.http_addr);
    let scrape = || async { reqwest::get(&url).await?.text().await };
    let mut revocation = server.revocation().await;
    let mut stream = revocation
        .watch_revocations(with_key(
            ADMIN_KEY,
            pb::WatchRevocationsRequest { after: None },
        ))
        .await?
        .into_inner();
    let caught_up = stream.message().await?.ok_or("no first event")?;
    assert!(caught_up.caught_up);
    let text = scrape().await?;
    assert_eq!(sample(&text, "introspectd_watch_streams", &[]), Some(1.0));
    assert_eq!(
        sample(&text, "introspectd_watch_events_total", &[]),
        Some(1.0)
    );
    server
        .revoke(Target::Jti(pb::JtiTarget {
            iss: ISS.into(),
            jti: "watched".into(),
            exp: None,
        }))
        .await;
    let event = stream.message().await?.ok_or("no revocation event")?;
    assert!(event.revocation.is_some());
    drop(stream);
    eventually("the stream to close", || async {
        scrape()
            .await
            .is_ok_and(|text| sample(&text, "introspectd_watch_streams", &[]) == Some(0.0))
    })
    .await;
    let text = scrape().await?;
    assert_eq!(
        sample(&text, "introspectd_watch_events_total", &[]),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "introspectd_watch_stream_duration_seconds_count",
            &[]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "introspectd_requests_total",
            &[("method", "WatchRevocations"), ("code", "OK")]
        ),
        Some(1.0)
    );
    // The call's handler returned at once: timing it said nothing about the stream.
    assert!(
        !text.contains("introspectd_request_duration_seconds_count{method=\"WatchRevocations\"}")
    );
    server.stop().await?;
    Ok(())
}

/// A trace receiver on a free loopback port, with TLS when given a certificate; and its
/// endpoint.
async fn start_receiver(
    tls: Option<&crate::tls::Leaf>,
) -> Result<(Receiver, String), Box<dyn std::error::Error>> {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let mut server = tonic::transport::Server::builder();
    let endpoint = match tls {
        Some(leaf) => {
            let identity = tonic::transport::Identity::from_pem(&leaf.cert_pem, &leaf.key_pem);
            server =
                server.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
            format!("https://localhost:{port}")
        }
        None => format!("http://127.0.0.1:{port}"),
    };
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        let _ = server
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    Ok((receiver, endpoint))
}

impl Receiver {
    fn span_names(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|export| export.resource_spans.iter())
            .flat_map(|resource| resource.scope_spans.iter())
            .flat_map(|scope| scope.spans.iter())
            .map(|span| span.name.clone())
            .collect()
    }
}

/// A collector behind TLS with a private CA (`telemetry.otlp_ca_file`) gets the spans.
/// Without TLS support built in, such an endpoint passed check-config and every start
/// then failed, quoting the endpoint with its credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_https_collector_trusted_through_its_ca_file() -> TestResult {
    let pki = crate::tls::Pki::new("collector CA");
    let leaf = pki.leaf(&["localhost"], &[]);
    let (receiver, otlp) = start_receiver(Some(&leaf)).await?;
    let signer = key(Algorithm::ES256, "es");
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("collector-ca.pem");
    std::fs::write(&ca_file, pki.ca_pem())?;
    let config = write_config(dir.path(), vec![inline_issuer(ISS, &signer)], |file| {
        file.telemetry.otlp_endpoint = Some(otlp.clone());
        file.telemetry.otlp_ca_file = Some(ca_file.clone());
    });
    let checked = std::process::Command::new(env!("CARGO_BIN_EXE_introspectd"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()?;
    assert!(checked.status.success(), "{checked:?}");
    let mut process = spawn_serve(&config, Stdio::null).await;
    let mut client = TokenIntrospectionClient::connect(format!("http://{}", process.grpc)).await?;
    let answer = client
        .introspect(pb::IntrospectRequest {
            token: mint(&signer, &claims(ISS)),
            ..Default::default()
        })
        .await?;
    assert!(answer.into_inner().active);
    drop(client);
    assert!(process.terminate()?.success());
    assert!(
        receiver
            .span_names()
            .iter()
            .any(|name| name == "introspectd.v1.TokenIntrospection/Introspect"),
        "{:?}",
        receiver.span_names()
    );

    // Credentials in the URL would not be sent: refused, and not shown.
    let with_credentials = write_config(dir.path(), vec![inline_issuer(ISS, &signer)], |file| {
        file.telemetry.otlp_endpoint = Some(otlp.replace("https://", "https://user:hunter2@"));
    });
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_introspectd"))
        .args(["check-config", "--config"])
        .arg(&with_credentials)
        .output()?;
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(64), "{said}");
    assert!(said.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_under_the_callers_trace() -> TestResult {
    let (receiver, otlp) = start_receiver(None).await?;

    let signer = key(Algorithm::ES256, "es");
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), vec![inline_issuer(ISS, &signer)], |file| {
        file.telemetry.otlp_endpoint = Some(otlp.clone());
        file.telemetry.service_name = Some("introspectd-under-test".into());
    });
    let mut process = spawn_serve(&config, Stdio::null).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let mut client = TokenIntrospectionClient::connect(format!("http://{}", process.grpc)).await?;
    let mut request = tonic::Request::new(pb::IntrospectRequest {
        token: mint(&signer, &claims(ISS)),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse()?,
    );
    assert!(client.introspect(request).await?.into_inner().active);
    drop(client);
    // The HTTP endpoint follows the caller's trace too.
    let http_trace = "0af7651916cd43dd8448eb211c80319c";
    let http_parent = "b7ad6b7169203331";
    reqwest::Client::new()
        .post(format!("http://{}/oauth2/introspect", process.http))
        .header("traceparent", format!("00-{http_trace}-{http_parent}-01"))
        .form(&[("token", mint(&signer, &claims(ISS)))])
        .send()
        .await?;
    // Forward-auth too, and a health check, which makes no span.
    let authz_trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let token = mint(&signer, &claims(ISS));
    let authz = reqwest::Client::new()
        .get(format!("http://{}/authz", process.http))
        .header("traceparent", format!("00-{authz_trace}-{http_parent}-01"))
        .header("tracestate", "a=1")
        .header("tracestate", "b=2")
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(authz.status(), 200);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", process.grpc))?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await?;
    drop(health);
    assert!(
        process.terminate()?.success(),
        "a clean stop flushes the spans"
    );

    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let exports = receiver.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let spans: Vec<_> = exports
        .iter()
        .flat_map(|export| export.resource_spans.iter())
        .flat_map(|resource| {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value));
            resource
                .scope_spans
                .iter()
                .flat_map(|scope| scope.spans.iter())
                .map(move |span| (service.clone(), span.clone()))
        })
        .collect();
    let grpc = spans
        .iter()
        .find(|(_, span)| {
            hex(&span.trace_id) == trace_id
                && span.name == "introspectd.v1.TokenIntrospection/Introspect"
        })
        .ok_or_else(|| {
            format!(
                "no grpc span in the caller's trace; got {:?}",
                spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
            )
        })?;
    assert_eq!(
        hex(&grpc.1.parent_span_id),
        parent_id,
        "the incoming traceparent is the parent"
    );
    assert!(
        grpc.0
            .as_deref()
            .is_some_and(|s| s.contains("introspectd-under-test")),
        "{:?}",
        grpc.0
    );
    // One span per call: the answer's attributes are on it.
    let introspect = grpc;
    let http = spans
        .iter()
        .find(|(_, span)| {
            hex(&span.trace_id) == http_trace && span.name == "POST /oauth2/introspect"
        })
        .ok_or("no http span in the HTTP caller's trace")?;
    assert_eq!(hex(&http.1.parent_span_id), http_parent);
    let forward_auth = spans
        .iter()
        .find(|(_, span)| hex(&span.trace_id) == authz_trace && span.name == "GET /authz")
        .ok_or("no span for /authz in its caller's trace")?;
    assert_eq!(
        forward_auth.1.trace_state, "a=1,b=2",
        "tracestate headers are one list"
    );
    let keys: Vec<&str> = forward_auth
        .1
        .attributes
        .iter()
        .map(|a| a.key.as_str())
        .collect();
    for wanted in [
        "token.fingerprint",
        "result",
        "http.response.status_code",
        "http.route",
    ] {
        assert!(keys.contains(&wanted), "{wanted} missing from {keys:?}");
    }
    // Server spans, as OpenTelemetry's conventions have them (SPAN_KIND_SERVER is 2).
    for (_, span) in [grpc, http, forward_auth] {
        assert_eq!(span.kind, 2, "{}", span.name);
    }
    assert!(
        !spans
            .iter()
            .any(|(_, span)| span.name.contains("grpc.health")),
        "health checks make no spans"
    );
    let attributes: Vec<&str> = introspect
        .1
        .attributes
        .iter()
        .map(|a| a.key.as_str())
        .collect();
    for wanted in ["token.fingerprint", "result", "iss"] {
        assert!(
            attributes.contains(&wanted),
            "{wanted} missing from {attributes:?}"
        );
    }
    Ok(())
}

/// A collector that takes the connection and never answers delays the exit by the
/// 1 s flush at most (the library's own 5 s outlasted the chart's margin before
/// Kubernetes' SIGKILL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_collector_delays_the_exit_by_a_second_at_most() -> TestResult {
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let otlp = format!("http://{}", blackhole.local_addr()?);
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((connection, _)) = blackhole.accept().await {
            open.push(connection);
        }
    });
    let signer = key(Algorithm::ES256, "es");
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), vec![inline_issuer(ISS, &signer)], |file| {
        file.telemetry.otlp_endpoint = Some(otlp.clone());
        file.server.shutdown_grace_secs = 1;
    });
    let mut process = spawn_serve(&config, Stdio::null).await;
    let mut client = TokenIntrospectionClient::connect(format!("http://{}", process.grpc)).await?;
    client
        .introspect(pb::IntrospectRequest {
            token: mint(&signer, &claims(ISS)),
            ..Default::default()
        })
        .await?;
    drop(client);
    let asked = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || process.terminate()).await??;
    let took = asked.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took < std::time::Duration::from_millis(3_500),
        "exit took {took:?}"
    );
    held.abort();
    Ok(())
}
