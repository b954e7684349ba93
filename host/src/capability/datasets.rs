//! `quiver:ml/datasets`: a monitor or trainer reads the logged, labelled
//! predictions of the functions its manifest's `[datasets] read` names, in its own
//! tenant only, at most [`MAX_READ_ROWS`] rows a read.

use super::{Capability, Configure};
use crate::bindings::base::quiver::ml::datasets::Query as WitQuery;
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
                    tenant: cx.record.tenant.clone(),
                    functions,
                }));
            }
            Ok(())
        })
    }
}

impl base::quiver::ml::datasets::Host for HostState {
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
