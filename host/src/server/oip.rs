//! The Open Inference Protocol v2 (KServe / Triton REST) over Quiver's inference
//! functions: a "model" here is a function (an `inference` function, or a pipeline
//! that ends in one) and its input tensors are the function's batch columns.
//!
//! Tensors on the wire (JSON `data` and the binary tensor data extension) are
//! `oip_wire`'s.
//! The tenant is the token's (or, on `/v2/tenants/{tenant}/...`, the path's).
//! Errors are the protocol's `{"error": "<message>"}` with an HTTP status.

use super::extract::Path;
use super::oip_wire::{self as wire, Outputs};
use super::{Access, ApiError, AppState};
use crate::call::{Answer, Input, Trigger};
use crate::functions::Deployment;
use crate::manifest::Manifest;
use crate::tenancy::FunctionRef;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer))
        // The same, naming the tenant in the path: for the platform admin's token
        // and for public functions called without one.
        .route("/v2/tenants/{tenant}/models/{name}", get(model_metadata))
        .route("/v2/tenants/{tenant}/models/{name}/ready", get(model_ready))
        .route(
            "/v2/tenants/{tenant}/models/{name}/versions/{version}",
            get(model_metadata),
        )
        .route(
            "/v2/tenants/{tenant}/models/{name}/versions/{version}/ready",
            get(model_ready),
        )
        .route("/v2/tenants/{tenant}/models/{name}/infer", post(infer))
        .route(
            "/v2/tenants/{tenant}/models/{name}/versions/{version}/infer",
            post(infer),
        )
}

/// `ApiError` in the protocol's error shape.
pub(super) struct OipError(pub(super) ApiError);

impl<E: Into<ApiError>> From<E> for OipError {
    fn from(e: E) -> Self {
        OipError(e.into())
    }
}

impl IntoResponse for OipError {
    fn into_response(self) -> Response {
        let mut resp = (self.0.status, Json(json!({ "error": self.0.message }))).into_response();
        if let Some(secs) = self.0.retry_after {
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from(secs));
        }
        resp
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "quiver",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// Ready when the server can serve: the feature store answers.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.functions.feature_store().ready().await.is_ok();
    let status = match ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

fn tensor_decls(decls: &[crate::manifest::TensorDecl]) -> Vec<Value> {
    decls
        .iter()
        .map(|d| {
            let shape = d.shape.clone().unwrap_or_else(|| vec![-1]);
            json!({ "name": d.name, "datatype": d.datatype, "shape": shape })
        })
        .collect()
}

/// `{name}` and, on the `/versions/{version}` routes, the version.
type ModelPath = Path<Vec<(String, String)>>;

/// The model (function) a request names in its tenant (the token's, or the
/// path's), checked.
fn model_ref(access: &Access, Path(params): ModelPath) -> Result<FunctionRef, ApiError> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    access.function_at(get("name").unwrap_or_default(), get("version"))
}

async fn model_metadata(
    State(state): State<Arc<AppState>>,
    access: Access,
    path: ModelPath,
) -> Result<Json<Value>, OipError> {
    let m = model_ref(&access, path)?;
    if access.principal.is_none() {
        // Without a token, only a public function's metadata answers.
        state.calls.resolve(None, &m).await?;
    }
    let (t, n, v) = (
        m.tenant.to_string(),
        m.name().to_string(),
        m.version().map(str::to_string),
    );
    let (record, versions) = state
        .functions
        .registry_call(move |r| {
            Ok((
                r.resolve(&t, &n, v.as_deref())?,
                r.index().versions(&t, &n)?,
            ))
        })
        .await?;
    let versions: Vec<String> = versions.into_iter().map(|r| r.version).collect();
    let manifest = Manifest::parse(&record.manifest)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let inference = manifest.inference.clone().unwrap_or_default();
    Ok(Json(json!({
        "name": m.name(),
        "versions": versions,
        "platform": format!("quiver-{}", record.kind),
        "inputs": tensor_decls(&inference.inputs),
        "outputs": tensor_decls(&inference.outputs),
        "parameters": {
            "serving_version": record.version,
            "digest": record.digest,
            "models": manifest.models,
        },
    })))
}

/// Ready = loaded and able to serve (this loads it, models included, if Cold).
async fn model_ready(
    State(state): State<Arc<AppState>>,
    access: Access,
    path: ModelPath,
) -> Result<Json<Value>, OipError> {
    let m = model_ref(&access, path)?;
    let (d, _running) = state.calls.resolve(access.principal.as_deref(), &m).await?;
    Ok(Json(
        json!({ "name": m.name(), "version": d.record.version, "ready": true }),
    ))
}

async fn infer(
    State(state): State<Arc<AppState>>,
    access: Access,
    path: ModelPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let max_body = state.max_body;
    let traceparent = super::traceparent(&headers);
    let key = super::route_key(&headers);
    let prepare = move |d: Arc<Deployment>| async move {
        check_kind(&d)?;
        refuse_encoding(&headers)?;
        let body: Bytes = super::read_body(&headers, body, max_body).await?;
        let req = wire::parse(&headers, &body)?;
        Ok((Input::Batch(req.batch), (req.id, req.outputs)))
    };
    let finish = |d: &Deployment, answer: Answer, (id, requested): (Option<String>, Outputs)| {
        let Answer::Batch(out) = answer else {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the call path answered no tensors (a bug)",
            ));
        };
        let (outputs, binary) = wire::response_tensors(&out, &requested)?;
        let mut resp = json!({
            "model_name": d.record.name,
            "model_version": d.record.version,
            "outputs": outputs,
        });
        if let Some(id) = id {
            resp["id"] = json!(id);
        }
        if binary.is_empty() {
            return Ok(Json(resp).into_response());
        }
        // The JSON header, then the binary outputs; the header's length says where
        // one ends.
        let mut body = resp.to_string().into_bytes();
        let header_len = body.len();
        body.extend_from_slice(&binary);
        Ok((
            [
                (
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (
                    HeaderName::from_static(wire::HEADER_LENGTH),
                    HeaderValue::from(header_len),
                ),
            ],
            body,
        )
            .into_response())
    };
    let call = state.calls.call(
        Trigger::Oip,
        access.principal.as_deref(),
        traceparent.as_deref(),
        model_ref(&access, path),
        prepare,
        finish,
    );
    let called = crate::functions::with_route_key(key.as_deref(), call).await;
    super::respond(called, |e| OipError(e).into_response())
}

fn check_kind(d: &Deployment) -> Result<(), ApiError> {
    match d.record.kind.as_str() {
        "inference" | "pipeline" => Ok(()),
        other => Err(bad(format!(
            "`{}` is a `{other}` function; the inference protocol serves inference functions and pipelines",
            d.record.name
        ))),
    }
}

/// Compressed requests (tritonclient's `request_compression_algorithm`) are not
/// taken: say so rather than fail to parse the compressed bytes.
fn refuse_encoding(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(axum::http::header::CONTENT_ENCODING) {
        None => Ok(()),
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"identity") => Ok(()),
        Some(v) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {v:?} is not supported; send the request uncompressed"),
        )),
    }
}
