//! The Open Inference Protocol v2 (KServe / Triton REST) over Quiver's inference
//! functions: a "model" here is a function (an `inference` function, or a pipeline
//! that ends in one) and its input tensors are the function's batch columns.
//!
//! Tensors are one column each: shape `[N]` or `[N, 1]`, data flat or nested.
//! FP16/FP32/FP64 become float64 columns, INT*/UINT* int64, BOOL boolean, BYTES
//! text. Outputs come back as `[N]` tensors (FP64, INT64, BOOL, BYTES).
//! The tenant is the token's (or, on `/v2/tenants/{tenant}/...`, the path's).
//! Errors are the protocol's `{"error": "<message>"}` with an HTTP status.

use super::extract::Path;
use super::{Access, ApiError, AppState};
use crate::bindings::{Batch, Column, Field};
use crate::call::{Answer, Input, Trigger};
use crate::functions::Deployment;
use crate::manifest::Manifest;
use crate::tenancy::FunctionRef;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
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

#[derive(serde::Deserialize)]
pub(crate) struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
    #[serde(default)]
    #[allow(dead_code)] // accepted as the protocol allows; no parameter is used yet
    parameters: Option<Value>,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct InputTensor {
    pub(crate) name: String,
    pub(crate) shape: Vec<i64>,
    pub(crate) datatype: String,
    pub(crate) data: Value,
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) parameters: Option<Value>,
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
        let body: Bytes = super::read_body(&headers, body, max_body).await?;
        let req: InferRequest = super::extract::json_object(&body)
            .map_err(|e| bad(format!("not an inference request: {e}")))?;
        let batch = request_batch(&req.inputs)?;
        Ok((Input::Batch(batch), (req.id, req.outputs)))
    };
    let finish = |d: &Deployment,
                  answer: Answer,
                  (id, requested): (Option<String>, Vec<RequestedOutput>)| {
        let Answer::Batch(out) = answer else {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the call path answered no tensors (a bug)",
            ));
        };
        let outputs = response_tensors(&out, &requested)?;
        let mut resp = json!({
            "model_name": d.record.name,
            "model_version": d.record.version,
            "outputs": outputs,
        });
        if let Some(id) = id {
            resp["id"] = json!(id);
        }
        Ok(Json(resp).into_response())
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

/// Flatten nested JSON arrays (row-major) into one list of scalars.
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// The rows a tensor of `shape` holds, for shapes this mapping takes (`[N]`,
/// `[N, 1]`), checked (a negative `N`) before anything is sized from it.
fn tensor_rows(name: &str, shape: &[i64]) -> Result<usize, ApiError> {
    let n = match shape {
        [n] | [n, 1] => *n,
        other => {
            return Err(bad(format!(
                "input `{name}` has shape {other:?}; this function takes one column per tensor: [N] or [N, 1]"
            )))
        }
    };
    usize::try_from(n).map_err(|_| {
        bad(format!(
            "input `{name}` has shape {shape:?}: a dimension is negative"
        ))
    })
}

pub(crate) fn request_batch(inputs: &[InputTensor]) -> Result<Batch, ApiError> {
    if inputs.is_empty() {
        return Err(bad("the request has no inputs"));
    }
    let mut fields = Vec::with_capacity(inputs.len());
    let mut rows: Option<usize> = None;
    for t in inputs {
        let n = tensor_rows(&t.name, &t.shape)?;
        if *rows.get_or_insert(n) != n {
            return Err(bad(format!(
                "input `{}` has {n} rows, other inputs have {}",
                t.name,
                rows.unwrap_or(0)
            )));
        }
        // Sized from the data that came (bounded by the body), never from the shape.
        let mut data = Vec::new();
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

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<bool>().prop_map(|b| json!(b)),
            "[a-z]{0,4}".prop_map(|s| json!(s)),
        ]
    }

    fn tensor() -> impl Strategy<Value = InputTensor> {
        let dims = prop_oneof![
            any::<i64>(),
            -2i64..6,
            Just(i64::MAX),
            Just(i64::MIN),
            Just(1i64 << 32),
        ];
        (
            "[a-z]{1,3}",
            prop::collection::vec(dims, 0..4),
            prop_oneof![
                Just("FP32"),
                Just("FP64"),
                Just("INT64"),
                Just("UINT8"),
                Just("BOOL"),
                Just("BYTES"),
                Just("FP8")
            ],
            prop::collection::vec(scalar(), 0..6),
            any::<bool>(),
        )
            .prop_map(|(name, shape, datatype, data, nested)| InputTensor {
                name,
                shape,
                datatype: datatype.to_string(),
                data: match nested {
                    true => json!(data.chunks(2).map(|c| json!(c)).collect::<Vec<_>>()),
                    false => json!(data),
                },
                parameters: None,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any request maps to a batch or a 400, never a panic or an allocation
        /// sized from the shape; a batch has one column per tensor, each as long as
        /// the shape says and as the data holds.
        #[test]
        fn any_request_is_a_batch_or_a_400(inputs in prop::collection::vec(tensor(), 0..4)) {
            match request_batch(&inputs) {
                Err(e) => prop_assert_eq!(e.status, StatusCode::BAD_REQUEST),
                Ok(batch) => {
                    prop_assert_eq!(batch.fields.len(), inputs.len());
                    for (f, t) in batch.fields.iter().zip(&inputs) {
                        let n = crate::convert::column_len(&f.values);
                        let want: i64 = t.shape.iter().product();
                        prop_assert_eq!(n as i64, want);
                        let mut flat = Vec::new();
                        flatten(&t.data, &mut flat);
                        prop_assert_eq!(n, flat.len());
                    }
                }
            }
        }
    }

    #[test]
    fn huge_and_negative_shapes_are_refused_before_allocating() {
        for shape in [
            vec![i64::MAX],
            vec![-1],
            vec![1 << 32, 1 << 32],
            vec![i64::MAX, 1],
        ] {
            let t = InputTensor {
                name: "x".into(),
                shape: shape.clone(),
                datatype: "FP32".into(),
                data: json!([1.0]),
                parameters: None,
            };
            let e = request_batch(&[t]).unwrap_err();
            assert_eq!(
                e.status,
                StatusCode::BAD_REQUEST,
                "{shape:?}: {}",
                e.message
            );
        }
    }
}
