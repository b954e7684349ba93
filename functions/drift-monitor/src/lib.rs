//! Drift monitor, in one of two modes.
//!
//! **Distributions** (with `[config] dataset`): its window is the newest
//! `window_rows` (default 1000) rows of the last `window` (default 1h) of that
//! function's logged predictions (its `[datasets] read` must name it), kept while
//! the instance is warm and extended each observation by the rows logged since
//! (`window.rs`; `window.read_rows`, `window.incremental` and `window.duplicates`
//! say what it read and that no row is held twice); it takes
//! the rows the most-served version of `[config] model` (default `fraud-model`)
//! scored, and compares each column against the reference distributions that
//! version was trained on (`quiver:ml/datasets.reference`, kept with its lineage):
//! `in.<name>` numeric inputs and the score (`out.<score>`, default `out.score`,
//! against `score`) by PSI (as Evidently 0.7 computes it; drift at >=
//! `psi_threshold`, default 0.1) and the two-sample Kolmogorov–Smirnov test (as
//! `scipy.stats.ks_2samp`; reported, and drift at p <= `ks_alpha` when
//! `statistic = "ks"`), text inputs by Jensen–Shannon distance (drift at >=
//! `js_threshold`, default 0.1). Fewer than `min_rows` (default 100) rows: no
//! verdict. On drift it publishes one `drift.detected` event (`feature`,
//! `statistic`, `value`, `threshold`, `window`, `model_version`, and every metric),
//! at most once per `cooldown` (default 10m) per model version (kept in the feature
//! store, group `drift-monitor`).
//!
//! **Means** (with `[config] reference`): for each numeric input column named in `[config] reference`
//! (`column=mean:std,...`), the batch's mean and its z score,
//! `(mean - ref_mean) / (ref_std / sqrt(n))`: how many standard errors the batch
//! mean lies from what the model was trained on. `|z| > threshold` (default 4) is
//! an alert, and the alert is published as a JSON event to `[config] alert_topic`
//! when one is set, as one flat JSON row (`monitor`, the first `alert`, the
//! count of `alerts`, and every metric). Numeric outputs are reported as `out.<column>.mean`.
use quiver_ml::drift;
use quiver_sdk::datasets::{self, Distribution};

mod window;
use quiver_sdk::events::{self, Payload};
use quiver_sdk::features::{self, Value as FeatureValue};
use quiver_sdk::{Batch, Column, Error, Report};

fn reference() -> Result<Vec<(String, f64, f64)>, Error> {
    let text = quiver_sdk::config("reference").unwrap_or_default();
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = item.split_once('=').and_then(|(col, stats)| {
            let (m, s) = stats.split_once(':')?;
            Some((
                col.trim().to_string(),
                m.trim().parse().ok()?,
                s.trim().parse().ok()?,
            ))
        });
        match parsed {
            Some((col, mean, std)) if std > 0.0 => out.push((col, mean, std)),
            _ => {
                return Err(Error::InvalidInput(format!(
                    "[config] reference `{item}` is not column=mean:std with std > 0"
                )))
            }
        }
    }
    Ok(out)
}

fn numeric(c: &Column) -> Option<Vec<f64>> {
    match c {
        Column::Float64(v) => Some(v.iter().copied().filter(|x| x.is_finite()).collect()),
        Column::Float32(v) => Some(
            v.iter()
                .map(|x| f64::from(*x))
                .filter(|x| x.is_finite())
                .collect(),
        ),
        Column::Int64(v) => Some(v.iter().map(|x| *x as f64).collect()),
        _ => None,
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// One column's comparison: its metrics and, past its threshold, the alert.
struct Compared {
    metrics: Vec<(String, f64)>,
    /// (statistic, value, threshold) of the drift, when it drifted.
    drift: Option<(&'static str, f64, f64)>,
}

fn number(key: &str, default: f64) -> Result<f64, Error> {
    match quiver_sdk::config(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| {
                Error::InvalidInput(format!("[config] {key} `{v}` is not a number >= 0"))
            }),
    }
}

fn duration_ms(key: &str, default_ms: u64) -> Result<u64, Error> {
    let Some(v) = quiver_sdk::config(key) else {
        return Ok(default_ms);
    };
    let v = v.trim();
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = n.parse().map_err(|_| {
        Error::InvalidInput(format!("[config] {key} `{v}` is not like 30s, 10m, 1h, 7d"))
    })?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(Error::InvalidInput(format!(
                "[config] {key} `{v}` is not like 30s, 10m, 1h, 7d"
            )))
        }
    };
    Ok(n.saturating_mul(scale))
}

fn drift_error(column: &str, e: drift::DriftError) -> Error {
    Error::InvalidInput(format!("{column}: {e}"))
}

fn compare_numbers(column: &str, reference: &[f64], current: &[f64]) -> Result<Compared, Error> {
    let current: Vec<f64> = current.iter().copied().filter(|x| x.is_finite()).collect();
    let psi = drift::psi(reference, &current).map_err(|e| drift_error(column, e))?;
    let ks = drift::ks_2samp(reference, &current).map_err(|e| drift_error(column, e))?;
    let metrics = vec![
        (format!("{column}.psi"), psi),
        (format!("{column}.ks"), ks.statistic),
        (format!("{column}.ks_p"), ks.p_value),
    ];
    let psi_threshold = number("psi_threshold", drift::PSI_THRESHOLD)?;
    let alpha = number("ks_alpha", drift::KS_THRESHOLD)?;
    let drift = match quiver_sdk::config("statistic").as_deref() {
        Some("ks") => drift::ks_drifted(ks.p_value, alpha).then_some(("ks_p", ks.p_value, alpha)),
        _ => drift::psi_drifted(psi, psi_threshold).then_some(("psi", psi, psi_threshold)),
    };
    Ok(Compared { metrics, drift })
}

fn compare_categories(
    column: &str,
    reference: &[(String, u64)],
    current: &[String],
) -> Result<Compared, Error> {
    let mut cats: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for (c, n) in reference {
        cats.entry(c.as_str()).or_default().0 += n;
    }
    for c in current {
        cats.entry(c.as_str()).or_default().1 += 1;
    }
    let (r, c): (Vec<u64>, Vec<u64>) = cats.values().copied().unzip();
    let js = drift::jensen_shannon_from_counts(&r, &c).map_err(|e| drift_error(column, e))?;
    let psi = drift::psi_from_counts(&r, &c).map_err(|e| drift_error(column, e))?;
    let threshold = number("js_threshold", drift::JENSEN_SHANNON_THRESHOLD)?;
    Ok(Compared {
        metrics: vec![(format!("{column}.js"), js), (format!("{column}.psi"), psi)],
        drift: drift::jensen_shannon_drifted(js, threshold).then_some((
            "jensen_shannon",
            js,
            threshold,
        )),
    })
}

/// When this monitor last alerted for `version` (ms), from the feature store;
/// `None` when it never did or the store cannot say.
fn last_alert(version: &str) -> Option<i64> {
    match features::get("drift-monitor", version, &["last_alert_ms".to_string()]) {
        Ok(values) => match values.first() {
            Some(Some(FeatureValue::Int64(t))) => Some(*t),
            _ => None,
        },
        Err(e) => {
            quiver_sdk::log::warn(&format!("reading the cooldown of {version}: {e:?}"));
            None
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn observe_distributions(dataset: String) -> Result<Report, Error> {
    let window_ms = duration_ms("window", 3_600_000)?;
    let limit = number("window_rows", 1000.0)?.min(100_000.0) as u32;
    let min_rows = number("min_rows", 100.0)? as usize;
    let model = quiver_sdk::config("model").unwrap_or_else(|| "fraud-model".into());
    let score = quiver_sdk::config("score").unwrap_or_else(|| "score".into());
    let overlap_ms = duration_ms("window_overlap", 5_000)?;
    window::with_window(
        &dataset,
        window_ms,
        limit,
        overlap_ms,
        now_ms(),
        |rows, read| judge_window(&dataset, window_ms, min_rows, &model, &score, rows, read),
    )
}

/// Compare a window with the reference of the model version that served most of
/// it; on drift, publish `drift.detected` (once per cooldown).
fn judge_window(
    dataset: &str,
    window_ms: u64,
    min_rows: usize,
    model: &str,
    score: &str,
    rows: &Batch,
    read: window::Read,
) -> Result<Report, Error> {
    // The model version that served most of the window, and its rows.
    let served = rows
        .texts("models")
        .map(<[String]>::to_vec)
        .unwrap_or_default();
    let prefix = format!("{model}@");
    let version_of = |m: &str| {
        m.split(',')
            .find(|v| v.starts_with(&prefix))
            .map(str::to_string)
    };
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for m in &served {
        if let Some(v) = version_of(m) {
            *counts.entry(v).or_default() += 1;
        }
    }
    let mut metrics = vec![
        ("window.rows".to_string(), rows.num_rows() as f64),
        ("window.read_rows".to_string(), read.read as f64),
        (
            "window.incremental".to_string(),
            f64::from(u8::from(read.incremental)),
        ),
        ("window.duplicates".to_string(), read.duplicates as f64),
    ];
    let Some((version, n)) = counts.into_iter().max_by_key(|(_, n)| *n) else {
        return Ok(Report {
            metrics,
            alerts: Vec::new(),
        });
    };
    metrics.push(("window.model_rows".to_string(), n as f64));
    if n < min_rows {
        return Ok(Report {
            metrics,
            alerts: Vec::new(),
        });
    }
    let Some(reference) = datasets::reference(&version)? else {
        return Ok(Report {
            metrics,
            alerts: vec![format!(
                "{version} has no reference distributions (it was not trained by a Quiver trainer)"
            )],
        });
    };
    let mine: Vec<usize> = served
        .iter()
        .enumerate()
        .filter(|(_, m)| version_of(m).as_deref() == Some(version.as_str()))
        .map(|(i, _)| i)
        .collect();
    let mut drifted = Vec::new();
    for (name, dist) in &reference {
        let column = match name.as_str() {
            "score" => format!("out.{score}"),
            n if n.starts_with("in.") => n.to_string(),
            _ => continue,
        };
        let Some(field) = rows.fields.iter().find(|f| f.name == column) else {
            continue;
        };
        let compared: Result<Compared, Error> = match (dist, &field.values) {
            (Distribution::Numerical(r), Column::Float64(v)) => {
                compare_numbers(&column, r, &mine.iter().map(|&i| v[i]).collect::<Vec<_>>())
            }
            (Distribution::Numerical(r), Column::Float32(v)) => compare_numbers(
                &column,
                r,
                &mine.iter().map(|&i| f64::from(v[i])).collect::<Vec<_>>(),
            ),
            (Distribution::Numerical(r), Column::Int64(v)) => compare_numbers(
                &column,
                r,
                &mine.iter().map(|&i| v[i] as f64).collect::<Vec<_>>(),
            ),
            (Distribution::Categorical(r), Column::Text(v)) => compare_categories(
                &column,
                r,
                &mine.iter().map(|&i| v[i].clone()).collect::<Vec<_>>(),
            ),
            _ => continue,
        };
        // One column that cannot be compared (an empty reference, a window of
        // NaN) is reported as such; the others are still judged.
        let compared = match compared {
            Ok(c) => c,
            Err(e) => {
                metrics.push((format!("{column}.error"), 1.0));
                quiver_sdk::log::warn(&format!("comparing {column}: {e:?}"));
                continue;
            }
        };
        metrics.extend(compared.metrics);
        if let Some(d) = compared.drift {
            drifted.push((column, d));
        }
    }
    let alerts: Vec<String> = drifted
        .iter()
        .map(|(c, (stat, v, t))| {
            format!(
                "drift: {c} {stat} {v:.4} past {t} over {} rows of {version}",
                mine.len()
            )
        })
        .collect();
    if let (Some((column, (stat, value, threshold))), Some(topic)) =
        (drifted.first(), quiver_sdk::config("alert_topic"))
    {
        // At most a week, so the arithmetic below cannot overflow.
        let cooldown = duration_ms("cooldown", 600_000)?.min(7 * 86_400_000) as i64;
        let now = now_ms();
        if last_alert(&version).is_none_or(|t| now.saturating_sub(t) >= cooldown) {
            let mut event = serde_json::json!({
                "monitor": "drift-monitor",
                "alert": alerts[0],
                "alerts": alerts.len(),
                "feature": column,
                "statistic": stat,
                "value": value,
                "threshold": threshold,
                "window": { "dataset": dataset, "rows": mine.len(), "since_ms": window_ms },
                "model_version": version,
            });
            for (k, v) in &metrics {
                event[k] = serde_json::json!(v);
            }
            events::publish(&topic, &Payload::Json(event.to_string()))?;
            // Recorded once published: a failed publish is tried again next time.
            let at = vec![("last_alert_ms".to_string(), FeatureValue::Int64(now))];
            if let Err(e) = features::put("drift-monitor", &version, &at, None) {
                quiver_sdk::log::warn(&format!("recording the cooldown of {version}: {e:?}"));
            }
        }
    }
    Ok(Report { metrics, alerts })
}

fn observe(inputs: Batch, outputs: Batch) -> Result<Report, Error> {
    if let Some(dataset) = quiver_sdk::config("dataset") {
        return observe_distributions(dataset);
    }
    let threshold: f64 = quiver_sdk::config("threshold")
        .and_then(|t| t.parse().ok())
        .unwrap_or(4.0);
    let mut metrics = vec![("batch.rows".to_string(), inputs.num_rows() as f64)];
    let mut alerts = Vec::new();
    for (col, ref_mean, ref_std) in reference()? {
        let Some(values) = inputs
            .fields
            .iter()
            .find(|f| f.name == col)
            .and_then(|f| numeric(&f.values))
        else {
            continue;
        };
        let Some(m) = mean(&values) else { continue };
        let z = (m - ref_mean) / (ref_std / (values.len() as f64).sqrt());
        metrics.push((format!("{col}.mean"), m));
        metrics.push((format!("{col}.z"), z));
        if z.abs() > threshold {
            alerts.push(format!(
                "drift: {col} mean {m:.3} over {} rows is {z:.1} standard errors from the reference {ref_mean}",
                values.len()
            ));
        }
    }
    for f in &outputs.fields {
        if let Some(m) = numeric(&f.values).as_deref().and_then(mean) {
            metrics.push((format!("out.{}.mean", f.name), m));
        }
    }
    if let (false, Some(topic)) = (alerts.is_empty(), quiver_sdk::config("alert_topic")) {
        // One flat row, so a subscriber takes it as it takes any JSON event.
        let mut event = serde_json::json!({
            "monitor": "drift-monitor",
            "alert": alerts[0],
            "alerts": alerts.len(),
        });
        for (k, v) in &metrics {
            event[k] = serde_json::json!(v);
        }
        events::publish(&topic, &Payload::Json(event.to_string()))?;
    }
    Ok(Report { metrics, alerts })
}

quiver_sdk::monitor!(observe);
