//! Model rollouts on the host: start, abort, show, and the analysis' clock that
//! judges each step and promotes or rolls back (see [`crate::rollout`]).

use super::{DeployError, Functions};
use crate::rollout::{judge, Judged, RolloutSection, RolloutSpec, Route, Step, Verdict};
use quiver_registry::{NewRollout, RolloutRecord, RolloutStep, RolloutUpdate};
use serde_json::{json, Value};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the analysis looks at the running rollouts.
pub const ROLLOUT_TICK: Duration = Duration::from_millis(250);

fn spec_of(rec: &RolloutRecord) -> anyhow::Result<RolloutSpec> {
    let section: RolloutSection = serde_json::from_str(&rec.spec)?;
    section.check()
}

fn route_of(rec: &RolloutRecord, spec: &RolloutSpec, step: u32) -> Route {
    let at = spec.steps[(step as usize).min(spec.steps.len() - 1)];
    Route {
        id: rec.id,
        alias: rec.alias.clone(),
        baseline: rec.baseline.clone(),
        candidate: rec.candidate.clone(),
        weight: match at {
            Step::Shadow => 0,
            Step::Percent(p) => p,
        },
        shadow: at == Step::Shadow,
        output: spec.output.clone(),
    }
}

fn step_label(spec: &RolloutSpec, step: u32) -> String {
    spec.steps
        .get(step as usize)
        .map_or_else(|| "?".into(), |s| s.label())
}

/// A rollout as the API shows it.
pub fn describe(rec: &RolloutRecord, steps: &[RolloutStep]) -> Value {
    let spec: Value = serde_json::from_str(&rec.spec).unwrap_or(Value::Null);
    let label = spec_of(rec).map_or_else(|_| "?".into(), |s| step_label(&s, rec.step));
    json!({
        "id": rec.id, "model": rec.model, "alias": rec.alias, "baseline": rec.baseline,
        "candidate": rec.candidate, "state": rec.state, "step": rec.step, "step_label": label,
        "failures": rec.failures, "started_ms": rec.started_ms,
        "step_started_ms": rec.step_started_ms, "updated_ms": rec.updated_ms,
        "reason": rec.reason, "actor": rec.actor, "spec": spec, "history": steps,
    })
}

impl Functions {
    pub fn rollout_routes(&self) -> &crate::rollout::Rollouts {
        &self.rollouts
    }

    /// Start rolling `candidate` of model `model` out against `section`'s alias.
    pub async fn start_rollout(
        self: &Arc<Self>,
        tenant: &str,
        model: &str,
        candidate: &str,
        section: &RolloutSection,
        actor: &str,
        reason: &str,
    ) -> Result<RolloutRecord, DeployError> {
        let spec = section
            .check()
            .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
        let text = serde_json::to_string(section).map_err(|e| DeployError::Internal(e.into()))?;
        let (t, m, c, a, who, why) = (
            tenant.to_string(),
            model.to_string(),
            candidate.to_string(),
            spec.alias.clone(),
            actor.to_string(),
            reason.to_string(),
        );
        let rec = self
            .registry_call(move |r| {
                r.start_rollout(&NewRollout {
                    tenant: &t,
                    model: &m,
                    alias: &a,
                    candidate: &c,
                    spec: &text,
                    actor: &who,
                    reason: &why,
                    now_ms: crate::unix_ms(),
                })
            })
            .await?;
        let route = route_of(&rec, &spec, 0);
        self.warm_variants(tenant, model, &route).await;
        self.rollouts.set_route(tenant, model, Some(route));
        self.announce(&rec, &spec, "started", reason, &Value::Null)
            .await;
        Ok(rec)
    }

    /// End model `model`'s running rollout without promoting it.
    pub async fn abort_rollout(
        self: &Arc<Self>,
        tenant: &str,
        model: &str,
        actor: &str,
        reason: &str,
    ) -> Result<RolloutRecord, DeployError> {
        let (t, m) = (tenant.to_string(), model.to_string());
        let running = self
            .registry_call(move |r| r.rollouts(&t, &m, 1))
            .await?
            .into_iter()
            .find(|r| r.state == "running")
            .ok_or_else(|| {
                DeployError::Registry(quiver_registry::RegistryError::NotFound(format!(
                    "no rollout of `{model}` is running"
                )))
            })?;
        let why = format!("aborted by {actor}: {reason}");
        self.transition(
            &running,
            running.step,
            running.failures,
            "aborted",
            &why,
            json!({}),
        )
        .await
    }

    /// Model `model`'s newest rollouts (at most `limit`), each with its history.
    pub async fn rollout_history(
        &self,
        tenant: &str,
        model: &str,
        limit: usize,
    ) -> Result<Vec<Value>, DeployError> {
        let (t, m) = (tenant.to_string(), model.to_string());
        self.registry_call(move |r| {
            let mut out = Vec::new();
            for rec in r.rollouts(&t, &m, limit)? {
                let steps = r.rollout_steps(rec.id)?;
                out.push(describe(&rec, &steps));
            }
            Ok(out)
        })
        .await
    }

    /// One look of the analysis at every running rollout.
    pub async fn tick_rollouts(self: &Arc<Self>) -> Result<(), DeployError> {
        let running = self.registry_call(|r| r.running_rollouts()).await?;
        let now = crate::unix_ms();
        for rec in running {
            let spec = match spec_of(&rec) {
                Ok(s) => s,
                Err(e) => {
                    let why = format!("its analysis settings do not read: {e:#}");
                    self.transition(&rec, rec.step, rec.failures, "rolled_back", &why, json!({}))
                        .await?;
                    continue;
                }
            };
            let known = self.rollouts.route(&rec.tenant, &rec.model);
            if known.map(|r| r.id) != Some(rec.id) {
                // Running in the registry, not routed here: this host started (or
                // restarted) with it under way. Its measurements were in memory, so
                // the step's interval starts over.
                self.transition(
                    &rec,
                    rec.step,
                    rec.failures,
                    "resumed",
                    "this host started with the rollout running: the step's interval starts over",
                    json!({}),
                )
                .await?;
                continue;
            }
            if now.saturating_sub(rec.started_ms) > spec.deadline.as_millis() as u64 {
                let why = format!(
                    "progress deadline of {} passed in step {}",
                    humantime::format_duration(spec.deadline),
                    step_label(&spec, rec.step)
                );
                self.transition(&rec, rec.step, rec.failures, "rolled_back", &why, json!({}))
                    .await?;
                continue;
            }
            if now.saturating_sub(rec.step_started_ms) < spec.interval.as_millis() as u64 {
                continue;
            }
            let mut base = self.rollouts.arm(&rec.tenant, &rec.model, &rec.baseline);
            let cand = self.rollouts.arm(&rec.tenant, &rec.model, &rec.candidate);
            // At 100 % the champion serves nothing: its arm is the one measured in
            // the step before (none after a restart: then only what needs no
            // comparison is judged).
            let judged = match spec.steps.get(rec.step as usize) {
                Some(Step::Shadow) => Judged::Shadow,
                Some(Step::Percent(100)) => Judged::AllIn,
                _ => Judged::Canary,
            };
            if judged == Judged::AllIn {
                base = self.rollouts.last_baseline(&rec.tenant, &rec.model);
            }
            let spec2 = spec.clone();
            let verdict = tokio::task::spawn_blocking(move || judge(&spec2, &base, &cand, judged))
                .await
                .map_err(|e| DeployError::Internal(e.into()))?;
            match verdict {
                Verdict::Wait(_) => {}
                Verdict::Pass(m) if rec.step as usize + 1 >= spec.steps.len() => {
                    let why = format!(
                        "every step passed ({}); `{}` moved to {}",
                        spec.steps
                            .iter()
                            .map(|s| s.label())
                            .collect::<Vec<_>>()
                            .join(" → "),
                        rec.alias,
                        rec.candidate
                    );
                    self.transition(&rec, rec.step, rec.failures, "promoted", &why, m)
                        .await?;
                }
                Verdict::Pass(m) => {
                    self.rollouts
                        .keep_baseline(&rec.tenant, &rec.model, &rec.baseline);
                    let why = format!(
                        "step {} passed; next {}",
                        step_label(&spec, rec.step),
                        step_label(&spec, rec.step + 1)
                    );
                    self.transition(&rec, rec.step + 1, rec.failures, "passed", &why, m)
                        .await?;
                }
                Verdict::Fail(why, m) => {
                    let failures = rec.failures + 1;
                    let why = format!("step {}: {why}", step_label(&spec, rec.step));
                    let outcome = match failures > spec.failure_limit {
                        true => "rolled_back",
                        false => "failed",
                    };
                    self.transition(&rec, rec.step, failures, outcome, &why, m)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Record one outcome of rollout `rec` (moving it to `step`), route what
    /// follows, and tell the audit log and the bus.
    async fn transition(
        self: &Arc<Self>,
        rec: &RolloutRecord,
        step: u32,
        failures: u32,
        outcome: &str,
        reason: &str,
        measured: Value,
    ) -> Result<RolloutRecord, DeployError> {
        let now = crate::unix_ms();
        let end = match outcome {
            "promoted" | "rolled_back" | "aborted" => Some(outcome.to_string()),
            _ => None,
        };
        let detail = json!({"reason": reason, "measured": &measured});
        let (id, why, detail_c, end_c) = (rec.id, reason.to_string(), detail, end.clone());
        let judged = rec.step;
        let out = outcome.to_string();
        let (after, _moved) = self
            .registry_call(move |r| {
                r.update_rollout(
                    id,
                    &RolloutUpdate {
                        step,
                        failures,
                        step_started_ms: now,
                        end: end_c.as_deref().map(|s| (s, why.as_str())),
                        promote: end_c.as_deref() == Some("promoted"),
                        record: RolloutStep {
                            at_ms: now,
                            step: judged,
                            outcome: out,
                            detail: detail_c,
                        },
                    },
                )
            })
            .await?;
        let spec = spec_of(&after).map_err(DeployError::Internal)?;
        match end {
            Some(_) => {
                self.rollouts.set_route(&after.tenant, &after.model, None);
                self.drop_variants(&after.tenant, &after.model);
                if outcome == "promoted" {
                    self.unload_model_users(
                        &after.tenant,
                        &after.model,
                        "a rollout promoted: unloaded",
                    );
                }
            }
            None => {
                let route = route_of(&after, &spec, step);
                self.warm_variants(&after.tenant, &after.model, &route)
                    .await;
                self.rollouts
                    .set_route(&after.tenant, &after.model, Some(route));
            }
        }
        self.announce(&after, &spec, outcome, reason, &measured)
            .await;
        Ok(after)
    }

    /// Audit entry and bus event for one outcome.
    async fn announce(
        &self,
        rec: &RolloutRecord,
        spec: &RolloutSpec,
        outcome: &str,
        reason: &str,
        measured: &Value,
    ) {
        let Ok(tenant) = crate::tenancy::TenantId::parse(&rec.tenant) else {
            return;
        };
        let topic = match outcome {
            "started" | "promoted" | "rolled_back" | "aborted" => format!("rollout.{outcome}"),
            _ => "rollout.step".to_string(),
        };
        // Flat (scalars only), so a function subscribed to the topic gets it as
        // one row.
        let mut payload = json!({
            "rollout": rec.id, "model": rec.model, "alias": rec.alias,
            "baseline": rec.baseline, "candidate": rec.candidate, "outcome": outcome,
            "step": rec.step, "step_label": step_label(spec, rec.step),
            "failures": rec.failures, "reason": reason,
        });
        for arm in ["champion", "candidate"] {
            for field in ["calls", "errors", "error_rate", "p99_ms"] {
                let v = &measured[arm][field];
                if !v.is_null() {
                    payload[format!("{arm}_{field}")] = v.clone();
                }
            }
        }
        for field in ["ks_d", "ks_p"] {
            let v = &measured["score"][field];
            if !v.is_null() {
                payload[field] = v.clone();
            }
        }
        let entry = crate::tenancy::NewAuditEntry {
            actor: format!("rollout {}", rec.id),
            tenant: Some(tenant.clone()),
            action: topic.clone(),
            target: format!("{}@{}", rec.model, rec.candidate),
            result: format!(
                "{outcome}: {}",
                reason.chars().take(512).collect::<String>()
            ),
        };
        let tenancy = self.tenancy.clone();
        match tokio::task::spawn_blocking(move || tenancy.audit(entry)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(rollout = rec.id, "auditing the rollout: {e}"),
            Err(e) => tracing::warn!(rollout = rec.id, "auditing the rollout: {e}"),
        }
        let event = crate::events::NewEvent {
            content_type: "application/json".into(),
            payload: payload.to_string().into_bytes(),
            source: None,
            traceparent: None,
        };
        if let Err(e) = self.events.publish(&tenant, &topic, event).await {
            tracing::warn!(rollout = rec.id, "publishing {topic}: {e}");
        }
        tracing::info!(rollout = rec.id, model = %rec.model, candidate = %rec.candidate, outcome, "{reason}");
    }

    /// Load the candidate's variant of every loaded deployment that binds the
    /// rollout's alias before calls are routed to it, so the candidate's first
    /// calls are not its cold starts (the champion's were long before).
    async fn warm_variants(self: &Arc<Self>, tenant: &str, model: &str, route: &Route) {
        let binding = (model.to_string(), route.alias.clone());
        let users: Vec<Arc<super::Deployment>> = match self.loaded.lock() {
            Ok(l) => l
                .values()
                .filter(|d| {
                    d.record.tenant == tenant
                        && d.variant.is_none()
                        && d.alias_models.contains(&binding)
                })
                .cloned()
                .collect(),
            Err(_) => return,
        };
        for d in users {
            let candidate = crate::rollout::ModelOverride {
                model: model.to_string(),
                alias: route.alias.clone(),
                version: route.candidate.clone(),
            };
            if let Err(e) = self.variant(&d, candidate).await {
                tracing::warn!(function = %d.invocation.tag, "loading the rollout's candidate: {e}");
            }
        }
    }

    /// Forget the variants that bind a candidate of `model` (its rollout ended).
    fn drop_variants(&self, tenant: &str, model: &str) {
        let prefix = format!("{model}@");
        if let Ok(mut v) = self.variants.lock() {
            v.retain(|k, _| !(k.0 == tenant && k.3.starts_with(&prefix)));
        }
    }
}

/// Run the analysis every [`ROLLOUT_TICK`] while `functions` lives.
pub fn spawn_analysis(functions: &Arc<Functions>) {
    let weak: Weak<Functions> = Arc::downgrade(functions);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ROLLOUT_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(f) = weak.upgrade() else { return };
            if let Err(e) = f.tick_rollouts().await {
                tracing::warn!("rollout analysis: {e}");
            }
        }
    });
}
