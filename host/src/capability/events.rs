//! `quiver:ml/events`: a function publishes to its tenant's topics, only those its
//! manifest's `[events] publish` declares, at most [`MAX_PER_CALL`] events a call.
//! The event's source is the function's `name@version`.

use super::{Capability, Configure};
use crate::bindings::base::quiver::ml::events::Payload;
use crate::bindings::{base, GuestError};
use crate::events::{Bus, EventError, NewEvent, MAX_PAYLOAD};
use crate::functions::DeployError;
use crate::runtime::HostState;
use crate::tenancy::TenantId;
use futures::future::BoxFuture;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker};

/// The most events one call of a function may publish.
pub const MAX_PER_CALL: u32 = 100;

pub struct Events;

/// What a deployment may publish, and where.
pub struct EventScope {
    bus: Arc<dyn Bus>,
    tenant: TenantId,
    /// `name@version` of the publishing function.
    source: String,
    topics: Vec<String>,
}

impl Capability for Events {
    fn name(&self) -> &'static str {
        "events"
    }

    fn imports(&self, kind: &str) -> &'static [&'static str] {
        match kind {
            "http" => &[],
            _ => &["quiver:ml/events"],
        }
    }

    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        base::quiver::ml::events::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
    }

    fn configure<'a>(&'a self, cx: Configure<'a>) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(async move {
            let topics = cx
                .manifest
                .events
                .as_ref()
                .map(|e| e.publish.clone())
                .unwrap_or_default();
            if topics.is_empty() {
                return Ok(());
            }
            let tenant = TenantId::parse(&cx.record.tenant).map_err(|m| {
                DeployError::Internal(anyhow::anyhow!("a stored tenant is invalid: {m}"))
            })?;
            cx.invocation.events = Some(Arc::new(EventScope {
                bus: cx.functions.events().clone(),
                tenant,
                source: format!("{}@{}", cx.record.name, cx.record.version),
                topics,
            }));
            Ok(())
        })
    }
}

impl base::quiver::ml::events::Host for HostState {
    async fn publish(&mut self, topic: String, payload: Payload) -> Result<String, GuestError> {
        let scope = self.events.clone().ok_or_else(|| {
            GuestError::InvalidInput(format!(
                "{} declares no [events] publish topics; declare the topics it publishes to",
                self.tag
            ))
        })?;
        if !scope.topics.contains(&topic) {
            return Err(GuestError::InvalidInput(format!(
                "{} may not publish to `{}`: its [events] publish names {}",
                self.tag,
                topic.chars().take(128).collect::<String>(),
                scope.topics.join(", ")
            )));
        }
        if self.published >= MAX_PER_CALL {
            return Err(GuestError::LimitExceeded(format!(
                "a call may publish at most {MAX_PER_CALL} events"
            )));
        }
        let too_big = |n: usize| {
            GuestError::LimitExceeded(format!(
                "an event's payload is at most {MAX_PAYLOAD} bytes; this one is {n}"
            ))
        };
        let body = match payload {
            Payload::Json(text) => {
                if text.len() > MAX_PAYLOAD {
                    return Err(too_big(text.len()));
                }
                serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                    GuestError::InvalidInput(format!("the event is declared JSON and is not: {e}"))
                })?;
                text.into_bytes()
            }
            Payload::Rows(batch) => {
                let floor = crate::convert::json_size_lower_bound(&batch);
                if floor > MAX_PAYLOAD {
                    return Err(too_big(floor));
                }
                let rows =
                    crate::convert::batch_to_rows(&batch).map_err(GuestError::InvalidInput)?;
                let text = serde_json::Value::Array(rows).to_string();
                if text.len() > MAX_PAYLOAD {
                    return Err(too_big(text.len()));
                }
                text.into_bytes()
            }
        };
        self.published += 1;
        // The event carries the publish span as its `traceparent`: the call it
        // triggers is that span's child.
        let mut span = crate::trace::span("events.publish")
            .attr("messaging.destination.name", topic.clone())
            .attr("messaging.operation.type", "send");
        let published = span
            .scope(async {
                let event = NewEvent {
                    content_type: "application/json".into(),
                    payload: body,
                    source: Some(scope.source.clone()),
                    traceparent: crate::trace::current().map(|c| c.to_string()),
                };
                scope.bus.publish(&scope.tenant, &topic, event).await
            })
            .await;
        match &published {
            Ok(_) => crate::metrics::HOST_CALLS
                .events_published
                .with_label_values(&[scope.tenant.as_str(), "function"])
                .inc(),
            Err(e) => span.fail(e.to_string()),
        }
        published.map_err(|e| match e {
            EventError::Invalid(m) => GuestError::InvalidInput(m),
            EventError::Unavailable(m) => GuestError::Unavailable(m),
            other => GuestError::Internal(other.to_string()),
        })
    }
}
