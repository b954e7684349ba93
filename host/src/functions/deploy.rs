//! Deploying: validate, compile, link and publish a version; models pushed and bound;
//! rollback.

use super::{check_stage_kind, split_ref, DeployError, Functions, MAX_MODEL_SIZE};
use crate::manifest::Manifest;
use crate::tenancy::TenantId;
use quiver_registry::{validate, NewVersion, PublishOutcome, VersionRecord};
use serde_json::{json, Value};
use std::sync::Arc;

impl Functions {
    /// Validate, compile, link and publish. Nothing is published unless it would run,
    /// nor, for a tenant that trusts signers, unless it is signed by one of them.
    /// `signature` (already checked to verify over the component's digest) is kept
    /// with the digest.
    pub async fn deploy(
        self: &Arc<Self>,
        tenant: &TenantId,
        mut manifest: Manifest,
        component: Option<Vec<u8>>,
        signature: Option<crate::signing::Signature>,
    ) -> Result<(VersionRecord, PublishOutcome), DeployError> {
        let tenant = tenant.as_str();
        if let Some(bytes) = component.as_deref() {
            let digest = quiver_registry::Digest::of(bytes);
            if let Some(sig) = &signature {
                sig.verify(&digest.to_string())
                    .map_err(DeployError::BadSignature)?;
            }
            self.check_signatures(tenant, digest, signature.as_ref())
                .await?;
        } else if signature.is_some() {
            return Err(DeployError::Invalid(
                "a pipeline has no component to sign; its stages carry their own signatures".into(),
            ));
        }
        manifest
            .check()
            .map_err(|e| DeployError::Invalid(e.to_string()))?;
        let version = semver::Version::parse(&manifest.function.version)
            .map_err(|e| DeployError::Invalid(e.to_string()))?;
        let kind = manifest.function.kind.clone();
        let (bytes, world) = if kind == "pipeline" {
            if component.is_some() {
                return Err(DeployError::Invalid(
                    "a pipeline has no component; send only the manifest".into(),
                ));
            }
            // Pin each stage to the version serving now, so the pipeline is reproducible.
            let stages = manifest
                .pipeline
                .as_ref()
                .map(|p| p.stages.clone())
                .unwrap_or_default();
            let mut pinned = Vec::new();
            for (i, stage) in stages.iter().enumerate() {
                let (name, v) = split_ref(stage);
                let rec = self
                    .resolve(tenant, name, v)
                    .await
                    .map_err(|e| DeployError::Invalid(format!("pipeline stage `{stage}`: {e}")))?;
                check_stage_kind(i, &rec)?;
                pinned.push(format!("{}@{}", rec.name, rec.version));
            }
            if let Some(tap) = manifest
                .monitor_tap()
                .map_err(|e| DeployError::Invalid(e.to_string()))?
            {
                let rec = self
                    .resolve(tenant, &tap.monitor, None)
                    .await
                    .map_err(|e| {
                        DeployError::Invalid(format!("[pipeline] monitor `{}`: {e}", tap.monitor))
                    })?;
                if rec.kind != "monitor" {
                    return Err(DeployError::Invalid(format!(
                        "[pipeline] monitor `{}` is a `{}` function, not a `monitor`",
                        tap.monitor, rec.kind
                    )));
                }
            }
            if let Some(p) = manifest.pipeline.as_mut() {
                p.stages = pinned;
            }
            let text = manifest.to_toml().map_err(DeployError::Internal)?;
            (text.into_bytes(), "quiver:ml/pipeline".to_string())
        } else {
            let bytes = component.ok_or_else(|| {
                DeployError::Invalid(format!("a `{kind}` function needs a component"))
            })?;
            self.bind_models(tenant, &mut manifest).await?;
            // Validate, compile and link before publishing, on a blocking thread
            // (a 64 MiB upload takes a while to parse): a version that cannot run
            // is never stored.
            let this = self.clone();
            let (kind2, bytes2, tenant2) = (kind.clone(), bytes.clone(), tenant.to_string());
            let max_size = self.max_component_size;
            tokio::task::spawn_blocking(move || -> Result<(), DeployError> {
                let provided = crate::runtime::provided_imports(&kind2);
                validate::validate_component(&bytes2, &kind2, &provided, max_size)?;
                let digest = quiver_registry::Digest::of(&bytes2).hex();
                let component = this
                    .runtime
                    .component_transient(
                        &crate::runtime::Runtime::code_key(&tenant2, &digest),
                        || Ok(bytes2),
                    )
                    .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
                this.runtime
                    .prepare(&kind2, &component)
                    .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
                Ok(())
            })
            .await
            .map_err(|e| DeployError::Internal(e.into()))??;
            let world = validate::world_of_kind(&kind)
                .map(|(_, w)| w)
                .unwrap_or_default()
                .to_string();
            (bytes, world)
        };
        let manifest_toml = match kind.as_str() {
            "pipeline" => String::from_utf8_lossy(&bytes).into_owned(),
            _ => manifest.to_toml().map_err(DeployError::Internal)?,
        };
        if kind != "pipeline" {
            self.push_artifact(
                crate::oci::Artifact::Component,
                tenant,
                &manifest.function.name,
                &version.to_string(),
                &bytes,
            )
            .await?;
        }
        let (t, name) = (tenant.to_string(), manifest.function.name.clone());
        let published = self
            .registry_call(move |r| {
                r.publish(&NewVersion {
                    tenant: &t,
                    name: &name,
                    version: &version,
                    kind: &kind,
                    world: &world,
                    manifest: &manifest_toml,
                    bytes: &bytes,
                })
            })
            .await?;
        if let Some(sig) = signature {
            let digest = published.0.digest()?;
            self.registry_call(move |r| r.add_signature(&digest, &sig.key, &sig.signature))
                .await?;
        }
        // An identical re-deploy changes nothing, so nothing is re-resolved either.
        if published.1 == PublishOutcome::Unchanged {
            return Ok(published);
        }
        self.forget_serving(tenant, &manifest.function.name);
        Ok(published)
    }

    /// Resolve `[models]` ranges to the highest pushed versions and pin them in the
    /// manifest (`alias = "name@=1.2.0"`), so the deployment records what it bound.
    async fn bind_models(
        self: &Arc<Self>,
        tenant: &str,
        manifest: &mut Manifest,
    ) -> Result<(), DeployError> {
        let invalid = |e: anyhow::Error| DeployError::Invalid(format!("{e:#}"));
        let inference = manifest.inference().map_err(invalid)?;
        for r in manifest.model_refs().map_err(invalid)? {
            let rec = self
                .resolve_model_ref(tenant, &r)
                .await
                .map_err(|e| DeployError::Invalid(format!("[models] {}: {e}", r.alias)))?;
            // A range is pinned now; an alias stays an alias (it resolves at load).
            if let crate::manifest::ModelPin::Range(_) = r.pin {
                manifest
                    .models
                    .insert(r.alias, format!("{}@={}", rec.name, rec.version));
            }
        }
        // Beyond the default (tract on the CPU), prove the target works here now:
        // load the models on it, rather than fail on the first request.
        if inference.target != "cpu" || self.models.backend() != crate::nn::OnnxBackend::Tract {
            self.load_models(tenant, manifest)
                .await
                .map_err(|e| DeployError::Invalid(format!("{e}")))?;
        }
        Ok(())
    }

    /// Store a model after checking that it loads; its inputs and outputs are read
    /// from the model itself. `lineage` (training dataset digest, trainer, metrics)
    /// is kept as given.
    pub async fn push_model(
        &self,
        tenant: &TenantId,
        name: &str,
        version: &str,
        lineage: Option<Value>,
        bytes: Vec<u8>,
    ) -> Result<(VersionRecord, PublishOutcome, Value), DeployError> {
        let tenant = tenant.as_str();
        let version = semver::Version::parse(version)
            .map_err(|e| DeployError::Invalid(format!("version `{version}` is not semver: {e}")))?;
        if bytes.len() > MAX_MODEL_SIZE {
            return Err(DeployError::Invalid(format!(
                "the model is {} bytes; the most this host takes is {MAX_MODEL_SIZE}",
                bytes.len()
            )));
        }
        let (model, bytes) =
            tokio::task::spawn_blocking(move || (crate::nn::OnnxModel::load(&bytes), bytes))
                .await
                .map_err(|e| DeployError::Internal(e.into()))?;
        let model = model.map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
        let metadata = json!({
            "format": "onnx",
            "inputs": model.inputs,
            "outputs": model.outputs,
            "lineage": lineage.unwrap_or(Value::Null),
        });
        self.push_artifact(
            crate::oci::Artifact::Model,
            tenant,
            name,
            &version.to_string(),
            &bytes,
        )
        .await?;
        let (t, n, text) = (tenant.to_string(), name.to_string(), metadata.to_string());
        let (rec, outcome) = self
            .registry_call(move |r| r.publish_model(&t, &n, &version, "onnx", &text, &bytes))
            .await?;
        Ok((rec, outcome, metadata))
    }

    /// Point `stable` at `to` (or the previous version) and serve it from now on.
    pub async fn rollback(
        &self,
        tenant: &TenantId,
        name: &str,
        to: Option<&str>,
    ) -> Result<VersionRecord, DeployError> {
        let tenant = tenant.as_str();
        let (t, n, to) = (tenant.to_string(), name.to_string(), to.map(str::to_string));
        let rec = self
            .registry_call(move |r| {
                let rec = r.rollback(&t, &n, to.as_deref())?;
                // A rollback is to one version: a split or shadow in place ends.
                r.set_traffic(&t, &n, &[])?;
                r.set_shadow(&t, &n, None)?;
                Ok(rec)
            })
            .await?;
        self.forget_serving(tenant, name);
        Ok(rec)
    }
}
