//! `quiver:ml/features`: get / get-many / put / delete on the feature store, within
//! the groups the manifest's `[features]` declares (each with an optional near cache).

use super::{Capability, Configure};
use crate::bindings::base::quiver::ml::features::{FeatureColumn, Value as WitValue};
use crate::bindings::{base, GuestError};
use crate::features::{FeatureError, FeatureScope, Value as FeatureValue};
use crate::functions::DeployError;
use crate::runtime::HostState;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};

pub struct Features;

impl Capability for Features {
    fn name(&self) -> &'static str {
        "features"
    }

    fn imports(&self, _kind: &str) -> &'static [&'static str] {
        &["quiver:ml/features"]
    }

    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        base::quiver::ml::features::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
    }

    fn configure<'a>(&'a self, cx: Configure<'a>) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(async move {
            let Some(f) = &cx.manifest.features else {
                return Ok(());
            };
            let mut scope = FeatureScope::new(
                cx.functions.feature_store().clone(),
                &cx.record.tenant,
                f.groups.clone(),
                &cx.invocation.tag,
            );
            let ttls = cx
                .manifest
                .near_cache_ttls()
                .map_err(DeployError::Internal)?;
            for (group, ttl) in ttls {
                scope = scope.with_near_cache(&group, ttl);
            }
            cx.invocation.features = Some(Arc::new(scope));
            Ok(())
        })
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
    fn feature_scope(&self) -> Result<Arc<FeatureScope>, GuestError> {
        if self.offline {
            return Err(GuestError::Unavailable(format!(
                "{} runs offline here (a training run recomputing features): there is no feature store",
                self.tag
            )));
        }
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
