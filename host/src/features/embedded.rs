//! The embedded feature store: in process, TTLs honoured on read, bounded by an LRU.
//! The default: a newcomer needs nothing installed.

use super::{EntityKey, FeatureBackend, FeatureError, Value};
use async_trait::async_trait;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Entry {
    values: HashMap<String, Value>,
    expires: Option<Instant>,
}

/// In-process store: TTLs honoured on read, at most `capacity` entities (least
/// recently used evicted first).
pub struct Embedded {
    entities: Mutex<lru::LruCache<EntityKey, Entry>>,
}

pub const DEFAULT_EMBEDDED_CAPACITY: usize = 100_000;

impl Embedded {
    pub fn new(capacity: NonZeroUsize) -> Self {
        Embedded {
            entities: Mutex::new(lru::LruCache::new(capacity)),
        }
    }

    pub fn len(&self) -> usize {
        self.entities.lock().map_or(0, |e| e.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, lru::LruCache<EntityKey, Entry>>, FeatureError> {
        self.entities
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
        let mut entities = self.lock()?;
        Ok(keys
            .iter()
            .map(|key| {
                let expired = entities
                    .peek(key)
                    .is_some_and(|e| e.expires.is_some_and(|t| t <= now));
                if expired {
                    entities.pop(key);
                }
                match entities.get(key) {
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
        let mut entities = self.lock()?;
        let live = entities
            .peek(key)
            .is_some_and(|e| e.expires.is_none_or(|t| t > now));
        if !live {
            entities.put(
                key.clone(),
                Entry {
                    values: HashMap::new(),
                    expires: None,
                },
            );
        }
        if let Some(e) = entities.get_mut(key) {
            e.values
                .extend(values.iter().map(|(n, v)| (n.clone(), v.clone())));
            e.expires = ttl.map(|t| now + t);
        }
        Ok(())
    }

    async fn delete(&self, key: &EntityKey) -> Result<(), FeatureError> {
        self.lock()?.pop(key);
        Ok(())
    }

    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}
