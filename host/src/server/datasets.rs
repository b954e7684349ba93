//! Labelled feedback and the dataset store's read side.
//!
//! - `POST /fn/{tenant}/{name}/feedback`: labels for earlier predictions, each
//!   `{"request_id", "row" (default 0), "label"}` (a JSON array, or `{"labels": [...]}`),
//!   at most [`MAX_LABELS`] a request. `request_id` is the `x-quiver-request-id` its
//!   prediction answered with. Answers how many were stored and how many matched a
//!   logged prediction (a label may arrive before its prediction is written: it is
//!   kept and joins when the prediction lands).
//! - `GET /admin/v1/tenants/{tenant}/datasets/{name}?since=7d&labelled=true&limit=N`:
//!   the rows a trainer's `quiver:ml/datasets.read` gets (what `quiver datasets read`
//!   prints).

use super::extract::Path;
use super::{read_body, Access, ApiError, AppState};
use crate::datasets::{parse_label, Query as ReadQuery, MAX_LABELS, MAX_READ_ROWS};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

/// A feedback body: 10 000 labels of up to ~1 KiB each, with room to spare.
const MAX_FEEDBACK_BODY: usize = 16 << 20;
/// The longest window a read may ask for.
const MAX_SINCE: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/fn/{tenant}/{name}/feedback", post(feedback))
        .route("/admin/v1/tenants/{tenant}/datasets/{name}", get(read))
}

use crate::unix_ms as now_ms;

fn bad(code: &'static str, m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, m.into())
}

fn storage(e: anyhow::Error) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage",
        format!("the dataset store failed: {e:#}"),
    )
}

/// The function's serving deployment, which must log its predictions.
async fn logging_function(
    state: &AppState,
    access: &Access,
    name: &str,
) -> Result<String, ApiError> {
    let target = access.function(name)?;
    if target.version().is_some() {
        return Err(bad(
            "invalid_name",
            "feedback and datasets belong to a function, not to one version: drop the @version",
        ));
    }
    let d = state.functions.get(&target).await?;
    if d.log.is_none() {
        return Err(bad(
            "not_logged",
            format!(
                "`{}` does not log its predictions: set [datasets] log = true in its manifest and deploy it",
                d.record.name
            ),
        ));
    }
    Ok(d.record.name.clone())
}

async fn feedback(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    let function = logging_function(&state, &access, &name).await?;
    let body = read_body(&headers, body, MAX_FEEDBACK_BODY).await?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| bad("invalid_json", format!("the feedback is not JSON: {e}")))?;
    let items =
        match v {
            Value::Array(items) => items,
            Value::Object(mut o) if o.len() == 1 && o.contains_key("labels") => {
                match o.remove("labels") {
                    Some(Value::Array(items)) => items,
                    _ => return Err(bad("invalid_feedback", "`labels` must be an array")),
                }
            }
            _ => return Err(bad(
                "invalid_feedback",
                "send an array of {\"request_id\", \"row\", \"label\"} (or {\"labels\": [...]})",
            )),
        };
    if items.is_empty() {
        return Err(bad("invalid_feedback", "no labels"));
    }
    if items.len() > MAX_LABELS {
        return Err(bad(
            "too_many_labels",
            format!(
                "{} labels in one request; send at most {MAX_LABELS} at a time",
                items.len()
            ),
        ));
    }
    let labels = items
        .iter()
        .enumerate()
        .map(|(i, v)| parse_label(v, i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| bad("invalid_label", m))?;
    let stored = labels.len();
    let matched = state
        .functions
        .datasets()
        .label(tenant.as_str(), &function, labels, now_ms())
        .await
        .map_err(storage)?;
    Ok(Json(
        json!({ "tenant": tenant, "function": function, "stored": stored, "matched": matched }),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    since: Option<String>,
    labelled: Option<bool>,
    limit: Option<usize>,
}

async fn read(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name)): Path<(String, String)>,
    params: Result<Query<ReadParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    let Query(p) = params.map_err(|e| bad("invalid_query", e.body_text()))?;
    let since = match p.since.as_deref() {
        None => std::time::Duration::from_secs(7 * 86_400),
        Some(s) => humantime::parse_duration(s)
            .map_err(|e| bad("invalid_query", format!("`since` is not a duration: {e}")))?,
    };
    if since > MAX_SINCE {
        return Err(bad("invalid_query", "`since` is at most 366d"));
    }
    let limit = p.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_READ_ROWS {
        return Err(bad(
            "invalid_query",
            format!("`limit` is 1 to {MAX_READ_ROWS}"),
        ));
    }
    let function = logging_function(&state, &access, &name).await?;
    let query = ReadQuery {
        function: function.clone(),
        since_ms: since.as_millis() as u64,
        labelled_only: p.labelled.unwrap_or(false),
        limit,
    };
    let rows = state
        .functions
        .datasets()
        .read(tenant.as_str(), &query, now_ms())
        .await
        .map_err(storage)?;
    Ok(Json(
        json!({ "tenant": tenant, "function": function, "rows": rows }),
    ))
}
