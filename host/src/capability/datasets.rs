//! `quiver:ml/datasets`: a monitor or trainer reads the logged, labelled
//! predictions of the functions its manifest's `[datasets] read` names, in its own
//! tenant only, at most [`MAX_READ_ROWS`] rows a read.

use super::{Capability, Configure};
use crate::bindings::base::quiver::ml::datasets::{Distribution, Query as WitQuery};
use crate::bindings::{base, Batch, GuestError};
use crate::datasets::{Datasets as Store, Query, MAX_READ_ROWS};
use crate::functions::DeployError;
use crate::runtime::HostState;
use futures::future::BoxFuture;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker};

pub struct Datasets;

/// Whose datasets a deployment may read.
pub struct DatasetScope {
    store: Arc<Store>,
    registry: Arc<quiver_registry::Registry>,
    tenant: String,
    functions: Vec<String>,
}

impl Capability for Datasets {
    fn name(&self) -> &'static str {
        "datasets"
    }

    fn imports(&self, kind: &str) -> &'static [&'static str] {
        match kind {
            "monitor" | "trainer" => &["quiver:ml/datasets"],
            _ => &[],
        }
    }

    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        base::quiver::ml::datasets::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
    }

    fn configure<'a>(&'a self, cx: Configure<'a>) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(async move {
            let functions = cx.manifest.dataset_reads().map_err(DeployError::Internal)?;
            if !functions.is_empty() {
                cx.invocation.datasets = Some(Arc::new(DatasetScope {
                    store: cx.functions.datasets().clone(),
                    registry: cx.functions.registry_handle(),
                    tenant: cx.record.tenant.clone(),
                    functions,
                }));
            }
            Ok(())
        })
    }
}

/// A lineage's `reference` (numbers: sorted values; an object: category counts)
/// as the guest gets it; what is neither is left out.
fn distributions(reference: &serde_json::Value) -> Vec<(String, Distribution)> {
    let Some(m) = reference.as_object() else {
        return Vec::new();
    };
    m.iter()
        .filter_map(|(k, v)| {
            let d = match v {
                serde_json::Value::Array(a) => Distribution::Numerical(
                    a.iter().filter_map(serde_json::Value::as_f64).collect(),
                ),
                serde_json::Value::Object(o) => Distribution::Categorical(
                    o.iter()
                        .filter_map(|(c, n)| Some((c.clone(), n.as_u64()?)))
                        .collect(),
                ),
                _ => return None,
            };
            Some((k.clone(), d))
        })
        .collect()
}

impl base::quiver::ml::datasets::Host for HostState {
    async fn reference(
        &mut self,
        model: String,
    ) -> Result<Option<Vec<(String, Distribution)>>, GuestError> {
        let Some(scope) = self.datasets.clone() else {
            return Err(GuestError::InvalidInput(format!(
                "{} declares no [datasets] read; a reference is read with the datasets it describes",
                self.tag
            )));
        };
        let Some((name, version)) = model.split_once('@') else {
            return Err(GuestError::InvalidInput(format!(
                "`{}` is not NAME@VERSION",
                model.chars().take(128).collect::<String>()
            )));
        };
        let (name, version) = (name.to_string(), version.to_string());
        let s = scope.clone();
        let found =
            tokio::task::spawn_blocking(move || s.registry.model(&s.tenant, &name, &version))
                .await
                .map_err(|e| GuestError::Internal(format!("registry task failed: {e}")))?;
        let rec = match found {
            Ok(r) => r,
            Err(quiver_registry::RegistryError::NotFound(m)) => {
                return Err(GuestError::InvalidInput(m))
            }
            Err(quiver_registry::RegistryError::Invalid(m)) => {
                return Err(GuestError::InvalidInput(m))
            }
            Err(e) => {
                return Err(GuestError::Unavailable(format!(
                    "reading the registry: {e}"
                )))
            }
        };
        let meta: serde_json::Value = serde_json::from_str(&rec.manifest).unwrap_or_default();
        let lineage = &meta["lineage"];
        let reference = &lineage["reference"];
        if reference.is_null() {
            return Ok(None);
        }
        // A reference holds values of the dataset it was trained on: readable only
        // by a function that may read that dataset.
        let from = lineage["dataset"]["function"].as_str().unwrap_or_default();
        if !scope.functions.iter().any(|f| f == from) {
            return Err(GuestError::InvalidInput(format!(
                "{} may not read the reference of `{model}`: it was trained on the dataset of `{from}`, which its [datasets] read does not name",
                self.tag
            )));
        }
        Ok(Some(distributions(reference)))
    }

    async fn read(&mut self, q: WitQuery) -> Result<Batch, GuestError> {
        let Some(scope) = self.datasets.clone() else {
            return Err(GuestError::InvalidInput(format!(
                "{} declares no [datasets] read; name the functions whose datasets it reads",
                self.tag
            )));
        };
        if !scope.functions.contains(&q.function) {
            return Err(GuestError::InvalidInput(format!(
                "{} may not read the dataset of `{}`: its [datasets] read names {}",
                self.tag,
                q.function.chars().take(64).collect::<String>(),
                scope.functions.join(", ")
            )));
        }
        let query = Query {
            function: q.function,
            since_ms: q.since_ms,
            labelled_only: q.labelled_only,
            limit: (q.limit as usize).min(MAX_READ_ROWS),
        };
        let now_ms = crate::unix_ms();
        let rows = scope
            .store
            .read(&scope.tenant, &query, now_ms)
            .await
            .map_err(|e| GuestError::Unavailable(format!("reading the dataset: {e:#}")))?;
        crate::convert::json_to_batch(&serde_json::Value::Array(rows)).map_err(|e| {
            GuestError::InvalidInput(format!(
                "the window's rows differ in shape (the function's columns changed): {e}; read a shorter window"
            ))
        })
    }
}
