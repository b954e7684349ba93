//! Admin API for tenancy: tenants, quotas, grants, tokens, the audit log and usage.
//! Who may call each route is the auth layer's policy table (`auth::need`).

use super::auth::{Access, AuditDetail};
use super::{read_body, ApiError, AppState};
use crate::tenancy::{Quota, Scope, TenancyError, TenantId};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/v1/tenants", post(create_tenant).get(list_tenants))
        .route(
            "/admin/v1/tenants/{tenant}/quota",
            get(quota).put(set_quota),
        )
        .route(
            "/admin/v1/tenants/{tenant}/grants",
            post(grant).delete(revoke_grant),
        )
        .route(
            "/admin/v1/tenants/{tenant}/tokens",
            post(create_token).get(list_tokens),
        )
        .route(
            "/admin/v1/tenants/{tenant}/tokens/{id}",
            delete(revoke_token),
        )
        .route("/admin/v1/tenants/{tenant}/audit", get(tenant_audit))
        .route("/admin/v1/audit", get(platform_audit))
        .route("/admin/v1/audit/verify", get(verify_audit))
        .route("/admin/v1/tenants/{tenant}/usage", get(usage))
}

impl From<TenancyError> for ApiError {
    fn from(e: TenancyError) -> Self {
        let (status, code) = match &e {
            TenancyError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            TenancyError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            TenancyError::Conflict(_) => (StatusCode::CONFLICT, "exists"),
            TenancyError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// A small JSON body (these routes take a few fields at most).
async fn json_body<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let bytes = read_body(headers, body, 64 << 10).await?;
    if bytes.is_empty() {
        return Ok(T::default());
    }
    super::extract::json_object(&bytes)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", m))
}

/// Run a tenancy-store call off the async workers (SQLite, fsync).
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&crate::tenancy::Tenancy) -> Result<T, TenancyError> + Send + 'static,
) -> Result<T, ApiError> {
    let tenancy = state.tenancy.clone();
    tokio::task::spawn_blocking(move || f(&tenancy))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
}

async fn create_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: NewTenant = json_body(&headers, body).await?;
    let id = TenantId::parse(&req.name)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", m))?;
    let id2 = id.clone();
    blocking(&state, move |t| t.create_tenant(&id2)).await?;
    let mut resp = (StatusCode::CREATED, Json(json!({ "name": id }))).into_response();
    resp.extensions_mut().insert(AuditDetail(id.to_string()));
    Ok(resp)
}

async fn list_tenants(State(state): State<Arc<AppState>>) -> Json<Value> {
    let tenants: Vec<Value> = state
        .tenancy
        .tenants()
        .iter()
        .map(|t| json!({ "name": t.id, "quota": t.quota, "outbound": t.outbound, "signers": t.signers }))
        .collect();
    Json(json!({ "tenants": tenants }))
}

async fn quota(
    State(state): State<Arc<AppState>>,
    access: Access,
) -> Result<Json<Value>, ApiError> {
    let t = state
        .tenancy
        .tenant(access.tenant()?)
        .ok_or_else(|| super::auth::hidden(access.tenant().map_or("", |t| t.as_str())))?;
    Ok(Json(
        json!({ "tenant": t.id, "quota": t.quota, "outbound": t.outbound, "signers": t.signers }),
    ))
}

async fn set_quota(
    State(state): State<Arc<AppState>>,
    access: Access,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let change: Quota = json_body(&headers, body).await?;
    if change.feature_bytes.is_some() && state.functions.feature_store().name() != "embedded" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported",
            "feature_bytes is enforced by the embedded feature store; this host keeps features in Redis (bound them with Redis' maxmemory)",
        ));
    }
    let id = access.tenant()?.clone();
    let id2 = id.clone();
    let before = state.tenancy.tenant(&id).map(|t| t.quota.clone());
    let quota = blocking(&state, move |t| t.set_quota(&id2, &change)).await?;
    let ceilings = |q: &Quota| (q.memory, q.cpu_ms);
    if before.as_ref().map(ceilings) != Some(ceilings(&quota)) {
        state
            .functions
            .unload_tenant(&id, "quota changed: unloaded");
    }
    state
        .functions
        .feature_store()
        .set_tenant_capacity(id.as_str(), quota.feature_bytes);
    let text = serde_json::to_string(&quota).unwrap_or_default();
    let mut resp = Json(json!({ "tenant": id, "quota": quota })).into_response();
    resp.extensions_mut().insert(AuditDetail(text));
    Ok(resp)
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Grant {
    capability: String,
    pattern: String,
}

async fn grant(
    State(state): State<Arc<AppState>>,
    access: Access,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let g: Grant = json_body(&headers, body).await?;
    let id = access.tenant()?.clone();
    let id2 = id.clone();
    let pattern = g.pattern.clone();
    let body = match g.capability.as_str() {
        "outbound" => {
            let outbound = blocking(&state, move |t| t.grant_outbound(&id2, &pattern)).await?;
            json!({ "outbound": outbound })
        }
        "signer" => {
            let signers = blocking(&state, move |t| t.grant_signer(&id2, &pattern)).await?;
            // What is loaded was checked under the old policy: load it again.
            state
                .functions
                .unload_tenant(&id, "trusted signers changed: unloaded");
            json!({ "signers": signers })
        }
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("unknown capability `{other}` (grantable: outbound, signer)"),
            ))
        }
    };
    let mut resp = Json(body).into_response();
    resp.extensions_mut()
        .insert(AuditDetail(format!("{} {}", g.capability, g.pattern)));
    Ok(resp)
}

async fn revoke_grant(
    State(state): State<Arc<AppState>>,
    access: Access,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let g: Grant = json_body(&headers, body).await?;
    if g.capability != "signer" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!(
                "`{}` grants are not revocable (revocable: signer); outbound grants are checked at deploy only",
                g.capability
            ),
        ));
    }
    let id = access.tenant()?.clone();
    let (id2, key) = (id.clone(), g.pattern.clone());
    let signers = blocking(&state, move |t| t.revoke_signer(&id2, &key)).await?;
    // What is loaded was checked under the old policy: load it again.
    state
        .functions
        .unload_tenant(&id, "trusted signers changed: unloaded");
    let mut resp = Json(json!({ "signers": signers })).into_response();
    resp.extensions_mut()
        .insert(AuditDetail(format!("signer {}", g.pattern)));
    Ok(resp)
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewToken {
    scope: Option<Scope>,
    /// Seconds from now.
    expires_in: Option<u64>,
}

async fn create_token(
    State(state): State<Arc<AppState>>,
    access: Access,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: NewToken = json_body(&headers, body).await?;
    let scope = req.scope.unwrap_or(Scope::Invoke);
    let tenant = access.tenant()?.clone();
    let expires_at = req
        .expires_in
        .map(|s| crate::tenancy::now_secs().saturating_add(s));
    let (info, token) = blocking(&state, move |t| {
        t.create_token(Some(&tenant), scope, expires_at)
    })
    .await?;
    let detail = format!("{} scope={}", info.id, info.scope.as_str());
    let mut resp = (
        StatusCode::CREATED,
        Json(json!({ "token": token, "info": info })),
    )
        .into_response();
    resp.extensions_mut().insert(AuditDetail(detail));
    Ok(resp)
}

async fn list_tokens(
    State(state): State<Arc<AppState>>,
    access: Access,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    let tokens = blocking(&state, move |t| t.list_tokens(Some(&tenant))).await?;
    Ok(Json(json!({ "tokens": tokens })))
}

async fn revoke_token(
    State(state): State<Arc<AppState>>,
    access: Access,
    super::extract::Path((_, id)): super::extract::Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    let info = blocking(&state, move |t| t.revoke_token(&id, Some(&tenant))).await?;
    Ok(Json(json!({ "revoked": info })))
}

#[derive(serde::Deserialize, Default)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn tenant_audit(
    State(state): State<Arc<AppState>>,
    access: Access,
    super::extract::Query(q): super::extract::Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    let limit = q.limit.unwrap_or(1000);
    let entries = blocking(&state, move |t| t.audit_log(Some(&tenant), limit)).await?;
    Ok(Json(json!({ "entries": entries })))
}

async fn platform_audit(
    State(state): State<Arc<AppState>>,
    super::extract::Query(q): super::extract::Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(1000);
    let entries = blocking(&state, move |t| t.audit_log(None, limit)).await?;
    Ok(Json(json!({ "entries": entries })))
}

async fn verify_audit(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(blocking(&state, |t| t.audit_verify()).await?)))
}

async fn usage(
    State(state): State<Arc<AppState>>,
    access: Access,
) -> Result<Json<Value>, ApiError> {
    let id = access.tenant()?.clone();
    let tenant = state
        .tenancy
        .tenant(&id)
        .ok_or_else(|| super::auth::hidden(id.as_str()))?;
    let t = id.to_string();
    let stored = state
        .functions
        .registry_call(move |r| r.index().tenant_bytes(&t))
        .await?;
    let features = state.functions.feature_store().tenant_bytes(id.as_str());
    Ok(Json(json!({
        "tenant": id,
        "usage": tenant.usage.snapshot(),
        "registry_bytes": stored,
        "feature_bytes": features,
    })))
}

fn quota_error(e: crate::tenancy::QuotaExceeded) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "quota_exceeded",
        e.to_string(),
    )
}

/// A deploy within the tenant's quotas and grants: memory and time ceilings,
/// function count, registry bytes, outbound HTTP. (Two deploys racing may both
/// pass the count and bytes checks: the quota bounds growth, not to the byte.)
pub(super) async fn check_deploy(
    state: &AppState,
    tenant: &TenantId,
    manifest: &crate::manifest::Manifest,
    component: Option<&[u8]>,
) -> Result<(), ApiError> {
    let t = state
        .tenancy
        .tenant(tenant)
        .ok_or_else(|| super::auth::hidden(tenant.as_str()))?;
    let invalid = |e: anyhow::Error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_manifest",
            format!("{e:#}"),
        )
    };
    let limits = manifest.limits().map_err(invalid)?;
    t.quota
        .check_memory(limits.memory_bytes)
        .map_err(quota_error)?;
    t.quota.check_timeout(limits.timeout).map_err(quota_error)?;
    crate::capability::check_all(manifest, &t)
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "capability_denied", m))?;
    if let Some(max) = t.quota.max_functions {
        let (id, name) = (tenant.to_string(), manifest.function.name.clone());
        let (names, exists) = state
            .functions
            .registry_call(move |r| {
                let serving = r.index().list_serving(&id)?;
                let exists = serving.iter().any(|v| v.name == name);
                Ok((serving.len() as u64, exists))
            })
            .await?;
        if !exists && names >= max {
            return Err(quota_error(crate::tenancy::QuotaExceeded {
                quota: "max_functions",
                detail: format!("the tenant has {names} functions, the most it may have"),
            }));
        }
    }
    check_stored(state, &t, component.map_or(0, |c| c.len() as u64)).await
}

/// Does an upload of `size` bytes (a component or a model) fit the tenant's
/// `registry_bytes`? Call it holding [`deploy_turn`].
pub(super) async fn check_stored(
    state: &AppState,
    t: &crate::tenancy::Tenant,
    size: u64,
) -> Result<(), ApiError> {
    let Some(max) = t.quota.registry_bytes else {
        return Ok(());
    };
    let id = t.id.to_string();
    let bytes = state
        .functions
        .registry_call(move |r| r.index().tenant_bytes(&id))
        .await?;
    if bytes + size > max {
        return Err(quota_error(crate::tenancy::QuotaExceeded {
            quota: "registry_bytes",
            detail: format!(
                "the tenant stores {bytes} bytes; this upload adds {size} and the quota is {max}"
            ),
        }));
    }
    Ok(())
}

/// A tenant's turn to publish: held from its quota checks to the publish, so that
/// racing uploads of one tenant cannot together pass its quotas.
pub(super) async fn deploy_turn(
    state: &AppState,
    tenant: &TenantId,
) -> Result<
    (
        std::sync::Arc<crate::tenancy::Tenant>,
        tokio::sync::OwnedMutexGuard<()>,
    ),
    ApiError,
> {
    let t = state
        .tenancy
        .tenant(tenant)
        .ok_or_else(|| super::auth::hidden(tenant.as_str()))?;
    let turn = t.deploys.clone().lock_owned().await;
    Ok((t, turn))
}
