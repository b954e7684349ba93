//! `PUT /admin/v1/tenants/{tenant}/functions/{name}/traffic` `{"split": {"1.2.0": 90,
//! "1.3.0": 10}}` (`{"split": {}}` clears it) and `GET` of the same: a function's
//! traffic split (what `quiver traffic` sets and shows). `GET` also compares the
//! versions (calls, errors, latency p50/p99, prediction distributions per model
//! version) from this host's metrics: the canary comparison.

use super::extract::Path;
use super::{Access, ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route(
        "/admin/v1/tenants/{tenant}/functions/{name}/traffic",
        get(show).put(set),
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitBody {
    split: BTreeMap<String, u32>,
}

fn answer(name: &str, split: Vec<(String, u32)>) -> Json<Value> {
    let split: serde_json::Map<String, Value> =
        split.into_iter().map(|(v, w)| (v, json!(w))).collect();
    Json(json!({ "name": name, "split": split }))
}

async fn set(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name)): Path<(String, String)>,
    body: Result<Json<SplitBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    super::check_name("function", &name)?;
    let Json(b) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text()))?;
    if b.split.len() > quiver_registry::MAX_SPLIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_split",
            format!(
                "a split names at most {} versions",
                quiver_registry::MAX_SPLIT
            ),
        ));
    }
    for (version, weight) in &b.split {
        super::check_version(version)?;
        if *weight == 0 || *weight > 1_000_000 {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_split",
                format!("{version}: a weight is 1 to 1000000"),
            ));
        }
    }
    let weights: Vec<(String, u32)> = b.split.into_iter().collect();
    state
        .functions
        .set_traffic(tenant.as_str(), &name, weights)
        .await?;
    let now = state.functions.traffic(tenant.as_str(), &name).await?;
    Ok(answer(&name, now))
}

async fn show(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    super::check_name("function", &name)?;
    state
        .functions
        .resolve(tenant.as_str(), &name, None)
        .await?;
    let split = state.functions.traffic(tenant.as_str(), &name).await?;
    let Json(mut body) = answer(&name, split);
    // The canary comparison: how each version has done on this host.
    body["compare"] = state.metrics.compare(tenant.as_str(), &name);
    Ok(Json(body))
}
