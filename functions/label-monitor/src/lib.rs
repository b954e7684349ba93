//! Label monitor: the accuracy of a function's predictions on the rows whose true
//! outcome came back, read from the dataset store (`quiver:ml/datasets`). A value
//! counts as positive when it is `true`, non-zero, or the text `true`/`1`/`yes`;
//! predictions and labels are compared that way, so a boolean prediction can be
//! checked against 0/1 labels.
use quiver_sdk::datasets::{self, Query};
use quiver_sdk::{Batch, Column, Error, Report};

fn positives(c: &Column) -> Result<Vec<bool>, Error> {
    Ok(match c {
        Column::Boolean(v) => v.clone(),
        Column::Int64(v) => v.iter().map(|x| *x != 0).collect(),
        Column::Float64(v) => v.iter().map(|x| *x != 0.0).collect(),
        Column::Text(v) => v
            .iter()
            .map(|s| matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
            .collect(),
        other => match other.numbers() {
            Some(v) => v.iter().map(|x| *x != 0.0).collect(),
            None => {
                return Err(Error::InvalidInput(format!(
                    "a {} column cannot be read as labels",
                    other.type_name()
                )))
            }
        },
    })
}

/// `7d`, `12h`, `30m`, `45s` as milliseconds.
fn duration_ms(text: &str) -> Result<u64, Error> {
    let text = text.trim();
    let (n, unit) = text.split_at(text.len().saturating_sub(1));
    let scale = match unit {
        "d" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        _ => 0,
    };
    match n.parse::<u64>() {
        Ok(n) if scale > 0 => Ok(n.saturating_mul(scale)),
        _ => Err(Error::InvalidInput(format!(
            "[config] since `{text}` is not a count of d, h, m or s"
        ))),
    }
}

fn observe(_inputs: Batch, _outputs: Batch) -> Result<Report, Error> {
    let function = quiver_sdk::config("function").ok_or_else(|| {
        Error::InvalidInput("[config] function names whose labels to read".into())
    })?;
    let prediction = quiver_sdk::config("prediction").unwrap_or_else(|| "label".into());
    let since_ms = duration_ms(&quiver_sdk::config("since").unwrap_or_else(|| "7d".into()))?;
    let rows = datasets::read(&Query {
        function,
        since_ms,
        labelled_only: true,
        limit: 100_000,
    })?;
    let mut metrics = vec![("labelled_rows".to_string(), rows.num_rows() as f64)];
    let mut alerts = Vec::new();
    if rows.num_rows() > 0 {
        let predicted = positives(rows.column(&format!("out.{prediction}"))?)?;
        let actual = positives(rows.column("label")?)?;
        let agree = predicted
            .iter()
            .zip(&actual)
            .filter(|(p, a)| p == a)
            .count();
        let accuracy = agree as f64 / rows.num_rows() as f64;
        metrics.push(("accuracy".into(), accuracy));
        let min = quiver_sdk::config("min_accuracy").and_then(|m| m.parse::<f64>().ok());
        if let Some(min) = min.filter(|m| accuracy < *m) {
            alerts.push(format!(
                "accuracy {accuracy:.3} over {} labelled rows is below {min}",
                rows.num_rows()
            ));
        }
    }
    Ok(Report { metrics, alerts })
}

quiver_sdk::monitor!(observe);
