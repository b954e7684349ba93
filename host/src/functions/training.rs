//! Training runs: a `trainer` function called (by an event, a schedule or `/fn`)
//! trains a new version of its `[trainer] model` on the recent labelled window of
//! its `[trainer] dataset`, and the host registers it with its lineage and gates it.
//!
//! One run, in order:
//! 1. read the window's labelled predictions (newest `max_rows`, at least
//!    `min_rows`), and split them by a hash of `(request_id, row)`: a row is held
//!    out (for the gate) or trained on, the same way in every run;
//! 2. compute the model's inputs from the logged inputs with the `[trainer]
//!    features` transform — the same component the online path runs — offline (no
//!    feature store, no events: training neither reads nor changes online state);
//! 3. call the guest's `train(dataset, params)` on the training rows (the `inputs`
//!    columns and a boolean `label`), which returns an ONNX model;
//! 4. score the new model and the champion (`[trainer.gate] against`) on the
//!    held-out rows with this host's ONNX backend, by the gate's metric;
//! 5. register the model as the next minor version with its lineage (dataset
//!    digest and window, trainer, parent, metrics, the gate's decision and both
//!    numbers, and the reference distribution of each input), and, when it passed,
//!    move `[trainer] promote_to` to it (recorded in the alias history, with why);
//! 6. publish `model.trained` on the tenant's bus.

use super::{Deployment, DeploymentBody, Functions};
use crate::bindings::{Batch, Column, Field};
use crate::manifest::{GateMetric, TrainerSpec};
use crate::monitors::column_len;
use crate::runtime::{GuestErrorKind, InvokeError, Prepared};
use crate::tenancy::{FunctionRef, TenantId};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;

/// The most values of one input's reference distribution kept with a version
/// (past it, evenly spaced order statistics of the training values).
pub const MAX_REFERENCE_VALUES: usize = 2000;

/// The most categories a text input's reference keeps (more: it is not kept).
pub const MAX_CATEGORIES: usize = 256;

/// The most logged input columns a version keeps a reference of.
pub const MAX_LOGGED_REFERENCES: usize = 64;

/// The topic each training run's outcome is published to.
pub const TRAINED_TOPIC: &str = "model.trained";

fn invalid(m: impl Into<String>) -> InvokeError {
    InvokeError::Guest(m.into(), GuestErrorKind::InvalidInput)
}

fn unavailable(m: impl Into<String>) -> InvokeError {
    InvokeError::Guest(m.into(), GuestErrorKind::Unavailable)
}

fn from_deploy(e: super::DeployError) -> InvokeError {
    match e {
        super::DeployError::Invalid(m) => invalid(m),
        super::DeployError::Registry(quiver_registry::RegistryError::NotFound(m)) => invalid(m),
        other => InvokeError::Host(anyhow::anyhow!("{other}")),
    }
}

/// A call's body: `{"params": {k: "v"}}` overrides `[trainer.params]`; anything
/// else in it (an event's payload, a schedule's tick) is kept as the run's reason.
fn call_params(
    spec: &TrainerSpec,
    body: &[u8],
) -> Result<(Vec<(String, String)>, Value), InvokeError> {
    let mut params = spec.params.clone();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((params, Value::Null));
    }
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
    if let Some(p) = doc.get("params") {
        let Value::Object(p) = p else {
            return Err(invalid("`params` must be an object of strings"));
        };
        if p.len() > 64 {
            return Err(invalid("at most 64 params"));
        }
        for (k, v) in p {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(invalid(format!("param `{k}` must be a string or a number"))),
            };
            if k.is_empty() || k.len() > 64 || v.len() > 1024 {
                return Err(invalid("params: keys 1-64 bytes, values at most 1 KiB"));
            }
            params.retain(|(have, _)| have != k);
            params.push((k.clone(), v));
        }
    }
    let mut reason = doc;
    if let Value::Object(o) = &mut reason {
        o.remove("params");
    }
    // What is kept of the reason is bounded (an event may carry up to 1 MiB).
    let text = reason.to_string();
    if text.len() > 4096 {
        reason = json!({ "truncated": text.chars().take(4096).collect::<String>() });
    }
    Ok((params, reason))
}

/// The lock that serializes registrations of one model on this host (one per
/// tenant and model name: as many as there are trained models).
fn registration_lock(tenant: &str, model: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::LazyLock::new(Default::default);
    let mut locks = LOCKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    locks
        .entry(format!("{tenant}/{model}"))
        .or_default()
        .clone()
}

/// FNV-1a of `request_id \0 row`, as a fraction in [0, 1): which side of the
/// split a row falls on, the same in every run.
fn split_point(request_id: &str, row: i64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in request_id.bytes().chain([0]).chain(row.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A label as the boolean the trainer learns: `true`/`false`, or 0/1.
fn label_of(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(0.0) => Some(false),
            Some(1.0) => Some(true),
            _ => None,
        },
        _ => None,
    }
}

/// The rows at `idx` of a column.
fn take(c: &Column, idx: &[usize]) -> Column {
    crate::columns::select(c, idx)
}

/// A numeric column as f64 (booleans as 0/1); `None` for text, bytes and tensors.
fn numbers(c: &Column) -> Option<Vec<f64>> {
    crate::columns::numbers(c)
}

/// The reference distribution of one input: its sorted training values, or
/// [`MAX_REFERENCE_VALUES`] evenly spaced order statistics of them.
pub fn reference_of(values: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    if sorted.len() <= MAX_REFERENCE_VALUES {
        return sorted;
    }
    let last = (sorted.len() - 1) as f64;
    (0..MAX_REFERENCE_VALUES)
        .map(|i| {
            let at = (i as f64 * last / (MAX_REFERENCE_VALUES - 1) as f64).round() as usize;
            sorted[at.min(sorted.len() - 1)]
        })
        .collect()
}

/// The gate's metric of `scores` (P(label)) against `labels`.
fn metric(m: GateMetric, scores: &[f64], labels: &[bool]) -> Result<f64, String> {
    match m {
        GateMetric::Auc => quiver_ml::train::auc(scores, labels),
        GateMetric::LogLoss => quiver_ml::train::log_loss(scores, labels),
        GateMetric::Accuracy => quiver_ml::train::accuracy(scores, labels, 0.5),
    }
    .map_err(|e| e.to_string())
}

/// P(label) of each row of `x` (`[n, k]`, row-major) by the model in `bytes`:
/// its first output's last column.
fn score(
    backend: crate::nn::OnnxBackend,
    bytes: &[u8],
    x: &[f32],
    n: usize,
    k: usize,
) -> anyhow::Result<Vec<f64>> {
    use tract_onnx::prelude::*;
    let model = backend.load(bytes, "cpu")?;
    let input = tract_onnx::prelude::Tensor::from_shape(&[n, k], x)?;
    let out = model.run(tvec![input.into()])?;
    let first = out
        .first()
        .ok_or_else(|| anyhow::anyhow!("the model has no output"))?;
    let view = first.to_plain_array_view::<f32>()?;
    let shape = view.shape().to_vec();
    let cols = match shape.as_slice() {
        [rows] if *rows == n => 1,
        [rows, cols] if *rows == n && *cols >= 1 => *cols,
        _ => anyhow::bail!(
            "the model's first output has shape {shape:?}; expected [{n}] or [{n}, C]"
        ),
    };
    let flat: Vec<f32> = view.iter().copied().collect();
    Ok(flat
        .chunks_exact(cols)
        .map(|r| f64::from(r[cols - 1]))
        .collect())
}

impl Functions {
    /// While a rollout of the model runs, a trainer that rolls its versions out
    /// trains nothing: the candidate being rolled out is the answer to the alerts
    /// that keep coming meanwhile (each would otherwise supersede it, and none
    /// would finish). The run's outcome says so, and it is not an error (an event
    /// is not retried for it).
    fn rollout_in_progress(&self, tenant: &str, spec: &TrainerSpec) -> Option<Value> {
        spec.rollout.as_ref()?;
        let route = self.rollout_routes().route(tenant, &spec.model)?;
        tracing::info!(model = %spec.model, rollout = route.id, "training skipped: a rollout is running");
        Some(json!({
            "model": spec.model,
            "skipped": format!(
                "a rollout of {}@{} is running (rollout {}): nothing trained until it ends",
                spec.model, route.candidate, route.id
            ),
        }))
    }

    /// One training run of trainer `d` (see the module's doc); its outcome as JSON.
    pub(crate) async fn train(
        self: &Arc<Self>,
        d: &Deployment,
        spec: &TrainerSpec,
        body: &[u8],
    ) -> Result<Value, InvokeError> {
        let DeploymentBody::Component(Prepared::Trainer(pre)) = &d.body else {
            return Err(InvokeError::Host(anyhow::anyhow!("not a trainer")));
        };
        let r = &d.record;
        let tenant =
            TenantId::parse(&r.tenant).map_err(|m| InvokeError::Host(anyhow::anyhow!(m)))?;
        let (params, reason) = call_params(spec, body)?;
        if let Some(skipped) = self.rollout_in_progress(&r.tenant, spec) {
            return Ok(skipped);
        }

        // 1. The window, split.
        let now_ms = crate::unix_ms();
        let query = crate::datasets::Query {
            function: spec.dataset.clone(),
            since_ms: spec.window.as_millis() as u64,
            labelled_only: true,
            limit: spec.max_rows,
        };
        let rows = self
            .datasets
            .read(&r.tenant, &query, now_ms)
            .await
            .map_err(|e| {
                unavailable(format!("reading the dataset of `{}`: {e:#}", spec.dataset))
            })?;
        let mut inputs = Vec::with_capacity(rows.len());
        let mut labels = Vec::with_capacity(rows.len());
        let mut held_out = Vec::with_capacity(rows.len());
        let mut unusable = 0usize;
        let (mut first_ms, mut last_ms) = (u64::MAX, 0u64);
        let mut digest = Sha256::new();
        for row in &rows {
            let Some(label) = row.get("label").and_then(label_of) else {
                unusable += 1;
                continue;
            };
            let id = row["request_id"].as_str().unwrap_or_default();
            let idx = row["row"].as_i64().unwrap_or_default();
            let t = row["time_ms"].as_u64().unwrap_or_default();
            (first_ms, last_ms) = (first_ms.min(t), last_ms.max(t));
            let mut o = Map::new();
            if let Value::Object(m) = row {
                for (k, v) in m {
                    if let Some(name) = k.strip_prefix("in.") {
                        o.insert(name.to_string(), v.clone());
                    }
                }
            }
            digest.update(id.as_bytes());
            digest.update([0]);
            digest.update(idx.to_le_bytes());
            digest.update(Value::Object(o.clone()).to_string().as_bytes());
            digest.update([u8::from(label)]);
            held_out.push(split_point(id, idx) < spec.holdout);
            inputs.push(Value::Object(o));
            labels.push(label);
        }
        let window_text = humantime::format_duration(spec.window).to_string();
        if labels.len() < spec.min_rows {
            return Err(invalid(format!(
                "the last {window_text} of `{}` has {} labelled rows ({unusable} with a label that is not true/false/0/1); training needs at least {} ([trainer] min_rows)",
                spec.dataset,
                labels.len(),
                spec.min_rows
            )));
        }
        let dataset_digest = format!("sha256:{}", hex::encode(digest.finalize()));

        // 2. Features, offline, with the component the online path runs.
        let logged = crate::convert::json_to_batch(&Value::Array(inputs))
            .map_err(|e| invalid(format!("the logged inputs of `{}`: {e}", spec.dataset)))?;
        let (features, features_ref) = match &spec.features {
            None => (logged.clone(), None),
            Some((name, version)) => {
                let target = FunctionRef::new(tenant.clone(), name, version.as_deref())
                    .map_err(|e| invalid(format!("[trainer] features: {e:?}")))?;
                let fx = self.get(&target).await.map_err(from_deploy)?;
                let DeploymentBody::Component(Prepared::Transform(tpre)) = &fx.body else {
                    return Err(invalid(format!(
                        "[trainer] features `{name}` is a `{}` function, not a transform",
                        fx.record.kind
                    )));
                };
                let offline = fx.invocation.offline();
                let out = self.runtime.transform(tpre, &offline, &logged).await?;
                let used = format!("{}@{}", fx.record.name, fx.record.version);
                (out, Some(used))
            }
        };
        let mut columns = Vec::with_capacity(spec.inputs.len());
        for name in &spec.inputs {
            let field = features
                .fields
                .iter()
                .find(|f| &f.name == name)
                .ok_or_else(|| {
                    invalid(format!(
                        "[trainer] inputs names `{name}`, which the features ({}) do not have",
                        features_ref.as_deref().unwrap_or("the logged inputs")
                    ))
                })?;
            if column_len(&field.values) != labels.len() {
                return Err(invalid(format!(
                    "the features returned {} rows of `{name}` for {} rows",
                    column_len(&field.values),
                    labels.len()
                )));
            }
            let Some(values) = numbers(&field.values) else {
                return Err(invalid(format!(
                    "input `{name}` is {}; a trained model's inputs are one number per row",
                    crate::columns::type_name(&field.values)
                )));
            };
            columns.push((field, values));
        }
        // The features of every row, as computed: what online values are compared with.
        let mut fd = Sha256::new();
        for (_, values) in &columns {
            for v in values {
                fd.update(v.to_le_bytes());
            }
        }
        let features_digest = format!("sha256:{}", hex::encode(fd.finalize()));
        // A row whose model inputs are not finite f32s trains nothing and scores
        // nothing: it is left out (and counted), not fatal to the run.
        let usable: Vec<bool> = (0..labels.len())
            .map(|i| {
                columns
                    .iter()
                    .all(|(_, v)| v[i].is_finite() && v[i].abs() <= f64::from(f32::MAX))
            })
            .collect();
        let unusable_inputs = usable.iter().filter(|u| !**u).count();
        let train_idx: Vec<usize> = (0..labels.len())
            .filter(|&i| usable[i] && !held_out[i])
            .collect();
        let hold_idx: Vec<usize> = (0..labels.len())
            .filter(|&i| usable[i] && held_out[i])
            .collect();
        let train_labels: Vec<bool> = train_idx.iter().map(|&i| labels[i]).collect();
        let hold_labels: Vec<bool> = hold_idx.iter().map(|&i| labels[i]).collect();
        for (side, l) in [("trained on", &train_labels), ("held out", &hold_labels)] {
            if !l.contains(&true) || !l.contains(&false) {
                return Err(invalid(format!(
                    "the rows {side} ({}) have only one class; a window needs both labels on each side of the split",
                    l.len()
                )));
            }
        }

        // 3. Train, in the guest.
        let mut fields: Vec<Field> = columns
            .iter()
            .map(|(f, _)| Field {
                name: f.name.clone(),
                values: take(&f.values, &train_idx),
            })
            .collect();
        fields.push(Field {
            name: "label".into(),
            values: Column::Boolean(train_labels.clone()),
        });
        let trainer = format!("{}@{}", r.name, r.version);
        let mut span = crate::trace::span("train")
            .attr("quiver.model", spec.model.clone())
            .attr("quiver.rows", train_idx.len() as i64);
        let artifact = span
            .scope(
                self.runtime
                    .train(pre, &d.invocation, &Batch { fields }, &params),
            )
            .await;
        if let Err(e) = &artifact {
            span.fail(e.to_string());
        }
        drop(span);
        let artifact = artifact?;
        if artifact.format != "onnx" {
            return Err(InvokeError::BadOutput(format!(
                "the trainer returned a `{}` model; this host registers `onnx`",
                artifact.format.chars().take(64).collect::<String>()
            )));
        }
        if artifact.bytes.len() > super::MAX_MODEL_SIZE {
            return Err(InvokeError::BadOutput(format!(
                "the trainer returned a model of {} bytes; the most this host takes is {}",
                artifact.bytes.len(),
                super::MAX_MODEL_SIZE
            )));
        }
        if artifact.metrics.len() > 256 || artifact.metrics.iter().any(|(k, _)| k.len() > 128) {
            return Err(InvokeError::BadOutput(
                "a model's metrics are at most 256, names at most 128 bytes".into(),
            ));
        }

        // 4. The gate: the new model and the champion on the held-out rows.
        let k = spec.inputs.len();
        let mut x = Vec::with_capacity(hold_idx.len() * k);
        for &i in &hold_idx {
            x.extend(columns.iter().map(|(_, v)| v[i] as f32));
        }
        let champion = {
            let (t, n, a) = (r.tenant.clone(), spec.model.clone(), spec.against.clone());
            match self
                .registry_call(move |reg| reg.model_alias(&t, &n, &a))
                .await
            {
                Ok(v) => Some(v),
                Err(super::DeployError::Registry(quiver_registry::RegistryError::NotFound(_))) => {
                    None
                }
                Err(e) => return Err(from_deploy(e)),
            }
        };
        let champion_bytes = match &champion {
            None => None,
            Some(v) => {
                let (t, n, v) = (r.tenant.clone(), spec.model.clone(), v.clone());
                let rec = self
                    .registry_call(move |reg| reg.model(&t, &n, &v))
                    .await
                    .map_err(from_deploy)?;
                let digest = rec.digest().map_err(|e| InvokeError::Host(e.into()))?;
                let this = self.clone();
                let bytes = tokio::task::spawn_blocking(move || this.registry.blobs().get(&digest))
                    .await
                    .map_err(|e| InvokeError::Host(e.into()))?
                    .map_err(|e| InvokeError::Host(e.into()))?;
                Some(bytes)
            }
        };
        let mut x_train = Vec::with_capacity(train_idx.len() * k);
        for &i in &train_idx {
            x_train.extend(columns.iter().map(|(_, v)| v[i] as f32));
        }
        let backend = self.models.backend();
        let (n, n_train, candidate_bytes) =
            (hold_idx.len(), train_idx.len(), artifact.bytes.clone());
        let scored = tokio::task::spawn_blocking(move || {
            let candidate = score(backend, &candidate_bytes, &x, n, k)
                .map_err(|e| format!("the new model does not run: {e:#}"))?;
            // Its scores on its own training rows (in-sample: kept in the metrics).
            let trained = score(backend, &candidate_bytes, &x_train, n_train, k)
                .map_err(|e| format!("the new model does not run: {e:#}"))?;
            let champion = match champion_bytes {
                None => None,
                Some(b) => Some(
                    score(backend, &b, &x, n, k)
                        .map_err(|e| format!("the champion does not run on these inputs: {e:#}"))?,
                ),
            };
            Ok::<_, String>((candidate, champion, trained))
        })
        .await
        .map_err(|e| InvokeError::Host(e.into()))?
        .map_err(InvokeError::BadOutput)?;
        let candidate_value =
            metric(spec.metric, &scored.0, &hold_labels).map_err(InvokeError::BadOutput)?;
        let champion_value = match &scored.1 {
            None => None,
            Some(s) => Some(metric(spec.metric, s, &hold_labels).map_err(InvokeError::BadOutput)?),
        };
        let passed = match champion_value {
            None => true,
            Some(c) if spec.metric.lower_is_better() => candidate_value <= c + spec.margin,
            Some(c) => candidate_value >= c - spec.margin,
        };
        let m = spec.metric.as_str();
        let decision = match (champion_value, &champion) {
            (Some(c), Some(v)) => format!(
                "{} {m} {candidate_value:.4} vs {}@{v} {c:.4} (margin {})",
                if passed { "passed:" } else { "failed:" },
                spec.against,
                spec.margin
            ),
            _ => format!(
                "passed: {m} {candidate_value:.4}, no `{}` to compare with",
                spec.against
            ),
        };

        // 5. Register with lineage; promote when it passed. Runs of one model on
        // this host take their version one at a time (another host's concurrent
        // run meets a version conflict, and fails like any run: an event retries it).
        let turn = registration_lock(&r.tenant, &spec.model);
        let _turn = turn.lock().await;
        // A run that waited behind one that started a rollout registers nothing.
        if let Some(skipped) = self.rollout_in_progress(&r.tenant, spec) {
            return Ok(skipped);
        }
        let version = {
            let (t, n) = (r.tenant.clone(), spec.model.clone());
            let versions = self
                .registry_call(move |reg| reg.model_versions(&t, &n))
                .await
                .map_err(from_deploy)?;
            let latest = versions
                .iter()
                .filter_map(|v| semver::Version::parse(&v.version).ok())
                .max();
            let mut next = match latest {
                None => semver::Version::new(1, 0, 0),
                Some(v) => semver::Version::new(v.major, v.minor + 1, 0),
            };
            // A version the gate refused is a pre-release (`1.3.0-rejected`), which
            // no semver range (`fraud-model@^1`) resolves to: it is kept, with its
            // lineage, but never served unless pinned.
            if !passed {
                next.pre = semver::Prerelease::new("rejected")
                    .map_err(|e| InvokeError::Host(anyhow::anyhow!("{e}")))?;
            }
            next.to_string()
        };
        // Reference distributions, over the training rows: each model input, each
        // logged input (`in.<name>`; text as category counts) and the new model's
        // score (`score`).
        let mut reference = Map::new();
        for (f, values) in &columns {
            let train_values: Vec<f64> = train_idx.iter().map(|&i| values[i]).collect();
            reference.insert(f.name.clone(), json!(reference_of(&train_values)));
        }
        for f in logged.fields.iter().take(MAX_LOGGED_REFERENCES) {
            let key = format!("in.{}", f.name);
            if column_len(&f.values) != labels.len() || reference.contains_key(&key) {
                continue;
            }
            match (&f.values, numbers(&f.values)) {
                (Column::Text(v), _) => {
                    let mut counts = std::collections::BTreeMap::<&str, u64>::new();
                    for &i in &train_idx {
                        *counts.entry(v[i].as_str()).or_default() += 1;
                    }
                    // A column with more categories than this, or longer ones, is an
                    // id or free text, not a feature: it gets no reference.
                    if counts.len() <= MAX_CATEGORIES && counts.keys().all(|c| c.len() <= 128) {
                        reference.insert(key, json!(counts));
                    }
                }
                (_, Some(values)) => {
                    let train_values: Vec<f64> = train_idx.iter().map(|&i| values[i]).collect();
                    reference.insert(key, json!(reference_of(&train_values)));
                }
                _ => {}
            }
        }
        // The score's reference: the new model's scores on every usable row of the
        // window (held out and trained on). The held-out rows alone are too few
        // for a stable PSI (a fifth of the window); the in-sample bias of a
        // model with a handful of parameters is small next to that noise.
        let all_scores: Vec<f64> = scored.0.iter().chain(&scored.2).copied().collect();
        reference.insert("score".into(), json!(reference_of(&all_scores)));
        let in_sample_auc = metric(GateMetric::Auc, &scored.2, &train_labels).ok();
        let mut metrics = Map::new();
        for (k, v) in &artifact.metrics {
            if v.is_finite() {
                metrics.insert(k.clone(), json!(v));
            }
        }
        metrics.insert(format!("holdout.{m}"), json!(candidate_value));
        if let Some(auc) = in_sample_auc {
            metrics.insert("host.train_auc".into(), json!(auc));
        }
        let gate = json!({
            "metric": m,
            "margin": spec.margin,
            "against": spec.against,
            "candidate": candidate_value,
            "champion": champion_value,
            "champion_version": champion,
            "passed": passed,
            "decision": decision,
        });
        let lineage = json!({
            "dataset": {
                "function": spec.dataset,
                "digest": dataset_digest,
                "window": window_text,
                "from_ms": first_ms,
                "to_ms": last_ms,
                "rows": labels.len(),
                "unusable_rows": unusable + unusable_inputs,
                "train_rows": train_idx.len(),
                "holdout_rows": hold_idx.len(),
                "features_digest": features_digest,
            },
            "dataset_digest": dataset_digest,
            "trainer": trainer,
            "features": features_ref,
            "inputs": spec.inputs,
            "parent": champion,
            "params": params.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "metrics": metrics,
            "gate": gate,
            "reference": reference,
            "reason": reason,
        });
        let (record, _, _) = self
            .push_model(
                &tenant,
                &spec.model,
                &version,
                Some(lineage),
                artifact.bytes,
            )
            .await
            .map_err(|e| match e {
                super::DeployError::Invalid(m) => {
                    InvokeError::BadOutput(format!("the trained model is not registrable: {m}"))
                }
                other => from_deploy(other),
            })?;
        let promoted = match passed {
            true => self
                .move_model_alias(
                    &r.tenant,
                    &spec.model,
                    &spec.promote_to,
                    &record.version,
                    &trainer,
                    &format!("training gate {decision}"),
                )
                .await
                .map_err(from_deploy)?
                .is_some(),
            false => false,
        };

        // 6. Roll it out, when asked: the analysis promotes it or rolls it back.
        let rollout = match (&spec.rollout, passed) {
            (Some(section), true) => {
                let (t, m) = (r.tenant.as_str(), spec.model.as_str());
                let why = format!("trained by {trainer}: gate {decision}");
                match self
                    .start_rollout(t, m, &record.version, section, &trainer, &why)
                    .await
                {
                    Ok(rec) => {
                        json!({"id": rec.id, "state": rec.state, "against": rec.alias, "baseline": rec.baseline})
                    }
                    Err(e) => json!({"refused": e.to_string()}),
                }
            }
            _ => Value::Null,
        };

        // 7. Tell the bus.
        let outcome = json!({
            "model": spec.model,
            "version": record.version,
            "trainer": trainer,
            "dataset_digest": dataset_digest,
            "gate": gate,
            "promoted_to": promoted.then_some(&spec.promote_to),
            "rollout": rollout,
        });
        let event = crate::events::NewEvent {
            content_type: "application/json".into(),
            payload: outcome.to_string().into_bytes(),
            source: Some(trainer.clone()),
            traceparent: crate::trace::current().map(|c| c.to_string()),
        };
        if let Err(e) = self.events.publish(&tenant, TRAINED_TOPIC, event).await {
            tracing::warn!(model = %spec.model, version = %record.version, "publishing {TRAINED_TOPIC}: {e}");
        }
        tracing::info!(model = %spec.model, version = %record.version, passed, "trained: {decision}");
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_stable_and_near_its_share() {
        assert_eq!(split_point("r-1", 0), split_point("r-1", 0));
        assert_ne!(split_point("r-1", 0), split_point("r-1", 1));
        let held = (0..10_000)
            .filter(|i| split_point(&format!("req-{i}"), 0) < 0.2)
            .count();
        assert!((1800..2200).contains(&held), "{held}");
    }

    #[test]
    fn labels_are_booleans_or_zero_one() {
        assert_eq!(label_of(&json!(true)), Some(true));
        assert_eq!(label_of(&json!(0)), Some(false));
        assert_eq!(label_of(&json!(1.0)), Some(true));
        assert_eq!(label_of(&json!(0.5)), None);
        assert_eq!(label_of(&json!("yes")), None);
    }

    #[test]
    fn references_are_sorted_and_bounded() {
        assert_eq!(
            reference_of(&[3.0, f64::NAN, 1.0, 2.0]),
            vec![1.0, 2.0, 3.0]
        );
        let many: Vec<f64> = (0..10_001).rev().map(f64::from).collect();
        let r = reference_of(&many);
        assert_eq!(r.len(), MAX_REFERENCE_VALUES);
        assert_eq!((r[0], r[r.len() - 1]), (0.0, 10_000.0));
        assert!(r.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn call_params_override_and_reasons_are_bounded() {
        let spec = crate::manifest::Manifest::parse(
            "[function]\nname='t'\nversion='1.0.0'\nkind='trainer'\n[datasets]\nread=['p']\n[trainer]\nmodel='m'\ndataset='p'\ninputs=['a']\n[trainer.params]\nseed='1'\nl2='0.1'\n",
        )
        .unwrap()
        .trainer()
        .unwrap()
        .unwrap();
        let (p, reason) =
            call_params(&spec, br#"{"params": {"seed": 7}, "feature": "amount"}"#).unwrap();
        assert!(
            p.contains(&("seed".into(), "7".into())) && p.contains(&("l2".into(), "0.1".into()))
        );
        assert_eq!(reason, json!({"feature": "amount"}));
        assert_eq!(call_params(&spec, b"").unwrap().1, Value::Null);
        let long = format!(r#"{{"x": "{}"}}"#, "a".repeat(10_000));
        assert!(call_params(&spec, long.as_bytes())
            .unwrap()
            .1
            .get("truncated")
            .is_some());
        for bad in [
            &b"nope"[..],
            br#"{"params": [1]}"#,
            br#"{"params": {"a": [1]}}"#,
        ] {
            assert!(call_params(&spec, bad).is_err());
        }
    }
}
