//! Rollouts of a model version, driven by an automatic analysis (as Argo Rollouts'
//! is): the candidate first sees a copy of the calls that bind the model by an
//! alias (`shadow`), then a growing share of them (`10`, `50`, `100` %), each step
//! held for an `interval` and judged on what the candidate did against what the
//! alias' version did in the same interval on this host:
//! - **error rate**: the candidate's share of 5xx answers at most `max_error_rate`;
//! - **latency**: its p99 at most `max_p99_ratio` × the champion's + `p99_slack_ms`,
//!   judged once both arms (at 100 %, the candidate) have [`P99_MIN_CALLS`] calls (with fewer, a p99 is the
//!   slowest call: one cold start or scheduling hiccup would fail a step);
//! - **score distribution**: a two-sample Kolmogorov–Smirnov test of the two arms'
//!   `output` values (SciPy's `ks_2samp`, from `quiver-ml`); the step fails when the
//!   test rejects "same distribution" at level `alpha` *and* the shift (the KS
//!   statistic D) is at least `min_shift`, so a large sample does not fail a
//!   candidate for a difference nobody would act on.
//!
//! A step passes once both arms have `min_calls` calls and every condition holds;
//! a failed judgement counts, and past `failure_limit` the rollout rolls back. The
//! last step's pass promotes (moves the alias); the whole rollout must end within
//! `deadline` or it rolls back. The registry keeps where it is, so a host that
//! restarts resumes it (the interval it was in starts over: its measurements were
//! in memory). Every judgement is kept with the rollout, written to the audit log
//! and published on the bus (`rollout.started`, `rollout.step`, `rollout.promoted`,
//! `rollout.rolled_back`, `rollout.aborted`).
//!
//! How the candidate is served: a deployment that binds `model@alias` is loaded a
//! second time with the candidate bound in the alias' place (a *variant*, see
//! `Functions::variant`); a call of it goes to the variant by the step's weight (by
//! the route key when the call brings one), and in the shadow step every mirrored
//! call runs on the variant after the caller has its answer.

use crate::bindings::{Batch, Column};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Steps a rollout may have, at most.
pub const MAX_STEPS: usize = 16;
/// Latencies kept per arm and interval, at most (the first ones).
pub const MAX_SAMPLES: usize = 20_000;
/// Scores kept per arm and interval (one per call), at most the first ones: enough
/// for the KS test's power, few enough that its exact p-value stays cheap.
pub const MAX_SCORES: usize = 4_000;

/// `[trainer.rollout]` in a manifest, or the body of `POST .../rollouts`: every
/// field optional, defaults below.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RolloutSection {
    /// `"shadow"`, then percentages (numbers or `"10%"`), rising, ending at 100
    /// (default `["shadow", 10, 50, 100]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepText>>,
    /// How long each step is held before it is judged (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Calls each arm needs in an interval to be judged (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u32>,
    /// Failed judgements tolerated; one more rolls back (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<u32>,
    /// The whole rollout ends by then or rolls back (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Default 0.01.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Default 2.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ratio: Option<f64>,
    /// Default 10 (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_slack_ms: Option<f64>,
    /// The KS test's level (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// The smallest KS statistic that fails a step (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_shift: Option<f64>,
    /// The numeric output whose distribution is compared (default `score`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The alias rolled out, and moved on promotion (default `champion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

/// A step as written: `"shadow"`, `10` or `"10%"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum StepText {
    Percent(u32),
    Word(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Shadow,
    Percent(u32),
}

impl Step {
    pub fn label(self) -> String {
        match self {
            Step::Shadow => "shadow".into(),
            Step::Percent(p) => format!("{p}%"),
        }
    }
}

/// A rollout's analysis, checked, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSpec {
    pub steps: Vec<Step>,
    pub interval: Duration,
    pub min_calls: u64,
    pub failure_limit: u32,
    pub deadline: Duration,
    pub max_error_rate: f64,
    pub max_p99_ratio: f64,
    pub p99_slack_ms: f64,
    pub alpha: f64,
    pub min_shift: f64,
    pub output: String,
    pub alias: String,
}

fn duration(field: &str, text: &Option<String>, default: Duration) -> anyhow::Result<Duration> {
    let d = match text {
        None => default,
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| anyhow::anyhow!("rollout {field} `{t}`: {e}"))?,
    };
    if d < Duration::from_millis(100) || d > Duration::from_secs(7 * 24 * 3600) {
        anyhow::bail!("rollout {field} must be 100ms-7d");
    }
    Ok(d)
}

fn share(field: &str, v: Option<f64>, default: f64) -> anyhow::Result<f64> {
    let v = v.unwrap_or(default);
    if !(0.0..=1.0).contains(&v) {
        anyhow::bail!("rollout {field} must be 0-1, not {v}");
    }
    Ok(v)
}

impl RolloutSection {
    pub fn check(&self) -> anyhow::Result<RolloutSpec> {
        let default = [
            StepText::Word("shadow".into()),
            StepText::Percent(10),
            StepText::Percent(50),
            StepText::Percent(100),
        ];
        let written = self.steps.as_deref().unwrap_or(&default);
        if written.is_empty() || written.len() > MAX_STEPS {
            anyhow::bail!("a rollout has 1-{MAX_STEPS} steps");
        }
        let mut steps = Vec::new();
        for s in written {
            let step = match s {
                StepText::Percent(p) => Step::Percent(*p),
                StepText::Word(w) if w == "shadow" => Step::Shadow,
                StepText::Word(w) => match w.strip_suffix('%').unwrap_or(w).parse::<u32>() {
                    Ok(p) => Step::Percent(p),
                    Err(_) => anyhow::bail!(
                        "rollout step `{}` is `shadow` or a percentage",
                        w.chars().take(32).collect::<String>()
                    ),
                },
            };
            match (steps.last(), step) {
                (_, Step::Percent(p)) if p == 0 || p > 100 => {
                    anyhow::bail!("rollout step {p}%: a percentage is 1-100")
                }
                (Some(Step::Percent(_)), Step::Shadow) => {
                    anyhow::bail!("rollout steps: `shadow` comes before the percentages")
                }
                (Some(Step::Shadow), Step::Shadow) => {
                    anyhow::bail!("rollout steps: one `shadow` step at most")
                }
                (Some(Step::Percent(a)), Step::Percent(b)) if b <= *a => {
                    anyhow::bail!("rollout steps: percentages rise ({a}% then {b}%)")
                }
                _ => steps.push(step),
            }
        }
        if steps.last() != Some(&Step::Percent(100)) {
            anyhow::bail!(
                "rollout steps end at 100 (the candidate serves every call before it is promoted)"
            );
        }
        let positive = |field: &str, v: Option<f64>, default: f64| -> anyhow::Result<f64> {
            let v = v.unwrap_or(default);
            if !v.is_finite() || !(0.0..=1e6).contains(&v) {
                anyhow::bail!("rollout {field} must be 0-1e6, not {v}");
            }
            Ok(v)
        };
        let output = self.output.clone().unwrap_or_else(|| "score".into());
        if output.is_empty() || output.len() > 128 {
            anyhow::bail!("rollout output is 1-128 bytes");
        }
        let alias = self.alias.clone().unwrap_or_else(|| "champion".into());
        quiver_registry::check_alias(&alias).map_err(|e| anyhow::anyhow!("rollout alias: {e}"))?;
        let min_calls = self.min_calls.unwrap_or(20);
        if min_calls == 0 || min_calls > 1_000_000 {
            anyhow::bail!("rollout min_calls must be 1-1000000");
        }
        let alpha = share("alpha", self.alpha, 0.01)?;
        if alpha <= 0.0 || alpha >= 0.5 {
            anyhow::bail!("rollout alpha must be in (0, 0.5)");
        }
        Ok(RolloutSpec {
            steps,
            interval: duration("interval", &self.interval, Duration::from_secs(30))?,
            min_calls: u64::from(min_calls),
            failure_limit: self.failure_limit.unwrap_or(0).min(1000),
            deadline: duration("deadline", &self.deadline, Duration::from_secs(15 * 60))?,
            max_error_rate: share("max_error_rate", self.max_error_rate, 0.01)?,
            max_p99_ratio: positive("max_p99_ratio", self.max_p99_ratio, 2.0)?,
            p99_slack_ms: positive("p99_slack_ms", self.p99_slack_ms, 10.0)?,
            alpha,
            min_shift: share("min_shift", self.min_shift, 0.1)?,
            output,
            alias,
        })
    }
}

/// What one arm (the alias' version, or the candidate) did in an interval.
#[derive(Debug, Clone, Default)]
pub struct Arm {
    pub calls: u64,
    pub errors: u64,
    pub latencies_ms: Vec<f64>,
    pub scores: Vec<f64>,
}

/// Calls each arm needs before its p99 is judged (it is reported before).
pub const P99_MIN_CALLS: u64 = 100;

impl Arm {
    fn p99(&self) -> Option<f64> {
        let mut l = self.latencies_ms.clone();
        if l.is_empty() {
            return None;
        }
        l.sort_by(f64::total_cmp);
        let at = ((l.len() as f64 * 0.99).ceil() as usize).clamp(1, l.len()) - 1;
        Some(l[at])
    }
}

/// A judgement of one interval.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough calls yet: keep the interval open.
    Wait(String),
    Pass(Value),
    Fail(String, Value),
}

/// How the step being judged routes the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// Copies: their latency is measured beside the callers' calls (after each
    /// answer, on the same cores), not comparable, so it is reported, not judged.
    Shadow,
    /// A share of the calls.
    Canary,
    /// Every call: `base` is what the champion did in the step before (empty
    /// when unknown, e.g. after a restart: then it is not compared).
    AllIn,
}

/// Judge an interval: the candidate against the alias' version.
pub fn judge(spec: &RolloutSpec, base: &Arm, cand: &Arm, step: Judged) -> Verdict {
    let all_in = step == Judged::AllIn;
    let rate = |a: &Arm| match a.calls {
        0 => 0.0,
        n => a.errors as f64 / n as f64,
    };
    let mut m = json!({
        "champion": {"calls": base.calls, "errors": base.errors, "error_rate": rate(base),
                     "p99_ms": base.p99(), "scores": base.scores.len()},
        "candidate": {"calls": cand.calls, "errors": cand.errors, "error_rate": rate(cand),
                      "p99_ms": cand.p99(), "scores": cand.scores.len()},
    });
    // Errors count even before min_calls: enough of them fail the step however
    // many good calls would follow.
    let floor = cand.calls.max(spec.min_calls) as f64;
    if cand.errors > 0 && cand.errors as f64 / floor > spec.max_error_rate {
        return Verdict::Fail(
            format!(
                "error rate {:.3} ({} of {} calls) above {}",
                rate(cand),
                cand.errors,
                cand.calls,
                spec.max_error_rate
            ),
            m,
        );
    }
    if all_in {
        m["champion"]["from"] = json!("the step before");
    }
    let base_short = base.calls < spec.min_calls && !all_in;
    if cand.calls < spec.min_calls || base_short {
        return Verdict::Wait(format!(
            "{} champion and {} candidate calls of the {} each needs",
            base.calls, cand.calls, spec.min_calls
        ));
    }
    if rate(cand) > spec.max_error_rate {
        return Verdict::Fail(
            format!("error rate {:.3} above {}", rate(cand), spec.max_error_rate),
            m,
        );
    }
    if let (Some(b), Some(c)) = (base.p99(), cand.p99()) {
        let limit = b * spec.max_p99_ratio + spec.p99_slack_ms;
        m["p99_limit_ms"] = json!(limit);
        let few = cand.calls < P99_MIN_CALLS || (!all_in && base.calls < P99_MIN_CALLS);
        if step == Judged::Shadow || few {
            m["p99_judged"] = json!(false);
        } else if c > limit {
            return Verdict::Fail(
                format!("p99 {c:.1} ms above {limit:.1} ms (champion {b:.1} ms)"),
                m,
            );
        }
    }
    let n = spec.min_calls as usize;
    if base.scores.len() >= n && cand.scores.len() >= n {
        match quiver_ml::drift::ks_2samp(&base.scores, &cand.scores) {
            Ok(ks) => {
                m["score"] = json!({"output": spec.output, "ks_d": ks.statistic, "ks_p": ks.p_value,
                                    "alpha": spec.alpha, "min_shift": spec.min_shift});
                if ks.p_value < spec.alpha && ks.statistic >= spec.min_shift {
                    return Verdict::Fail(
                        format!(
                            "{} distribution shifted: KS D {:.3} ≥ {}, p {:.2e} < α {}",
                            spec.output, ks.statistic, spec.min_shift, ks.p_value, spec.alpha
                        ),
                        m,
                    );
                }
            }
            Err(e) => m["score"] = json!({"error": e.to_string()}),
        }
    } else {
        m["score"] = json!({"skipped": format!("fewer than {n} `{}` values per arm", spec.output)});
    }
    Verdict::Pass(m)
}

/// A model version bound in an alias' place.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelOverride {
    pub model: String,
    pub alias: String,
    pub version: String,
}

impl ModelOverride {
    /// How a variant deployment is keyed and named.
    pub fn key(&self) -> String {
        format!("{}@{}={}", self.model, self.alias, self.version)
    }
}

/// How a running rollout routes the calls of a model's alias now.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub id: i64,
    pub alias: String,
    pub baseline: String,
    pub candidate: String,
    /// Share of the calls (0-100) the candidate serves.
    pub weight: u32,
    /// The candidate sees a copy of the calls.
    pub shadow: bool,
    pub output: String,
}

/// The routes of running rollouts and what each arm did in the current interval.
#[derive(Default)]
pub struct Rollouts {
    /// (tenant, model) -> route.
    routes: RwLock<HashMap<(String, String), Arc<Route>>>,
    /// (tenant, model, version) -> this interval's observations.
    arms: Mutex<HashMap<(String, String, String), Arm>>,
    /// (tenant, model) -> the champion's arm in the last step that passed (what
    /// the 100 % step compares with).
    last_base: Mutex<HashMap<(String, String), Arm>>,
}

/// `name@version,...` (a deployment's bound models) as pairs.
fn bound(model_versions: &str) -> impl Iterator<Item = (&str, &str)> {
    model_versions.split(',').filter_map(|m| m.rsplit_once('@'))
}

impl Rollouts {
    pub fn route(&self, tenant: &str, model: &str) -> Option<Arc<Route>> {
        let routes = self.routes.read().ok()?;
        routes
            .get(&(tenant.to_string(), model.to_string()))
            .cloned()
    }

    /// Set (or with `None`, end) a model's route; its arms start afresh.
    pub fn set_route(&self, tenant: &str, model: &str, route: Option<Route>) {
        let key = (tenant.to_string(), model.to_string());
        let ended = route.is_none();
        if let Ok(mut routes) = self.routes.write() {
            match route {
                Some(r) => routes.insert(key.clone(), Arc::new(r)),
                None => routes.remove(&key),
            };
        }
        if ended {
            if let Ok(mut l) = self.last_base.lock() {
                l.remove(&key);
            }
        }
        self.reset(tenant, model);
    }

    /// Keep the champion's arm of the interval just judged.
    pub fn keep_baseline(&self, tenant: &str, model: &str, version: &str) {
        let arm = self.arm(tenant, model, version);
        if let Ok(mut l) = self.last_base.lock() {
            l.insert((tenant.to_string(), model.to_string()), arm);
        }
    }

    pub fn last_baseline(&self, tenant: &str, model: &str) -> Arm {
        self.last_base
            .lock()
            .ok()
            .and_then(|l| l.get(&(tenant.to_string(), model.to_string())).cloned())
            .unwrap_or_default()
    }

    /// Forget a model's observations (a new interval starts).
    pub fn reset(&self, tenant: &str, model: &str) {
        if let Ok(mut arms) = self.arms.lock() {
            arms.retain(|(t, m, _), _| !(t == tenant && m == model));
        }
    }

    fn any(&self) -> bool {
        self.routes.read().map(|r| !r.is_empty()).unwrap_or(false)
    }

    /// For a call of a deployment that binds `alias_models` ((model, alias)): the
    /// candidate to bind instead, picked by the route's weight (by the call's route
    /// key when it has one).
    pub fn pick(&self, tenant: &str, alias_models: &[(String, String)]) -> Option<ModelOverride> {
        if alias_models.is_empty() || !self.any() {
            return None;
        }
        for (model, alias) in alias_models {
            let Some(r) = self.route(tenant, model) else {
                continue;
            };
            if r.alias != *alias || r.weight == 0 {
                continue;
            }
            let split = [
                ("base".to_string(), 100 - r.weight.min(100)),
                ("candidate".to_string(), r.weight.min(100)),
            ];
            if crate::functions::pick_version(&split) == "candidate" {
                return Some(ModelOverride {
                    model: model.clone(),
                    alias: alias.clone(),
                    version: r.candidate.clone(),
                });
            }
        }
        None
    }

    /// The candidate a copy of the call runs with, in a shadow step.
    pub fn shadow(&self, tenant: &str, alias_models: &[(String, String)]) -> Option<ModelOverride> {
        if alias_models.is_empty() || !self.any() {
            return None;
        }
        alias_models.iter().find_map(|(model, alias)| {
            let r = self.route(tenant, model)?;
            (r.shadow && r.alias == *alias).then(|| ModelOverride {
                model: model.clone(),
                alias: alias.clone(),
                version: r.candidate.clone(),
            })
        })
    }

    /// Count a call of a deployment that bound `model_versions`: for each model
    /// under rollout, on the arm of the version it ran.
    pub fn observe_call(&self, tenant: &str, model_versions: &str, error: bool, latency_ms: f64) {
        if model_versions.is_empty() || !self.any() {
            return;
        }
        self.each_arm(tenant, model_versions, |arm, _| {
            arm.calls += 1;
            arm.errors += u64::from(error);
            if arm.latencies_ms.len() < MAX_SAMPLES {
                arm.latencies_ms.push(latency_ms);
            }
        });
    }

    /// Keep one of the rolled-out output's values of an inference call's answer.
    pub fn observe_scores(&self, tenant: &str, model_versions: &str, out: &Batch) {
        if model_versions.is_empty() || !self.any() {
            return;
        }
        self.each_arm(tenant, model_versions, |arm, route| {
            let Some(f) = out.fields.iter().find(|f| f.name == route.output) else {
                return;
            };
            // One value per call, from a row picked at random: the rows of one
            // request are not independent of each other (one client, one
            // moment), calls are, and the KS test assumes independent samples.
            let Column::Float64(v) = &f.values else {
                return;
            };
            if v.is_empty() || arm.scores.len() >= MAX_SCORES {
                return;
            }
            let mut bytes = [0u8; 8];
            // A failed read of the OS's randomness only takes the first row.
            let _ = getrandom::getrandom(&mut bytes);
            let at = (u64::from_le_bytes(bytes) % v.len() as u64) as usize;
            if v[at].is_finite() {
                arm.scores.push(v[at]);
            }
        });
    }

    fn each_arm(&self, tenant: &str, model_versions: &str, mut f: impl FnMut(&mut Arm, &Route)) {
        for (model, version) in bound(model_versions) {
            let Some(route) = self.route(tenant, model) else {
                continue;
            };
            if version != route.baseline && version != route.candidate {
                continue;
            }
            if let Ok(mut arms) = self.arms.lock() {
                let key = (tenant.to_string(), model.to_string(), version.to_string());
                f(arms.entry(key).or_default(), &route);
            }
        }
    }

    /// The interval's observations of one arm so far.
    pub fn arm(&self, tenant: &str, model: &str, version: &str) -> Arm {
        self.arms
            .lock()
            .ok()
            .and_then(|a| {
                a.get(&(tenant.to_string(), model.to_string(), version.to_string()))
                    .cloned()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> anyhow::Result<RolloutSpec> {
        let s: RolloutSection = toml::from_str(text)?;
        s.check()
    }

    #[test]
    fn steps_are_shadow_then_rising_percentages_ending_at_100() {
        let s = spec("").unwrap();
        assert_eq!(
            s.steps,
            [
                Step::Shadow,
                Step::Percent(10),
                Step::Percent(50),
                Step::Percent(100)
            ]
        );
        assert_eq!(
            spec(r#"steps = ["shadow", "25%", 100]"#).unwrap().steps,
            [Step::Shadow, Step::Percent(25), Step::Percent(100)]
        );
        for bad in [
            "steps = []",
            "steps = [10, 50]",
            "steps = [50, 10, 100]",
            "steps = [10, \"shadow\", 100]",
            "steps = [0, 100]",
            "steps = [\"half\", 100]",
            "steps = [100, 100]",
            "interval = \"1ns\"",
            "alpha = 0.9",
            "min_calls = 0",
            "max_error_rate = 2.0",
            "alias = \"Not An Alias\"",
            "nonsense = 1",
        ] {
            assert!(spec(bad).is_err(), "{bad}");
        }
    }

    fn arm(calls: u64, errors: u64, latency: f64, scores: Vec<f64>) -> Arm {
        Arm {
            calls,
            errors,
            latencies_ms: vec![latency; calls as usize],
            scores,
        }
    }

    fn spread(n: usize, shift: f64) -> Vec<f64> {
        (0..n).map(|i| i as f64 / n as f64 + shift).collect()
    }

    #[test]
    fn a_step_waits_for_calls_and_fails_on_errors_latency_or_a_real_shift() {
        let s = spec("min_calls = 20").unwrap();
        let good = arm(40, 0, 5.0, spread(400, 0.0));
        assert!(matches!(
            judge(&s, &good, &arm(5, 0, 5.0, vec![]), Judged::Canary),
            Verdict::Wait(_)
        ));
        assert!(matches!(
            judge(
                &s,
                &good,
                &arm(40, 0, 5.0, spread(400, 0.001)),
                Judged::Canary
            ),
            Verdict::Pass(_)
        ));
        // One error in 5 calls already fails (over a floor of min_calls).
        match judge(&s, &good, &arm(5, 1, 5.0, vec![]), Judged::Canary) {
            Verdict::Fail(why, _) => assert!(why.contains("error rate"), "{why}"),
            v => panic!("{v:?}"),
        }
        // p99 is judged once both arms have P99_MIN_CALLS calls: before, the
        // slowest call alone would decide.
        assert!(matches!(
            judge(&s, &good, &arm(40, 0, 50.0, spread(400, 0.0)), Judged::Canary),
            Verdict::Pass(m) if m["p99_judged"] == false
        ));
        let many = arm(P99_MIN_CALLS, 0, 5.0, spread(400, 0.0));
        match judge(
            &s,
            &many,
            &arm(P99_MIN_CALLS, 0, 50.0, spread(400, 0.0)),
            Judged::Canary,
        ) {
            Verdict::Fail(why, _) => assert!(why.contains("p99"), "{why}"),
            v => panic!("{v:?}"),
        }
        // A shadow copy's latency is reported, not judged.
        assert!(matches!(
            judge(
                &s,
                &good,
                &arm(40, 0, 50.0, spread(400, 0.0)),
                Judged::Shadow
            ),
            Verdict::Pass(_)
        ));
        match judge(
            &s,
            &good,
            &arm(40, 0, 5.0, spread(400, 0.3)),
            Judged::Canary,
        ) {
            Verdict::Fail(why, m) => {
                assert!(why.contains("KS"), "{why}");
                assert!(m["score"]["ks_p"].as_f64().unwrap() < 0.01);
            }
            v => panic!("{v:?}"),
        }
        // At 100 % the champion's arm is the step before's; with none known only
        // the candidate's own numbers are judged.
        assert!(matches!(
            judge(
                &s,
                &Arm::default(),
                &arm(40, 0, 5.0, spread(400, 0.0)),
                Judged::AllIn
            ),
            Verdict::Pass(_)
        ));
        assert!(matches!(
            judge(&s, &Arm::default(), &arm(3, 0, 5.0, vec![]), Judged::AllIn),
            Verdict::Wait(_)
        ));
        // Significant but small: D below min_shift passes.
        let big = arm(40, 0, 5.0, spread(4_000, 0.0));
        assert!(matches!(
            judge(
                &s,
                &big,
                &arm(40, 0, 5.0, spread(4_000, 0.05)),
                Judged::Canary
            ),
            Verdict::Pass(_)
        ));
    }

    #[test]
    fn calls_count_on_the_arm_of_the_version_they_ran() {
        let r = Rollouts::default();
        r.observe_call("t", "m@1.0.0", false, 1.0);
        assert_eq!(
            r.arm("t", "m", "1.0.0").calls,
            0,
            "no rollout, nothing kept"
        );
        r.set_route(
            "t",
            "m",
            Some(Route {
                id: 1,
                alias: "champion".into(),
                baseline: "1.0.0".into(),
                candidate: "1.1.0".into(),
                weight: 0,
                shadow: true,
                output: "score".into(),
            }),
        );
        r.observe_call("t", "m@1.0.0", false, 1.0);
        r.observe_call("t", "other@2.0.0,m@1.1.0", true, 3.0);
        r.observe_call("u", "m@1.1.0", true, 3.0);
        assert_eq!(r.arm("t", "m", "1.0.0").calls, 1);
        assert_eq!(r.arm("t", "m", "1.1.0").errors, 1);
        let binds = [("m".to_string(), "champion".to_string())];
        assert_eq!(r.pick("t", &binds), None, "weight 0 in the shadow step");
        assert_eq!(r.shadow("t", &binds).unwrap().version, "1.1.0");
        assert_eq!(r.shadow("t", &[("m".into(), "other".into())]), None);
        r.set_route("t", "m", None);
        assert_eq!(r.arm("t", "m", "1.0.0").calls, 0);
    }
}
