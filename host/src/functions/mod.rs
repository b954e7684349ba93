//! Deployments: turn registry versions into ready-to-run functions and pipelines,
//! and run them. Triggers (HTTP today) call `Functions`; they never see wasmtime.

use crate::admission::{Admission, Rejected, Slot};
use crate::bindings::{Batch, RejectedRow};
use crate::convert;
use crate::features::{FeatureBackend, ResultCache};
use crate::nn::ModelCache;
use crate::runtime::{Invocation, InvokeError, Prepared, Runtime};
use crate::scaler::Lifecycle;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use quiver_registry::{Registry, RegistryError, VersionRecord};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

mod deploy;
mod load;
mod ml_metrics;
mod retention;
mod rollouts;
mod traffic;
mod training;
pub use traffic::{pick_version, with_route_key, MAX_ROUTE_KEY};

pub use retention::GcSummary;
pub use rollouts::{describe as describe_rollout, spawn_analysis, ROLLOUT_TICK};

/// A deployed version, ready to invoke.
pub struct Deployment {
    pub record: VersionRecord,
    pub body: DeploymentBody,
    invocation: Invocation,
    lifecycle: Mutex<Lifecycle>,
    admission: Admission,
    /// `[cache] ttl`: identical inputs are answered from the result cache.
    pub cache_ttl: Option<std::time::Duration>,
    /// What keys its cached results besides the input (built once, at load).
    cache_identity: Vec<String>,
    /// `[triggers] http`: the HTTP routes serve it (else only pipelines run it).
    pub http_trigger: bool,
    /// `[triggers] http = "public"`: callers need no token.
    pub public: bool,
    /// Where its tenant's usage is counted (the counters outlive quota changes).
    pub usage: Option<crate::tenancy::Usage>,
    /// `[pipeline] monitor`: each successful call is offered to this monitor.
    pub tap: Option<crate::manifest::MonitorTap>,
    /// `[monitor]`: how a monitor's reports are windowed and kept.
    pub windows: crate::manifest::ReportWindows,
    /// `[datasets] log`: its predictions go to the dataset store.
    pub log: Option<crate::datasets::LogPolicy>,
    /// An inference function's declared numeric outputs, observed per model version.
    pub predicted: Option<ml_metrics::Predicted>,
    /// The model versions it (a pipeline: its stages) binds, `name@version`
    /// comma-separated (empty: none).
    pub model_versions: String,
    /// `[trainer]` of a trainer function.
    pub trainer: Option<Arc<crate::manifest::TrainerSpec>>,
    /// The models it (a pipeline: its stages) binds by alias: (model, alias).
    pub alias_models: Vec<(String, String)>,
    /// A rollout's candidate bound in an alias' place (`model@alias=version`).
    pub variant: Option<String>,
}

impl Deployment {
    /// Does a call of it run models (an inference function, or a pipeline with one)?
    pub fn runs_models(&self) -> bool {
        match &self.body {
            DeploymentBody::Pipeline(stages) => stages.iter().any(|s| s.runs_models()),
            DeploymentBody::Component(_) => self.invocation.models.is_some(),
        }
    }
}

/// Marks a request in flight on a deployment (and a pipeline's stages) until dropped,
/// so errors and cancelled requests count as finished too.
pub struct InFlight(Vec<Arc<Deployment>>);

/// An admitted request: a slot of the deployment's capacity, and in flight.
pub struct Ticket {
    _slot: Slot,
    _in_flight: InFlight,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = Instant::now();
        for d in &self.0 {
            if let Ok(mut l) = d.lifecycle.lock() {
                l.finished(now);
            }
        }
    }
}

/// What `quiver ls` shows of a loaded deployment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveState {
    pub state: &'static str,
    pub in_flight: u32,
    pub queued: u32,
    pub busy_instances: usize,
    pub idle_instances: usize,
}

pub enum DeploymentBody {
    Component(Prepared),
    /// Stages resolved to exact versions at deploy time.
    Pipeline(Vec<Arc<Deployment>>),
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Invalid(String),
    /// The tenant requires a signature by a key it trusts, and there is none.
    #[error("{0}")]
    Unsigned(String),
    /// A signature came with the deploy and does not verify.
    #[error("{0}")]
    BadSignature(String),
    /// The OCI registry failed, or sent what does not match the index.
    #[error("{0:#}")]
    Upstream(anyhow::Error),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

/// What a function or pipeline runs on.
pub enum Input<'a> {
    /// A request body: raw for an ingest first stage, else JSON rows.
    Body {
        content_type: &'a str,
        body: &'a [u8],
    },
    /// Columns already typed (Open Inference Protocol tensors, batch scoring).
    Batch(Batch),
}

/// The result of running a function or pipeline on one request.
pub struct Output {
    pub rows: Vec<Value>,
    pub rejected: Vec<RejectedRow>,
    /// A monitor's answer: its report and the window it went into.
    pub report: Option<Value>,
}

/// (tenant, name, version)
type DeploymentKey = (String, String, String);

/// (tenant, name, version, `model@alias=version`)
type VariantKey = (String, String, String, String);

/// The stores deployments reach through their capabilities.
pub struct Stores {
    /// Where artifacts are pushed and pulled from (`--registry oci://…`), if anywhere
    /// beyond the data dir.
    pub oci: Option<Arc<crate::oci::OciStore>>,
    pub features: Arc<dyn FeatureBackend>,
    pub models: Arc<ModelCache>,
    pub events: Arc<dyn crate::events::Bus>,
    pub reports: Arc<crate::monitors::Reports>,
    pub datasets: Arc<crate::datasets::Datasets>,
    pub logs: Arc<crate::logs::Logs>,
}

pub struct Functions {
    registry: Arc<Registry>,
    events: Arc<dyn crate::events::Bus>,
    reports: Arc<crate::monitors::Reports>,
    datasets: Arc<crate::datasets::Datasets>,
    logs: Arc<crate::logs::Logs>,
    ml: ml_metrics::MlMetrics,
    taps: crate::monitors::Taps,
    runtime: Arc<Runtime>,
    loaded: Mutex<HashMap<DeploymentKey, Arc<Deployment>>>,
    /// One gate per version being loaded, so concurrent cold requests load it once.
    loading: Mutex<HashMap<DeploymentKey, Arc<tokio::sync::Mutex<()>>>>,
    cold_starts: IntCounterVec,
    cold_start_seconds: HistogramVec,
    instances: IntGaugeVec,
    queue_depth: IntGaugeVec,
    /// `tenant/name` -> the deployment its `stable` channel points at. Versions are
    /// immutable and this process is the only writer of the embedded index, so the
    /// entry stays right until this process deploys or rolls back that name.
    serving: RwLock<HashMap<String, Arc<Deployment>>>,
    /// Bumped by every deploy, rollback, delete and scale-to-zero that changes what
    /// serves: a cold load that started before it must not cache its result as
    /// serving (see `get`).
    serving_generation: AtomicU64,
    /// Running model rollouts: how they route, what each arm did.
    rollouts: crate::rollout::Rollouts,
    /// Deployments loaded with a rollout's candidate in an alias' place, by
    /// (tenant, name, version, `model@alias=version`); dropped when it ends.
    variants: Mutex<HashMap<VariantKey, Arc<Deployment>>>,
    /// Traffic splits and shadows read from the registry, by `tenant/name`.
    splits: RwLock<HashMap<String, traffic::Routing>>,
    feature_store: Arc<dyn FeatureBackend>,
    result_cache: ResultCache,
    models: Arc<ModelCache>,
    models_resident: IntGauge,
    model_parses: prometheus::IntCounter,
    /// Per loaded inference deployment: wasi-nn compute calls and backend runs
    /// (fewer runs than calls: dynamic batching stacked them).
    inference_calls: IntGaugeVec,
    inference_runs: IntGaugeVec,
    max_component_size: usize,
    tenancy: Arc<crate::tenancy::Tenancy>,
    oci: Option<Arc<crate::oci::OciStore>>,
}

impl Functions {
    pub fn new(
        registry: Arc<Registry>,
        runtime: Arc<Runtime>,
        stores: Stores,
        tenancy: Arc<crate::tenancy::Tenancy>,
        max_component_size: usize,
    ) -> anyhow::Result<Self> {
        let Stores {
            oci,
            features: feature_store,
            models,
            events,
            reports,
            datasets,
            logs,
        } = stores;
        let cold_starts = IntCounterVec::new(
            Opts::new("quiver_cold_starts_total", "Loads of a Cold deployment"),
            &["tenant", "function"],
        )?;
        let cold_start_seconds = HistogramVec::new(
            HistogramOpts::new(
                "quiver_cold_start_seconds",
                "Time to load a Cold deployment (AOT artifact or compile, link, pre-instantiate)",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0,
            ]),
            &["tenant", "function"],
        )?;
        let instances = IntGaugeVec::new(
            Opts::new(
                "quiver_instances",
                "Instances of loaded deployments: busy (serving a call) or idle (warm, pooled)",
            ),
            &["tenant", "function", "version", "state"],
        )?;
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "quiver_queue_depth",
                "Requests waiting for capacity (max_instances / max_concurrency)",
            ),
            &["tenant", "function", "version"],
        )?;
        Ok(Functions {
            registry,
            runtime,
            loaded: Mutex::new(HashMap::new()),
            rollouts: Default::default(),
            variants: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            cold_starts,
            cold_start_seconds,
            instances,
            queue_depth,
            serving: RwLock::new(HashMap::new()),
            serving_generation: AtomicU64::new(0),
            splits: RwLock::new(HashMap::new()),
            result_cache: ResultCache::new(feature_store.clone()),
            feature_store,
            models,
            models_resident: IntGauge::new(
                "quiver_models_resident",
                "Models parsed and in memory (held by at least one warm deployment)",
            )?,
            model_parses: prometheus::IntCounter::new(
                "quiver_model_loads_total",
                "Times this host parsed and optimized a model (once per model while any user is warm)",
            )?,
            inference_calls: IntGaugeVec::new(
                Opts::new(
                    "quiver_inference_computes",
                    "wasi-nn compute calls of a loaded deployment",
                ),
                &["tenant", "function", "version"],
            )?,
            inference_runs: IntGaugeVec::new(
                Opts::new(
                    "quiver_inference_backend_runs",
                    "Backend runs of a loaded deployment's models (batches count once)",
                ),
                &["tenant", "function", "version"],
            )?,
            max_component_size,
            oci,
            tenancy,
            events,
            reports,
            datasets,
            logs,
            ml: ml_metrics::MlMetrics::new()?,
            taps: crate::monitors::Taps::new()?,
        })
    }

    /// Monitor reports, per window.
    pub fn reports(&self) -> &Arc<crate::monitors::Reports> {
        &self.reports
    }

    /// Logged predictions and their labels.
    pub fn datasets(&self) -> &Arc<crate::datasets::Datasets> {
        &self.datasets
    }

    /// Functions' captured output and log lines.
    pub fn logs(&self) -> &Arc<crate::logs::Logs> {
        &self.logs
    }

    /// Pipelines' monitor taps.
    pub fn taps(&self) -> &crate::monitors::Taps {
        &self.taps
    }

    /// The event bus (what `quiver:ml/events` publishes to).
    pub fn events(&self) -> &Arc<dyn crate::events::Bus> {
        &self.events
    }

    /// Where a tenant's usage is counted (its counters outlive quota changes).
    pub fn usage_of(&self, tenant: &str) -> Option<crate::tenancy::Usage> {
        self.tenancy.find(tenant).map(|t| t.usage.clone())
    }

    /// The scaler's metrics, for the server's Prometheus registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        let mut all: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.cold_starts.clone()),
            Box::new(self.cold_start_seconds.clone()),
            Box::new(self.instances.clone()),
            Box::new(self.queue_depth.clone()),
            Box::new(self.models_resident.clone()),
            Box::new(self.model_parses.clone()),
            Box::new(self.inference_calls.clone()),
            Box::new(self.inference_runs.clone()),
        ];
        all.extend(self.runtime.collectors());
        all.extend(self.taps.collectors());
        all.extend(self.datasets.collectors());
        all.extend(self.logs.collectors());
        all.extend(self.ml.collectors());
        all.extend(self.oci.iter().flat_map(|o| o.collectors()));
        all
    }

    /// Set the gauges from the loaded deployments (called before each scrape, so a
    /// deployment that went Cold has no series left).
    pub fn update_gauges(&self) {
        let Ok(loaded) = self.loaded.lock() else {
            return;
        };
        self.instances.reset();
        self.queue_depth.reset();
        self.models_resident.set(self.models.resident() as i64);
        self.inference_calls.reset();
        self.inference_runs.reset();
        // A counter that follows the model cache's own count.
        let (parses, seen) = (self.models.parses(), self.model_parses.get());
        if parses > seen {
            self.model_parses.inc_by(parses - seen);
        }
        for ((tenant, name, version), d) in loaded.iter() {
            let labels = [tenant.as_str(), name.as_str(), version.as_str()];
            self.queue_depth
                .with_label_values(&labels)
                .set(i64::from(d.admission.queued()));
            if let Some(models) = &d.invocation.models {
                let (calls, runs) = models.stats();
                self.inference_calls
                    .with_label_values(&labels)
                    .set(calls as i64);
                self.inference_runs
                    .with_label_values(&labels)
                    .set(runs as i64);
            }
            if let DeploymentBody::Component(_) = d.body {
                for (state, n) in [
                    ("busy", d.invocation.busy_instances()),
                    ("idle", d.invocation.idle_instances()),
                ] {
                    self.instances
                        .with_label_values(&[tenant, name, version, state])
                        .set(n as i64);
                }
            }
        }
    }

    /// The cold-start counter, by tenant and function.
    pub fn cold_start_counter(&self) -> IntCounterVec {
        self.cold_starts.clone()
    }

    /// Cold starts of `tenant/name` since this host started.
    pub fn cold_starts(&self, tenant: &str, name: &str) -> u64 {
        self.cold_starts.with_label_values(&[tenant, name]).get()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The registry, for work on a blocking thread.
    pub fn registry_handle(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn feature_store(&self) -> &Arc<dyn FeatureBackend> {
        &self.feature_store
    }

    /// The result-cache key of this input, if `d` caches its results.
    pub fn cache_key(&self, d: &Deployment, content_type: &str, body: &[u8]) -> Option<String> {
        d.cache_ttl?;
        let parts: Vec<&str> = d.cache_identity.iter().map(String::as_str).collect();
        Some(crate::features::input_hash(&parts, content_type, body))
    }

    pub async fn cached_result(&self, d: &Deployment, key: &str) -> Option<String> {
        self.result_cache.get(&d.record.tenant, key).await
    }

    pub async fn remember(&self, d: &Deployment, key: &str, response: String) {
        if let Some(ttl) = d.cache_ttl {
            self.result_cache
                .put(&d.record.tenant, key, response, ttl)
                .await;
        }
    }

    /// Wait for a slot of `d`'s capacity (bounded queue with a deadline), then count
    /// the request in flight until the ticket drops.
    pub async fn admit(&self, d: &Arc<Deployment>) -> Result<Ticket, Rejected> {
        let slot = d.admission.enter().await?;
        Ok(Ticket {
            _slot: slot,
            _in_flight: self.track(d),
        })
    }

    /// Count a request in flight on `d` until the guard drops.
    fn track(&self, d: &Arc<Deployment>) -> InFlight {
        let mut all = vec![d.clone()];
        if let DeploymentBody::Pipeline(stages) = &d.body {
            all.extend(stages.iter().cloned());
        }
        for d in &all {
            if let Ok(mut l) = d.lifecycle.lock() {
                l.started();
            }
        }
        InFlight(all)
    }

    /// Send every deployment idle past its `idle_timeout` back to Cold: its
    /// `InstancePre`, warm instances and compiled code leave memory; the registry
    /// entry and the on-disk AOT artifact stay. Returns how many went cold.
    pub fn evict_idle(&self, now: Instant) -> usize {
        self.unload_where(
            |d| {
                d.lifecycle
                    .lock()
                    .map(|l| l.should_evict(now))
                    .unwrap_or(false)
            },
            "idle: scaled to zero",
        )
    }

    /// Send every loaded deployment of `tenant` back to Cold (its quota or grants
    /// changed: the next call loads it under the new ones). Calls in flight finish
    /// as they started. Returns how many were unloaded.
    pub fn unload_tenant(&self, tenant: &crate::tenancy::TenantId, why: &str) -> usize {
        self.unload_where(|d| d.record.tenant == tenant.as_str(), why)
    }

    /// Send the loaded deployments `which` picks back to Cold: their `InstancePre`,
    /// warm instances and compiled code leave memory; the registry entry and the
    /// on-disk AOT artifact stay.
    fn unload_where(&self, which: impl Fn(&Deployment) -> bool, why: &str) -> usize {
        let Ok(mut loaded) = self.loaded.lock() else {
            return 0;
        };
        let keys: Vec<_> = loaded
            .iter()
            .filter(|(_, d)| which(d))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            if let Some(d) = loaded.remove(key) {
                self.forget_serving(&key.0, &key.1);
                if let Ok(digest) = d.record.digest() {
                    self.runtime
                        .forget_component(&Runtime::code_key(&key.0, &digest.hex()));
                }
                tracing::info!(function = %d.invocation.tag, "{why}");
            }
        }
        keys.len()
    }

    /// Live state of a version, or `None` when it is Cold.
    pub fn live_state(&self, tenant: &str, name: &str, version: &str) -> Option<LiveState> {
        let key = (tenant.to_string(), name.to_string(), version.to_string());
        let d = self.loaded.lock().ok()?.get(&key)?.clone();
        let l = d.lifecycle.lock().ok()?;
        Some(LiveState {
            state: l.phase().as_str(),
            in_flight: l.in_flight(),
            queued: d.admission.queued(),
            busy_instances: d.invocation.busy_instances(),
            idle_instances: d.invocation.idle_instances(),
        })
    }

    fn forget_serving(&self, tenant: &str, name: &str) {
        if let Ok(mut serving) = self.serving.write() {
            self.serving_generation.fetch_add(1, Ordering::AcqRel);
            serving.remove(&format!("{tenant}/{name}"));
        }
        if let Ok(mut splits) = self.splits.write() {
            splits.remove(&format!("{tenant}/{name}"));
        }
    }

    /// The version serving `name` (or `name@version`), read on a blocking thread.
    pub async fn resolve(
        &self,
        tenant: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<VersionRecord, DeployError> {
        let (t, n, v) = (
            tenant.to_string(),
            name.to_string(),
            version.map(str::to_string),
        );
        self.registry_call(move |r| r.resolve(&t, &n, v.as_deref()))
            .await
    }

    /// The highest version of model `name` that `range` accepts.
    pub async fn resolve_model(
        &self,
        tenant: &str,
        name: &str,
        range: &semver::VersionReq,
    ) -> Result<VersionRecord, DeployError> {
        let (t, n, range) = (tenant.to_string(), name.to_string(), range.clone());
        self.registry_call(move |r| r.resolve_model(&t, &n, &range))
            .await
    }

    /// The version a `[models]` entry binds now: its range's highest, or where its
    /// alias points.
    pub async fn resolve_model_ref(
        &self,
        tenant: &str,
        r: &crate::manifest::ModelRef,
    ) -> Result<VersionRecord, DeployError> {
        match &r.pin {
            crate::manifest::ModelPin::Range(range) => {
                self.resolve_model(tenant, &r.name, range).await
            }
            crate::manifest::ModelPin::Alias(alias) => {
                let (t, n, a) = (tenant.to_string(), r.name.clone(), alias.clone());
                self.registry_call(move |reg| {
                    let version = reg.model_alias(&t, &n, &a)?;
                    reg.model(&t, &n, &version)
                })
                .await
            }
        }
    }

    /// Move `alias` of model `name` to `version`, recording `actor` and `reason`;
    /// the loaded deployments that bind the model go Cold, so their next call
    /// loads what the alias points at now.
    pub async fn move_model_alias(
        &self,
        tenant: &str,
        name: &str,
        alias: &str,
        version: &str,
        actor: &str,
        reason: &str,
    ) -> Result<Option<quiver_registry::AliasMove>, DeployError> {
        let (t, n, a, v, who, why) = (
            tenant.to_string(),
            name.to_string(),
            alias.to_string(),
            version.to_string(),
            actor.to_string(),
            reason.to_string(),
        );
        let moved = self
            .registry_call(move |r| r.move_model_alias(&t, &n, &a, &v, &who, &why))
            .await?;
        if moved.is_some() {
            self.unload_model_users(tenant, name, "a model alias moved: unloaded");
        }
        Ok(moved)
    }

    /// Send the loaded deployments that bind model `name` back to Cold, so their
    /// next call loads what its aliases point at now.
    fn unload_model_users(&self, tenant: &str, name: &str, why: &str) {
        let prefix = format!("{name}@");
        self.unload_where(
            |d| {
                d.record.tenant == tenant
                    && d.model_versions.split(',').any(|m| m.starts_with(&prefix))
            },
            why,
        );
    }

    /// Run a registry call on a blocking thread (SQLite, hashing, fsync): never on an
    /// async worker, which would stall every request it polls.
    /// Refuse `digest` unless `tenant` trusts no key, or a signature it carries
    /// (kept in the registry, or `offered` with this deploy) is by a trusted key and
    /// verifies. Every stored signature is verified again: the index is not trusted
    /// more than the bytes.
    pub async fn check_signatures(
        &self,
        tenant: &str,
        digest: quiver_registry::Digest,
        offered: Option<&crate::signing::Signature>,
    ) -> Result<(), DeployError> {
        let Some(t) = self.tenancy.find(tenant) else {
            return Ok(());
        };
        if t.signers.is_empty() {
            return Ok(());
        }
        let mut signatures: Vec<crate::signing::Signature> = self
            .registry_call(move |r| r.signatures(&digest))
            .await?
            .into_iter()
            .map(|(key, signature)| crate::signing::Signature { key, signature })
            .collect();
        signatures.extend(offered.cloned());
        crate::signing::check_trusted(tenant, &t.signers, &digest.to_string(), &signatures)
            .map(|_| ())
            .map_err(DeployError::Unsigned)
    }

    /// With `--registry oci://…`, push `bytes` as `name@version` unless the index
    /// already has that version (a re-deploy, or a conflict the publish refuses:
    /// the tag must not move to other bytes). A tenant's deploys run one at a time
    /// (`deploy_turn`), so two cannot both find the version new.
    pub(crate) async fn push_artifact(
        &self,
        what: crate::oci::Artifact,
        tenant: &str,
        name: &str,
        version: &str,
        bytes: &[u8],
    ) -> Result<(), DeployError> {
        let Some(oci) = &self.oci else {
            return Ok(());
        };
        let (t, n, v) = (tenant.to_string(), name.to_string(), version.to_string());
        if self
            .registry_call(move |r| r.index().get(&t, &n, &v))
            .await?
            .is_some()
        {
            return Ok(());
        }
        let pushed = match what {
            crate::oci::Artifact::Component => {
                oci.push_component(tenant, name, version, bytes.to_vec())
                    .await
            }
            crate::oci::Artifact::Model => {
                oci.push_model(tenant, name, version, bytes.to_vec()).await
            }
            crate::oci::Artifact::Precompiled => {
                return Err(DeployError::Internal(anyhow::anyhow!(
                    "precompiled code goes with its component, not on its own"
                )))
            }
        };
        let url = pushed.map_err(DeployError::Upstream)?;
        tracing::info!(tenant, name, version, manifest = %url, "pushed to the OCI registry");
        if what == crate::oci::Artifact::Component && oci.precompiled() {
            self.push_precompiled(oci, tenant, name, version, bytes)
                .await;
        }
        Ok(())
    }

    /// Push the code the deploy's check compiled (its AOT artifact) beside the
    /// component. Only saves other hosts a compile: a failure is logged, not
    /// returned.
    async fn push_precompiled(
        &self,
        oci: &crate::oci::OciStore,
        tenant: &str,
        name: &str,
        version: &str,
        bytes: &[u8],
    ) {
        let digest = quiver_registry::Digest::of(bytes);
        let key = Runtime::code_key(tenant, &digest.hex());
        let Some(code) = self.runtime.artifact(&key) else {
            tracing::warn!(
                tenant,
                name,
                version,
                "no AOT artifact to push as precompiled code"
            );
            return;
        };
        let component = digest.to_string();
        let of = crate::oci::CodeOf {
            tenant,
            name,
            version,
            component: &component,
            engine: self.runtime.engine_hash(),
        };
        match oci.push_precompiled(&of, code).await {
            Ok(url) => {
                tracing::info!(tenant, name, version, manifest = ?url, "pushed precompiled code")
            }
            Err(e) => tracing::warn!(tenant, name, version, "not pushing precompiled code: {e:#}"),
        }
    }

    /// Before a load that would compile: fetch the code another host compiled for
    /// this engine, MAC-checked, into the AOT cache. Falls back (returns) on any miss.
    async fn pull_precompiled(&self, rec: &VersionRecord, key: &str) {
        let Some(oci) = self.oci.as_ref().filter(|o| o.precompiled()) else {
            return;
        };
        let of = crate::oci::CodeOf {
            tenant: &rec.tenant,
            name: &rec.name,
            version: &rec.version,
            component: &rec.digest,
            engine: self.runtime.engine_hash(),
        };
        let (tenant, name, version) = (&rec.tenant, &rec.name, &rec.version);
        match oci.pull_precompiled(&of).await {
            Ok(code) => {
                let (runtime, key) = (self.runtime.clone(), key.to_string());
                let installed =
                    tokio::task::spawn_blocking(move || runtime.install_artifact(&key, &code))
                        .await
                        .map_err(anyhow::Error::from)
                        .and_then(|r| r);
                match installed {
                    Ok(()) => tracing::info!(tenant, name, version, "loaded precompiled code"),
                    Err(e) => {
                        tracing::warn!(tenant, name, version, "precompiled code not kept: {e:#}")
                    }
                }
            }
            Err(miss @ crate::oci::PrecompiledMiss::Refused(_)) => {
                tracing::warn!(tenant, name, version, "{miss}; compiling instead")
            }
            Err(miss) => tracing::info!(tenant, name, version, "{miss}; compiling instead"),
        }
    }

    /// Make sure the blob store holds `rec`'s bytes: with `--registry oci://…`, pull
    /// them (by digest, at most the recorded size, verified) when it does not.
    pub(crate) async fn ensure_local(
        &self,
        what: crate::oci::Artifact,
        rec: &VersionRecord,
    ) -> Result<(), DeployError> {
        let Some(oci) = &self.oci else {
            return Ok(());
        };
        let digest = rec.digest()?;
        if self.registry.blobs().has(&digest) {
            return Ok(());
        }
        let bytes = oci
            .pull_layer(
                what,
                &rec.tenant,
                &rec.name,
                &rec.version,
                &rec.digest,
                rec.size,
            )
            .await
            .map_err(DeployError::Upstream)?;
        self.registry_call(move |r| r.blobs().put(&bytes).map(|_| ()))
            .await
    }

    pub async fn registry_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, DeployError> {
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || f(&registry))
            .await
            .map_err(|e| DeployError::Internal(anyhow::anyhow!("registry task failed: {e}")))?
            .map_err(DeployError::Registry)
    }

    pub fn model_cache(&self) -> &ModelCache {
        &self.models
    }

    /// Run a typed function or a pipeline on a request body. An ingest first stage
    /// gets the raw body; otherwise the body is JSON rows.
    pub async fn invoke(
        self: &Arc<Self>,
        d: &Deployment,
        content_type: &str,
        body: &[u8],
    ) -> Result<Output, InvokeError> {
        if let (DeploymentBody::Component(Prepared::Trainer(_)), Some(spec)) = (&d.body, &d.trainer)
        {
            let outcome = self.train(d, spec, body).await?;
            return Ok(Output {
                rows: Vec::new(),
                rejected: Vec::new(),
                report: Some(outcome),
            });
        }
        if let DeploymentBody::Component(Prepared::Monitor(_)) = &d.body {
            let (inputs, outputs) = observation_of(body)?;
            let report = self.observe(d, inputs, outputs).await?;
            return Ok(Output {
                rows: Vec::new(),
                rejected: Vec::new(),
                report: Some(report),
            });
        }
        let (batch, rejected) = self.run(d, Input::Body { content_type, body }).await?;
        convert::check_response_size(&batch).map_err(InvokeError::BadOutput)?;
        let rows = convert::batch_to_rows(&batch).map_err(InvokeError::BadOutput)?;
        Ok(Output {
            rows,
            rejected,
            report: None,
        })
    }

    /// Run a monitor on (inputs, outputs); fold its report into its window. The
    /// report and the window, as JSON.
    pub async fn observe(
        &self,
        d: &Deployment,
        inputs: Batch,
        outputs: Batch,
    ) -> Result<Value, InvokeError> {
        let DeploymentBody::Component(Prepared::Monitor(pre)) = &d.body else {
            return Err(InvokeError::Guest(
                format!(
                    "`{}` is a `{}` function, not a monitor",
                    d.record.name, d.record.kind
                ),
                crate::runtime::GuestErrorKind::InvalidInput,
            ));
        };
        let report = self
            .runtime
            .observe(pre, &d.invocation, &inputs, &outputs)
            .await?;
        crate::monitors::check(&report).map_err(InvokeError::BadOutput)?;
        let r = &d.record;
        self.ml.reported(&r.tenant, &r.name, &report);
        let now_ms = crate::unix_ms();
        let rows = crate::monitors::rows(&inputs) as u64;
        let source = format!("{}@{}", r.name, r.version);
        let window = self
            .reports
            .record(
                crate::monitors::Reporter {
                    tenant: &r.tenant,
                    monitor: &r.name,
                    source: &source,
                    windows: d.windows,
                },
                now_ms,
                rows,
                &report,
            )
            .await
            .map_err(InvokeError::Host)?;
        let metrics: serde_json::Map<String, Value> = report
            .metrics
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        Ok(json!({
            "report": { "metrics": metrics, "alerts": report.alerts },
            "window": window,
        }))
    }

    /// Run a function or pipeline on its input; the last stage's batch and the rows
    /// an ingest stage rejected. A pipeline with a monitor tap offers its first
    /// stage's input (an ingest stage's: its output) and its output to the monitor.
    pub async fn run(
        &self,
        d: &Deployment,
        input: Input<'_>,
    ) -> Result<(Batch, Vec<RejectedRow>), InvokeError> {
        let stages: Vec<&Deployment> = match &d.body {
            DeploymentBody::Pipeline(stages) => stages.iter().map(|s| s.as_ref()).collect(),
            DeploymentBody::Component(_) => vec![d],
        };
        let (content_type, body, mut batch) = match input {
            Input::Body { content_type, body } => (content_type, body, None),
            Input::Batch(b) => ("", &[][..], Some(b)),
        };
        let raw = batch.is_none();
        let mut rejected = Vec::new();
        let pipeline = matches!(d.body, DeploymentBody::Pipeline(_));
        // What the tap hands the monitor as the pipeline's inputs.
        let mut tapped: Option<Batch> = None;
        for (i, stage) in stages.into_iter().enumerate() {
            // A pipeline's stages keep their own limits: wait for a slot of each.
            let _slot = match pipeline {
                true => Some(stage.admission.enter().await?),
                false => None,
            };
            let DeploymentBody::Component(prepared) = &stage.body else {
                return Err(InvokeError::Host(anyhow::anyhow!(
                    "nested pipelines are not supported"
                )));
            };
            let input = match batch.take() {
                Some(b) => b,
                None if matches!(prepared, Prepared::Ingest(_)) => Batch { fields: Vec::new() },
                None => {
                    let doc: Value = serde_json::from_slice(body).map_err(|e| {
                        InvokeError::Guest(
                            format!("invalid JSON: {e}"),
                            crate::runtime::GuestErrorKind::InvalidInput,
                        )
                    })?;
                    convert::json_to_batch(&doc).map_err(|e| {
                        InvokeError::Guest(e, crate::runtime::GuestErrorKind::InvalidInput)
                    })?
                }
            };
            let observed = d.tap.is_some() || d.log.is_some();
            if i == 0 && observed && !matches!(prepared, Prepared::Ingest(_)) {
                tapped = Some(input.clone());
            }
            if !matches!(prepared, Prepared::Ingest(_)) {
                let r = &stage.record;
                crate::metrics::HOST_CALLS
                    .batch_rows
                    .with_label_values(&[&r.tenant, &r.name])
                    .observe(crate::monitors::rows(&input) as f64);
            }
            batch = Some(match prepared {
                Prepared::Ingest(pre) => {
                    if !raw || i > 0 {
                        return Err(InvokeError::Guest(
                            "an ingest stage takes the raw request body (POST it to /fn/...)"
                                .into(),
                            crate::runtime::GuestErrorKind::InvalidInput,
                        ));
                    }
                    let out = self
                        .runtime
                        .ingest(pre, &stage.invocation, content_type, body)
                        .await?;
                    rejected.extend(out.rejected);
                    if d.tap.is_some() || d.log.is_some() {
                        tapped = Some(out.batch.clone());
                    }
                    out.batch
                }
                Prepared::Transform(pre) => {
                    self.runtime
                        .transform(pre, &stage.invocation, &input)
                        .await?
                }
                Prepared::Inference(pre) => {
                    let out = self.runtime.infer(pre, &stage.invocation, &input).await?;
                    let r = &stage.record;
                    if let Some(p) = &stage.predicted {
                        self.ml
                            .predicted(&r.tenant, &r.name, &stage.model_versions, p, &out);
                    }
                    self.rollouts
                        .observe_scores(&r.tenant, &stage.model_versions, &out);
                    out
                }
                Prepared::Http(_) => {
                    return Err(InvokeError::BadOutput(
                        "an http component is served at /http/..., not /fn/...".into(),
                    ))
                }
                Prepared::Trainer(_) => {
                    return Err(InvokeError::Guest(
                        "a trainer is run by POSTing to /fn/... (or by its triggers); it is not a stage"
                            .into(),
                        crate::runtime::GuestErrorKind::InvalidInput,
                    ))
                }
                Prepared::Monitor(_) => {
                    return Err(InvokeError::Guest(
                        "a monitor takes {\"inputs\": ..., \"outputs\": ...} (POST it to /fn/...); it is not a stage"
                            .into(),
                        crate::runtime::GuestErrorKind::InvalidInput,
                    ))
                }
                Prepared::NotInvocable(world) => {
                    return Err(InvokeError::BadOutput(format!(
                        "`{world}` functions cannot be invoked over HTTP by this host yet"
                    )))
                }
            });
        }
        let batch = batch.unwrap_or(Batch { fields: Vec::new() });
        if let (Some(policy), Some(inputs), Some(call)) = (d.log, &tapped, crate::trace::current())
        {
            let r = &d.record;
            self.datasets.log(crate::datasets::Prediction {
                tenant: r.tenant.clone(),
                function: r.name.clone(),
                version: format!("{}@{}", r.name, r.version),
                models: d.model_versions.clone(),
                request_id: call.span_id(),
                time_ms: crate::unix_ms(),
                inputs: inputs.clone(),
                outputs: batch.clone(),
                policy,
            });
        }
        if let (Some(tap), Some(inputs)) = (&d.tap, tapped) {
            let r = &d.record;
            self.taps
                .offer(&r.tenant, &r.name, tap, || crate::monitors::Observation {
                    inputs,
                    outputs: batch.clone(),
                    traceparent: crate::trace::current().map(|c| c.to_string()),
                });
        }
        Ok((batch, rejected))
    }

    pub fn invocation(d: &Deployment) -> &Invocation {
        &d.invocation
    }
}

impl Output {
    pub fn to_json(&self) -> Value {
        if let Some(report) = &self.report {
            return report.clone();
        }
        let rejected: Vec<Value> = self
            .rejected
            .iter()
            .map(|r| json!({"row": r.row, "reason": r.reason}))
            .collect();
        json!({ "rows": self.rows, "rejected": rejected })
    }
}

/// `{"inputs": ..., "outputs": ...}`, each rows (or columns) as `/fn` takes them.
fn observation_of(body: &[u8]) -> Result<(Batch, Batch), InvokeError> {
    let bad = |m: String| InvokeError::Guest(m, crate::runtime::GuestErrorKind::InvalidInput);
    let doc: Value = serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let part = |k: &str| -> Result<Batch, InvokeError> {
        let v = doc.get(k).ok_or_else(|| {
            bad(format!(
                "a monitor takes {{\"inputs\": ..., \"outputs\": ...}}; `{k}` is missing"
            ))
        })?;
        convert::json_to_batch(v).map_err(|e| bad(format!("`{k}`: {e}")))
    };
    Ok((part("inputs")?, part("outputs")?))
}

/// The largest model `quiver models push` accepts.
pub const MAX_MODEL_SIZE: usize = 512 << 20;

/// `name@version` -> (`name`, Some(`version`)).
pub fn split_ref(s: &str) -> (&str, Option<&str>) {
    match s.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    }
}

fn check_stage_kind(i: usize, rec: &VersionRecord) -> Result<(), DeployError> {
    let ok = matches!(
        (i, rec.kind.as_str()),
        (0, "ingest") | (_, "transform") | (_, "inference")
    );
    if ok {
        Ok(())
    } else {
        Err(DeployError::Invalid(format!(
            "pipeline stage {} `{}` is a `{}` function; a pipeline is an optional ingest stage followed by transforms and inference functions",
            i + 1,
            rec.name,
            rec.kind
        )))
    }
}
