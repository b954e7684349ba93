//! wasi-nn backends. `wasmtime-wasi-nn` provides the host side of `wasi:nn` and
//! the backend traits; Quiver plugs in its own backends through them. Today: ONNX on
//! tract (pure Rust, CPU, builds offline, always on).
//!
//! A model is parsed and optimized once (`OnnxModel::load`) and shared by every
//! execution context made from it. Every tensor type a guest can send is either
//! handled or rejected with a `BackendError` — never a panic — and a request for an
//! execution target this backend cannot serve (`gpu`, `tpu`) is an error, never a
//! silent fall back to the CPU.

pub mod models;
#[cfg(feature = "ort")]
pub mod ort;
pub mod pool;

pub use models::{BoundModel, BoundModels, ModelCache};
pub use pool::{set_call_deadline, Batching, Executor, InferencePool};

use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid as _;
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendFromDir, BackendGraph, BackendInner, Id,
    NamedTensor,
};
use wasmtime_wasi_nn::wit::{ExecutionTarget, GraphEncoding, TensorType};
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

/// One input or output of a model, as read from the model itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TensorSpec {
    pub name: String,
    /// KServe v2 names: FP32, FP64, INT64, INT32, UINT8, BOOL...
    pub datatype: String,
    /// `-1` where the dimension is dynamic (the batch).
    pub shape: Vec<i64>,
}

/// A parsed, optimized ONNX model, ready to run on tract.
pub struct OnnxModel {
    plan: Plan,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// What runs a model: tract (always there), or ONNX Runtime (feature `ort`).
enum Plan {
    Tract(Arc<TypedRunnableModel>),
    #[cfg(feature = "ort")]
    Ort(ort::OrtPlan),
}

/// The ONNX backends this build has.
#[cfg(feature = "ort")]
pub const COMPILED_BACKENDS: &[&str] = &["tract", "ort"];
#[cfg(not(feature = "ort"))]
pub const COMPILED_BACKENDS: &[&str] = &["tract"];

/// Which library runs `cpu` models (`gpu` ones always need ONNX Runtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnnxBackend {
    /// tract: pure Rust, built in.
    Tract,
    /// ONNX Runtime, loaded from `ORT_DYLIB_PATH` (a build with `--features ort`).
    Ort,
}

impl OnnxBackend {
    /// Check at start that this backend can run here.
    pub fn check(self) -> anyhow::Result<()> {
        match self {
            OnnxBackend::Tract => Ok(()),
            #[cfg(feature = "ort")]
            OnnxBackend::Ort => ort::init(),
            #[cfg(not(feature = "ort"))]
            OnnxBackend::Ort => {
                anyhow::bail!("this quiver was built without ONNX Runtime (cargo feature `ort`)")
            }
        }
    }

    /// Parse and prepare `bytes` for `target` (`cpu` or `gpu`).
    pub fn load(self, bytes: &[u8], target: &str) -> anyhow::Result<OnnxModel> {
        match (self, target) {
            (OnnxBackend::Tract, "cpu") => OnnxModel::load(bytes),
            #[cfg(feature = "ort")]
            (OnnxBackend::Ort, "cpu") => ort::load(bytes, ort::Device::Cpu),
            #[cfg(feature = "ort")]
            (_, "gpu") => ort::load(bytes, ort::Device::Gpu),
            #[cfg(not(feature = "ort"))]
            (_, "gpu") => anyhow::bail!(
                "execution target gpu is not available on this host: this quiver was built without ONNX Runtime (cargo feature `ort`), and tract runs on the CPU only"
            ),
            (_, other) => anyhow::bail!("unknown execution target `{other}`"),
        }
    }
}

fn v2_datatype(dt: DatumType) -> &'static str {
    match dt {
        DatumType::F32 => "FP32",
        DatumType::F64 => "FP64",
        DatumType::F16 => "FP16",
        DatumType::I64 => "INT64",
        DatumType::I32 => "INT32",
        DatumType::I16 => "INT16",
        DatumType::I8 => "INT8",
        DatumType::U8 => "UINT8",
        DatumType::U16 => "UINT16",
        DatumType::U32 => "UINT32",
        DatumType::U64 => "UINT64",
        DatumType::Bool => "BOOL",
        DatumType::String => "BYTES",
        _ => "UNKNOWN",
    }
}

fn spec(name: &str, fact: &TypedFact) -> TensorSpec {
    TensorSpec {
        name: name.to_string(),
        datatype: v2_datatype(fact.datum_type).to_string(),
        shape: fact
            .shape
            .iter()
            .map(|d| d.to_i64().unwrap_or(-1))
            .collect(),
    }
}

impl OnnxModel {
    /// Parse and optimize. The first dimension of an input whose size the model
    /// leaves open becomes the batch symbol `N`.
    pub fn load(bytes: &[u8]) -> anyhow::Result<OnnxModel> {
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(bytes))
            .map_err(|e| anyhow::anyhow!("not a loadable ONNX model: {e}"))?;
        let batch = model.symbols.sym("N");
        for ix in 0..model.inputs.len() {
            let fact = model.input_fact(ix)?.clone();
            let dt = fact
                .datum_type
                .concretize()
                .ok_or_else(|| anyhow::anyhow!("input {ix} has no element type"))?;
            let rank = fact
                .shape
                .rank()
                .concretize()
                .ok_or_else(|| anyhow::anyhow!("input {ix} has no fixed rank"))?;
            let dims: TVec<TDim> = (0..rank as usize)
                .map(|d| {
                    fact.shape
                        .dim(d)
                        .and_then(|f| f.concretize())
                        .unwrap_or_else(|| batch.clone().into())
                })
                .collect();
            model.set_input_fact(ix, InferenceFact::dt_shape(dt, dims))?;
        }
        // Names as the ONNX graph declares them (optimization renames nodes).
        let name_of = |o: &OutletId| -> String {
            model
                .outlet_label(*o)
                .map(str::to_string)
                .unwrap_or_else(|| model.node(o.node).name.clone())
        };
        let input_names: Vec<String> = model.inputs.iter().map(name_of).collect();
        let output_names: Vec<String> = model.outputs.iter().map(name_of).collect();
        let typed = model
            .into_optimized()
            .map_err(|e| anyhow::anyhow!("the ONNX model cannot be prepared: {e}"))?;
        let io = |outlets: &[OutletId], names: &[String]| -> anyhow::Result<Vec<TensorSpec>> {
            outlets
                .iter()
                .zip(names)
                .map(|(o, name)| Ok(spec(name, typed.outlet_fact(*o)?)))
                .collect()
        };
        let inputs = io(&typed.inputs, &input_names)?;
        let outputs = io(&typed.outputs, &output_names)?;
        let plan = Plan::Tract(typed.into_runnable()?);
        Ok(OnnxModel {
            plan,
            inputs,
            outputs,
        })
    }

    /// Run on tensors given in input order; outputs in output order.
    pub fn run(&self, inputs: TVec<TValue>) -> anyhow::Result<TVec<TValue>> {
        match &self.plan {
            Plan::Tract(plan) => plan
                .run(inputs)
                .map_err(|e| anyhow::anyhow!("inference failed: {e}")),
            #[cfg(feature = "ort")]
            Plan::Ort(plan) => plan.run(&self.inputs, inputs),
        }
    }

    /// Which library runs it.
    pub fn backend(&self) -> &'static str {
        match &self.plan {
            Plan::Tract(_) => "tract",
            #[cfg(feature = "ort")]
            Plan::Ort(_) => "onnxruntime",
        }
    }
}

impl pool::Runnable for OnnxModel {
    fn run_tensors(&self, inputs: TVec<TValue>) -> anyhow::Result<TVec<TValue>> {
        self.run(inputs)
    }
}

/// A wasi-nn tensor as a tract tensor. Types tract's models take here: f32, f64,
/// i32, i64, u8; f16/bf16 are refused with a clear error.
pub fn to_tract(t: &Tensor) -> Result<tract_onnx::prelude::Tensor, BackendError> {
    let shape: Vec<usize> = t.dimensions.iter().map(|d| *d as usize).collect();
    // Dimensions come from the guest: their product may overflow.
    let count = shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d))
        .ok_or_else(|| {
            tensor_error(format!(
                "tensor of shape {:?}: its element count overflows",
                t.dimensions
            ))
        })?;
    let (dt, width) = match t.ty {
        TensorType::Fp32 => (DatumType::F32, 4),
        TensorType::Fp64 => (DatumType::F64, 8),
        TensorType::I32 => (DatumType::I32, 4),
        TensorType::I64 => (DatumType::I64, 8),
        TensorType::U8 => (DatumType::U8, 1),
        TensorType::Fp16 | TensorType::Bf16 => {
            return Err(BackendError::UnsupportedTensorType(format!(
                "{:?} (the ONNX backend takes fp32, fp64, i32, i64 or u8)",
                t.ty
            )))
        }
    };
    if count.checked_mul(width) != Some(t.data.len()) {
        return Err(tensor_error(format!(
            "tensor of shape {:?} and type {:?} needs {} bytes, got {}",
            t.dimensions,
            t.ty,
            count.saturating_mul(width),
            t.data.len()
        )));
    }
    // SAFETY: the length was checked against shape x element width just above, and
    // every bit pattern is a valid value of these plain numeric types.
    unsafe { tract_onnx::prelude::Tensor::from_raw_dt(dt, &shape, &t.data) }.map_err(tensor_error)
}

/// A tract tensor back as a wasi-nn tensor.
pub fn from_tract(t: &tract_onnx::prelude::Tensor) -> Result<Tensor, BackendError> {
    let ty = match t.datum_type() {
        DatumType::F32 => TensorType::Fp32,
        DatumType::F64 => TensorType::Fp64,
        DatumType::I32 => TensorType::I32,
        DatumType::I64 => TensorType::I64,
        DatumType::U8 => TensorType::U8,
        other => {
            return Err(BackendError::UnsupportedTensorType(format!(
                "the model produced {other:?}, which wasi-nn cannot carry"
            )))
        }
    };
    let dimensions = t
        .shape()
        .iter()
        .map(|d| u32::try_from(*d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| BackendError::NotEnoughMemory(t.len()))?;
    let data = t.as_bytes().to_vec();
    Ok(Tensor::new(dimensions, ty, data))
}

fn access(e: impl std::fmt::Display) -> BackendError {
    BackendError::BackendAccess(wasmtime::Error::msg(e.to_string()))
}

/// An error about the tensors a guest passed (names, shapes, types, what the model
/// made of them). wasmtime-wasi-nn shows a guest only the top-level message of a
/// backend error, and `BackendAccess` says just "Failed while accessing backend";
/// this variant's message carries the detail, so the guest (and its caller) learn
/// what to fix.
fn tensor_error(e: impl std::fmt::Display) -> BackendError {
    BackendError::UnsupportedTensorType(e.to_string())
}

/// The wasi-nn backend for `onnx` graphs on tract.
#[derive(Default)]
pub struct TractBackend;

impl BackendInner for TractBackend {
    fn encoding(&self) -> GraphEncoding {
        GraphEncoding::Onnx
    }

    fn load(&mut self, builders: &[&[u8]], target: ExecutionTarget) -> Result<Graph, BackendError> {
        check_target(target)?;
        let [bytes] = builders else {
            return Err(BackendError::InvalidNumberOfBuilders(1, builders.len()));
        };
        let model = OnnxModel::load(bytes).map_err(access)?;
        Ok(graph(Arc::new(Executor::new(
            Arc::new(model),
            None,
            Batching::OFF,
        ))))
    }

    fn as_dir_loadable(&mut self) -> Option<&mut dyn BackendFromDir> {
        None
    }
}

/// `cpu` only: anything else is an explicit error, never a silent CPU fallback.
pub fn check_target(target: ExecutionTarget) -> Result<(), BackendError> {
    match target {
        ExecutionTarget::Cpu => Ok(()),
        other => Err(access(format!(
            "execution target {other:?} is not available on this host (the tract backend runs on the CPU only)"
        ))),
    }
}

/// A wasi-nn graph over a shared, already optimized model and the executor that
/// runs it (straight, or on the inference pool with batching).
pub fn graph(executor: Arc<Executor<OnnxModel>>) -> Graph {
    graph_timed(executor, None)
}

/// A graph whose computes are timed into `timing` and traced.
pub fn graph_timed(executor: Arc<Executor<OnnxModel>>, timing: Option<Arc<Timing>>) -> Graph {
    let g: Box<dyn BackendGraph> = Box::new(TractGraph(executor, timing));
    g.into()
}

/// What a compute of one bound model version is counted and traced as.
pub struct Timing {
    /// `quiver_inference_duration_seconds` for this tenant, model version and backend.
    pub seconds: prometheus::Histogram,
    pub model: String,
    pub version: String,
    pub backend: &'static str,
}

struct TractGraph(Arc<Executor<OnnxModel>>, Option<Arc<Timing>>);

impl BackendGraph for TractGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let ctx: Box<dyn BackendExecutionContext> = Box::new(TractContext {
            executor: self.0.clone(),
            timing: self.1.clone(),
            inputs: vec![None; self.0.model().inputs.len()],
            outputs: Vec::new(),
        });
        Ok(ctx.into())
    }
}

struct TractContext {
    executor: Arc<Executor<OnnxModel>>,
    timing: Option<Arc<Timing>>,
    inputs: Vec<Option<tract_onnx::prelude::Tensor>>,
    outputs: Vec<tract_onnx::prelude::Tensor>,
}

impl TractContext {
    fn model(&self) -> &OnnxModel {
        self.executor.model()
    }
    fn index(specs: &[TensorSpec], id: &Id, what: &str) -> Result<usize, BackendError> {
        let found = match id {
            Id::Index(i) => Some(*i as usize).filter(|i| *i < specs.len()),
            Id::Name(n) => specs.iter().position(|s| &s.name == n),
        };
        found.ok_or_else(|| {
            let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            tensor_error(format!("no {what} {id:?}; the model has {known:?}"))
        })
    }

    fn run(&mut self) -> Result<(), BackendError> {
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for (i, t) in self.inputs.iter_mut().enumerate() {
            let t = t.take().ok_or_else(|| {
                tensor_error(format!(
                    "input `{}` was not set",
                    self.executor.model().inputs[i].name
                ))
            })?;
            inputs.push(t);
        }
        let Some(timing) = &self.timing else {
            self.outputs = self.executor.run(inputs).map_err(tensor_error)?;
            return Ok(());
        };
        let mut span = crate::trace::span("wasi-nn.compute")
            .attr("quiver.model", timing.model.clone())
            .attr("quiver.model_version", timing.version.clone())
            .attr("quiver.backend", timing.backend);
        let started = std::time::Instant::now();
        let ran = self.executor.run(inputs);
        timing.seconds.observe(started.elapsed().as_secs_f64());
        if let Err(e) = &ran {
            span.fail(e.clone());
        }
        self.outputs = ran.map_err(tensor_error)?;
        Ok(())
    }
}

impl BackendExecutionContext for TractContext {
    fn set_input(&mut self, id: Id, tensor: &Tensor) -> Result<(), BackendError> {
        let i = Self::index(&self.model().inputs, &id, "input")?;
        let t = to_tract(tensor)?;
        let spec = &self.model().inputs[i];
        let fits = v2_datatype(t.datum_type()) == spec.datatype
            && t.rank() == spec.shape.len()
            && t.shape()
                .iter()
                .zip(&spec.shape)
                .all(|(got, want)| *want < 0 || *got as i64 == *want);
        if !fits {
            return Err(tensor_error(format!(
                "input `{}` of the model is {} {:?} (-1: any size), the guest sent {} {:?}",
                spec.name,
                spec.datatype,
                spec.shape,
                v2_datatype(t.datum_type()),
                t.shape()
            )));
        }
        self.inputs[i] = Some(t);
        Ok(())
    }

    fn get_output(&mut self, id: Id) -> Result<Tensor, BackendError> {
        let i = Self::index(&self.model().outputs, &id, "output")?;
        let t = self
            .outputs
            .get(i)
            .ok_or_else(|| tensor_error("compute has not run"))?;
        from_tract(t)
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        let Some(named) = inputs else {
            self.run()?;
            return Ok(None);
        };
        for n in &named {
            self.set_input(Id::Name(n.name.clone()), &n.tensor)?;
        }
        self.run()?;
        let outputs = self
            .model()
            .outputs
            .iter()
            .zip(&self.outputs)
            .map(|(spec, t)| {
                Ok(NamedTensor {
                    name: spec.name.clone(),
                    tensor: from_tract(t)?,
                })
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        Ok(Some(outputs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &[u8] = include_bytes!("../../../functions/fraud-score/model/fraud.onnx");

    fn reference() -> serde_json::Value {
        serde_json::from_str(include_str!(
            "../../../functions/fraud-score/model/reference.json"
        ))
        .unwrap()
    }

    fn f32_tensor(dims: Vec<u32>, values: &[f32]) -> Tensor {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::new(dims, TensorType::Fp32, data)
    }

    #[test]
    fn reads_inputs_and_outputs_from_the_model() {
        let m = OnnxModel::load(MODEL).unwrap();
        assert_eq!(
            m.inputs,
            vec![TensorSpec {
                name: "X".into(),
                datatype: "FP32".into(),
                shape: vec![-1, 4]
            }]
        );
        assert_eq!(m.outputs.len(), 1);
        assert_eq!(m.outputs[0].name, "probabilities");
        assert_eq!(m.outputs[0].datatype, "FP32");
        assert_eq!(m.outputs[0].shape, vec![-1, 2]);
    }

    #[test]
    fn matches_scikit_learn_through_the_wasi_nn_traits() {
        let r = reference();
        let rows: Vec<Vec<f32>> = serde_json::from_value(r["rows"].clone()).unwrap();
        let want: Vec<Vec<f32>> = serde_json::from_value(r["probabilities"].clone()).unwrap();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let graph = TractBackend.load(&[MODEL], ExecutionTarget::Cpu).unwrap();
        let mut ctx = graph.init_execution_context().unwrap();
        ctx.set_input(Id::Index(0), &f32_tensor(vec![rows.len() as u32, 4], &flat))
            .unwrap();
        ctx.compute().unwrap();
        let out = ctx.get_output(Id::Index(0)).unwrap();
        assert_eq!(out.dimensions, vec![rows.len() as u32, 2]);
        let got: Vec<f32> = out
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        for (g, w) in got.iter().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-5, "tract {g} vs scikit-learn {w}");
        }
    }

    /// The SDK keeps one execution context per model and instance: a context runs
    /// many times, each run on the inputs of its own `compute`.
    #[test]
    fn one_context_computes_many_times() {
        let r = reference();
        let rows: Vec<Vec<f32>> = serde_json::from_value(r["rows"].clone()).unwrap();
        let want: Vec<Vec<f32>> = serde_json::from_value(r["probabilities"].clone()).unwrap();
        let graph = TractBackend.load(&[MODEL], ExecutionTarget::Cpu).unwrap();
        let mut ctx = graph.init_execution_context().unwrap();
        for (row, want) in rows.iter().zip(&want).take(5) {
            let named = vec![NamedTensor {
                name: "X".into(),
                tensor: f32_tensor(vec![1, 4], row),
            }];
            let out = ctx.compute_with_io(named).unwrap();
            let got: Vec<f32> = out[0]
                .tensor
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-5, "run on {row:?}: {g} vs {w}");
            }
        }
        // A run consumes its inputs: a compute with none set is refused rather than
        // silently rerunning the last ones.
        assert!(ctx.compute().is_err());
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let graph = TractBackend.load(&[MODEL], ExecutionTarget::Cpu).unwrap();
        let mut ctx = graph.init_execution_context().unwrap();
        // Wrong type.
        let half = Tensor::new(vec![1, 4], TensorType::Fp16, vec![0; 8]);
        assert!(matches!(
            ctx.set_input(Id::Index(0), &half),
            Err(BackendError::UnsupportedTensorType(_))
        ));
        // Data that does not fill the shape.
        assert!(ctx
            .set_input(Id::Index(0), &f32_tensor(vec![2, 4], &[1.0; 4]))
            .is_err());
        // Wrong inner dimension, named with what the model takes.
        let err = ctx
            .set_input(Id::Index(0), &f32_tensor(vec![1, 3], &[1.0; 3]))
            .unwrap_err();
        assert!(err.to_string().contains("FP32 [-1, 4]"), "{err}");
        // Nothing set: compute says which input is missing.
        assert!(ctx.compute().is_err());
        // Unknown input and output names.
        assert!(ctx
            .set_input(Id::Name("nope".into()), &f32_tensor(vec![1, 4], &[0.0; 4]))
            .is_err());
        assert!(ctx.get_output(Id::Index(5)).is_err());
        // i64 input to an f32 model: refused, not a crash.
        let ints = Tensor::new(vec![1, 4], TensorType::I64, vec![0; 32]);
        let err = ctx.set_input(Id::Index(0), &ints).unwrap_err();
        assert!(err.to_string().contains("INT64"), "{err}");
    }

    fn row_tensor(row: &[f32]) -> tract_onnx::prelude::Tensor {
        tract_ndarray::Array2::from_shape_vec((1, 4), row.to_vec())
            .unwrap()
            .into_tensor()
    }

    #[test]
    fn batched_results_equal_unbatched_ones_exactly() {
        let r = reference();
        let rows: Vec<Vec<f32>> = serde_json::from_value(r["rows"].clone()).unwrap();
        let model = Arc::new(OnnxModel::load(MODEL).unwrap());
        let pool = InferencePool::new(2, 64).unwrap();
        let alone = Executor::new(model.clone(), Some(pool.clone()), Batching::OFF);
        let want: Vec<Vec<u8>> = rows
            .iter()
            .map(|row| {
                alone.run(vec![row_tensor(row)]).unwrap()[0]
                    .as_bytes()
                    .to_vec()
            })
            .collect();
        let batched = Arc::new(Executor::new(
            model,
            Some(pool),
            Batching {
                max_batch: rows.len(),
                max_wait: std::time::Duration::from_secs(1),
            },
        ));
        let handles: Vec<_> = rows
            .iter()
            .cloned()
            .map(|row| {
                let b = batched.clone();
                std::thread::spawn(move || b.run(vec![row_tensor(&row)]).unwrap())
            })
            .collect();
        let got: Vec<Vec<u8>> = handles
            .into_iter()
            .map(|h| h.join().unwrap()[0].as_bytes().to_vec())
            .collect();
        // Rows waited for each other (max_batch = all of them) and ran as one call.
        assert_eq!(batched.stats(), (rows.len() as u64, 1));
        let mut got_sorted = got.clone();
        let mut want_sorted = want.clone();
        got_sorted.sort();
        want_sorted.sort();
        assert_eq!(
            got_sorted, want_sorted,
            "batched outputs differ from unbatched ones"
        );
        // And each caller got its own row back.
        assert_eq!(got, want);
    }

    #[test]
    fn not_onnx_and_gpu_are_explicit_errors() {
        let err = OnnxModel::load(b"definitely not a model").err().unwrap();
        assert!(err.to_string().contains("ONNX"), "{err}");
        let gpu = TractBackend
            .load(&[MODEL], ExecutionTarget::Gpu)
            .err()
            .unwrap();
        assert!(format!("{gpu:?}").contains("Gpu"), "{gpu:?}");
        assert!(matches!(
            TractBackend.load(&[MODEL, MODEL], ExecutionTarget::Cpu),
            Err(BackendError::InvalidNumberOfBuilders(1, 2))
        ));
    }
}
