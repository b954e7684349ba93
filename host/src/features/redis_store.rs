//! The Redis feature store: shared by every host that points at the same server.

use super::{EntityKey, FeatureBackend, FeatureError, Value};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Redis: one hash per entity (`quiver:feat:{tenant}:{group}:{entity}`), values
/// tagged with their type (`f:1.5`, `i:3`, `s:text`, `b:1`). Every call is bounded
/// by `timeout`; while Redis is unreachable calls fail fast with `Unavailable` and a
/// background task keeps trying to connect. Once connected, `ConnectionManager`
/// reconnects by itself after Redis restarts.
pub struct RedisStore {
    url: String,
    timeout: Duration,
    manager: Arc<tokio::sync::OnceCell<redis::aio::ConnectionManager>>,
}

impl RedisStore {
    /// Does not fail when Redis is down: it connects in the background.
    pub fn start(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client =
            redis::Client::open(url).map_err(|e| anyhow::anyhow!("--redis `{url}`: {e}"))?;
        let manager = Arc::new(tokio::sync::OnceCell::new());
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let cell = manager.clone();
        let shown = url.to_string();
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                match redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone())
                    .await
                {
                    Ok(m) => {
                        let _ = cell.set(m);
                        tracing::info!(redis = %shown, "feature store connected");
                        return;
                    }
                    Err(e) if !warned => {
                        tracing::warn!(redis = %shown, "feature store not reachable yet: {e}");
                        warned = true;
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Ok(RedisStore {
            url: url.to_string(),
            timeout,
            manager,
        })
    }

    fn connection(&self) -> Result<redis::aio::ConnectionManager, FeatureError> {
        self.manager
            .get()
            .cloned()
            .ok_or_else(|| FeatureError::Unavailable(format!("not connected to {}", self.url)))
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, FeatureError> {
        let mut conn = self.connection()?;
        match tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(FeatureError::Unavailable(format!("{}: {e}", self.url))),
            Err(_) => Err(FeatureError::Unavailable(format!(
                "{} did not answer within {:?}",
                self.url, self.timeout
            ))),
        }
    }
}

fn encode(v: &Value) -> String {
    match v {
        Value::F64(x) => format!("f:{x}"),
        Value::I64(x) => format!("i:{x}"),
        Value::Text(s) => format!("s:{s}"),
        Value::Bool(b) => format!("b:{}", u8::from(*b)),
    }
}

fn decode(s: &str) -> Option<Value> {
    let (tag, rest) = s.split_at_checked(2)?;
    match tag {
        "f:" => rest.parse().ok().map(Value::F64),
        "i:" => rest.parse().ok().map(Value::I64),
        "s:" => Some(Value::Text(rest.to_string())),
        "b:" => Some(Value::Bool(rest == "1")),
        _ => None,
    }
}

#[async_trait]
impl FeatureBackend for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn get_many(
        &self,
        keys: &[EntityKey],
        names: &[String],
    ) -> Result<Vec<Vec<Option<Value>>>, FeatureError> {
        if keys.is_empty() || names.is_empty() {
            return Ok(vec![vec![None; names.len()]; keys.len()]);
        }
        // One pipeline, one round trip, whatever the number of entities.
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HMGET").arg(key.redis_key()).arg(names);
        }
        let rows: Vec<Vec<Option<String>>> = self.run(&pipe).await?;
        Ok(rows
            .into_iter()
            .map(|row| row.iter().map(|v| v.as_deref().and_then(decode)).collect())
            .collect())
    }

    async fn put(
        &self,
        key: &EntityKey,
        values: &[(String, Value)],
        ttl: Option<Duration>,
    ) -> Result<(), FeatureError> {
        if values.is_empty() {
            return Ok(());
        }
        let k = key.redis_key();
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut hset = redis::cmd("HSET");
        hset.arg(&k);
        for (name, v) in values {
            hset.arg(name).arg(encode(v));
        }
        pipe.add_command(hset).ignore();
        match ttl {
            Some(t) => pipe
                .cmd("PEXPIRE")
                .arg(&k)
                .arg(t.as_millis().max(1) as u64)
                .ignore(),
            None => pipe.cmd("PERSIST").arg(&k).ignore(),
        };
        self.run::<()>(&pipe).await
    }

    async fn delete(&self, key: &EntityKey) -> Result<(), FeatureError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(key.redis_key()).ignore();
        self.run::<()>(&pipe).await
    }

    async fn ready(&self) -> Result<(), String> {
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        self.run::<Vec<String>>(&pipe)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_values_round_trip() {
        for v in [
            Value::F64(0.1),
            Value::F64(-1e300),
            Value::I64(i64::MIN),
            Value::Text("a:b:c".into()),
            Value::Text(String::new()),
            Value::Bool(true),
            Value::Bool(false),
        ] {
            assert_eq!(decode(&encode(&v)), Some(v));
        }
        assert_eq!(decode("x"), None);
        assert_eq!(decode("f:not-a-number"), None);
    }
}
