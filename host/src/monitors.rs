//! Monitor reports, kept per window. A `monitor` function's `observe` returns a
//! report (metrics, alerts) on one batch of (inputs, outputs); the host folds it into
//! the report of the window the call falls in (`[monitor] window`, default 1h):
//! per metric the last value, mean, min and max; the distinct alerts. Windows older
//! than `[monitor] retention` (default 30d) are deleted as new ones are written.
//! Embedded: SQLite in the data dir (`reports.db`), WAL.

use crate::bindings::{Batch, Column, Report};
use crate::manifest::{MonitorTap, ReportWindows};
use prometheus::{IntCounterVec, Opts};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// The most metrics one report may carry, and one window may hold.
pub const MAX_METRICS: usize = 256;
/// The most alerts one report may carry.
pub const MAX_ALERTS: usize = 64;
/// Distinct alerts a window keeps; more are counted in `alerts_dropped`.
pub const MAX_WINDOW_ALERTS: usize = 100;
const MAX_NAME: usize = 128;
const MAX_ALERT: usize = 1024;
/// The most windows one listing returns.
pub const MAX_LISTED: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub last: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Reports that carried it.
    pub count: u64,
}

/// What a monitor reported in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub start_ms: u64,
    pub end_ms: u64,
    /// Calls of the monitor that reported in it.
    pub observations: u64,
    /// Input rows those calls observed.
    pub rows: u64,
    pub metrics: BTreeMap<String, Metric>,
    pub alerts: Vec<String>,
    pub alerts_dropped: u64,
    /// `name@version` of the monitor that last reported.
    pub monitor_version: String,
}

/// A report the host refuses (the call is a function error; nothing is stored).
pub fn check(report: &Report) -> Result<(), String> {
    if report.metrics.len() > MAX_METRICS {
        return Err(format!(
            "a report carries at most {MAX_METRICS} metrics; this one has {}",
            report.metrics.len()
        ));
    }
    if report.alerts.len() > MAX_ALERTS {
        return Err(format!(
            "a report carries at most {MAX_ALERTS} alerts; this one has {}",
            report.alerts.len()
        ));
    }
    for (name, v) in &report.metrics {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b':'));
        if !ok {
            return Err(format!(
                "metric name `{}` must be 1-{MAX_NAME} characters of a-z, A-Z, 0-9, '_', '.', '-' and ':'",
                name.chars().take(MAX_NAME).collect::<String>()
            ));
        }
        if !v.is_finite() {
            return Err(format!(
                "metric `{name}` is {v}; a metric is a finite number"
            ));
        }
    }
    if let Some(a) = report.alerts.iter().find(|a| a.len() > MAX_ALERT) {
        return Err(format!(
            "an alert is at most {MAX_ALERT} bytes; one is {}",
            a.len()
        ));
    }
    Ok(())
}

impl Window {
    fn fold(&mut self, report: &Report, rows: u64, source: &str) {
        self.observations += 1;
        self.rows += rows;
        self.monitor_version = source.to_string();
        for (name, v) in &report.metrics {
            let v = *v;
            let room = self.metrics.len() < MAX_METRICS;
            match self.metrics.get_mut(name) {
                Some(m) => {
                    m.count += 1;
                    m.mean += (v - m.mean) / m.count as f64;
                    m.min = m.min.min(v);
                    m.max = m.max.max(v);
                    m.last = v;
                }
                None if room => {
                    let m = Metric {
                        last: v,
                        mean: v,
                        min: v,
                        max: v,
                        count: 1,
                    };
                    self.metrics.insert(name.clone(), m);
                }
                None => {}
            }
        }
        for a in &report.alerts {
            if self.alerts.contains(a) {
                continue;
            }
            match self.alerts.len() < MAX_WINDOW_ALERTS {
                true => self.alerts.push(a.clone()),
                false => self.alerts_dropped += 1,
            }
        }
    }
}

/// Who reports: a monitor of a tenant, its version and its windows.
#[derive(Clone, Copy)]
pub struct Reporter<'a> {
    pub tenant: &'a str,
    pub monitor: &'a str,
    /// `name@version`.
    pub source: &'a str,
    pub windows: ReportWindows,
}

/// The embedded report store.
pub struct Reports {
    db: crate::sqlite::SharedDb,
}

impl Reports {
    /// Open (or create) `path`. Blocking.
    pub fn open(path: &Path) -> anyhow::Result<Reports> {
        let db = crate::sqlite::SharedDb::open(
            path,
            "CREATE TABLE IF NOT EXISTS windows (
                 tenant TEXT NOT NULL, monitor TEXT NOT NULL, start_ms INTEGER NOT NULL,
                 report TEXT NOT NULL, PRIMARY KEY (tenant, monitor, start_ms));",
            "the report store",
        )?;
        Ok(Reports { db })
    }

    /// Fold `report` (on `rows` input rows, by `source` = `name@version`) into the
    /// window `now_ms` falls in; delete the monitor's windows past retention. The
    /// window as it is now.
    pub async fn record(
        &self,
        by: Reporter<'_>,
        now_ms: u64,
        rows: u64,
        report: &Report,
    ) -> anyhow::Result<Window> {
        let windows = by.windows;
        let (tenant, monitor, source) = (
            by.tenant.to_string(),
            by.monitor.to_string(),
            by.source.to_string(),
        );
        let report = report.clone();
        self.db.run(move |db| {
            let len = (windows.window.as_millis() as u64).max(1);
            let start = now_ms / len * len;
            let tx = db.unchecked_transaction()?;
            let stored: Option<String> = tx
                .query_row(
                    "SELECT report FROM windows WHERE tenant = ?1 AND monitor = ?2 AND start_ms = ?3",
                    params![tenant, monitor, start as i64],
                    |r| r.get(0),
                )
                .optional()?;
            let mut w = match stored {
                Some(text) => serde_json::from_str(&text)?,
                None => Window {
                    start_ms: start,
                    end_ms: start + len,
                    observations: 0,
                    rows: 0,
                    metrics: BTreeMap::new(),
                    alerts: Vec::new(),
                    alerts_dropped: 0,
                    monitor_version: String::new(),
                },
            };
            w.fold(&report, rows, &source);
            tx.execute(
                "INSERT INTO windows (tenant, monitor, start_ms, report) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, monitor, start_ms) DO UPDATE SET report = excluded.report",
                params![tenant, monitor, start as i64, serde_json::to_string(&w)?],
            )?;
            let cutoff = now_ms.saturating_sub(windows.retention.as_millis() as u64);
            tx.execute(
                "DELETE FROM windows WHERE tenant = ?1 AND monitor = ?2 AND start_ms + ?3 <= ?4",
                params![tenant, monitor, len as i64, cutoff as i64],
            )?;
            tx.commit()?;
            Ok(w)
        })
        .await
    }

    /// The monitor's newest windows first, at most `limit`.
    pub async fn list(
        &self,
        tenant: &str,
        monitor: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<Window>> {
        let (tenant, monitor) = (tenant.to_string(), monitor.to_string());
        let limit = limit.clamp(1, MAX_LISTED) as i64;
        self.db
            .run(move |db| {
                let mut stmt = db.prepare(
                    "SELECT report FROM windows WHERE tenant = ?1 AND monitor = ?2
                 ORDER BY start_ms DESC LIMIT ?3",
                )?;
                let rows =
                    stmt.query_map(params![tenant, monitor, limit], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for text in rows {
                    out.push(serde_json::from_str(&text?)?);
                }
                Ok(out)
            })
            .await
    }
}

/// One successful call of a tapped pipeline, on its way to the monitor.
pub struct Observation {
    pub inputs: Batch,
    pub outputs: Batch,
    /// The call's trace context.
    pub traceparent: Option<String>,
}

/// Where a tap's observations go: one bounded queue per (tenant, pipeline, monitor).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TapKey {
    pub tenant: String,
    pub pipeline: String,
    pub monitor: String,
    pub buffer: usize,
}

/// A new queue for whoever runs the monitors (the triggers).
pub struct TapQueue {
    pub key: TapKey,
    pub rx: mpsc::Receiver<Observation>,
}

/// The host's monitor taps. A call offers its observation with `try_send`: a full
/// queue drops it and counts it, so a slow monitor never slows the pipeline.
pub struct Taps {
    queues: Mutex<HashMap<TapKey, mpsc::Sender<Observation>>>,
    new_queues: mpsc::UnboundedSender<TapQueue>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<TapQueue>>>,
    dropped: IntCounterVec,
}

impl Taps {
    pub fn new() -> anyhow::Result<Taps> {
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Taps {
            queues: Mutex::new(HashMap::new()),
            new_queues: tx,
            receiver: Mutex::new(Some(rx)),
            dropped: IntCounterVec::new(
                Opts::new(
                    "quiver_monitor_dropped_total",
                    "Observations of a tapped pipeline dropped because its monitor's buffer was full",
                ),
                &["tenant", "pipeline", "monitor"],
            )?,
        })
    }

    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![Box::new(self.dropped.clone())]
    }

    /// The queues as they are made (taken once, by whoever runs the monitors).
    pub fn take_queues(&self) -> Option<mpsc::UnboundedReceiver<TapQueue>> {
        self.receiver.lock().ok()?.take()
    }

    /// Hand `make()` to the tap's monitor if its buffer has room; else drop it (it
    /// is not even built) and count it.
    pub fn offer(
        &self,
        tenant: &str,
        pipeline: &str,
        tap: &MonitorTap,
        make: impl FnOnce() -> Observation,
    ) {
        let key = TapKey {
            tenant: tenant.to_string(),
            pipeline: pipeline.to_string(),
            monitor: tap.monitor.clone(),
            buffer: tap.buffer,
        };
        let Ok(mut queues) = self.queues.lock() else {
            return;
        };
        let tx = match queues.get(&key) {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let (tx, rx) = mpsc::channel(tap.buffer);
                let queue = TapQueue {
                    key: key.clone(),
                    rx,
                };
                if self.new_queues.send(queue).is_err() {
                    // Nobody runs monitors (the host is stopping).
                    return;
                }
                queues.insert(key.clone(), tx.clone());
                tx
            }
        };
        drop(queues);
        let reserved = tx.try_reserve();
        match reserved {
            Ok(permit) => permit.send(make()),
            Err(_) => self
                .dropped
                .with_label_values(&[tenant, pipeline, &tap.monitor])
                .inc(),
        }
    }
}

/// Observations with the same columns (names and types, in order) joined into one
/// (inputs, outputs) pair, so a monitor sees many calls in one batch; a call whose
/// columns differ starts a new pair.
pub fn join(observations: Vec<Observation>) -> Vec<Observation> {
    let mut out: Vec<Observation> = Vec::new();
    for o in observations {
        match out.last_mut() {
            Some(last)
                if same_shape(&last.inputs, &o.inputs) && same_shape(&last.outputs, &o.outputs) =>
            {
                append(&mut last.inputs, o.inputs);
                append(&mut last.outputs, o.outputs);
            }
            _ => out.push(o),
        }
    }
    out
}

/// Rows of a batch (its first column's length).
pub fn rows(b: &Batch) -> usize {
    b.fields.first().map_or(0, |f| column_len(&f.values))
}

/// Values in a column (a tensor: its rows).
pub fn column_len(c: &Column) -> usize {
    crate::columns::rows(c)
}

fn same_shape(a: &Batch, b: &Batch) -> bool {
    a.fields.len() == b.fields.len()
        && a.fields
            .iter()
            .zip(&b.fields)
            .all(|(x, y)| x.name == y.name && crate::columns::same_type(&x.values, &y.values))
}

fn append(into: &mut Batch, from: Batch) {
    for (a, b) in into.fields.iter_mut().zip(from.fields) {
        // `same_shape` was checked by the caller.
        crate::columns::append(&mut a.values, b.values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report(metrics: &[(&str, f64)], alerts: &[&str]) -> Report {
        Report {
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            alerts: alerts.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn by(tenant: &str, windows: ReportWindows) -> Reporter<'_> {
        Reporter {
            tenant,
            monitor: "m",
            source: "m@1.0.0",
            windows,
        }
    }

    #[tokio::test]
    async fn reports_fold_into_their_window_and_old_windows_go() {
        let dir = tempfile::tempdir().unwrap();
        let r = Reports::open(&dir.path().join("reports.db")).unwrap();
        let w = ReportWindows {
            window: Duration::from_secs(60),
            retention: Duration::from_secs(180),
        };
        r.record(by("t", w), 60_000, 10, &report(&[("psi", 0.1)], &["a"]))
            .await
            .unwrap();
        let got = r
            .record(
                by("t", w),
                119_999,
                5,
                &report(&[("psi", 0.3)], &["a", "b"]),
            )
            .await
            .unwrap();
        assert_eq!((got.start_ms, got.end_ms), (60_000, 120_000));
        assert_eq!((got.observations, got.rows), (2, 15));
        let psi = &got.metrics["psi"];
        assert_eq!((psi.last, psi.min, psi.max, psi.count), (0.3, 0.1, 0.3, 2));
        assert!((psi.mean - 0.2).abs() < 1e-12);
        assert_eq!(got.alerts, vec!["a", "b"]);
        // Another tenant's monitor of the same name is another series.
        r.record(by("u", w), 60_000, 1, &report(&[], &[]))
            .await
            .unwrap();
        assert_eq!(r.list("t", "m", 10).await.unwrap().len(), 1);
        // Four windows later the first is past retention.
        r.record(by("t", w), 300_000, 1, &report(&[], &[]))
            .await
            .unwrap();
        let all = r.list("t", "m", 10).await.unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].start_ms, 300_000);
    }

    fn batch(name: &str, v: Vec<f64>) -> Batch {
        Batch {
            fields: vec![crate::bindings::Field {
                name: name.into(),
                values: Column::Float64(v),
            }],
        }
    }

    fn obs(name: &str, v: Vec<f64>) -> Observation {
        Observation {
            inputs: batch(name, v.clone()),
            outputs: batch("score", v),
            traceparent: None,
        }
    }

    #[test]
    fn observations_of_one_shape_join_into_one_batch() {
        let joined = join(vec![
            obs("a", vec![1.0]),
            obs("a", vec![2.0, 3.0]),
            obs("b", vec![4.0]),
        ]);
        assert_eq!(joined.len(), 2);
        assert_eq!(rows(&joined[0].inputs), 3);
        assert_eq!(rows(&joined[0].outputs), 3);
        assert_eq!(joined[1].inputs.fields[0].name, "b");
    }

    #[tokio::test]
    async fn a_full_tap_drops_and_counts() {
        let taps = Taps::new().unwrap();
        let mut queues = taps.take_queues().unwrap();
        let tap = MonitorTap {
            monitor: "m".into(),
            buffer: 2,
        };
        for i in 0..5 {
            taps.offer("t", "p", &tap, || obs("a", vec![i as f64]));
        }
        let mut q = queues.recv().await.unwrap();
        assert_eq!(q.key.monitor, "m");
        assert!(q.rx.try_recv().is_ok() && q.rx.try_recv().is_ok());
        assert!(q.rx.try_recv().is_err());
        assert_eq!(taps.dropped.with_label_values(&["t", "p", "m"]).get(), 3);
        // The queue drains; a new offer fits again, on the same queue.
        taps.offer("t", "p", &tap, || obs("a", vec![9.0]));
        assert!(q.rx.try_recv().is_ok());
        assert!(queues.try_recv().is_err(), "no second queue");
    }

    #[test]
    fn reports_out_of_bounds_are_refused() {
        assert!(check(&report(&[("ok.name", 1.0)], &["x"])).is_ok());
        assert!(check(&report(&[("bad name", 1.0)], &[])).is_err());
        assert!(check(&report(&[("nan", f64::NAN)], &[])).is_err());
        assert!(check(&report(&[("", 1.0)], &[])).is_err());
        let many: Vec<(String, f64)> = (0..=MAX_METRICS).map(|i| (format!("m{i}"), 1.0)).collect();
        assert!(check(&Report {
            metrics: many,
            alerts: vec![]
        })
        .is_err());
        let long = "x".repeat(MAX_ALERT + 1);
        assert!(check(&report(&[], &[&long])).is_err());
    }

    #[test]
    fn a_window_keeps_a_bounded_set_of_distinct_alerts() {
        let mut w = Window {
            start_ms: 0,
            end_ms: 1,
            observations: 0,
            rows: 0,
            metrics: BTreeMap::new(),
            alerts: vec![],
            alerts_dropped: 0,
            monitor_version: String::new(),
        };
        for i in 0..(MAX_WINDOW_ALERTS + 5) {
            w.fold(&report(&[], &[&format!("a{i}"), "a0"]), 1, "m@1");
        }
        assert_eq!(w.alerts.len(), MAX_WINDOW_ALERTS);
        assert_eq!(w.alerts_dropped, 5);
    }
}
