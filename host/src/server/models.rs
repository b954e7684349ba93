//! Admin API for models: push (multipart `metadata` JSON + `model` bytes), list, versions.

use super::extract::Path;
use super::{read_part, upload_error, Access, ApiError, AppState};
use crate::functions::MAX_MODEL_SIZE;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use quiver_registry::{PublishOutcome, VersionRecord};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/v1/tenants/{tenant}/models", post(push).get(list))
        .route(
            "/admin/v1/tenants/{tenant}/models/{name}/versions",
            get(versions),
        )
        .route(
            "/admin/v1/tenants/{tenant}/models/{name}/versions/{version}",
            axum::routing::delete(remove),
        )
        .route(
            "/admin/v1/tenants/{tenant}/models/{name}/aliases",
            get(aliases),
        )
        .route(
            "/admin/v1/tenants/{tenant}/models/{name}/aliases/{alias}",
            axum::routing::put(move_alias),
        )
        .route(
            "/admin/v1/tenants/{tenant}/models/{name}/rollouts",
            post(start_rollout).get(rollouts),
        )
        .route(
            "/admin/v1/tenants/{tenant}/models/{name}/rollouts/abort",
            post(abort_rollout),
        )
        .layer(DefaultBodyLimit::max(PUSH_LIMIT))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutBody {
    /// The candidate version.
    version: String,
    #[serde(default)]
    reason: String,
    /// The analysis (steps, interval, conditions); defaults for what is absent.
    #[serde(default)]
    analysis: crate::rollout::RolloutSection,
}

fn body_error(e: axum::extract::rejection::JsonRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text())
}

fn check_reason(reason: &str) -> Result<(), ApiError> {
    match reason.len() > quiver_registry::MAX_ALIAS_REASON {
        true => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!(
                "a reason is at most {} bytes",
                quiver_registry::MAX_ALIAS_REASON
            ),
        )),
        false => Ok(()),
    }
}

/// `POST …/models/{name}/rollouts` `{"version", "reason"?, "analysis"?}`: roll the
/// version out against where the analysis' alias (`champion`) points, step by
/// step; the analysis promotes it or rolls it back (409 while one runs).
async fn start_rollout(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name)): Path<(String, String)>,
    body: Result<Json<RolloutBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant = access.tenant()?.clone();
    check_model_name(&name)?;
    let Json(b) = body.map_err(body_error)?;
    super::check_version(&b.version)?;
    check_reason(&b.reason)?;
    let rec = state
        .functions
        .start_rollout(
            tenant.as_str(),
            &name,
            &b.version,
            &b.analysis,
            &access.actor(),
            &b.reason,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(crate::functions::describe_rollout(&rec, &[])),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AbortBody {
    #[serde(default)]
    reason: String,
}

/// `POST …/models/{name}/rollouts/abort` `{"reason"?}`: end the running rollout;
/// the alias stays where it was.
async fn abort_rollout(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name)): Path<(String, String)>,
    body: Result<Json<AbortBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    check_model_name(&name)?;
    let Json(b) = body.map_err(body_error)?;
    check_reason(&b.reason)?;
    let rec = state
        .functions
        .abort_rollout(tenant.as_str(), &name, &access.actor(), &b.reason)
        .await?;
    Ok(Json(crate::functions::describe_rollout(&rec, &[])))
}

/// `GET …/models/{name}/rollouts`: the newest rollouts, each with every judged step.
async fn rollouts(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    check_model_name(&name)?;
    let all = state
        .functions
        .rollout_history(tenant.as_str(), &name, 20)
        .await?;
    Ok(Json(json!({ "name": name, "rollouts": all })))
}

/// A push's whole body: the model and room for its metadata.
const PUSH_LIMIT: usize = MAX_MODEL_SIZE + (1 << 20);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PushMetadata {
    name: String,
    version: String,
    /// Where the model came from: training dataset digest, trainer function
    /// version, metrics... kept as given.
    #[serde(default)]
    lineage: Option<Value>,
}

/// 404 for a model with no versions.
fn exists(name: &str, versions: &[VersionRecord]) -> Result<(), ApiError> {
    match versions.is_empty() {
        true => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("model `{name}` not found"),
        )),
        false => Ok(()),
    }
}

/// A model name from a client: refused with 400 `invalid_name`, like function names.
fn check_model_name(name: &str) -> Result<(), ApiError> {
    quiver_registry::check_model_name(name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", e.to_string()))
}

/// A model version as the API shows it: the record plus its stored metadata.
pub fn model_json(r: &VersionRecord) -> Value {
    let meta: Value = serde_json::from_str(&r.manifest).unwrap_or(Value::Null);
    json!({
        "name": r.name, "version": r.version, "digest": r.digest, "size": r.size,
        "created_at": r.created_at, "format": r.world,
        "inputs": meta["inputs"], "outputs": meta["outputs"], "lineage": meta["lineage"],
    })
}

async fn push(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path(_): Path<String>,
    headers: axum::http::HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let tenant = access.tenant()?.clone();
    super::check_declared(&headers, PUSH_LIMIT)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_upload", m);
    let mut multipart = multipart.map_err(|e| {
        bad(format!(
            "expected multipart/form-data with `metadata` and `model` parts: {e}"
        ))
    })?;
    let (mut meta, mut model) = (None, None);
    while let Some(field) = multipart.next_field().await.map_err(upload_error)? {
        match field.name() {
            Some("metadata") => {
                meta = Some(read_part(field, "metadata", super::MAX_MANIFEST_SIZE).await?)
            }
            Some("model") => model = Some(read_part(field, "model", MAX_MODEL_SIZE).await?),
            other => return Err(bad(format!("unexpected part {other:?}"))),
        }
    }
    let meta: PushMetadata = super::extract::json_object(
        &meta.ok_or_else(|| bad("missing the `metadata` part".into()))?,
    )
    .map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("metadata: {e}"),
        )
    })?;
    let model = model.ok_or_else(|| bad("missing the `model` part".into()))?;
    super::check_version(&meta.version)?;
    check_model_name(&meta.name)?;
    let (t, _turn) = super::tenants::deploy_turn(&state, &tenant).await?;
    super::tenants::check_stored(&state, &t, model.len() as u64).await?;
    let (record, outcome, _) = state
        .functions
        .push_model(&tenant, &meta.name, &meta.version, meta.lineage, model)
        .await
        .map_err(|e| match e {
            crate::functions::DeployError::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_model", m)
            }
            other => other.into(),
        })?;
    let status = match outcome {
        PublishOutcome::Created => StatusCode::CREATED,
        PublishOutcome::Unchanged => StatusCode::OK,
    };
    let mut body = model_json(&record);
    body["unchanged"] = json!(outcome == PublishOutcome::Unchanged);
    Ok((status, Json(body)).into_response())
}

async fn list(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path(_): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    let t = tenant.clone();
    let models = state
        .functions
        .registry_call(move |r| r.list_models(t.as_str()))
        .await?;
    Ok(Json(
        json!({ "models": models.iter().map(model_json).collect::<Vec<_>>() }),
    ))
}

async fn remove(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name, version)): Path<(String, String, String)>,
    super::extract::Query(q): super::extract::Query<super::ForceQuery>,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    check_model_name(&name)?;
    super::check_version(&version)?;
    let rec = state
        .functions
        .remove_model(&tenant, &name, &version, q.force)
        .await
        .map_err(super::delete_error)?;
    Ok(Json(
        json!({ "name": name, "deleted": rec.version, "digest": rec.digest }),
    ))
}

async fn versions(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    check_model_name(&name)?;
    let (t, n) = (tenant.clone(), name.clone());
    let versions = state
        .functions
        .registry_call(move |r| r.model_versions(t.as_str(), &n))
        .await?;
    exists(&name, &versions)?;
    Ok(Json(json!({
        "name": name,
        "versions": versions.iter().map(model_json).collect::<Vec<_>>(),
    })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasMoveBody {
    version: String,
    #[serde(default)]
    reason: String,
}

/// `PUT …/models/{name}/aliases/{alias}` `{"version", "reason"?}`: point the alias at
/// the version (which must exist); the move is kept in the alias history.
async fn move_alias(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name, alias)): Path<(String, String, String)>,
    body: Result<Json<AliasMoveBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    check_model_name(&name)?;
    quiver_registry::check_alias(&alias)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_alias", e.to_string()))?;
    let Json(b) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text()))?;
    super::check_version(&b.version)?;
    if b.reason.len() > quiver_registry::MAX_ALIAS_REASON {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!(
                "a reason is at most {} bytes",
                quiver_registry::MAX_ALIAS_REASON
            ),
        ));
    }
    let moved = state
        .functions
        .move_model_alias(
            tenant.as_str(),
            &name,
            &alias,
            &b.version,
            &access.actor(),
            &b.reason,
        )
        .await?;
    Ok(Json(json!({
        "name": name,
        "alias": alias,
        "version": b.version,
        "moved": moved,
    })))
}

/// `GET …/models/{name}/aliases`: where each alias points, and every move, oldest first.
async fn aliases(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    check_model_name(&name)?;
    let (t, n) = (tenant.clone(), name.clone());
    let (versions, aliases, history) = state
        .functions
        .registry_call(move |r| {
            Ok((
                r.model_versions(t.as_str(), &n)?,
                r.model_aliases(t.as_str(), &n)?,
                r.alias_history(t.as_str(), &n)?,
            ))
        })
        .await?;
    exists(&name, &versions)?;
    let current: serde_json::Map<String, Value> = aliases
        .into_iter()
        .map(|(a, v)| (a, Value::String(v)))
        .collect();
    Ok(Json(
        json!({ "name": name, "aliases": current, "history": history }),
    ))
}
