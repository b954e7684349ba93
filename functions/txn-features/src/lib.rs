//! Deterministic transaction features. The same component runs online and in
//! retraining, so serving and training compute features with identical code.
//!
//! In: `amount` (numeric), `ts` (unix seconds), `merchant` (text), optional `txn_id`.
//! Out: `txn_id` (if given), `merchant`, `log_amount` = ln(1 + amount), `hour_of_day` (UTC),
//! `merchant_z` = z-score of log_amount against the merchant's stats from
//! `[config] merchant_stats` (JSON `{"merchant": [mean, std]}`), 0 for an unknown
//! merchant, and `merchant_known`.
//!
//! Online features (with `[config] online_stats = "true"` and `[features] groups =
//! ["merchant"]`): per-merchant running count, mean and M2 of `log_amount` live in
//! the feature store. Each batch reads them (one `get-many`), scores against them
//! once a merchant has `min_online_count` transactions (default 20; before that, the
//! trained `merchant_stats`), then folds its own transactions in and writes them
//! back; `merchant_txns` reports the merchant's count including this batch. If the
//! store is unavailable the batch is still scored, from `merchant_stats`.
//! Concurrent batches for one merchant may overwrite each other's update (last
//! writer wins): the stats are approximate under concurrency.
use quiver_sdk::features::{self, Value};
use quiver_sdk::{Batch, Error};
use std::collections::HashMap;

/// Welford's running statistics.
#[derive(Clone, Copy, Default)]
struct Running {
    n: i64,
    mean: f64,
    m2: f64,
}

impl Running {
    fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    fn std(&self) -> f64 {
        match self.n {
            0 | 1 => 0.0,
            n => (self.m2 / (n - 1) as f64).sqrt(),
        }
    }
}

const GROUP: &str = "merchant";

fn names() -> Vec<String> {
    ["txn_n", "txn_mean", "txn_m2"].map(String::from).to_vec()
}

/// The stored stats of each merchant (missing: empty), or `None` when online
/// features are off or the store cannot be read.
fn read_online(merchants: &[String]) -> Option<HashMap<String, Running>> {
    if quiver_sdk::config("online_stats").as_deref() != Some("true") {
        return None;
    }
    let mut unique: Vec<String> = merchants.to_vec();
    unique.sort();
    unique.dedup();
    let columns = match features::get_many(GROUP, &unique, &names()) {
        Ok(c) => c,
        Err(e) => {
            quiver_sdk::log::warn(&format!("online merchant stats unavailable: {e:?}"));
            return None;
        }
    };
    let num = |col: usize, row: usize| match columns.get(col).and_then(|c| c.values.get(row)) {
        Some(Some(Value::Float64(x))) => *x,
        Some(Some(Value::Int64(x))) => *x as f64,
        _ => 0.0,
    };
    Some(
        unique
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let r = Running {
                    n: num(0, i) as i64,
                    mean: num(1, i),
                    m2: num(2, i),
                };
                (m.clone(), r)
            })
            .collect(),
    )
}

fn write_online(stats: &HashMap<String, Running>) {
    for (m, r) in stats {
        let values = vec![
            ("txn_n".to_string(), Value::Int64(r.n)),
            ("txn_mean".to_string(), Value::Float64(r.mean)),
            ("txn_m2".to_string(), Value::Float64(r.m2)),
        ];
        if let Err(e) = features::put(GROUP, m, &values, None) {
            quiver_sdk::log::warn(&format!("writing stats of {m}: {e:?}"));
            return;
        }
    }
}

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
    let min_online: i64 = quiver_sdk::config("min_online_count")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut online = read_online(merchant);
    let (z, known): (Vec<f64>, Vec<bool>) = log_amount
        .iter()
        .zip(merchant)
        .map(|(la, m)| {
            let live = online.as_ref().and_then(|o| o.get(m)).copied();
            let learned = live.filter(|r| r.n >= min_online && r.std() > 0.0);
            match (learned, stats.get(m)) {
                (Some(r), _) => ((la - r.mean) / r.std(), true),
                (None, Some((mean, std))) if *std > 0.0 => ((la - mean) / std, true),
                _ => (0.0, false),
            }
        })
        .unzip();
    let mut txns = Vec::new();
    if let Some(o) = online.as_mut() {
        for (la, m) in log_amount.iter().zip(merchant) {
            let r = o.entry(m.clone()).or_default();
            r.push(*la);
            txns.push(r.n);
        }
        write_online(o);
    }

    let mut out = Batch::new();
    if let Ok(ids) = input.texts("txn_id") {
        out = out.with_text("txn_id", ids.to_vec())?;
    }
    // The entity later stages read features by (fraud-score reads its stats).
    out = out.with_text("merchant", merchant.to_vec())?;
    if online.is_some() {
        // The count after the whole batch, for every row of a merchant.
        let last: HashMap<&String, i64> =
            merchant.iter().zip(&txns).map(|(m, n)| (m, *n)).collect();
        let counts = merchant
            .iter()
            .map(|m| last.get(m).copied().unwrap_or(0))
            .collect();
        out = out.with_i64("merchant_txns", counts)?;
    }
    out.with_f64("log_amount", log_amount)?
        .with_i64("hour_of_day", hour)?
        .with_f64("merchant_z", z)?
        .with_bool("merchant_known", known)
}

quiver_sdk::transform!(features);
