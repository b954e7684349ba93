//! Whole responses of functions that opt in (`[cache]`), kept in the feature store's
//! backend.

use super::{EntityKey, FeatureBackend, Value};
use std::sync::Arc;
use std::time::Duration;

/// The result cache keeps whole responses in the feature store's backend under a
/// group no manifest can declare (`@cache`), so it is shared across hosts on Redis
/// and bounded with everything else on the embedded store.
pub struct ResultCache {
    backend: Arc<dyn FeatureBackend>,
}

/// Responses bigger than this are not cached.
pub const MAX_CACHED_RESPONSE: usize = 1 << 20;

impl ResultCache {
    pub fn new(backend: Arc<dyn FeatureBackend>) -> Self {
        ResultCache { backend }
    }

    fn key(tenant: &str, hash: &str) -> EntityKey {
        EntityKey {
            tenant: tenant.to_string(),
            group: "@cache".into(),
            entity: hash.to_string(),
        }
    }

    /// A cached response; a backend failure is a miss (the function still runs).
    pub async fn get(&self, tenant: &str, hash: &str) -> Option<String> {
        let got = self
            .backend
            .get_many(&[Self::key(tenant, hash)], &["body".to_string()])
            .await;
        match got {
            Ok(mut rows) => match rows.pop()?.pop()? {
                Some(Value::Text(body)) => Some(body),
                _ => None,
            },
            Err(e) => {
                tracing::debug!("result cache read: {e}");
                None
            }
        }
    }

    pub async fn put(&self, tenant: &str, hash: &str, body: String, ttl: Duration) {
        if body.len() > MAX_CACHED_RESPONSE {
            return;
        }
        let key = Self::key(tenant, hash);
        if let Err(e) = self
            .backend
            .put(&key, &[("body".to_string(), Value::Text(body))], Some(ttl))
            .await
        {
            tracing::debug!("result cache write: {e}");
        }
    }
}

/// The cache key of an input: sha256 over the function's identity (tenant, name,
/// version, component digest — so a new serving version never sees old results),
/// the content type and the canonical input (JSON with object keys sorted, so
/// `{"a":1,"b":2}` and `{"b":2,"a":1}` are the same input; other bodies as bytes).
pub fn input_hash(identity: &[&str], content_type: &str, body: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for part in identity {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(content_type.as_bytes());
    h.update([0]);
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(doc) => canonical_json(&doc, &mut h),
        Err(_) => h.update(body),
    }
    hex::encode(h.finalize())
}

fn canonical_json(v: &serde_json::Value, h: &mut sha2::Sha256) {
    use serde_json::Value as J;
    use sha2::Digest as _;
    match v {
        J::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            h.update(b"{");
            for k in keys {
                h.update(serde_json::to_string(k).unwrap_or_default().as_bytes());
                h.update(b":");
                if let Some(v) = map.get(k) {
                    canonical_json(v, h);
                }
                h.update(b",");
            }
            h.update(b"}");
        }
        J::Array(items) => {
            h.update(b"[");
            for item in items {
                canonical_json(item, h);
                h.update(b",");
            }
            h.update(b"]");
        }
        other => h.update(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_hash_is_canonical_and_versioned() {
        let id = ["t", "f", "1.0.0", "sha256:aa"];
        let a = input_hash(
            &id,
            "application/json",
            br#"{"a": 1, "b": [1, {"y": 2, "x": 1}]}"#,
        );
        let b = input_hash(&id, "application/json", br#"{"b":[1,{"x":1,"y":2}],"a":1}"#);
        assert_eq!(a, b, "key order and whitespace do not matter");
        let c = input_hash(
            &id,
            "application/json",
            br#"{"a": 2, "b": [1, {"y": 2, "x": 1}]}"#,
        );
        assert_ne!(a, c);
        let v2 = input_hash(
            &["t", "f", "1.0.1", "sha256:bb"],
            "application/json",
            br#"{"a":1,"b":[1,{"x":1,"y":2}]}"#,
        );
        assert_ne!(a, v2, "another version never sees these results");
        assert_ne!(
            input_hash(&id, "text/csv", b"a,b"),
            input_hash(&id, "text/plain", b"a,b")
        );
    }
}
