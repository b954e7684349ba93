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

/// `split` replaces the split (absent: left as it is); `shadow` a version to
/// mirror calls to, `null` to end it (absent: left as it is).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitBody {
    split: Option<BTreeMap<String, u32>>,
    #[serde(default, deserialize_with = "present")]
    shadow: Option<Value>,
}

/// A field that is there, `null` included (absent is the default, `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    <Value as serde::Deserialize>::deserialize(d).map(Some)
}

fn answer(name: &str, split: Vec<(String, u32)>, shadow: Option<&str>) -> Json<Value> {
    let split: serde_json::Map<String, Value> =
        split.into_iter().map(|(v, w)| (v, json!(w))).collect();
    Json(json!({ "name": name, "split": split, "shadow": shadow }))
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
    let shadow = match &b.shadow {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(v)) => {
            super::check_version(v)?;
            Some(Some(v.clone()))
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "`shadow` is a version or null",
            ))
        }
    };
    if b.split.is_none() && shadow.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "give `split` (versions and weights), `shadow` (a version or null), or both",
        ));
    }
    let replace = b.split.is_some();
    let split = b.split.unwrap_or_default();
    if split.len() > quiver_registry::MAX_SPLIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_split",
            format!(
                "a split names at most {} versions",
                quiver_registry::MAX_SPLIT
            ),
        ));
    }
    for (version, weight) in &split {
        super::check_version(version)?;
        if *weight == 0 || *weight > 1_000_000 {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_split",
                format!("{version}: a weight is 1 to 1000000"),
            ));
        }
    }
    // The shadow's version must exist before anything changes.
    if let Some(Some(v)) = &shadow {
        state
            .functions
            .resolve(tenant.as_str(), &name, Some(v))
            .await?;
    }
    if replace {
        let weights: Vec<(String, u32)> = split.into_iter().collect();
        state
            .functions
            .set_traffic(tenant.as_str(), &name, weights)
            .await?;
    }
    if let Some(shadow) = shadow {
        state
            .functions
            .set_shadow(tenant.as_str(), &name, shadow)
            .await?;
    }
    let now = state.functions.traffic(tenant.as_str(), &name).await?;
    let shadow = state.functions.shadow(tenant.as_str(), &name).await?;
    Ok(answer(&name, now, shadow.as_deref()))
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
    let shadow = state.functions.shadow(tenant.as_str(), &name).await?;
    let Json(mut body) = answer(&name, split, shadow.as_deref());
    // The canary comparison: how each version has done on this host.
    body["compare"] = state.metrics.compare(tenant.as_str(), &name);
    Ok(Json(body))
}
