//! Realistic models, the guest path against the backend called natively, in
//! process (no HTTP): the ResNet-18-shaped vision model (1×3×224×224 f32) and the
//! transformer encoder (128 token ids + mask), made by
//! `tests/models/make_bench_models.py` into `QUIVER_BENCH_MODELS`
//! (`scripts/bench-models.sh` makes them and runs this).
//!
//! For each model and backend, per call, interleaved call by call:
//! - `native`: the backend's own run call on prepared tensors;
//! - `host`: the wasi-nn backend traits as the host runs them for a guest's
//!   `compute` (one execution context, input checks, the executor, outputs back);
//! - `call`: a whole call of the first-party `model-serve` function (the one
//!   `quiver models push --serve` deploys): its tensor batch into the sandbox,
//!   views of it to wasi-nn, `compute`, the outputs back into a tensor batch.
//!   What a zero-code served model costs, minus HTTP and OIP decoding.

mod common;

use common::{columns, interleaved_after, on_worker, took};

use quiver_host::bindings::{Batch, Column, ElementType, Field};
use quiver_host::nn::{Batching, Executor, InferencePool, OnnxBackend};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tract_onnx::prelude::{IntoTValue as _, TVec, Tensor};
use wasmtime_wasi_nn::backend::NamedTensor;
use wasmtime_wasi_nn::wit::TensorType;

/// One input of `inputs.json` three ways: for the backend, for wasi-nn, for a batch.
struct Input {
    name: String,
    native: Tensor,
    nn: wasmtime_wasi_nn::Tensor,
    field: Field,
}

fn input(t: &Value) -> Input {
    let name = t["name"].as_str().expect("name").to_string();
    let shape: Vec<usize> = t["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect();
    let data = t["data"].as_array().expect("data");
    let (native, bytes, nn_type, element) = match t["datatype"].as_str() {
        Some("FP32") => {
            let v: Vec<f32> = data
                .iter()
                .map(|x| x.as_f64().expect("f32") as f32)
                .collect();
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            (
                Tensor::from_shape(&shape, &v).expect("tensor"),
                bytes,
                TensorType::Fp32,
                ElementType::Float32,
            )
        }
        Some("INT64") => {
            let v: Vec<i64> = data.iter().map(|x| x.as_i64().expect("i64")).collect();
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            (
                Tensor::from_shape(&shape, &v).expect("tensor"),
                bytes,
                TensorType::I64,
                ElementType::Int64,
            )
        }
        other => panic!("{name}: datatype {other:?}"),
    };
    let dims: Vec<u32> = shape.iter().map(|d| *d as u32).collect();
    Input {
        nn: wasmtime_wasi_nn::Tensor::new(dims.clone(), nn_type, bytes.clone()),
        field: Field {
            name: name.clone(),
            values: Column::Tensor(quiver_host::bindings::Tensor {
                shape: dims,
                element,
                data: bytes,
            }),
        },
        native,
        name,
    }
}

fn main() {
    let dir = std::path::PathBuf::from(
        std::env::var_os("QUIVER_BENCH_MODELS")
            .expect("QUIVER_BENCH_MODELS: a directory made by tests/models/make_bench_models.py"),
    );
    let iters: usize = std::env::var("QUIVER_BENCH_ITERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40);
    let inputs: Value =
        serde_json::from_slice(&std::fs::read(dir.join("inputs.json")).expect("inputs.json"))
            .expect("inputs.json");
    let mut backends = vec![OnnxBackend::Tract];
    if cfg!(feature = "ort") && std::env::var("ORT_DYLIB_PATH").is_ok() {
        backends.push(OnnxBackend::Ort);
    }
    let (rt, _dir, runtime) = common::inference_runtimes();
    let bytes = std::fs::read(common::repo().join("host/first-party/model-serve.wasm"))
        .expect("host/first-party/model-serve.wasm");
    let pre = common::prepare_inference(&runtime, "bench-model-serve", bytes);
    let pool = InferencePool::new(1, 64).expect("pool");
    println!(
        "{:<10} {:<7} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>8} {:>8} {:>10} {:>10}",
        "model",
        "backend",
        "native p50",
        "native p99",
        "host p50",
        "host p99",
        "call p50",
        "call p99",
        "host/n",
        "call/n",
        "host-n",
        "call-n"
    );
    for name in ["resnet18", "encoder"] {
        let model_bytes = std::fs::read(dir.join(format!("{name}.onnx"))).expect("model");
        let ins: Vec<Input> = inputs[name]
            .as_array()
            .expect("inputs")
            .iter()
            .map(input)
            .collect();
        let batch = Batch {
            fields: ins.iter().map(|i| i.field.clone()).collect(),
        };
        for &backend in &backends {
            let model = Arc::new(
                backend
                    .load(&model_bytes, "cpu")
                    .unwrap_or_else(|e| panic!("load {name}: {e}")),
            );
            // The backend's order of inputs.
            let native: TVec<Tensor> = model
                .inputs
                .iter()
                .map(|spec| {
                    ins.iter()
                        .find(|i| i.name == spec.name)
                        .expect("an input per model input")
                        .native
                        .clone()
                })
                .collect();
            let named: Vec<(String, wasmtime_wasi_nn::Tensor)> =
                ins.iter().map(|i| (i.name.clone(), i.nn.clone())).collect();
            let exec = Arc::new(Executor::new(
                model.clone(),
                Some(pool.clone()),
                Batching::OFF,
            ));
            let graph = quiver_host::nn::graph(exec);
            let inv = common::invocation_with_model(
                "bench/model-serve@1.0.0",
                256 << 20,
                Duration::from_secs(30),
                "model",
                &model,
                &pool,
            );
            let (runtime, pre, batch) = (runtime.clone(), pre.clone(), batch.clone());
            let native_model = model.clone();
            let samples: Vec<[Duration; 3]> = on_worker(&rt, async move {
                let ctx = std::sync::Mutex::new(graph.init_execution_context().expect("ctx"));
                let ctx = &ctx;
                let (runtime, pre, inv, batch) = (&runtime, &pre, &inv, &batch);
                let (native_model, native, named) = (&native_model, &native, &named);
                interleaved_after(3, iters, move |path| {
                    Box::pin(async move {
                        let started = Instant::now();
                        match path {
                            0 => {
                                let tv = native.iter().map(|t| t.clone().into_tvalue()).collect();
                                let started = Instant::now();
                                took(started, native_model.run(tv).expect("run"))
                            }
                            1 => {
                                let mut ctx = ctx.lock().expect("one path at a time");
                                let named = named
                                    .iter()
                                    .map(|(name, tensor)| NamedTensor {
                                        name: name.clone(),
                                        tensor: tensor.clone(),
                                    })
                                    .collect();
                                let started = Instant::now();
                                took(started, ctx.compute_with_io(named).expect("compute"))
                            }
                            _ => {
                                let out = runtime.infer(pre, inv, batch).await;
                                took(started, out.expect("model-serve"))
                            }
                        }
                    })
                })
                .await
            });
            let [native, host, call] = columns(&samples);
            let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
            let over = |a: Duration, b: Duration| {
                format!("{:.0}µs", (a.as_secs_f64() - b.as_secs_f64()) * 1e6)
            };
            println!(
                "{:<10} {:<7} {:>11.2?} {:>11.2?} {:>11.2?} {:>11.2?} {:>11.2?} {:>11.2?} {:>7.3}x {:>7.3}x {:>10} {:>10}",
                name,
                model.backend(),
                native.0,
                native.1,
                host.0,
                host.1,
                call.0,
                call.1,
                ratio(host.0, native.0),
                ratio(call.0, native.0),
                over(host.0, native.0),
                over(call.0, native.0),
            );
        }
    }
}
