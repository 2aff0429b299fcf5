//! Per-instance counters (requests, 5xx, connect errors, latency to the
//! response head) and their Prometheus text. Plain atomics: recording costs
//! a few relaxed additions per request and no lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// The same bounds in microseconds, for bucketing without floats.
const BOUNDS_MICROS: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

#[derive(Default)]
pub(super) struct UpstreamMetrics {
    requests: AtomicU64,
    errors_5xx: AtomicU64,
    connect_errors: AtomicU64,
    /// Per bucket, not cumulative; the last one is `+Inf`.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl UpstreamMetrics {
    /// One response (from the instance, or the router's 502/504 for it).
    pub fn record(&self, status: u16, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors_5xx.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn connect_error(&self) {
        self.connect_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one instance's series are rendered from.
pub(super) struct Series<'a> {
    pub instance: &'a str,
    pub version: &'a str,
    pub in_flight: u64,
    pub metrics: &'a UpstreamMetrics,
}

/// Router-wide figures: requests answered by the router itself.
#[derive(Default)]
pub(super) struct RouterMetrics {
    /// 503: no instance in the table.
    pub no_instance: AtomicU64,
    /// 502: every instance tried failed to connect.
    pub all_failed: AtomicU64,
    /// 400: a request the router could not read (malformed head or body).
    pub bad_request: AtomicU64,
}

pub(super) fn render(
    out: &mut String,
    app: &str,
    env: &str,
    series: &[Series<'_>],
    router: &RouterMetrics,
) {
    let app = escape(app);
    let env = escape(env);
    let labels: Vec<String> = series
        .iter()
        .map(|s| {
            format!(
                "app=\"{app}\",env=\"{env}\",instance=\"{}\",version=\"{}\"",
                escape(s.instance),
                escape(s.version)
            )
        })
        .collect();
    let counter = |out: &mut String, name: &str, help: &str, value: &dyn Fn(&Series) -> u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (s, l) in series.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{l}}} {}", value(s));
        }
    };
    counter(
        out,
        "slipway_router_requests_total",
        "Requests answered through an instance.",
        &|s| s.metrics.requests.load(Ordering::Relaxed),
    );
    counter(
        out,
        "slipway_router_responses_5xx_total",
        "Responses with a 5xx status through an instance (its own, or the router's 502/504 for it).",
        &|s| s.metrics.errors_5xx.load(Ordering::Relaxed),
    );
    counter(
        out,
        "slipway_router_connect_errors_total",
        "Failed connection attempts to an instance (the request was tried on another).",
        &|s| s.metrics.connect_errors.load(Ordering::Relaxed),
    );
    let name = "slipway_router_in_flight";
    let _ = writeln!(
        out,
        "# HELP {name} Requests in flight to an instance.\n# TYPE {name} gauge"
    );
    for (s, l) in series.iter().zip(&labels) {
        let _ = writeln!(out, "{name}{{{l}}} {}", s.in_flight);
    }
    let name = "slipway_router_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from a request's head to its response's head, per instance.\n# TYPE {name} histogram"
    );
    for (s, l) in series.iter().zip(&labels) {
        let mut cumulative = 0;
        for (i, bucket) in s.metrics.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match BOUNDS.get(i) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{{l},le=\"{bound}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = s.metrics.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_sum{{{l}}} {sum}\n{name}_count{{{l}}} {cumulative}"
        );
    }
    let name = "slipway_router_unrouted_total";
    let _ = writeln!(
        out,
        "# HELP {name} Requests the router answered itself: 400 malformed, 503 no instance in the table, 502 every instance failed.\n# TYPE {name} counter"
    );
    for (status, value) in [
        ("400", &router.bad_request),
        ("502", &router.all_failed),
        ("503", &router.no_instance),
    ] {
        let _ = writeln!(
            out,
            "{name}{{app=\"{app}\",env=\"{env}\",status=\"{status}\"}} {}",
            value.load(Ordering::Relaxed)
        );
    }
}

/// A label value in Prometheus text: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
