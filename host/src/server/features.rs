//! Admin API for features: backfill rows into one of a tenant's feature groups.

use super::extract::Path;
use super::{check_name, Access, ApiError, AppState};
use crate::features::{check_values, EntityKey, FeatureError, Value, MAX_ENTITY_LEN};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::json;
use std::sync::Arc;

/// The most rows one backfill request may carry (`quiver features load` sends
/// batches of 500 by default).
pub const MAX_BACKFILL_ROWS: usize = 10_000;
/// The largest backfill body (a bound on what parsing it can allocate).
pub const MAX_BACKFILL_BODY: usize = 16 << 20;

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

fn feature_error(row: Option<usize>, e: FeatureError) -> ApiError {
    let at = row.map(|r| format!("row {r}: ")).unwrap_or_default();
    match e {
        FeatureError::Invalid(m) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_features",
            format!("{at}{m}"),
        ),
        FeatureError::LimitExceeded(m) if row.is_some() => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{at}{m}"),
        ),
        // The tenant's budget in the store, not the request's size.
        FeatureError::LimitExceeded(m) => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "limit_exceeded", m)
        }
        FeatureError::Unavailable(m) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "features_unavailable", m)
        }
    }
}

/// Backfill: write rows of features into one group of the tenant (the admin API is
/// trusted with all of a tenant's groups; functions only reach their declared ones).
/// Every row is checked before anything is written: a request refused for its
/// input writes nothing.
pub(super) async fn load_features(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, group)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    check_name("feature group", &group.replace('_', "-"))?;
    let body = super::read_body(&headers, body, MAX_BACKFILL_BODY).await?;
    let req: FeatureRows = super::extract::json_object(&body)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", m))?;
    if req.rows.len() > MAX_BACKFILL_ROWS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "{} rows in one request; the limit is {MAX_BACKFILL_ROWS} (send batches)",
                req.rows.len()
            ),
        ));
    }
    let invalid = |row: usize, m: String| feature_error(Some(row), FeatureError::Invalid(m));
    let mut parsed = Vec::with_capacity(req.rows.len());
    for (i, row) in req.rows.into_iter().enumerate() {
        if row.entity.is_empty() || row.entity.len() > MAX_ENTITY_LEN {
            return Err(invalid(
                i + 1,
                format!("entity must be 1 to {MAX_ENTITY_LEN} bytes"),
            ));
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
                    return Err(invalid(
                        i + 1,
                        format!("`{name}` is {other}, not a number, string or bool"),
                    ))
                }
            };
            values.push((name, v));
        }
        check_values(&values).map_err(|e| feature_error(Some(i + 1), e))?;
        parsed.push((row.entity, values));
    }
    let store = state.functions.feature_store();
    let ttl = req.ttl_ms.map(std::time::Duration::from_millis);
    for (i, (entity, values)) in parsed.iter().enumerate() {
        let key = EntityKey {
            tenant: tenant.to_string(),
            group: group.clone(),
            entity: entity.clone(),
        };
        // Rows are written in order: one the store refuses (its budget, Redis down)
        // stops the request, and the answer says how many rows before it were written.
        store.put(&key, values, ttl).await.map_err(|e| {
            let mut e = feature_error(None, e);
            e.message = format!(
                "row {}: {} ({i} rows before it were written)",
                i + 1,
                e.message
            );
            e
        })?;
    }
    Ok(Json(json!({ "group": group, "written": parsed.len() })))
}
