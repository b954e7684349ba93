//! Models bound to deployments: parsed once per host, shared by every instance and
//! request, and gone when no warm deployment uses them.
//!
//! The [`ModelCache`] keeps models by digest as weak references: a loaded deployment
//! holds its models strongly (through its [`BoundModels`]), so a model leaves memory
//! exactly when the last deployment using it goes Cold (scale to zero) and is parsed
//! again on the next cold start.

use super::pool::{Batching, Executor, InferencePool};
use super::{OnnxModel, TensorSpec};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use wasmtime_wasi_nn::backend::{BackendError, BackendFromDir, BackendInner};
use wasmtime_wasi_nn::wit::WasiNnCtx;
use wasmtime_wasi_nn::wit::{ExecutionTarget, GraphEncoding};
use wasmtime_wasi_nn::{Graph, GraphRegistry};

pub struct ModelCache {
    models: Mutex<HashMap<String, Weak<OnnxModel>>>,
    /// One gate per model being parsed: concurrent cold starts parse a model once,
    /// and different models parse in parallel.
    parsing: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    parses: AtomicU64,
    pool: Arc<InferencePool>,
    backend: super::OnnxBackend,
}

impl ModelCache {
    pub fn new(pool: Arc<InferencePool>, backend: super::OnnxBackend) -> Self {
        ModelCache {
            models: Mutex::new(HashMap::new()),
            parsing: Mutex::new(HashMap::new()),
            parses: AtomicU64::new(0),
            pool,
            backend,
        }
    }

    pub fn backend(&self) -> super::OnnxBackend {
        self.backend
    }

    pub fn pool(&self) -> &Arc<InferencePool> {
        &self.pool
    }

    fn live(&self, digest: &str) -> Option<Arc<OnnxModel>> {
        self.models.lock().ok()?.get(digest)?.upgrade()
    }

    /// The model of `digest` for `target` (`cpu`, `gpu`), parsed from `bytes()` only
    /// if no deployment holds it. Blocking (parsing and optimizing take a while):
    /// call from a blocking thread.
    pub fn get(
        &self,
        digest: &str,
        target: &str,
        bytes: impl FnOnce() -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<Arc<OnnxModel>> {
        let key = format!("{digest}@{target}");
        let digest = key.as_str();
        if let Some(m) = self.live(digest) {
            return Ok(m);
        }
        let poisoned = || anyhow::anyhow!("model cache poisoned");
        let gate = self
            .parsing
            .lock()
            .map_err(|_| poisoned())?
            .entry(digest.to_string())
            .or_default()
            .clone();
        let parsed = {
            // A parse that panicked poisons the gate, not the digest: the next caller
            // tries again.
            let _once = gate
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match self.live(digest) {
                Some(m) => Ok(m),
                None => self.parse(digest, target, bytes),
            }
        };
        if let Ok(mut parsing) = self.parsing.lock() {
            // The last one through removes the gate (a later parse makes a new one).
            if Arc::strong_count(&gate) <= 2 {
                parsing.remove(digest);
            }
        }
        parsed
    }

    fn parse(
        &self,
        digest: &str,
        target: &str,
        bytes: impl FnOnce() -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<Arc<OnnxModel>> {
        let model = Arc::new(self.backend.load(&bytes()?, target)?);
        self.parses.fetch_add(1, Ordering::Relaxed);
        let mut models = self
            .models
            .lock()
            .map_err(|_| anyhow::anyhow!("model cache poisoned"))?;
        models.retain(|_, w| w.strong_count() > 0);
        models.insert(digest.to_string(), Arc::downgrade(&model));
        Ok(model)
    }

    /// Models in memory now (held by at least one loaded deployment).
    pub fn resident(&self) -> usize {
        self.models
            .lock()
            .map_or(0, |m| m.values().filter(|w| w.strong_count() > 0).count())
    }

    /// How many times this host parsed a model.
    pub fn parses(&self) -> u64 {
        self.parses.load(Ordering::Relaxed)
    }
}

/// One model a deployment bound in `[models]`: `alias = "name@range"` resolved at
/// deploy time to an exact version.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BoundModel {
    pub alias: String,
    pub name: String,
    pub version: String,
    pub digest: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// A deployment's models, by alias, ready to be loaded by name from its guests.
pub struct BoundModels {
    pub models: Vec<BoundModel>,
    graphs: HashMap<String, Graph>,
    executors: Vec<Arc<Executor<OnnxModel>>>,
}

impl BoundModels {
    /// `concurrency`: the deployment's, which bounds its unfinished pool runs.
    pub fn new(
        tenant: &str,
        batching: Batching,
        pool: &Arc<InferencePool>,
        concurrency: usize,
        bound: Vec<(BoundModel, Arc<OnnxModel>)>,
    ) -> Self {
        let mut graphs = HashMap::new();
        let mut executors = Vec::new();
        let mut models = Vec::new();
        for (info, model) in bound {
            let exec = Arc::new(
                Executor::new(model, Some(pool.clone()), batching).with_max_unfinished(concurrency),
            );
            let backend = exec.model().backend();
            let timing = super::Timing {
                seconds: crate::metrics::HOST_CALLS
                    .inference_seconds
                    .with_label_values(&[tenant, &info.name, &info.version, backend]),
                model: info.name.clone(),
                version: info.version.clone(),
                backend,
            };
            graphs.insert(
                info.alias.clone(),
                super::graph_timed(exec.clone(), Some(Arc::new(timing))),
            );
            executors.push(exec);
            models.push(info);
        }
        BoundModels {
            models,
            graphs,
            executors,
        }
    }

    /// (compute calls, backend runs) over all bound models.
    pub fn stats(&self) -> (u64, u64) {
        self.executors.iter().fold((0, 0), |(c, r), e| {
            let (c2, r2) = e.stats();
            (c + c2, r + r2)
        })
    }

    /// The wasi-nn state of one store: `load-by-name(alias)` finds this deployment's
    /// models; loading raw bytes is refused (models come from the registry).
    pub fn wasi_nn(self: &Arc<Self>) -> WasiNnCtx {
        WasiNnCtx::new([RegistryOnly.into()], Bound(Some(self.clone())).into())
    }

    /// The wasi-nn state of a store whose function binds no models.
    pub fn none() -> WasiNnCtx {
        WasiNnCtx::new([RegistryOnly.into()], Bound(None).into())
    }
}

struct Bound(Option<Arc<BoundModels>>);

impl GraphRegistry for Bound {
    fn get(&self, name: &str) -> Option<&Graph> {
        self.0.as_ref()?.graphs.get(name)
    }

    /// Graphs are shared by every instance of the deployment: none is handed out
    /// mutably.
    fn get_mut(&mut self, _name: &str) -> Option<&mut Graph> {
        None
    }
}

/// The `onnx` encoding for `load` from bytes: refused with the way to do it instead,
/// so a guest cannot make the host parse (and hold) arbitrary models outside its
/// memory limit.
struct RegistryOnly;

impl BackendInner for RegistryOnly {
    fn encoding(&self) -> GraphEncoding {
        GraphEncoding::Onnx
    }

    fn load(
        &mut self,
        _: &[&[u8]],
        target: ExecutionTarget,
    ) -> Result<wasmtime_wasi_nn::Graph, BackendError> {
        super::check_target(target)?;
        Err(BackendError::BackendAccess(wasmtime::Error::msg(
            "this host loads models by name only: push the model with `quiver models push`, \
             bind it in the manifest's [models] table and call load-by-name with its alias",
        )))
    }

    fn as_dir_loadable(&mut self) -> Option<&mut dyn BackendFromDir> {
        None
    }
}
