//! The wasi-nn path against the same backend called natively, in process (no HTTP).
//!
//! For each model and backend, per call (p50 and p99 over many iterations, each
//! timing one call of every path in turn):
//! - `native`: the backend's own run call on a prepared tensor;
//! - `host`: the wasi-nn backend traits as the host runs them for a guest's
//!   `compute` (one execution context, input checks, the executor, the outputs back
//!   as wasi-nn tensors), no guest;
//! - `run`: the wasi-nn path as a guest sees it — `nn-probe` timing, with the
//!   guest's monotonic clock, each `quiver_sdk::nn::Model::run_f32` (input tensor
//!   across, `compute`, output back into guest memory and read);
//! - `call`: a whole `fraud-score` invocation (a Wasm component) from its batch input
//!   to its batch output: columns to a tensor, `compute`, scores back.
//!
//! Models: the fraud model on one row and on 500 (a `quiver batch` chunk), and a
//! medium one. Needs the first-party functions built; `cargo bench -p quiver-host
//! --bench nn` (add `--features ort` with ORT_DYLIB_PATH set for ONNX Runtime, and
//! QUIVER_BENCH_GPU=1 for its GPU rows: scripts/gpu-run.sh). BENCHMARKS.md.

mod common;

use common::{columns, guest_nanos, interleaved, on_worker, took};

use quiver_host::bindings::{Batch, Column, Field};
use quiver_host::nn::{Batching, Executor, InferencePool, OnnxBackend};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tract_onnx::prelude::{tvec, IntoTValue as _, Tensor};
use wasmtime_wasi_nn::backend::NamedTensor;
use wasmtime_wasi_nn::wit::TensorType;

/// `rows` transactions' four features, row-major (the first is the single-row input).
fn features(rows: usize) -> Vec<f32> {
    (0..rows)
        .flat_map(|r| {
            let r = r as f32;
            [
                4.2 + r % 7.0 * 0.3,
                (3.0 + r) % 24.0,
                1.7 - r % 5.0 * 0.4,
                r % 2.0,
            ]
        })
        .collect()
}

struct Case {
    label: &'static str,
    path: &'static str,
    /// Rows per call (the batch dimension).
    rows: usize,
    iters: usize,
}

fn main() {
    let root = common::repo();
    let cases = [
        Case {
            label: "fraud (MLP 4-16-2)",
            path: "functions/fraud-score/model/fraud.onnx",
            rows: 1,
            iters: 20_000,
        },
        // A chunk of `quiver batch` (its default --chunk).
        Case {
            label: "fraud, 500 rows",
            path: "functions/fraud-score/model/fraud.onnx",
            rows: 500,
            iters: 2_000,
        },
        Case {
            label: "medium (4 x 1024^2)",
            path: "tests/fixtures/models/medium.onnx",
            rows: 1,
            iters: 300,
        },
    ];
    // (backend, execution target); `QUIVER_BENCH_GPU=1` adds ONNX Runtime on the GPU.
    let mut backends = vec![(OnnxBackend::Tract, "cpu")];
    if cfg!(feature = "ort") && std::env::var("ORT_DYLIB_PATH").is_ok() {
        backends.push((OnnxBackend::Ort, "cpu"));
        if std::env::var_os("QUIVER_BENCH_GPU").is_some() {
            backends.push((OnnxBackend::Ort, "gpu"));
        }
    }
    let (rt, _dir, runtime) = common::inference_runtimes();
    let pre = common::prepare_inference(&runtime, "bench-nn", common::wasm("fraud_score"));
    let probe = common::prepare_inference(&runtime, "bench-nn-probe", common::wasm("nn_probe"));
    let pool = InferencePool::new(1, 64).expect("pool");

    println!(
        "{:<22} {:<15} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>8} {:>8} {:>8}",
        "model",
        "backend",
        "native p50",
        "native p99",
        "host p50",
        "host p99",
        "run p50",
        "run p99",
        "call p50",
        "call p99",
        "host/n",
        "run/n",
        "call/n"
    );
    for case in &cases {
        let model_bytes = std::fs::read(root.join(case.path)).expect("model");
        let values = features(case.rows);
        let column = |c: usize| values.iter().skip(c).step_by(4).map(|v| f64::from(*v));
        // nn-probe takes the columns in order, whatever their names.
        let probe_input = Batch {
            fields: (0..4)
                .map(|c| Field {
                    name: format!("x{c}"),
                    values: Column::Float64(column(c).collect()),
                })
                .collect(),
        };
        // fraud-score's typed fields.
        let input = Batch {
            fields: vec![
                Field {
                    name: "log_amount".into(),
                    values: Column::Float64(column(0).collect()),
                },
                Field {
                    name: "hour_of_day".into(),
                    values: Column::Int64(column(1).map(|v| v as i64).collect()),
                },
                Field {
                    name: "merchant_z".into(),
                    values: Column::Float64(column(2).collect()),
                },
                Field {
                    name: "merchant_known".into(),
                    values: Column::Boolean(column(3).map(|v| v != 0.0).collect()),
                },
            ],
        };
        for &(backend, target) in &backends {
            let model = match backend.load(&model_bytes, target) {
                Ok(m) => Arc::new(m),
                // Asked for with QUIVER_BENCH_GPU; say why there is no row.
                Err(e) if target == "gpu" => {
                    println!("{:<22} gpu: {e}", case.label);
                    continue;
                }
                Err(e) => panic!("load {}: {e}", case.path),
            };
            let x = Tensor::from_shape(&[case.rows, 4], &values).expect("tensor");

            let exec = Arc::new(Executor::new(
                model.clone(),
                Some(pool.clone()),
                Batching::OFF,
            ));
            let graph = quiver_host::nn::graph(exec);
            let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let t =
                wasmtime_wasi_nn::Tensor::new(vec![case.rows as u32, 4], TensorType::Fp32, data);
            let inv = common::invocation_with_model(
                "bench/fraud-score@1.0.0",
                64 << 20,
                Duration::from_secs(10),
                "fraud",
                &model,
                &pool,
            );
            let mut probe_inv = common::invocation_with_model(
                "bench/nn-probe@1.0.0",
                64 << 20,
                Duration::from_secs(60),
                "model",
                &model,
                &pool,
            );
            let config = [
                ("input".to_string(), model.inputs[0].name.clone()),
                ("calls".to_string(), "1".to_string()),
            ];
            probe_inv.config = Arc::new(config.into_iter().collect());
            // Interleaved call by call, in a task on a runtime worker, as the server
            // runs a request.
            let (runtime, pre, inv, input) =
                (runtime.clone(), pre.clone(), inv.clone(), input.clone());
            let (probe, probe_inv, probe_input) =
                (probe.clone(), probe_inv.clone(), probe_input.clone());
            let (native_model, iters) = (model.clone(), case.iters);
            let input_name = model.inputs[0].name.clone();
            let samples: Vec<[Duration; 4]> = on_worker(&rt, async move {
                // As the SDK drives it: one context, `compute` with the named
                // input, the outputs back as wasi-nn tensors.
                // (Behind a lock only so that the timed calls can share it.)
                let ctx = std::sync::Mutex::new(graph.init_execution_context().expect("ctx"));
                let ctx = &ctx;
                let (runtime, native_model, x, t, input_name) =
                    (&runtime, &native_model, &x, &t, &input_name);
                let (pre, inv, input) = (&pre, &inv, &input);
                let (probe, probe_inv, probe_input) = (&probe, &probe_inv, &probe_input);
                interleaved(iters, move |path| {
                    Box::pin(async move {
                        let started = Instant::now();
                        match path {
                            0 => {
                                let out = native_model.run(tvec![x.clone().into_tvalue()]);
                                took(started, out.expect("run"))
                            }
                            1 => {
                                let named = vec![NamedTensor {
                                    name: input_name.clone(),
                                    tensor: t.clone(),
                                }];
                                let mut ctx = ctx.lock().expect("one path at a time");
                                let started = Instant::now();
                                took(started, ctx.compute_with_io(named).expect("compute"))
                            }
                            2 => {
                                let out = runtime
                                    .infer(probe, probe_inv, probe_input)
                                    .await
                                    .expect("nn-probe");
                                guest_nanos(&out, "nanos")[0]
                            }
                            _ => {
                                let out = runtime.infer(pre, inv, input).await;
                                took(started, out.expect("infer"))
                            }
                        }
                    })
                })
                .await
            });
            let [native, host, run, guest] = columns(&samples);
            let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
            println!(
                "{:<22} {:<15} {:>11.2?} {:>11.2?} {:>11.2?} {:>11.2?} {:>11.2?} {:>11.2?} {:>11.2?} {:>11.2?} {:>7.2}x {:>7.2}x {:>7.2}x",
                case.label,
                format!("{}/{target}", model.backend()),
                native.0,
                native.1,
                host.0,
                host.1,
                run.0,
                run.1,
                guest.0,
                guest.1,
                ratio(host.0, native.0),
                ratio(run.0, native.0),
                ratio(guest.0, native.0)
            );
        }
    }
}
