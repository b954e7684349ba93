//! Admin API for features: backfill rows into one of a tenant's feature groups.

use super::{check_name, ApiError, AppState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::json;
use std::sync::Arc;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureRows {
    /// Expire each written entity this long after the write (none: no expiry).
    ttl_ms: Option<u64>,
    rows: Vec<FeatureRow>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureRow {
    entity: String,
    values: serde_json::Map<String, serde_json::Value>,
}

/// Backfill: write rows of features into one group of the tenant (the admin API is
/// trusted with all of a tenant's groups; functions only reach their declared ones).
pub(super) async fn load_features(
    State(state): State<Arc<AppState>>,
    Path((tenant, group)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::features::{EntityKey, Value};
    check_name("tenant", &tenant)?;
    check_name("feature group", &group.replace('_', "-"))?;
    let req: FeatureRows = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?;
    let bad = |row: usize, m: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_features",
            format!("row {row}: {m}"),
        )
    };
    let mut parsed = Vec::with_capacity(req.rows.len());
    for (i, row) in req.rows.into_iter().enumerate() {
        if row.entity.is_empty() || row.entity.len() > crate::features::MAX_ENTITY_LEN {
            return Err(bad(i + 1, "entity must be 1 to 512 bytes".into()));
        }
        let mut values = Vec::with_capacity(row.values.len());
        for (name, v) in row.values {
            let v = match v {
                serde_json::Value::Bool(b) => Value::Bool(b),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => Value::I64(i),
                    None => Value::F64(n.as_f64().unwrap_or(f64::NAN)),
                },
                serde_json::Value::String(s) => Value::Text(s),
                other => {
                    return Err(bad(
                        i + 1,
                        format!("`{name}` is {other}, not a number, string or bool"),
                    ))
                }
            };
            values.push((name, v));
        }
        parsed.push((row.entity, values));
    }
    let store = state.functions.feature_store();
    let ttl = req.ttl_ms.map(std::time::Duration::from_millis);
    for (entity, values) in &parsed {
        let key = EntityKey {
            tenant: tenant.clone(),
            group: group.clone(),
            entity: entity.clone(),
        };
        store.put(&key, values, ttl).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "features_unavailable",
                e.to_string(),
            )
        })?;
    }
    Ok(Json(json!({ "group": group, "written": parsed.len() })))
}
