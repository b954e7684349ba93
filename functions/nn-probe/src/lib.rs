//! Runs the model bound as `model` from inside a guest, `[config] calls` times on
//! the same input, timing each run with the guest's monotonic clock: what the wasi-nn
//! path costs a function (input tensor across, `compute`, output back and read),
//! without the cost of the function's own batch in and out. For operators sizing a
//! model, and for the inference benchmark.
//!
//! In: numeric columns, one model input row per batch row, columns in order (int64
//! and boolean columns are widened), fed as one f32 tensor `[rows, columns]` named
//! `[config] input` (default `X`).
//! Out, one row per run: `run` (0-based), `nanos` (that run's latency), `first`
//! (the first value of the model's first output, the same on every run).
use quiver_sdk::nn::Model;
use quiver_sdk::{Batch, Error};

/// The most runs one call makes (its output is a row per run).
const MAX_CALLS: usize = 100_000;

fn probe(input: Batch) -> Result<Batch, Error> {
    let rows = input.num_rows();
    if rows == 0 || input.fields.is_empty() {
        return Err(Error::InvalidInput(
            "send at least one row of numeric columns".into(),
        ));
    }
    let names: Vec<&str> = input.fields.iter().map(|f| f.name.as_str()).collect();
    let x = input.f32_rows(&names)?;
    let name = quiver_sdk::config("input").unwrap_or_else(|| "X".into());
    let calls = match quiver_sdk::config("calls") {
        None => 1,
        Some(c) => c
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_CALLS).contains(n))
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "config `calls` = `{c}`: a count from 1 to {MAX_CALLS}"
                ))
            })?,
    };
    let dims = [rows as u32, names.len() as u32];
    let model = Model::shared("model")?;
    let (mut nanos, mut first) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for _ in 0..calls {
        let start = std::time::Instant::now();
        let (_, out) = model.run_f32(&name, &dims, &x)?;
        nanos.push(start.elapsed().as_nanos() as f64);
        first.push(out.first().map_or(f64::NAN, |v| f64::from(*v)));
    }
    Batch::new()
        .with_i64("run", (0..calls as i64).collect())?
        .with_f64("nanos", nanos)?
        .with_f64("first", first)
}

quiver_sdk::inference!(probe);
