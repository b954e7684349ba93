//! Monitor taps: one task per tap queue (tenant, pipeline, monitor) runs the
//! monitor, through the call path as `Trigger::Monitor`, on what the pipeline's
//! calls left in the queue: what comes within [`LINGER`] of the first observation
//! (up to [`MAX_ROWS`] input rows) joined into one batch per shape, so that a busy
//! pipeline costs its monitor a call every [`LINGER`], not one per request. Best effort: a failed call of the monitor is counted
//! and logged, not retried (the observations are gone, as a dropped one is).

use super::{Delivered, Triggers};
use crate::call::{Input, Trigger};
use crate::monitors::{self, Observation, TapQueue};
use crate::tenancy::{FunctionRef, TenantId};

/// Input rows one call of a monitor takes from its queue at most.
pub const MAX_ROWS: usize = 10_000;
/// How long a call of a monitor waits for more observations after the first.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(100);

pub(super) async fn run(triggers: std::sync::Weak<Triggers>, mut queue: TapQueue) {
    let key = queue.key.clone();
    let target = TenantId::parse(&key.tenant)
        .ok()
        .and_then(|t| FunctionRef::new(t, &key.monitor, None).ok());
    let Some(target) = target else {
        tracing::warn!(tenant = %key.tenant, monitor = %key.monitor, "a tap names no valid monitor");
        return;
    };
    while let Some(first) = queue.rx.recv().await {
        let mut rows = monitors::rows(&first.inputs);
        let mut taken = vec![first];
        // Taking them as they come keeps the queue from filling while this waits.
        let until = tokio::time::Instant::now() + LINGER;
        while rows < MAX_ROWS {
            match tokio::time::timeout_at(until, queue.rx.recv()).await {
                Ok(Some(o)) => {
                    rows += monitors::rows(&o.inputs);
                    taken.push(o);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let Some(t) = triggers.upgrade() else { return };
        for Observation {
            inputs,
            outputs,
            traceparent,
        } in monitors::join(taken)
        {
            let called = t
                .calls
                .call(
                    Trigger::Monitor,
                    None,
                    traceparent.as_deref(),
                    Ok(target.clone()),
                    |_| async move { Ok((Input::Observe { inputs, outputs }, ())) },
                    |_, _, ()| Ok(Delivered),
                )
                .await;
            let outcome = match &called.result {
                Ok(_) => "ok",
                Err(e) => {
                    tracing::warn!(
                        tenant = %key.tenant, pipeline = %key.pipeline, monitor = %key.monitor,
                        "monitor call failed: {}: {}", e.code(), e.message()
                    );
                    "error"
                }
            };
            t.observations
                .with_label_values(&[&key.tenant, &key.pipeline, &key.monitor, outcome])
                .inc();
        }
    }
}
