//! Prometheus metrics, one registry per server.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

/// Latency buckets (seconds) of the host-call histograms.
const HOST_CALL_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5,
];

/// What guests' host calls cost, counted where the calls are served (feature
/// reads, wasi-nn computes, publishes) and registered with every server's registry
/// by [`Metrics::new`]. Every label value is a validated name (tenant, function,
/// model, version) or one of a fixed set.
pub struct HostCalls {
    /// Feature entities read, by where the row came from (`near_cache`, `store`)
    /// and whether it held any value (`hit`, `miss`).
    pub feature_rows: IntCounterVec,
    /// One feature read (get or get-many), near cache and store together.
    pub feature_seconds: HistogramVec,
    /// One wasi-nn compute, by backend and model version (queueing on the
    /// inference pool and batching included).
    pub inference_seconds: HistogramVec,
    /// Rows in each batch a function or pipeline ran on.
    pub batch_rows: HistogramVec,
    /// Events published, by who published (`function`, `api`).
    pub events_published: IntCounterVec,
}

fn host_calls() -> prometheus::Result<HostCalls> {
    let seconds = |name: &str, help: &str, labels: &[&str]| {
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(HOST_CALL_BUCKETS.to_vec()),
            labels,
        )
    };
    Ok(HostCalls {
        feature_rows: IntCounterVec::new(
            Opts::new(
                "quiver_feature_rows_total",
                "Feature rows read by guests, by source (near_cache, store) and result (hit: the entity had values, miss: none)",
            ),
            &["tenant", "source", "result"],
        )?,
        feature_seconds: seconds(
            "quiver_feature_read_duration_seconds",
            "One feature read by a guest (features.get or get-many)",
            &["tenant"],
        )?,
        inference_seconds: seconds(
            "quiver_inference_duration_seconds",
            "One wasi-nn compute, by backend and model version (pool queueing and batching included)",
            &["tenant", "model", "version", "backend"],
        )?,
        batch_rows: HistogramVec::new(
            HistogramOpts::new("quiver_batch_rows", "Rows in each batch a function ran on")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0]),
            &["tenant", "function"],
        )?,
        events_published: IntCounterVec::new(
            Opts::new(
                "quiver_events_published_total",
                "Events published, by who published (function: a guest, api: POST /events)",
            ),
            &["tenant", "via"],
        )?,
    })
}

/// The process's host-call metrics.
pub static HOST_CALLS: LazyLock<HostCalls> = LazyLock::new(|| {
    // Literal names, help texts and label sets, valid by construction: the one way
    // `host_calls` fails (an invalid name) cannot happen at run time.
    host_calls().expect("host-call metric definitions are valid")
});

pub struct Metrics {
    registry: Registry,
    pub invocations: IntCounterVec,
    pub errors: IntCounterVec,
    pub latency: HistogramVec,
    /// Requests that named no deployed function, by route and error code: bounded
    /// labels, so requests for made-up names add no series.
    pub unresolved: IntCounterVec,
    /// Per tenant, what it used since this host started and what it stores.
    pub usage: prometheus::GaugeVec,
    /// Shadow copies not run because [`crate::call::MAX_SHADOWS`] were running.
    pub shadow_skipped: IntCounterVec,
    /// The cold-start counter (owned by the functions), for [`Metrics::traffic`].
    cold_starts: std::sync::OnceLock<IntCounterVec>,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let invocations = IntCounterVec::new(
            Opts::new(
                "quiver_invocations_total",
                "Invocations by function and HTTP status",
            ),
            &["tenant", "function", "version", "status"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new("quiver_errors_total", "Failed invocations by error code"),
            &["tenant", "function", "code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "quiver_invocation_duration_seconds",
                "Invocation latency inside the host",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ]),
            &["tenant", "function", "version"],
        )?;
        let unresolved = IntCounterVec::new(
            Opts::new(
                "quiver_unresolved_requests_total",
                "Requests that named no deployed function (or were refused before naming one), by route and error code",
            ),
            &["route", "code"],
        )?;
        let usage = prometheus::GaugeVec::new(
            Opts::new(
                "quiver_tenant_usage",
                "Per tenant: invocations, cpu_ms (instance busy time), memory_gb_seconds (memory limit x busy time), inference_calls, egress_calls, egress_denied since start; registry_bytes and feature_bytes stored now",
            ),
            &["tenant", "measure"],
        )?;
        let shadow_skipped = IntCounterVec::new(
            Opts::new(
                "quiver_shadow_skipped_total",
                "Copies of calls for a shadow version not run: the host's shadow slots were full",
            ),
            &["tenant", "function"],
        )?;
        registry.register(Box::new(shadow_skipped.clone()))?;
        registry.register(Box::new(usage.clone()))?;
        registry.register(Box::new(unresolved.clone()))?;
        registry.register(Box::new(invocations.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        let h = &*HOST_CALLS;
        registry.register(Box::new(h.feature_rows.clone()))?;
        registry.register(Box::new(h.feature_seconds.clone()))?;
        registry.register(Box::new(h.inference_seconds.clone()))?;
        registry.register(Box::new(h.batch_rows.clone()))?;
        registry.register(Box::new(h.events_published.clone()))?;
        Ok(Metrics {
            registry,
            invocations,
            errors,
            latency,
            unresolved,
            usage,
            shadow_skipped,
            cold_starts: std::sync::OnceLock::new(),
        })
    }

    /// Add metrics owned elsewhere (the scaler's, for example).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> anyhow::Result<()> {
        Ok(self.registry.register(collector)?)
    }

    /// Only the series labelled `tenant="<tenant>"`.
    pub fn render_tenant(&self, tenant: &str) -> String {
        let mut families = self.registry.gather();
        for f in &mut families {
            let kept: Vec<_> = f
                .take_metric()
                .into_iter()
                .filter(|m| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == "tenant" && l.value() == tenant)
                })
                .collect();
            f.set_metric(kept);
        }
        families.retain(|f| !f.get_metric().is_empty());
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Tell [`Metrics::traffic`] where the cold starts are counted (once).
    pub fn track_cold_starts(&self, counter: IntCounterVec) {
        let _ = self.cold_starts.set(counter);
    }

    /// Only the calls, latency and cold-start families (what the dashboard samples
    /// every few seconds: not the whole registry).
    pub fn traffic(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::core::Collector as _;
        let mut out = self.invocations.collect();
        out.extend(self.latency.collect());
        if let Some(c) = self.cold_starts.get() {
            out.extend(c.collect());
        }
        out
    }

    /// Every registered family, as the registry holds it now (for the OTLP
    /// exporter).
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// The `q` quantile of a Prometheus histogram's cumulative buckets
/// `(upper bound, count)`, interpolated linearly inside its bucket as
/// `histogram_quantile` does; `None` without observations.
pub fn quantile(q: f64, buckets: &[(f64, u64)], total: u64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(upper, count) in buckets {
        if count as f64 >= rank {
            if !upper.is_finite() {
                return Some(lower);
            }
            let inside = (count - below) as f64;
            let frac = match inside > 0.0 {
                true => (rank - below as f64) / inside,
                false => 0.0,
            };
            return Some(lower + (upper - lower) * frac);
        }
        (lower, below) = (upper, count);
    }
    Some(lower)
}

/// A histogram's cumulative buckets as (upper bound, count).
pub fn buckets(h: &prometheus::proto::Histogram) -> Vec<(f64, u64)> {
    h.get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect()
}

impl Metrics {
    /// A function's versions side by side (the canary comparison): for each
    /// version that served calls since this host started, its calls, errors (5xx),
    /// error rate and latency p50/p99; and for each model version it ran, the count,
    /// mean and median of each declared prediction output.
    pub fn compare(&self, tenant: &str, function: &str) -> serde_json::Value {
        use serde_json::json;
        let families = self.registry.gather();
        let labels = |m: &prometheus::proto::Metric| -> std::collections::HashMap<String, String> {
            m.get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect()
        };
        let ours = |l: &std::collections::HashMap<String, String>| {
            l.get("tenant").map(String::as_str) == Some(tenant)
                && l.get("function").map(String::as_str) == Some(function)
        };
        let mut versions: std::collections::BTreeMap<String, (u64, u64, Option<f64>, Option<f64>)> =
            Default::default();
        let mut predictions = serde_json::Map::new();
        for f in &families {
            for m in f.get_metric() {
                let l = labels(m);
                if !ours(&l) {
                    continue;
                }
                let version = l.get("version").cloned().unwrap_or_default();
                match f.name() {
                    "quiver_invocations_total" => {
                        let n = m.get_counter().get_value() as u64;
                        let e = versions.entry(version).or_default();
                        e.0 += n;
                        if l.get("status").is_some_and(|s| s.starts_with('5')) {
                            e.1 += n;
                        }
                    }
                    "quiver_invocation_duration_seconds" => {
                        let h = m.get_histogram();
                        let b = buckets(h);
                        let e = versions.entry(version).or_default();
                        e.2 = quantile(0.5, &b, h.get_sample_count());
                        e.3 = quantile(0.99, &b, h.get_sample_count());
                    }
                    "quiver_prediction_value" => {
                        let h = m.get_histogram();
                        let n = h.get_sample_count();
                        let b = buckets(h);
                        let model = l.get("model").cloned().unwrap_or_default();
                        let output = l.get("output").cloned().unwrap_or_default();
                        let entry = predictions.entry(model).or_insert_with(|| json!({}));
                        entry[output] = json!({
                            "count": n,
                            "mean": (n > 0).then(|| h.get_sample_sum() / n as f64),
                            "p50": quantile(0.5, &b, n),
                        });
                    }
                    _ => {}
                }
            }
        }
        let ms = |s: Option<f64>| s.map(|s| s * 1000.0);
        let versions: serde_json::Map<String, serde_json::Value> = versions
            .into_iter()
            .map(|(v, (calls, errors, p50, p99))| {
                let rate = match calls {
                    0 => 0.0,
                    n => errors as f64 / n as f64,
                };
                (
                    v,
                    json!({
                        "calls": calls,
                        "errors": errors,
                        "error_rate": rate,
                        "p50_ms": ms(p50),
                        "p99_ms": ms(p99),
                    }),
                )
            })
            .collect();
        json!({ "versions": versions, "predictions": predictions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let b = [(1.0, 0), (2.0, 10), (4.0, 20), (f64::INFINITY, 20)];
        assert_eq!(quantile(0.5, &b, 20), Some(2.0));
        assert_eq!(quantile(0.25, &b, 20), Some(1.5));
        assert_eq!(quantile(0.75, &b, 20), Some(3.0));
        assert_eq!(quantile(0.5, &b, 0), None);
        // Past the last finite bound: its upper edge, as Prometheus answers.
        let over = [(1.0, 0), (f64::INFINITY, 5)];
        assert_eq!(quantile(0.5, &over, 5), Some(1.0));
    }

    #[test]
    fn versions_are_compared_side_by_side() {
        let m = Metrics::new().unwrap();
        for (v, status, n) in [
            ("1.0.0", "200", 9),
            ("1.0.0", "500", 1),
            ("2.0.0", "200", 4),
        ] {
            m.invocations
                .with_label_values(&["t", "f", v, status])
                .inc_by(n);
        }
        m.invocations
            .with_label_values(&["other", "f", "1.0.0", "500"])
            .inc_by(7);
        m.latency
            .with_label_values(&["t", "f", "2.0.0"])
            .observe(0.003);
        let c = m.compare("t", "f");
        assert_eq!(c["versions"]["1.0.0"]["calls"], 10);
        assert_eq!(c["versions"]["1.0.0"]["errors"], 1);
        assert_eq!(c["versions"]["1.0.0"]["error_rate"], 0.1);
        assert_eq!(c["versions"]["2.0.0"]["errors"], 0);
        let p50 = c["versions"]["2.0.0"]["p50_ms"].as_f64().unwrap();
        assert!((2.5..=5.0).contains(&p50), "{p50}");
    }
}
