//! What a store carries for one invocation (each capability's per-store state, see
//! `crate::capability`), and its memory accounting: linear memory plus the wasi-nn
//! tensors it holds on the host.

use crate::features::FeatureScope;
use crate::nn::BoundModels;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Per-invocation state of a store.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) http: WasiHttpCtx,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) tag: Arc<str>,
    /// When the running call must stop (checked on every epoch tick).
    pub(crate) deadline: Instant,
    pub(crate) features: Option<Arc<FeatureScope>>,
    /// A training run's offline call: no feature store at all.
    pub(crate) offline: bool,
    /// wasi-nn state: only stores of inference functions have one (wasi:nn is
    /// linked for every store, but only an inference component may import it).
    pub(crate) nn: Option<wasmtime_wasi_nn::wit::WasiNnCtx>,
    pub(crate) models: Option<Arc<BoundModels>>,
    pub(crate) egress: crate::egress::Egress,
    pub(crate) events: Option<Arc<crate::capability::EventScope>>,
    pub(crate) datasets: Option<Arc<crate::capability::DatasetScope>>,
    /// The guest's stdout and stderr, kept until its call ends.
    pub(crate) stdout: crate::logs::Capture,
    pub(crate) stderr: crate::logs::Capture,
    pub(crate) logs: Option<Arc<crate::logs::LogSink>>,
    /// The running call's trace id.
    pub(crate) trace_id: String,
    /// Events this call published so far.
    pub(crate) published: u32,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl HostState {
    /// Mark the store over its memory limit when its linear memory and the tensors
    /// it holds pass it (the epoch callback turns the mark into a trap).
    pub(crate) fn check_tensor_memory(&mut self) {
        let held = tensor_bytes(&mut self.table);
        if self.limiter.linear.saturating_add(held) > self.limiter.limit {
            self.limiter.exceeded = true;
        }
    }
}

/// Caps a store's memory — its linear memory plus the host-side tensors it holds
/// (see [`link_accounted_tensors`]) — and remembers that it said no, so the failure
/// is reported as a memory limit rather than as whatever the guest did next.
pub(crate) struct MemoryLimiter {
    pub(crate) limit: usize,
    /// Linear memory granted so far (the components here have one memory each).
    pub(crate) linear: usize,
    pub(crate) exceeded: bool,
}

impl MemoryLimiter {
    /// Refuse (and remember) a store that would hold more than its limit.
    fn check(&mut self, total: usize, what: &str) -> wasmtime::Result<()> {
        if total > self.limit {
            self.exceeded = true;
            wasmtime::bail!(
                "memory limit of {} bytes exceeded ({what}: {total} bytes)",
                self.limit
            );
        }
        Ok(())
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let others = self.linear.saturating_sub(current);
        self.check(others.saturating_add(desired), "linear memory")?;
        self.linear = others + desired;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Bytes of wasi-nn tensors the store's resource table holds now (the guest's own
/// tensors and the outputs of its computes it has not dropped).
fn tensor_bytes(table: &mut ResourceTable) -> usize {
    table
        .iter_mut()
        .filter_map(|e| e.downcast_ref::<wasmtime_wasi_nn::Tensor>())
        .map(|t| t.data.len())
        .sum()
}

/// wasi-nn keeps every tensor a guest makes on the host heap, outside the guest's
/// linear memory and its limiter. Replace wasmtime-wasi-nn's `tensor` constructor
/// with one that first counts what the store already holds (linear memory plus live
/// tensors) against the function's `[limits] memory`: a guest that makes tensors and
/// never drops them gets a memory-limit error, not the host's memory.
pub(crate) fn link_accounted_tensors(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi_nn::wit::{TensorData, TensorDimensions, TensorType};
    linker.allow_shadowing(true);
    linker
        .instance("wasi:nn/tensor@0.2.0-rc-2024-10-28")?
        .func_wrap(
            "[constructor]tensor",
            |mut store: wasmtime::StoreContextMut<'_, HostState>,
             (dimensions, ty, data): (TensorDimensions, TensorType, TensorData)|
             -> wasmtime::Result<(Resource<wasmtime_wasi_nn::Tensor>,)> {
                let state = store.data_mut();
                let held = tensor_bytes(&mut state.table);
                let total = state
                    .limiter
                    .linear
                    .saturating_add(held)
                    .saturating_add(data.len());
                state
                    .limiter
                    .check(total, "linear memory and wasi-nn tensors")?;
                let tensor = wasmtime_wasi_nn::Tensor::new(dimensions, ty, data);
                Ok((state.table.push(tensor)?,))
            },
        )?;
    linker.allow_shadowing(false);
    Ok(())
}
