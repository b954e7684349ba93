//! `quiver.toml`: the function manifest. Unknown keys are errors that name the key.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub function: FunctionSection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Triggers>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<Pipeline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeaturesSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference: Option<InferenceSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventsSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasets: Option<DatasetsSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer: Option<TrainerSection>,
}

/// `[trainer]` of a `trainer` function: the model it trains, the dataset it trains
/// on, how its features are computed, and the gate a new version must pass.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainerSection {
    /// The model it registers new versions of.
    pub model: String,
    /// The function whose logged, labelled predictions it trains on (it must be
    /// in `[datasets] read`).
    pub dataset: String,
    /// How far back the window reaches (default 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// A transform (`name` or `name@version`) run, offline, on the dataset's
    /// inputs: the component the online path runs, so training and serving
    /// compute features with the same code. Without it the inputs are the features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<String>,
    /// The model's input columns, in order (its one input is f32 `[N, len]`).
    pub inputs: Vec<String>,
    /// Fewest labelled rows a run trains on (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rows: Option<u32>,
    /// Most rows read (the newest of the window; default 100 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u32>,
    /// Share of the window held out for the gate (default 0.2; 0.05-0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<f64>,
    /// The alias a version that passes the gate moves to (default `challenger`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_to: Option<String>,
    /// Handed to the trainer's `train` (a call's own `params` override them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSection>,
    /// `[trainer.rollout]`: a version that passes the gate is rolled out against
    /// the gate's alias by the automatic analysis (see [`crate::rollout`]), which
    /// promotes it or rolls it back. Without it the version only gets `promote_to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::RolloutSection>,
}

/// `[trainer.gate]`: a new version proceeds only if it is not worse than the
/// champion on the held-out slice by more than `margin` of `metric`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GateSection {
    /// `auc` (default), `log_loss` or `accuracy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// How much worse it may be (default 0; at most 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// The alias of the version it is compared with (default `champion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub against: Option<String>,
}

/// A gate's metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateMetric {
    Auc,
    LogLoss,
    Accuracy,
}

impl GateMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            GateMetric::Auc => "auc",
            GateMetric::LogLoss => "log_loss",
            GateMetric::Accuracy => "accuracy",
        }
    }

    /// Lower is better (log-loss); else higher is.
    pub fn lower_is_better(self) -> bool {
        matches!(self, GateMetric::LogLoss)
    }
}

/// `[trainer]`, defaults filled in and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerSpec {
    pub model: String,
    pub dataset: String,
    pub window: Duration,
    /// (name, exact version or `None`: the serving one).
    pub features: Option<(String, Option<String>)>,
    pub inputs: Vec<String>,
    pub min_rows: usize,
    pub max_rows: usize,
    pub holdout: f64,
    pub promote_to: String,
    pub params: Vec<(String, String)>,
    pub metric: GateMetric,
    pub margin: f64,
    pub against: String,
    /// Checked; its alias defaults to `against`.
    pub rollout: Option<crate::rollout::RolloutSection>,
}

/// The most input columns a trained model may take.
pub const MAX_TRAINER_INPUTS: usize = 256;

/// `[datasets]`: whether the function's predictions are logged (and kept how
/// long), and whose datasets it may read through `quiver:ml/datasets`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetsSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<String>,
}

pub const MAX_DATASET_ROWS: u64 = 100_000_000;

/// `[events]`: the topics of its tenant a function may publish to through
/// `quiver:ml/events` (anything else is refused in the guest).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
}

/// `[capabilities]`: what a function may reach beyond its host interfaces.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Outbound HTTP: `scheme://host[:port]` patterns (`https://*.example.com`),
    /// each within the tenant's grants. Anything else is denied in the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<String>,
}

/// `[triggers] http`: `true` (default; callers need a token), `false` (not served
/// over HTTP) or `"public"` (anyone may call it, no token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HttpTrigger {
    On(bool),
    Mode(HttpMode),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpMode {
    Public,
}

/// `[inference]`: how an inference function's models run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InferenceSection {
    /// `cpu` (default) or `gpu`; a host without the target refuses the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Dynamic batching: at most this many rows per backend call (1 = off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<u32>,
    /// How long the first call of a batch waits for others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait: Option<String>,
    /// The tensors the function takes and returns, for Open Inference Protocol
    /// metadata (`GET /v2/models/{name}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<TensorDecl>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<TensorDecl>,
}

/// A named, typed tensor: `{ name, datatype, shape? }` with KServe v2 datatypes
/// (FP64, INT64, BOOL, BYTES...); `shape` as the model declares it (-1: any),
/// `[-1]` (a batch column) when absent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TensorDecl {
    pub name: String,
    pub datatype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<i64>>,
}

/// `[inference]` resolved: execution target and batching.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedInference {
    pub target: String,
    pub batching: crate::nn::Batching,
}

/// A `[models]` entry: `alias = "name@range"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRef {
    pub alias: String,
    pub name: String,
    pub pin: ModelPin,
}

/// How a `[models]` entry picks its version.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelPin {
    /// `name@^1`: the highest matching version, resolved (and pinned) at deploy.
    Range(semver::VersionReq),
    /// `name@champion`: the version the alias points at, resolved when the
    /// deployment loads (a move of the alias reloads the functions that bind it).
    Alias(String),
}

/// `[cache]`: serve identical inputs from the result cache for `ttl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    pub ttl: String,
}

/// `[features]`: the feature groups a function may read and write (in its tenant).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeaturesSection {
    #[serde(default)]
    pub groups: Vec<String>,
    /// Per group: serve reads from an in-process cache this long (staleness bound).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub near_cache_ttl: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FunctionSection {
    pub name: String,
    pub version: String,
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scaling {
    pub min_instances: Option<u32>,
    pub max_instances: Option<u32>,
    pub max_concurrency: Option<u32>,
    pub idle_timeout: Option<String>,
    /// Requests that may wait for capacity; past it they get 429.
    pub max_queue: Option<u32>,
    /// How long a request waits for capacity before a 503 (default: `[limits] timeout`).
    pub queue_timeout: Option<String>,
    /// Serve later calls with an instance that returned cleanly (default: on for
    /// typed functions, off for `http`, whose components expect a fresh instance).
    pub instance_reuse: Option<bool>,
}

/// `[scaling]` with defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedScaling {
    pub idle_timeout: Duration,
    pub min_instances: u32,
    /// Instances alive at once, busy or idle. One instance serves one call at a time.
    pub max_instances: u32,
    /// Requests running at once (a pipeline's, or a component's own).
    pub max_concurrency: u32,
    pub max_queue: u32,
    pub queue_timeout: Duration,
    pub instance_reuse: bool,
}

pub const DEFAULT_MAX_INSTANCES: u32 = 64;
pub const DEFAULT_MAX_QUEUE: u32 = 256;
/// The pooling allocator's budget of component instances is shared by all functions.
pub const MAX_INSTANCES: u32 = 512;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub memory: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    pub http: Option<HttpTrigger>,
    /// Topics of its tenant whose events invoke the function.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Events per invocation (default 1; JSON events are joined into one batch of rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// How long to wait for a batch to fill before invoking with fewer (default 0s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_wait: Option<String>,
    /// A cron expression, in UTC (`0 3 * * *`; an optional leading seconds field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySection>,
}

/// `[triggers.retry]`: how an event whose function failed is retried.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    pub max_attempts: Option<u32>,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
}

/// `[triggers]` events with their batching and retry policy, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTrigger {
    pub topics: Vec<String>,
    pub batch_size: usize,
    pub batch_wait: Duration,
    pub retry: crate::events::Retry,
}

/// The most events one invocation may take.
pub const MAX_BATCH_SIZE: u32 = 1000;
/// The longest a batch may wait to fill.
pub const MAX_BATCH_WAIT: Duration = Duration::from_secs(60);
/// The most attempts a retry policy may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

/// Parse a `[triggers] schedule` (UTC): five fields, or six with seconds first.
pub fn parse_schedule(s: &str) -> anyhow::Result<croner::Cron> {
    use croner::parser::{CronParser, Seconds, Year};
    if s.len() > 256 {
        anyhow::bail!("[triggers] schedule is longer than 256 characters");
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(s)
        .map_err(|e| anyhow::anyhow!("[triggers] schedule `{s}` is not a cron expression: {e}"))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub stages: Vec<String>,
    /// A `monitor` function of the tenant handed each successful call's (inputs,
    /// outputs) off the request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
    /// Observations waiting for the monitor at most; past it new ones are dropped
    /// and counted (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_buffer: Option<u32>,
}

/// `[monitor]` of a `monitor` function: how its reports are kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MonitorSection {
    /// Reports are aggregated per window of this length (default 1h).
    pub window: Option<String>,
    /// Windows older than this are deleted (default 30d).
    pub retention: Option<String>,
}

/// A pipeline's monitor tap, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorTap {
    pub monitor: String,
    pub buffer: usize,
}

/// A monitor's report windows, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportWindows {
    pub window: Duration,
    pub retention: Duration,
}

pub const DEFAULT_MONITOR_BUFFER: u32 = 1024;
pub const MAX_MONITOR_BUFFER: u32 = 65_536;

/// Resource limits of one invocation, with defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedLimits {
    pub memory_bytes: usize,
    pub timeout: Duration,
}

pub const DEFAULT_MEMORY: usize = 64 << 20;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The most any manifest may ask for; the pooling allocator reserves slots this big.
pub const MAX_MEMORY: usize = 1 << 30;
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

impl Manifest {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let manifest: Manifest = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("invalid quiver.toml: {}", e.message()))?;
        manifest.check()?;
        Ok(manifest)
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string(self)?)
    }

    /// Checks that need more than the shape of the TOML.
    pub fn check(&self) -> anyhow::Result<()> {
        let f = &self.function;
        if !crate::tenancy::valid_name(&f.name) {
            anyhow::bail!(
                "function name `{}` must be 1-64 characters of a-z, 0-9 and '-'",
                f.name
            );
        }
        semver::Version::parse(&f.version)
            .map_err(|e| anyhow::anyhow!("version `{}` is not semver: {e}", f.version))?;
        match (f.kind.as_str(), &self.pipeline) {
            ("pipeline", Some(p)) if p.stages.is_empty() => {
                anyhow::bail!("[pipeline] stages is empty")
            }
            ("pipeline", Some(_)) => {}
            ("pipeline", None) => {
                anyhow::bail!("kind `pipeline` needs a [pipeline] table with `stages`")
            }
            (_, Some(_)) => anyhow::bail!("a [pipeline] table needs kind = \"pipeline\""),
            (kind, None) if quiver_registry::validate::world_of_kind(kind).is_none() => {
                anyhow::bail!(
                    "unknown kind `{kind}` (expected one of: {}, pipeline)",
                    quiver_registry::validate::KINDS
                )
            }
            _ => {}
        }
        self.event_trigger()?;
        self.schedule()?;
        self.monitor_tap()?;
        self.report_windows()?;
        self.dataset_log()?;
        self.dataset_reads()?;
        self.trainer()?;
        for topic in self.events.iter().flat_map(|e| &e.publish) {
            crate::events::check_topic(topic)
                .map_err(|m| anyhow::anyhow!("[events] publish: {m}"))?;
        }
        self.limits()?;
        self.outbound()?;
        self.scaling()?;
        self.cache_ttl()?;
        self.near_cache_ttls()?;
        self.model_refs()?;
        self.inference()?;
        for g in self.features.iter().flat_map(|f| &f.groups) {
            let ok = !g.is_empty()
                && g.len() <= 64
                && g.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !ok {
                anyhow::bail!(
                    "[features] group `{g}` must be 1-64 characters of a-z, 0-9, '-' and '_'"
                );
            }
        }
        Ok(())
    }

    /// `[triggers] http` (default true): whether the HTTP routes (`/fn`, `/http`,
    /// the inference protocol) serve this function. Off, it runs only as a stage.
    pub fn http_trigger(&self) -> bool {
        !matches!(
            self.triggers.as_ref().and_then(|t| t.http),
            Some(HttpTrigger::On(false))
        )
    }

    /// `[triggers] events` with its batching and retry (`None`: no events trigger).
    pub fn event_trigger(&self) -> anyhow::Result<Option<EventTrigger>> {
        let Some(t) = &self.triggers else {
            return Ok(None);
        };
        if t.events.is_empty() {
            if t.batch_size.is_some() || t.batch_wait.is_some() || t.retry.is_some() {
                anyhow::bail!(
                    "[triggers] batch_size, batch_wait and retry are for `events`, which is empty"
                );
            }
            return Ok(None);
        }
        self.invocable_by("events")?;
        let mut topics = Vec::with_capacity(t.events.len());
        for topic in &t.events {
            crate::events::check_topic(topic)
                .map_err(|m| anyhow::anyhow!("[triggers] events: {m}"))?;
            if topics.contains(topic) {
                anyhow::bail!("[triggers] events names `{topic}` twice");
            }
            topics.push(topic.clone());
        }
        if topics.len() > 16 {
            anyhow::bail!("[triggers] events names more than 16 topics");
        }
        let batch_size = t.batch_size.unwrap_or(1);
        if batch_size > 1 && self.function.kind == "monitor" {
            anyhow::bail!(
                "[triggers] batch_size: a monitor takes one event (one observation) a call"
            );
        }
        if batch_size == 0 || batch_size > MAX_BATCH_SIZE {
            anyhow::bail!("[triggers] batch_size must be 1-{MAX_BATCH_SIZE}");
        }
        let duration = |what: &str, v: &Option<String>, default: Duration, max: Duration| {
            let d = match v {
                None => default,
                Some(v) => humantime::parse_duration(v)
                    .map_err(|e| anyhow::anyhow!("[triggers] {what} `{v}`: {e}"))?,
            };
            if d > max {
                anyhow::bail!(
                    "[triggers] {what} is at most {}",
                    humantime::format_duration(max)
                );
            }
            Ok(d)
        };
        let batch_wait = duration("batch_wait", &t.batch_wait, Duration::ZERO, MAX_BATCH_WAIT)?;
        let mut retry = crate::events::Retry::default();
        if let Some(r) = &t.retry {
            retry.max_attempts = r.max_attempts.unwrap_or(retry.max_attempts);
            if retry.max_attempts == 0 || retry.max_attempts > MAX_ATTEMPTS {
                anyhow::bail!("[triggers.retry] max_attempts must be 1-{MAX_ATTEMPTS}");
            }
            let day = Duration::from_secs(24 * 3600);
            retry.backoff = duration("retry.backoff", &r.backoff, retry.backoff, day)?;
            retry.max_backoff =
                duration("retry.max_backoff", &r.max_backoff, retry.max_backoff, day)?;
            if retry.max_backoff < retry.backoff {
                anyhow::bail!("[triggers.retry] max_backoff is shorter than backoff");
            }
        }
        Ok(Some(EventTrigger {
            topics,
            batch_size: batch_size as usize,
            batch_wait,
            retry,
        }))
    }

    /// `[triggers] schedule`, parsed.
    pub fn schedule(&self) -> anyhow::Result<Option<croner::Cron>> {
        match self.triggers.as_ref().and_then(|t| t.schedule.as_deref()) {
            None => Ok(None),
            Some(s) => {
                self.invocable_by("schedule")?;
                parse_schedule(s).map(Some)
            }
        }
    }

    /// Events and schedules hand a function a body, as `/fn` does: the kinds that
    /// take one (a monitor takes `{"inputs", "outputs"}`, which events can carry and
    /// a schedule's tick cannot).
    fn invocable_by(&self, trigger: &str) -> anyhow::Result<()> {
        match (self.function.kind.as_str(), trigger) {
            ("ingest" | "transform" | "inference" | "pipeline" | "trainer", _)
            | ("monitor", "events") => Ok(()),
            (other, _) => anyhow::bail!(
                "[triggers] {trigger} invokes ingest, transform, inference, pipeline and trainer functions{}, not `{other}`",
                match trigger {
                    "events" => " (and monitors)",
                    _ => "",
                }
            ),
        }
    }

    /// `[datasets] log = true`, with its retention (default 30d) and row cap
    /// (default 1 000 000); `None`: predictions are not logged.
    pub fn dataset_log(&self) -> anyhow::Result<Option<crate::datasets::LogPolicy>> {
        let Some(d) = &self.datasets else {
            return Ok(None);
        };
        if d.log != Some(true) {
            if d.retention.is_some() || d.max_rows.is_some() {
                anyhow::bail!("[datasets] retention and max_rows are for `log = true`");
            }
            return Ok(None);
        }
        match self.function.kind.as_str() {
            "ingest" | "transform" | "inference" | "pipeline" => {}
            other => anyhow::bail!(
                "[datasets] log is for functions that predict (ingest, transform, inference, pipeline), not `{other}`"
            ),
        }
        let retention = match &d.retention {
            None => Duration::from_secs(30 * 24 * 3600),
            Some(r) => humantime::parse_duration(r)
                .map_err(|e| anyhow::anyhow!("[datasets] retention `{r}`: {e}"))?,
        };
        if retention < Duration::from_secs(60) || retention > Duration::from_secs(366 * 24 * 3600) {
            anyhow::bail!("[datasets] retention must be 1m-366d");
        }
        let max_rows = d.max_rows.unwrap_or(1_000_000);
        if max_rows == 0 || max_rows > MAX_DATASET_ROWS {
            anyhow::bail!("[datasets] max_rows must be 1-{MAX_DATASET_ROWS}");
        }
        Ok(Some(crate::datasets::LogPolicy {
            retention,
            max_rows,
        }))
    }

    /// `[datasets] read`: the functions of its tenant whose datasets this one reads
    /// (monitors and trainers, the worlds that import `quiver:ml/datasets`).
    pub fn dataset_reads(&self) -> anyhow::Result<Vec<String>> {
        let read = self
            .datasets
            .as_ref()
            .map(|d| d.read.clone())
            .unwrap_or_default();
        if read.is_empty() {
            return Ok(read);
        }
        match self.function.kind.as_str() {
            "monitor" | "trainer" => {}
            other => anyhow::bail!("[datasets] read is for monitors and trainers, not `{other}`"),
        }
        if read.len() > 16 {
            anyhow::bail!("[datasets] read names more than 16 functions");
        }
        for f in &read {
            if !crate::tenancy::valid_name(f) {
                anyhow::bail!(
                    "[datasets] read: `{}` must name a function (1-64 characters of a-z, 0-9 and '-')",
                    f.chars().take(128).collect::<String>()
                );
            }
        }
        Ok(read)
    }

    /// `[pipeline] monitor`, with its buffer (`None`: no tap).
    pub fn monitor_tap(&self) -> anyhow::Result<Option<MonitorTap>> {
        let Some(p) = &self.pipeline else {
            return Ok(None);
        };
        let Some(monitor) = &p.monitor else {
            if p.monitor_buffer.is_some() {
                anyhow::bail!("[pipeline] monitor_buffer needs a `monitor`");
            }
            return Ok(None);
        };
        let (name, version) = crate::functions::split_ref(monitor);
        if !crate::tenancy::valid_name(name) || version.is_some() {
            anyhow::bail!(
                "[pipeline] monitor `{}` must name a function (1-64 characters of a-z, 0-9 and '-'; the version serving is used)",
                monitor.chars().take(128).collect::<String>()
            );
        }
        let buffer = p.monitor_buffer.unwrap_or(DEFAULT_MONITOR_BUFFER);
        if buffer == 0 || buffer > MAX_MONITOR_BUFFER {
            anyhow::bail!("[pipeline] monitor_buffer must be 1-{MAX_MONITOR_BUFFER}");
        }
        Ok(Some(MonitorTap {
            monitor: name.to_string(),
            buffer: buffer as usize,
        }))
    }

    /// `[monitor]` of a monitor function (defaults: windows of 1h kept 30d).
    pub fn report_windows(&self) -> anyhow::Result<ReportWindows> {
        let m = match (&self.monitor, self.function.kind.as_str()) {
            (Some(_), kind) if kind != "monitor" => {
                anyhow::bail!("a [monitor] table is for kind = \"monitor\", not `{kind}`")
            }
            (m, _) => m.clone().unwrap_or_default(),
        };
        let parse = |what: &str, v: &Option<String>, default: u64| -> anyhow::Result<Duration> {
            match v {
                None => Ok(Duration::from_secs(default)),
                Some(v) => humantime::parse_duration(v)
                    .map_err(|e| anyhow::anyhow!("[monitor] {what} `{v}`: {e}")),
            }
        };
        let window = parse("window", &m.window, 3600)?;
        let retention = parse("retention", &m.retention, 30 * 24 * 3600)?;
        if window < Duration::from_secs(1) || window > Duration::from_secs(7 * 24 * 3600) {
            anyhow::bail!("[monitor] window must be 1s-7d");
        }
        if retention < window || retention > Duration::from_secs(366 * 24 * 3600) {
            anyhow::bail!("[monitor] retention must be at least one window and at most 366d");
        }
        Ok(ReportWindows { window, retention })
    }

    /// `[trainer]`: required for, and only for, kind `trainer`.
    pub fn trainer(&self) -> anyhow::Result<Option<TrainerSpec>> {
        let t = match (&self.trainer, self.function.kind.as_str()) {
            (None, "trainer") => anyhow::bail!(
                "kind `trainer` needs a [trainer] table with `model`, `dataset` and `inputs`"
            ),
            (None, _) => return Ok(None),
            (Some(_), kind) if kind != "trainer" => {
                anyhow::bail!("a [trainer] table is for kind = \"trainer\", not `{kind}`")
            }
            (Some(t), _) => t,
        };
        quiver_registry::check_model_name(&t.model)
            .map_err(|e| anyhow::anyhow!("[trainer] model: {e}"))?;
        if self.cache.is_some() {
            anyhow::bail!("a trainer takes no [cache]: each run trains and registers a version");
        }
        if self.http_public() {
            anyhow::bail!("a trainer cannot be public: running one needs a `deploy` token");
        }
        if !self.dataset_reads()?.contains(&t.dataset) {
            anyhow::bail!(
                "[trainer] dataset `{}` must be in [datasets] read (what the function may read)",
                t.dataset.chars().take(128).collect::<String>()
            );
        }
        let window = match &t.window {
            None => Duration::from_secs(24 * 3600),
            Some(w) => humantime::parse_duration(w)
                .map_err(|e| anyhow::anyhow!("[trainer] window `{w}`: {e}"))?,
        };
        if window < Duration::from_secs(1) || window > Duration::from_secs(366 * 24 * 3600) {
            anyhow::bail!("[trainer] window must be 1s-366d");
        }
        let features = match &t.features {
            None => None,
            Some(f) => {
                let (name, version) = match f.split_once('@') {
                    Some((n, v)) => (n, Some(v)),
                    None => (f.as_str(), None),
                };
                if !crate::tenancy::valid_name(name) {
                    anyhow::bail!("[trainer] features `{f}` must name a transform function");
                }
                if let Some(v) = version {
                    semver::Version::parse(v).map_err(|e| {
                        anyhow::anyhow!("[trainer] features `{f}`: `{v}` is not a version: {e}")
                    })?;
                }
                Some((name.to_string(), version.map(str::to_string)))
            }
        };
        if t.inputs.is_empty() || t.inputs.len() > MAX_TRAINER_INPUTS {
            anyhow::bail!("[trainer] inputs must name 1-{MAX_TRAINER_INPUTS} columns");
        }
        for (i, c) in t.inputs.iter().enumerate() {
            if c.is_empty() || c.len() > 128 || c == "label" || c == "score" || c.starts_with("in.")
            {
                anyhow::bail!(
                    "[trainer] inputs: `{c}` is not a column name (1-128 bytes; `label`, `score` and `in.*` are reserved)"
                );
            }
            if t.inputs[..i].contains(c) {
                anyhow::bail!("[trainer] inputs names `{c}` twice");
            }
        }
        let min_rows = t.min_rows.unwrap_or(100) as usize;
        let max_rows = t.max_rows.unwrap_or(100_000) as usize;
        if min_rows < 10 || max_rows < min_rows || max_rows > crate::datasets::MAX_READ_ROWS {
            anyhow::bail!(
                "[trainer] needs 10 <= min_rows <= max_rows <= {}",
                crate::datasets::MAX_READ_ROWS
            );
        }
        let holdout = t.holdout.unwrap_or(0.2);
        if !(0.05..=0.5).contains(&holdout) {
            anyhow::bail!("[trainer] holdout must be 0.05-0.5");
        }
        let promote_to = t.promote_to.clone().unwrap_or_else(|| "challenger".into());
        quiver_registry::check_alias(&promote_to)
            .map_err(|e| anyhow::anyhow!("[trainer] promote_to: {e}"))?;
        if t.params.len() > 64
            || t.params
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 1024)
        {
            anyhow::bail!("[trainer] params: at most 64, keys 1-64 bytes, values at most 1 KiB");
        }
        let gate = t.gate.clone().unwrap_or_default();
        let metric = match gate.metric.as_deref().unwrap_or("auc") {
            "auc" => GateMetric::Auc,
            "log_loss" => GateMetric::LogLoss,
            "accuracy" => GateMetric::Accuracy,
            other => anyhow::bail!(
                "[trainer.gate] metric `{}` is not one of auc, log_loss, accuracy",
                other.chars().take(64).collect::<String>()
            ),
        };
        let margin = gate.margin.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&margin) {
            anyhow::bail!("[trainer.gate] margin must be 0-1");
        }
        let against = gate.against.clone().unwrap_or_else(|| "champion".into());
        quiver_registry::check_alias(&against)
            .map_err(|e| anyhow::anyhow!("[trainer.gate] against: {e}"))?;
        if against == promote_to {
            anyhow::bail!("[trainer] promote_to and [trainer.gate] against must differ");
        }
        let rollout = match &t.rollout {
            None => None,
            Some(r) => {
                let mut r = r.clone();
                let alias = r.alias.get_or_insert_with(|| against.clone()).clone();
                r.check()
                    .map_err(|e| anyhow::anyhow!("[trainer.rollout] {e:#}"))?;
                if alias == promote_to {
                    anyhow::bail!("[trainer.rollout] alias and [trainer] promote_to must differ");
                }
                Some(r)
            }
        };
        Ok(Some(TrainerSpec {
            model: t.model.clone(),
            dataset: t.dataset.clone(),
            window,
            features,
            inputs: t.inputs.clone(),
            min_rows,
            max_rows,
            holdout,
            promote_to,
            params: t.params.clone().into_iter().collect(),
            metric,
            margin,
            against,
            rollout,
        }))
    }

    /// `[triggers] http = "public"`: served to callers without a token.
    pub fn http_public(&self) -> bool {
        matches!(
            self.triggers.as_ref().and_then(|t| t.http),
            Some(HttpTrigger::Mode(HttpMode::Public))
        )
    }

    /// `[capabilities] outbound`, each checked for shape.
    pub fn outbound(&self) -> anyhow::Result<Vec<crate::egress::Pattern>> {
        self.capabilities
            .iter()
            .flat_map(|c| &c.outbound)
            .map(|p| crate::egress::Pattern::parse(p).map_err(anyhow::Error::msg))
            .collect()
    }

    /// `[scaling]`: idle_timeout 30 s, min_instances 0, max_instances 64,
    /// max_concurrency = max_instances, max_queue 256, queue_timeout = `[limits] timeout`.
    pub fn scaling(&self) -> anyhow::Result<ResolvedScaling> {
        let s = self.scaling.clone().unwrap_or(Scaling {
            min_instances: None,
            max_instances: None,
            max_concurrency: None,
            idle_timeout: None,
            max_queue: None,
            queue_timeout: None,
            instance_reuse: None,
        });
        let duration = |key: &str, v: &Option<String>| -> anyhow::Result<Option<Duration>> {
            v.as_deref()
                .map(|t| {
                    humantime::parse_duration(t)
                        .map_err(|e| anyhow::anyhow!("[scaling] {key} `{t}`: {e}"))
                })
                .transpose()
        };
        let idle_timeout = duration("idle_timeout", &s.idle_timeout)?
            .unwrap_or(crate::scaler::DEFAULT_IDLE_TIMEOUT);
        let queue_timeout =
            duration("queue_timeout", &s.queue_timeout)?.unwrap_or(self.limits()?.timeout);
        let min_instances = s.min_instances.unwrap_or(0);
        let max_instances = s.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES);
        let max_concurrency = s.max_concurrency.unwrap_or(max_instances);
        if max_instances == 0 || max_instances > MAX_INSTANCES {
            anyhow::bail!("[scaling] max_instances must be between 1 and {MAX_INSTANCES}");
        }
        if max_concurrency == 0 {
            anyhow::bail!("[scaling] max_concurrency must be at least 1");
        }
        if min_instances > max_instances {
            anyhow::bail!(
                "[scaling] min_instances ({min_instances}) is more than max_instances ({max_instances})"
            );
        }
        if queue_timeout > MAX_TIMEOUT {
            anyhow::bail!("[scaling] queue_timeout must be at most 300s");
        }
        Ok(ResolvedScaling {
            idle_timeout,
            min_instances,
            max_instances,
            max_concurrency,
            max_queue: s.max_queue.unwrap_or(DEFAULT_MAX_QUEUE),
            queue_timeout,
            instance_reuse: s.instance_reuse.unwrap_or(self.function.kind != "http"),
        })
    }

    /// `[features.near_cache_ttl]`: group -> TTL, each for a declared group, ≤ 60 s.
    pub fn near_cache_ttls(&self) -> anyhow::Result<Vec<(String, Duration)>> {
        let Some(f) = &self.features else {
            return Ok(Vec::new());
        };
        f.near_cache_ttl
            .iter()
            .map(|(group, t)| {
                if !f.groups.contains(group) {
                    anyhow::bail!(
                        "[features.near_cache_ttl] `{group}` is not in [features] groups"
                    );
                }
                let ttl = humantime::parse_duration(t)
                    .map_err(|e| anyhow::anyhow!("[features.near_cache_ttl] {group} `{t}`: {e}"))?;
                if ttl.is_zero() || ttl > Duration::from_secs(60) {
                    anyhow::bail!("[features.near_cache_ttl] {group} must be between 1ms and 60s");
                }
                Ok((group.clone(), ttl))
            })
            .collect()
    }

    /// `[models]`: each `alias = "name@range"` (a bare name means any version).
    pub fn model_refs(&self) -> anyhow::Result<Vec<ModelRef>> {
        if !self.models.is_empty() && self.function.kind != "inference" {
            anyhow::bail!("[models] is for `inference` functions");
        }
        self.models
            .iter()
            .map(|(alias, spec)| {
                let (name, range) = spec.split_once('@').unwrap_or((spec, "*"));
                quiver_registry::check_model_name(name)
                    .map_err(|e| anyhow::anyhow!("[models] {alias}: {e}"))?;
                let pin = match range.starts_with(|c: char| c.is_ascii_lowercase()) {
                    true => {
                        quiver_registry::check_alias(range)
                            .map_err(|e| anyhow::anyhow!("[models] {alias} = `{spec}`: {e}"))?;
                        ModelPin::Alias(range.to_string())
                    }
                    false => ModelPin::Range(semver::VersionReq::parse(range).map_err(|e| {
                        anyhow::anyhow!(
                            "[models] {alias} = `{spec}`: `{range}` is neither a semver range nor an alias: {e}"
                        )
                    })?),
                };
                Ok(ModelRef {
                    alias: alias.clone(),
                    name: name.to_string(),
                    pin,
                })
            })
            .collect()
    }

    /// `[inference]`: target `cpu` (batching off unless asked) or `gpu` (batching on:
    /// max_batch 32), max_wait 2 ms.
    pub fn inference(&self) -> anyhow::Result<ResolvedInference> {
        let s = self.inference.clone().unwrap_or_default();
        if self.inference.is_some() && self.function.kind != "inference" {
            anyhow::bail!("[inference] is for `inference` functions");
        }
        let target = s.target.unwrap_or_else(|| "cpu".into());
        let default_batch = match target.as_str() {
            "cpu" => 1,
            "gpu" => 32,
            other => anyhow::bail!("[inference] target `{other}`: expected `cpu` or `gpu`"),
        };
        let max_batch = s.max_batch.unwrap_or(default_batch);
        if max_batch == 0 || max_batch > 1024 {
            anyhow::bail!("[inference] max_batch must be between 1 and 1024");
        }
        let max_wait = match s.max_wait.as_deref() {
            None => Duration::from_millis(2),
            Some(t) => humantime::parse_duration(t)
                .map_err(|e| anyhow::anyhow!("[inference] max_wait `{t}`: {e}"))?,
        };
        if max_wait > Duration::from_secs(1) {
            anyhow::bail!("[inference] max_wait must be at most 1s");
        }
        Ok(ResolvedInference {
            target,
            batching: crate::nn::Batching {
                max_batch: max_batch as usize,
                max_wait,
            },
        })
    }

    /// `[cache] ttl`, if the function caches its results.
    pub fn cache_ttl(&self) -> anyhow::Result<Option<Duration>> {
        let Some(cache) = &self.cache else {
            return Ok(None);
        };
        let ttl = humantime::parse_duration(&cache.ttl)
            .map_err(|e| anyhow::anyhow!("[cache] ttl `{}`: {e}", cache.ttl))?;
        if ttl.is_zero() || ttl > Duration::from_secs(7 * 24 * 3600) {
            anyhow::bail!("[cache] ttl must be between 1ms and 7 days");
        }
        if self.function.kind == "http" {
            anyhow::bail!("[cache] is for typed functions and pipelines, not `http` components");
        }
        Ok(Some(ttl))
    }

    /// Apply `key.path=value` overrides (as helm's `--set`) and validate the result
    /// like a manifest, so an unknown key is named. Values are TOML (`3`, `true`,
    /// `"x"`), and bare words are strings; `config.*` values are always strings.
    pub fn with_overrides(&self, sets: &[String]) -> anyhow::Result<Manifest> {
        if sets.is_empty() {
            return Ok(self.clone());
        }
        let mut root = toml::Table::try_from(self)?;
        for set in sets {
            let (path, raw) = set
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--set `{set}` is not key.path=value"))?;
            let keys: Vec<&str> = path.split('.').map(str::trim).collect();
            if keys.iter().any(|k| k.is_empty()) {
                anyhow::bail!("--set `{set}`: empty key in `{path}`");
            }
            let value = match keys[0] {
                "config" => toml::Value::String(raw.to_string()),
                _ => toml::from_str::<toml::Table>(&format!("v = {raw}"))
                    .ok()
                    .and_then(|mut t| t.remove("v"))
                    .unwrap_or_else(|| toml::Value::String(raw.to_string())),
            };
            let (last, parents) = keys
                .split_last()
                .ok_or_else(|| anyhow::anyhow!("--set `{set}`: no key"))?;
            let mut table = &mut root;
            for key in parents {
                let entry = table
                    .entry(key.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                table = entry
                    .as_table_mut()
                    .ok_or_else(|| anyhow::anyhow!("--set `{set}`: `{key}` is not a table"))?;
            }
            table.insert(last.to_string(), value);
        }
        Manifest::parse(&toml::to_string(&root)?).map_err(|e| anyhow::anyhow!("after --set: {e}"))
    }

    pub fn limits(&self) -> anyhow::Result<ResolvedLimits> {
        let limits = self.limits.as_ref();
        let memory_bytes = match limits.and_then(|l| l.memory.as_deref()) {
            None => DEFAULT_MEMORY,
            Some(m) => m
                .parse::<bytesize::ByteSize>()
                .map_err(|e| anyhow::anyhow!("[limits] memory `{m}`: {e}"))?
                .as_u64() as usize,
        };
        let timeout = match limits.and_then(|l| l.timeout.as_deref()) {
            None => DEFAULT_TIMEOUT,
            Some(t) => humantime::parse_duration(t)
                .map_err(|e| anyhow::anyhow!("[limits] timeout `{t}`: {e}"))?,
        };
        if memory_bytes == 0 || memory_bytes > MAX_MEMORY {
            anyhow::bail!("[limits] memory must be between 1 byte and 1GiB");
        }
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            anyhow::bail!("[limits] timeout must be between 1ms and 300s");
        }
        Ok(ResolvedLimits {
            memory_bytes,
            timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = Manifest::parse(
            "[function]\nname='a'\nversion='1.0.0'\nkind='transform'\ncolour='red'\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("colour"), "{err}");
        let err =
            Manifest::parse("[function]\nname='a'\nversion='1.0.0'\nkind='transform'\n[limitz]\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("limitz"), "{err}");
    }

    #[test]
    fn overrides_like_helm_set() {
        let m =
            Manifest::parse("[function]\nname='a'\nversion='1.0.0'\nkind='transform'\n").unwrap();
        let o = m
            .with_overrides(&[
                "limits.timeout=250ms".into(),
                "scaling.max_instances=4".into(),
                "config.threshold=0.5".into(),
                "function.version=2.0.0".into(),
            ])
            .unwrap();
        assert_eq!(o.limits().unwrap().timeout, Duration::from_millis(250));
        assert_eq!(o.scaling().unwrap().max_instances, 4);
        assert_eq!(
            o.scaling().unwrap().max_concurrency,
            4,
            "defaults to max_instances"
        );
        assert_eq!(
            o.scaling().unwrap().queue_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(o.config["threshold"], "0.5");
        assert_eq!(o.function.version, "2.0.0");
        let err = m
            .with_overrides(&["scaling.replicas=3".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("replicas"), "{err}");
        assert!(m.with_overrides(&["nothing".into()]).is_err());
        assert!(m.with_overrides(&["function.name.x=1".into()]).is_err());
        assert!(m.with_overrides(&["limits..timeout=1s".into()]).is_err());
    }

    #[test]
    fn limits_and_kinds() {
        let m = Manifest::parse(
            "[function]\nname='a'\nversion='1.0.0'\nkind='transform'\n[limits]\nmemory='32MiB'\ntimeout='500ms'\n",
        )
        .unwrap();
        let l = m.limits().unwrap();
        assert_eq!(l.memory_bytes, 32 << 20);
        assert_eq!(l.timeout, Duration::from_millis(500));
        assert!(Manifest::parse("[function]\nname='a'\nversion='x'\nkind='transform'\n").is_err());
        assert!(
            Manifest::parse("[function]\nname='a'\nversion='1.0.0'\nkind='blender'\n").is_err()
        );
        assert!(Manifest::parse("[function]\nname='A b'\nversion='1.0.0'\nkind='http'\n").is_err());
        assert!(
            Manifest::parse("[function]\nname='p'\nversion='1.0.0'\nkind='pipeline'\n").is_err()
        );
        let base = "[function]\nname='a'\nversion='1.0.0'\nkind='transform'\n[scaling]\n";
        assert!(Manifest::parse(&format!("{base}max_instances=0")).is_err());
        assert!(Manifest::parse(&format!("{base}max_instances=2\nmin_instances=3")).is_err());
        assert!(Manifest::parse(&format!("{base}queue_timeout='soon'")).is_err());
        let p = Manifest::parse("[function]\nname='p'\nversion='1.0.0'\nkind='pipeline'\n[pipeline]\nstages=['a','b']\n")
            .unwrap();
        assert_eq!(p.pipeline.unwrap().stages, vec!["a", "b"]);
    }

    #[test]
    fn monitor_taps_and_report_windows() {
        let p =
            "[function]\nname='p'\nversion='1.0.0'\nkind='pipeline'\n[pipeline]\nstages=['a']\n";
        let m = Manifest::parse(&format!("{p}monitor='drift'\n")).unwrap();
        let tap = m.monitor_tap().unwrap().unwrap();
        assert_eq!((tap.monitor.as_str(), tap.buffer), ("drift", 1024));
        for bad in [
            "monitor='drift@1.0.0'",
            "monitor='Drift'",
            "monitor_buffer=5",
            "monitor='d'\nmonitor_buffer=0",
        ] {
            assert!(Manifest::parse(&format!("{p}{bad}\n")).is_err(), "{bad}");
        }
        let mon = "[function]\nname='m'\nversion='1.0.0'\nkind='monitor'\n";
        let w = Manifest::parse(mon).unwrap().report_windows().unwrap();
        assert_eq!(w.window, Duration::from_secs(3600));
        let w = Manifest::parse(&format!("{mon}[monitor]\nwindow='5m'\nretention='1d'\n"))
            .unwrap()
            .report_windows()
            .unwrap();
        assert_eq!((w.window.as_secs(), w.retention.as_secs()), (300, 86400));
        for bad in [
            "window='0s'",
            "window='8d'",
            "window='1h'\nretention='1m'",
            "window='x'",
        ] {
            assert!(
                Manifest::parse(&format!("{mon}[monitor]\n{bad}\n")).is_err(),
                "{bad}"
            );
        }
        let t = "[function]\nname='t'\nversion='1.0.0'\nkind='transform'\n[monitor]\n";
        assert!(Manifest::parse(t).is_err());
    }

    #[test]
    fn dataset_logging_and_reads() {
        let p = "[function]\nname='p'\nversion='1.0.0'\nkind='pipeline'\n[pipeline]\nstages=['a']\n[datasets]\n";
        let m = Manifest::parse(&format!("{p}log=true\nretention='7d'\n")).unwrap();
        let policy = m.dataset_log().unwrap().unwrap();
        assert_eq!(
            (policy.retention.as_secs(), policy.max_rows),
            (7 * 86400, 1_000_000)
        );
        for bad in [
            "retention='7d'",
            "log=true\nmax_rows=0",
            "log=true\nretention='1s'",
            "read=['x']",
        ] {
            assert!(Manifest::parse(&format!("{p}{bad}\n")).is_err(), "{bad}");
        }
        let t = "[function]\nname='t'\nversion='1.0.0'\nkind='monitor'\n[datasets]\n";
        assert_eq!(
            Manifest::parse(&format!("{t}read=['p']\n"))
                .unwrap()
                .dataset_reads()
                .unwrap(),
            vec!["p"]
        );
        assert!(Manifest::parse(&format!("{t}read=['P Q']\n")).is_err());
        assert!(Manifest::parse(&format!("{t}log=true\n")).is_err());
    }

    #[test]
    fn event_and_schedule_triggers() {
        let base = "[function]\nname='a'\nversion='1.0.0'\nkind='transform'\n[triggers]\n";
        let m = Manifest::parse(&format!(
            "{base}events=['drift.detected','new-data']\nbatch_size=50\nbatch_wait='200ms'\n[triggers.retry]\nmax_attempts=3\nbackoff='2s'\n"
        ))
        .unwrap();
        let t = m.event_trigger().unwrap().unwrap();
        assert_eq!(t.topics, vec!["drift.detected", "new-data"]);
        assert_eq!(
            (t.batch_size, t.batch_wait),
            (50, Duration::from_millis(200))
        );
        assert_eq!(t.retry.max_attempts, 3);
        assert_eq!(t.retry.backoff, Duration::from_secs(2));
        assert_eq!(t.retry.max_backoff, Duration::from_secs(300), "the default");
        let d = Manifest::parse(&format!("{base}events=['x']\n")).unwrap();
        let d = d.event_trigger().unwrap().unwrap();
        assert_eq!(
            (d.batch_size, d.retry),
            (1, crate::events::Retry::default())
        );
        assert!(Manifest::parse(&format!("{base}schedule='0 3 * * *'\n"))
            .unwrap()
            .schedule()
            .unwrap()
            .is_some());
        assert!(Manifest::parse(&format!("{base}schedule='*/5 * * * * *'\n")).is_ok());
        for bad in [
            "events=['Bad Topic']",
            "events=['x','x']",
            "events=['x']\nbatch_size=0",
            "events=['x']\nbatch_size=1001",
            "events=['x']\nbatch_wait='2h'",
            "events=['x']\nbatch_wait='soon'",
            "batch_size=5",
            "events=['x']\n[triggers.retry]\nmax_attempts=0",
            "events=['x']\n[triggers.retry]\nbackoff='10s'\nmax_backoff='1s'",
            "events=['x']\n[triggers.retry]\nnope=1",
            "schedule='every day'",
            "schedule='61 * * * *'",
            "schedule='0 3 * * * 2026'",
        ] {
            assert!(Manifest::parse(&format!("{base}{bad}\n")).is_err(), "{bad}");
        }
        let monitor = "[function]\nname='m'\nversion='1.0.0'\nkind='monitor'\n[triggers]\n";
        assert!(Manifest::parse(&format!("{monitor}events=['x']\n")).is_ok());
        let err = Manifest::parse(&format!("{monitor}schedule='0 3 * * *'\n")).unwrap_err();
        assert!(err.to_string().contains("not `monitor`"), "{err}");
        let trainer =
            format!("[function]\nname='m'\nversion='1.0.0'\nkind='trainer'\n{TRAINER}[triggers]\n");
        assert!(Manifest::parse(&format!("{trainer}events=['x']\n")).is_ok());
        assert!(Manifest::parse(&format!("{trainer}schedule='0 3 * * *'\n")).is_ok());
        let publish = "[function]\nname='a'\nversion='1.0.0'\nkind='transform'\n[events]\npublish=";
        assert!(Manifest::parse(&format!("{publish}['drift.detected']\n")).is_ok());
        assert!(Manifest::parse(&format!("{publish}['a/b']\n")).is_err());
    }

    const TRAINER: &str =
        "[datasets]\nread=['p']\n[trainer]\nmodel='m'\ndataset='p'\ninputs=['a','b']\n";

    #[test]
    fn trainer_tables() {
        let head = "[function]\nname='t'\nversion='1.0.0'\nkind='trainer'\n";
        let spec = Manifest::parse(&format!("{head}{TRAINER}"))
            .unwrap()
            .trainer()
            .unwrap()
            .unwrap();
        assert_eq!(spec.window, Duration::from_secs(86400));
        assert_eq!((spec.min_rows, spec.max_rows), (100, 100_000));
        assert_eq!((spec.holdout, spec.margin), (0.2, 0.0));
        assert_eq!(
            (spec.promote_to.as_str(), spec.against.as_str()),
            ("challenger", "champion")
        );
        assert_eq!(spec.metric, GateMetric::Auc);
        let full = format!(
            "{head}{TRAINER}window='1h'\nfeatures='fx@1.2.0'\nmin_rows=20\nholdout=0.3\n[trainer.params]\nseed='7'\n[trainer.gate]\nmetric='log_loss'\nmargin=0.05\n"
        );
        let spec = Manifest::parse(&full).unwrap().trainer().unwrap().unwrap();
        assert_eq!(spec.features, Some(("fx".into(), Some("1.2.0".into()))));
        assert_eq!(spec.params, vec![("seed".to_string(), "7".to_string())]);
        assert!(spec.metric.lower_is_better());
        let err = Manifest::parse(head).unwrap_err();
        assert!(err.to_string().contains("needs a [trainer] table"), "{err}");
        let t = "[function]\nname='t'\nversion='1.0.0'\nkind='transform'\n[trainer]\nmodel='m'\ndataset='p'\ninputs=['a']\n";
        assert!(Manifest::parse(t)
            .unwrap_err()
            .to_string()
            .contains("not `transform`"));
        for bad in [
            "window='0s'",
            "window='soon'",
            "features='Bad Name'",
            "features='fx@one'",
            "min_rows=5",
            "min_rows=500\nmax_rows=100",
            "max_rows=100001",
            "holdout=0.9",
            "promote_to='Champion!'",
            "promote_to='champion'",
            "nope=1",
            "[trainer.gate]\nmetric='f1'",
            "[trainer.gate]\nmargin=-1",
        ] {
            assert!(
                Manifest::parse(&format!("{head}{TRAINER}{bad}\n")).is_err(),
                "{bad}"
            );
        }
        for bad in [
            "[datasets]\nread=['p']\n[trainer]\nmodel='m'\ndataset='q'\ninputs=['a']\n",
            "[datasets]\nread=['p']\n[trainer]\nmodel='m'\ndataset='p'\ninputs=[]\n",
            "[datasets]\nread=['p']\n[trainer]\nmodel='m'\ndataset='p'\ninputs=['a','a']\n",
            "[datasets]\nread=['p']\n[trainer]\nmodel='m'\ndataset='p'\ninputs=['label']\n",
            "[datasets]\nread=['p']\n[trainer]\nmodel='m'\ndataset='p'\ninputs=['score']\n",
            "[datasets]\nread=['p']\n[trainer]\nmodel='m'\ndataset='p'\ninputs=['in.amount']\n",
            "[datasets]\nread=['p']\n[trainer]\nmodel='m'\ndataset='p'\ninputs=['a']\n[cache]\nttl='1m'\n",
            "[datasets]\nread=['p']\n[trainer]\nmodel='m'\ndataset='p'\ninputs=['a']\n[triggers]\nhttp='public'\n",
            "[datasets]\nread=['p']\n[trainer]\nmodel='M M'\ndataset='p'\ninputs=['a']\n",
        ] {
            assert!(Manifest::parse(&format!("{head}{bad}")).is_err(), "{bad}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// One line of a manifest: a known table header, a known key with a value
        /// of some type, or junk.
        fn line() -> impl Strategy<Value = String> {
            let table = prop::sample::select(vec![
                "[function]",
                "[scaling]",
                "[limits]",
                "[triggers]",
                "[models]",
                "[config]",
                "[pipeline]",
                "[features]",
                "[features.near_cache_ttl]",
                "[cache]",
                "[inference]",
                "[[inference.inputs]]",
                "[nope]",
            ])
            .prop_map(str::to_string);
            let key = prop::sample::select(vec![
                "name",
                "version",
                "kind",
                "memory",
                "timeout",
                "max_instances",
                "min_instances",
                "idle_timeout",
                "stages",
                "groups",
                "ttl",
                "http",
                "events",
                "schedule",
                "max_batch",
                "max_wait",
                "target",
                "datatype",
                "x",
            ]);
            let value = prop_oneof![
                Just("'a'".to_string()),
                Just("'1.0.0'".to_string()),
                Just("'transform'".to_string()),
                Just("'32MiB'".to_string()),
                Just("'5s'".to_string()),
                Just("['a', 'b']".to_string()),
                any::<i64>().prop_map(|i| i.to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                "'[ -~]{0,12}'".prop_map(|s| s.replace('\\', "")),
            ];
            prop_oneof![
                table,
                (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
                "[ -~]{0,20}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            /// Any text parses or is refused with an error, never a panic; what
            /// parses survives a round trip through TOML unchanged.
            #[test]
            fn any_manifest_parses_or_is_refused(
                lines in prop::collection::vec(line(), 0..16),
            ) {
                let head = "[function]\nname = 'f'\nversion = '1.0.0'\nkind = 'transform'\n";
                for text in [lines.join("\n"), format!("{head}{}", lines.join("\n"))] {
                    if let Ok(m) = Manifest::parse(&text) {
                        let again = Manifest::parse(&m.to_toml().expect("serializes"))
                            .expect("a parsed manifest reparses");
                        prop_assert_eq!(again, m);
                    }
                }
            }

            #[test]
            fn arbitrary_bytes_never_panic(text in "\\PC{0,200}") {
                let _ = Manifest::parse(&text);
            }
        }
    }
}
