//! Prometheus metrics, per server instance.
//!
//! The recorder is not installed process-wide: each `run` owns a [`Metrics`] (tests start
//! several servers in one process). Hot-path counters are registered once and kept as
//! handles; gauges describing state (key-set age, revocation records, cache size) are
//! set from the state itself at each scrape.

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;
use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::token::Reason;

const METADATA: Metadata<'static> = Metadata::new("introspectd", Level::INFO, Some("introspectd"));

/// Latency buckets, seconds: from a cache hit (µs) to a slow key refetch (s).
const BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5,
];

/// Where an introspection was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Surface {
    Grpc,
    Http,
}

impl Surface {
    fn as_str(self) -> &'static str {
        match self {
            Surface::Grpc => "grpc",
            Surface::Http => "http",
        }
    }
}

/// A gRPC method's counters by status code (indexed by the code's number), and its
/// latency when it is timed.
#[derive(Clone)]
pub struct MethodMetrics {
    by_code: Vec<Counter>,
    latency: Option<Histogram>,
}

impl MethodMetrics {
    pub fn record(&self, code: usize, elapsed: Duration) {
        if let Some(counter) = self.by_code.get(code) {
            counter.increment(1);
        }
        if let Some(latency) = &self.latency {
            latency.record(elapsed.as_secs_f64());
        }
    }
}

/// Open WatchRevocations streams, the events they sent, and how long they lasted.
#[derive(Clone)]
pub struct StreamMetrics {
    pub open: metrics::Gauge,
    pub events: Counter,
    pub duration: Histogram,
}

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// active / inactive by surface; inactive also by reason.
    active: [Counter; 2],
    inactive: [Counter; 2],
    inactive_by_reason: Vec<(Reason, Counter)>,
    cache_hits: Counter,
    cache_misses: Counter,
    /// HTTP route pattern → its handles, so a request costs lookups, not registrations.
    http: DashMap<String, RouteMetrics>,
}

struct RouteMetrics {
    latency: Histogram,
    by_status: DashMap<u16, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        describe(&recorder);
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &METADATA)
        };
        let surface = |s: Surface| vec![Label::new("surface", s.as_str())];
        let with_result = |s: Surface, result: &'static str| {
            let mut labels = surface(s);
            labels.push(Label::new("result", result));
            counter("introspectd_introspections_total", labels)
        };
        let active = [
            with_result(Surface::Grpc, "active"),
            with_result(Surface::Http, "active"),
        ];
        let inactive = [
            with_result(Surface::Grpc, "inactive"),
            with_result(Surface::Http, "inactive"),
        ];
        let inactive_by_reason = Reason::ALL
            .iter()
            .map(|reason| {
                (
                    *reason,
                    counter(
                        "introspectd_inactive_total",
                        vec![Label::new("reason", reason.as_str())],
                    ),
                )
            })
            .collect();
        let cache_hits = counter(
            "introspectd_cache_lookups_total",
            vec![Label::new("result", "hit")],
        );
        let cache_misses = counter(
            "introspectd_cache_lookups_total",
            vec![Label::new("result", "miss")],
        );
        Arc::new(Self {
            recorder,
            handle,
            active,
            inactive,
            inactive_by_reason,
            cache_hits,
            cache_misses,
            http: DashMap::new(),
        })
    }

    /// Counts one answer: active or inactive (by reason), cache hit or miss; and puts it
    /// on the call's span (every surface's one span, at debug: filled only when someone
    /// listens): the token's fingerprint, never the token.
    pub fn record_answer(&self, surface: Surface, answer: &crate::introspect::Introspection) {
        let reason = answer
            .outcome
            .as_ref()
            .err()
            .map(|rejection| rejection.reason);
        self.record_introspection(surface, reason, answer.cache_hit);
        let span = tracing::Span::current();
        if !span.is_disabled() {
            span.record("token.fingerprint", answer.fingerprint.as_str());
            match &answer.outcome {
                Ok(active) => {
                    span.record("iss", active.iss.as_str());
                    span.record("result", "active");
                }
                Err(rejection) => {
                    span.record("result", "inactive");
                    span.record("reason", rejection.reason.as_str());
                }
            }
        }
    }

    fn record_introspection(&self, surface: Surface, reason: Option<Reason>, cache_hit: bool) {
        let index = usize::from(surface == Surface::Http);
        match reason {
            None => self.active[index].increment(1),
            Some(reason) => {
                self.inactive[index].increment(1);
                if let Some((_, counter)) =
                    self.inactive_by_reason.iter().find(|(r, _)| *r == reason)
                {
                    counter.increment(1);
                }
            }
        }
        if cache_hit {
            self.cache_hits.increment(1);
        } else {
            self.cache_misses.increment(1);
        }
    }

    /// Handles for one gRPC method, registered once: recording a call then takes no
    /// lock and allocates nothing. `timed: false` for streaming methods, whose calls
    /// end long after their handler returns (their streams are measured as streams).
    pub fn grpc_method(
        &self,
        method: &'static str,
        timed: bool,
        code_names: &[&'static str],
    ) -> MethodMetrics {
        let by_code = code_names
            .iter()
            .map(|code| {
                self.recorder.register_counter(
                    &Key::from_parts(
                        "introspectd_requests_total",
                        vec![Label::new("method", method), Label::new("code", *code)],
                    ),
                    &METADATA,
                )
            })
            .collect();
        let latency = timed.then(|| {
            self.recorder.register_histogram(
                &Key::from_parts(
                    "introspectd_request_duration_seconds",
                    vec![Label::new("method", method)],
                ),
                &METADATA,
            )
        });
        MethodMetrics { by_code, latency }
    }

    /// Handles for WatchRevocations streams.
    pub fn watch_streams(&self) -> StreamMetrics {
        StreamMetrics {
            open: self
                .recorder
                .register_gauge(&Key::from_name("introspectd_watch_streams"), &METADATA),
            events: self
                .recorder
                .register_counter(&Key::from_name("introspectd_watch_events_total"), &METADATA),
            duration: self.recorder.register_histogram(
                &Key::from_name("introspectd_watch_stream_duration_seconds"),
                &METADATA,
            ),
        }
    }

    /// Counts one HTTP request to `route` (the route's pattern, never the raw path) that
    /// ended with `status` after `elapsed`.
    pub fn record_http(&self, route: &str, status: u16, elapsed: Duration) {
        let metrics = match self.http.get(route) {
            Some(metrics) => metrics,
            None => self
                .http
                .entry(route.to_owned())
                .or_insert_with(|| RouteMetrics {
                    latency: self.recorder.register_histogram(
                        &key(
                            "introspectd_http_request_duration_seconds",
                            &[("route", route.to_owned())],
                        ),
                        &METADATA,
                    ),
                    by_status: DashMap::new(),
                })
                .downgrade(),
        };
        metrics.latency.record(elapsed.as_secs_f64());
        // A read lock once the status has been seen: `entry` would take the shard's write
        // lock on every request, and every core answering this route shares that shard.
        if let Some(counter) = metrics.by_status.get(&status) {
            counter.increment(1);
            return;
        }
        metrics
            .by_status
            .entry(status)
            .or_insert_with(|| {
                self.recorder.register_counter(
                    &key(
                        "introspectd_http_requests_total",
                        &[("route", route.to_owned()), ("status", status.to_string())],
                    ),
                    &METADATA,
                )
            })
            .increment(1);
    }

    /// Sets a gauge (registered on first use).
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, String)], value: f64) {
        self.recorder
            .register_gauge(&key(name, labels), &METADATA)
            .set(value);
    }

    /// Sets a counter to a total kept elsewhere (registered on first use).
    pub fn counter_total(&self, name: &'static str, labels: &[(&'static str, String)], total: u64) {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
            .absolute(total);
    }

    /// Drains histogram samples into their buckets. Without it, samples would pile up
    /// between scrapes (or forever, with no scraper); `run` calls it periodically.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

fn key(name: &'static str, labels: &[(&'static str, String)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, v.clone()))
        .collect();
    Key::from_parts(name, labels)
}

fn describe(recorder: &PrometheusRecorder) {
    let counters = [
        (
            "introspectd_requests_total",
            "gRPC calls by method and status code",
        ),
        (
            "introspectd_introspections_total",
            "Introspection answers by surface and result",
        ),
        ("introspectd_inactive_total", "Inactive answers by reason"),
        (
            "introspectd_cache_lookups_total",
            "Verified-token cache lookups by result",
        ),
        (
            "introspectd_keyset_refresh_failures_total",
            "Failed key-set fetches per issuer",
        ),
        (
            "introspectd_keyset_loads_total",
            "Key sets loaded and published per issuer",
        ),
        (
            "introspectd_statelog_skipped_total",
            "State log entries that could not be read and were skipped",
        ),
        (
            "introspectd_statelog_errors_total",
            "State log errors (Redis unreachable, commit failures)",
        ),
        (
            "introspectd_enrichment_failures_total",
            "Enrichment lookups that failed, per enricher",
        ),
        (
            "introspectd_tls_reloads_total",
            "Checks that found changed TLS files, by whether they could be used",
        ),
        (
            "introspectd_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out (plaintext, unknown client CA, ...)",
        ),
    ];
    for (name, help) in counters {
        recorder.describe_counter(name.into(), None, help.into());
    }
    let gauges = [
        (
            "introspectd_keyset_age_seconds",
            Some(Unit::Seconds),
            "Seconds since the issuer's keys last loaded",
        ),
        (
            "introspectd_keyset_keys",
            None,
            "Keys in the issuer's current key set",
        ),
        (
            "introspectd_revocation_records",
            None,
            "Live revocation records by kind",
        ),
        ("introspectd_cache_entries", None, "Verified tokens cached"),
        (
            "introspectd_statelog_applied_position",
            None,
            "Last state log position applied here",
        ),
        (
            "introspectd_statelog_lag_seconds",
            Some(Unit::Seconds),
            "Seconds since the state log was last in contact with its store",
        ),
        (
            "introspectd_ready",
            None,
            "1 when every issuer's keys loaded and the store caught up",
        ),
        (
            "introspectd_subject_claims",
            None,
            "Subjects with custom claims",
        ),
        (
            "introspectd_build_info",
            None,
            "Always 1; the version label says which introspectd answers",
        ),
    ];
    for (name, unit, help) in gauges {
        recorder.describe_gauge(name.into(), unit, help.into());
    }
    recorder.describe_histogram(
        "introspectd_request_duration_seconds".into(),
        Some(Unit::Seconds),
        "gRPC call latency by method".into(),
    );
    recorder.describe_counter(
        "introspectd_http_requests_total".into(),
        None,
        "HTTP requests by route and status".into(),
    );
    recorder.describe_gauge(
        "introspectd_watch_streams".into(),
        None,
        "Open WatchRevocations streams".into(),
    );
    recorder.describe_counter(
        "introspectd_watch_events_total".into(),
        None,
        "Events sent on WatchRevocations streams".into(),
    );
    recorder.describe_histogram(
        "introspectd_watch_stream_duration_seconds".into(),
        Some(Unit::Seconds),
        "How long WatchRevocations streams stayed open".into(),
    );
    recorder.describe_histogram(
        "introspectd_http_request_duration_seconds".into(),
        Some(Unit::Seconds),
        "HTTP request latency by route".into(),
    );
}

/// Everything `/metrics` reports on besides the counters: read at each scrape.
pub struct Observed {
    pub metrics: Arc<Metrics>,
    pub issuers: Arc<crate::keys::Issuers>,
    pub introspector: Arc<crate::introspect::Introspector>,
    pub applier: Arc<crate::statelog::Applier>,
    pub state_log: Arc<crate::statelog::StateLog>,
    pub ready: tokio::sync::watch::Receiver<bool>,
    pub tls: Option<Arc<crate::tls::Tls>>,
}

impl Observed {
    pub fn render(&self, now: i64) -> String {
        let m = &self.metrics;
        for issuer in self.issuers.iter() {
            let labels = [("issuer", issuer.policy.issuer.clone())];
            if let Some(loaded_at) = issuer.loaded_at() {
                m.gauge(
                    "introspectd_keyset_age_seconds",
                    &labels,
                    (now - loaded_at).max(0) as f64,
                );
            }
            m.gauge(
                "introspectd_keyset_keys",
                &labels,
                issuer.keys().map_or(0, |k| k.len()) as f64,
            );
            m.counter_total(
                "introspectd_keyset_refresh_failures_total",
                &labels,
                issuer.failures(),
            );
            m.counter_total("introspectd_keyset_loads_total", &labels, issuer.loads());
        }
        for (kind, count) in self.applier.revocations.size().by_kind() {
            m.gauge(
                "introspectd_revocation_records",
                &[("kind", kind.as_str().to_owned())],
                count as f64,
            );
        }
        m.gauge(
            "introspectd_cache_entries",
            &[],
            self.introspector.cache().len() as f64,
        );
        if let Some(tls) = &self.tls {
            let counts = tls.counts();
            let read = |count: &std::sync::atomic::AtomicU64| {
                count.load(std::sync::atomic::Ordering::Relaxed)
            };
            for (result, count) in [
                ("reloaded", read(&counts.reloads)),
                ("failed", read(&counts.reload_failures)),
            ] {
                m.counter_total(
                    "introspectd_tls_reloads_total",
                    &[("result", result.to_owned())],
                    count,
                );
            }
            m.counter_total(
                "introspectd_tls_handshake_failures_total",
                &[],
                read(&counts.handshake_failures),
            );
        }
        for (iss, pipeline) in self.introspector.pipelines() {
            for (enricher, failures) in pipeline.failures() {
                let labels = [
                    ("issuer", iss.to_owned()),
                    ("enricher", enricher.to_owned()),
                ];
                m.counter_total("introspectd_enrichment_failures_total", &labels, failures);
            }
        }
        m.gauge(
            "introspectd_subject_claims",
            &[],
            self.applier.subjects.len() as f64,
        );
        m.gauge(
            "introspectd_statelog_applied_position",
            &[],
            self.applier.applied() as f64,
        );
        m.gauge(
            "introspectd_statelog_lag_seconds",
            &[],
            self.state_log.lag_secs(now) as f64,
        );
        m.counter_total(
            "introspectd_statelog_errors_total",
            &[],
            self.applier.errors(),
        );
        m.counter_total(
            "introspectd_statelog_skipped_total",
            &[],
            self.applier.skipped(),
        );
        m.gauge(
            "introspectd_ready",
            &[],
            if *self.ready.borrow() { 1.0 } else { 0.0 },
        );
        m.gauge(
            "introspectd_build_info",
            &[("version", env!("CARGO_PKG_VERSION").to_owned())],
            1.0,
        );
        let mut text = m.render();
        if let Some(process) = super::process::ProcessStats::read() {
            process.render(&mut text);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_http_request_is_counted_by_route_and_status() {
        let metrics = Metrics::new();
        for _ in 0..3 {
            metrics.record_http("/oauth2/introspect", 200, Duration::from_micros(5));
        }
        metrics.record_http("/oauth2/introspect", 400, Duration::from_micros(5));
        metrics.record_http("/healthz", 200, Duration::from_micros(5));
        let text = metrics.render();
        for line in [
            r#"introspectd_http_requests_total{route="/oauth2/introspect",status="200"} 3"#,
            r#"introspectd_http_requests_total{route="/oauth2/introspect",status="400"} 1"#,
            r#"introspectd_http_requests_total{route="/healthz",status="200"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
