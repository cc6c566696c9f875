//! `/metrics`: Prometheus text exposition of the service's counters.

use std::sync::atomic::AtomicU64;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::problem::ApiError;
use crate::server::AppState;

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route pattern, e.g. `/v1/uploads/{id}`, or `unmatched`.
    pub route: String,
    /// The HTTP method.
    pub method: String,
    /// The status code.
    pub status: u16,
}

/// Every metric the service exposes.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request body bytes received (as declared by `Content-Length`).
    pub bytes_in: Counter,
    /// Response body bytes sent (as declared by `Content-Length`).
    pub bytes_out: Counter,
    /// SSE streams open now.
    pub sse_streams: Gauge,
    upload_sessions: Gauge,
    events_appended: Counter<u64, AtomicU64>,
    head_sequence: Gauge,
    subscribers: Gauge,
    subscribers_cut: Counter<u64, AtomicU64>,
    blob_placements: Counter<u64, AtomicU64>,
    blob_placement_rounds: Counter<u64, AtomicU64>,
    /// How many events the in-process relay trails the head by (0 without a relay).
    pub relay_lag: Gauge,
    gc_runs: Counter,
    gc_expired: Counter,
    gc_removed: Counter,
    gc_bytes: Counter,
    gc_last_run: Gauge,
    gc_run_seconds: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("artifactstore");
        let metrics = Metrics {
            requests: Family::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            sse_streams: Gauge::default(),
            upload_sessions: Gauge::default(),
            events_appended: Counter::default(),
            head_sequence: Gauge::default(),
            subscribers: Gauge::default(),
            subscribers_cut: Counter::default(),
            blob_placements: Counter::default(),
            blob_placement_rounds: Counter::default(),
            relay_lag: Gauge::default(),
            gc_runs: Counter::default(),
            gc_expired: Counter::default(),
            gc_removed: Counter::default(),
            gc_bytes: Counter::default(),
            gc_last_run: Gauge::default(),
            gc_run_seconds: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("http_requests", "HTTP requests by route, method and status", metrics.requests.clone());
        registry.register("http_request_bytes", "Request body bytes received", metrics.bytes_in.clone());
        registry.register("http_response_bytes", "Response body bytes sent", metrics.bytes_out.clone());
        registry.register("sse_streams", "Server-Sent Events streams open now", metrics.sse_streams.clone());
        registry.register(
            "upload_sessions",
            "Upload sessions open now that hold a row (declared at their opening, or holding bytes)",
            metrics.upload_sessions.clone(),
        );
        registry.register("events_appended", "Events this instance appended", metrics.events_appended.clone());
        registry.register("head_sequence", "The log's head sequence", metrics.head_sequence.clone());
        registry.register("feed_subscribers", "Live feed subscribers", metrics.subscribers.clone());
        registry.register(
            "feed_subscribers_cut",
            "Live feed subscribers closed for falling behind",
            metrics.subscribers_cut.clone(),
        );
        registry.register(
            "blob_placements",
            "Blobs this instance put at their content address on a filesystem store (or found there already)",
            metrics.blob_placements.clone(),
        );
        registry.register(
            "blob_placement_rounds",
            "Rounds of filesystem syncs that made those placements durable, each for a group of them",
            metrics.blob_placement_rounds.clone(),
        );
        registry.register("relay_lag_events", "Events the broker relay trails the head by", metrics.relay_lag.clone());
        registry.register(
            "gc_runs",
            "Lifecycle runs this instance made (dry runs not counted)",
            metrics.gc_runs.clone(),
        );
        registry.register(
            "gc_versions_expired",
            "Package versions expired by lifecycle runs",
            metrics.gc_expired.clone(),
        );
        registry.register("gc_blobs_removed", "Blobs removed by lifecycle runs", metrics.gc_removed.clone());
        registry.register(
            "gc_bytes_reclaimed",
            "Bytes of the blobs removed by lifecycle runs",
            metrics.gc_bytes.clone(),
        );
        registry.register(
            "gc_last_run_timestamp_seconds",
            "When the last lifecycle run of this instance ended, in Unix seconds",
            metrics.gc_last_run.clone(),
        );
        registry.register(
            "gc_last_run_duration_seconds",
            "How long the last lifecycle run took",
            metrics.gc_run_seconds.clone(),
        );
        Metrics { registry, ..metrics }
    }
}

impl Metrics {
    /// Counts a lifecycle run that took `took` (dry runs change nothing and are not counted).
    pub(crate) fn record_gc(&self, report: &crate::lifecycle::Report, took: std::time::Duration) {
        if report.dry_run {
            return;
        }
        self.gc_runs.inc();
        self.gc_expired.inc_by(report.expired.len() as u64);
        self.gc_removed.inc_by(report.removed.len() as u64);
        self.gc_bytes.inc_by(report.bytes);
        self.gc_last_run.set(chrono::Utc::now().timestamp());
        self.gc_run_seconds.set(took.as_secs_f64());
    }
}

fn set_counter(counter: &Counter<u64, AtomicU64>, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

/// `GET /metrics`.
pub(crate) async fn render(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = &state.metrics;
    m.upload_sessions.set(state.uploads.sessions().count_open(crate::uploads::now_ms()).await?);
    set_counter(&m.events_appended, state.instance.log.stats().events);
    m.head_sequence.set(i64::try_from(state.instance.log.head().sequence).unwrap_or(i64::MAX));
    let feed = state.broadcaster.stats();
    m.subscribers.set(i64::try_from(feed.subscribers).unwrap_or(i64::MAX));
    set_counter(&m.subscribers_cut, feed.cut);
    let placed = state.instance.store.placement_stats();
    set_counter(&m.blob_placements, placed.placements);
    set_counter(&m.blob_placement_rounds, placed.rounds);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &m.registry).map_err(|err| ApiError::internal(&err))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// A request's method as a label: the methods of RFC 9110 and `PATCH` by name, any other as `other`, so made-up
/// methods cannot grow the label set.
fn method_label(method: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.into_iter().find(|known| *known == method.as_str()).unwrap_or("other")
}

/// Counts every request by route and status, and the declared body sizes.
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = method_label(request.method()).to_owned();
    let length = |headers: &axum::http::HeaderMap| {
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
    };
    if let Some(n) = length(request.headers()) {
        state.metrics.bytes_in.inc_by(n);
    }
    let response = next.run(request).await;
    if let Some(n) = length(response.headers()) {
        state.metrics.bytes_out.inc_by(n);
    }
    state.metrics.requests.get_or_create(&RequestLabels { route, method, status: response.status().as_u16() }).inc();
    response
}
