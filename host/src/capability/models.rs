//! Models for `inference` functions: `wasi:nn` (tract or ONNX Runtime behind it, with
//! dynamic batching and the accounted tensor constructor) and `quiver:ml/models`,
//! over the models the manifest's `[models]` pins, loaded once per host.

use super::{Capability, Configure};
use crate::functions::DeployError;
use crate::nn::BoundModels;
use crate::runtime::HostState;
use futures::future::BoxFuture;
use wasmtime::component::{HasSelf, Linker};

pub struct Models;

impl Capability for Models {
    fn name(&self) -> &'static str {
        "models"
    }

    fn imports(&self, kind: &str) -> &'static [&'static str] {
        match kind {
            "inference" => &["wasi:nn/*", "quiver:ml/models"],
            _ => &[],
        }
    }

    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        crate::bindings::inference::quiver::ml::models::add_to_linker::<
            HostState,
            HasSelf<HostState>,
        >(linker, |s| s)?;
        wasmtime_wasi_nn::wit::add_to_linker(linker, |s: &mut HostState| {
            // Every wasi-nn call passes here first, on the thread that will run it:
            // a model run it starts is bounded by this call's deadline.
            crate::nn::set_call_deadline(s.deadline);
            // `compute` puts its outputs straight into the table, past the tensor
            // constructor's check: a guest that keeps them is caught at its next
            // wasi-nn call (the epoch callback then stops it).
            s.check_tensor_memory();
            let ctx = s.nn.get_or_insert_with(BoundModels::none);
            wasmtime_wasi_nn::wit::WasiNnView::new(&mut s.table, ctx)
        })?;
        crate::runtime::link_accounted_tensors(linker)?;
        Ok(())
    }

    fn configure<'a>(&'a self, cx: Configure<'a>) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(async move {
            if cx.record.kind == "inference" {
                let models = cx
                    .functions
                    .load_models(&cx.record.tenant, cx.manifest)
                    .await?;
                cx.invocation.models = Some(models);
            }
            Ok(())
        })
    }
}

fn spec(t: &crate::nn::TensorSpec) -> crate::bindings::inference::quiver::ml::models::TensorSpec {
    crate::bindings::inference::quiver::ml::models::TensorSpec {
        name: t.name.clone(),
        element: crate::columns::element_of_datatype(&t.datatype),
        shape: t.shape.clone(),
    }
}

impl crate::bindings::inference::quiver::ml::models::Host for HostState {
    fn list_models(&mut self) -> Vec<crate::bindings::inference::quiver::ml::models::ModelInfo> {
        self.models
            .iter()
            .flat_map(|m| &m.models)
            .map(
                |m| crate::bindings::inference::quiver::ml::models::ModelInfo {
                    alias: m.alias.clone(),
                    name: m.name.clone(),
                    version: m.version.clone(),
                    digest: m.digest.clone(),
                    inputs: m.inputs.iter().map(spec).collect(),
                    outputs: m.outputs.iter().map(spec).collect(),
                },
            )
            .collect()
    }
}
