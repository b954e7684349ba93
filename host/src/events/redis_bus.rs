//! The Redis Streams backend of [`Bus`]: one stream per tenant and topic
//! (`quiver:ev:{tenant}:{topic}`), one consumer group per subscribing function, one
//! consumer per host. Pending entries are the leases: an entry a dead host held is
//! taken over with `XAUTOCLAIM` once it has been idle for the visibility timeout.
//! Per group, a hash counts deliveries (attempts), a sorted set holds failed
//! entries until their retry is due (they stay pending meanwhile, so no trim can
//! drop them), and a stream `…:g:{group}:dlq` holds dead ones with the reason.
//! A replayed event is appended again, addressed to its group only (`for`).

use super::{Bus, DeadEvent, Event, EventError, Failed, Group, NewEvent, Retry, Trim, MAX_PAYLOAD};
use crate::tenancy::TenantId;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{
    StreamAutoClaimReply, StreamClaimReply, StreamId, StreamInfoGroupsReply, StreamPendingReply,
    StreamRangeReply, StreamReadReply,
};
use redis::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every stream this bus has written to, for the trimmer.
const STREAMS: &str = "quiver:ev:streams";

pub struct RedisBus {
    url: String,
    client: redis::Client,
    timeout: Duration,
    manager: Arc<tokio::sync::OnceCell<ConnectionManager>>,
    /// A connection per group for blocking reads (a blocked command holds its
    /// connection, so these are not the shared one).
    readers: Mutex<HashMap<Group, MultiplexedConnection>>,
    /// Streams already named in [`STREAMS`] by this process.
    known: Mutex<HashSet<String>>,
}

use crate::unix_ms as now_ms;

fn stream_key(tenant: &str, topic: &str) -> String {
    format!("quiver:ev:{tenant}:{topic}")
}

fn group_key(g: &Group, what: &str) -> String {
    format!(
        "quiver:ev:{}:{}:g:{}:{what}",
        g.tenant.as_str(),
        g.topic,
        g.name
    )
}

/// `ms-seq` as a pair, for ordering.
fn id_pair(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn unavailable(url: &str, e: impl std::fmt::Display) -> EventError {
    EventError::Unavailable(format!("{url}: {e}"))
}

impl RedisBus {
    /// Does not fail when Redis is down: it connects in the background, and calls
    /// fail with `Unavailable` until it has.
    pub fn start(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client =
            redis::Client::open(url).map_err(|e| anyhow::anyhow!("--redis `{url}`: {e}"))?;
        let manager = Arc::new(tokio::sync::OnceCell::new());
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let (cell, c, shown) = (manager.clone(), client.clone(), url.to_string());
        tokio::spawn(async move {
            loop {
                match ConnectionManager::new_with_config(c.clone(), config.clone()).await {
                    Ok(m) => {
                        let _ = cell.set(m);
                        tracing::info!(redis = %shown, "event bus connected");
                        return;
                    }
                    Err(e) => tracing::debug!(redis = %shown, "event bus not reachable yet: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Ok(RedisBus {
            url: url.to_string(),
            client,
            timeout,
            manager,
            readers: Mutex::new(HashMap::new()),
            known: Mutex::new(HashSet::new()),
        })
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, EventError> {
        let mut conn = self
            .manager
            .get()
            .cloned()
            .ok_or_else(|| EventError::Unavailable(format!("not connected to {}", self.url)))?;
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(&self.url, e)),
            Err(_) => Err(unavailable(&self.url, "no answer in time")),
        }
    }

    async fn pipe<T: redis::FromRedisValue>(&self, p: &redis::Pipeline) -> Result<T, EventError> {
        let mut conn = self
            .manager
            .get()
            .cloned()
            .ok_or_else(|| EventError::Unavailable(format!("not connected to {}", self.url)))?;
        match tokio::time::timeout(self.timeout, p.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(&self.url, e)),
            Err(_) => Err(unavailable(&self.url, "no answer in time")),
        }
    }

    /// `XREADGROUP … BLOCK` on the group's own connection.
    async fn read_new(
        &self,
        g: &Group,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<StreamId>, EventError> {
        let cached = self.readers.lock().ok().and_then(|r| r.get(g).cloned());
        let mut conn = match cached {
            Some(c) => c,
            None => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(block + self.timeout));
                let c = tokio::time::timeout(
                    self.timeout,
                    self.client
                        .get_multiplexed_async_connection_with_config(&config),
                )
                .await
                .map_err(|_| unavailable(&self.url, "no connection in time"))?
                .map_err(|e| unavailable(&self.url, e))?;
                if let Ok(mut r) = self.readers.lock() {
                    r.insert(g.clone(), c.clone());
                }
                c
            }
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&g.name)
            .arg(consumer)
            .arg("COUNT")
            .arg(max);
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS")
            .arg(stream_key(g.tenant.as_str(), &g.topic))
            .arg(">");
        let wait = block + self.timeout;
        let reply: Option<StreamReadReply> =
            match tokio::time::timeout(wait, cmd.query_async(&mut conn)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    if let Ok(mut r) = self.readers.lock() {
                        r.remove(g);
                    }
                    return Err(unavailable(&self.url, e));
                }
                Err(_) => {
                    if let Ok(mut r) = self.readers.lock() {
                        r.remove(g);
                    }
                    return Err(unavailable(&self.url, "no answer in time"));
                }
            };
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// The entries' events, their attempts counted (entries addressed to another
    /// group by a replay are acknowledged and skipped).
    async fn deliver(&self, g: &Group, entries: Vec<StreamId>) -> Result<Vec<Event>, EventError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let key = stream_key(g.tenant.as_str(), &g.topic);
        let attempts_key = group_key(g, "attempts");
        let mut mine = Vec::with_capacity(entries.len());
        let mut others = Vec::new();
        for e in entries {
            match e.get::<String>("for") {
                Some(to) if to != g.name => others.push(e.id),
                _ => mine.push(e),
            }
        }
        if !others.is_empty() {
            self.query::<i64>(redis::cmd("XACK").arg(&key).arg(&g.name).arg(&others))
                .await?;
        }
        let mut p = redis::pipe();
        for e in &mine {
            p.cmd("HINCRBY").arg(&attempts_key).arg(&e.id).arg(1);
        }
        let counts: Vec<u32> = match mine.is_empty() {
            true => Vec::new(),
            false => self.pipe(&p).await?,
        };
        mine.into_iter()
            .zip(counts)
            .map(|(e, attempt)| to_event(g, &e, attempt))
            .collect()
    }
}

fn field(e: &StreamId, name: &str) -> Option<String> {
    e.get::<String>(name)
}

fn to_event(g: &Group, e: &StreamId, attempt: u32) -> Result<Event, EventError> {
    let payload: Vec<u8> = e
        .get::<Vec<u8>>("p")
        .ok_or_else(|| EventError::Storage(format!("stream entry {} has no payload", e.id)))?;
    Ok(Event {
        id: e.id.clone(),
        tenant: g.tenant.clone(),
        topic: g.topic.clone(),
        time_ms: field(e, "t").and_then(|t| t.parse().ok()).unwrap_or(0),
        event: NewEvent {
            content_type: field(e, "ct").unwrap_or_else(|| "application/octet-stream".into()),
            payload,
            source: field(e, "s"),
            traceparent: field(e, "tp"),
        },
        attempt,
    })
}

/// The fields of an event's stream entry.
fn entry_fields(ev: &NewEvent, time_ms: u64) -> Vec<(&'static str, Vec<u8>)> {
    let mut f = vec![
        ("t", time_ms.to_string().into_bytes()),
        ("ct", ev.content_type.clone().into_bytes()),
        ("p", ev.payload.clone()),
    ];
    if let Some(s) = &ev.source {
        f.push(("s", s.clone().into_bytes()));
    }
    if let Some(tp) = &ev.traceparent {
        f.push(("tp", tp.clone().into_bytes()));
    }
    f
}

#[async_trait]
impl Bus for RedisBus {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn publish(
        &self,
        tenant: &TenantId,
        topic: &str,
        event: NewEvent,
    ) -> Result<String, EventError> {
        super::check_topic(topic).map_err(EventError::Invalid)?;
        if event.payload.len() > MAX_PAYLOAD {
            return Err(EventError::Invalid(format!(
                "an event's payload is at most {MAX_PAYLOAD} bytes; this one is {}",
                event.payload.len()
            )));
        }
        let key = stream_key(tenant.as_str(), topic);
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&key).arg("*");
        for (k, v) in entry_fields(&event, now_ms()) {
            cmd.arg(k).arg(v);
        }
        let id: String = self.query(&cmd).await?;
        let new = self
            .known
            .lock()
            .map(|mut k| k.insert(key.clone()))
            .unwrap_or(true);
        if new {
            self.query::<i64>(redis::cmd("SADD").arg(STREAMS).arg(&key))
                .await?;
        }
        Ok(id)
    }

    async fn subscribe(&self, g: &Group) -> Result<(), EventError> {
        let key = stream_key(g.tenant.as_str(), &g.topic);
        let made = self
            .query::<Value>(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&key)
                    .arg(&g.name)
                    .arg("$")
                    .arg("MKSTREAM"),
            )
            .await;
        match made {
            Ok(_) => {}
            Err(EventError::Unavailable(m)) if m.contains("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        self.query::<i64>(redis::cmd("SADD").arg(STREAMS).arg(&key))
            .await?;
        Ok(())
    }

    async fn claim(
        &self,
        g: &Group,
        consumer: &str,
        max: usize,
        visibility: Duration,
        block: Duration,
    ) -> Result<Vec<Event>, EventError> {
        let max = max.max(1);
        let key = stream_key(g.tenant.as_str(), &g.topic);
        let retry_key = group_key(g, "retry");
        let now = now_ms();
        let mut entries: Vec<StreamId> = Vec::new();
        // 1. Failed entries whose retry is due.
        let due: Vec<String> = self
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&retry_key)
                    .arg("-inf")
                    .arg(now)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(max),
            )
            .await?;
        if !due.is_empty() {
            let got: StreamClaimReply = self
                .query(
                    redis::cmd("XCLAIM")
                        .arg(&key)
                        .arg(&g.name)
                        .arg(consumer)
                        .arg(0)
                        .arg(&due),
                )
                .await?;
            self.query::<i64>(redis::cmd("ZREM").arg(&retry_key).arg(&due))
                .await?;
            entries.extend(got.ids);
        }
        // 2. Entries a consumer held past the visibility timeout (it died), except
        //    failed ones still waiting for their retry.
        if entries.len() < max {
            let got: StreamAutoClaimReply = self
                .query(
                    redis::cmd("XAUTOCLAIM")
                        .arg(&key)
                        .arg(&g.name)
                        .arg(consumer)
                        .arg(visibility.as_millis() as u64)
                        .arg("0-0")
                        .arg("COUNT")
                        .arg(max - entries.len()),
                )
                .await?;
            if !got.claimed.is_empty() {
                let mut p = redis::pipe();
                for e in &got.claimed {
                    p.cmd("ZSCORE").arg(&retry_key).arg(&e.id);
                }
                let waiting: Vec<Option<f64>> = self.pipe(&p).await?;
                entries.extend(
                    got.claimed
                        .into_iter()
                        .zip(waiting)
                        .filter(|(_, w)| w.is_none())
                        .map(|(e, _)| e),
                );
            }
            if !got.deleted_ids.is_empty() {
                // Trimmed under a lease (cannot happen through `trim`): drop the lease.
                self.query::<i64>(
                    redis::cmd("XACK")
                        .arg(&key)
                        .arg(&g.name)
                        .arg(&got.deleted_ids),
                )
                .await?;
            }
        }
        // 3. New entries, waiting for them if there is nothing else.
        if entries.len() < max {
            let wait = match entries.is_empty() {
                true => {
                    // Wake in time for the group's next retry.
                    let next: Vec<(String, f64)> = self
                        .query(
                            redis::cmd("ZRANGE")
                                .arg(&retry_key)
                                .arg(0)
                                .arg(0)
                                .arg("WITHSCORES"),
                        )
                        .await?;
                    match next.first() {
                        Some((_, at)) => {
                            let left = (*at as u64).saturating_sub(now_ms()).max(1);
                            block.min(Duration::from_millis(left))
                        }
                        None => block,
                    }
                }
                false => Duration::ZERO,
            };
            entries.extend(
                self.read_new(g, consumer, max - entries.len(), wait)
                    .await?,
            );
        }
        self.deliver(g, entries).await
    }

    async fn ack(&self, g: &Group, id: &str) -> Result<(), EventError> {
        let key = stream_key(g.tenant.as_str(), &g.topic);
        let mut p = redis::pipe();
        p.cmd("XACK").arg(&key).arg(&g.name).arg(id);
        p.cmd("HDEL").arg(group_key(g, "attempts")).arg(id).ignore();
        p.cmd("ZREM").arg(group_key(g, "retry")).arg(id).ignore();
        let (acked,): (i64,) = self.pipe(&p).await?;
        match acked {
            1 => Ok(()),
            _ => Err(EventError::NotLeased(id.chars().take(64).collect())),
        }
    }

    async fn fail(
        &self,
        g: &Group,
        id: &str,
        reason: &str,
        retry: &Retry,
    ) -> Result<Failed, EventError> {
        let key = stream_key(g.tenant.as_str(), &g.topic);
        let pending: Vec<Value> = self
            .query(
                redis::cmd("XPENDING")
                    .arg(&key)
                    .arg(&g.name)
                    .arg(id)
                    .arg(id)
                    .arg(1),
            )
            .await?;
        if pending.is_empty() {
            return Err(EventError::NotLeased(id.chars().take(64).collect()));
        }
        let attempts: Option<u32> = self
            .query(redis::cmd("HGET").arg(group_key(g, "attempts")).arg(id))
            .await?;
        let attempts = attempts.unwrap_or(1);
        if attempts < retry.max_attempts {
            let wait = retry.delay(attempts, super::jitter());
            let due = now_ms().saturating_add(wait.as_millis() as u64);
            self.query::<i64>(
                redis::cmd("ZADD")
                    .arg(group_key(g, "retry"))
                    .arg(due)
                    .arg(id),
            )
            .await?;
            return Ok(Failed::Retry(wait));
        }
        let range: StreamRangeReply = self
            .query(redis::cmd("XRANGE").arg(&key).arg(id).arg(id))
            .await?;
        let reason: String = reason.chars().take(1024).collect();
        let mut p = redis::pipe();
        p.atomic();
        if let Some(e) = range.ids.first() {
            let ev = to_event(g, e, attempts)?;
            let add = p.cmd("XADD").arg(group_key(g, "dlq")).arg("*");
            for (k, v) in entry_fields(&ev.event, ev.time_ms) {
                add.arg(k).arg(v);
            }
            add.arg("id")
                .arg(id)
                .arg("reason")
                .arg(&reason)
                .arg("attempts")
                .arg(attempts)
                .ignore();
        }
        p.cmd("XACK").arg(&key).arg(&g.name).arg(id).ignore();
        p.cmd("HDEL").arg(group_key(g, "attempts")).arg(id).ignore();
        self.pipe::<()>(&p).await?;
        Ok(Failed::Dead)
    }

    async fn dead(&self, g: &Group, limit: usize) -> Result<Vec<DeadEvent>, EventError> {
        let range: StreamRangeReply = self
            .query(
                redis::cmd("XRANGE")
                    .arg(group_key(g, "dlq"))
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit.max(1)),
            )
            .await?;
        range
            .ids
            .iter()
            .map(|e| {
                let attempts = field(e, "attempts")
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0);
                let mut event = to_event(g, e, attempts)?;
                event.id = field(e, "id").unwrap_or_else(|| e.id.clone());
                Ok(DeadEvent {
                    event,
                    reason: field(e, "reason").unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn replay(&self, g: &Group, ids: Option<&[String]>) -> Result<usize, EventError> {
        let dlq = group_key(g, "dlq");
        let key = stream_key(g.tenant.as_str(), &g.topic);
        let mut n = 0;
        let mut from = "-".to_string();
        loop {
            let range: StreamRangeReply = self
                .query(
                    redis::cmd("XRANGE")
                        .arg(&dlq)
                        .arg(&from)
                        .arg("+")
                        .arg("COUNT")
                        .arg(256),
                )
                .await?;
            let Some(last) = range.ids.last() else {
                return Ok(n);
            };
            from = format!("({}", last.id);
            for e in &range.ids {
                let original = field(e, "id").unwrap_or_default();
                if ids.is_some_and(|ids| !ids.contains(&original)) {
                    continue;
                }
                let ev = to_event(g, e, 0)?;
                let mut p = redis::pipe();
                p.atomic();
                let add = p.cmd("XADD").arg(&key).arg("*");
                for (k, v) in entry_fields(&ev.event, ev.time_ms) {
                    add.arg(k).arg(v);
                }
                add.arg("for").arg(&g.name).ignore();
                p.cmd("XDEL").arg(&dlq).arg(&e.id).ignore();
                self.pipe::<()>(&p).await?;
                n += 1;
            }
        }
    }

    async fn recent(
        &self,
        tenant: &TenantId,
        topic: &str,
        limit: usize,
    ) -> Result<Vec<Event>, EventError> {
        let range: StreamRangeReply = self
            .query(
                redis::cmd("XREVRANGE")
                    .arg(stream_key(tenant.as_str(), topic))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit.clamp(1, 1000)),
            )
            .await?;
        let g = Group {
            tenant: tenant.clone(),
            topic: topic.to_string(),
            name: String::new(),
        };
        range.ids.iter().map(|e| to_event(&g, e, 0)).collect()
    }

    async fn groups(&self, tenant: &TenantId, topic: &str) -> Result<Vec<String>, EventError> {
        let key = stream_key(tenant.as_str(), topic);
        let exists: i64 = self.query(redis::cmd("EXISTS").arg(&key)).await?;
        if exists == 0 {
            return Ok(Vec::new());
        }
        let info: StreamInfoGroupsReply = self
            .query(redis::cmd("XINFO").arg("GROUPS").arg(&key))
            .await?;
        Ok(info.groups.into_iter().map(|g| g.name).collect())
    }

    async fn trim(&self, policy: &Trim) -> Result<u64, EventError> {
        let keys: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(STREAMS)).await?;
        let mut total = 0u64;
        for key in keys {
            total += self.trim_stream(&key, policy).await?;
        }
        Ok(total)
    }

    async fn tick(&self, key: &str, tick_ms: u64) -> Result<bool, EventError> {
        let set: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(format!("quiver:tick:{key}:{tick_ms}"))
                    .arg(now_ms())
                    .arg("NX")
                    .arg("PX")
                    .arg(30u64 * 24 * 3600 * 1000),
            )
            .await?;
        Ok(set.is_some())
    }
}

impl RedisBus {
    /// `XTRIM MINID` at the policy's bound, but never past what a group has not
    /// acknowledged: its oldest pending entry, or the last one it was given.
    async fn trim_stream(&self, key: &str, policy: &Trim) -> Result<u64, EventError> {
        let by_age = now_ms().saturating_sub(policy.max_age.as_millis() as u64);
        let mut bound = (by_age, 0u64);
        let newest: StreamRangeReply = self
            .query(
                redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(policy.max_len.max(1)),
            )
            .await?;
        if policy.max_len == 0 {
            if let Some(top) = newest.ids.first().and_then(|e| id_pair(&e.id)) {
                bound = bound.max((top.0, top.1 + 1));
            }
        } else if newest.ids.len() as u64 >= policy.max_len {
            if let Some(kept) = newest.ids.last().and_then(|e| id_pair(&e.id)) {
                bound = bound.max(kept);
            }
        }
        let exists: i64 = self.query(redis::cmd("EXISTS").arg(key)).await?;
        if exists == 0 {
            return Ok(0);
        }
        let info: StreamInfoGroupsReply = self
            .query(redis::cmd("XINFO").arg("GROUPS").arg(key))
            .await?;
        for group in &info.groups {
            if let Some(last) = id_pair(&group.last_delivered_id) {
                bound = bound.min(last);
            }
            if group.pending > 0 {
                let summary: StreamPendingReply = self
                    .query(redis::cmd("XPENDING").arg(key).arg(&group.name))
                    .await?;
                if let StreamPendingReply::Data(d) = summary {
                    if let Some(first) = id_pair(&d.start_id) {
                        bound = bound.min(first);
                    }
                }
            }
        }
        let n: u64 = self
            .query(
                redis::cmd("XTRIM")
                    .arg(key)
                    .arg("MINID")
                    .arg(format!("{}-{}", bound.0, bound.1)),
            )
            .await?;
        Ok(n)
    }
}
