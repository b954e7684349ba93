//! The wasi-nn path against the same backend called natively, in process (no HTTP).
//!
//! For each model and backend, per call (p50 and p99 over many calls, best of
//! three interleaved rounds):
//! - `native`: the backend's own run call on a prepared tensor;
//! - `host`: the wasi-nn backend traits as the host runs them (execution context,
//!   input checks, the inference pool hop), no guest;
//! - `guest`: `fraud-score` (a Wasm component) from its batch input to its batch
//!   output: columns to a tensor, `load-by-name`, `compute`, scores back.
//!
//! Needs the first-party functions built; `cargo bench -p quiver-host --bench nn`
//! (add `--features ort` with ORT_DYLIB_PATH set for ONNX Runtime). BENCHMARKS.md.

mod common;

use common::{percentiles, time_async};

use quiver_host::bindings::{Batch, Column, Field};
use quiver_host::manifest::ResolvedLimits;
use quiver_host::nn::{Batching, BoundModel, BoundModels, Executor, InferencePool, OnnxBackend};
use quiver_host::runtime::{Allocator, Invocation, Prepared, Runtime, MAX_IDLE};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tract_onnx::prelude::{tvec, IntoTValue as _, Tensor};
use wasmtime_wasi_nn::backend::Id;
use wasmtime_wasi_nn::wit::TensorType;

fn time(iters: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..iters.min(200) {
        f();
    }
    let samples = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    percentiles(samples)
}

const ROUNDS: usize = 3;

fn row() -> Vec<f32> {
    vec![4.2, 3.0, 1.7, 0.0]
}

struct Case {
    label: &'static str,
    path: &'static str,
    iters: usize,
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cases = [
        Case {
            label: "fraud (MLP 4-16-2)",
            path: "functions/fraud-score/model/fraud.onnx",
            iters: 20_000,
        },
        Case {
            label: "medium (4 x 1024^2)",
            path: "tests/fixtures/models/medium.onnx",
            iters: 300,
        },
    ];
    let mut backends = vec![OnnxBackend::Tract];
    if cfg!(feature = "ort") && std::env::var("ORT_DYLIB_PATH").is_ok() {
        backends.push(OnnxBackend::Ort);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = Runtime::new(dir.path(), Allocator::Pooling).expect("runtime");
    let bytes = common::wasm("fraud_score");
    let component = runtime
        .component("bench-nn", || Ok(bytes))
        .expect("compile");
    let Prepared::Inference(pre) = runtime.prepare("inference", &component).expect("prepare")
    else {
        panic!("fraud-score is an inference function");
    };
    let pool = InferencePool::new(1, 64).expect("pool");
    let input = Batch {
        fields: vec![
            Field {
                name: "log_amount".into(),
                values: Column::Float64(vec![4.2]),
            },
            Field {
                name: "hour_of_day".into(),
                values: Column::Int64(vec![3]),
            },
            Field {
                name: "merchant_z".into(),
                values: Column::Float64(vec![1.7]),
            },
            Field {
                name: "merchant_known".into(),
                values: Column::Boolean(vec![false]),
            },
        ],
    };

    println!(
        "{:<22} {:<7} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>8} {:>8}",
        "model",
        "backend",
        "native p50",
        "native p99",
        "host p50",
        "host p99",
        "guest p50",
        "guest p99",
        "host/n",
        "guest/n"
    );
    for case in &cases {
        let model_bytes = std::fs::read(root.join(case.path)).expect("model");
        for backend in &backends {
            let model = Arc::new(backend.load(&model_bytes, "cpu").expect("load"));
            let x = Tensor::from_shape(&[1, 4], &row()).expect("tensor");

            let exec = Arc::new(Executor::new(
                model.clone(),
                Some(pool.clone()),
                Batching::OFF,
            ));
            let graph = quiver_host::nn::graph(exec);
            let data: Vec<u8> = row().iter().flat_map(|v| v.to_le_bytes()).collect();
            let t = wasmtime_wasi_nn::Tensor::new(vec![1, 4], TensorType::Fp32, data);
            let info = BoundModel {
                alias: "fraud".into(),
                name: "bench-model".into(),
                version: "1.0.0".into(),
                digest: "sha256:bench".into(),
                inputs: model.inputs.clone(),
                outputs: model.outputs.clone(),
            };
            let mut inv = Invocation::new(
                ResolvedLimits {
                    memory_bytes: 64 << 20,
                    timeout: Duration::from_secs(10),
                },
                Default::default(),
                "bench/fraud-score@1.0.0",
                MAX_IDLE,
            );
            inv.models = Some(Arc::new(BoundModels::new(
                Batching::OFF,
                &pool,
                vec![(info, model.clone())],
            )));
            // This VM's speed drifts: the three paths are measured in turn, ROUNDS
            // times, and each keeps its best round (lowest p50).
            let best =
                |a: (Duration, Duration), b: (Duration, Duration)| if b.0 < a.0 { b } else { a };
            let slowest = (Duration::MAX, Duration::MAX);
            let (mut native, mut host, mut guest) = (slowest, slowest, slowest);
            for _ in 0..ROUNDS {
                native = best(
                    native,
                    time(case.iters, || {
                        let out = model.run(tvec![x.clone().into_tvalue()]).expect("run");
                        std::hint::black_box(out);
                    }),
                );
                let (graph, t, iters) = (graph.clone(), t.clone(), case.iters);
                host = best(
                    host,
                    rt.block_on(async {
                        tokio::task::spawn(async move {
                            time(iters, || {
                                let mut ctx = graph.init_execution_context().expect("ctx");
                                ctx.set_input(Id::Index(0), &t).expect("input");
                                ctx.compute().expect("compute");
                                std::hint::black_box(ctx.get_output(Id::Index(0)).expect("output"));
                            })
                        })
                        .await
                        .expect("join")
                    }),
                );
                guest = best(
                    guest,
                    rt.block_on(time_async(case.iters, || async {
                        runtime.infer(&pre, &inv, &input).await.expect("infer")
                    })),
                );
            }
            let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
            println!(
                "{:<22} {:<7} {:>11.2?} {:>11.2?} {:>11.2?} {:>11.2?} {:>11.2?} {:>11.2?} {:>7.2}x {:>7.2}x",
                case.label,
                model.backend(),
                native.0,
                native.1,
                host.0,
                host.1,
                guest.0,
                guest.1,
                ratio(host.0, native.0),
                ratio(guest.0, native.0)
            );
        }
    }
}
