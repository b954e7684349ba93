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

fn entry_bytes(key: &EntityKey, values: &HashMap<String, Value>) -> usize {
    ENTITY_OVERHEAD
        + key.tenant.len()
        + key.group.len()
        + key.entity.len()
        + values.iter().map(|(n, v)| value_bytes(n, v)).sum::<usize>()
}

struct State {
    entities: HashMap<EntityKey, Entry>,
    /// Bytes charged per tenant (the sum of its entities' `bytes`).
    used: HashMap<String, usize>,
    /// Per tenant, the earliest time one of its entities expires: a tenant at its
    /// budget is swept for expired entities only once that time has come, so
    /// refused writes do not rescan the store.
    next_expiry: HashMap<String, Instant>,
}

impl State {
    fn remove(&mut self, key: &EntityKey) -> Option<Entry> {
        let e = self.entities.remove(key)?;
        if let Some(u) = self.used.get_mut(&key.tenant) {
            *u = u.saturating_sub(e.bytes);
        }
        Some(e)
    }

    fn used(&self, tenant: &str) -> usize {
        self.used.get(tenant).copied().unwrap_or(0)
    }

    /// Drop `tenant`'s expired entities (they still hold bytes until read), if
    /// any can have expired by now.
    fn sweep(&mut self, tenant: &str, now: Instant) {
        if self.next_expiry.get(tenant).is_none_or(|t| *t > now) {
            return;
        }
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for (k, e) in self.entities.iter().filter(|(k, _)| k.tenant == tenant) {
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

    async fn get_many(
        &self,
        keys: &[EntityKey],
        names: &[String],
    ) -> Result<Vec<Vec<Option<Value>>>, FeatureError> {
        let now = Instant::now();
        let mut state = self.lock()?;
        Ok(keys
            .iter()
            .map(|key| {
                let expired = state
                    .entities
                    .get(key)
                    .is_some_and(|e| e.expires.is_some_and(|t| t <= now));
                if expired {
                    state.remove(key);
                }
                match state.entities.get(key) {
                    Some(e) => names.iter().map(|n| e.values.get(n).cloned()).collect(),
                    None => vec![None; names.len()],
                }
            })
            .collect())
    }

    async fn put(
        &self,
        key: &EntityKey,
        values: &[(String, Value)],
        ttl: Option<Duration>,
    ) -> Result<(), FeatureError> {
        let now = Instant::now();
        let mut state = self.lock()?;
        let live = state
            .entities
            .get(key)
            .is_some_and(|e| e.expires.is_none_or(|t| t > now));
        let (old_bytes, mut merged) = match state.entities.get(key) {
            Some(e) if live => (e.bytes, e.values.clone()),
            Some(e) => (e.bytes, HashMap::new()),
            None => (0, HashMap::new()),
        };
        merged.extend(values.iter().map(|(n, v)| (n.clone(), v.clone())));
        let bytes = entry_bytes(key, &merged);
        let fits = |state: &State| {
            state.used(&key.tenant).saturating_sub(old_bytes) + bytes <= self.capacity
        };
        if !fits(&state) {
            state.sweep(&key.tenant, now);
        }
        // The sweep may have dropped this very entity (it had expired).
        let old_bytes = state.entities.get(key).map_or(0, |e| e.bytes);
        let used = state.used(&key.tenant).saturating_sub(old_bytes);
        if used + bytes > self.capacity {
            return Err(FeatureError::LimitExceeded(format!(
                "tenant `{}` keeps {used} bytes of features in the embedded store; this write \
                 needs {bytes} more and the limit is {} (--features-capacity)",
                key.tenant, self.capacity
            )));
        }
        state.remove(key);
        *state.used.entry(key.tenant.clone()).or_default() += bytes;
        let expires = ttl.map(|t| now + t);
        if let Some(t) = expires {
            let next = state.next_expiry.entry(key.tenant.clone()).or_insert(t);
            *next = (*next).min(t);
        }
        state.entities.insert(
            key.clone(),
            Entry {
                values: merged,
                expires,
                bytes,
            },
        );
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
