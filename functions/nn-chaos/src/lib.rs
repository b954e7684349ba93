//! An inference function that misbehaves on purpose through `wasi-nn`, so the tests
//! can prove the host survives hostile guests. The first row's text field `mode`
//! picks (no `mode` field means `echo`):
//!
//! - `tensors`: creates 4 MiB fp32 tensors (dimensions `[1048576]`) and never drops
//!   them, up to 100 000, until the host stops it with a memory-limit error; if the
//!   loop ends, one row with int64 `made`.
//! - `dims`: computes on the model bound as `model` with input `X`, a tensor whose
//!   dimensions are `[u32::MAX, u32::MAX]` (fp32) but which holds 16 bytes; returns
//!   the wasi-nn error as `invalid-input` (`compute: <code>: <message>`).
//! - `contexts`: loads `model` once, then creates execution contexts and never drops
//!   them, up to 10 000 000; the first error comes back as `limit-exceeded`
//!   (`init-execution-context: <code>: <message>`); if the loop ends, one row with
//!   int64 `made`.
//! - `outputs`: computes on `model` again and again with a `[65536, 4]` input and
//!   never drops the outputs (512 KiB each), up to 1000 times, until the host stops
//!   it with a memory-limit error; if the loop ends, one row with int64 `made`.
//! - `echo` (and anything else): a normal call, the model on `log_amount`,
//!   `hour_of_day`, `merchant_z`, `merchant_known` (as `fraud-score` does); out,
//!   `p_fraud` (f64) per row.
use quiver_sdk::inference_world::wasi::nn::errors::Error as NnError;
use quiver_sdk::inference_world::wasi::nn::graph::load_by_name;
use quiver_sdk::inference_world::wasi::nn::tensor::{Tensor, TensorType};
use quiver_sdk::nn::Model;
use quiver_sdk::{Batch, Error};

const FEATURES: [&str; 4] = ["log_amount", "hour_of_day", "merchant_z", "merchant_known"];

/// The `[models]` alias every mode uses.
const MODEL: &str = "model";

fn nn_message(what: &str, e: &NnError) -> String {
    format!("{what}: {:?}: {}", e.code(), e.data())
}

/// Tensors of 4 MiB, never dropped: the host keeps their data, the guest does not.
fn tensors() -> Result<Batch, Error> {
    const VALUES: u32 = 1024 * 1024;
    let data = vec![0u8; VALUES as usize * 4];
    let mut made: i64 = 0;
    while made < 100_000 {
        std::mem::forget(Tensor::new(&[VALUES], TensorType::Fp32, &data));
        made += 1;
    }
    Batch::new().with_i64("made", vec![made])
}

/// Dimensions that claim 2^64 values, with 16 bytes behind them.
fn dims() -> Result<Batch, Error> {
    let graph = load_by_name(MODEL)
        .map_err(|e| Error::Unavailable(nn_message(&format!("loading model `{MODEL}`"), &e)))?;
    let context = graph
        .init_execution_context()
        .map_err(|e| Error::Unavailable(nn_message("init-execution-context", &e)))?;
    let tensor = Tensor::new(&[u32::MAX, u32::MAX], TensorType::Fp32, &[0u8; 16]);
    match context.compute(vec![("X".to_string(), tensor)]) {
        Err(e) => Err(Error::InvalidInput(nn_message("compute", &e))),
        Ok(outputs) => Err(Error::Internal(format!(
            "compute accepted a [{}, {}] tensor of 16 bytes ({} outputs)",
            u32::MAX,
            u32::MAX,
            outputs.len()
        ))),
    }
}

/// Execution contexts, never dropped.
fn contexts() -> Result<Batch, Error> {
    let graph = load_by_name(MODEL)
        .map_err(|e| Error::Unavailable(nn_message(&format!("loading model `{MODEL}`"), &e)))?;
    let mut made: i64 = 0;
    while made < 10_000_000 {
        let context = graph
            .init_execution_context()
            .map_err(|e| Error::LimitExceeded(nn_message("init-execution-context", &e)))?;
        std::mem::forget(context);
        made += 1;
    }
    Batch::new().with_i64("made", vec![made])
}

/// Outputs of many computes, never dropped: the host holds them in the table.
fn outputs() -> Result<Batch, Error> {
    const ROWS: u32 = 65536;
    let graph = load_by_name(MODEL)
        .map_err(|e| Error::Unavailable(nn_message(&format!("loading model `{MODEL}`"), &e)))?;
    let context = graph
        .init_execution_context()
        .map_err(|e| Error::Unavailable(nn_message("init-execution-context", &e)))?;
    let data = vec![0u8; ROWS as usize * 4 * 4];
    let mut made: i64 = 0;
    while made < 1000 {
        let tensor = Tensor::new(&[ROWS, 4], TensorType::Fp32, &data);
        let out = context
            .compute(vec![("X".to_string(), tensor)])
            .map_err(|e| Error::Internal(nn_message("compute", &e)))?;
        std::mem::forget(out);
        made += 1;
    }
    Batch::new().with_i64("made", vec![made])
}

/// A normal call: P(fraud) per row, as `fraud-score` computes it.
fn echo(input: &Batch) -> Result<Batch, Error> {
    let x = input.f32_rows(&FEATURES)?;
    let rows = input.num_rows();
    let p_fraud = match rows {
        0 => Vec::new(),
        _ => {
            let model = Model::shared(MODEL)?;
            let (dims, probs) = model.run_f32("X", &[rows as u32, FEATURES.len() as u32], &x)?;
            if dims != [rows as u32, 2] {
                return Err(Error::Internal(format!(
                    "the model returned shape {dims:?}, expected [{rows}, 2]"
                )));
            }
            probs.chunks_exact(2).map(|p| f64::from(p[1])).collect()
        }
    };
    Batch::new().with_f64("p_fraud", p_fraud)
}

fn nn_chaos(input: Batch) -> Result<Batch, Error> {
    let mode = match input.column("mode") {
        Ok(_) => input.texts("mode")?.first().cloned().unwrap_or_default(),
        Err(_) => String::new(),
    };
    match mode.as_str() {
        "tensors" => tensors(),
        "dims" => dims(),
        "contexts" => contexts(),
        "outputs" => outputs(),
        _ => echo(&input),
    }
}

quiver_sdk::inference!(nn_chaos);
