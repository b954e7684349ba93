//! `GET /admin/v1/tenants/{tenant}/functions/{name}/logs?after=SEQ&limit=N`: a
//! function's newest output and log lines, oldest first, with `next` (the `after`
//! that continues where this read ended: what `quiver logs --follow` polls with).

use super::extract::Path;
use super::{Access, ApiError, AppState};
use crate::logs::MAX_READ;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route(
        "/admin/v1/tenants/{tenant}/functions/{name}/logs",
        get(logs),
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn logs(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name)): Path<(String, String)>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_READ {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("`limit` is 1 to {MAX_READ}"),
        ));
    }
    // A function of the tenant's (404 otherwise, as for any other of its routes).
    let target = access.function(&name)?;
    state
        .functions
        .resolve(tenant.as_str(), target.name(), None)
        .await?;
    let after = q.after.unwrap_or(0);
    let lines = state
        .functions
        .logs()
        .read(tenant.as_str(), target.name(), after, limit);
    let next = lines.last().map_or(after, |l| l.seq);
    Ok(Json(
        json!({ "tenant": tenant, "function": target.name(), "lines": lines, "next": next }),
    ))
}
