//! The Quiver guest SDK.
//!
//! A Quiver function is a plain Rust function plus one macro:
//!
//! ```ignore
//! use quiver_sdk::{Batch, Error};
//!
//! fn double(input: Batch) -> Result<Batch, Error> {
//!     let x = input.f64s("x")?;
//!     Batch::new().with_f64("x2", x.iter().map(|v| v * 2.0).collect())
//! }
//! quiver_sdk::transform!(double);
//! ```
//!
//! `examples/rows.rs` is the same with serde rows, and compiles in CI. Bindings come
//! from `../wit` (never hand-copied); batches are columnar, so a stage pays per column
//! when it crosses the component boundary.

pub mod batch;
mod rows;

pub use batch::{Batch, Column, Element, ElementType, Field, Tensor, TensorView};
pub use rows::{from_rows, to_rows};

/// Bindings of the interfaces every world shares (types, log, config).
#[doc(hidden)]
pub mod base {
    wit_bindgen::generate!({
        path: "../wit",
        world: "quiver:ml/base",
        generate_all,
    });
}

macro_rules! world_bindings {
    ($module:ident, $world:literal, $macro_name:literal, $path:literal $(, $extra:literal => $to:path)*) => {
        #[doc(hidden)]
        pub mod $module {
            wit_bindgen::generate!({
                path: "../wit",
                world: $world,
                with: {
                    "quiver:ml/types@0.2.0": crate::base::quiver::ml::types,
                    "quiver:ml/log@0.2.0": crate::base::quiver::ml::log,
                    "quiver:ml/config@0.2.0": crate::base::quiver::ml::config,
                    "quiver:ml/features@0.2.0": crate::base::quiver::ml::features,
                    "quiver:ml/events@0.2.0": crate::base::quiver::ml::events,
                    $($extra: $to,)*
                },
                // Interfaces not mapped above (wasi:nn, models) are generated here.
                generate_all,
                pub_export_macro: true,
                export_macro_name: $macro_name,
                default_bindings_module: $path,
            });
        }
    };
}

world_bindings!(
    ingest_world,
    "quiver:ml/ingest",
    "export",
    "quiver_sdk::ingest_world"
);
world_bindings!(
    transform_world,
    "quiver:ml/transform",
    "export",
    "quiver_sdk::transform_world"
);
world_bindings!(
    inference_world,
    "quiver:ml/inference",
    "export",
    "quiver_sdk::inference_world"
);
world_bindings!(
    monitor_world,
    "quiver:ml/monitor",
    "export",
    "quiver_sdk::monitor_world",
    "quiver:ml/datasets@0.2.0" => crate::base::quiver::ml::datasets
);
world_bindings!(
    trainer_world,
    "quiver:ml/trainer",
    "export",
    "quiver_sdk::trainer_world",
    "quiver:ml/datasets@0.2.0" => crate::base::quiver::ml::datasets
);

pub use base::quiver::ml::types::{Error, Ingested, ModelArtifact, RejectedRow, Report};

/// Read a value from the function's `[config]` table.
pub fn config(key: &str) -> Option<String> {
    base::quiver::ml::config::get(key)
}

/// Online features, kept by the host (embedded or Redis) and scoped to the
/// function's tenant and its manifest's `[features] groups`.
///
/// ```ignore
/// use quiver_sdk::features::{self, Value};
/// features::put("merchant", "m-1", &[("mean".into(), Value::Float64(3.2))], Some(60_000))?;
/// let got = features::get("merchant", "m-1", &["mean".into()])?; // [Some(Float64(3.2))]
/// ```
pub mod features {
    pub use crate::base::quiver::ml::features::{delete, get, get_many, put, FeatureColumn, Value};
}

/// Events on the function's tenant's topics (those its manifest's `[events]
/// publish` declares).
///
/// ```ignore
/// use quiver_sdk::events::{self, Payload};
/// let id = events::publish("drift.detected", &Payload::Json(r#"{"psi": 0.3}"#.into()))?;
/// ```
pub mod events {
    pub use crate::base::quiver::ml::events::{publish, Payload};
}

/// Logged predictions joined to their labels, of the functions the manifest's
/// `[datasets] read` names (monitors and trainers).
///
/// ```ignore
/// use quiver_sdk::datasets::{self, Query};
/// let week = datasets::read(&Query { function: "fraud-pipeline".into(),
///     since_ms: 7 * 86_400_000, labelled_only: true, limit: 100_000 })?;
/// ```
pub mod datasets {
    pub use crate::base::quiver::ml::datasets::{read, reference, Distribution, Query};
}

/// Models bound in the manifest's `[models]` table, run through `wasi:nn`.
///
/// ```ignore
/// let model = quiver_sdk::nn::Model::shared("fraud")?;     // the [models] alias
/// let (dims, probs) = model.run_f32("X", &[2, 4], &rows)?; // rows: 8 f32, row-major
/// ```
pub mod nn {
    use crate::inference_world::wasi::nn::errors::Error as NnError;
    use crate::inference_world::wasi::nn::graph::{load_by_name, Graph};
    use crate::inference_world::wasi::nn::inference::GraphExecutionContext;
    use crate::inference_world::wasi::nn::tensor::{Tensor, TensorType};
    use crate::Error;

    pub use crate::inference_world::quiver::ml::models::{list_models, ModelInfo};

    fn nn_error(what: &str, e: NnError) -> Error {
        Error::Internal(format!("{what}: {:?}: {}", e.code(), e.data()))
    }

    /// The wasi-nn type of an element type (none for int8 and boolean).
    pub fn nn_type(e: crate::batch::ElementType) -> Option<TensorType> {
        use crate::batch::ElementType as E;
        Some(match e {
            E::Float16 => TensorType::Fp16,
            E::Bfloat16 => TensorType::Bf16,
            E::Float32 => TensorType::Fp32,
            E::Float64 => TensorType::Fp64,
            E::Uint8 => TensorType::U8,
            E::Int32 => TensorType::I32,
            E::Int64 => TensorType::I64,
            E::Int8 | E::Boolean => return None,
        })
    }

    fn element_of(t: TensorType) -> crate::batch::ElementType {
        use crate::batch::ElementType as E;
        match t {
            TensorType::Fp16 => E::Float16,
            TensorType::Bf16 => E::Bfloat16,
            TensorType::Fp32 => E::Float32,
            TensorType::Fp64 => E::Float64,
            TensorType::U8 => E::Uint8,
            TensorType::I32 => E::Int32,
            TensorType::I64 => E::Int64,
        }
    }

    /// A bound model, loaded by its alias (the host parsed it once; loading is cheap).
    pub struct Model {
        /// One execution context for every run (each run sets its own inputs).
        context: GraphExecutionContext,
        _graph: Graph,
    }

    std::thread_local! {
        static LOADED: std::cell::RefCell<Vec<(String, std::rc::Rc<Model>)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    impl Model {
        /// The model bound as `alias`, loaded once per instance: the host reuses
        /// instances of a function, so later calls skip `load-by-name`.
        pub fn shared(alias: &str) -> Result<std::rc::Rc<Model>, Error> {
            let found = LOADED.with(|l| {
                l.borrow()
                    .iter()
                    .find(|(a, _)| a == alias)
                    .map(|(_, m)| m.clone())
            });
            if let Some(m) = found {
                return Ok(m);
            }
            let m = std::rc::Rc::new(Model::load(alias)?);
            LOADED.with(|l| l.borrow_mut().push((alias.to_string(), m.clone())));
            Ok(m)
        }

        pub fn load(alias: &str) -> Result<Model, Error> {
            let graph = load_by_name(alias)
                .map_err(|e| nn_error(&format!("loading model `{alias}`"), e))?;
            let context = graph
                .init_execution_context()
                .map_err(|e| nn_error("init-execution-context", e))?;
            Ok(Model {
                context,
                _graph: graph,
            })
        }

        /// Run on named tensors (their bytes go to wasi-nn as they are); every
        /// output, by name, as a tensor. Int8 and boolean tensors have no wasi-nn
        /// type and are refused.
        pub fn run(
            &self,
            inputs: &[(&str, crate::batch::TensorView<'_>)],
        ) -> Result<Vec<(String, crate::batch::Tensor)>, Error> {
            let named = inputs
                .iter()
                .map(|(name, t)| {
                    let ty = nn_type(t.element).ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "input `{name}`: wasi-nn has no {:?} tensors",
                            t.element
                        ))
                    })?;
                    Ok((name.to_string(), Tensor::new(t.shape, ty, t.data)))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let outputs = self
                .context
                .compute(named)
                .map_err(|e| nn_error("compute", e))?;
            Ok(outputs
                .into_iter()
                .map(|(name, t)| {
                    let tensor = crate::batch::Tensor {
                        shape: t.dimensions(),
                        element: element_of(t.ty()),
                        data: t.data(),
                    };
                    (name, tensor)
                })
                .collect())
        }

        /// Run on one f32 input tensor; the first output's dimensions and values.
        pub fn run_f32(
            &self,
            input: &str,
            dims: &[u32],
            data: &[f32],
        ) -> Result<(Vec<u32>, Vec<f32>), Error> {
            // Wasm is little-endian, wasi-nn's byte order: the values are the bytes.
            let tensor = Tensor::new(dims, TensorType::Fp32, bytemuck::cast_slice(data));
            let outputs = self
                .context
                .compute(vec![(input.to_string(), tensor)])
                .map_err(|e| nn_error("compute", e))?;
            let (_, out) = outputs
                .into_iter()
                .next()
                .ok_or_else(|| Error::Internal("the model returned no outputs".into()))?;
            if out.ty() != TensorType::Fp32 {
                return Err(Error::Internal(format!(
                    "expected an fp32 output, got {:?}",
                    out.ty()
                )));
            }
            // The bytes lose their alignment in a Vec<u8>: copied, not cast.
            let values = bytemuck::pod_collect_to_vec(&out.data());
            Ok((out.dimensions(), values))
        }
    }
}

/// Structured logging through the host (tagged with tenant, function and version).
pub mod log {
    use crate::base::quiver::ml::log::{log, Level};
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// Export `fn(Batch) -> Result<Batch, Error>` as this component's `transform`.
#[macro_export]
macro_rules! transform {
    ($f:path) => {
        struct __QuiverTransform;
        impl $crate::transform_world::Guest for __QuiverTransform {
            fn transform(
                input: $crate::Batch,
            ) -> ::core::result::Result<$crate::Batch, $crate::Error> {
                $f(input)
            }
        }
        $crate::transform_world::export!(__QuiverTransform);
    };
}

/// Export `fn(&str, &[u8]) -> Result<Ingested, Error>` (content type, body) as `ingest`.
#[macro_export]
macro_rules! ingest {
    ($f:path) => {
        struct __QuiverIngest;
        impl $crate::ingest_world::Guest for __QuiverIngest {
            fn ingest(
                content_type: ::std::string::String,
                body: ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<$crate::Ingested, $crate::Error> {
                $f(&content_type, &body)
            }
        }
        $crate::ingest_world::export!(__QuiverIngest);
    };
}

/// Export `fn(Batch) -> Result<Batch, Error>` as this inference component's `infer`.
#[macro_export]
macro_rules! inference {
    ($f:path) => {
        struct __QuiverInference;
        impl $crate::inference_world::Guest for __QuiverInference {
            fn infer(input: $crate::Batch) -> ::core::result::Result<$crate::Batch, $crate::Error> {
                $f(input)
            }
        }
        $crate::inference_world::export!(__QuiverInference);
    };
}

/// Export `fn(Batch, Batch) -> Result<Report, Error>` (inputs, outputs) as `observe`.
#[macro_export]
macro_rules! monitor {
    ($f:path) => {
        struct __QuiverMonitor;
        impl $crate::monitor_world::Guest for __QuiverMonitor {
            fn observe(
                inputs: $crate::Batch,
                outputs: $crate::Batch,
            ) -> ::core::result::Result<$crate::Report, $crate::Error> {
                $f(inputs, outputs)
            }
        }
        $crate::monitor_world::export!(__QuiverMonitor);
    };
}

/// Export `fn(Batch, Vec<(String, String)>) -> Result<ModelArtifact, Error>` as `train`.
#[macro_export]
macro_rules! trainer {
    ($f:path) => {
        struct __QuiverTrainer;
        impl $crate::trainer_world::Guest for __QuiverTrainer {
            fn train(
                dataset: $crate::Batch,
                params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::core::result::Result<$crate::ModelArtifact, $crate::Error> {
                $f(dataset, params)
            }
        }
        $crate::trainer_world::export!(__QuiverTrainer);
    };
}
