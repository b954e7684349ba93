//! The HTTP trigger and the admin API, on one port. Every error is JSON
//! `{"error": {"code", "message"}}` with a status that says what happened.

use crate::admission::Rejected;
use crate::call::{Answer, CacheStatus, Called, Calls, Input, Trigger};
use crate::functions::{DeployError, Deployment, DeploymentBody, Functions};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::runtime::{GuestErrorKind, InvokeError, Prepared};
use axum::body::{Body, Bytes};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use extract::{Path, Query};
use quiver_registry::{PublishOutcome, RegistryError};
use serde_json::json;
use std::sync::Arc;

mod auth;
mod datasets;
mod events;
mod extract;
mod features;
pub mod grpc;
mod logs;
mod models;
mod monitors;
mod oip;
pub mod oip_wire;
mod tenants;
pub mod tls;
mod traffic;
pub mod ui;

pub use auth::Access;
pub(crate) use auth::{hidden, unauthorized};

pub struct AppState {
    pub functions: Arc<Functions>,
    pub tenancy: Arc<crate::tenancy::Tenancy>,
    pub metrics: Arc<Metrics>,
    /// The one call path every data-plane trigger goes through.
    pub calls: Arc<Calls>,
    /// Where published events are kept.
    pub events: Arc<dyn crate::events::Bus>,
    /// The event and schedule triggers (told of deploys and rollbacks).
    pub triggers: Arc<crate::triggers::Triggers>,
    pub max_body: usize,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds, for `Retry-After` on 429 and 503.
    retry_after: Option<u64>,
    /// 401: answer `WWW-Authenticate: Bearer`.
    www_authenticate: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            www_authenticate: false,
        }
    }
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Answer `Retry-After: secs` with it.
    pub fn retry_after(self, secs: u64) -> Self {
        ApiError {
            retry_after: Some(secs),
            ..self
        }
    }
}

impl From<Rejected> for ApiError {
    fn from(e: Rejected) -> Self {
        ApiError::from(InvokeError::Overloaded(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        if self.www_authenticate {
            resp.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let (status, code) = match &e {
            RegistryError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_component"),
            RegistryError::Conflict { .. } => (StatusCode::CONFLICT, "version_conflict"),
            RegistryError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            RegistryError::Busy(_) => (StatusCode::CONFLICT, "busy"),
            RegistryError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_component", m)
            }
            DeployError::Unsigned(m) => {
                ApiError::new(StatusCode::FORBIDDEN, "signature_required", m)
            }
            DeployError::BadSignature(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_signature", m)
            }
            DeployError::Upstream(e) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "registry_unavailable",
                format!("{e:#}"),
            ),
            DeployError::Registry(r) => r.into(),
            DeployError::Internal(e) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("{e:#}"),
            ),
        }
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        let (status, code) = ApiError::invoke_status(&e);
        let retry_after = match &e {
            InvokeError::Overloaded(r) => Some(r.retry_after_secs()),
            _ => None,
        };
        ApiError {
            retry_after,
            ..ApiError::new(status, code, e.to_string())
        }
    }
}

impl ApiError {
    fn invoke_status(e: &InvokeError) -> (StatusCode, &'static str) {
        match e {
            InvokeError::Guest(_, GuestErrorKind::InvalidInput) => {
                (StatusCode::BAD_REQUEST, "invalid_input")
            }
            InvokeError::Guest(_, GuestErrorKind::Unavailable) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            InvokeError::Guest(_, GuestErrorKind::LimitExceeded) => {
                (StatusCode::TOO_MANY_REQUESTS, "limit_exceeded")
            }
            InvokeError::Guest(_, GuestErrorKind::Internal) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "function_error")
            }
            InvokeError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            InvokeError::Memory(_) => (StatusCode::INTERNAL_SERVER_ERROR, "memory_limit_exceeded"),
            InvokeError::Trap(_) => (StatusCode::INTERNAL_SERVER_ERROR, "trap"),
            InvokeError::BadOutput(_) => (StatusCode::BAD_GATEWAY, "bad_output"),
            InvokeError::Host(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            InvokeError::Overloaded(Rejected::QueueFull { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "queue_full")
            }
            InvokeError::Overloaded(Rejected::Timeout(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "queue_timeout")
            }
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let admin = Router::new()
        .route("/tenants/{tenant}/functions", post(deploy).get(list))
        .route("/tenants/{tenant}/functions/{name}/versions", get(versions))
        .route(
            "/tenants/{tenant}/functions/{name}/versions/{version}",
            axum::routing::delete(remove_version),
        )
        .route("/gc", post(gc))
        .route(
            "/tenants/{tenant}/functions/{name}/rollback",
            post(rollback),
        )
        .route(
            "/tenants/{tenant}/features/{group}",
            post(features::load_features),
        )
        .layer(DefaultBodyLimit::max(UPLOAD_LIMIT));
    let router = Router::new()
        .route("/fn/{tenant}/{name}", post(invoke))
        .route("/http/{tenant}/{name}", any(http_proxy))
        .route("/http/{tenant}/{name}/", any(http_proxy))
        .route("/http/{tenant}/{name}/{*rest}", any(http_proxy))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/admin/v1", admin)
        .merge(models::routes())
        .merge(oip::routes())
        .merge(tenants::routes())
        .merge(events::routes())
        .merge(monitors::routes())
        .merge(datasets::routes())
        .merge(logs::routes())
        .merge(traffic::routes())
        .merge(ui::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .fallback(|uri: axum::http::Uri| async move {
            extract::reject(
                uri.path(),
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route".into(),
            )
        })
        .layer(DefaultBodyLimit::disable())
        .method_not_allowed_fallback(|req: Request| async move {
            extract::reject(
                req.uri().path(),
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} is not allowed here", req.method()),
            )
        })
        .with_state(state);
    catch_panics(router)
}

/// A handler that panics answers 500 `internal` (logged), and only that request
/// fails: the process, its other connections and every other tenant keep serving.
/// (A layer of its own rather than tower-http's `CatchPanicLayer`, which boxes every
/// response body: this one leaves the response as the handler made it.)
fn catch_panics(router: Router) -> Router {
    router.layer(tower::layer::layer_fn(CatchPanic))
}

#[derive(Clone)]
struct CatchPanic<S>(S);

type Served = Result<Response, std::convert::Infallible>;

impl<S> tower::Service<Request> for CatchPanic<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Map<
        futures::future::CatchUnwind<std::panic::AssertUnwindSafe<S::Future>>,
        fn(std::thread::Result<Served>) -> Served,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        use futures::FutureExt as _;
        std::panic::AssertUnwindSafe(self.0.call(req))
            .catch_unwind()
            .map(answer_panic as fn(std::thread::Result<Served>) -> Served)
    }
}

fn answer_panic(result: std::thread::Result<Served>) -> Served {
    let panic = match result {
        Ok(answer) => return answer,
        Err(panic) => panic,
    };
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = what, "a request handler panicked; answered 500");
    Ok(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the host failed while handling this request (a bug; it is logged); other requests are unaffected",
    )
    .into_response())
}

pub const MAX_COMPONENT_SIZE: usize = 64 << 20;
/// A deploy's whole body: the component and room for the manifest.
const UPLOAD_LIMIT: usize = MAX_COMPONENT_SIZE + (1 << 20);
pub use crate::convert::MAX_RESPONSE;

pub(crate) fn check_name(what: &str, s: &str) -> Result<(), ApiError> {
    if crate::tenancy::valid_name(s) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("{what} `{s}` must be 1-64 characters of a-z, 0-9 and '-'"),
        ))
    }
}

/// A body that announces more than `limit` bytes is refused (413) from its header,
/// before a byte of it is read.
pub(crate) fn check_declared(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is {n} bytes, over the {limit}-byte limit"),
        )),
        _ => Ok(()),
    }
}

/// A request's content type; JSON when it names none.
pub(crate) fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
}

/// Read a body up to the limit; over it is 413, whether or not it announced its length.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_big = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is over the {limit}-byte limit"),
        )
    };
    check_declared(headers, limit)?;
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_big();
            }
            source = s.source();
        }
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("reading request body: {e}"),
        )
    })
}

fn version_header(d: &Deployment) -> HeaderValue {
    // Versions are semver, which is always a valid header value.
    HeaderValue::from_str(&d.record.version).unwrap_or(HeaderValue::from_static("unknown"))
}

/// A call's HTTP response, errors rendered by `render` (the protocol's shape). A
/// response from a resolved function says which version served (or failed) it.
pub(crate) fn respond(
    called: Called<Response>,
    render: impl FnOnce(ApiError) -> Response,
) -> Response {
    let mut resp = called.result.unwrap_or_else(render);
    if let Some(d) = &called.served {
        resp.headers_mut()
            .insert("x-quiver-version", version_header(d));
    }
    if let Ok(id) = HeaderValue::from_str(&called.request_id) {
        resp.headers_mut().insert("x-quiver-request-id", id);
    }
    resp
}

/// The caller's W3C trace context header, as text (parsed by the call path).
pub(crate) fn traceparent(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    (v.len() <= 256).then(|| v.to_string())
}

/// The caller's route key (`x-quiver-route-key`): a split sends calls with the same
/// key to the same version.
pub(crate) fn route_key(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("x-quiver-route-key")?.to_str().ok()?;
    Some(v.to_string())
}

/// A body-less error for an answer a trigger did not ask for (a call-path bug).
fn unexpected(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("the call path answered {what} where it was not asked for (a bug)"),
    )
}

async fn invoke(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name_ref)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let max_body = state.max_body;
    let traceparent = traceparent(&headers);
    let key = route_key(&headers);
    let prepare = move |d: Arc<Deployment>| async move {
        if let DeploymentBody::Component(Prepared::Http(_)) = &d.body {
            let (tenant, name) = (&d.record.tenant, &d.record.name);
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "wrong_kind",
                format!("`{name}` is an `http` function; call it at /http/{tenant}/{name}/..."),
            ));
        }
        let body = read_body(&headers, body, max_body).await?;
        let content_type = content_type(&headers).to_string();
        Ok((Input::Body { content_type, body }, ()))
    };
    let call = state.calls.call(
        Trigger::Fn,
        access.principal.as_deref(),
        traceparent.as_deref(),
        access.function(&name_ref),
        prepare,
        |_, answer, ()| match answer {
            Answer::Json { text, cache } => Ok(json_response(text, cache)),
            _ => Err(unexpected("a non-JSON answer")),
        },
    );
    let called = crate::functions::with_route_key(key.as_deref(), call).await;
    respond(called, IntoResponse::into_response)
}

fn json_response(body: String, cache: Option<CacheStatus>) -> Response {
    let mut resp = ([("content-type", "application/json")], body).into_response();
    if let Some(c) = cache {
        resp.headers_mut()
            .insert("x-quiver-cache", HeaderValue::from_static(c.as_str()));
    }
    resp
}

async fn http_proxy(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path(params): Path<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (name_ref, rest) = (get("name"), get("rest"));
    let max_body = state.max_body;
    let traceparent = traceparent(req.headers());
    let prepare = move |d: Arc<Deployment>| async move {
        let DeploymentBody::Component(Prepared::Http(_)) = &d.body else {
            let (tenant, name) = (&d.record.tenant, &d.record.name);
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "wrong_kind",
                format!(
                    "`{name}` is a `{}` function; invoke it at /fn/{tenant}/{name}",
                    d.record.kind
                ),
            ));
        };
        let (mut parts, body) = req.into_parts();
        let body = read_body(&parts.headers, body, max_body).await?;
        // The component sees the path below its mount point, as under `wasmtime serve`.
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        parts.uri = format!("http://localhost/{rest}{query}")
            .parse()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_uri", format!("{e}")))?;
        Ok((Input::Http(hyper::Request::from_parts(parts, body)), ()))
    };
    let called = state
        .calls
        .call(
            Trigger::Http,
            access.principal.as_deref(),
            traceparent.as_deref(),
            access.function(&name_ref),
            prepare,
            |_, answer, ()| match answer {
                Answer::Http(resp) => {
                    let (parts, body) = resp.into_parts();
                    Ok(Response::from_parts(parts, Body::new(body)))
                }
                _ => Err(unexpected("a non-HTTP answer")),
            },
        )
        .await;
    respond(called, IntoResponse::into_response)
}

async fn healthz(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let allocator = match state.functions.runtime().pooling() {
        true => "pooling",
        false => "on-demand",
    };
    let store = state.functions.feature_store();
    let features = match store.ready().await {
        Ok(()) => json!({ "backend": store.name(), "ready": true }),
        Err(detail) => json!({ "backend": store.name(), "ready": false, "detail": detail }),
    };
    let models = state.functions.model_cache();
    let inference = json!({
        "backend": format!("{:?}", models.backend()).to_lowercase(),
        "compiled": crate::nn::COMPILED_BACKENDS,
        "threads": models.pool().threads(),
    });
    Json(json!({
        "status": "ok", "allocator": allocator, "features": features, "inference": inference,
    }))
}

/// Set the per-tenant usage gauges (and the bytes each tenant stores) for a scrape.
async fn update_usage(state: &AppState) {
    let tenants = state.tenancy.tenants();
    let names: Vec<String> = tenants.iter().map(|t| t.id.to_string()).collect();
    let stored = state
        .functions
        .registry_call(move |r| {
            names
                .iter()
                .map(|n| r.index().tenant_bytes(n))
                .collect::<Result<Vec<u64>, _>>()
        })
        .await
        .unwrap_or_default();
    let store = state.functions.feature_store();
    for (i, t) in tenants.iter().enumerate() {
        let u = t.usage.snapshot();
        let id = t.id.as_str();
        let features = store.tenant_bytes(id).unwrap_or(0) as f64;
        let registry = stored.get(i).copied().unwrap_or(0) as f64;
        for (measure, v) in [
            ("invocations", u.invocations as f64),
            ("cpu_ms", u.cpu_ms),
            ("memory_gb_seconds", u.memory_gb_seconds),
            ("inference_calls", u.inference_calls as f64),
            ("egress_calls", u.egress_calls as f64),
            ("egress_denied", u.egress_denied as f64),
            ("registry_bytes", registry),
            ("feature_bytes", features),
        ] {
            state.metrics.usage.with_label_values(&[id, measure]).set(v);
        }
    }
}

/// Prometheus text. The platform admin sees every series; a tenant's token sees
/// only the series labelled with its tenant.
async fn metrics(State(state): State<Arc<AppState>>, access: Access) -> Response {
    state.functions.update_gauges();
    update_usage(&state).await;
    if let Some(tenant) = access.principal.as_ref().and_then(|p| p.tenant.as_ref()) {
        let text = state.metrics.render_tenant(tenant.as_str());
        return ([("content-type", "text/plain; version=0.0.4")], text).into_response();
    }
    let text = state.metrics.render();
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

async fn deploy(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path(_): Path<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let tenant = access.tenant()?.clone();
    check_declared(&headers, UPLOAD_LIMIT)?;
    let mut multipart = multipart.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_upload",
            format!("expected multipart/form-data with `manifest` and `component` parts: {e}"),
        )
    })?;
    let mut manifest_text = None;
    let mut component = None;
    let mut signature = None;
    loop {
        let field = multipart.next_field().await.map_err(upload_error)?;
        let Some(field) = field else { break };
        match field.name() {
            Some("manifest") => {
                let bytes = read_part(field, "manifest", MAX_MANIFEST_SIZE).await?;
                manifest_text = Some(String::from_utf8(bytes).map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_upload",
                        "the `manifest` part is not UTF-8 text",
                    )
                })?)
            }
            Some("component") => {
                component = Some(read_part(field, "component", MAX_COMPONENT_SIZE).await?)
            }
            Some("signature") => {
                let bytes = read_part(field, "signature", MAX_SIGNATURE_SIZE).await?;
                let sig: crate::signing::Signature =
                    serde_json::from_slice(&bytes).map_err(|e| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "bad_signature",
                            format!(
                                "the `signature` part is not {{\"key\": \"ed25519:…\", \"signature\": \"<hex>\"}}: {e}"
                            ),
                        )
                    })?;
                signature = Some(sig)
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_upload",
                    format!("unexpected part {other:?}"),
                ))
            }
        }
    }
    let manifest_text = manifest_text.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_upload",
            "missing the `manifest` part",
        )
    })?;
    let manifest = Manifest::parse(&manifest_text).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_manifest",
            e.to_string(),
        )
    })?;
    let (_, _turn) = tenants::deploy_turn(&state, access.tenant()?).await?;
    tenants::check_deploy(&state, access.tenant()?, &manifest, component.as_deref()).await?;
    let (record, outcome) = state
        .functions
        .deploy(&tenant, manifest, component, signature)
        .await?;
    state.triggers.deployed(&record).await?;
    let status = match outcome {
        PublishOutcome::Created => StatusCode::CREATED,
        PublishOutcome::Unchanged => StatusCode::OK,
    };
    let body = json!({
        "tenant": record.tenant, "name": record.name, "version": record.version,
        "digest": record.digest, "kind": record.kind, "size": record.size,
        "created_at": record.created_at, "unchanged": outcome == PublishOutcome::Unchanged,
    });
    let mut resp = (status, Json(body)).into_response();
    resp.extensions_mut().insert(auth::AuditDetail(format!(
        "{}@{} {}",
        record.name, record.version, record.digest
    )));
    Ok(resp)
}

/// The most a deploy's `signature` part may hold (a key and a signature in JSON).
pub const MAX_SIGNATURE_SIZE: usize = 1 << 10;

/// The most a `manifest` (or a model's `metadata`) part may hold.
pub const MAX_MANIFEST_SIZE: usize = 256 << 10;

/// Read one multipart part, refusing it (413, naming the part and the limit) as soon
/// as it grows past `limit`: nothing larger is ever buffered.
pub(crate) async fn read_part(
    mut field: axum::extract::multipart::Field<'_>,
    part: &str,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(upload_error)? {
        if out.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the `{part}` part is over its {limit}-byte limit"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn upload_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            e.body_text(),
        );
    }
    ApiError::new(StatusCode::BAD_REQUEST, "bad_upload", e.body_text())
}

async fn list(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path(_): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    let t = tenant.clone();
    let records = state
        .functions
        .registry_call(move |r| r.index().list_serving(t.as_str()))
        .await?;
    let functions: Vec<serde_json::Value> = records
        .into_iter()
        .map(|r| {
            let live = state.functions.live_state(&r.tenant, &r.name, &r.version);
            let mut v = json!(r);
            v["state"] = json!(live.as_ref().map_or("cold", |l| l.state));
            v["in_flight"] = json!(live.as_ref().map_or(0, |l| l.in_flight));
            v["queued"] = json!(live.as_ref().map_or(0, |l| l.queued));
            v["busy_instances"] = json!(live.as_ref().map_or(0, |l| l.busy_instances));
            v["idle_instances"] = json!(live.as_ref().map_or(0, |l| l.idle_instances));
            v["cold_starts"] = json!(state.functions.cold_starts(&r.tenant, &r.name));
            v
        })
        .collect();
    Ok(Json(json!({ "functions": functions })))
}

async fn versions(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    check_name("function", &name)?;
    let (t, n) = (tenant.clone(), name.clone());
    let (serving, versions) = state
        .functions
        .registry_call(move |r| {
            Ok((
                r.resolve(t.as_str(), &n, None)?,
                r.index().versions(t.as_str(), &n)?,
            ))
        })
        .await?;
    Ok(Json(
        json!({ "name": name, "serving": serving.version, "versions": versions }),
    ))
}

#[derive(serde::Deserialize, Default)]
struct RollbackBody {
    to: Option<String>,
}

async fn rollback(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    check_name("function", &name)?;
    let body = read_body(&headers, body, 64 << 10).await?;
    let req: RollbackBody = match body.is_empty() {
        true => RollbackBody::default(),
        false => extract::json_object(&body)
            .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", m))?,
    };
    let rec = state
        .functions
        .rollback(&tenant, &name, req.to.as_deref())
        .await
        .map_err(|e| match e {
            DeployError::Registry(RegistryError::Invalid(m)) => {
                ApiError::new(StatusCode::CONFLICT, "no_older_version", m)
            }
            other => other.into(),
        })?;
    state.triggers.deployed(&rec).await?;
    Ok(Json(
        json!({ "name": name, "serving": rec.version, "digest": rec.digest }),
    ))
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct ForceQuery {
    #[serde(default)]
    pub(crate) force: bool,
}

/// A refused delete (serving, pinned, bound) is 409 naming why.
pub(crate) fn delete_error(e: DeployError) -> ApiError {
    match e {
        DeployError::Registry(RegistryError::Invalid(m)) => {
            ApiError::new(StatusCode::CONFLICT, "in_use", m)
        }
        other => other.into(),
    }
}

/// Versions are semver: checked before they reach the registry.
pub(crate) fn check_version(v: &str) -> Result<(), ApiError> {
    match v.len() <= 64 && semver::Version::parse(v).is_ok() {
        true => Ok(()),
        false => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_version",
            format!(
                "version `{}` is not a semver version",
                v.chars().take(64).collect::<String>()
            ),
        )),
    }
}

async fn remove_version(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name, version)): Path<(String, String, String)>,
    Query(q): Query<ForceQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    check_name("function", &name)?;
    check_version(&version)?;
    let deleted = state
        .functions
        .remove_version(&tenant, &name, &version, q.force)
        .await
        .map_err(delete_error)?;
    Ok(Json(json!({
        "name": name, "deleted": deleted.record.version, "digest": deleted.record.digest,
        "serving": deleted.serving,
    })))
}

/// Remove blobs and AOT artifacts that no version of any tenant references.
async fn gc(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!(state.functions.gc().await?)))
}

/// Start serving on `listener` until the future completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt as _;
    if let Some(acceptor) = tls {
        return tls::serve(listener, acceptor, router(state)).await;
    }
    // Small responses go out at once rather than waiting on Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, router(state)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    /// A handler that panics answers 500 with a JSON error, and the same router
    /// (the same service) serves the next request.
    #[tokio::test]
    async fn a_panicking_handler_is_caught_and_answered_500() {
        async fn boom() -> &'static str {
            panic!("a bug in a handler")
        }
        let router = catch_panics(
            Router::new()
                .route("/boom", get(boom))
                .route("/ok", get(|| async { "ok" })),
        );
        let req = |p: &str| Request::builder().uri(p).body(Body::empty()).unwrap();
        let resp = router.clone().oneshot(req("/boom")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "internal", "{v}");
        let resp = router.oneshot(req("/ok")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    /// Errors of axum's own extractors and router (a path that does not decode, a
    /// bad query, a wrong method) come back as JSON too.
    #[tokio::test]
    async fn extractor_rejections_are_json() {
        #[derive(serde::Deserialize)]
        struct Flag {
            #[allow(dead_code)]
            force: bool,
        }
        async fn takes(Path(name): Path<String>, Query(_): Query<Flag>) -> String {
            name
        }
        let router = Router::new()
            .route("/x/{name}", post(takes))
            .route("/v2/x/{name}", post(takes))
            .method_not_allowed_fallback(|req: Request| async move {
                extract::reject(
                    req.uri().path(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "no".into(),
                )
            });
        let send = |m: &str, p: &str| {
            let r = Request::builder()
                .method(m)
                .uri(p)
                .body(Body::empty())
                .unwrap();
            router.clone().oneshot(r)
        };
        for (m, p, status) in [
            ("POST", "/x/%FF?force=true", 400),
            ("POST", "/x/a?force=maybe", 400),
            ("GET", "/x/a?force=true", 405),
        ] {
            let resp = send(m, p).await.unwrap();
            assert_eq!(resp.status().as_u16(), status, "{m} {p}");
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"]["code"].is_string(), "{m} {p}: {v}");
        }
        let resp = send("POST", "/v2/x/%FF?force=true").await.unwrap();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].is_string(), "OIP shape: {v}");
    }
}
