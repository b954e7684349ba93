//! `GET /admin/v1/tenants/{tenant}/monitors/{name}/reports?limit=N`: a monitor's
//! report windows, newest first (what `quiver monitor reports` prints).

use super::extract::Path;
use super::{Access, ApiError, AppState};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route(
        "/admin/v1/tenants/{tenant}/monitors/{name}/reports",
        get(reports),
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportsQuery {
    limit: Option<usize>,
}

async fn reports(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name)): Path<(String, String)>,
    query: Result<Query<ReportsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    if !crate::tenancy::valid_name(&name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            "a function name is 1-64 characters of a-z, 0-9 and '-'",
        ));
    }
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(24);
    let windows = windows(&state, tenant.as_str(), &name, limit).await?;
    Ok(Json(
        json!({ "tenant": tenant, "monitor": name, "windows": windows }),
    ))
}

/// A monitor's newest report windows (at most `limit`), newest first.
pub(super) async fn windows(
    state: &AppState,
    tenant: &str,
    monitor: &str,
    limit: usize,
) -> Result<Vec<crate::monitors::Window>, ApiError> {
    state
        .functions
        .reports()
        .list(tenant, monitor, limit)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                format!("reading reports: {e:#}"),
            )
        })
}
