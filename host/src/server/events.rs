//! `POST /events/{tenant}/{topic}`: a client publishes an event to its tenant's
//! topic. The event is durable when the answer (202, with its id) comes back; a
//! topic nobody subscribes to keeps it.

use super::extract::Path;
use super::{read_body, Access, ApiError, AppState};
use crate::events::{EventError, NewEvent, MAX_PAYLOAD};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/events/{tenant}/{topic}", post(publish))
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", m),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                other.to_string(),
            ),
        }
    }
}

/// A W3C `traceparent` as sent, if it has the header's shape (55 visible characters).
fn traceparent(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    let ok = v.len() == 55
        && v.split('-').count() == 4
        && v.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-');
    ok.then(|| v.to_string())
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
        traceparent: traceparent(&headers),
    };
    let log = state.events.clone();
    let (t, top) = (tenant.clone(), topic.clone());
    let id = tokio::task::spawn_blocking(move || log.publish(&t, &top, &event))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "tenant": tenant, "topic": topic, "id": id })),
    )
        .into_response())
}
