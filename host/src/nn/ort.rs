//! ONNX Runtime for the ONNX backend (cargo feature `ort`): CPU, and GPU through the
//! CUDA execution provider. The library is loaded at run time (`load-dynamic`) from
//! `ORT_DYLIB_PATH` — the `onnxruntime` wheel from PyPI for the CPU, or
//! `onnxruntime-gpu` plus NVIDIA's CUDA wheels for the GPU (`scripts/fetch-ort.sh`).
//!
//! A `gpu` model is built with the CUDA provider set to fail rather than fall back:
//! where no GPU is usable the load is an error that says why, never a silent run on
//! the CPU (ONNX Runtime's own default).

use super::{OnnxModel, Plan, TensorSpec};
use ort::execution_providers::CUDAExecutionProvider;
use ort::session::Session;
use ort::tensor::{PrimitiveTensorElementType, TensorElementType};
use ort::value::{DynValue, Tensor as OrtTensor, ValueType};
use std::sync::{Mutex, OnceLock};
use tract_onnx::prelude::{Datum, DatumType, IntoTValue as _, TValue, TVec, Tensor};

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Gpu,
}

static INIT: OnceLock<Result<(), String>> = OnceLock::new();

/// Load the ONNX Runtime library once, from `ORT_DYLIB_PATH`.
pub fn init() -> anyhow::Result<()> {
    INIT.get_or_init(|| {
        let path = std::env::var("ORT_DYLIB_PATH").map_err(|_| {
            "ORT_DYLIB_PATH is not set: point it at libonnxruntime.so (scripts/fetch-ort.sh fetches it from PyPI)"
                .to_string()
        })?;
        if !std::path::Path::new(&path).is_file() {
            return Err(format!("ORT_DYLIB_PATH={path}: no such file"));
        }
        ort::init_from(&path)
            .with_name("quiver")
            .commit()
            .map(|_| ())
            .map_err(|e| format!("loading ONNX Runtime from {path}: {e}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// A session behind a lock: ONNX Runtime's `run` takes the session mutably in this
/// binding; the inference pool bounds how many callers wait on it.
pub struct OrtPlan {
    session: Mutex<Session>,
}

fn spec(name: &str, ty: &ValueType) -> TensorSpec {
    let (datatype, shape) = match ty {
        ValueType::Tensor { ty, shape, .. } => (
            match ty {
                TensorElementType::Float32 => "FP32",
                TensorElementType::Float64 => "FP64",
                TensorElementType::Float16 => "FP16",
                TensorElementType::Int64 => "INT64",
                TensorElementType::Int32 => "INT32",
                TensorElementType::Uint8 => "UINT8",
                TensorElementType::Bool => "BOOL",
                TensorElementType::String => "BYTES",
                _ => "UNKNOWN",
            },
            shape.iter().copied().collect(),
        ),
        _ => ("UNKNOWN", Vec::new()),
    };
    TensorSpec {
        name: name.to_string(),
        datatype: datatype.to_string(),
        shape,
    }
}

/// Build a session for `device`; `gpu` fails (with ONNX Runtime's reason) where the
/// CUDA provider cannot be registered.
pub fn load(bytes: &[u8], device: Device) -> anyhow::Result<OnnxModel> {
    init()?;
    let mut builder = Session::builder()?.with_intra_threads(1)?;
    if device == Device::Gpu {
        builder = builder
            .with_execution_providers([CUDAExecutionProvider::default().build().error_on_failure()])
            .map_err(|e| {
                anyhow::anyhow!("execution target gpu is not available on this host: {e}")
            })?;
    }
    let session = builder
        .commit_from_memory(bytes)
        .map_err(|e| anyhow::anyhow!("not a loadable ONNX model: {e}"))?;
    let inputs = session
        .inputs
        .iter()
        .map(|i| spec(&i.name, &i.input_type))
        .collect();
    let outputs = session
        .outputs
        .iter()
        .map(|o| spec(&o.name, &o.output_type))
        .collect();
    Ok(OnnxModel {
        plan: Plan::Ort(OrtPlan {
            session: Mutex::new(session),
        }),
        inputs,
        outputs,
    })
}

fn to_ort(t: &Tensor) -> anyhow::Result<DynValue> {
    let shape: Vec<i64> = t.shape().iter().map(|d| *d as i64).collect();
    /// The tensor's elements copied into an ONNX Runtime tensor of the same type.
    fn array<T: Datum + PrimitiveTensorElementType>(
        shape: Vec<i64>,
        t: &Tensor,
    ) -> anyhow::Result<DynValue> {
        let data = t.try_as_plain_ram()?.as_slice::<T>()?.to_vec();
        Ok(OrtTensor::from_array((shape, data))?.into_dyn())
    }
    Ok(match t.datum_type() {
        DatumType::F32 => array::<f32>(shape, t)?,
        DatumType::F64 => array::<f64>(shape, t)?,
        DatumType::I64 => array::<i64>(shape, t)?,
        DatumType::I32 => array::<i32>(shape, t)?,
        DatumType::U8 => array::<u8>(shape, t)?,
        other => anyhow::bail!("ONNX Runtime backend: {other:?} inputs are not supported"),
    })
}

fn from_ort(v: &DynValue) -> anyhow::Result<Tensor> {
    fn take<T: PrimitiveTensorElementType + Datum + Copy>(v: &DynValue) -> anyhow::Result<Tensor> {
        let (shape, data) = v.try_extract_tensor::<T>()?;
        let dims: Vec<usize> = shape.iter().map(|d| (*d).max(0) as usize).collect();
        Tensor::from_shape(&dims, data)
    }
    match v.dtype() {
        ValueType::Tensor { ty, .. } => match ty {
            TensorElementType::Float32 => take::<f32>(v),
            TensorElementType::Float64 => take::<f64>(v),
            TensorElementType::Int64 => take::<i64>(v),
            TensorElementType::Int32 => take::<i32>(v),
            TensorElementType::Uint8 => take::<u8>(v),
            other => anyhow::bail!("the model produced {other:?}, which wasi-nn cannot carry"),
        },
        other => anyhow::bail!("the model produced a {other:?}, not a tensor"),
    }
}

impl OrtPlan {
    pub(super) fn run(
        &self,
        specs: &[TensorSpec],
        inputs: TVec<TValue>,
    ) -> anyhow::Result<TVec<TValue>> {
        let named = specs
            .iter()
            .zip(inputs.iter())
            .map(|(s, t)| Ok((s.name.clone(), to_ort(t)?)))
            .collect::<anyhow::Result<Vec<(String, DynValue)>>>()?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| anyhow::anyhow!("ONNX Runtime session poisoned"))?;
        let outputs = session
            .run(named)
            .map_err(|e| anyhow::anyhow!("inference failed: {e}"))?;
        outputs
            .into_iter()
            .map(|(_, v)| Ok(from_ort(&v)?.into_tvalue()))
            .collect()
    }
}
