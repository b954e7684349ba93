//! Delete and retention: removing a function version or a model version, and the
//! garbage collector for blobs and AOT artifacts that no version references.
//!
//! A delete refuses what would break something still deployed (the serving version,
//! a version a pipeline pins, a model a function binds) unless forced; the bytes
//! stay until `gc` finds nothing referencing them.

use super::{split_ref, DeployError, Functions};
use crate::manifest::Manifest;
use crate::tenancy::TenantId;
use quiver_registry::{Deleted, RegistryError, VersionRecord};
use std::collections::HashSet;

/// What `gc` removed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GcSummary {
    pub blobs_removed: usize,
    pub blobs_kept: usize,
    pub artifacts_removed: usize,
}

impl Functions {
    /// Delete `name@version` of `tenant`. Refused (`Invalid`, naming why) for the
    /// serving version and for a version a pipeline pins, unless `force`.
    pub async fn remove_version(
        &self,
        tenant: &TenantId,
        name: &str,
        version: &str,
        force: bool,
    ) -> Result<Deleted, DeployError> {
        let tenant = tenant.as_str();
        if !force {
            let pinned_by = self.pipelines_pinning(tenant, name, version).await?;
            if !pinned_by.is_empty() {
                return Err(DeployError::Registry(RegistryError::Invalid(format!(
                    "`{name}@{version}` is a stage of {}; delete those first or pass --force",
                    pinned_by.join(", ")
                ))));
            }
        }
        let (t, n, v) = (tenant.to_string(), name.to_string(), version.to_string());
        let deleted = self
            .registry_call(move |r| r.delete_version(&t, &n, &v, force))
            .await?;
        self.unload(tenant, name, version);
        Ok(deleted)
    }

    /// Delete a model version. Refused while a function version binds it, unless
    /// `force` (such a function then fails its next cold start, saying why).
    pub async fn remove_model(
        &self,
        tenant: &TenantId,
        name: &str,
        version: &str,
        force: bool,
    ) -> Result<VersionRecord, DeployError> {
        let tenant = tenant.as_str();
        if !force {
            let mut bound_by = self.functions_binding(tenant, name, version).await?;
            let (t, n) = (tenant.to_string(), name.to_string());
            let aliases = self.registry_call(move |r| r.model_aliases(&t, &n)).await?;
            bound_by.extend(
                aliases
                    .into_iter()
                    .filter(|(_, v)| v == version)
                    .map(|(a, _)| format!("alias `{a}`")),
            );
            if !bound_by.is_empty() {
                return Err(DeployError::Registry(RegistryError::Invalid(format!(
                    "model `{name}@{version}` is bound by {}; delete those first or pass --force",
                    bound_by.join(", ")
                ))));
            }
        }
        let (t, n, v) = (tenant.to_string(), name.to_string(), version.to_string());
        self.registry_call(move |r| r.delete_model(&t, &n, &v))
            .await
    }

    /// Remove every blob and AOT artifact no version of any tenant references.
    /// Safe against a deploy of the same bytes running at the same time: the
    /// registry orders a publish's blob write and index commit against the sweep.
    pub async fn gc(&self) -> Result<GcSummary, DeployError> {
        let report = self.registry_call(|r| r.gc()).await?;
        let referenced = self.registry_call(|r| r.index().tenant_digests()).await?;
        let keep: HashSet<String> = referenced
            .iter()
            .filter_map(|(t, d)| {
                let hex = quiver_registry::Digest::parse(d).ok()?.hex();
                Some(crate::runtime::Runtime::code_key(t, &hex))
            })
            .collect();
        let runtime = self.runtime.clone();
        let artifacts_removed =
            tokio::task::spawn_blocking(move || runtime.remove_artifacts_except(&keep))
                .await
                .map_err(|e| DeployError::Internal(e.into()))?
                .map_err(DeployError::Internal)?;
        Ok(GcSummary {
            blobs_removed: report.removed.len(),
            blobs_kept: report.kept,
            artifacts_removed,
        })
    }

    /// Drop a deleted version from memory: loaded deployment, serving entry and
    /// compiled code (a request in flight keeps its own reference and finishes).
    fn unload(&self, tenant: &str, name: &str, version: &str) {
        let key = (tenant.to_string(), name.to_string(), version.to_string());
        let removed = self.loaded.lock().ok().and_then(|mut l| l.remove(&key));
        self.forget_serving(tenant, name);
        if let Some(d) = removed {
            if let Ok(digest) = d.record.digest() {
                self.runtime
                    .forget_component(&crate::runtime::Runtime::code_key(tenant, &digest.hex()));
            }
        }
    }

    /// Every version of a tenant, parsed where it is a function (models skipped).
    async fn manifests(&self, tenant: &str) -> Result<Vec<(VersionRecord, Manifest)>, DeployError> {
        let t = tenant.to_string();
        let all = self
            .registry_call(move |r| r.index().all_versions(&t))
            .await?;
        Ok(all
            .into_iter()
            .filter(|r| r.kind != quiver_registry::MODEL_KIND)
            .filter_map(|r| Manifest::parse(&r.manifest).ok().map(|m| (r, m)))
            .collect())
    }

    async fn pipelines_pinning(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<Vec<String>, DeployError> {
        Ok(self
            .manifests(tenant)
            .await?
            .into_iter()
            .filter(|(_, m)| {
                m.pipeline.iter().flat_map(|p| &p.stages).any(|s| {
                    let (n, v) = split_ref(s);
                    n == name && v == Some(version)
                })
            })
            .map(|(r, _)| format!("pipeline {}@{}", r.name, r.version))
            .collect())
    }

    async fn functions_binding(
        &self,
        tenant: &str,
        model: &str,
        version: &str,
    ) -> Result<Vec<String>, DeployError> {
        let pinned = format!("{model}@={version}");
        Ok(self
            .manifests(tenant)
            .await?
            .into_iter()
            .filter(|(_, m)| m.models.values().any(|spec| *spec == pinned))
            .map(|(r, _)| format!("{}@{}", r.name, r.version))
            .collect())
    }
}
