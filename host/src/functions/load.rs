//! Loading: the deployment serving a name, from memory or from the registry (AOT
//! artifact, manifest, models, pipeline stages).

use super::{split_ref, DeployError, Deployment, DeploymentBody, DeploymentKey, Functions};
use crate::admission::Admission;
use crate::manifest::{Manifest, ResolvedLimits};
use crate::nn::{BoundModel, BoundModels};
use crate::runtime::{Invocation, Prepared};
use crate::scaler::Lifecycle;
use anyhow::Context as _;
use quiver_registry::VersionRecord;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

impl Functions {
    /// The deployment serving `target` (or its pinned version), loaded on first
    /// use; while a rollout of a model it binds by alias runs, the candidate's
    /// variant for the share of calls the rollout's step gives it.
    pub async fn get(
        self: &Arc<Self>,
        target: &crate::tenancy::FunctionRef,
    ) -> Result<Arc<Deployment>, DeployError> {
        let d = self.get_base(target).await?;
        match self.rollouts.pick(&d.record.tenant, &d.alias_models) {
            Some(candidate) => self.variant(&d, candidate).await,
            None => Ok(d),
        }
    }

    /// `d` loaded again with `candidate` bound in its alias' place (and a
    /// pipeline's stages that bind it too), kept until the rollout ends.
    pub async fn variant(
        self: &Arc<Self>,
        d: &Arc<Deployment>,
        candidate: crate::rollout::ModelOverride,
    ) -> Result<Arc<Deployment>, DeployError> {
        let r = &d.record;
        let key = (
            r.tenant.clone(),
            r.name.clone(),
            r.version.clone(),
            candidate.key(),
        );
        let known = self.variants.lock().ok().and_then(|v| v.get(&key).cloned());
        if let Some(v) = known {
            return Ok(v);
        }
        // Two first calls may both load it: the second insert wins, both serve.
        let v = Box::pin(self.load_uncached(r.clone(), Some(&candidate))).await?;
        if let Ok(mut variants) = self.variants.lock() {
            variants.insert(key, v.clone());
        }
        Ok(v)
    }

    async fn get_base(
        self: &Arc<Self>,
        target: &crate::tenancy::FunctionRef,
    ) -> Result<Arc<Deployment>, DeployError> {
        let (tenant, name, version) = (target.tenant.as_str(), target.name(), target.version());
        let poisoned = || DeployError::Internal(anyhow::anyhow!("deployment cache poisoned"));
        match version {
            None => {
                let key = format!("{tenant}/{name}");
                if let Some(d) = self.serving.read().map_err(|_| poisoned())?.get(&key) {
                    return Ok(d.clone());
                }
                // A traffic split picks a version per call (and is never cached as
                // serving, so the lookup above misses while one is set).
                if let Some(split) = self.split(tenant, name).await? {
                    let version = super::traffic::pick(&split);
                    let pinned = crate::tenancy::FunctionRef::new(
                        target.tenant.clone(),
                        name,
                        Some(&version),
                    )
                    .map_err(|e| DeployError::Internal(anyhow::anyhow!("{e:?}")))?;
                    return Box::pin(self.get_base(&pinned)).await;
                }
                // A deploy or rollback that lands while this loads bumps the
                // generation: what this request resolved may be stale by then, so it
                // serves this request (it was serving when asked) but is not cached
                // as serving; the next request resolves afresh.
                let generation = self.serving_generation.load(Ordering::Acquire);
                let record = self.resolve(tenant, name, None).await?;
                let d = self.load(record).await?;
                let mut serving = self.serving.write().map_err(|_| poisoned())?;
                if self.serving_generation.load(Ordering::Acquire) == generation {
                    serving.insert(key, d.clone());
                }
                Ok(d)
            }
            Some(v) => {
                let key = (tenant.to_string(), name.to_string(), v.to_string());
                if let Some(d) = self.loaded.lock().map_err(|_| poisoned())?.get(&key) {
                    return Ok(d.clone());
                }
                let record = self.resolve(tenant, name, Some(v)).await?;
                self.load(record).await
            }
        }
    }

    fn cached(&self, key: &DeploymentKey) -> Result<Option<Arc<Deployment>>, DeployError> {
        let loaded = self
            .loaded
            .lock()
            .map_err(|_| DeployError::Internal(anyhow::anyhow!("poisoned")))?;
        Ok(loaded.get(key).cloned())
    }

    /// Load a Cold deployment once, however many requests ask at the same time
    /// (single flight per version); counts and times the cold start.
    fn load(
        self: &Arc<Self>,
        record: VersionRecord,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Arc<Deployment>, DeployError>> + Send + '_>,
    > {
        Box::pin(async move {
            let key = (
                record.tenant.clone(),
                record.name.clone(),
                record.version.clone(),
            );
            if let Some(d) = self.cached(&key)? {
                return Ok(d);
            }
            let gate = match self.loading.lock() {
                Ok(mut loading) => loading.entry(key.clone()).or_default().clone(),
                Err(_) => return Err(DeployError::Internal(anyhow::anyhow!("poisoned"))),
            };
            let _turn = gate.lock().await;
            if let Some(d) = self.cached(&key)? {
                return Ok(d);
            }
            let started = Instant::now();
            let generation = self.serving_generation.load(Ordering::Acquire);
            let mut span = crate::trace::span("cold_start")
                .attr("quiver.function", key.1.clone())
                .attr("quiver.version", key.2.clone());
            let loaded = span.scope(self.load_uncached(record, None)).await;
            if let Err(e) = &loaded {
                span.fail(e.to_string());
            }
            drop(span);
            if let Ok(mut loading) = self.loading.lock() {
                loading.remove(&key);
            }
            let d = loaded?;
            // A delete that landed while this loaded must not see its version come
            // back: check the version is still there before keeping it.
            if self.serving_generation.load(Ordering::Acquire) != generation {
                let (t, n, v) = key.clone();
                if self
                    .registry_call(move |r| r.index().get(&t, &n, &v))
                    .await?
                    .is_none()
                {
                    return Err(DeployError::Registry(
                        quiver_registry::RegistryError::NotFound(format!(
                            "function `{}@{}` was deleted",
                            key.1, key.2
                        )),
                    ));
                }
            }
            self.loaded
                .lock()
                .map_err(|_| DeployError::Internal(anyhow::anyhow!("poisoned")))?
                .insert(key.clone(), d.clone());
            self.cold_starts.with_label_values(&[&key.0, &key.1]).inc();
            self.cold_start_seconds
                .with_label_values(&[&key.0, &key.1])
                .observe(started.elapsed().as_secs_f64());
            Ok(d)
        })
    }

    /// Build a deployment from its registry record (the caller caches it); with
    /// `variant`, the candidate of a rollout bound where the manifest names its
    /// model's alias.
    async fn load_uncached(
        self: &Arc<Self>,
        record: VersionRecord,
        variant: Option<&crate::rollout::ModelOverride>,
    ) -> Result<Arc<Deployment>, DeployError> {
        // A pull is checked like a deploy: the tenant may have come to trust signers
        // since, or the index may have been changed under the host.
        if record.kind != "pipeline" {
            self.check_signatures(&record.tenant, record.digest()?, None)
                .await?;
        }
        let mut manifest = Manifest::parse(&record.manifest).map_err(DeployError::Internal)?;
        let mut alias_models = Vec::new();
        for r in manifest.model_refs().map_err(DeployError::Internal)? {
            if let crate::manifest::ModelPin::Alias(alias) = &r.pin {
                if let Some(v) = variant.filter(|v| v.model == r.name && v.alias == *alias) {
                    manifest
                        .models
                        .insert(r.alias.clone(), format!("{}@={}", v.model, v.version));
                }
                alias_models.push((r.name.clone(), alias.clone()));
            }
        }
        let mut limits: ResolvedLimits = manifest.limits().map_err(DeployError::Internal)?;
        if let Some(t) = self.tenancy.find(&record.tenant) {
            limits = t.quota.ceiling(limits);
        }
        let scaling = manifest.scaling().map_err(DeployError::Internal)?;
        let cache_ttl = manifest.cache_ttl().map_err(DeployError::Internal)?;
        let http_trigger = manifest.http_trigger();
        let public = manifest.http_public();
        let tap = manifest.monitor_tap().map_err(DeployError::Internal)?;
        let windows = manifest.report_windows().map_err(DeployError::Internal)?;
        let log = manifest.dataset_log().map_err(DeployError::Internal)?;
        let trainer = manifest
            .trainer()
            .map_err(DeployError::Internal)?
            .map(Arc::new);
        let lifecycle = Mutex::new(Lifecycle::new(
            scaling.idle_timeout,
            scaling.min_instances,
            Instant::now(),
        ));
        let tag = format!("{}/{}@{}", record.tenant, record.name, record.version);
        let mut invocation = Invocation::new(
            limits,
            &tag,
            match scaling.instance_reuse {
                true => scaling.max_instances as usize,
                false => 0,
            },
        );
        // Looked up once here: every call of this deployment is metered through it.
        let usage = self.usage_of(&record.tenant);
        crate::capability::configure_all(self, &record, &manifest, usage.clone(), &mut invocation)
            .await?;
        // One instance serves one call at a time, so a component runs at most
        // `max_instances` calls; a pipeline's own limit is `max_concurrency`.
        let capacity = match record.kind.as_str() {
            "pipeline" => scaling.max_concurrency,
            _ => scaling.max_concurrency.min(scaling.max_instances),
        };
        let admission = Admission::new(capacity, scaling.max_queue, scaling.queue_timeout);
        let manifest_inference = manifest.inference.clone();
        let body = if record.kind == "pipeline" {
            let mut stages = Vec::new();
            for stage in manifest.pipeline.map(|p| p.stages).unwrap_or_default() {
                let (name, v) = split_ref(&stage);
                let rec = self.resolve(&record.tenant, name, v).await?;
                let stage = self.load(rec).await?;
                for binding in &stage.alias_models {
                    if !alias_models.contains(binding) {
                        alias_models.push(binding.clone());
                    }
                }
                let stage = match variant {
                    Some(v)
                        if stage
                            .alias_models
                            .contains(&(v.model.clone(), v.alias.clone())) =>
                    {
                        self.variant(&stage, v.clone()).await?
                    }
                    _ => stage,
                };
                stages.push(stage);
            }
            DeploymentBody::Pipeline(stages)
        } else {
            let digest = record.digest()?;
            let code_key = crate::runtime::Runtime::code_key(&record.tenant, &digest.hex());
            if !self.runtime.has_code(&code_key) {
                self.pull_precompiled(&record, &code_key).await;
            }
            // With the code at hand, the component's bytes are only needed if it
            // fails to load (then fetched on the blocking thread below).
            if !self.runtime.has_code(&code_key) {
                self.ensure_local(crate::oci::Artifact::Component, &record)
                    .await?;
            }
            let this = self.clone();
            let rec = record.clone();
            let handle = tokio::runtime::Handle::current();
            let prepared = tokio::task::spawn_blocking(move || -> anyhow::Result<Prepared> {
                let component = this.runtime.component(&code_key, || {
                    if !this.registry.blobs().has(&digest) {
                        handle
                            .block_on(this.ensure_local(crate::oci::Artifact::Component, &rec))
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                    }
                    Ok(this.registry.blobs().get(&digest)?)
                })?;
                this.runtime.prepare(&rec.kind, &component)
            })
            .await
            .map_err(|e| DeployError::Internal(e.into()))?
            .context("loading component")
            .map_err(DeployError::Internal)?;
            DeploymentBody::Component(prepared)
        };
        // The serving version and every model version it binds (a pipeline: its
        // stages') key its cached results, so a new version or model starts afresh.
        let bound: Vec<&Arc<BoundModels>> = match &body {
            DeploymentBody::Pipeline(stages) => stages
                .iter()
                .filter_map(|s| s.invocation.models.as_ref())
                .collect(),
            DeploymentBody::Component(_) => invocation.models.iter().collect(),
        };
        let model_versions = bound
            .iter()
            .flat_map(|m| &m.models)
            .map(|m| format!("{}@{}", m.name, m.version))
            .collect::<Vec<_>>()
            .join(",");
        let mut cache_identity = Vec::new();
        if cache_ttl.is_some() {
            let r = &record;
            cache_identity = vec![
                r.tenant.clone(),
                r.name.clone(),
                r.version.clone(),
                r.digest.clone(),
            ];
            for m in bound.iter().flat_map(|m| &m.models) {
                cache_identity.push(format!("{}@{}:{}", m.name, m.version, m.digest));
            }
        }
        let predicted = match (record.kind.as_str(), &manifest_inference) {
            ("inference", Some(inf)) => {
                let outputs: Vec<String> = inf
                    .outputs
                    .iter()
                    .filter(|o| matches!(o.datatype.as_str(), "FP64" | "FP32"))
                    .map(|o| o.name.clone())
                    .collect();
                (!outputs.is_empty()).then_some(super::ml_metrics::Predicted { outputs })
            }
            _ => None,
        };
        Ok(Arc::new(Deployment {
            alias_models,
            variant: variant.map(|v| v.key()),
            trainer,
            predicted,
            model_versions,
            http_trigger,
            public,
            tap,
            windows,
            log,
            usage,
            record,
            body,
            invocation,
            lifecycle,
            admission,
            cache_ttl,
            cache_identity,
        }))
    }

    /// The models a deployment pinned, from the model cache (parsed if no warm
    /// deployment holds them), bound for `load-by-name`.
    pub(crate) async fn load_models(
        self: &Arc<Self>,
        tenant: &str,
        manifest: &Manifest,
    ) -> Result<Arc<BoundModels>, DeployError> {
        let inference = manifest.inference().map_err(DeployError::Internal)?;
        let mut bound = Vec::new();
        for r in manifest.model_refs().map_err(DeployError::Internal)? {
            let rec = self.resolve_model_ref(tenant, &r).await?;
            self.ensure_local(crate::oci::Artifact::Model, &rec).await?;
            let this = self.clone();
            let digest = rec.digest()?;
            let target = inference.target.clone();
            let model = tokio::task::spawn_blocking(move || {
                this.models.get(&digest.hex(), &target, || {
                    Ok(this.registry.blobs().get(&digest)?)
                })
            })
            .await
            .map_err(|e| DeployError::Internal(e.into()))?
            .map_err(|e| {
                DeployError::Internal(
                    e.context(format!("loading model {}@{}", rec.name, rec.version)),
                )
            })?;
            let info = BoundModel {
                alias: r.alias.clone(),
                name: rec.name.clone(),
                version: rec.version.clone(),
                digest: rec.digest.clone(),
                inputs: model.inputs.clone(),
                outputs: model.outputs.clone(),
            };
            bound.push((info, model));
        }
        let scaling = manifest.scaling().map_err(DeployError::Internal)?;
        Ok(Arc::new(BoundModels::new(
            tenant,
            inference.batching,
            self.models.pool(),
            scaling.max_concurrency.min(scaling.max_instances) as usize,
            bound,
        )))
    }
}
