//! ML metrics as Prometheus series: the distribution of each model version's
//! predictions (`quiver_prediction_value`, the numeric outputs an inference
//! function declares in `[inference] outputs`) and the last value of each metric a
//! monitor reports (`quiver_monitor_metric`: drift statistics, accuracy...).

use crate::bindings::{Batch, Column, Report};
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, Opts};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Distinct metric names a monitor may export (its reports may name others: they
/// stay in its reports, not in Prometheus).
pub const MAX_MONITOR_SERIES: usize = 256;

/// An inference function's predictions to observe.
#[derive(Debug, Clone)]
pub struct Predicted {
    /// Its declared FP32/FP64 outputs.
    pub outputs: Vec<String>,
}

pub struct MlMetrics {
    predictions: HistogramVec,
    monitor: GaugeVec,
    names: Mutex<HashMap<(String, String), HashSet<String>>>,
}

impl MlMetrics {
    pub fn new() -> anyhow::Result<MlMetrics> {
        let mut buckets: Vec<f64> = (0..=20).map(|i| i as f64 * 0.05).collect();
        buckets.extend([2.0, 5.0, 10.0, 100.0, 1000.0]);
        Ok(MlMetrics {
            predictions: HistogramVec::new(
                HistogramOpts::new(
                    "quiver_prediction_value",
                    "Predicted values by model version and output (0.05 steps on [0, 1])",
                )
                .buckets(buckets),
                &["tenant", "function", "model", "output"],
            )?,
            monitor: GaugeVec::new(
                Opts::new(
                    "quiver_monitor_metric",
                    "The last value of each metric a monitor reported",
                ),
                &["tenant", "monitor", "metric"],
            )?,
            names: Mutex::new(HashMap::new()),
        })
    }

    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.predictions.clone()),
            Box::new(self.monitor.clone()),
        ]
    }

    /// `models`: the model versions the function binds (`name@version`, comma-separated).
    pub fn predicted(
        &self,
        tenant: &str,
        function: &str,
        models: &str,
        p: &Predicted,
        out: &Batch,
    ) {
        for f in out.fields.iter().filter(|f| p.outputs.contains(&f.name)) {
            if let Column::Float64(values) = &f.values {
                let h = self
                    .predictions
                    .with_label_values(&[tenant, function, models, &f.name]);
                for v in values.iter().filter(|v| v.is_finite()) {
                    h.observe(*v);
                }
            }
        }
    }

    pub fn reported(&self, tenant: &str, monitor: &str, report: &Report) {
        let Ok(mut names) = self.names.lock() else {
            return;
        };
        let known = names
            .entry((tenant.to_string(), monitor.to_string()))
            .or_default();
        for (name, value) in report.metrics.iter().filter(|(_, v)| v.is_finite()) {
            if !known.contains(name) {
                if known.len() >= MAX_MONITOR_SERIES {
                    continue;
                }
                known.insert(name.clone());
            }
            self.monitor
                .with_label_values(&[tenant, monitor, name])
                .set(*value);
        }
    }
}
