//! The one call path. Every trigger (the `/fn` and `/http` routes, the Open
//! Inference Protocol, and the event and schedule triggers) translates its
//! protocol into [`Calls::call`], which owns resolve → authorize → quota → result
//! cache → admit → run → meter. A trigger brings two things: how to make the
//! [`Input`] once the deployment is known (its kind checks, reading and parsing its
//! body), and how to turn the [`Answer`] into its response. Neither can skip a step.

use crate::bindings::Batch;
use crate::functions::{Deployment, DeploymentBody, Functions};
use crate::metrics::Metrics;
use crate::rollout::ModelOverride;
use crate::runtime::{InvokeError, Prepared};
use crate::server::ApiError;
use crate::tenancy::{FunctionRef, Principal, Running, Tenancy};
use crate::trace::TraceContext;
use axum::http::StatusCode;
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Which trigger a call came through (a bounded metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Fn,
    Http,
    Oip,
    /// `[triggers] events`: the host delivers a tenant's event to its subscriber.
    Event,
    /// `[triggers] schedule`: the host runs a function on its cron tick.
    Schedule,
    /// `[pipeline] monitor`: the host hands a pipeline's calls to its monitor.
    Monitor,
    /// A copy of an answered call, run on the function's shadow version.
    Shadow,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Fn => "fn",
            Trigger::Http => "http",
            Trigger::Oip => "oip",
            Trigger::Event => "event",
            Trigger::Schedule => "schedule",
            Trigger::Monitor => "monitor",
            Trigger::Shadow => "shadow",
        }
    }

    /// The call span's kind: a client's request is a server span, an event's
    /// delivery a consumer span, the host's own ticks internal.
    fn span_kind(self) -> opentelemetry::trace::SpanKind {
        use opentelemetry::trace::SpanKind;
        match self {
            Trigger::Fn | Trigger::Http | Trigger::Oip => SpanKind::Server,
            Trigger::Event => SpanKind::Consumer,
            Trigger::Schedule | Trigger::Monitor | Trigger::Shadow => SpanKind::Internal,
        }
    }

    /// OpenTelemetry's `faas.trigger`.
    fn faas_trigger(self) -> &'static str {
        match self {
            Trigger::Fn | Trigger::Http | Trigger::Oip => "http",
            Trigger::Event => "pubsub",
            Trigger::Schedule => "timer",
            Trigger::Monitor | Trigger::Shadow => "other",
        }
    }

    /// Started by the host on a function's own manifest (no client, no token, and
    /// `[triggers] http = false` does not hide the function from it).
    fn internal(self) -> bool {
        matches!(
            self,
            Trigger::Event | Trigger::Schedule | Trigger::Monitor | Trigger::Shadow
        )
    }
}

/// What a call runs on.
pub enum Input {
    /// A request body: raw for an ingest first stage, else JSON rows. Results of
    /// functions with `[cache] ttl` are cached by this input.
    Body { content_type: String, body: Bytes },
    /// Typed columns (Open Inference Protocol tensors).
    Batch(Batch),
    /// A request for a `wasi:http/proxy` component.
    Http(hyper::Request<Bytes>),
    /// What a monitor observes: a pipeline's inputs and outputs.
    Observe { inputs: Batch, outputs: Batch },
}

/// Whether the result cache answered a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
        }
    }
}

/// What a call produced, by the kind of its input.
pub enum Answer {
    /// For `Input::Body`: `{"rows", "rejected"}` as JSON text (at most
    /// [`crate::convert::MAX_RESPONSE`] bytes); `cache` is `None` when the function
    /// caches nothing.
    Json {
        text: String,
        cache: Option<CacheStatus>,
    },
    /// For `Input::Batch`: the last stage's columns.
    Batch(Batch),
    /// For `Input::Http`: the component's response (its body may still stream).
    Http(hyper::Response<HyperOutgoingBody>),
}

/// A trigger's response, as far as metering needs to know it.
pub trait Outcome {
    /// The status it is counted under (HTTP's, which every trigger maps onto).
    fn status(&self) -> StatusCode;
}

impl Outcome for axum::response::Response {
    fn status(&self) -> StatusCode {
        axum::response::Response::status(self)
    }
}

/// The result of a call and the deployment that served it (`None`: it named none
/// that the caller may reach), which the trigger names in its response.
pub struct Called<R> {
    pub served: Option<Arc<Deployment>>,
    pub result: Result<R, ApiError>,
    /// The call's id (its span id): `x-quiver-request-id`, the key of its logged
    /// predictions and of the feedback that labels them.
    pub request_id: String,
}

#[derive(Clone)]
pub struct Calls {
    functions: Arc<Functions>,
    tenancy: Arc<Tenancy>,
    metrics: Arc<Metrics>,
}

impl Calls {
    pub fn new(functions: Arc<Functions>, tenancy: Arc<Tenancy>, metrics: Arc<Metrics>) -> Self {
        Calls {
            functions,
            tenancy,
            metrics,
        }
    }

    /// Resolve → authorize → quota: the deployment `target` names, if `caller` may
    /// call it, admitted by its tenant's rate and concurrency quotas (the guard
    /// counts it running until dropped). Without a principal only a public function
    /// (`[triggers] http = "public"`) answers; for anything else, existing or not,
    /// it is 401, so a caller without a token learns nothing about names.
    pub async fn resolve(
        &self,
        caller: Option<&Principal>,
        target: &FunctionRef,
    ) -> Result<(Arc<Deployment>, Running), ApiError> {
        self.resolve_for(Trigger::Fn, caller, target).await
    }

    async fn resolve_for(
        &self,
        trigger: Trigger,
        caller: Option<&Principal>,
        target: &FunctionRef,
    ) -> Result<(Arc<Deployment>, Running), ApiError> {
        let found = match self.functions.get(target).await {
            Ok(d) if trigger.internal() => Ok(d),
            Ok(d) => exposed(d),
            Err(e) => Err(ApiError::from(e)),
        };
        let d = match (caller, found) {
            (_, found) if trigger.internal() => found?,
            (Some(_), found) => found?,
            (None, Ok(d)) if d.public => d,
            (None, _) => {
                return Err(crate::server::unauthorized(
                    crate::tenancy::AuthError::Missing,
                ))
            }
        };
        // A training run registers model versions and moves aliases: what a
        // `deploy` token may do, not an `invoke` one.
        if d.record.kind == "trainer"
            && !trigger.internal()
            && caller.is_none_or(|p| p.scope < crate::tenancy::Scope::Deploy)
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "running a trainer (it registers model versions) needs a token with the `deploy` scope",
            ));
        }
        let Some(tenant) = self.tenancy.tenant(&target.tenant) else {
            return Err(crate::server::hidden(target.tenant.as_str()));
        };
        let running = tenant.limiter.admit().map_err(|e| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                e.to_string(),
            )
            .retry_after(e.retry_after_secs())
        })?;
        Ok((d, running))
    }

    /// One call, start to end. `target` is the edge's parse of what the request
    /// names (its error is counted and answered like any other). `prepare` sees the
    /// resolved deployment and makes the input (and whatever `finish` needs of the
    /// request); `finish` makes the trigger's response from the answer. Both run
    /// inside the metered span, so a response's count, status and latency are the
    /// ones the caller got.
    pub async fn call<C, R, P, Fut>(
        &self,
        trigger: Trigger,
        caller: Option<&Principal>,
        traceparent: Option<&str>,
        target: Result<FunctionRef, ApiError>,
        prepare: P,
        finish: impl FnOnce(&Deployment, Answer, C) -> Result<R, ApiError>,
    ) -> Called<R>
    where
        R: Outcome,
        P: FnOnce(Arc<Deployment>) -> Fut,
        Fut: Future<Output = Result<(Input, C), ApiError>>,
    {
        let started = Instant::now();
        let mut served = None;
        let parent = traceparent.and_then(TraceContext::parse);
        let context = TraceContext::child_of(parent.as_ref());
        let request_id = context.span_id();
        let mut span = crate::trace::Span::call(context, parent.as_ref(), trigger.span_kind());
        let mut mirror = None;
        let result = context
            .scope(async {
                let target = target?;
                let (d, _running) = self.resolve_for(trigger, caller, &target).await?;
                served = Some(d.clone());
                let (input, ctx) = prepare(d.clone()).await?;
                mirror = self.mirror(trigger, &target, &d, &input).await;
                let answer = self.run(&d, input).await?;
                finish(&d, answer, ctx)
            })
            .await;
        self.meter(trigger, started, served.as_deref(), &result);
        self.observe_rollout(trigger, started, served.as_deref(), &result);
        if let (Some((target, candidate, input)), true) = (mirror, result.is_ok()) {
            self.shadow(target, candidate, input, context);
        }
        if span.is_recording() {
            describe(&mut span, trigger, served.as_deref(), &result);
        }
        Called {
            served,
            result,
            request_id,
        }
    }

    /// A copy of the call for `d`'s shadow version, when it has one and the call
    /// may be mirrored: an unpinned call from a client or an event or schedule
    /// trigger, on a typed input (not a monitor's observation or an `http`
    /// request), served by another version than the shadow. A trainer is never
    /// mirrored (a copy would register a model version of its own).
    ///
    /// While a model rollout it binds is in its shadow step, the copy runs on the
    /// same version with the rollout's candidate bound (what `candidate` names).
    async fn mirror(
        &self,
        trigger: Trigger,
        target: &FunctionRef,
        d: &Deployment,
        input: &Input,
    ) -> Option<(FunctionRef, Option<ModelOverride>, Input)> {
        if matches!(trigger, Trigger::Monitor | Trigger::Shadow)
            || target.version().is_some()
            || d.record.kind == "trainer"
        {
            return None;
        }
        let copy = match input {
            Input::Body { content_type, body } => Input::Body {
                content_type: content_type.clone(),
                body: body.clone(),
            },
            Input::Batch(b) => Input::Batch(b.clone()),
            Input::Http(_) | Input::Observe { .. } => return None,
        };
        let r = &d.record;
        if d.variant.is_none() {
            let rollouts = self.functions.rollout_routes();
            if let Some(candidate) = rollouts.shadow(&r.tenant, &d.alias_models) {
                let same =
                    FunctionRef::new(target.tenant.clone(), &r.name, Some(&r.version)).ok()?;
                return Some((same, Some(candidate), copy));
            }
        }
        let shadow = self.functions.shadow(&r.tenant, &r.name).await.ok()??;
        if *shadow == *r.version {
            return None;
        }
        let pinned = FunctionRef::new(target.tenant.clone(), &r.name, Some(&shadow)).ok()?;
        Some((pinned, None, copy))
    }

    /// Count a call on the arm of a running model rollout it ran (a 5xx answer is
    /// an error; a client's bad input is not the candidate's fault).
    fn observe_rollout<R: Outcome>(
        &self,
        trigger: Trigger,
        started: Instant,
        served: Option<&Deployment>,
        result: &Result<R, ApiError>,
    ) {
        let Some(d) = served else { return };
        if trigger == Trigger::Monitor || d.model_versions.is_empty() {
            return;
        }
        let status = match result {
            Ok(r) => r.status(),
            Err(e) => e.status(),
        };
        self.functions.rollout_routes().observe_call(
            &d.record.tenant,
            &d.model_versions,
            status.is_server_error(),
            started.elapsed().as_secs_f64() * 1000.0,
        );
    }

    /// Run the copy on the shadow version after the caller has its answer, in a
    /// task of its own: counted and timed under the shadow's version (trigger
    /// `shadow`), its span a child of the call's, its answer dropped (a function with
    /// `[datasets] log` logs its rows under its own version). At most
    /// [`MAX_SHADOWS`] run at once on a host; past that a copy is skipped and
    /// counted, never queued behind the callers.
    fn shadow(
        &self,
        target: FunctionRef,
        candidate: Option<ModelOverride>,
        input: Input,
        call: TraceContext,
    ) {
        let Ok(permit) = SHADOWS.clone().try_acquire_owned() else {
            self.metrics
                .shadow_skipped
                .with_label_values(&[target.tenant.as_str(), target.name()])
                .inc();
            return;
        };
        let calls = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let context = TraceContext::child_of(Some(&call));
            let mut span =
                crate::trace::Span::call(context, Some(&call), Trigger::Shadow.span_kind());
            let mut served = None;
            let result: Result<Mirrored, ApiError> = context
                .scope(async {
                    let (d, _running) = calls.resolve_for(Trigger::Shadow, None, &target).await?;
                    let d = match candidate {
                        Some(c) => calls.functions.variant(&d, c).await?,
                        None => d,
                    };
                    served = Some(d.clone());
                    calls.run(&d, input).await.map(|_| Mirrored)
                })
                .await;
            calls.meter(Trigger::Shadow, started, served.as_deref(), &result);
            calls.observe_rollout(Trigger::Shadow, started, served.as_deref(), &result);
            if span.is_recording() {
                describe(&mut span, Trigger::Shadow, served.as_deref(), &result);
            }
        });
    }

    /// Result cache → admit → run.
    async fn run(&self, d: &Arc<Deployment>, input: Input) -> Result<Answer, ApiError> {
        let functions = &self.functions;
        match input {
            Input::Body { content_type, body } => {
                // A cache hit runs no guest, so it takes no slot of the function's capacity.
                let key = functions.cache_key(d, &content_type, &body);
                if let Some(key) = &key {
                    if let Some(text) = functions.cached_result(d, key).await {
                        let cache = Some(CacheStatus::Hit);
                        return Ok(Answer::Json { text, cache });
                    }
                }
                let _ticket = crate::trace::in_span("queue", functions.admit(d)).await?;
                let out = functions.invoke(d, &content_type, &body).await?;
                let text = out.to_json().to_string();
                if text.len() > crate::convert::MAX_RESPONSE {
                    return Err(ApiError::from(InvokeError::BadOutput(format!(
                        "the function returned {} bytes of JSON; the most this host sends back is {}",
                        text.len(),
                        crate::convert::MAX_RESPONSE
                    ))));
                }
                let cache = match key {
                    Some(key) => {
                        functions.remember(d, &key, text.clone()).await;
                        Some(CacheStatus::Miss)
                    }
                    None => None,
                };
                Ok(Answer::Json { text, cache })
            }
            Input::Batch(batch) => {
                let _ticket = crate::trace::in_span("queue", functions.admit(d)).await?;
                let (out, _rejected) = functions
                    .run(d, crate::functions::Input::Batch(batch))
                    .await?;
                crate::convert::check_response_size(&out).map_err(InvokeError::BadOutput)?;
                Ok(Answer::Batch(out))
            }
            Input::Observe { inputs, outputs } => {
                let _ticket = crate::trace::in_span("queue", functions.admit(d)).await?;
                let report = functions.observe(d, inputs, outputs).await?;
                let text = report.to_string();
                Ok(Answer::Json { text, cache: None })
            }
            Input::Http(req) => {
                let DeploymentBody::Component(Prepared::Http(pre)) = &d.body else {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "wrong_kind",
                        format!("`{}` is not an `http` function", d.record.name),
                    ));
                };
                let ticket = crate::trace::in_span("queue", functions.admit(d)).await?;
                let resp = functions
                    .runtime()
                    .http(pre, Functions::invocation(d), req, ticket)
                    .await?;
                Ok(Answer::Http(resp))
            }
        }
    }

    /// Count and time a call. Per-function series exist only for functions that
    /// resolved: a call naming nothing deployed counts in one series per trigger and
    /// error code, so no request can add series.
    fn meter<R: Outcome>(
        &self,
        trigger: Trigger,
        started: Instant,
        served: Option<&Deployment>,
        result: &Result<R, ApiError>,
    ) {
        let m = &self.metrics;
        let Some(d) = served else {
            let code = match result {
                Ok(_) => "ok",
                Err(e) => e.code(),
            };
            m.unresolved
                .with_label_values(&[trigger.as_str(), code])
                .inc();
            return;
        };
        let (tenant, name) = (d.record.tenant.as_str(), d.record.name.as_str());
        let status = match result {
            Ok(r) => r.status(),
            Err(e) => {
                m.errors.with_label_values(&[tenant, name, e.code()]).inc();
                e.status()
            }
        };
        m.invocations
            .with_label_values(&[tenant, name, &d.record.version, status.as_str()])
            .inc();
        let elapsed = started.elapsed();
        m.latency
            .with_label_values(&[tenant, name, &d.record.version])
            .observe(elapsed.as_secs_f64());
        if let Some(usage) = &d.usage {
            usage.invoked(elapsed, Functions::invocation(d).limits.memory_bytes);
            if d.runs_models() {
                usage
                    .inference_calls
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// Name and attribute a call's span once its outcome is known: what it ran (the
/// resolved deployment's names only: nothing from an unresolved URL) and how it ended.
fn describe<R: Outcome>(
    span: &mut crate::trace::Span,
    trigger: Trigger,
    served: Option<&Deployment>,
    result: &Result<R, ApiError>,
) {
    span.set_attr("quiver.trigger", trigger.as_str());
    span.set_attr("faas.trigger", trigger.faas_trigger());
    let status = match result {
        Ok(r) => r.status(),
        Err(e) => e.status(),
    };
    span.set_attr("http.response.status_code", i64::from(status.as_u16()));
    match served {
        Some(d) => {
            let r = &d.record;
            span.rename(format!("{} {}", trigger.as_str(), r.name));
            span.set_attr("quiver.tenant", r.tenant.clone());
            span.set_attr("quiver.function", r.name.clone());
            span.set_attr("quiver.version", r.version.clone());
            span.set_attr("faas.name", r.name.clone());
            span.set_attr("faas.version", r.version.clone());
            if !d.model_versions.is_empty() {
                span.set_attr("quiver.model_versions", d.model_versions.clone());
            }
        }
        None => span.rename(format!("{} (unresolved)", trigger.as_str())),
    }
    if let Err(e) = result {
        span.set_attr("error.type", e.code());
        span.fail(e.code());
    }
}

/// Shadow copies running at once on this host, at most.
pub const MAX_SHADOWS: usize = 64;

static SHADOWS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(MAX_SHADOWS)));

/// A shadow copy's outcome: answered (its answer is not kept).
struct Mirrored;

impl Outcome for Mirrored {
    fn status(&self) -> StatusCode {
        StatusCode::OK
    }
}

/// A function whose manifest says `[triggers] http = false` is not served over HTTP.
fn exposed(d: Arc<Deployment>) -> Result<Arc<Deployment>, ApiError> {
    match d.http_trigger {
        true => Ok(d),
        false => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_exposed",
            format!(
                "`{}` is not served over HTTP ([triggers] http = false)",
                d.record.name
            ),
        )),
    }
}
