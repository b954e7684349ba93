//! Drift monitor: for each numeric input column named in `[config] reference`
//! (`column=mean:std,...`), the batch's mean and its z score,
//! `(mean - ref_mean) / (ref_std / sqrt(n))`: how many standard errors the batch
//! mean lies from what the model was trained on. `|z| > threshold` (default 4) is
//! an alert, and the alert is published as a JSON event to `[config] alert_topic`
//! when one is set, as one flat JSON row (`monitor`, the first `alert`, the
//! count of `alerts`, and every metric). Numeric outputs are reported as `out.<column>.mean`.
use quiver_sdk::events::{self, Payload};
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
        Column::Int64(v) => Some(v.iter().map(|x| *x as f64).collect()),
        _ => None,
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn observe(inputs: Batch, outputs: Batch) -> Result<Report, Error> {
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
