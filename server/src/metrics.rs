//! Prometheus metrics: requests by route and status, latency histograms, and
//! registry figures (bytes in and out, blobs stored, uploads in progress).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry as PromRegistry;
use slipway_registry::routes::RouteLabel;
use sqlx::Sqlite;

use crate::app::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// Registry figures read at scrape time.
#[derive(Debug, Default)]
struct Snapshot {
    bytes_in: AtomicI64,
    bytes_out: AtomicI64,
    blobs: AtomicI64,
    blob_bytes: AtomicI64,
    uploads: AtomicI64,
}

#[derive(Debug)]
struct RegistryCollector(Arc<Snapshot>);

impl prometheus_client::collector::Collector for RegistryCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let counters = [
            (
                "slipway_registry_received_bytes",
                "Bytes received in blob and manifest uploads",
                &s.bytes_in,
            ),
            (
                "slipway_registry_sent_bytes",
                "Bytes sent in blob and manifest downloads",
                &s.bytes_out,
            ),
        ];
        for (name, help, value) in counters {
            let metric = ConstCounter::new(value.load(Ordering::Relaxed) as u64);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        let gauges = [
            ("slipway_registry_blobs", "Blobs stored", &s.blobs),
            (
                "slipway_registry_blob_bytes",
                "Bytes of blobs stored",
                &s.blob_bytes,
            ),
            (
                "slipway_registry_uploads_in_progress",
                "Upload sessions open",
                &s.uploads,
            ),
        ];
        for (name, help, value) in gauges {
            let metric = ConstGauge::new(value.load(Ordering::Relaxed));
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        Ok(())
    }
}

pub struct Metrics {
    registry: PromRegistry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    snapshot: Arc<Snapshot>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = PromRegistry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "slipway_http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 4.0, 10))
        });
        registry.register(
            "slipway_http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        let snapshot = Arc::new(Snapshot::default());
        registry.register_collector(Box::new(RegistryCollector(snapshot.clone())));
        Metrics {
            registry,
            requests,
            latency,
            snapshot,
        }
    }
}

/// Middleware: count and time every request under its route pattern.
pub async fn track(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().to_string();
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let route = match response.extensions().get::<RouteLabel>() {
        Some(label) => label.0.to_owned(),
        None => matched.unwrap_or_else(|| "unmatched".into()),
    };
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method,
            status: response.status().as_u16(),
        })
        .inc();
    app.metrics
        .latency
        .get_or_create(&RouteLabels { route })
        .observe(start.elapsed().as_secs_f64());
    response
}

/// Requires an admin (metrics reveal traffic and storage figures).
pub async fn get(
    State(app): State<AppState>,
    caller: Result<crate::api::ApiCaller, crate::api::ApiError>,
) -> Response {
    if let Err(e) = caller.and_then(|c| c.require_admin()) {
        return e.into_response();
    }
    let s = &app.metrics.snapshot;
    s.bytes_in.store(
        app.registry.stats.bytes_in.load(Ordering::Relaxed) as i64,
        Ordering::Relaxed,
    );
    s.bytes_out.store(
        app.registry.stats.bytes_out.load(Ordering::Relaxed) as i64,
        Ordering::Relaxed,
    );
    let stored =
        sqlx::query_as::<Sqlite, (i64, Option<i64>)>("SELECT count(*), sum(size) FROM blobs")
            .fetch_one(&app.db)
            .await;
    let uploads = sqlx::query_scalar::<Sqlite, i64>("SELECT count(*) FROM uploads")
        .fetch_one(&app.db)
        .await;
    match (stored, uploads) {
        (Ok((blobs, bytes)), Ok(uploads)) => {
            s.blobs.store(blobs, Ordering::Relaxed);
            s.blob_bytes.store(bytes.unwrap_or(0), Ordering::Relaxed);
            s.uploads.store(uploads, Ordering::Relaxed);
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "metrics: registry figures unavailable")
        }
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &app.metrics.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
