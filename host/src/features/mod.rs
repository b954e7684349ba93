//! The feature store behind `quiver:ml/features`: one trait, two backends — an
//! embedded one (in process, TTLs, bounded by an LRU; the default) and Redis (a
//! shared multiplexed `ConnectionManager`, one hash per entity, native TTLs,
//! pipelined multi-gets). Guests never name a key: the host builds every key from
//! the calling function's tenant and a group its manifest declares, so isolation
//! holds by construction.

mod embedded;
mod redis_store;
mod result_cache;

pub use embedded::{Embedded, DEFAULT_EMBEDDED_CAPACITY};
pub use redis_store::RedisStore;
pub use result_cache::{input_hash, ResultCache, MAX_CACHED_RESPONSE};

use async_trait::async_trait;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    F64(f64),
    I64(i64),
    Text(String),
    Bool(bool),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum FeatureError {
    #[error("feature store unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    Invalid(String),
}

/// Where one entity's features live. Tenant and group are names checked by the
/// host (`[a-z0-9_-]`), the entity comes last, so no entity can spell another
/// tenant's or group's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityKey {
    pub tenant: String,
    pub group: String,
    pub entity: String,
}

impl EntityKey {
    fn redis_key(&self) -> String {
        format!("quiver:feat:{}:{}:{}", self.tenant, self.group, self.entity)
    }
}

#[async_trait]
pub trait FeatureBackend: Send + Sync {
    fn name(&self) -> &'static str;
    /// A tenant's own budget (its `feature_bytes` quota; `None`: the store's default).
    /// Only the embedded store keeps budgets; the quota route refuses the others.
    fn set_tenant_capacity(&self, _tenant: &str, _bytes: Option<u64>) {}
    /// Bytes a tenant keeps, where the store counts them.
    fn tenant_bytes(&self, _tenant: &str) -> Option<u64> {
        None
    }
    /// For each key, the named features in order (`None` where missing).
    async fn get_many(
        &self,
        keys: &[EntityKey],
        names: &[String],
    ) -> Result<Vec<Vec<Option<Value>>>, FeatureError>;
    /// Merge `values` into the entity; `ttl` expires the whole entity after this
    /// write (`None`: no expiry).
    async fn put(
        &self,
        key: &EntityKey,
        values: &[(String, Value)],
        ttl: Option<Duration>,
    ) -> Result<(), FeatureError>;
    async fn delete(&self, key: &EntityKey) -> Result<(), FeatureError>;
    /// `Err(detail)` while the backend cannot serve.
    async fn ready(&self) -> Result<(), String>;
}

pub const MAX_ENTITIES: usize = 4096;
pub const MAX_NAMES: usize = 1024;
pub const MAX_ENTITY_LEN: usize = 512;
pub const MAX_TEXT_LEN: usize = 64 << 10;
pub const MAX_NAME_LEN: usize = 256;

/// The checks every write makes, whoever writes (a guest's `put`, a backfill): how
/// many values, how long each name, how big each text.
pub fn check_values(values: &[(String, Value)]) -> Result<(), FeatureError> {
    if values.len() > MAX_NAMES {
        return Err(FeatureError::LimitExceeded(format!(
            "{} values in one put; the limit is {MAX_NAMES}",
            values.len()
        )));
    }
    for (name, v) in values {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(FeatureError::Invalid(format!(
                "a feature name must be 1 to {MAX_NAME_LEN} bytes"
            )));
        }
        if let Value::Text(s) = v {
            if s.len() > MAX_TEXT_LEN {
                return Err(FeatureError::LimitExceeded(format!(
                    "text feature `{name}` is {} bytes; the limit is {MAX_TEXT_LEN}",
                    s.len()
                )));
            }
        }
    }
    Ok(())
}

/// What one function may reach: its tenant and its declared groups.
pub struct FeatureScope {
    pub backend: Arc<dyn FeatureBackend>,
    pub tenant: String,
    pub groups: Vec<String>,
    pub function: String,
    near: HashMap<String, NearCache>,
}

/// A small in-process cache in front of the backend for one group of one function
/// (`[features.near_cache_ttl]`). Reads it served may be up to `ttl` stale with
/// respect to writes made elsewhere (another function or host, a backfill); this
/// function's own `put` and `delete` drop the entity from it at once.
struct NearCache {
    ttl: Duration,
    entities: Mutex<lru::LruCache<String, NearEntry>>,
}

/// When an entity was read, and what.
type NearEntry = (Instant, HashMap<String, Option<Value>>);

/// Entities a near cache holds at most.
pub const NEAR_CACHE_ENTITIES: usize = 10_000;

impl NearCache {
    fn get(&self, entity: &str, names: &[String], now: Instant) -> Option<Vec<Option<Value>>> {
        let mut entities = self.entities.lock().ok()?;
        let (at, values) = entities.get(entity)?;
        if now.saturating_duration_since(*at) >= self.ttl {
            return None;
        }
        names.iter().map(|n| values.get(n).cloned()).collect()
    }

    fn fill(&self, entity: &str, names: &[String], row: &[Option<Value>], at: Instant) {
        if let Ok(mut entities) = self.entities.lock() {
            let values = names.iter().cloned().zip(row.iter().cloned()).collect();
            entities.put(entity.to_string(), (at, values));
        }
    }

    fn forget(&self, entity: &str) {
        if let Ok(mut entities) = self.entities.lock() {
            entities.pop(entity);
        }
    }
}

impl FeatureScope {
    pub fn new(
        backend: Arc<dyn FeatureBackend>,
        tenant: &str,
        groups: Vec<String>,
        function: &str,
    ) -> Self {
        FeatureScope {
            backend,
            tenant: tenant.to_string(),
            groups,
            function: function.to_string(),
            near: HashMap::new(),
        }
    }

    /// Serve reads of `group` from an in-process cache for `ttl` (see [`NearCache`]).
    pub fn with_near_cache(mut self, group: &str, ttl: Duration) -> Self {
        let capacity = NonZeroUsize::new(NEAR_CACHE_ENTITIES).unwrap_or(NonZeroUsize::MIN);
        self.near.insert(
            group.to_string(),
            NearCache {
                ttl,
                entities: Mutex::new(lru::LruCache::new(capacity)),
            },
        );
        self
    }

    /// Rows of `entities` for `names`, from the near cache where fresh, else one
    /// backend call for the rest.
    async fn read(
        &self,
        group: &str,
        entities: &[&str],
        names: &[String],
    ) -> Result<Vec<Vec<Option<Value>>>, FeatureError> {
        let started = Instant::now();
        let _span = crate::trace::span("features.get")
            .attr("quiver.feature_group", group.to_string())
            .attr("quiver.entities", entities.len() as i64);
        let out = self.read_uncounted(group, entities, names).await;
        let m = &crate::metrics::HOST_CALLS;
        m.feature_seconds
            .with_label_values(&[&self.tenant])
            .observe(started.elapsed().as_secs_f64());
        if let Ok((rows, from_near)) = &out {
            for (i, row) in rows.iter().enumerate() {
                let source = match from_near.get(i) {
                    Some(true) => "near_cache",
                    _ => "store",
                };
                let result = match row.iter().any(Option::is_some) {
                    true => "hit",
                    false => "miss",
                };
                m.feature_rows
                    .with_label_values(&[&self.tenant, source, result])
                    .inc();
            }
        }
        out.map(|(rows, _)| rows)
    }

    /// The rows, and for each whether the near cache served it.
    async fn read_uncounted(
        &self,
        group: &str,
        entities: &[&str],
        names: &[String],
    ) -> Result<(Vec<Vec<Option<Value>>>, Vec<bool>), FeatureError> {
        let keys = entities
            .iter()
            .map(|e| self.key(group, e))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(near) = self.near.get(group) else {
            let rows = self.backend.get_many(&keys, names).await?;
            return Ok((rows, Vec::new()));
        };
        let now = Instant::now();
        let mut rows: Vec<Option<Vec<Option<Value>>>> =
            entities.iter().map(|e| near.get(e, names, now)).collect();
        let from_near: Vec<bool> = rows.iter().map(Option::is_some).collect();
        let missing: Vec<usize> = (0..rows.len()).filter(|i| rows[*i].is_none()).collect();
        if !missing.is_empty() {
            let fetch: Vec<EntityKey> = missing.iter().map(|i| keys[*i].clone()).collect();
            let fetched = self.backend.get_many(&fetch, names).await?;
            for (i, row) in missing.into_iter().zip(fetched) {
                near.fill(entities[i], names, &row, now);
                rows[i] = Some(row);
            }
        }
        let rows = rows.into_iter().map(Option::unwrap_or_default).collect();
        Ok((rows, from_near))
    }

    fn key(&self, group: &str, entity: &str) -> Result<EntityKey, FeatureError> {
        if !self.groups.iter().any(|g| g == group) {
            return Err(FeatureError::Invalid(match self.groups.is_empty() {
                true => format!(
                    "feature group `{group}` is not declared: {} has no [features] groups",
                    self.function
                ),
                false => format!(
                    "feature group `{group}` is not declared in {}'s [features] groups ({})",
                    self.function,
                    self.groups.join(", ")
                ),
            }));
        }
        if entity.is_empty() || entity.len() > MAX_ENTITY_LEN {
            return Err(FeatureError::Invalid(format!(
                "an entity id must be 1 to {MAX_ENTITY_LEN} bytes"
            )));
        }
        Ok(EntityKey {
            tenant: self.tenant.clone(),
            group: group.to_string(),
            entity: entity.to_string(),
        })
    }

    fn check_names(names: &[String]) -> Result<(), FeatureError> {
        if names.len() > MAX_NAMES {
            return Err(FeatureError::LimitExceeded(format!(
                "{} feature names in one call; the limit is {MAX_NAMES}",
                names.len()
            )));
        }
        Ok(())
    }

    pub async fn get(
        &self,
        group: &str,
        entity: &str,
        names: &[String],
    ) -> Result<Vec<Option<Value>>, FeatureError> {
        Self::check_names(names)?;
        let mut rows = self.read(group, &[entity], names).await?;
        Ok(rows.pop().unwrap_or_default())
    }

    pub async fn get_many(
        &self,
        group: &str,
        entities: &[String],
        names: &[String],
    ) -> Result<Vec<Vec<Option<Value>>>, FeatureError> {
        Self::check_names(names)?;
        if entities.len() > MAX_ENTITIES {
            return Err(FeatureError::LimitExceeded(format!(
                "{} entities in one get-many; the limit is {MAX_ENTITIES}",
                entities.len()
            )));
        }
        let entities: Vec<&str> = entities.iter().map(String::as_str).collect();
        self.read(group, &entities, names).await
    }

    pub async fn put(
        &self,
        group: &str,
        entity: &str,
        values: &[(String, Value)],
        ttl: Option<Duration>,
    ) -> Result<(), FeatureError> {
        check_values(values)?;
        let key = self.key(group, entity)?;
        if let Some(near) = self.near.get(group) {
            near.forget(entity);
        }
        self.backend.put(&key, values, ttl).await
    }

    pub async fn delete(&self, group: &str, entity: &str) -> Result<(), FeatureError> {
        let key = self.key(group, entity)?;
        if let Some(near) = self.near.get(group) {
            near.forget(entity);
        }
        self.backend.delete(&key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(tenant: &str, backend: Arc<dyn FeatureBackend>) -> FeatureScope {
        FeatureScope::new(
            backend,
            tenant,
            vec!["txn".into()],
            &format!("{tenant}/f@1.0.0"),
        )
    }

    async fn set_x(s: &FeatureScope, v: i64) {
        s.put("txn", "e", &[("x".into(), Value::I64(v))], None)
            .await
            .unwrap();
    }

    async fn x_of(s: &FeatureScope) -> Option<Value> {
        s.get("txn", "e", &names(&["x"]))
            .await
            .unwrap()
            .pop()
            .flatten()
    }

    #[tokio::test]
    async fn near_cache_serves_reads_for_its_ttl_and_drops_own_writes() {
        let backend: Arc<dyn FeatureBackend> = Arc::new(Embedded::new(1 << 20));
        let writer = scope("t", backend.clone());
        let reader = scope("t", backend).with_near_cache("txn", Duration::from_millis(100));
        let n = names(&["x"]);
        set_x(&writer, 1).await;
        assert_eq!(x_of(&reader).await, Some(Value::I64(1)));
        set_x(&writer, 2).await;
        assert_eq!(
            x_of(&reader).await,
            Some(Value::I64(1)),
            "another writer's change is not seen within the TTL (the documented staleness)"
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(x_of(&reader).await, Some(Value::I64(2)));
        set_x(&reader, 3).await;
        assert_eq!(
            x_of(&reader).await,
            Some(Value::I64(3)),
            "its own write is seen at once"
        );
        let many = reader
            .get_many("txn", &names(&["e", "f"]), &n)
            .await
            .unwrap();
        assert_eq!(many, vec![vec![Some(Value::I64(3))], vec![None]]);
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn embedded_round_trip_ttl_and_isolation() {
        let backend: Arc<dyn FeatureBackend> = Arc::new(Embedded::new(1 << 20));
        let a = scope("acme", backend.clone());
        let b = scope("globex", backend);
        a.put(
            "txn",
            "m-1",
            &[
                ("n".into(), Value::I64(3)),
                ("mean".into(), Value::F64(1.5)),
            ],
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            a.get("txn", "m-1", &names(&["mean", "n", "nope"]))
                .await
                .unwrap(),
            vec![Some(Value::F64(1.5)), Some(Value::I64(3)), None]
        );
        assert_eq!(
            b.get("txn", "m-1", &names(&["n"])).await.unwrap(),
            vec![None],
            "another tenant sees nothing"
        );
        let err = a.get("other", "m-1", &names(&["n"])).await.unwrap_err();
        assert!(
            matches!(err, FeatureError::Invalid(ref m) if m.contains("not declared")),
            "{err}"
        );

        a.put(
            "txn",
            "m-2",
            &[("n".into(), Value::Bool(true))],
            Some(Duration::from_millis(30)),
        )
        .await
        .unwrap();
        let many = a
            .get_many("txn", &names(&["m-1", "m-2", "m-3"]), &names(&["n"]))
            .await
            .unwrap();
        assert_eq!(
            many,
            vec![
                vec![Some(Value::I64(3))],
                vec![Some(Value::Bool(true))],
                vec![None]
            ]
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            a.get("txn", "m-2", &names(&["n"])).await.unwrap(),
            vec![None],
            "expired"
        );
        a.delete("txn", "m-1").await.unwrap();
        assert_eq!(
            a.get("txn", "m-1", &names(&["n"])).await.unwrap(),
            vec![None]
        );
    }

    #[tokio::test]
    async fn embedded_is_bounded_in_bytes_per_tenant() {
        let store = Arc::new(Embedded::new(4096));
        let a = scope("a", store.clone());
        let b = scope("b", store.clone());
        let text = |n: usize| Value::Text("x".repeat(n));
        a.put("txn", "e1", &[("t".into(), text(3000))], None)
            .await
            .unwrap();
        let err = a
            .put("txn", "e2", &[("t".into(), text(3000))], None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, FeatureError::LimitExceeded(ref m) if m.contains("--features-capacity")),
            "{err}"
        );
        assert_eq!(
            a.get("txn", "e1", &names(&["t"])).await.unwrap(),
            vec![Some(text(3000))],
            "a refused write loses nothing"
        );
        assert_eq!(store.len(), 1);
        // Another tenant has its own budget.
        b.put("txn", "e1", &[("t".into(), text(3000))], None)
            .await
            .unwrap();
        // Overwriting an entity charges the difference, not the sum.
        a.put("txn", "e1", &[("t".into(), text(3500))], None)
            .await
            .unwrap();
        // Deleting frees the bytes.
        a.delete("txn", "e1").await.unwrap();
        assert_eq!(store.used("a"), 0);
        // Expired entities give their bytes back when the budget is reached.
        a.put(
            "txn",
            "short",
            &[("t".into(), text(3000))],
            Some(Duration::from_millis(20)),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        a.put("txn", "e3", &[("t".into(), text(3000))], None)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn limits_are_errors() {
        let s = scope("t", Arc::new(Embedded::new(1 << 20)));
        let many: Vec<String> = (0..MAX_ENTITIES + 1).map(|i| i.to_string()).collect();
        assert!(matches!(
            s.get_many("txn", &many, &names(&["x"])).await,
            Err(FeatureError::LimitExceeded(_))
        ));
        assert!(matches!(
            s.get("txn", "", &names(&["x"])).await,
            Err(FeatureError::Invalid(_))
        ));
        let big = Value::Text("x".repeat(MAX_TEXT_LEN + 1));
        assert!(matches!(
            s.put("txn", "e", &[("t".into(), big)], None).await,
            Err(FeatureError::LimitExceeded(_))
        ));
    }
}
