//! The web dashboard at `/ui`: a static page (embedded in the binary; charts drawn
//! with the vendored uPlot) over two JSON routes that need a token and answer only
//! what the token may see (the platform admin: every tenant; a tenant's token: its
//! own tenant).
//!
//! - `GET /ui`: the HTML shell (no data; open).
//! - `GET /ui/assets/{file}`: the page's script and styles and uPlot (open).
//! - `GET /ui/api/overview`: functions (serving version, versions, lifecycle state,
//!   instances, cold starts, traffic split, bound models, triggers), models (versions
//!   with lineage, aliases and their history), monitors (report windows: per feature
//!   its metrics over time), event deliveries and dead-letter queues, and the recent
//!   audit log (for a token with the `admin` scope or the platform admin).
//! - `GET /ui/api/series`: request rate (per version), errors, latency p50/p99 and
//!   cold starts over time, per function, from a sampler of the host's own metrics
//!   (every `QUIVER_UI_SAMPLE_MS`, default 5000, into a ring of [`RING`] points per
//!   function; history starts when the sampler does: [`spawn_sampler`] at server
//!   start, or else the first call of a data route).

use super::{Access, ApiError, AppState};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::tenancy::{Scope, TenantId};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/api/overview", get(overview))
        .route("/ui/api/series", get(series))
}

const INDEX_HTML: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");
const UPLOT_JS: &str = include_str!("../../ui/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../ui/vendor/uPlot.min.css");

/// Points kept per function (at the default 5 s: half an hour).
pub const RING: usize = 360;
/// Functions (tenant, name) the sampler keeps rings for; more are not sampled.
const MAX_SERIES: usize = 1024;
/// Versions one point tells apart (the busiest; the rest are summed as `other`).
const MAX_POINT_VERSIONS: usize = 8;
/// What one overview answer lists at most, per tenant.
const MAX_TENANTS: usize = 100;
const MAX_FUNCTIONS: usize = 200;
const MAX_VERSIONS: usize = 10;
const MAX_MODELS: usize = 50;
const MAX_MODEL_VERSIONS: usize = 20;
const MAX_ALIAS_MOVES: usize = 10;
const MAX_WINDOWS: usize = 48;
/// Topics whose newest events are shown, and how many events in all.
const MAX_RECENT_TOPICS: usize = 20;
const MAX_RECENT: usize = 20;
const MAX_FEATURES: usize = 32;
const MAX_STATS: usize = 8;
const MAX_DEAD_READ: usize = 100;
const MAX_DEAD_SHOWN: usize = 20;
const MAX_ACTIVITY: usize = 40;

/// The page's headers: nothing but this origin's script and styles, never framed.
fn hardened(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn page() -> Response {
    hardened("text/html; charset=utf-8", INDEX_HTML)
}

async fn asset(super::extract::Path(file): super::extract::Path<String>) -> Response {
    let (content_type, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "app.css" => ("text/css; charset=utf-8", APP_CSS),
        "uPlot.iife.min.js" => ("text/javascript; charset=utf-8", UPLOT_JS),
        "uPlot.min.css" => ("text/css; charset=utf-8", UPLOT_CSS),
        _ => {
            return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such asset")
                .into_response()
        }
    };
    hardened(content_type, body)
}

/// The tenants the caller sees, and whether it may read their audit log.
fn visible(state: &AppState, access: &Access) -> Result<(Vec<TenantId>, bool), ApiError> {
    let p = access.principal.as_ref().ok_or_else(|| {
        super::unauthorized("the dashboard's data needs a token (Authorization: Bearer)")
    })?;
    Ok(match &p.tenant {
        Some(own) => (vec![own.clone()], p.may(own, Scope::Admin).is_ok()),
        None => {
            let all = state.tenancy.tenants();
            let ids = all.iter().take(MAX_TENANTS).map(|t| t.id.clone()).collect();
            (ids, true)
        }
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------------------
// The overview.

/// What the registry holds of one tenant, read in one blocking call.
struct Stored {
    functions: Vec<StoredFunction>,
    models: Vec<StoredModel>,
}

/// A function's serving version, its newest versions and its traffic split.
struct StoredFunction {
    serving: quiver_registry::VersionRecord,
    versions: Vec<quiver_registry::VersionRecord>,
    split: Vec<(String, u32)>,
}

struct StoredModel {
    versions: Vec<quiver_registry::VersionRecord>,
    aliases: Vec<(String, String)>,
    history: Vec<quiver_registry::AliasMove>,
}

fn read_stored(r: &quiver_registry::Registry, tenant: &str) -> quiver_registry::Result<Stored> {
    let mut functions = Vec::new();
    for serving in r
        .index()
        .list_serving(tenant)?
        .into_iter()
        .take(MAX_FUNCTIONS)
    {
        let mut versions = r.index().versions(tenant, &serving.name)?;
        let skip = versions.len().saturating_sub(MAX_VERSIONS);
        versions.drain(..skip);
        let split = r.traffic(tenant, &serving.name)?;
        functions.push(StoredFunction {
            serving,
            versions,
            split,
        });
    }
    let mut models = Vec::new();
    for newest in r.list_models(tenant)?.into_iter().take(MAX_MODELS) {
        let mut versions = r.model_versions(tenant, &newest.name)?;
        let skip = versions.len().saturating_sub(MAX_MODEL_VERSIONS);
        versions.drain(..skip);
        let aliases = r.model_aliases(tenant, &newest.name)?;
        let mut history = r.alias_history(tenant, &newest.name)?;
        let skip = history.len().saturating_sub(MAX_ALIAS_MOVES);
        history.drain(..skip);
        models.push(StoredModel {
            versions,
            aliases,
            history,
        });
    }
    Ok(Stored { functions, models })
}

/// A function as the dashboard lists it.
fn function_json(
    state: &AppState,
    serving: &quiver_registry::VersionRecord,
    versions: &[quiver_registry::VersionRecord],
    split: &[(String, u32)],
) -> Value {
    let (tenant, name) = (serving.tenant.as_str(), serving.name.as_str());
    let live = state.functions.live_state(tenant, name, &serving.version);
    let versions: Vec<Value> = versions
        .iter()
        .rev()
        .map(|v| {
            let live = state.functions.live_state(tenant, name, &v.version);
            json!({
                "version": v.version, "digest": v.digest, "created_at": v.created_at,
                "state": live.as_ref().map_or("cold", |l| l.state),
                "serving": v.version == serving.version,
            })
        })
        .collect();
    let manifest = Manifest::parse(&serving.manifest).ok();
    let models: Vec<String> = manifest
        .as_ref()
        .map(|m| m.models.values().cloned().collect())
        .unwrap_or_default();
    let topics: Vec<String> = manifest
        .as_ref()
        .and_then(|m| m.event_trigger().ok().flatten())
        .map(|t| t.topics)
        .unwrap_or_default();
    let publishes: Vec<String> = manifest
        .as_ref()
        .and_then(|m| m.events.as_ref())
        .map(|e| e.publish.clone())
        .unwrap_or_default();
    let monitor = manifest
        .as_ref()
        .and_then(|m| m.pipeline.as_ref())
        .and_then(|p| p.monitor.clone());
    let split: serde_json::Map<String, Value> =
        split.iter().map(|(v, w)| (v.clone(), json!(w))).collect();
    json!({
        "name": name, "kind": serving.kind, "version": serving.version,
        "digest": serving.digest, "created_at": serving.created_at,
        "state": live.as_ref().map_or("cold", |l| l.state),
        "in_flight": live.as_ref().map_or(0, |l| l.in_flight),
        "queued": live.as_ref().map_or(0, |l| l.queued),
        "busy_instances": live.as_ref().map_or(0, |l| l.busy_instances),
        "idle_instances": live.as_ref().map_or(0, |l| l.idle_instances),
        "cold_starts": state.functions.cold_starts(tenant, name),
        "versions": versions, "split": split, "models": models,
        "topics": topics, "publishes": publishes, "monitor": monitor,
    })
}

fn model_json(m: &StoredModel) -> Option<Value> {
    let newest = m.versions.last()?;
    let aliases: serde_json::Map<String, Value> = m
        .aliases
        .iter()
        .map(|(a, v)| (a.clone(), json!(v)))
        .collect();
    let versions: Vec<Value> = m
        .versions
        .iter()
        .rev()
        .map(super::models::model_json)
        .collect();
    Some(json!({
        "name": newest.name, "newest": newest.version, "aliases": aliases,
        "versions": versions, "history": m.history,
    }))
}

/// `amount.z` -> (`amount`, `z`); a name without a dot is its own feature.
fn feature_of(metric: &str) -> (&str, &str) {
    metric.rsplit_once('.').unwrap_or((metric, "value"))
}

/// A monitor's windows, oldest first, and per feature each statistic's mean per
/// window (`null` where a window did not report it).
fn monitor_json(name: &str, version: &str, mut windows: Vec<crate::monitors::Window>) -> Value {
    windows.reverse();
    let mut features: BTreeMap<String, BTreeMap<String, Vec<Option<f64>>>> = BTreeMap::new();
    let n = windows.len();
    for (i, w) in windows.iter().enumerate() {
        for (metric, m) in &w.metrics {
            let (feature, stat) = feature_of(metric);
            if !features.contains_key(feature) && features.len() >= MAX_FEATURES {
                continue;
            }
            let stats = features.entry(feature.to_string()).or_default();
            if !stats.contains_key(stat) && stats.len() >= MAX_STATS {
                continue;
            }
            let values = stats
                .entry(stat.to_string())
                .or_insert_with(|| vec![None; n]);
            values[i] = m.mean.is_finite().then_some(m.mean);
        }
    }
    let list: Vec<Value> = windows
        .iter()
        .map(|w| {
            json!({
                "start_ms": w.start_ms, "end_ms": w.end_ms, "observations": w.observations,
                "rows": w.rows, "alerts": w.alerts, "monitor_version": w.monitor_version,
            })
        })
        .collect();
    json!({ "name": name, "version": version, "windows": list, "features": features })
}

/// Cumulative event deliveries per (function, topic) by outcome, from the metrics.
fn deliveries(metrics: &Metrics, tenants: &[TenantId]) -> HashMap<String, Vec<Value>> {
    let mut by: BTreeMap<(String, String, String), BTreeMap<String, u64>> = BTreeMap::new();
    for f in metrics.gather() {
        if f.name() != "quiver_event_deliveries_total" {
            continue;
        }
        for m in f.get_metric() {
            let l = |k: &str| label(m, k).unwrap_or_default().to_string();
            let tenant = l("tenant");
            if !tenants.iter().any(|t| t.as_str() == tenant) {
                continue;
            }
            let v = m.get_counter().get_value().max(0.0) as u64;
            *by.entry((tenant, l("function"), l("topic")))
                .or_default()
                .entry(l("outcome"))
                .or_default() += v;
        }
    }
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for ((tenant, function, topic), outcomes) in by {
        out.entry(tenant)
            .or_default()
            .push(json!({ "function": function, "topic": topic, "outcomes": outcomes }));
    }
    out
}

async fn overview(
    State(state): State<Arc<AppState>>,
    access: Access,
) -> Result<Json<Value>, ApiError> {
    let sampler = sampler(&state);
    let (tenants, audit) = visible(&state, &access)?;
    let mut delivered = deliveries(&state.metrics, &tenants);
    let mut out = Vec::with_capacity(tenants.len());
    for tenant in &tenants {
        let t = tenant.to_string();
        let stored = state
            .functions
            .registry_call(move |r| read_stored(r, &t))
            .await?;
        let functions: Vec<Value> = stored
            .functions
            .iter()
            .map(|f| function_json(&state, &f.serving, &f.versions, &f.split))
            .collect();
        let models: Vec<Value> = stored.models.iter().filter_map(model_json).collect();
        let mut monitors = Vec::new();
        let mut dead = Vec::new();
        let mut dead_more = false;
        for StoredFunction { serving, .. } in &stored.functions {
            if serving.kind == "monitor" {
                let windows =
                    super::monitors::windows(&state, tenant.as_str(), &serving.name, MAX_WINDOWS)
                        .await?;
                monitors.push(monitor_json(&serving.name, &serving.version, windows));
            }
            let topics = Manifest::parse(&serving.manifest)
                .ok()
                .and_then(|m| m.event_trigger().ok().flatten())
                .map(|t| t.topics)
                .unwrap_or_default();
            for topic in topics {
                let group = crate::events::Group {
                    tenant: tenant.clone(),
                    topic: topic.clone(),
                    name: serving.name.clone(),
                };
                let events = state.events.dead(&group, MAX_DEAD_READ).await?;
                dead_more |= events.len() >= MAX_DEAD_READ;
                for d in events {
                    let e = &d.event;
                    dead.push(json!({
                        "id": e.id, "topic": topic, "function": serving.name,
                        "attempts": e.attempt, "reason": d.reason, "time_ms": e.time_ms,
                        "content_type": e.event.content_type, "bytes": e.event.payload.len(),
                    }));
                }
            }
        }
        // The newest events of every topic a function here subscribes or publishes to.
        let mut topics: Vec<String> = stored
            .functions
            .iter()
            .filter_map(|f| Manifest::parse(&f.serving.manifest).ok())
            .flat_map(|m| {
                let mut t = m
                    .event_trigger()
                    .ok()
                    .flatten()
                    .map(|t| t.topics)
                    .unwrap_or_default();
                t.extend(m.events.map(|e| e.publish).unwrap_or_default());
                t
            })
            .collect();
        topics.sort();
        topics.dedup();
        topics.truncate(MAX_RECENT_TOPICS);
        let mut recent = Vec::new();
        for topic in &topics {
            for e in state.events.recent(tenant, topic, MAX_RECENT).await? {
                recent.push(json!({
                    "id": e.id, "topic": topic, "time_ms": e.time_ms,
                    "source": e.event.source, "content_type": e.event.content_type,
                    "bytes": e.event.payload.len(),
                }));
            }
        }
        recent.sort_by_key(|e| std::cmp::Reverse(e["time_ms"].as_u64().unwrap_or(0)));
        recent.truncate(MAX_RECENT);
        let dead_total = dead.len();
        dead.sort_by_key(|d| std::cmp::Reverse(d["time_ms"].as_u64().unwrap_or(0)));
        dead.truncate(MAX_DEAD_SHOWN);
        out.push(json!({
            "tenant": tenant, "functions": functions, "models": models, "monitors": monitors,
            "events": {
                "deliveries": delivered.remove(tenant.as_str()).unwrap_or_default(),
                "dead": dead, "dead_total": dead_total, "dead_more": dead_more,
                "recent": recent,
            },
        }));
    }
    let activity = match audit {
        false => Value::Null,
        true => {
            let tenancy = state.tenancy.clone();
            let own = access.principal.as_ref().and_then(|p| p.tenant.clone());
            let mut entries =
                tokio::task::spawn_blocking(move || tenancy.audit_log(own.as_ref(), MAX_ACTIVITY))
                    .await
                    .map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                    })?
                    .map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
                    })?;
            entries.reverse();
            json!(entries)
        }
    };
    let viewer = access.principal.as_ref().map(
        |p| json!({ "tenant": p.tenant, "scope": p.scope.as_str(), "platform": p.is_platform() }),
    );
    Ok(Json(json!({
        "viewer": viewer, "now_ms": now_ms(), "sample_ms": sampler.interval.as_millis() as u64,
        "tenants": out, "activity": activity,
    })))
}

// ---------------------------------------------------------------------------
// The sampler.

/// The sampling interval: `QUIVER_UI_SAMPLE_MS` (100-60000), read once; 5 s by default.
fn sample_interval() -> Duration {
    static INTERVAL: OnceLock<Duration> = OnceLock::new();
    *INTERVAL.get_or_init(|| {
        let ms = std::env::var("QUIVER_UI_SAMPLE_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(5000)
            .clamp(100, 60_000);
        Duration::from_millis(ms)
    })
}

/// (tenant, function)
type Key = (String, String);

/// One function's counters at one sample, summed over its series.
#[derive(Default, Clone)]
struct Totals {
    /// Calls by version.
    calls: BTreeMap<String, u64>,
    /// Calls answered with a status other than 2xx.
    errors: u64,
    /// Latency histogram: (upper bound, cumulative count) and the count.
    buckets: Vec<(f64, u64)>,
    observed: u64,
    cold_starts: u64,
}

/// One interval of one function.
struct Point {
    t_ms: u64,
    rate: f64,
    errors: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    cold_starts: u64,
    versions: Vec<(String, f64)>,
}

#[derive(Default)]
struct Rings {
    last: Option<(std::time::Instant, HashMap<Key, Totals>)>,
    rings: HashMap<Key, VecDeque<Point>>,
}

struct Sampler {
    interval: Duration,
    rings: Mutex<Rings>,
}

/// The samplers of this process, one per live metrics registry (one per server).
static SAMPLERS: Mutex<Vec<(Weak<Metrics>, Arc<Sampler>)>> = Mutex::new(Vec::new());

/// Start sampling `state`'s metrics for the dashboard's charts (once per server;
/// later calls return the running sampler). It stops when the server's metrics go.
pub fn spawn_sampler(state: &AppState) {
    sampler(state);
}

fn sampler(state: &AppState) -> Arc<Sampler> {
    let mut all = SAMPLERS.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|(m, _)| m.strong_count() > 0);
    let metrics = Arc::downgrade(&state.metrics);
    if let Some((_, s)) = all.iter().find(|(m, _)| m.ptr_eq(&metrics)) {
        return s.clone();
    }
    let s = Arc::new(Sampler {
        interval: sample_interval(),
        rings: Mutex::new(Rings::default()),
    });
    all.push((metrics.clone(), s.clone()));
    let task = s.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(task.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(m) = metrics.upgrade() else { return };
            let totals = totals(&m.traffic());
            drop(m);
            task.record(std::time::Instant::now(), now_ms(), totals);
        }
    });
    s
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> Option<&'a str> {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

/// Per function, its counters now (summed over versions and statuses).
fn totals(families: &[prometheus::proto::MetricFamily]) -> HashMap<Key, Totals> {
    let mut out: HashMap<Key, Totals> = HashMap::new();
    for f in families {
        let name = f.name();
        if !matches!(
            name,
            "quiver_invocations_total"
                | "quiver_invocation_duration_seconds"
                | "quiver_cold_starts_total"
        ) {
            continue;
        }
        for m in f.get_metric() {
            let (Some(tenant), Some(function)) = (label(m, "tenant"), label(m, "function")) else {
                continue;
            };
            let key = (tenant.to_string(), function.to_string());
            if !out.contains_key(&key) && out.len() >= MAX_SERIES {
                continue;
            }
            let t = out.entry(key).or_default();
            match name {
                "quiver_invocations_total" => {
                    let n = m.get_counter().get_value().max(0.0) as u64;
                    let version = label(m, "version").unwrap_or("").to_string();
                    *t.calls.entry(version).or_default() += n;
                    if !label(m, "status").is_some_and(|s| s.starts_with('2')) {
                        t.errors += n;
                    }
                }
                "quiver_invocation_duration_seconds" => {
                    let h = m.get_histogram();
                    t.observed += h.get_sample_count();
                    for (i, b) in h.get_bucket().iter().enumerate() {
                        match t.buckets.get_mut(i) {
                            Some(have) => have.1 += b.cumulative_count(),
                            None => t.buckets.push((b.upper_bound(), b.cumulative_count())),
                        }
                    }
                }
                _ => t.cold_starts += m.get_counter().get_value().max(0.0) as u64,
            }
        }
    }
    out
}

/// `now - then`, bucket by bucket.
fn delta_buckets(now: &[(f64, u64)], then: &[(f64, u64)]) -> Vec<(f64, u64)> {
    now.iter()
        .enumerate()
        .map(|(i, &(upper, cum))| (upper, cum.saturating_sub(then.get(i).map_or(0, |b| b.1))))
        .collect()
}

impl Sampler {
    /// Fold a sample in: a point per function since the previous sample.
    fn record(&self, at: std::time::Instant, wall_ms: u64, now: HashMap<Key, Totals>) {
        let mut r = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let Some((then_at, then)) = r.last.take() else {
            r.last = Some((at, now));
            return;
        };
        let secs = at.duration_since(then_at).as_secs_f64().max(1e-3);
        let empty = Totals::default();
        for (key, t) in &now {
            let before = then.get(key).unwrap_or(&empty);
            let mut versions: Vec<(String, f64)> = t
                .calls
                .iter()
                .map(|(v, n)| {
                    let d = n.saturating_sub(before.calls.get(v).copied().unwrap_or(0));
                    (v.clone(), d as f64)
                })
                .filter(|(_, d)| *d > 0.0)
                .collect();
            let calls: f64 = versions.iter().map(|(_, d)| d).sum();
            versions.sort_by(|a, b| b.1.total_cmp(&a.1));
            if versions.len() > MAX_POINT_VERSIONS {
                let rest: f64 = versions[MAX_POINT_VERSIONS - 1..].iter().map(|v| v.1).sum();
                versions.truncate(MAX_POINT_VERSIONS - 1);
                versions.push(("other".into(), rest));
            }
            let buckets = delta_buckets(&t.buckets, &before.buckets);
            let observed = t.observed.saturating_sub(before.observed);
            let ms = |q| crate::metrics::quantile(q, &buckets, observed).map(|s| s * 1000.0);
            let point = Point {
                t_ms: wall_ms,
                rate: calls / secs,
                errors: t.errors.saturating_sub(before.errors) as f64 / secs,
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
                cold_starts: t.cold_starts.saturating_sub(before.cold_starts),
                versions: versions.into_iter().map(|(v, d)| (v, d / secs)).collect(),
            };
            if !r.rings.contains_key(key) && r.rings.len() >= MAX_SERIES {
                continue;
            }
            let ring = r.rings.entry(key.clone()).or_default();
            if ring.len() >= RING {
                ring.pop_front();
            }
            ring.push_back(point);
        }
        r.last = Some((at, now));
    }

    /// The rings of these tenants' functions, as columns.
    fn columns(&self, tenants: &[TenantId]) -> Vec<Value> {
        let r = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys: Vec<&Key> = r
            .rings
            .keys()
            .filter(|(t, _)| tenants.iter().any(|id| id.as_str() == t))
            .collect();
        keys.sort();
        keys.into_iter()
            .filter_map(|key| {
                let ring = r.rings.get(key)?;
                // Functions with neither calls nor cold starts in the ring: no chart.
                if ring.iter().all(|p| p.rate == 0.0 && p.cold_starts == 0) {
                    return None;
                }
                let mut versions: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
                for (i, p) in ring.iter().enumerate() {
                    for (v, rate) in &p.versions {
                        let col = versions
                            .entry(v.as_str())
                            .or_insert_with(|| vec![0.0; ring.len()]);
                        col[i] = *rate;
                    }
                }
                if versions.len() > MAX_POINT_VERSIONS * 2 {
                    versions.clear();
                }
                Some(json!({
                    "tenant": key.0, "function": key.1,
                    "t": ring.iter().map(|p| p.t_ms as f64 / 1000.0).collect::<Vec<_>>(),
                    "rate": ring.iter().map(|p| p.rate).collect::<Vec<_>>(),
                    "errors": ring.iter().map(|p| p.errors).collect::<Vec<_>>(),
                    "p50_ms": ring.iter().map(|p| p.p50_ms).collect::<Vec<_>>(),
                    "p99_ms": ring.iter().map(|p| p.p99_ms).collect::<Vec<_>>(),
                    "cold_starts": ring.iter().map(|p| p.cold_starts).collect::<Vec<_>>(),
                    "versions": versions,
                }))
            })
            .collect()
    }
}

async fn series(
    State(state): State<Arc<AppState>>,
    access: Access,
) -> Result<Json<Value>, ApiError> {
    let sampler = sampler(&state);
    let (tenants, _) = visible(&state, &access)?;
    Ok(Json(json!({
        "interval_ms": sampler.interval.as_millis() as u64,
        "ring": RING,
        "series": sampler.columns(&tenants),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals_of(calls: &[(&str, u64)], errors: u64, buckets: &[(f64, u64)], cold: u64) -> Totals {
        Totals {
            calls: calls.iter().map(|(v, n)| (v.to_string(), *n)).collect(),
            errors,
            observed: buckets.last().map_or(0, |b| b.1),
            buckets: buckets.to_vec(),
            cold_starts: cold,
        }
    }

    #[test]
    fn a_sample_becomes_a_point_per_function_and_the_ring_is_bounded() {
        let s = Sampler {
            interval: Duration::from_secs(1),
            rings: Mutex::new(Rings::default()),
        };
        let key = ("acme".to_string(), "f".to_string());
        let t0 = std::time::Instant::now();
        let at = |i: u64| t0 + Duration::from_secs(i);
        s.record(at(0), 0, HashMap::new());
        let mut now = HashMap::new();
        now.insert(
            key.clone(),
            totals_of(&[("1.0.0", 8), ("1.1.0", 2)], 1, &[(0.01, 5), (0.1, 10)], 1),
        );
        s.record(at(2), 2000, now.clone());
        let cols = s.columns(&[TenantId::parse("acme").unwrap()]);
        assert_eq!(cols.len(), 1);
        let c = &cols[0];
        assert_eq!(c["rate"], json!([5.0]), "{c}");
        assert_eq!(c["errors"], json!([0.5]), "{c}");
        assert_eq!(c["cold_starts"], json!([1]), "{c}");
        assert_eq!(c["versions"]["1.0.0"], json!([4.0]), "{c}");
        assert_eq!(c["p50_ms"], json!([10.0]), "{c}");
        // Another tenant sees none of it.
        assert!(s.columns(&[TenantId::parse("beta").unwrap()]).is_empty());
        // No calls in an interval: rate 0, no latency.
        s.record(at(3), 3000, now.clone());
        let c = &s.columns(&[TenantId::parse("acme").unwrap()])[0];
        assert_eq!(c["rate"], json!([5.0, 0.0]), "{c}");
        assert_eq!(c["p50_ms"][1], Value::Null, "{c}");
        // The ring keeps the newest points only.
        for i in 4..(4 + RING as u64 + 5) {
            now.insert(key.clone(), totals_of(&[("1.0.0", 8 + i)], 1, &[], 1));
            s.record(at(i), i * 1000, now.clone());
        }
        let c = &s.columns(&[TenantId::parse("acme").unwrap()])[0];
        assert_eq!(c["t"].as_array().unwrap().len(), RING);
        assert_eq!(c["rate"][RING - 1], json!(1.0));
        // Once a function's ring holds no calls, it has no series.
        for i in (4 + RING as u64 + 5)..(4 + 2 * RING as u64 + 5) {
            s.record(at(i), i * 1000, now.clone());
        }
        assert!(s.columns(&[TenantId::parse("acme").unwrap()]).is_empty());
    }

    #[test]
    fn metric_names_split_into_feature_and_statistic() {
        assert_eq!(feature_of("amount.z"), ("amount", "z"));
        assert_eq!(feature_of("out.score.mean"), ("out.score", "mean"));
        assert_eq!(feature_of("rows"), ("rows", "value"));
    }

    #[test]
    fn only_known_assets_are_served() {
        for f in ["app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css"] {
            let body = match f {
                "app.js" => APP_JS,
                "app.css" => APP_CSS,
                "uPlot.iife.min.js" => UPLOT_JS,
                _ => UPLOT_CSS,
            };
            assert!(!body.is_empty(), "{f}");
        }
        assert!(INDEX_HTML.contains("/ui/assets/app.js"));
    }
}
