//! The embedded feature store: in process, TTLs honoured on read, and bounded in
//! bytes per tenant. The default: a newcomer needs nothing installed.
//!
//! Every entity is charged to its tenant for what it holds (its key, each feature's
//! name and value, and a fixed overhead per entity and per value). A write that would
//! take a tenant past its budget fails with `LimitExceeded` and changes nothing; it
//! never evicts another entity, and never grows the host past the sum of the budgets.

use super::{EntityKey, FeatureBackend, FeatureError, Value};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Entry {
    values: HashMap<String, Value>,
    expires: Option<Instant>,
    /// What this entity is charged (see [`entry_bytes`]).
    bytes: usize,
}

/// Bytes of features one tenant may keep in the embedded store by default.
pub const DEFAULT_EMBEDDED_CAPACITY: usize = 256 << 20;

/// The most one `get`/`get-many` copies out of the store.
pub const MAX_READ_BYTES: usize = 16 << 20;

/// Fixed costs beside the bytes of names and values: the map slots, the `Entry`, the
/// value enum.
const ENTITY_OVERHEAD: usize = 96;
const VALUE_OVERHEAD: usize = 48;

fn value_bytes(name: &str, v: &Value) -> usize {
    let payload = match v {
        Value::Text(s) => s.len(),
        Value::F64(_) | Value::I64(_) | Value::Bool(_) => 8,
    };
    VALUE_OVERHEAD + name.len() + payload
}

fn entry_bytes<'a>(
    key: &EntityKey,
    values: impl Iterator<Item = (&'a String, &'a Value)>,
) -> usize {
    ENTITY_OVERHEAD
        + key.tenant.len()
        + key.group.len()
        + key.entity.len()
        + values.map(|(n, v)| value_bytes(n, v)).sum::<usize>()
}

/// The budget an entity is charged to: its tenant's features, or its tenant's cached
/// results (the result cache's `@cache` group), which have a budget of their own so
/// a client filling the cache with distinct inputs cannot block the tenant's
/// feature writes.
fn bucket(key: &EntityKey) -> std::borrow::Cow<'_, str> {
    match key.group.starts_with('@') {
        true => format!("{}\0{}", key.tenant, key.group).into(),
        false => key.tenant.as_str().into(),
    }
}

struct State {
    entities: HashMap<EntityKey, Entry>,
    /// Bytes charged per tenant (the sum of its entities' `bytes`).
    used: HashMap<String, usize>,
    /// Per tenant, the earliest time one of its entities expires: a tenant at its
    /// budget is swept for expired entities only once that time has come, so
    /// refused writes do not rescan the store.
    next_expiry: HashMap<String, Instant>,
    /// Per-tenant budgets set by a tenant's `feature_bytes` quota (over `capacity`).
    quotas: HashMap<String, usize>,
}

impl State {
    fn remove(&mut self, key: &EntityKey) -> Option<Entry> {
        let e = self.entities.remove(key)?;
        if let Some(u) = self.used.get_mut(bucket(key).as_ref()) {
            *u = u.saturating_sub(e.bytes);
        }
        Some(e)
    }

    fn used(&self, tenant: &str) -> usize {
        self.used.get(tenant).copied().unwrap_or(0)
    }

    /// Drop a budget's expired entities (they still hold bytes until read), if
    /// any can have expired by now.
    fn sweep(&mut self, tenant: &str, now: Instant) {
        if self.next_expiry.get(tenant).is_none_or(|t| *t > now) {
            return;
        }
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for (k, e) in self.entities.iter().filter(|(k, _)| bucket(k) == tenant) {
            match e.expires {
                Some(t) if t <= now => expired.push(k.clone()),
                Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
                None => {}
            }
        }
        for k in &expired {
            self.remove(k);
        }
        match next {
            Some(t) => self.next_expiry.insert(tenant.to_string(), t),
            None => self.next_expiry.remove(tenant),
        };
    }
}

/// In-process store: TTLs honoured on read, at most `capacity` bytes per tenant.
pub struct Embedded {
    state: Mutex<State>,
    capacity: usize,
}

impl Embedded {
    /// `capacity`: bytes of features each tenant may keep.
    pub fn new(capacity: usize) -> Self {
        Embedded {
            state: Mutex::new(State {
                entities: HashMap::new(),
                used: HashMap::new(),
                next_expiry: HashMap::new(),
                quotas: HashMap::new(),
            }),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.state.lock().map_or(0, |s| s.entities.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes `tenant` is charged now.
    pub fn used(&self, tenant: &str) -> usize {
        self.state.lock().map_or(0, |s| s.used(tenant))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, FeatureError> {
        self.state
            .lock()
            .map_err(|_| FeatureError::Unavailable("embedded store poisoned".into()))
    }
}

#[async_trait]
impl FeatureBackend for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn set_tenant_capacity(&self, tenant: &str, bytes: Option<u64>) {
        if let Ok(mut s) = self.state.lock() {
            match bytes {
                Some(b) => s
                    .quotas
                    .insert(tenant.to_string(), usize::try_from(b).unwrap_or(usize::MAX)),
                None => s.quotas.remove(tenant),
            };
        }
    }

    fn tenant_bytes(&self, tenant: &str) -> Option<u64> {
        self.state.lock().ok().map(|s| s.used(tenant) as u64)
    }

    async fn get_many(
        &self,
        keys: &[EntityKey],
        names: &[String],
    ) -> Result<Vec<Vec<Option<Value>>>, FeatureError> {
        let now = Instant::now();
        let mut state = self.lock()?;
        // What one read may copy out: the same large entity asked for thousands of
        // times would otherwise make the host copy gigabytes.
        let mut copied = 0usize;
        let mut rows = Vec::with_capacity(keys.len());
        for key in keys {
            let expired = state
                .entities
                .get(key)
                .is_some_and(|e| e.expires.is_some_and(|t| t <= now));
            if expired {
                state.remove(key);
            }
            let row: Vec<Option<Value>> = match state.entities.get(key) {
                Some(e) => names
                    .iter()
                    .map(|n| {
                        let v = e.values.get(n);
                        copied += v.map_or(0, |v| value_bytes(n, v));
                        v.cloned()
                    })
                    .collect(),
                None => vec![None; names.len()],
            };
            if copied > MAX_READ_BYTES {
                return Err(FeatureError::LimitExceeded(format!(
                    "one read may return at most {MAX_READ_BYTES} bytes of features; ask for fewer entities or names"
                )));
            }
            rows.push(row);
        }
        Ok(rows)
    }

    async fn put(
        &self,
        key: &EntityKey,
        values: &[(String, Value)],
        ttl: Option<Duration>,
    ) -> Result<(), FeatureError> {
        let now = Instant::now();
        let mut guard = self.lock()?;
        let state = &mut *guard;
        // An expired entity is gone: its bytes come back before this write is charged.
        if state
            .entities
            .get(key)
            .is_some_and(|e| e.expires.is_some_and(|t| t <= now))
        {
            state.remove(key);
        }
        // What the entity will be charged, estimated without copying it (a name sent
        // twice counts twice: the estimate never undercounts).
        let (old_bytes, estimate) = match state.entities.get(key) {
            Some(e) => {
                let mut b = e.bytes;
                for (n, v) in values {
                    b += value_bytes(n, v);
                    if let Some(old) = e.values.get(n) {
                        b = b.saturating_sub(value_bytes(n, old));
                    }
                }
                (e.bytes, b)
            }
            None => (0, entry_bytes(key, values.iter().map(|(n, v)| (n, v)))),
        };
        let budget = bucket(key);
        let (capacity, named) = match state.quotas.get(budget.as_ref()) {
            Some(q) => (*q, "the tenant's feature_bytes quota"),
            None => (self.capacity, "--features-capacity"),
        };
        if state.used(&budget).saturating_sub(old_bytes) + estimate > capacity {
            state.sweep(&budget, now);
            let used = state.used(&budget).saturating_sub(old_bytes);
            if used + estimate > capacity {
                return Err(FeatureError::LimitExceeded(format!(
                    "tenant `{}` keeps {used} bytes of features in the embedded store; this \
                     write needs {estimate} more and the limit is {capacity} ({named})",
                    key.tenant
                )));
            }
        }
        let expires = ttl.map(|t| now + t);
        if let Some(t) = expires {
            let next = state.next_expiry.entry(budget.to_string()).or_insert(t);
            *next = (*next).min(t);
        }
        let bytes = match state.entities.get_mut(key) {
            Some(e) => {
                e.values
                    .extend(values.iter().map(|(n, v)| (n.clone(), v.clone())));
                e.expires = expires;
                e.bytes = entry_bytes(key, e.values.iter());
                e.bytes
            }
            None => {
                let values: HashMap<String, Value> = values.iter().cloned().collect();
                let bytes = entry_bytes(key, values.iter());
                state.entities.insert(
                    key.clone(),
                    Entry {
                        values,
                        expires,
                        bytes,
                    },
                );
                bytes
            }
        };
        let used = state.used.entry(budget.into_owned()).or_default();
        *used = used.saturating_sub(old_bytes) + bytes;
        Ok(())
    }

    async fn delete(&self, key: &EntityKey) -> Result<(), FeatureError> {
        self.lock()?.remove(key);
        Ok(())
    }

    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}
