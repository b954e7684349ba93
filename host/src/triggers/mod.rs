//! The triggers that make Quiver act on its own: `[triggers] events` (a consumer
//! per subscribing function and topic, on the event bus) and `[triggers] schedule`
//! (cron, in UTC, once per tick across hosts). Both run the function through the
//! one call path ([`Calls::call`], as `Trigger::Event` / `Trigger::Schedule`), so
//! admission, quotas, limits and metrics are those of an HTTP call.
//!
//! Which functions subscribe is read from the registry: the serving version of
//! every function whose manifest has a trigger. A deploy or rollback on this host
//! reconciles at once (and a deploy subscribes before it answers, so an event
//! published after the answer is delivered); changes made through another host are
//! seen at the next rescan.

use crate::call::{Calls, Input, Outcome, Trigger};
use crate::events::{Bus, Event, EventError, Failed, Group};
use crate::functions::Functions;
use crate::manifest::{EventTrigger, Manifest};
use crate::server::ApiError;
use crate::tenancy::{FunctionRef, TenantId};
use axum::http::StatusCode;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use quiver_registry::VersionRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod schedule;
mod taps;

/// How the triggers run on this host.
#[derive(Debug, Clone)]
pub struct TriggerConfig {
    /// This host's consumer name in every group (unique per host).
    pub consumer: String,
    /// How long an event is leased to this host before another may take it.
    pub visibility: Duration,
    /// How often the registry is read for subscriptions made through other hosts.
    pub rescan: Duration,
    /// What the trimmer keeps, and how often it runs.
    pub trim: crate::events::Trim,
    pub trim_every: Duration,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig {
            consumer: default_consumer(),
            visibility: Duration::from_secs(30),
            rescan: Duration::from_secs(5),
            trim: crate::events::Trim::default(),
            trim_every: Duration::from_secs(60),
        }
    }
}

/// `hostname-pid`: unique per running host.
pub fn default_consumer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}", std::process::id())
}

/// What a running worker was started for: restarted when it changes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Topic {
        tenant: String,
        name: String,
        topic: String,
    },
    Schedule {
        tenant: String,
        name: String,
    },
}

struct Worker {
    /// `version digest`: a new deploy of the name restarts the worker.
    of: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Triggers {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) calls: Arc<Calls>,
    functions: Arc<Functions>,
    pub(crate) config: TriggerConfig,
    workers: Mutex<HashMap<Key, Worker>>,
    /// Poked by a deploy or rollback on this host.
    changed: tokio::sync::Notify,
    /// Deliveries by outcome (`ok`, `retry`, `dead`).
    pub(crate) deliveries: IntCounterVec,
    /// Schedule ticks run by this host, by outcome (`ok`, `error`).
    pub(crate) ticks: IntCounterVec,
    /// Successful deliveries that were not an event's first (a retry, or an event
    /// a crashed or stopped host had leased).
    redelivered: IntCounterVec,
    /// Calls of monitors on tapped pipelines' observations, by outcome (`ok`, `error`).
    observations: IntCounterVec,
    /// Publication to the start of its first delivery's call, per event.
    lag: HistogramVec,
}

/// A delivery that went through the call path; its status is what is counted.
pub(crate) struct Delivered;

impl Outcome for Delivered {
    fn status(&self) -> StatusCode {
        StatusCode::OK
    }
}

impl Triggers {
    pub fn new(
        bus: Arc<dyn Bus>,
        calls: Arc<Calls>,
        functions: Arc<Functions>,
        config: TriggerConfig,
    ) -> anyhow::Result<Arc<Self>> {
        let deliveries = IntCounterVec::new(
            Opts::new(
                "quiver_event_deliveries_total",
                "Event deliveries to triggered functions, by outcome (ok, retry, dead)",
            ),
            &["tenant", "function", "topic", "outcome"],
        )?;
        let ticks = IntCounterVec::new(
            Opts::new(
                "quiver_schedule_runs_total",
                "Schedule ticks this host ran, by outcome (ok, error)",
            ),
            &["tenant", "function", "outcome"],
        )?;
        let redelivered = IntCounterVec::new(
            Opts::new(
                "quiver_event_redelivered_total",
                "Events processed successfully on a later attempt than their first",
            ),
            &["tenant", "function", "topic"],
        )?;
        let observations = IntCounterVec::new(
            Opts::new(
                "quiver_monitor_observations_total",
                "Calls of a monitor on a tapped pipeline's observations, by outcome (ok, error)",
            ),
            &["tenant", "pipeline", "monitor", "outcome"],
        )?;
        let lag = HistogramVec::new(
            HistogramOpts::new(
                "quiver_event_lag_seconds",
                "From an event's publication to the start of its first delivery (ms resolution)",
            )
            .buckets(vec![
                0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0, 30.0, 60.0,
            ]),
            &["tenant", "function", "topic"],
        )?;
        Ok(Arc::new(Triggers {
            lag,
            observations,
            redelivered,
            bus,
            calls,
            functions,
            config,
            workers: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
            deliveries,
            ticks,
        }))
    }

    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.deliveries.clone()),
            Box::new(self.ticks.clone()),
            Box::new(self.redelivered.clone()),
            Box::new(self.observations.clone()),
            Box::new(self.lag.clone()),
        ]
    }

    /// Start reconciling (and trimming) in the background until `self` is dropped.
    pub fn start(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let rescan = self.config.rescan;
        tokio::spawn(async move {
            loop {
                let Some(t) = weak.upgrade() else { return };
                if let Err(e) = t.reconcile().await {
                    tracing::warn!("reading triggers from the registry: {e:#}");
                }
                let wake = async {
                    t.changed.notified().await;
                };
                let _ = tokio::time::timeout(rescan, wake).await;
            }
        });
        if let Some(mut queues) = self.functions.taps().take_queues() {
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some(q) = queues.recv().await {
                    tokio::spawn(taps::run(weak.clone(), q));
                }
            });
        }
        let weak = Arc::downgrade(self);
        let every = self.config.trim_every.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(t) = weak.upgrade() else { return };
                match t.bus.trim(&t.config.trim).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(trimmed = n, "event bus trimmed"),
                    Err(e) => tracing::warn!("trimming the event bus: {e}"),
                }
            }
        });
    }

    /// A version of `record` now serves: subscribe its topics before the deploy is
    /// answered, and reconcile.
    pub async fn deployed(&self, record: &VersionRecord) -> Result<(), ApiError> {
        if let Ok(m) = Manifest::parse(&record.manifest) {
            if let Ok(Some(t)) = m.event_trigger() {
                let tenant = TenantId::parse(&record.tenant)
                    .map_err(|m| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m))?;
                for topic in t.topics {
                    let g = Group {
                        tenant: tenant.clone(),
                        topic,
                        name: record.name.clone(),
                    };
                    self.bus.subscribe(&g).await?;
                }
            }
        }
        self.changed.notify_one();
        Ok(())
    }

    /// Make the running workers match the registry's serving versions.
    async fn reconcile(self: &Arc<Self>) -> anyhow::Result<()> {
        let registry = self.functions.registry_handle();
        let serving = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<VersionRecord>> {
            let index = registry.index();
            let mut out = Vec::new();
            for t in index.tenants()? {
                out.extend(index.list_serving(&t)?);
            }
            Ok(out)
        })
        .await??;
        let mut want: HashMap<Key, (String, Spec)> = HashMap::new();
        for rec in serving {
            let Ok(m) = Manifest::parse(&rec.manifest) else {
                continue;
            };
            let Ok(tenant) = TenantId::parse(&rec.tenant) else {
                continue;
            };
            let of = format!("{} {}", rec.version, rec.digest);
            let Ok(target) = FunctionRef::new(tenant.clone(), &rec.name, Some(&rec.version)) else {
                continue;
            };
            if let Ok(Some(t)) = m.event_trigger() {
                for topic in &t.topics {
                    let key = Key::Topic {
                        tenant: rec.tenant.clone(),
                        name: rec.name.clone(),
                        topic: topic.clone(),
                    };
                    let group = Group {
                        tenant: tenant.clone(),
                        topic: topic.clone(),
                        name: rec.name.clone(),
                    };
                    let spec = Spec::Topic(target.clone(), group, t.clone());
                    want.insert(key, (of.clone(), spec));
                }
            }
            if let Ok(Some(cron)) = m.schedule() {
                let key = Key::Schedule {
                    tenant: rec.tenant.clone(),
                    name: rec.name.clone(),
                };
                want.insert(key, (of.clone(), Spec::Schedule(target.clone(), cron)));
            }
        }
        let mut start = Vec::new();
        {
            let mut workers = self
                .workers
                .lock()
                .map_err(|_| anyhow::anyhow!("trigger table lock poisoned"))?;
            workers.retain(|k, w| want.get(k).is_some_and(|(of, _)| *of == w.of));
            for (key, (of, spec)) in want {
                if !workers.contains_key(&key) {
                    start.push((key, of, spec));
                }
            }
        }
        for (key, of, spec) in start {
            let task = match spec {
                Spec::Topic(target, group, trigger) => {
                    if let Err(e) = self.bus.subscribe(&group).await {
                        tracing::warn!(topic = %group.topic, function = %group.name, "subscribing: {e}");
                        continue;
                    }
                    tokio::spawn(consume(Arc::downgrade(self), target, group, trigger))
                }
                Spec::Schedule(target, cron) => {
                    tokio::spawn(schedule::run(Arc::downgrade(self), target, cron))
                }
            };
            if let Ok(mut workers) = self.workers.lock() {
                workers.insert(key, Worker { of, task });
            }
        }
        Ok(())
    }

    /// How many workers run now (consumers and schedules).
    pub fn running(&self) -> usize {
        self.workers.lock().map_or(0, |w| w.len())
    }
}

enum Spec {
    Topic(FunctionRef, Group, EventTrigger),
    Schedule(FunctionRef, croner::Cron),
}

/// One unit of work: the events one invocation takes, and its body.
struct Unit {
    events: Vec<Event>,
    content_type: String,
    body: bytes::Bytes,
}

/// Batch JSON events into one body of rows (each event is an object, an array of
/// objects or `{"rows": [...]}`); any other event is a unit of its own.
fn units(events: Vec<Event>, batch: bool) -> Vec<Unit> {
    let mut out = Vec::new();
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let mut joined: Vec<Event> = Vec::new();
    for e in events {
        let json = e.event.content_type.starts_with("application/json");
        let parsed = match (batch, json) {
            (true, true) => serde_json::from_slice::<serde_json::Value>(&e.event.payload).ok(),
            _ => None,
        };
        let items = match parsed {
            Some(serde_json::Value::Array(items)) => Some(items),
            Some(serde_json::Value::Object(mut o)) => match o.remove("rows") {
                Some(serde_json::Value::Array(items)) => Some(items),
                Some(other) => {
                    o.insert("rows".into(), other);
                    Some(vec![serde_json::Value::Object(o)])
                }
                None => Some(vec![serde_json::Value::Object(o)]),
            },
            _ => None,
        };
        match items {
            Some(items) => {
                rows.extend(items);
                joined.push(e);
            }
            None => out.push(Unit {
                content_type: e.event.content_type.clone(),
                body: bytes::Bytes::from(e.event.payload.clone()),
                events: vec![e],
            }),
        }
    }
    if !joined.is_empty() {
        out.push(Unit {
            events: joined,
            content_type: "application/json".into(),
            body: bytes::Bytes::from(serde_json::Value::Array(rows).to_string()),
        });
    }
    out
}

/// A subscription's consumer: claim, invoke, acknowledge or fail, forever.
async fn consume(
    triggers: std::sync::Weak<Triggers>,
    target: FunctionRef,
    group: Group,
    trigger: EventTrigger,
) {
    let block = Duration::from_secs(5);
    // Without batching, up to this many events run at once (each its own call).
    let claim = if trigger.batch_size > 1 {
        trigger.batch_size
    } else {
        16
    };
    loop {
        let Some(t) = triggers.upgrade() else { return };
        let (bus, consumer, visibility) = (
            t.bus.clone(),
            t.config.consumer.clone(),
            t.config.visibility,
        );
        drop(t);
        let mut events = match bus.claim(&group, &consumer, claim, visibility, block).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(topic = %group.topic, function = %group.name, "claiming events: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if events.is_empty() {
            continue;
        }
        if events.len() < trigger.batch_size && !trigger.batch_wait.is_zero() {
            let until = Instant::now() + trigger.batch_wait;
            while events.len() < trigger.batch_size {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let want = trigger.batch_size - events.len();
                match bus.claim(&group, &consumer, want, visibility, left).await {
                    Ok(more) => events.extend(more),
                    Err(_) => break,
                }
            }
        }
        let Some(t) = triggers.upgrade() else { return };
        let work = units(events, trigger.batch_size > 1)
            .into_iter()
            .map(|u| deliver(&t, &target, &group, &trigger, u));
        futures::future::join_all(work).await;
    }
}

/// Run one unit through the call path; acknowledge its events, or fail them.
async fn deliver(
    t: &Triggers,
    target: &FunctionRef,
    group: &Group,
    trigger: &EventTrigger,
    unit: Unit,
) {
    let Unit {
        events,
        content_type,
        body,
    } = unit;
    let now = crate::unix_ms();
    for e in events.iter().filter(|e| e.attempt == 1) {
        t.lag
            .with_label_values(&[group.tenant.as_str(), &group.name, &group.topic])
            .observe(now.saturating_sub(e.time_ms) as f64 / 1000.0);
    }
    // A batch runs in the trace of its first event.
    let traceparent = events.first().and_then(|e| e.event.traceparent.clone());
    let called = t
        .calls
        .call(
            Trigger::Event,
            None,
            traceparent.as_deref(),
            Ok(target.clone()),
            |_| async move { Ok((Input::Body { content_type, body }, ())) },
            |_, _, ()| Ok(Delivered),
        )
        .await;
    let (tenant, name) = (group.tenant.as_str(), group.name.as_str());
    for e in &events {
        let outcome = match &called.result {
            Ok(_) => match ack(&*t.bus, group, &e.id).await {
                Ok(()) => {
                    if e.attempt > 1 {
                        t.redelivered
                            .with_label_values(&[tenant, name, &group.topic])
                            .inc();
                    }
                    "ok"
                }
                Err(err) => {
                    tracing::warn!(id = %e.id, topic = %group.topic, function = name, "acknowledging: {err}");
                    continue;
                }
            },
            Err(err) => {
                let reason = format!("{}: {}", err.code(), err.message());
                match t.bus.fail(group, &e.id, &reason, &trigger.retry).await {
                    Ok(Failed::Retry(after)) => {
                        tracing::info!(id = %e.id, topic = %group.topic, function = name, attempt = e.attempt, retry_in = ?after, "event failed: {reason}");
                        "retry"
                    }
                    Ok(Failed::Dead) => {
                        tracing::warn!(id = %e.id, topic = %group.topic, function = name, attempts = e.attempt, "event dead: {reason}");
                        "dead"
                    }
                    Err(err) => {
                        tracing::warn!(id = %e.id, topic = %group.topic, function = name, "failing: {err}");
                        continue;
                    }
                }
            }
        };
        t.deliveries
            .with_label_values(&[tenant, name, &group.topic, outcome])
            .inc();
    }
}

/// Acknowledge `id`, retrying while the bus is unavailable (up to about 3 s): an
/// ack is idempotent, and one whose reply was lost (the bus died after applying
/// it) finds the event no longer leased on the retry, which means it was acked.
async fn ack(bus: &dyn Bus, group: &Group, id: &str) -> Result<(), EventError> {
    let mut wait = std::time::Duration::from_millis(100);
    let mut retried = false;
    loop {
        match bus.ack(group, id).await {
            Err(EventError::NotLeased(_)) if retried => return Ok(()),
            Err(EventError::Unavailable(m)) if wait <= std::time::Duration::from_millis(1600) => {
                tracing::debug!(id, "acknowledging, will retry: {m}");
                tokio::time::sleep(wait).await;
                wait *= 2;
                retried = true;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::NewEvent;

    fn ev(id: &str, ct: &str, payload: &str) -> Event {
        Event {
            id: id.into(),
            tenant: TenantId::parse("acme").unwrap(),
            topic: "t".into(),
            time_ms: 0,
            event: NewEvent {
                content_type: ct.into(),
                payload: payload.as_bytes().to_vec(),
                source: None,
                traceparent: None,
            },
            attempt: 1,
        }
    }

    #[test]
    fn json_events_join_into_one_batch_and_others_go_alone() {
        let events = vec![
            ev("1", "application/json", r#"{"x":1}"#),
            ev("2", "application/json", r#"[{"x":2},{"x":3}]"#),
            ev("3", "text/csv", "x\n4\n"),
            ev("4", "application/json", r#"{"rows":[{"x":5}]}"#),
        ];
        let u = units(events.clone(), true);
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].content_type, "text/csv");
        let rows: serde_json::Value = serde_json::from_slice(&u[1].body).unwrap();
        assert_eq!(rows, serde_json::json!([{"x":1},{"x":2},{"x":3},{"x":5}]));
        assert_eq!(u[1].events.len(), 3);
        let single = units(events, false);
        assert_eq!(single.len(), 4, "batch_size 1: one call per event");
        assert_eq!(&single[0].body[..], br#"{"x":1}"#);
    }
}
