//! Logs, traces and metrics.
//!
//! - Logs: text or JSON lines on stderr (stdout stays free for `mint` and the client),
//!   filtered by `RUST_LOG` or `log.filter`.
//! - Traces: with the `otel` feature (on by default), introspectd's own spans are
//!   exported over OTLP/gRPC when `telemetry.otlp_endpoint` or
//!   `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` is set. The log filter applies to the log
//!   layer only, so it never hides spans from the exporter. W3C `traceparent` headers of
//!   incoming calls become the parents of their spans ([`parent_from_headers`]).
//! - Metrics: [`metrics`].

pub mod metrics;
mod process;

use tracing_subscriber::{EnvFilter, Layer, Registry, fmt, prelude::*};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs and trace export, validated. Unset trace settings fall back to the standard
/// `OTEL_*` variables.
#[derive(Debug, Clone)]
pub struct Settings {
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info`; `RUST_LOG` wins if set.
    pub log_filter: String,
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317`.
    pub otlp_endpoint: Option<String>,
    /// CA certificates (PEM) for an `https://` collector.
    pub otlp_ca_file: Option<std::path::PathBuf>,
    /// `service.name` of the spans (default: `OTEL_SERVICE_NAME`, else "introspectd").
    pub service_name: Option<String>,
    /// Fraction of new traces sampled; traces whose caller sampled them are followed.
    pub sample_ratio: Option<f64>,
}

/// Keeps trace export running; dropping it flushes the spans still buffered.
pub struct TelemetryGuard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

/// How long the last spans get to reach the collector at exit. The chart leaves at
/// least a second between the drain and Kubernetes' SIGKILL; the library's own 5 s
/// would be cut short by it whenever the collector is gone.
#[cfg(feature = "otel")]
const TRACE_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown_with_timeout(TRACE_FLUSH_TIMEOUT)
        {
            eprintln!("introspectd: flushing traces failed: {error}");
        }
    }
}

/// The log filter: `RUST_LOG` where set, else `log.filter`; an error names which.
fn log_filter(settings: &Settings) -> Result<EnvFilter, (&'static str, String)> {
    match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => {
            EnvFilter::try_new(from_env).map_err(|e| ("RUST_LOG", e.to_string()))
        }
        _ => EnvFilter::try_new(&settings.log_filter).map_err(|e| ("log.filter", e.to_string())),
    }
}

/// What [`init`] would refuse, without installing anything: the key (or variable) at
/// fault and why.
pub fn check(settings: &Settings) -> Result<(), (&'static str, String)> {
    log_filter(settings)?;
    #[cfg(feature = "otel")]
    otel::check_endpoint(settings)?;
    #[cfg(not(feature = "otel"))]
    if settings.otlp_endpoint.is_some() {
        return Err((
            "telemetry.otlp_endpoint",
            "this build has no OpenTelemetry support (feature \"otel\")".into(),
        ));
    }
    Ok(())
}

/// Installs the global subscriber (logs, and traces when configured).
pub fn init(settings: &Settings) -> Result<TelemetryGuard, String> {
    check(settings).map_err(|(key, reason)| format!("{key}: {reason}"))?;
    let filter = log_filter(settings).map_err(|(key, reason)| format!("{key}: {reason}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log_layer = match settings.log_format {
        LogFormat::Text => fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![log_layer];

    #[cfg(feature = "otel")]
    let provider = otel::tracer_provider(settings)?;
    #[cfg(feature = "otel")]
    if let Some(provider) = &provider {
        layers.push(otel::layer(provider));
    }

    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(TelemetryGuard {
        #[cfg(feature = "otel")]
        provider,
    })
}

/// Puts a gRPC call's status on its span (`rpc.grpc.status_code`), and marks the span
/// as an error where OpenTelemetry's conventions say a server failed: unknown, past its
/// deadline, unimplemented, internal, unavailable, data loss.
pub fn record_grpc_status(span: &tracing::Span, code: tonic::Code) {
    if span.is_disabled() {
        return;
    }
    span.record("rpc.grpc.status_code", code as i64);
    if matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    ) {
        span.record("otel.status_code", "error");
    }
}

/// Makes the W3C trace context in `headers` (`traceparent`, `tracestate`) the parent of
/// `span`. Without trace export this does nothing.
pub fn parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    // A span nobody records has no parent to set: skip reading the headers.
    #[cfg(feature = "otel")]
    if !span.is_disabled() {
        otel::set_parent(span, headers);
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, headers);
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::{propagation::Extractor, trace::TracerProvider as _};
    use opentelemetry_otlp::{
        WithExportConfig, WithTonicConfig,
        tonic_types::transport::{Certificate, ClientTlsConfig},
    };
    use opentelemetry_sdk::{
        Resource,
        propagation::TraceContextPropagator,
        trace::{Sampler, SdkTracerProvider},
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::{Layer, Registry, filter::Targets};

    use super::Settings;

    fn env_set(name: &str) -> bool {
        std::env::var(name).is_ok_and(|v| !v.is_empty())
    }

    /// `OTEL_SDK_DISABLED=true` turns trace export off, whatever else is set (the
    /// OpenTelemetry specification's switch).
    fn sdk_disabled() -> bool {
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// The first of `names` set to something, with its name.
    fn from_env(names: [&'static str; 2]) -> Option<(&'static str, String)> {
        names.into_iter().find_map(|name| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (name, v))
        })
    }

    /// The collector, and the key (or variable) it came from; `None` when traces are not
    /// exported.
    fn endpoint(config: &Settings) -> Option<(&'static str, String)> {
        if sdk_disabled() {
            return None;
        }
        match &config.otlp_endpoint {
            Some(endpoint) => Some(("telemetry.otlp_endpoint", endpoint.clone())),
            None => from_env([
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ]),
        }
    }

    /// The CA file for an https collector, and the key (or variable) it came from.
    fn ca_file(config: &Settings) -> Option<(&'static str, std::path::PathBuf)> {
        match &config.otlp_ca_file {
            Some(path) => Some(("telemetry.otlp_ca_file", path.clone())),
            None => from_env([
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ])
            .map(|(name, path)| (name, path.into())),
        }
    }

    /// What building the exporter would refuse: an endpoint that is not an http(s) URL
    /// with a host, credentials in it (which the exporter would silently not send), a
    /// CA file that is not PEM certificates or is given for a plain-http collector. An
    /// error names no part of the endpoint (it may carry credentials).
    pub fn check_endpoint(config: &Settings) -> Result<(), (&'static str, String)> {
        let Some((key, endpoint)) = endpoint(config) else {
            return Ok(());
        };
        let Some(uri) = endpoint.parse::<http::Uri>().ok().filter(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
        }) else {
            return Err((key, "is not an http(s) URL with a host".into()));
        };
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err((
                key,
                "has credentials in it, which the exporter does not send: give them as headers in OTEL_EXPORTER_OTLP_HEADERS".into(),
            ));
        }
        match ca_file(config) {
            // The key is introspectd's own: given for a plain collector, it is a mistake
            // to hear of. The variable is shared with other SDKs, which ignore it there.
            Some((ca_key, _))
                if uri.scheme_str() != Some("https") && config.otlp_ca_file.is_some() =>
            {
                return Err((ca_key, "is for an https:// collector".into()));
            }
            Some(_) if uri.scheme_str() != Some("https") => {}
            Some((ca_key, path)) => {
                crate::tls::read_trust_anchors(&path)
                    .map_err(|e| (ca_key, format!("{}: {e}", path.display())))?;
            }
            None => {}
        }
        Ok(())
    }

    pub fn tracer_provider(config: &Settings) -> Result<Option<SdkTracerProvider>, String> {
        let Some((key, endpoint)) = endpoint(config) else {
            return Ok(None);
        };
        // The library's errors quote the endpoint, credentials and all.
        let shown = |error: String| format!("{key}: {}", error.replace(&endpoint, "the endpoint"));
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone());
        if endpoint.starts_with("https://") {
            // The library's default TLS has no roots at all: the system's, or the CA
            // file given.
            let tls = match ca_file(config) {
                Some((ca_key, path)) => {
                    let pem = crate::tls::read_trust_anchors(&path)
                        .map_err(|e| format!("{ca_key}: {}: {e}", path.display()))?;
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                }
                None => ClientTlsConfig::new().with_native_roots(),
            };
            exporter = exporter.with_tls_config(tls);
        }
        let exporter = exporter.build().map_err(|e| shown(e.to_string()))?;
        let mut resource = Resource::builder();
        if let Some(name) = &config.service_name {
            resource = resource.with_service_name(name.clone());
        } else if !env_set("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name("introspectd");
        }
        let mut provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build());
        if let Some(ratio) = config.sample_ratio {
            provider = provider.with_sampler(Sampler::ParentBased(Box::new(
                Sampler::TraceIdRatioBased(ratio),
            )));
        }
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        Ok(Some(provider.build()))
    }

    /// Exports introspectd's own spans (not those of the libraries under it).
    pub fn layer(provider: &SdkTracerProvider) -> Box<dyn Layer<Registry> + Send + Sync> {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("introspectd"))
            // The per-call spans are at debug, so that without an exporter they cost
            // nothing at the default log filter.
            .with_filter(Targets::new().with_target("introspectd", tracing::Level::DEBUG))
            .boxed()
    }

    struct Headers<'a> {
        map: &'a http::HeaderMap,
        /// Several `tracestate` headers, joined; `None` for one or none.
        tracestate: Option<String>,
    }

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            if let Some(joined) = &self.tracestate
                && key.eq_ignore_ascii_case("tracestate")
            {
                return Some(joined);
            }
            self.map.get(key).and_then(|value| value.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.map.keys().map(http::HeaderName::as_str).collect()
        }
    }

    pub fn set_parent(span: &tracing::Span, headers: &http::HeaderMap) {
        // W3C Trace Context: several `tracestate` headers are one list, joined.
        let states = headers.get_all("tracestate");
        let tracestate = (states.iter().nth(1).is_some()).then(|| {
            states
                .iter()
                .filter_map(|value| value.to_str().ok())
                .collect::<Vec<_>>()
                .join(",")
        });
        let carrier = Headers {
            map: headers,
            tracestate,
        };
        let context = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&carrier)
        });
        let _ = span.set_parent(context);
    }
}
