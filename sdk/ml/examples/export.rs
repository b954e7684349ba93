//! Train the logistic regression on a seeded synthetic fraud-like data set and write
//! what `tests/onnx_check.py` checks against ONNX Runtime and scikit-learn:
//!
//! - `DIR/model.onnx`: [`quiver_ml::onnx::logistic_regression`] of the model;
//! - `DIR/check.json`: the weights, the training data, probe rows with the
//!   probabilities the Rust model gives, and score/label sets with the Rust
//!   `auc`, `log_loss` and `accuracy` of each.
//!
//! `cargo run --example export -- DIR` (or `QUIVER_ML_ONNX_OUT=DIR cargo run
//! --example export`). The output depends only on the code: no clock, no
//! randomness beyond the fixed seed.
use quiver_ml::onnx;
use quiver_ml::train::{self, Params};
use std::fmt::Write as _;

const FEATURES: [&str; 4] = ["log_amount", "hour_of_day", "merchant_z", "merchant_known"];

/// SplitMix64 with uniforms and (Box-Muller) normals.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit(); // (0, 1]
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

/// `functions/fraud-score/model/train.py`'s generating process, smaller.
fn data(n: usize, seed: u64) -> (Vec<f64>, Vec<bool>) {
    let mut rng = Rng(seed);
    let mut x = Vec::with_capacity(n * 4);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let log_amount = 3.5 + 1.2 * rng.normal();
        let hour = (rng.unit() * 24.0).floor();
        let merchant_z = rng.normal();
        let known = f64::from(u8::from(rng.unit() < 0.85));
        let night = f64::from(u8::from(!(5.0..=22.0).contains(&hour)));
        let logit = -1.8 + 1.4 * (log_amount - 3.5) + 2.0 * merchant_z + 1.6 * night - 1.8 * known;
        y.push(rng.unit() < train::sigmoid(logit));
        x.extend_from_slice(&[log_amount, hour, merchant_z, known]);
    }
    (x, y)
}

fn list(v: impl IntoIterator<Item = impl std::fmt::Debug>) -> String {
    let items: Vec<String> = v.into_iter().map(|x| format!("{x:?}")).collect();
    format!("[{}]", items.join(", "))
}

fn rows(x: &[f64]) -> String {
    list(x.chunks_exact(4).map(|r| RawList(list(r.iter().copied()))))
}

/// Debug-prints as its text (a pre-rendered JSON value).
struct RawList(String);

impl std::fmt::Debug for RawList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn metric_case(name: &str, scores: &[f64], labels: &[bool]) -> Result<String, String> {
    Ok(format!(
        "{{\"name\": {name:?}, \"scores\": {}, \"labels\": {}, \"auc\": {:?}, \"log_loss\": {:?}, \"accuracy\": {:?}}}",
        list(scores.iter().copied()),
        list(labels.iter().copied()),
        train::auc(scores, labels)?,
        train::log_loss(scores, labels)?,
        train::accuracy(scores, labels, 0.5)?,
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("QUIVER_ML_ONNX_OUT").ok())
        .ok_or("usage: export DIR (or QUIVER_ML_ONNX_OUT=DIR)")?;
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir)?;

    let (x, y) = data(3000, 20261122);
    let params = Params {
        epochs: 2000,
        l2: 1e-3,
        ..Params::default()
    };
    let trained = train::train(&x, 4, &y, &params)?;
    let model = &trained.model;
    let bytes = onnx::logistic_regression(model, 4)?;
    std::fs::write(dir.join("model.onnx"), &bytes)?;

    // Probe rows: typical, extreme and a zero row.
    let probe: Vec<f64> = vec![
        3.5, 12.0, 0.0, 1.0, //
        8.0, 2.0, 2.5, 0.0, //
        0.5, 23.0, -2.0, 1.0, //
        0.0, 0.0, 0.0, 0.0, //
        12.0, 3.0, 6.0, 0.0, //
        -4.0, 14.0, -5.0, 1.0, //
    ];
    let probe_p = model.predict(&probe)?;

    let p = model.predict(&x)?;
    let tied: Vec<f64> = p.iter().map(|v| (v * 10.0).round() / 10.0).collect();
    let extremes = [0.0, 1.0, 0.0, 1.0, 0.5, 1e-20, 1.0 - 1e-17, 0.3];
    let extreme_labels = [false, true, true, false, true, false, true, true];

    let mut json = String::from("{\n");
    writeln!(json, " \"features\": {},", list(FEATURES))?;
    writeln!(json, " \"input\": {:?},", onnx::INPUT)?;
    writeln!(json, " \"output\": {:?},", onnx::OUTPUT)?;
    writeln!(json, " \"ir_version\": {},", onnx::IR_VERSION)?;
    writeln!(json, " \"opset\": {},", onnx::OPSET)?;
    writeln!(
        json,
        " \"params\": {{\"seed\": {}, \"epochs\": {}, \"learning_rate\": {:?}, \"l2\": {:?}}},",
        params.seed, params.epochs, params.learning_rate, params.l2
    )?;
    writeln!(
        json,
        " \"weights\": {},",
        list(model.weights.iter().copied())
    )?;
    writeln!(json, " \"bias\": {:?},", model.bias)?;
    writeln!(json, " \"train_x\": {},", rows(&x))?;
    writeln!(json, " \"train_y\": {},", list(y.iter().copied()))?;
    writeln!(json, " \"train_auc\": {:?},", trained.train.auc)?;
    writeln!(json, " \"probe_x\": {},", rows(&probe))?;
    writeln!(json, " \"probe_p\": {},", list(probe_p.iter().copied()))?;
    let cases = [
        metric_case("train", &p, &y)?,
        metric_case("tied", &tied, &y)?,
        metric_case("extremes", &extremes, &extreme_labels)?,
    ];
    writeln!(json, " \"metrics\": [\n  {}\n ]", cases.join(",\n  "))?;
    json.push_str("}\n");
    std::fs::write(dir.join("check.json"), json)?;
    println!(
        "{}: {} bytes; weights {:?}, bias {:?}; train AUC {:.4}, log loss {:.4}",
        dir.join("model.onnx").display(),
        bytes.len(),
        model.weights,
        model.bias,
        trained.train.auc,
        trained.train.log_loss
    );
    Ok(())
}
