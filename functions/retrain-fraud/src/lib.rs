//! Trainer of the fraud model: a seeded logistic regression (`quiver-ml`) on the
//! batch the host hands it, exported as the ONNX graph `fraud-score` runs.
//!
//! In: `log_amount`, `hour_of_day`, `merchant_z`, `merchant_known` (float64,
//! int64 or boolean, booleans as 0/1) and `label` (boolean, or int64/float64 0 or
//! 1). Params: `seed`, `epochs`, `learning_rate`, `l2`, `holdout`; defaults from
//! `[config]` keys of the same names, then quiver-ml's. `[config] flip_labels =
//! "true"` trains on inverted labels (a deliberately bad model).
//! Out: `format = "onnx"`, the model's bytes, metrics `train.rows`, `train.auc`,
//! `train.log_loss`, `train.accuracy`, `train.positive_rate` (and `holdout.*`
//! with a holdout), all against the labels as given.
use quiver_ml::onnx;
use quiver_ml::train::{self, Params};
use quiver_sdk::{Batch, Column, Error, ModelArtifact};

const FEATURES: [&str; 4] = ["log_amount", "hour_of_day", "merchant_z", "merchant_known"];

/// A feature column as f64, checked to have `rows` values.
fn feature(batch: &Batch, name: &str, rows: usize) -> Result<Vec<f64>, Error> {
    let column = batch.column(name)?;
    let Some(v) = column.numbers() else {
        return Err(Error::InvalidInput(format!(
            "field `{name}` is {}; the model takes numbers or booleans",
            column.type_name()
        )));
    };
    match v.len() == rows {
        true => Ok(v),
        false => Err(Error::InvalidInput(format!(
            "field `{name}` has {} values, `label` {rows}",
            v.len()
        ))),
    }
}

/// The `label` column: booleans, or numbers that are exactly 0 or 1.
fn labels(batch: &Batch) -> Result<Vec<bool>, Error> {
    let bad = |row: usize, v: &dyn std::fmt::Display| {
        Error::InvalidInput(format!("field `label`, row {row}: {v} is not 0 or 1"))
    };
    match batch.column("label")? {
        Column::Boolean(v) => Ok(v.clone()),
        Column::Int64(v) => v
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                0 => Ok(false),
                1 => Ok(true),
                other => Err(bad(i, other)),
            })
            .collect(),
        Column::Float64(v) => v
            .iter()
            .enumerate()
            .map(|(i, x)| match *x {
                0.0 => Ok(false),
                1.0 => Ok(true),
                other => Err(bad(i, &other)),
            })
            .collect(),
        other => Err(Error::InvalidInput(format!(
            "field `label` is {}; expected booleans or 0/1",
            other.type_name()
        ))),
    }
}

/// Built-in defaults, then `[config]`, then the run's `params`.
fn params(pairs: &[(String, String)]) -> Result<Params, Error> {
    let mut p = Params::default();
    for key in Params::KEYS {
        if let Some(v) = quiver_sdk::config(key) {
            p.set(key, &v)
                .map_err(|e| Error::InvalidInput(format!("[config] {e}")))?;
        }
    }
    let unknown: Vec<&str> = pairs
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !Params::KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(Error::InvalidInput(format!(
            "unknown training parameter{} `{}` (expected: {})",
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join("`, `"),
            Params::KEYS.join(", ")
        )));
    }
    for (k, v) in pairs {
        p.set(k, v).map_err(Error::InvalidInput)?;
    }
    p.flip_labels = match quiver_sdk::config("flip_labels").as_deref().map(str::trim) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(Error::InvalidInput(format!(
                "[config] flip_labels = `{other}`: expected \"true\" or \"false\""
            )))
        }
    };
    Ok(p)
}

fn retrain(dataset: Batch, pairs: Vec<(String, String)>) -> Result<ModelArtifact, Error> {
    let params = params(&pairs)?;
    let y = labels(&dataset)?;
    let rows = y.len();
    let columns = FEATURES
        .iter()
        .map(|name| feature(&dataset, name, rows))
        .collect::<Result<Vec<_>, _>>()?;
    let mut x = Vec::with_capacity(rows * FEATURES.len());
    for r in 0..rows {
        x.extend(columns.iter().map(|c| c[r])); // every column has `rows` values
    }
    let trained = train::train(&x, FEATURES.len(), &y, &params).map_err(Error::InvalidInput)?;
    let bytes =
        onnx::logistic_regression(&trained.model, FEATURES.len()).map_err(Error::Internal)?;
    let mut metrics = trained.train.named("train");
    if let Some(h) = &trained.holdout {
        metrics.extend(h.named("holdout"));
    }
    quiver_sdk::log::info(&format!(
        "retrain-fraud: {rows} rows, weights {:?}, bias {:.4}, train AUC {:.4}{}",
        trained.model.weights,
        trained.model.bias,
        trained.train.auc,
        if params.flip_labels {
            " (flip_labels: trained on inverted labels)"
        } else {
            ""
        }
    ));
    Ok(ModelArtifact {
        format: "onnx".into(),
        bytes,
        metrics,
    })
}

quiver_sdk::trainer!(retrain);
