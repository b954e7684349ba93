//! A tenant's dataset store: the predictions of functions with `[datasets] log =
//! true` (inputs, outputs, version, keyed by the call's request id and the row's
//! index), and the labels that come back for them later (`POST
//! /fn/{tenant}/{function}/feedback`, `quiver feedback load`). A read joins the two
//! over a window of time (`quiver:ml/datasets`, `quiver datasets read`).
//!
//! Predictions are logged off the request path: a call hands its rows to one
//! writer task through a bounded queue, which drops and counts when full
//! (`quiver_dataset_dropped_total`); the writer inserts in batches. Bounded by
//! retention (`[datasets] retention`, default 30d) and a row cap per function
//! (`[datasets] max_rows`, default 1 000 000), enforced as the writer goes.
//! Embedded: SQLite in the data dir (`datasets.db`), WAL.

use crate::bindings::Batch;
use prometheus::{IntCounterVec, Opts};
use rusqlite::params;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Rows one read returns at most.
pub const MAX_READ_ROWS: usize = 100_000;
/// Labels one feedback request carries at most.
pub const MAX_LABELS: usize = 10_000;
/// Predictions waiting for the writer at most.
pub const QUEUE: usize = 4096;
const MAX_LABEL_TEXT: usize = 1024;

/// `[datasets] log`, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogPolicy {
    pub retention: Duration,
    pub max_rows: u64,
}

/// One call's predictions, on their way to the store.
pub struct Prediction {
    pub tenant: String,
    pub function: String,
    /// `name@version`.
    pub version: String,
    /// The model versions it ran, `name@version` comma-separated (empty: none).
    pub models: String,
    pub request_id: String,
    pub time_ms: u64,
    pub inputs: Batch,
    pub outputs: Batch,
    pub policy: LogPolicy,
}

/// A label for one predicted row.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub request_id: String,
    pub row: u32,
    pub label: Value,
}

/// What a read asks for.
#[derive(Debug, Clone)]
pub struct Query {
    pub function: String,
    pub since_ms: u64,
    pub labelled_only: bool,
    pub limit: usize,
}

pub fn valid_request_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// A label as a client sent it: `{"request_id", "row" (default 0), "label"}`.
pub fn parse_label(v: &Value, i: usize) -> Result<Label, String> {
    let at = |m: &str| format!("label {}: {m}", i + 1);
    let o = v.as_object().ok_or_else(|| at("not a JSON object"))?;
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "request_id" | "row" | "label"))
    {
        return Err(at(&format!(
            "unknown field `{}` (expected request_id, row, label)",
            k.chars().take(64).collect::<String>()
        )));
    }
    let request_id = match o.get("request_id") {
        Some(Value::String(s)) if valid_request_id(s) => s.clone(),
        Some(_) => {
            return Err(at(
                "`request_id` must be 1-64 characters of a-z, A-Z, 0-9, '-' and '_'",
            ))
        }
        None => return Err(at("`request_id` is missing")),
    };
    let row = match o.get("row") {
        None => 0,
        Some(Value::Number(n)) => {
            n.as_u64()
                .filter(|r| *r <= u32::MAX as u64)
                .ok_or_else(|| at("`row` must be a row index (0, 1, ...)"))? as u32
        }
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| at("`row` must be a row index (0, 1, ...)"))?,
        Some(_) => return Err(at("`row` must be a row index (0, 1, ...)")),
    };
    let label = match o.get("label") {
        Some(Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => {
            Value::Number(n.clone())
        }
        Some(Value::Bool(b)) => Value::Bool(*b),
        Some(Value::String(s)) if s.len() <= MAX_LABEL_TEXT => Value::String(s.clone()),
        Some(Value::String(_)) => {
            return Err(at(&format!(
                "a text label is at most {MAX_LABEL_TEXT} bytes"
            )))
        }
        Some(_) => return Err(at("`label` must be a number, a boolean or a text")),
        None => return Err(at("`label` is missing")),
    };
    Ok(Label {
        request_id,
        row,
        label,
    })
}

pub struct Datasets {
    db: crate::sqlite::SharedDb,
    queue: mpsc::Sender<Prediction>,
    dropped: IntCounterVec,
    logged: IntCounterVec,
}

impl Datasets {
    /// Open (or create) `path` and start the writer. Blocking; needs a runtime.
    pub fn open(path: &Path) -> anyhow::Result<Arc<Datasets>> {
        let db = crate::sqlite::SharedDb::open(
            path,
            "CREATE TABLE IF NOT EXISTS predictions (
                 tenant TEXT NOT NULL, function TEXT NOT NULL, request_id TEXT NOT NULL,
                 row INTEGER NOT NULL, time_ms INTEGER NOT NULL, version TEXT NOT NULL,
                 models TEXT NOT NULL, inputs TEXT NOT NULL, outputs TEXT NOT NULL,
                 PRIMARY KEY (tenant, function, request_id, row));
             CREATE INDEX IF NOT EXISTS predictions_time ON predictions (tenant, function, time_ms);
             CREATE TABLE IF NOT EXISTS labels (
                 tenant TEXT NOT NULL, function TEXT NOT NULL, request_id TEXT NOT NULL,
                 row INTEGER NOT NULL, label TEXT NOT NULL, time_ms INTEGER NOT NULL,
                 PRIMARY KEY (tenant, function, request_id, row));
             CREATE INDEX IF NOT EXISTS labels_time ON labels (tenant, function, time_ms);",
            "the dataset store",
        )?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = IntCounterVec::new(
            Opts::new(
                "quiver_dataset_dropped_total",
                "Predictions not logged because the dataset writer's queue was full",
            ),
            &["tenant", "function"],
        )?;
        let logged = IntCounterVec::new(
            Opts::new(
                "quiver_dataset_logged_rows_total",
                "Predicted rows logged to the dataset store",
            ),
            &["tenant", "function"],
        )?;
        let d = Arc::new(Datasets {
            db,
            queue: tx,
            dropped,
            logged: logged.clone(),
        });
        tokio::spawn(writer(d.db.clone(), rx, logged));
        Ok(d)
    }

    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.dropped.clone()),
            Box::new(self.logged.clone()),
        ]
    }

    /// Hand one call's predictions to the writer, or drop and count them.
    pub fn log(&self, p: Prediction) {
        if let Err(mpsc::error::TrySendError::Full(p)) = self.queue.try_send(p) {
            self.dropped
                .with_label_values(&[&p.tenant, &p.function])
                .inc();
        }
    }

    /// Store labels (a later label for the same row replaces the earlier); how
    /// many of them match a logged prediction now.
    pub async fn label(
        &self,
        tenant: &str,
        function: &str,
        labels: Vec<Label>,
        now_ms: u64,
    ) -> anyhow::Result<usize> {
        let (tenant, function) = (tenant.to_string(), function.to_string());
        self.db
            .run(move |db| {
                let tx = db.unchecked_transaction()?;
                let mut matched = 0;
                {
                    let mut put = tx.prepare_cached(
                        "INSERT INTO labels (tenant, function, request_id, row, label, time_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (tenant, function, request_id, row)
                     DO UPDATE SET label = excluded.label, time_ms = excluded.time_ms",
                    )?;
                    let mut found = tx.prepare_cached(
                        "SELECT 1 FROM predictions
                     WHERE tenant = ?1 AND function = ?2 AND request_id = ?3 AND row = ?4",
                    )?;
                    for l in &labels {
                        put.execute(params![
                            tenant,
                            function,
                            l.request_id,
                            l.row,
                            l.label.to_string(),
                            now_ms as i64
                        ])?;
                        if found.exists(params![tenant, function, l.request_id, l.row])? {
                            matched += 1;
                        }
                    }
                }
                tx.commit()?;
                Ok(matched)
            })
            .await
    }

    /// Predictions of the last `since_ms` (joined to their labels), oldest first,
    /// as rows: `request_id`, `row`, `time_ms`, `version`, `models`, `in.*`, `out.*`, and
    /// `label` when only labelled rows are read, else `labelled`.
    pub async fn read(&self, tenant: &str, q: &Query, now_ms: u64) -> anyhow::Result<Vec<Value>> {
        let (tenant, q) = (tenant.to_string(), q.clone());
        self.db.run(move |db| {
            let since = now_ms.saturating_sub(q.since_ms) as i64;
            let limit = q.limit.clamp(1, MAX_READ_ROWS) as i64;
            let join = match q.labelled_only {
                true => "JOIN",
                false => "LEFT JOIN",
            };
            // The newest `limit` rows of the window, returned oldest first.
            let sql = format!(
                "SELECT * FROM (
                   SELECT p.request_id, p.row, p.time_ms, p.version, p.models, p.inputs, p.outputs, l.label
                   FROM predictions p {join} labels l
                     ON l.tenant = p.tenant AND l.function = p.function
                    AND l.request_id = p.request_id AND l.row = p.row
                   WHERE p.tenant = ?1 AND p.function = ?2 AND p.time_ms >= ?3
                   ORDER BY p.time_ms DESC, p.request_id DESC, p.row DESC LIMIT ?4)
                 ORDER BY time_ms, request_id, row"
            );
            let mut stmt = db.prepare(&sql)?;
            let rows = stmt.query_map(params![tenant, q.function, since, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (request_id, idx, time_ms, version, models, inputs, outputs, label) = row?;
                let mut o = Map::new();
                o.insert("request_id".into(), Value::String(request_id));
                o.insert("row".into(), idx.into());
                o.insert("time_ms".into(), time_ms.into());
                o.insert("version".into(), Value::String(version));
                o.insert("models".into(), Value::String(models));
                for (prefix, text) in [("in", inputs), ("out", outputs)] {
                    if let Value::Object(m) = serde_json::from_str(&text)? {
                        for (k, v) in m {
                            o.insert(format!("{prefix}.{k}"), v);
                        }
                    }
                }
                match q.labelled_only {
                    true => {
                        let label = label.as_deref().unwrap_or("null");
                        o.insert("label".into(), serde_json::from_str(label)?);
                    }
                    false => {
                        o.insert("labelled".into(), Value::Bool(label.is_some()));
                    }
                }
                out.push(Value::Object(o));
            }
            Ok(out)
        })
        .await
    }
}

/// The writer: inserts what waits in one transaction, deletes what is past the
/// retention of the functions it wrote for, and (at most once a minute each) what
/// is past their row cap.
async fn writer(
    db: crate::sqlite::SharedDb,
    mut rx: mpsc::Receiver<Prediction>,
    logged: IntCounterVec,
) {
    let mut trimmed: HashMap<(String, String), Instant> = HashMap::new();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut due: Vec<(String, String, LogPolicy, bool)> = Vec::new();
        for p in &batch {
            if due
                .iter()
                .any(|(t, f, _, _)| *t == p.tenant && *f == p.function)
            {
                continue;
            }
            let key = (p.tenant.clone(), p.function.clone());
            let cap = trimmed
                .get(&key)
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
            if cap {
                trimmed.insert(key, Instant::now());
            }
            due.push((p.tenant.clone(), p.function.clone(), p.policy, cap));
        }
        let logged = logged.clone();
        let done = db.run(move |db| {
            let tx = db.unchecked_transaction()?;
            {
                let mut put = tx.prepare_cached(
                    "INSERT OR REPLACE INTO predictions
                     (tenant, function, request_id, row, time_ms, version, models, inputs, outputs)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                for p in &batch {
                    let inputs = crate::convert::batch_to_rows(&p.inputs).unwrap_or_default();
                    let outputs = crate::convert::batch_to_rows(&p.outputs).unwrap_or_default();
                    let n = inputs.len().max(outputs.len());
                    let empty = Value::Object(Map::new());
                    for i in 0..n {
                        put.execute(params![
                            p.tenant,
                            p.function,
                            p.request_id,
                            i as i64,
                            p.time_ms as i64,
                            p.version,
                            p.models,
                            inputs.get(i).unwrap_or(&empty).to_string(),
                            outputs.get(i).unwrap_or(&empty).to_string(),
                        ])?;
                    }
                    logged
                        .with_label_values(&[&p.tenant, &p.function])
                        .inc_by(n as u64);
                }
            }
            let now_ms = batch.first().map_or(0, |p| p.time_ms);
            for (tenant, function, policy, cap) in &due {
                let cutoff = now_ms.saturating_sub(policy.retention.as_millis() as u64) as i64;
                for table in ["predictions", "labels"] {
                    tx.execute(
                        &format!(
                            "DELETE FROM {table} WHERE tenant = ?1 AND function = ?2 AND time_ms < ?3"
                        ),
                        params![tenant, function, cutoff],
                    )?;
                }
                if !cap {
                    continue;
                }
                // Past the row cap, the oldest go.
                tx.execute(
                    "DELETE FROM predictions WHERE rowid IN (
                       SELECT rowid FROM predictions WHERE tenant = ?1 AND function = ?2
                       ORDER BY time_ms DESC LIMIT -1 OFFSET ?3)",
                    params![tenant, function, policy.max_rows.min(i64::MAX as u64) as i64],
                )?;
            }
            tx.commit()?;
            Ok(())
        });
        if let Err(e) = done.await {
            tracing::warn!("logging predictions: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{Column, Field};
    use serde_json::json;

    fn batch(name: &str, v: Vec<f64>) -> Batch {
        Batch {
            fields: vec![Field {
                name: name.into(),
                values: Column::Float64(v),
            }],
        }
    }

    fn prediction(id: &str, time_ms: u64, policy: LogPolicy) -> Prediction {
        Prediction {
            tenant: "t".into(),
            function: "f".into(),
            version: "f@1.0.0".into(),
            models: "m@1.0.0".into(),
            request_id: id.into(),
            time_ms,
            inputs: batch("x", vec![1.0, 2.0]),
            outputs: batch("y", vec![0.1, 0.2]),
            policy,
        }
    }

    /// The rows once `ready` holds of them (the writer is asynchronous).
    async fn wait_rows(
        d: &Datasets,
        q: &Query,
        now: u64,
        ready: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let mut rows = Vec::new();
        for _ in 0..200 {
            rows = d.read("t", q, now).await.unwrap();
            if ready(&rows) {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never ready: {rows:?}");
    }

    #[tokio::test]
    async fn predictions_join_their_labels_and_age_out() {
        let dir = tempfile::tempdir().unwrap();
        let d = Datasets::open(&dir.path().join("datasets.db")).unwrap();
        let policy = LogPolicy {
            retention: Duration::from_secs(3600),
            max_rows: 1000,
        };
        d.log(prediction("r1", 1_000_000, policy));
        let all = Query {
            function: "f".into(),
            since_ms: 3_600_000,
            labelled_only: false,
            limit: 100,
        };
        let rows = wait_rows(&d, &all, 1_000_000, |r| r.len() == 2).await;
        assert_eq!(rows[1]["in.x"], 2.0);
        assert_eq!(rows[1]["out.y"], 0.2);
        assert_eq!(rows[1]["labelled"], false);
        assert_eq!(rows[1]["models"], "m@1.0.0");
        let labels = vec![
            parse_label(&json!({"request_id": "r1", "row": 1, "label": 1}), 0).unwrap(),
            parse_label(&json!({"request_id": "nope", "label": 0}), 1).unwrap(),
        ];
        assert_eq!(d.label("t", "f", labels, 1_000_001).await.unwrap(), 1);
        let labelled = Query {
            labelled_only: true,
            ..all.clone()
        };
        let rows = d.read("t", &labelled, 1_000_000).await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(
            (rows[0]["row"].clone(), rows[0]["label"].clone()),
            (json!(1), json!(1))
        );
        // Another tenant sees nothing.
        assert!(d.read("u", &all, 1_000_000).await.unwrap().is_empty());
        // Past its retention, a prediction (and its label) goes.
        d.log(prediction("r2", 1_000_000 + 3_600_001 + 60_000, policy));
        let later = 1_000_000 + 3_600_001 + 60_000;
        let ever = Query {
            since_ms: u64::MAX,
            ..all.clone()
        };
        let only_r2 = |rows: &[Value]| rows.iter().all(|r| r["request_id"] == "r2");
        let rows = wait_rows(&d, &ever, later, |r| r.len() == 2 && only_r2(r)).await;
        assert_eq!(rows.len(), 2, "r1 aged out, r2 stays: {rows:?}");
        assert!(
            d.read("t", &labelled, later).await.unwrap().is_empty(),
            "its label went too"
        );
    }

    #[test]
    fn labels_out_of_shape_are_refused() {
        for bad in [
            json!([1]),
            json!({"row": 0, "label": 1}),
            json!({"request_id": "", "label": 1}),
            json!({"request_id": "a b", "label": 1}),
            json!({"request_id": "a", "row": -1, "label": 1}),
            json!({"request_id": "a", "label": null}),
            json!({"request_id": "a", "label": [1]}),
            json!({"request_id": "a", "label": 1, "extra": 2}),
        ] {
            assert!(parse_label(&bad, 0).is_err(), "{bad}");
        }
        let l = parse_label(
            &json!({"request_id": "a-1", "row": "3", "label": "fraud"}),
            0,
        )
        .unwrap();
        assert_eq!((l.row, l.label), (3, json!("fraud")));
    }
}
