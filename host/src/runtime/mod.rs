//! The only place that configures `wasmtime::Engine`: pooling allocator (probed, with
//! on-demand fallback), epoch ticker for timeouts, on-disk AOT cache keyed by digest
//! and engine, per-store memory limits, pre-instantiation per component, and a pool
//! of warm instances per deployment.

use crate::bindings::inference::InferencePre;
use crate::bindings::ingest::IngestPre;
use crate::bindings::monitor::MonitorPre;
use crate::bindings::trainer::TrainerPre;
use crate::bindings::transform::TransformPre;
use crate::bindings::{Batch, GuestError, Ingested, ModelArtifact, Report};
use crate::features::FeatureScope;
use crate::logs::Capture;
use crate::manifest::ResolvedLimits;
use crate::nn::BoundModels;
use anyhow::Context as _;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

mod engine;
mod host;
mod instances;

pub use engine::engine_config;
use engine::pooled_engine;
pub use host::HostState;
use host::MemoryLimiter;
pub use instances::MAX_IDLE;
use instances::{Busy, InstancePool, Warm, WarmInstance};

pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Host resources (streams, pollables, tensors, execution contexts...) one store may
/// hold at once; past it the guest's call that would make one fails.
pub const MAX_RESOURCES: usize = 10_000;

pub use crate::capability::provided_imports;
pub(crate) use host::link_accounted_tensors;

/// A component ready to instantiate, by the world it serves.
#[derive(Clone)]
pub enum Prepared {
    Ingest(IngestPre<HostState>),
    Transform(TransformPre<HostState>),
    Inference(InferencePre<HostState>),
    Monitor(MonitorPre<HostState>),
    Trainer(TrainerPre<HostState>),
    Http(ProxyPre<HostState>),
    /// Validated and linked (its kind is named), but this host has no trigger for
    /// its world yet.
    NotInvocable(String),
}

/// How an invocation failed, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("{0}")]
    Guest(String, GuestErrorKind),
    #[error("function exceeded its timeout of {0:?}")]
    Timeout(Duration),
    #[error("function exceeded its memory limit of {0}")]
    Memory(bytesize::ByteSize),
    #[error("function trapped: {0}")]
    Trap(String),
    #[error("{0}")]
    BadOutput(String),
    #[error("host error: {0:#}")]
    Host(anyhow::Error),
    #[error("{0}")]
    Overloaded(#[from] crate::admission::Rejected),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestErrorKind {
    InvalidInput,
    Unavailable,
    LimitExceeded,
    Internal,
}

impl From<GuestError> for InvokeError {
    fn from(e: GuestError) -> Self {
        match e {
            GuestError::InvalidInput(m) => InvokeError::Guest(m, GuestErrorKind::InvalidInput),
            GuestError::Unavailable(m) => InvokeError::Guest(m, GuestErrorKind::Unavailable),
            GuestError::LimitExceeded(m) => InvokeError::Guest(m, GuestErrorKind::LimitExceeded),
            GuestError::Internal(m) => InvokeError::Guest(m, GuestErrorKind::Internal),
        }
    }
}

/// What the invocations of one deployment run with, and its idle instances. Use it
/// only with that deployment's `Prepared`: its pool holds instances of that component.
#[derive(Clone)]
pub struct Invocation {
    pub limits: ResolvedLimits,
    pub config: Arc<BTreeMap<String, String>>,
    pub tag: Arc<str>,
    pool: Arc<InstancePool>,
    /// The feature groups this deployment may use (`None`: it declared none).
    pub features: Option<Arc<FeatureScope>>,
    /// The models it bound in `[models]`, loaded (`None`: it binds none).
    pub models: Option<Arc<BoundModels>>,
    /// Where it may send outbound HTTP (default: nowhere).
    pub egress: crate::egress::Egress,
    /// The topics it may publish to (`None`: it declared none).
    pub events: Option<Arc<crate::capability::EventScope>>,
    /// The datasets it may read (`None`: it declared none).
    pub datasets: Option<Arc<crate::capability::DatasetScope>>,
    /// Where its output and log lines go (`None`: to the host's tracing only).
    pub logs: Option<Arc<crate::logs::LogSink>>,
    /// Made by [`Invocation::offline`] (a training run's feature computation).
    pub offline: bool,
}

impl Invocation {
    /// Warm instances waiting for this deployment's next call.
    pub fn idle_instances(&self) -> usize {
        self.pool.len()
    }

    /// Instances currently serving a call.
    pub fn busy_instances(&self) -> usize {
        self.pool.busy.load(Ordering::Relaxed)
    }

    /// `max_idle` caps the warm instances kept (at most [`MAX_IDLE`]).
    /// Its capabilities' parts (config, features, models, egress) start empty;
    /// `crate::capability::configure_all` fills them from the manifest.
    pub fn new(limits: ResolvedLimits, tag: &str, max_idle: usize) -> Self {
        Invocation {
            limits,
            config: Arc::default(),
            tag: tag.into(),
            pool: Arc::new(InstancePool {
                idle: Mutex::new(Vec::new()),
                max_idle: max_idle.min(MAX_IDLE),
                busy: AtomicUsize::new(0),
            }),
            features: None,
            models: None,
            egress: Default::default(),
            events: None,
            datasets: None,
            logs: None,
            offline: false,
        }
    }

    /// The same component, limits, config, models and logs, cut off from the
    /// platform's state: no feature store (its reads fail as unavailable, its
    /// writes are refused), no events, no datasets, and instances of its own that
    /// are never kept. A training run computes features with it, so recomputing
    /// a window's features neither reads today's online state nor writes to it.
    pub fn offline(&self) -> Invocation {
        let mut off = Invocation::new(self.limits, &self.tag, 0);
        off.config = self.config.clone();
        off.models = self.models.clone();
        off.logs = self.logs.clone();
        off.offline = true;
        off
    }
}

#[derive(Clone, Copy)]
enum Pre<'a> {
    Ingest(&'a IngestPre<HostState>),
    Transform(&'a TransformPre<HostState>),
    Inference(&'a InferencePre<HostState>),
    Monitor(&'a MonitorPre<HostState>),
    Trainer(&'a TrainerPre<HostState>),
    Http(&'a ProxyPre<HostState>),
}

/// How instance memory is allocated. `Pooling` is probed at start (it reserves a
/// large virtual address range) and falls back to `OnDemand` where that fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Allocator {
    Pooling,
    OnDemand,
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    aot_dir: PathBuf,
    engine_hash: String,
    components: Mutex<HashMap<String, Component>>,
    pooling: bool,
    compilations: prometheus::IntCounter,
    instantiations: prometheus::IntCounter,
}

impl Runtime {
    pub fn new(data_dir: &std::path::Path, allocator: Allocator) -> anyhow::Result<Arc<Self>> {
        let probed = match allocator {
            Allocator::Pooling => pooled_engine().map_err(|e| {
                tracing::warn!("pooling allocator unavailable ({e}); using on-demand allocation");
            }),
            Allocator::OnDemand => Err(()),
        };
        let (engine, pooling) = match probed {
            Ok(engine) => (engine, true),
            Err(()) => (Engine::new(&engine_config())?, false),
        };
        let mut linker = Linker::new(&engine);
        crate::capability::link_all(&mut linker)?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = format!("{:016x}", hasher.finish());
        let aot_dir = data_dir.join("aot");
        std::fs::create_dir_all(&aot_dir)
            .with_context(|| format!("creating {}", aot_dir.display()))?;
        // Temp files are writes a crash interrupted: nothing refers to them.
        for entry in std::fs::read_dir(&aot_dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("quiver-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        Ok(Arc::new(Runtime {
            engine,
            linker,
            aot_dir,
            engine_hash,
            components: Mutex::new(HashMap::new()),
            pooling,
            compilations: prometheus::IntCounter::new(
                "quiver_compilations_total",
                "Components compiled rather than loaded from the AOT cache",
            )?,
            instantiations: prometheus::IntCounter::new(
                "quiver_instantiations_total",
                "Instances of typed functions created",
            )?,
        }))
    }

    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// How many components this process compiled (rather than loaded from the AOT cache).
    pub fn compilations(&self) -> u64 {
        self.compilations.get()
    }

    /// How many typed-function instances this process created (reuse keeps it low).
    pub fn instantiations(&self) -> u64 {
        self.instantiations.get()
    }

    /// The runtime's counters, for the server's Prometheus registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.compilations.clone()),
            Box::new(self.instantiations.clone()),
        ]
    }

    /// Drop compiled code from memory (the AOT artifact stays on disk).
    pub fn forget_component(&self, digest_hex: &str) {
        if let Ok(mut components) = self.components.lock() {
            components.remove(digest_hex);
        }
    }

    /// Compiled code for a digest, kept in memory until `forget_component`: memory,
    /// then the AOT file, then compile (and save). Blocking: call from a blocking thread.
    pub fn component(
        &self,
        digest_hex: &str,
        bytes: impl FnOnce() -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<Component> {
        let component = self.component_transient(digest_hex, bytes)?;
        self.components
            .lock()
            .map_err(|_| anyhow::anyhow!("component cache poisoned"))?
            .insert(digest_hex.to_string(), component.clone());
        Ok(component)
    }

    /// As `component`, but not kept in memory (deploy checks a component and leaves
    /// it Cold: only the AOT artifact on disk stays).
    pub fn component_transient(
        &self,
        digest_hex: &str,
        bytes: impl FnOnce() -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<Component> {
        if let Some(c) = self
            .components
            .lock()
            .map_err(|_| anyhow::anyhow!("component cache poisoned"))?
            .get(digest_hex)
        {
            return Ok(c.clone());
        }
        let path = self.artifact_path(digest_hex);
        // SAFETY: the file was written by `Component::serialize` of an engine with the
        // same compatibility hash (it is in the file name) into this host's own data
        // dir, or pulled with a MAC under the hosts' shared key that binds it to this
        // component's digest and engine (`oci::pull_precompiled`); wasmtime still
        // checks the header and rejects a foreign artifact.
        let loaded = match path.is_file() {
            true => unsafe { Component::deserialize_file(&self.engine, &path) }.ok(),
            false => None,
        };
        let component = match loaded {
            Some(c) => c,
            None => {
                let bytes = bytes()?;
                let component = Component::new(&self.engine, &bytes)
                    .map_err(|e| anyhow::anyhow!("compiling component: {e}"))?;
                self.compilations.inc();
                // The artifact only saves the next load a compile: failing to write
                // it (a full disk, a collection racing it) fails nothing.
                if let Err(e) = component
                    .serialize()
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .and_then(|bytes| self.save_artifact(&path, &bytes))
                {
                    tracing::warn!(artifact = %path.display(), "not saving the AOT artifact: {e:#}");
                }
                component
            }
        };
        Ok(component)
    }

    /// The engine's hash: which precompiled code this host can load.
    pub fn engine_hash(&self) -> &str {
        &self.engine_hash
    }

    fn artifact_path(&self, key: &str) -> PathBuf {
        self.aot_dir
            .join(format!("{key}-{}.cwasm", self.engine_hash))
    }

    /// Whether code for `key` is in memory or on disk (a load compiles nothing).
    pub fn has_code(&self, key: &str) -> bool {
        let in_memory = self
            .components
            .lock()
            .map(|c| c.contains_key(key))
            .unwrap_or(false);
        in_memory || self.artifact_path(key).is_file()
    }

    /// The AOT artifact on disk for `key`, if there is one.
    pub fn artifact(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.artifact_path(key)).ok()
    }

    /// Keep `bytes`, precompiled code another host of this engine made (MAC checked
    /// by the caller), as the AOT artifact for `key`. Refused unless wasmtime reads
    /// it as a component of this engine; the next load deserializes it.
    pub fn install_artifact(&self, key: &str, bytes: &[u8]) -> anyhow::Result<()> {
        if Engine::detect_precompiled(bytes) != Some(wasmtime::Precompiled::Component) {
            anyhow::bail!("not a precompiled component");
        }
        self.save_artifact(&self.artifact_path(key), bytes)
    }

    /// Write an AOT artifact durably: a uniquely named temp file in the same
    /// directory, fsynced, renamed into place, and the directory fsynced.
    fn save_artifact(&self, path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.aot_dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        std::fs::File::open(&self.aot_dir)?.sync_all()?;
        Ok(())
    }

    /// The key of a tenant's compiled code (in memory and on disk). Per tenant, so
    /// that how long a deploy or a cold start takes never tells one tenant whether
    /// another already deployed the same bytes.
    pub fn code_key(tenant: &str, digest_hex: &str) -> String {
        format!("{digest_hex}.{tenant}")
    }

    /// Delete every AOT artifact whose key ([`Runtime::code_key`]) is not in `keep`,
    /// and every artifact of another engine.
    /// Temp files of writes in progress are left alone (leftovers of a crash go at
    /// the next start). Returns how many files went.
    pub fn remove_artifacts_except(
        &self,
        keep: &std::collections::HashSet<String>,
    ) -> anyhow::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.aot_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".tmp") {
                continue;
            }
            let key = name.strip_suffix(&format!("-{}.cwasm", self.engine_hash));
            if !key.is_some_and(|k| keep.contains(k)) {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    // Another collection took it first.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(removed)
    }

    /// Link and pre-instantiate for the world of `kind`. Errors name what does not link.
    pub fn prepare(&self, kind: &str, component: &Component) -> anyhow::Result<Prepared> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            anyhow::anyhow!("component does not link against Quiver's imports: {e}")
        })?;
        let wrong = |e: wasmtime::Error| {
            anyhow::anyhow!("component does not match the `{kind}` world: {e}")
        };
        Ok(match kind {
            "ingest" => Prepared::Ingest(IngestPre::new(pre).map_err(wrong)?),
            "transform" => Prepared::Transform(TransformPre::new(pre).map_err(wrong)?),
            "inference" => Prepared::Inference(InferencePre::new(pre).map_err(wrong)?),
            "monitor" => Prepared::Monitor(MonitorPre::new(pre).map_err(wrong)?),
            "trainer" => Prepared::Trainer(TrainerPre::new(pre).map_err(wrong)?),
            "http" => Prepared::Http(ProxyPre::new(pre).map_err(wrong)?),
            other => Prepared::NotInvocable(other.to_string()),
        })
    }

    fn store(&self, inv: &Invocation) -> Store<HostState> {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let (stdout, stderr) = (Capture::default(), Capture::default());
        let state = HostState {
            wasi: WasiCtx::builder()
                .stdout(stdout.clone())
                .stderr(stderr.clone())
                .build(),
            stdout,
            stderr,
            logs: inv.logs.clone(),
            trace_id: String::new(),
            table,
            http: WasiHttpCtx::new(),
            limiter: MemoryLimiter {
                limit: inv.limits.memory_bytes,
                linear: 0,
                exceeded: false,
            },
            config: inv.config.clone(),
            tag: inv.tag.clone(),
            deadline: Instant::now(),
            features: inv.features.clone(),
            offline: inv.offline,
            nn: inv.models.as_ref().map(|m| m.wasi_nn()),
            models: inv.models.clone(),
            egress: inv.egress.clone(),
            events: inv.events.clone(),
            datasets: inv.datasets.clone(),
            published: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // On every epoch tick a running guest yields to the executor, so a busy
        // guest never holds a runtime thread for more than a tick, and traps once
        // past its deadline.
        store.epoch_deadline_callback(|ctx| {
            if ctx.data().limiter.exceeded {
                wasmtime::bail!("memory limit exceeded by host-side tensors");
            }
            Ok(match Instant::now() >= ctx.data().deadline {
                true => UpdateDeadline::Interrupt,
                false => UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())),
            })
        });
        // Instantiation runs under the same deadline as a call.
        Self::deadline(inv, &mut store);
        store
    }

    fn classify(inv: &Invocation, store: &Store<HostState>, err: wasmtime::Error) -> InvokeError {
        if store.data().limiter.exceeded {
            return InvokeError::Memory(bytesize::ByteSize(inv.limits.memory_bytes as u64));
        }
        if Self::past_deadline(store) {
            return InvokeError::Timeout(inv.limits.timeout);
        }
        if let Some(e) = err.downcast_ref::<wasmtime::component::ResourceTableError>() {
            if matches!(e, wasmtime::component::ResourceTableError::Full) {
                return InvokeError::Guest(
                    format!("the function holds {MAX_RESOURCES} host resources at once, the most a call may: drop the ones it no longer uses"),
                    GuestErrorKind::LimitExceeded,
                );
            }
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => InvokeError::Timeout(inv.limits.timeout),
            Some(trap) => InvokeError::Trap(trap.to_string()),
            None => InvokeError::Trap(format!("{err}")),
        }
    }

    /// The call ran past its deadline: whatever it returned (a guest error after a
    /// wasi-nn run was cut off at the deadline, say), it timed out.
    fn past_deadline(store: &Store<HostState>) -> bool {
        Instant::now() >= store.data().deadline
    }

    /// For benchmarks: the cost of a store alone.
    #[doc(hidden)]
    pub fn store_only(&self, inv: &Invocation) -> usize {
        self.store(inv).data().limiter.limit
    }

    /// For benchmarks: a store plus instantiation, no call.
    #[doc(hidden)]
    pub async fn instantiate_only(
        &self,
        pre: &TransformPre<HostState>,
        inv: &Invocation,
    ) -> wasmtime::Result<()> {
        let mut store = self.store(inv);
        pre.instantiate_async(&mut store).await.map(|_| ())
    }

    /// A warm instance from the deployment's pool, or a new one.
    async fn checkout(&self, inv: &Invocation, pre: Pre<'_>) -> Result<Warm, InvokeError> {
        if let Some(mut warm) = inv.pool.take() {
            warm.busy = Some(Busy::new(&inv.pool));
            return Ok(warm);
        }
        let busy = Busy::new(&inv.pool);
        let _span = crate::trace::span("instantiate").attr("quiver.deployment", inv.tag.clone());
        let mut store = self.store(inv);
        let instance = match pre {
            Pre::Ingest(p) => p
                .instantiate_async(&mut store)
                .await
                .map(WarmInstance::Ingest),
            Pre::Transform(p) => p
                .instantiate_async(&mut store)
                .await
                .map(WarmInstance::Transform),
            Pre::Inference(p) => p
                .instantiate_async(&mut store)
                .await
                .map(WarmInstance::Inference),
            Pre::Monitor(p) => p
                .instantiate_async(&mut store)
                .await
                .map(WarmInstance::Monitor),
            Pre::Trainer(p) => p
                .instantiate_async(&mut store)
                .await
                .map(WarmInstance::Trainer),
            Pre::Http(p) => p
                .instantiate_async(&mut store)
                .await
                .map(WarmInstance::Http),
        };
        self.instantiations.inc();
        match instance {
            Ok(instance) => Ok(Warm {
                store,
                instance,
                busy: Some(busy),
            }),
            Err(e) => Err(Self::classify(inv, &store, e)),
        }
    }

    /// After a call: a clean return (a value or the guest's own typed error) sends the
    /// instance back to the pool; a trap, timeout or memory-limit hit discards it.
    fn settle<T>(
        inv: &Invocation,
        warm: Warm,
        result: Result<wasmtime::Result<Result<T, GuestError>>, tokio::time::error::Elapsed>,
    ) -> Result<T, InvokeError> {
        let s = warm.store.data();
        if let Some(sink) = &s.logs {
            sink.flush(&s.trace_id, &s.stdout, &s.stderr);
        }
        match result {
            Err(_) => Err(InvokeError::Timeout(inv.limits.timeout)),
            Ok(Ok(Err(_))) if Self::past_deadline(&warm.store) => {
                Err(InvokeError::Timeout(inv.limits.timeout))
            }
            Ok(Ok(returned)) => {
                inv.pool.put(warm);
                returned.map_err(InvokeError::from)
            }
            Ok(Err(e)) => Err(Self::classify(inv, &warm.store, e)),
        }
    }

    /// A guest call in a span of its own, the current context while it runs (so the
    /// host calls it makes are its children).
    async fn guest<F: std::future::Future>(inv: &Invocation, call: F) -> F::Output {
        let span = crate::trace::span("guest").attr("quiver.deployment", inv.tag.clone());
        span.scope(call).await
    }

    /// Arm the deadline for one call; returns the host-side backstop timeout.
    fn deadline(inv: &Invocation, store: &mut Store<HostState>) -> Duration {
        let state = store.data_mut();
        state.deadline = Instant::now() + inv.limits.timeout;
        // Read here, in the calling task: an http guest's call runs in a task of its own.
        state.trace_id = crate::trace::current().map_or_else(String::new, |c| c.trace_id());
        store.set_epoch_deadline(1);
        inv.limits.timeout + Duration::from_millis(250)
    }

    /// For benchmarks: a call that never reuses an instance (the pool is emptied after).
    #[doc(hidden)]
    pub async fn transform_fresh(
        &self,
        pre: &TransformPre<HostState>,
        inv: &Invocation,
        input: &Batch,
    ) -> Result<Batch, InvokeError> {
        let out = self.transform(pre, inv, input).await;
        drop(inv.pool.take());
        out
    }

    pub async fn transform(
        &self,
        pre: &TransformPre<HostState>,
        inv: &Invocation,
        input: &Batch,
    ) -> Result<Batch, InvokeError> {
        let mut warm = self.checkout(inv, Pre::Transform(pre)).await?;
        let limit = Self::deadline(inv, &mut warm.store);
        let result = match &warm.instance {
            WarmInstance::Transform(t) => {
                tokio::time::timeout(
                    limit,
                    Self::guest(inv, t.call_transform(&mut warm.store, input)),
                )
                .await
            }
            _ => return Err(InvokeError::Host(anyhow::anyhow!("not a transform"))),
        };
        Self::settle(inv, warm, result)
    }

    pub async fn infer(
        &self,
        pre: &InferencePre<HostState>,
        inv: &Invocation,
        input: &Batch,
    ) -> Result<Batch, InvokeError> {
        let mut warm = self.checkout(inv, Pre::Inference(pre)).await?;
        let limit = Self::deadline(inv, &mut warm.store);
        let result = match &warm.instance {
            WarmInstance::Inference(f) => {
                tokio::time::timeout(
                    limit,
                    Self::guest(inv, f.call_infer(&mut warm.store, input)),
                )
                .await
            }
            _ => {
                return Err(InvokeError::Host(anyhow::anyhow!(
                    "not an inference function"
                )))
            }
        };
        Self::settle(inv, warm, result)
    }

    /// A monitor's report on what a function took in and gave back.
    pub async fn observe(
        &self,
        pre: &MonitorPre<HostState>,
        inv: &Invocation,
        inputs: &Batch,
        outputs: &Batch,
    ) -> Result<Report, InvokeError> {
        let mut warm = self.checkout(inv, Pre::Monitor(pre)).await?;
        let limit = Self::deadline(inv, &mut warm.store);
        let result = match &warm.instance {
            WarmInstance::Monitor(m) => {
                tokio::time::timeout(
                    limit,
                    Self::guest(inv, m.call_observe(&mut warm.store, inputs, outputs)),
                )
                .await
            }
            _ => return Err(InvokeError::Host(anyhow::anyhow!("not a monitor"))),
        };
        Self::settle(inv, warm, result)
    }

    /// A trainer's model, trained on `dataset` with `params`.
    pub async fn train(
        &self,
        pre: &TrainerPre<HostState>,
        inv: &Invocation,
        dataset: &Batch,
        params: &[(String, String)],
    ) -> Result<ModelArtifact, InvokeError> {
        let mut warm = self.checkout(inv, Pre::Trainer(pre)).await?;
        let limit = Self::deadline(inv, &mut warm.store);
        let result = match &warm.instance {
            WarmInstance::Trainer(t) => {
                tokio::time::timeout(
                    limit,
                    Self::guest(inv, t.call_train(&mut warm.store, dataset, params)),
                )
                .await
            }
            _ => return Err(InvokeError::Host(anyhow::anyhow!("not a trainer"))),
        };
        Self::settle(inv, warm, result)
    }

    pub async fn ingest(
        &self,
        pre: &IngestPre<HostState>,
        inv: &Invocation,
        content_type: &str,
        body: &[u8],
    ) -> Result<Ingested, InvokeError> {
        let mut warm = self.checkout(inv, Pre::Ingest(pre)).await?;
        let limit = Self::deadline(inv, &mut warm.store);
        let result = match &warm.instance {
            WarmInstance::Ingest(i) => {
                tokio::time::timeout(
                    limit,
                    Self::guest(inv, i.call_ingest(&mut warm.store, content_type, body)),
                )
                .await
            }
            _ => return Err(InvokeError::Host(anyhow::anyhow!("not an ingest"))),
        };
        Self::settle(inv, warm, result)
    }

    /// Serve one request with a `wasi:http/proxy` component: a fresh instance, or
    /// (with `instance_reuse`) one that served an earlier request and returned cleanly.
    /// `ticket` (the request's admission slot) is held by the guest's task for its
    /// whole run, which may outlast this call (a streamed body, a client that went
    /// away): a guest never runs without counting against its function's capacity.
    pub async fn http(
        &self,
        pre: &ProxyPre<HostState>,
        inv: &Invocation,
        req: hyper::Request<bytes::Bytes>,
        ticket: impl Send + 'static,
    ) -> Result<hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>, InvokeError> {
        use http_body_util::BodyExt as _;
        use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
        let mut warm = self.checkout(inv, Pre::Http(pre)).await?;
        let limit = Self::deadline(inv, &mut warm.store);
        let req = req.map(|b| {
            http_body_util::Full::new(b)
                .map_err(|never: std::convert::Infallible| -> ErrorCode { match never {} })
        });
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = warm
            .store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(|e| InvokeError::Host(e.into()))?;
        let out = warm
            .store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(|e| InvokeError::Host(e.into()))?;
        let inv2 = inv.clone();
        // The guest may keep streaming the body after it set the response, so the call
        // runs in its own task (in the call's trace: task-locals do not cross a
        // spawn); the instance goes back to the pool when it returns.
        let context = crate::trace::current();
        let run = async move {
            let _ticket = ticket;
            let WarmInstance::Http(proxy) = &warm.instance else {
                return Err(InvokeError::Host(anyhow::anyhow!("not a wasi:http proxy")));
            };
            let call = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut warm.store, req, out);
            let result = tokio::time::timeout(limit, Self::guest(&inv2, call)).await;
            Self::settle(&inv2, warm, result.map(|r| r.map(Ok)))
        };
        let task = tokio::task::spawn(async move {
            match context {
                Some(c) => c.scope(run).await,
                None => run.await,
            }
        });
        match tokio::time::timeout(inv.limits.timeout, receiver).await {
            Err(_) => {
                task.abort();
                Err(InvokeError::Timeout(inv.limits.timeout))
            }
            Ok(Ok(Ok(resp))) => Ok(resp),
            Ok(Ok(Err(code))) => Err(InvokeError::Trap(format!(
                "the component answered with error {code:?}"
            ))),
            Ok(Err(_)) => match task.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(InvokeError::BadOutput(
                    "the component never set a response".into(),
                )),
                Err(e) => Err(InvokeError::Host(e.into())),
            },
        }
    }
}
