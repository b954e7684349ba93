//! Deterministic transaction features. The same component runs online and in
//! retraining, so serving and training compute features with identical code.
//!
//! In: `amount` (numeric), `ts` (unix seconds), `merchant` (text), optional `txn_id`.
//! Out: `txn_id` (if given), `log_amount` = ln(1 + amount), `hour_of_day` (UTC),
//! `merchant_z` = z-score of log_amount against the merchant's stats from
//! `[config] merchant_stats` (JSON `{"merchant": [mean, std]}`), 0 for an unknown
//! merchant, and `merchant_known`.
use quiver_sdk::{Batch, Error};
use std::collections::HashMap;

fn merchant_stats() -> Result<HashMap<String, (f64, f64)>, Error> {
    match quiver_sdk::config("merchant_stats") {
        None => Ok(HashMap::new()),
        Some(raw) => serde_json::from_str(&raw)
            .map_err(|e| Error::InvalidInput(format!("config `merchant_stats`: {e}"))),
    }
}

fn features(input: Batch) -> Result<Batch, Error> {
    let amount = input.f64s("amount")?;
    let ts = input.f64s("ts")?;
    let merchant = input.texts("merchant")?;
    let stats = merchant_stats()?;

    if let Some(row) = amount.iter().position(|a| !a.is_finite() || *a < 0.0) {
        return Err(Error::InvalidInput(format!(
            "row {}: amount must be a finite number >= 0",
            row + 1
        )));
    }
    let log_amount: Vec<f64> = amount.iter().map(|a| a.ln_1p()).collect();
    let hour: Vec<i64> = ts
        .iter()
        .map(|t| (*t as i64).rem_euclid(86_400) / 3_600)
        .collect();
    let (z, known): (Vec<f64>, Vec<bool>) = log_amount
        .iter()
        .zip(merchant)
        .map(|(la, m)| match stats.get(m) {
            Some((mean, std)) if *std > 0.0 => ((la - mean) / std, true),
            _ => (0.0, false),
        })
        .unzip();

    let mut out = Batch::new();
    if let Ok(ids) = input.texts("txn_id") {
        out = out.with_text("txn_id", ids.to_vec())?;
    }
    out.with_f64("log_amount", log_amount)?
        .with_i64("hour_of_day", hour)?
        .with_f64("merchant_z", z)?
        .with_bool("merchant_known", known)
}

quiver_sdk::transform!(features);
