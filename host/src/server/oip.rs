//! The Open Inference Protocol v2 (KServe / Triton REST) over Quiver's inference
//! functions: a "model" here is a function (an `inference` function, or a pipeline
//! that ends in one) and its input tensors are the function's batch columns.
//!
//! Tensors are one column each: shape `[N]` or `[N, 1]`, data flat or nested.
//! FP16/FP32/FP64 become float64 columns, INT*/UINT* int64, BOOL boolean, BYTES
//! text. Outputs come back as `[N]` tensors (FP64, INT64, BOOL, BYTES).
//! The tenant is the `x-quiver-tenant` header (default `default`).
//! Errors are the protocol's `{"error": "<message>"}` with an HTTP status.

use super::{check_name, finish_as, version_header, ApiError, AppState};
use crate::bindings::{Batch, Column, Field};
use crate::functions::{Deployment, Input};
use crate::manifest::Manifest;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

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
}

/// `ApiError` in the protocol's error shape.
struct OipError(ApiError);

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

fn tenant(headers: &HeaderMap) -> Result<String, ApiError> {
    let t = headers
        .get("x-quiver-tenant")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("default")
        .to_string();
    check_name("tenant", &t)?;
    Ok(t)
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "quiver",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
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
        .map(|d| json!({ "name": d.name, "datatype": d.datatype, "shape": [-1] }))
        .collect()
}

/// `{name}` and, on the `/versions/{version}` routes, the version.
type ModelPath = Path<Vec<(String, String)>>;

/// The tenant (header), model name and version (path) a request names, checked.
struct ModelRef {
    tenant: String,
    name: String,
    version: Option<String>,
}

impl ModelRef {
    fn of(headers: &HeaderMap, Path(params): ModelPath) -> Result<ModelRef, ApiError> {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let name = get("name").unwrap_or_default();
        check_name("model", &name)?;
        Ok(ModelRef {
            tenant: tenant(headers)?,
            name,
            version: get("version"),
        })
    }
}

async fn model_metadata(
    State(state): State<Arc<AppState>>,
    path: ModelPath,
    headers: HeaderMap,
) -> Result<Json<Value>, OipError> {
    let m = ModelRef::of(&headers, path)?;
    let registry = state.functions.registry();
    let record = registry.resolve(&m.tenant, &m.name, m.version.as_deref())?;
    let versions: Vec<String> = registry
        .index()
        .versions(&m.tenant, &m.name)?
        .into_iter()
        .map(|r| r.version)
        .collect();
    let manifest = Manifest::parse(&record.manifest)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let inference = manifest.inference.clone().unwrap_or_default();
    Ok(Json(json!({
        "name": m.name,
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
    path: ModelPath,
    headers: HeaderMap,
) -> Result<Json<Value>, OipError> {
    let m = ModelRef::of(&headers, path)?;
    let d = state
        .functions
        .get(&m.tenant, &m.name, m.version.as_deref())
        .await?;
    Ok(Json(
        json!({ "name": m.name, "version": d.record.version, "ready": true }),
    ))
}

#[derive(serde::Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
    #[serde(default)]
    #[allow(dead_code)] // accepted as the protocol allows; no parameter is used yet
    parameters: Option<Value>,
}

#[derive(serde::Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Value>,
}

#[derive(serde::Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Value>,
}

async fn infer(
    State(state): State<Arc<AppState>>,
    path: ModelPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let target = ModelRef::of(&headers, path);
    // Metric labels, also for a request refused before it names a valid model.
    let (tenant_label, name_label) = match &target {
        Ok(m) => (m.tenant.clone(), m.name.clone()),
        Err(_) => (String::new(), String::new()),
    };
    let mut served = None;
    let result: Result<Response, ApiError> = async {
        let ModelRef {
            tenant,
            name,
            version,
        } = target?;
        let body: Bytes = super::read_body(&headers, body, state.max_body).await?;
        let req: InferRequest = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("not an inference request: {e}")))?;
        let batch = request_batch(&req.inputs)?;
        let d = state
            .functions
            .get(&tenant, &name, version.as_deref())
            .await?;
        served = Some(version_header(&d));
        check_kind(&d)?;
        let _ticket = state.functions.admit(&d).await?;
        let (out, _) = state.functions.run(&d, Input::Batch(batch)).await?;
        let outputs = response_tensors(&out, &req.outputs)?;
        let mut resp = json!({
            "model_name": name,
            "model_version": d.record.version,
            "outputs": outputs,
        });
        if let Some(id) = req.id {
            resp["id"] = json!(id);
        }
        Ok(Json(resp).into_response())
    }
    .await;
    finish_as(
        &state,
        &tenant_label,
        &name_label,
        started,
        served,
        result,
        |e| OipError(e).into_response(),
    )
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

/// Flatten nested JSON arrays (row-major) into one list of scalars.
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

fn request_batch(inputs: &[InputTensor]) -> Result<Batch, ApiError> {
    if inputs.is_empty() {
        return Err(bad("the request has no inputs"));
    }
    let mut fields = Vec::with_capacity(inputs.len());
    let mut rows: Option<usize> = None;
    for t in inputs {
        let n = match t.shape.as_slice() {
            [n] | [n, 1] if *n >= 0 => *n as usize,
            other => {
                return Err(bad(format!(
                    "input `{}` has shape {other:?}; this function takes one column per tensor: [N] or [N, 1]",
                    t.name
                )))
            }
        };
        if *rows.get_or_insert(n) != n {
            return Err(bad(format!(
                "input `{}` has {n} rows, other inputs have {}",
                t.name,
                rows.unwrap_or(0)
            )));
        }
        let mut data = Vec::with_capacity(n);
        flatten(&t.data, &mut data);
        if data.len() != n {
            return Err(bad(format!(
                "input `{}`: shape {:?} needs {n} values, data has {}",
                t.name,
                t.shape,
                data.len()
            )));
        }
        let wrong = |i: usize, want: &str| {
            bad(format!(
                "input `{}` ({}): element {i} is {}, not {want}",
                t.name, t.datatype, data[i]
            ))
        };
        let values = match t.datatype.as_str() {
            "FP16" | "FP32" | "FP64" => Column::Float64(
                data.iter()
                    .enumerate()
                    .map(|(i, v)| v.as_f64().ok_or_else(|| wrong(i, "a number")))
                    .collect::<Result<_, _>>()?,
            ),
            "INT8" | "INT16" | "INT32" | "INT64" | "UINT8" | "UINT16" | "UINT32" | "UINT64" => {
                Column::Int64(
                    data.iter()
                        .enumerate()
                        .map(|(i, v)| v.as_i64().ok_or_else(|| wrong(i, "an integer")))
                        .collect::<Result<_, _>>()?,
                )
            }
            "BOOL" => Column::Boolean(
                data.iter()
                    .enumerate()
                    .map(|(i, v)| v.as_bool().ok_or_else(|| wrong(i, "a boolean")))
                    .collect::<Result<_, _>>()?,
            ),
            "BYTES" => Column::Text(
                data.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| wrong(i, "a string"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => {
                return Err(bad(format!(
                    "input `{}`: unknown datatype `{other}` (FP16/32/64, INT8-64, UINT8-64, BOOL, BYTES)",
                    t.name
                )))
            }
        };
        fields.push(Field {
            name: t.name.clone(),
            values,
        });
    }
    Ok(Batch { fields })
}

fn response_tensors(out: &Batch, wanted: &[RequestedOutput]) -> Result<Vec<Value>, ApiError> {
    for w in wanted {
        if !out.fields.iter().any(|f| f.name == w.name) {
            let have: Vec<&str> = out.fields.iter().map(|f| f.name.as_str()).collect();
            return Err(bad(format!(
                "no output `{}`; this function returns {have:?}",
                w.name
            )));
        }
    }
    Ok(out
        .fields
        .iter()
        .filter(|f| wanted.is_empty() || wanted.iter().any(|w| w.name == f.name))
        .map(|f| {
            let (datatype, n, data) = match &f.values {
                Column::Float64(v) => ("FP64", v.len(), json!(v)),
                Column::Int64(v) => ("INT64", v.len(), json!(v)),
                Column::Boolean(v) => ("BOOL", v.len(), json!(v)),
                Column::Text(v) => ("BYTES", v.len(), json!(v)),
            };
            json!({ "name": f.name, "datatype": datatype, "shape": [n], "data": data })
        })
        .collect())
}
