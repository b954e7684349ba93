//! `POST /events/{tenant}/{topic}`: a client publishes an event to its tenant's
//! topic. The event is durable when the answer (202, with its id) comes back; a
//! topic nobody subscribes to keeps it (until the trim policy's age or length).
//! `GET …/dlq` lists the dead events of the topic's subscribers (with the reason
//! and the attempt count); `POST …/replay` gives them back to their subscriber.

use super::extract::Path;
use super::{read_body, Access, ApiError, AppState};
use crate::events::{EventError, Group, NewEvent, MAX_PAYLOAD};
use crate::trace::TraceContext;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/events/{tenant}/{topic}", post(publish))
        .route("/events/{tenant}/{topic}/dlq", get(dead))
        .route("/events/{tenant}/{topic}/replay", post(replay))
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", m),
            EventError::NotLeased(m) => ApiError::new(StatusCode::CONFLICT, "not_leased", m),
            EventError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m).retry_after(1)
            }
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                other.to_string(),
            ),
        }
    }
}

async fn publish(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, topic)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = access.tenant()?.clone();
    crate::events::check_topic(&topic)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_topic", m))?;
    let payload = read_body(&headers, body, MAX_PAYLOAD).await?;
    let content_type = super::content_type(&headers).to_string();
    if content_type.starts_with("application/json") {
        serde_json::from_slice::<serde_json::Value>(&payload).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the event is declared JSON and is not: {e}"),
            )
        })?;
    }
    let event = NewEvent {
        content_type,
        payload: payload.to_vec(),
        source: None,
        traceparent: super::traceparent(&headers)
            .and_then(|h| TraceContext::parse(&h))
            .map(|c| c.to_string()),
    };
    let id = state.events.publish(&tenant, &topic, event).await?;
    crate::metrics::HOST_CALLS
        .events_published
        .with_label_values(&[tenant.as_str(), "api"])
        .inc();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "tenant": tenant, "topic": topic, "id": id })),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadQuery {
    function: Option<String>,
    limit: Option<usize>,
}

/// The most dead events one listing returns.
const MAX_LISTED: usize = 1000;

fn topic_of(topic: &str) -> Result<(), ApiError> {
    crate::events::check_topic(topic)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_topic", m))
}

/// The groups asked for: one named function, or every subscriber of the topic.
async fn groups(
    state: &AppState,
    tenant: &crate::tenancy::TenantId,
    topic: &str,
    function: Option<&str>,
) -> Result<Vec<Group>, ApiError> {
    let names = match function {
        Some(f) => {
            super::check_name("function", f)?;
            vec![f.to_string()]
        }
        None => state.events.groups(tenant, topic).await?,
    };
    Ok(names
        .into_iter()
        .map(|name| Group {
            tenant: tenant.clone(),
            topic: topic.to_string(),
            name,
        })
        .collect())
}

async fn dead(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, topic)): Path<(String, String)>,
    query: Result<Query<DeadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    topic_of(&topic)?;
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LISTED);
    let mut out = Vec::new();
    for g in groups(&state, &tenant, &topic, q.function.as_deref()).await? {
        for d in state.events.dead(&g, limit).await? {
            let e = &d.event;
            let mut item = json!({
                "id": e.id, "function": g.name, "attempts": e.attempt, "reason": d.reason,
                "time_ms": e.time_ms, "content_type": e.event.content_type,
                "source": e.event.source, "traceparent": e.event.traceparent,
                "bytes": e.event.payload.len(),
            });
            let json = e.event.content_type.starts_with("application/json");
            match (json, std::str::from_utf8(&e.event.payload)) {
                (true, Ok(text)) => match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(v) => item["payload"] = v,
                    Err(_) => item["payload_text"] = json!(text),
                },
                (false, Ok(text)) => item["payload_text"] = json!(text),
                (_, Err(_)) => {}
            }
            out.push(item);
        }
    }
    Ok(Json(
        json!({ "tenant": tenant, "topic": topic, "dead": out }),
    ))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    function: Option<String>,
    ids: Option<Vec<String>>,
}

async fn replay(
    State(state): State<Arc<AppState>>,
    access: Access,
    Path((_, topic)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = access.tenant()?.clone();
    topic_of(&topic)?;
    let body = read_body(&headers, body, 1 << 20).await?;
    let req: ReplayBody = match body.is_empty() {
        true => ReplayBody::default(),
        false => super::extract::json_object(&body)
            .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", m))?,
    };
    if req.ids.as_ref().is_some_and(|ids| ids.len() > 10_000) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_many_ids",
            "at most 10000 ids at once",
        ));
    }
    let mut replayed = 0;
    for g in groups(&state, &tenant, &topic, req.function.as_deref()).await? {
        replayed += state.events.replay(&g, req.ids.as_deref()).await?;
    }
    Ok(Json(
        json!({ "tenant": tenant, "topic": topic, "replayed": replayed }),
    ))
}
