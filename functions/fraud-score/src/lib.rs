//! Fraud scoring: the model bound as `fraud` in `[models]`, run by the host.
//!
//! In: `log_amount`, `hour_of_day`, `merchant_z`, `merchant_known` (what
//! `txn-features` computes; numbers or, for `merchant_known`, booleans), optional
//! `txn_id` and `merchant`.
//! Out: `txn_id` (if given), `score` = P(fraud) from the model, `label` = score >=
//! `[config] threshold` (default 0.5); with a `merchant` column, `merchant` and
//! `merchant_txns`: that merchant's transaction count, read by entity from the
//! feature store (group `merchant`, written by `txn-features`), -1 if unknown.
use quiver_sdk::features::{self, Value};
use quiver_sdk::nn::Model;
use quiver_sdk::{Batch, Error};

const FEATURES: [&str; 4] = ["log_amount", "hour_of_day", "merchant_z", "merchant_known"];

/// Each merchant's `txn_n`, in one `get-many` round trip.
fn merchant_txns(merchants: &[String]) -> Vec<i64> {
    let got = features::get_many("merchant", merchants, &["txn_n".to_string()]);
    match got {
        Ok(columns) => columns
            .into_iter()
            .next()
            .map(|c| {
                c.values
                    .into_iter()
                    .map(|v| match v {
                        Some(Value::Int64(n)) => n,
                        Some(Value::Float64(x)) => x as i64,
                        _ => -1,
                    })
                    .collect()
            })
            .unwrap_or_else(|| vec![-1; merchants.len()]),
        Err(e) => {
            quiver_sdk::log::warn(&format!("merchant features unavailable: {e:?}"));
            vec![-1; merchants.len()]
        }
    }
}

fn score(input: Batch) -> Result<Batch, Error> {
    let x = input.f32_rows(&FEATURES)?;
    let rows = input.num_rows();
    let threshold: f64 = quiver_sdk::config("threshold")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0.5);
    let (scores, labels): (Vec<f64>, Vec<bool>) = match rows {
        0 => (Vec::new(), Vec::new()),
        _ => {
            let model = Model::shared("fraud")?;
            let (dims, probs) = model.run_f32("X", &[rows as u32, FEATURES.len() as u32], &x)?;
            if dims != [rows as u32, 2] {
                return Err(Error::Internal(format!(
                    "the model returned shape {dims:?}, expected [{rows}, 2]"
                )));
            }
            probs
                .chunks_exact(2)
                .map(|p| (f64::from(p[1]), f64::from(p[1]) >= threshold))
                .unzip()
        }
    };
    let mut out = Batch::new();
    if let Ok(ids) = input.texts("txn_id") {
        out = out.with_text("txn_id", ids.to_vec())?;
    }
    out = out.with_f64("score", scores)?.with_bool("label", labels)?;
    if let Ok(merchants) = input.texts("merchant") {
        let txns = merchant_txns(merchants);
        out = out
            .with_text("merchant", merchants.to_vec())?
            .with_i64("merchant_txns", txns)?;
    }
    Ok(out)
}

quiver_sdk::inference!(score);
