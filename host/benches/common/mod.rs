//! Shared by the benches: the first-party components, as built for wasm32-wasip2, and
//! per-call latencies of paths timed in turn.
#![allow(dead_code)] // each bench uses its own part of this (invoke.rs only `wasm`)

use quiver_host::bindings::{Batch, Column};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

/// Calls each path makes before it is timed.
pub const WARM_UP: usize = 200;

/// The repository: cargo sets CARGO_MANIFEST_DIR when it runs a bench; a bench binary
/// copied elsewhere (scripts/gpu-run.sh) is given it.
pub fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("..")
}

/// `<target>/wasm32-wasip2/release/<name>.wasm` (build the functions first).
pub fn wasm(name: &str) -> Vec<u8> {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target"));
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (build the functions first)", path.display()))
}

/// p50 and p99 of a set of per-call latencies.
pub fn percentiles(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    (d[d.len() / 2], d[d.len() * 99 / 100])
}

/// p50 and p99 of each path, from samples that time one call of every path.
pub fn columns<const N: usize>(samples: &[[Duration; N]]) -> [(Duration, Duration); N] {
    std::array::from_fn(|i| percentiles(samples.iter().map(|s| s[i]).collect()))
}

/// Latencies a guest measured itself, as nanoseconds in the float column `name`.
pub fn guest_nanos(out: &Batch, name: &str) -> Vec<Duration> {
    match out
        .fields
        .iter()
        .find(|f| f.name == name)
        .map(|f| &f.values)
    {
        Some(Column::Float64(ns)) => ns.iter().map(|n| Duration::from_nanos(*n as u64)).collect(),
        _ => panic!("the probe returns its latencies in `{name}`: {out:?}"),
    }
}

/// Runs `fut` as a task on one of the runtime's workers (as the server runs a
/// request) and waits for it.
pub fn on_worker<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl Future<Output = T> + Send + 'static,
) -> T {
    rt.block_on(async { tokio::spawn(fut).await.expect("bench task") })
}

/// The time since `started`, read before `out` is dropped (kept from the optimizer).
pub fn took<T>(started: std::time::Instant, out: T) -> Duration {
    let took = started.elapsed();
    std::hint::black_box(out);
    took
}

/// One timed call of one path: its latency, as the path measures it.
pub type Timed<'a> = Pin<Box<dyn Future<Output = Duration> + Send + 'a>>;

/// `iters` samples (after [`WARM_UP`]) of `N` paths timed call by call: each
/// iteration runs `call(path)` once for every path. This VM's speed drifts by tens of
/// percent within seconds, so paths measured in separate runs are not comparable;
/// interleaved, they see the same machine. The order rotates, so no path always runs
/// first (on caches the previous call left cold) or last.
pub async fn interleaved<'env, const N: usize>(
    iters: usize,
    call: impl FnMut(usize) -> Timed<'env>,
) -> Vec<[Duration; N]> {
    interleaved_after(WARM_UP, iters, call).await
}

/// [`interleaved`] after `warm_up` untimed iterations (fewer than [`WARM_UP`] for
/// models whose one call takes tens of milliseconds).
pub async fn interleaved_after<'env, const N: usize>(
    warm_up: usize,
    iters: usize,
    mut call: impl FnMut(usize) -> Timed<'env>,
) -> Vec<[Duration; N]> {
    let mut samples = Vec::with_capacity(iters);
    for i in 0..warm_up + iters {
        let mut sample = [Duration::ZERO; N];
        for k in 0..N {
            let path = (i + k) % N;
            sample[path] = call(path).await;
        }
        if i >= warm_up {
            samples.push(sample);
        }
    }
    samples
}

/// What the inference benches run on: a tokio runtime of two workers (as the
/// server's), and a wasmtime runtime in a scratch dir (removed when the returned
/// `TempDir` drops).
pub fn inference_runtimes() -> (
    tokio::runtime::Runtime,
    tempfile::TempDir,
    std::sync::Arc<quiver_host::runtime::Runtime>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime =
        quiver_host::runtime::Runtime::new(dir.path(), quiver_host::runtime::Allocator::Pooling)
            .expect("runtime");
    (rt, dir, runtime)
}

/// An inference function's component, compiled under `key` and prepared.
pub fn prepare_inference(
    runtime: &quiver_host::runtime::Runtime,
    key: &str,
    bytes: Vec<u8>,
) -> quiver_host::bindings::inference::InferencePre<quiver_host::runtime::HostState> {
    let component = runtime.component(key, || Ok(bytes)).expect("compile");
    match runtime.prepare("inference", &component).expect("prepare") {
        quiver_host::runtime::Prepared::Inference(pre) => pre,
        _ => panic!("{key} is not an inference function"),
    }
}

/// An invocation of `function` (`bench/NAME@VERSION`) with `model` bound as
/// `alias`, batching off, on `pool`.
pub fn invocation_with_model(
    function: &str,
    memory_bytes: usize,
    timeout: Duration,
    alias: &str,
    model: &std::sync::Arc<quiver_host::nn::OnnxModel>,
    pool: &std::sync::Arc<quiver_host::nn::InferencePool>,
) -> quiver_host::runtime::Invocation {
    use quiver_host::nn::{Batching, BoundModel, BoundModels};
    let info = BoundModel {
        alias: alias.into(),
        name: "bench-model".into(),
        version: "1.0.0".into(),
        digest: "sha256:bench".into(),
        inputs: model.inputs.clone(),
        outputs: model.outputs.clone(),
    };
    let limits = quiver_host::manifest::ResolvedLimits {
        memory_bytes,
        timeout,
    };
    let mut inv =
        quiver_host::runtime::Invocation::new(limits, function, quiver_host::runtime::MAX_IDLE);
    inv.models = Some(std::sync::Arc::new(BoundModels::new(
        "bench",
        Batching::OFF,
        pool,
        64,
        vec![(info, model.clone())],
    )));
    inv
}
