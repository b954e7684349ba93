//! The HTTP trigger and the admin API, on one port. Every error is JSON
//! `{"error": {"code", "message"}}` with a status that says what happened.

use crate::admission::Rejected;
use crate::functions::{split_ref, DeployError, Deployment, DeploymentBody, Functions};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::runtime::{GuestErrorKind, InvokeError, Prepared};
use axum::body::{Body, Bytes};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use quiver_registry::{PublishOutcome, RegistryError};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

mod features;
mod models;
mod oip;

pub struct AppState {
    pub functions: Arc<Functions>,
    pub metrics: Metrics,
    pub max_body: usize,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds, for `Retry-After` on 429 and 503.
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
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
        resp
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let (status, code) = match &e {
            RegistryError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_component"),
            RegistryError::Conflict { .. } => (StatusCode::CONFLICT, "version_conflict"),
            RegistryError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
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
    // Uploads are bounded by the registry's component size limit plus room for the manifest.
    let upload_limit = MAX_COMPONENT_SIZE + (1 << 20);
    let admin = Router::new()
        .route("/tenants/{tenant}/functions", post(deploy).get(list))
        .route("/tenants/{tenant}/functions/{name}/versions", get(versions))
        .route(
            "/tenants/{tenant}/functions/{name}/rollback",
            post(rollback),
        )
        .route(
            "/tenants/{tenant}/features/{group}",
            post(features::load_features),
        )
        .layer(DefaultBodyLimit::max(upload_limit));
    Router::new()
        .route("/fn/{tenant}/{name}", post(invoke))
        .route("/http/{tenant}/{name}", any(http_proxy))
        .route("/http/{tenant}/{name}/", any(http_proxy))
        .route("/http/{tenant}/{name}/{*rest}", any(http_proxy))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/admin/v1", admin)
        .merge(models::routes())
        .merge(oip::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

pub const MAX_COMPONENT_SIZE: usize = 64 << 20;

fn check_name(what: &str, s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("{what} `{s}` must be 1-64 characters of a-z, 0-9 and '-'"),
        ))
    }
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
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
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

async fn resolve(
    state: &AppState,
    tenant: &str,
    name_ref: &str,
) -> Result<Arc<Deployment>, ApiError> {
    check_name("tenant", tenant)?;
    let (name, version) = split_ref(name_ref);
    check_name("function", name)?;
    Ok(state.functions.get(tenant, name, version).await?)
}

async fn invoke(
    State(state): State<Arc<AppState>>,
    Path((tenant, name_ref)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let (name, _) = split_ref(&name_ref);
    let name = name.to_string();
    let mut served = None;
    let result: Result<Response, ApiError> = async {
        let body = read_body(&headers, body, state.max_body).await?;
        let d = resolve(&state, &tenant, &name_ref).await?;
        served = Some(version_header(&d));
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        // A cache hit runs no guest, so it takes no slot of the function's capacity.
        let cache_key = state.functions.cache_key(&d, content_type, &body);
        if let Some(key) = &cache_key {
            if let Some(hit) = state.functions.cached_result(&d, key).await {
                return Ok(cache_response(hit, "hit"));
            }
        }
        let _ticket = state.functions.admit(&d).await?;
        let out = state.functions.invoke(&d, content_type, &body).await?;
        match cache_key {
            None => Ok(Json(out.to_json()).into_response()),
            Some(key) => {
                let text = out.to_json().to_string();
                state.functions.remember(&d, &key, text.clone()).await;
                Ok(cache_response(text, "miss"))
            }
        }
    }
    .await;
    finish(&state, &tenant, &name, started, served, result)
}

fn cache_response(body: String, status: &'static str) -> Response {
    (
        [
            ("content-type", "application/json"),
            ("x-quiver-cache", status),
        ],
        body,
    )
        .into_response()
}

fn finish(
    state: &AppState,
    tenant: &str,
    name: &str,
    started: Instant,
    served: Option<HeaderValue>,
    result: Result<Response, ApiError>,
) -> Response {
    finish_as(state, tenant, name, started, served, result, |e| {
        e.into_response()
    })
}

/// Count and time an invocation; errors rendered by `render` (the protocol's shape).
fn finish_as(
    state: &AppState,
    tenant: &str,
    name: &str,
    started: Instant,
    served: Option<HeaderValue>,
    result: Result<Response, ApiError>,
    render: impl FnOnce(ApiError) -> Response,
) -> Response {
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status != StatusCode::NOT_FOUND {
                state
                    .metrics
                    .errors
                    .with_label_values(&[tenant, name, e.code])
                    .inc();
            }
            render(e)
        }
    };
    // Errors of a resolved function say which version failed, too.
    if let Some(v) = served {
        resp.headers_mut().insert("x-quiver-version", v);
    }
    if resp.status() != StatusCode::NOT_FOUND {
        let version = resp
            .headers()
            .get("x-quiver-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        state
            .metrics
            .invocations
            .with_label_values(&[tenant, name, version, resp.status().as_str()])
            .inc();
        state
            .metrics
            .latency
            .with_label_values(&[tenant, name])
            .observe(started.elapsed().as_secs_f64());
    }
    resp
}

async fn http_proxy(
    State(state): State<Arc<AppState>>,
    Path(params): Path<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (tenant, name_ref) = (get("tenant"), get("name"));
    let (name, _) = split_ref(&name_ref);
    let name = name.to_string();
    let mut served = None;
    let result: Result<Response, ApiError> = async {
        let d = resolve(&state, &tenant, &name_ref).await?;
        served = Some(version_header(&d));
        let DeploymentBody::Component(Prepared::Http(pre)) = &d.body else {
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
        let limit = state.max_body;
        let body = read_body(&parts.headers, body, limit).await?;
        // The component sees the path below its mount point, as under `wasmtime serve`.
        let rest = format!("/{}", get("rest"));
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        parts.uri = format!("http://localhost{rest}{query}")
            .parse()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_uri", format!("{e}")))?;
        let req = hyper::Request::from_parts(parts, body);
        let _ticket = state.functions.admit(&d).await?;
        let resp = state
            .functions
            .runtime()
            .http(pre, Functions::invocation(&d), req)
            .await?;
        let (parts, body) = resp.into_parts();
        Ok(Response::from_parts(parts, Body::new(body)))
    }
    .await;
    finish(&state, &tenant, &name, started, served, result)
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

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let runtime = state.functions.runtime();
    state.functions.update_gauges();
    let text = format!(
        "{}# HELP quiver_instantiations_total Instances of typed functions created\n\
         # TYPE quiver_instantiations_total counter\nquiver_instantiations_total {}\n\
         # HELP quiver_compilations_total Components compiled rather than loaded from the AOT cache\n\
         # TYPE quiver_compilations_total counter\nquiver_compilations_total {}\n",
        state.metrics.render(),
        runtime.instantiations(),
        runtime.compilations()
    );
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

async fn deploy(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    check_name("tenant", &tenant)?;
    let mut multipart = multipart.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_upload",
            format!("expected multipart/form-data with `manifest` and `component` parts: {e}"),
        )
    })?;
    let mut manifest_text = None;
    let mut component = None;
    loop {
        let field = multipart.next_field().await.map_err(upload_error)?;
        let Some(field) = field else { break };
        match field.name() {
            Some("manifest") => manifest_text = Some(field.text().await.map_err(upload_error)?),
            Some("component") => {
                component = Some(field.bytes().await.map_err(upload_error)?.to_vec())
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
    let (record, outcome) = state.functions.deploy(&tenant, manifest, component).await?;
    let status = match outcome {
        PublishOutcome::Created => StatusCode::CREATED,
        PublishOutcome::Unchanged => StatusCode::OK,
    };
    let body = json!({
        "tenant": record.tenant, "name": record.name, "version": record.version,
        "digest": record.digest, "kind": record.kind, "size": record.size,
        "created_at": record.created_at, "unchanged": outcome == PublishOutcome::Unchanged,
    });
    Ok((status, Json(body)).into_response())
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
    Path(tenant): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_name("tenant", &tenant)?;
    let records = state.functions.registry().index().list_serving(&tenant)?;
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
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_name("tenant", &tenant)?;
    let serving = state.functions.registry().resolve(&tenant, &name, None)?;
    let versions = state
        .functions
        .registry()
        .index()
        .versions(&tenant, &name)?;
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
    Path((tenant, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_name("tenant", &tenant)?;
    let req: RollbackBody = match body.is_empty() {
        true => RollbackBody::default(),
        false => serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?,
    };
    let rec = state
        .functions
        .rollback(&tenant, &name, req.to.as_deref())
        .map_err(|e| match e {
            RegistryError::Invalid(m) => ApiError::new(StatusCode::CONFLICT, "no_older_version", m),
            other => other.into(),
        })?;
    Ok(Json(
        json!({ "name": name, "serving": rec.version, "digest": rec.digest }),
    ))
}

/// Start serving on `listener` until the future completes.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AppState>) -> anyhow::Result<()> {
    use axum::serve::ListenerExt as _;
    // Small responses go out at once rather than waiting on Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, router(state)).await?;
    Ok(())
}
