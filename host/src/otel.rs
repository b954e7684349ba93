//! OpenTelemetry export, off by default. With `--otlp-endpoint URL` the host
//! sends every sampled call's span tree (see [`crate::trace::Span`]) to
//! `URL/v1/traces` through the SDK's batch span processor and the OTLP/HTTP
//! exporter (protobuf), and pushes its metrics — the same registry `/metrics`
//! serves, so one definition serves both — to `URL/v1/metrics` every
//! `--otlp-metrics-interval`, as cumulative OTLP sums, gauges and histograms.
//! `--otlp-sample-ratio` samples new traces by their id (a caller's `traceparent`
//! decides for its own trace).

use crate::metrics::Metrics;
use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::metrics::v1 as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanProcessor};
use opentelemetry_sdk::Resource;
use prometheus::proto::{MetricFamily, MetricType};
use prost::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most spans waiting for export; past it, spans are dropped (and counted by
/// the SDK), never the calls that made them.
const MAX_QUEUED_SPANS: usize = 8192;

struct Spans {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

static SPANS: OnceLock<Spans> = OnceLock::new();

/// The share of new traces sampled, as `ratio * u64::MAX` (all by default).
static SAMPLE_BELOW: AtomicU64 = AtomicU64::new(u64::MAX);

/// Whether a new trace (no caller's `traceparent`) is sampled: its id's low 8
/// bytes below the ratio's share, as OpenTelemetry's `TraceIdRatioBased` samples
/// (so every host that sees the id decides alike). A caller's sampled flag is
/// followed as it comes (parent-based).
pub fn sample(trace_id: &[u8; 16]) -> bool {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let below = SAMPLE_BELOW.load(Ordering::Relaxed);
    below == u64::MAX || u64::from_be_bytes(low) < below
}

/// Whether spans are exported (a span opened with export off records nothing).
pub fn enabled() -> bool {
    SPANS.get().is_some()
}

/// The instrumentation scope of the host's spans.
pub(crate) fn scope() -> InstrumentationScope {
    match SPANS.get() {
        Some(s) => s.scope.clone(),
        None => InstrumentationScope::builder("quiver").build(),
    }
}

/// Hand a finished span to the batch processor (it never blocks: a full queue
/// drops the span).
pub(crate) fn record(span: SpanData) {
    if let Some(s) = SPANS.get() {
        s.processor.on_end(span);
    }
}

fn service() -> Resource {
    Resource::builder()
        .with_service_name("quiver")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

/// Start exporting to `endpoint` (`http://host:port`, the OTLP/HTTP receiver's base).
/// Spans from now on, and metrics every `interval` from a task of their own
/// (`refresh` sets the gauges first, as a scrape of `/metrics` does).
pub fn start(
    endpoint: &str,
    metrics: Arc<Metrics>,
    refresh: Box<dyn Fn() + Send + Sync>,
    interval: Duration,
    sample_ratio: f64,
) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&sample_ratio) {
        anyhow::bail!("--otlp-sample-ratio is 0 to 1, not {sample_ratio}");
    }
    let below = match sample_ratio >= 1.0 {
        true => u64::MAX,
        false => (sample_ratio * u64::MAX as f64) as u64,
    };
    SAMPLE_BELOW.store(below, Ordering::Relaxed);
    let base = endpoint.trim_end_matches('/').to_string();
    let url: reqwest::Url = base
        .parse()
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint `{endpoint}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!("--otlp-endpoint `{endpoint}` must be an http:// or https:// URL");
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{base}/v1/traces"))
        .with_timeout(Duration::from_secs(5))
        .build()?;
    let mut processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUED_SPANS)
                .with_scheduled_delay(Duration::from_millis(500))
                .build(),
        )
        .build();
    processor.set_resource(&service());
    let scope = InstrumentationScope::builder("quiver")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    if SPANS.set(Spans { processor, scope }).is_err() {
        anyhow::bail!("OTLP export was already started in this process");
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let started = unix_nanos(SystemTime::now());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            // The gauges a scrape of /metrics sets (instances, queue depth...), now.
            refresh();
            push_metrics(&client, &base, &metrics, started).await;
        }
    });
    Ok(())
}

/// Export what is queued (at shutdown).
pub fn flush() {
    if let Some(s) = SPANS.get() {
        if let Err(e) = s.processor.force_flush() {
            tracing::warn!("flushing spans: {e}");
        }
    }
}

async fn push_metrics(client: &reqwest::Client, base: &str, metrics: &Metrics, started: u64) {
    let request = to_otlp(&metrics.gather(), started, unix_nanos(SystemTime::now()));
    let sent = client
        .post(format!("{base}/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!("OTLP metrics export: the receiver answered {}", r.status()),
        Err(e) => tracing::warn!("OTLP metrics export: {e}"),
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn text(key: &str, value: &str) -> common::KeyValue {
    common::KeyValue {
        key: key.to_string(),
        value: Some(common::AnyValue {
            value: Some(common::any_value::Value::StringValue(value.to_string())),
        }),
    }
}

/// Prometheus families as one OTLP metrics request: counters as monotonic
/// cumulative sums, gauges as gauges, histograms as cumulative explicit-bucket
/// histograms (Prometheus' cumulative bucket counts made per-bucket; its `+Inf`
/// bucket is OTLP's last, unbounded one). Labels become attributes.
pub fn to_otlp(families: &[MetricFamily], start: u64, now: u64) -> ExportMetricsServiceRequest {
    let cumulative = otlp::AggregationTemporality::Cumulative as i32;
    let mut out = Vec::new();
    for f in families {
        let points = f.get_metric();
        let attrs = |m: &prometheus::proto::Metric| -> Vec<common::KeyValue> {
            m.get_label()
                .iter()
                .map(|l| text(l.name(), l.value()))
                .collect()
        };
        let number = |m: &prometheus::proto::Metric, v: f64| otlp::NumberDataPoint {
            attributes: attrs(m),
            start_time_unix_nano: start,
            time_unix_nano: now,
            value: Some(otlp::number_data_point::Value::AsDouble(v)),
            ..Default::default()
        };
        let data = match f.get_field_type() {
            MetricType::COUNTER => otlp::metric::Data::Sum(otlp::Sum {
                data_points: points
                    .iter()
                    .map(|m| number(m, m.get_counter().get_value()))
                    .collect(),
                aggregation_temporality: cumulative,
                is_monotonic: true,
            }),
            MetricType::GAUGE => otlp::metric::Data::Gauge(otlp::Gauge {
                data_points: points
                    .iter()
                    .map(|m| number(m, m.get_gauge().get_value()))
                    .collect(),
            }),
            MetricType::HISTOGRAM => otlp::metric::Data::Histogram(otlp::Histogram {
                data_points: points
                    .iter()
                    .map(|m| {
                        let h = m.get_histogram();
                        let mut bounds = Vec::new();
                        let mut counts = Vec::new();
                        let mut below = 0u64;
                        for b in h.get_bucket() {
                            if b.upper_bound().is_finite() {
                                bounds.push(b.upper_bound());
                                counts.push(b.cumulative_count().saturating_sub(below));
                                below = b.cumulative_count();
                            }
                        }
                        counts.push(h.get_sample_count().saturating_sub(below));
                        otlp::HistogramDataPoint {
                            attributes: attrs(m),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: h.get_sample_count(),
                            sum: Some(h.get_sample_sum()),
                            bucket_counts: counts,
                            explicit_bounds: bounds,
                            ..Default::default()
                        }
                    })
                    .collect(),
                aggregation_temporality: cumulative,
            }),
            // The host registers counters, gauges and histograms only.
            _ => continue,
        };
        out.push(otlp::Metric {
            name: f.name().to_string(),
            description: f.help().to_string(),
            data: Some(data),
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![otlp::ResourceMetrics {
            resource: Some(OtlpResource {
                attributes: vec![
                    text("service.name", "quiver"),
                    text("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![otlp::ScopeMetrics {
                scope: Some(common::InstrumentationScope {
                    name: "quiver".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics: out,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_traces_are_sampled_by_their_id() {
        let id = |low: u64| {
            let mut t = [7u8; 16];
            t[8..].copy_from_slice(&low.to_be_bytes());
            t
        };
        assert!(sample(&id(u64::MAX)), "all, by default");
        SAMPLE_BELOW.store(u64::MAX / 4, Ordering::Relaxed);
        assert!(sample(&id(u64::MAX / 8)));
        assert!(!sample(&id(u64::MAX / 2)));
        SAMPLE_BELOW.store(u64::MAX, Ordering::Relaxed);
    }

    #[test]
    fn prometheus_families_become_otlp_metrics() {
        let m = Metrics::new().unwrap();
        m.invocations
            .with_label_values(&["t", "f", "1.0.0", "200"])
            .inc_by(3);
        let h = m.latency.with_label_values(&["t", "f", "1.0.0"]);
        h.observe(0.0002);
        h.observe(0.003);
        h.observe(100.0);
        let req = to_otlp(&m.gather(), 1, 2);
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        let find = |n: &str| metrics.iter().find(|m| m.name == n).unwrap();
        let Some(otlp::metric::Data::Sum(sum)) = &find("quiver_invocations_total").data else {
            panic!("not a sum")
        };
        assert!(sum.is_monotonic);
        let p = &sum.data_points[0];
        assert_eq!(p.value, Some(otlp::number_data_point::Value::AsDouble(3.0)));
        assert!(p.attributes.iter().any(|a| a.key == "function"));
        let Some(otlp::metric::Data::Histogram(hist)) =
            &find("quiver_invocation_duration_seconds").data
        else {
            panic!("not a histogram")
        };
        let p = &hist.data_points[0];
        assert_eq!(p.count, 3);
        assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), 3);
        // 100 s is past the last bound: the overflow bucket holds it.
        assert_eq!(p.bucket_counts.last(), Some(&1));
        // 0.2 ms falls in (0.1 ms, 0.25 ms].
        let i = p
            .explicit_bounds
            .iter()
            .position(|b| *b == 0.00025)
            .unwrap();
        assert_eq!(p.bucket_counts[i], 1);
    }
}
