//! Prometheus metrics, one registry per server.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

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
            &["tenant", "function"],
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
        registry.register(Box::new(usage.clone()))?;
        registry.register(Box::new(unresolved.clone()))?;
        registry.register(Box::new(invocations.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Metrics {
            registry,
            invocations,
            errors,
            latency,
            unresolved,
            usage,
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

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}
