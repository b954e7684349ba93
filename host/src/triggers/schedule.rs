//! `[triggers] schedule`: a cron expression in UTC. At each tick every host tries
//! to take the tick's lease in the event bus (`Bus::tick`); exactly one wins and
//! runs the function, so a schedule runs once per tick across hosts, and not again
//! after a restart for a tick already run. Ticks missed while no host was running
//! are not caught up. The function gets one JSON row:
//! `{"scheduled_at": "<RFC 3339>", "tick_ms": <ms since the epoch>}`.

use super::{Delivered, Triggers};
use crate::call::{Input, Trigger};
use crate::tenancy::FunctionRef;
use chrono::{DateTime, Utc};
use std::time::Duration;

pub(super) async fn run(
    triggers: std::sync::Weak<Triggers>,
    target: FunctionRef,
    cron: croner::Cron,
) {
    let key = format!("{}/{}", target.tenant.as_str(), target.name());
    let mut after: DateTime<Utc> = Utc::now();
    loop {
        let next = match cron.find_next_occurrence(&after, false) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(schedule = %key, "no next tick: {e}");
                return;
            }
        };
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        after = next;
        let Some(t) = triggers.upgrade() else { return };
        let tick_ms = next.timestamp_millis().max(0) as u64;
        match t.bus.tick(&key, tick_ms).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(schedule = %key, "taking the tick's lease: {e}");
                continue;
            }
        }
        let body = serde_json::json!({
            "scheduled_at": next.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "tick_ms": tick_ms,
        })
        .to_string();
        let called = t
            .calls
            .call(
                Trigger::Schedule,
                None,
                None,
                Ok(target.clone()),
                |_| async move {
                    let input = Input::Body {
                        content_type: "application/json".into(),
                        body: body.into(),
                    };
                    Ok((input, ()))
                },
                |_, _, ()| Ok(Delivered),
            )
            .await;
        let outcome = match &called.result {
            Ok(_) => "ok",
            Err(e) => {
                tracing::warn!(schedule = %key, tick_ms, "scheduled run failed: {}: {}", e.code(), e.message());
                "error"
            }
        };
        t.ticks
            .with_label_values(&[target.tenant.as_str(), target.name(), outcome])
            .inc();
    }
}
