//! What a store carries for one invocation, and the host side of Quiver's own
//! interfaces (`quiver:ml/{types,log,config,features,models}`) on it.

use crate::bindings::base::quiver::ml::features::{FeatureColumn, Value as WitValue};
use crate::bindings::{base, GuestError};
use crate::features::{FeatureError, FeatureScope, Value as FeatureValue};
use crate::nn::BoundModels;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Per-invocation state of a store.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) http: WasiHttpCtx,
    pub(super) limiter: MemoryLimiter,
    pub(super) config: Arc<BTreeMap<String, String>>,
    pub(super) tag: Arc<str>,
    /// When the running call must stop (checked on every epoch tick).
    pub(super) deadline: Instant,
    pub(super) features: Option<Arc<FeatureScope>>,
    /// wasi-nn state: only stores of inference functions have one (wasi:nn is
    /// linked for every store, but only an inference component may import it).
    pub(super) nn: Option<wasmtime_wasi_nn::wit::WasiNnCtx>,
    pub(super) models: Option<Arc<BoundModels>>,
    pub(super) egress: crate::egress::Egress,
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

impl base::quiver::ml::types::Host for HostState {}

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
                },
            )
            .collect()
    }
}

impl base::quiver::ml::log::Host for HostState {
    fn log(&mut self, level: base::quiver::ml::log::Level, message: String) {
        use base::quiver::ml::log::Level;
        let f = &*self.tag;
        match level {
            Level::Trace => tracing::trace!(function = f, "{message}"),
            Level::Debug => tracing::debug!(function = f, "{message}"),
            Level::Info => tracing::info!(function = f, "{message}"),
            Level::Warn => tracing::warn!(function = f, "{message}"),
            Level::Error => tracing::error!(function = f, "{message}"),
        }
    }
}

impl base::quiver::ml::config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

impl base::quiver::ml::features::Host for HostState {
    async fn get(
        &mut self,
        group: String,
        entity: String,
        names: Vec<String>,
    ) -> Result<Vec<Option<WitValue>>, GuestError> {
        let scope = self.feature_scope()?;
        let values = scope.get(&group, &entity, &names).await?;
        Ok(values.into_iter().map(|v| v.map(to_wit)).collect())
    }

    async fn get_many(
        &mut self,
        group: String,
        entities: Vec<String>,
        names: Vec<String>,
    ) -> Result<Vec<FeatureColumn>, GuestError> {
        let scope = self.feature_scope()?;
        let rows = scope.get_many(&group, &entities, &names).await?;
        // Rows (entity) to columns (feature).
        let mut columns: Vec<FeatureColumn> = names
            .into_iter()
            .map(|name| FeatureColumn {
                name,
                values: Vec::with_capacity(rows.len()),
            })
            .collect();
        for row in rows {
            for (column, v) in columns.iter_mut().zip(row) {
                column.values.push(v.map(to_wit));
            }
        }
        Ok(columns)
    }

    async fn put(
        &mut self,
        group: String,
        entity: String,
        values: Vec<(String, WitValue)>,
        ttl_ms: Option<u64>,
    ) -> Result<(), GuestError> {
        let scope = self.feature_scope()?;
        let values: Vec<_> = values.into_iter().map(|(n, v)| (n, from_wit(v))).collect();
        let ttl = ttl_ms.map(Duration::from_millis);
        Ok(scope.put(&group, &entity, &values, ttl).await?)
    }

    async fn delete(&mut self, group: String, entity: String) -> Result<(), GuestError> {
        let scope = self.feature_scope()?;
        Ok(scope.delete(&group, &entity).await?)
    }
}

impl HostState {
    /// Mark the store over its memory limit when its linear memory and the tensors
    /// it holds pass it (the epoch callback turns the mark into a trap).
    pub(super) fn check_tensor_memory(&mut self) {
        let held = tensor_bytes(&mut self.table);
        if self.limiter.linear.saturating_add(held) > self.limiter.limit {
            self.limiter.exceeded = true;
        }
    }

    fn feature_scope(&self) -> Result<Arc<FeatureScope>, GuestError> {
        self.features.clone().ok_or_else(|| {
            GuestError::InvalidInput(format!(
                "{} declares no [features] groups; declare the groups it reads and writes",
                self.tag
            ))
        })
    }
}

impl From<FeatureError> for GuestError {
    fn from(e: FeatureError) -> Self {
        match e {
            FeatureError::Unavailable(_) => GuestError::Unavailable(e.to_string()),
            FeatureError::LimitExceeded(m) => GuestError::LimitExceeded(m),
            FeatureError::Invalid(m) => GuestError::InvalidInput(m),
        }
    }
}

fn to_wit(v: FeatureValue) -> WitValue {
    match v {
        FeatureValue::F64(x) => WitValue::Float64(x),
        FeatureValue::I64(x) => WitValue::Int64(x),
        FeatureValue::Text(s) => WitValue::Text(s),
        FeatureValue::Bool(b) => WitValue::Boolean(b),
    }
}

fn from_wit(v: WitValue) -> FeatureValue {
    match v {
        WitValue::Float64(x) => FeatureValue::F64(x),
        WitValue::Int64(x) => FeatureValue::I64(x),
        WitValue::Text(s) => FeatureValue::Text(s),
        WitValue::Boolean(b) => FeatureValue::Bool(b),
    }
}

/// Caps a store's memory — its linear memory plus the host-side tensors it holds
/// (see [`link_accounted_tensors`]) — and remembers that it said no, so the failure
/// is reported as a memory limit rather than as whatever the guest did next.
pub(super) struct MemoryLimiter {
    pub(super) limit: usize,
    /// Linear memory granted so far (the components here have one memory each).
    pub(super) linear: usize,
    pub(super) exceeded: bool,
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
pub(super) fn link_accounted_tensors(
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
