//! Rollouts of model versions: a candidate served to a growing share of the calls
//! that bind a model by an alias (`fraud-model@champion`), step by step, until it is
//! promoted (the alias moves to it) or rolled back. The host's analysis drives
//! them; the registry keeps where each one is, so a restarted host resumes it, and
//! every judged step. At most one runs per model (a unique index says so); a
//! promotion moves the alias and ends the rollout in one transaction.

use crate::aliases::{move_alias_in, AliasMove};
use crate::models::PREFIX;
use crate::{Registry, RegistryError, Result};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::Serialize;

/// The longest reason or step detail kept.
pub const MAX_ROLLOUT_TEXT: usize = 8192;

/// A rollout to start.
pub struct NewRollout<'a> {
    pub tenant: &'a str,
    pub model: &'a str,
    pub alias: &'a str,
    pub candidate: &'a str,
    /// The analysis' settings, as JSON (the host's own format).
    pub spec: &'a str,
    pub actor: &'a str,
    pub reason: &'a str,
    pub now_ms: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RolloutRecord {
    pub id: i64,
    pub tenant: String,
    pub model: String,
    pub alias: String,
    /// Where the alias pointed when the rollout started.
    pub baseline: String,
    pub candidate: String,
    pub spec: String,
    pub actor: String,
    /// `running`, `promoted`, `rolled_back` or `aborted`.
    pub state: String,
    /// The step being held (0-based).
    pub step: u32,
    /// Failed judgements so far.
    pub failures: u32,
    pub started_ms: u64,
    pub step_started_ms: u64,
    pub updated_ms: u64,
    /// Why it started, or why it ended.
    pub reason: String,
}

/// A judged interval of a step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RolloutStep {
    pub at_ms: u64,
    pub step: u32,
    /// `passed`, `failed`, `resumed`, `promoted`, `rolled_back`...
    pub outcome: String,
    /// The measurements, as JSON.
    pub detail: serde_json::Value,
}

/// A change to a running rollout.
pub struct RolloutUpdate<'a> {
    pub step: u32,
    pub failures: u32,
    pub step_started_ms: u64,
    /// `None`: still running.
    pub end: Option<(&'a str, &'a str)>,
    /// Move the alias to the candidate in the same transaction (a promotion).
    pub promote: bool,
    /// What to append to its step history.
    pub record: RolloutStep,
}

const COLUMNS: &str = "id, tenant, model, alias, baseline, candidate, spec, actor, state, step, \
                       failures, started_ms, step_started_ms, updated_ms, reason";

fn by_id(tx: &rusqlite::Transaction<'_>, id: i64) -> rusqlite::Result<RolloutRecord> {
    tx.query_row(
        &format!("SELECT {COLUMNS} FROM rollouts WHERE id = ?1"),
        params![id],
        row,
    )
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RolloutRecord> {
    Ok(RolloutRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        model: r.get(2)?,
        alias: r.get(3)?,
        baseline: r.get(4)?,
        candidate: r.get(5)?,
        spec: r.get(6)?,
        actor: r.get(7)?,
        state: r.get(8)?,
        step: r.get(9)?,
        failures: r.get(10)?,
        started_ms: r.get::<_, i64>(11)? as u64,
        step_started_ms: r.get::<_, i64>(12)? as u64,
        updated_ms: r.get::<_, i64>(13)? as u64,
        reason: r.get(14)?,
    })
}

fn capped(text: &str) -> Result<&str> {
    match text.len() > MAX_ROLLOUT_TEXT {
        true => Err(RegistryError::Invalid(format!(
            "a rollout's reason or step detail is at most {MAX_ROLLOUT_TEXT} bytes"
        ))),
        false => Ok(text),
    }
}

impl Registry {
    /// Start a rollout of `candidate` against where `alias` points now. Refused
    /// (`Busy`) while another rollout of the model runs, and when the alias already
    /// points at the candidate.
    pub fn start_rollout(&self, new: &NewRollout<'_>) -> Result<RolloutRecord> {
        crate::check_model_name(new.model)?;
        crate::check_alias(new.alias)?;
        capped(new.reason)?;
        let key = format!("{PREFIX}{}", new.model);
        let mut conn = self.index().writer()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !crate::index::version_exists(&tx, new.tenant, &key, new.candidate)? {
            return Err(RegistryError::NotFound(format!(
                "model `{}@{}` not found",
                new.model, new.candidate
            )));
        }
        let baseline =
            crate::index::channel_on(&tx, new.tenant, &key, &format!("alias:{}", new.alias))?
                .ok_or_else(|| {
                    RegistryError::NotFound(format!(
                        "model `{}` has no alias `{}` to roll out against",
                        new.model, new.alias
                    ))
                })?;
        if baseline == new.candidate {
            return Err(RegistryError::Invalid(format!(
                "`{}@{}` already is {}",
                new.model, new.alias, new.candidate
            )));
        }
        let running: Option<String> = tx
            .query_row(
                "SELECT candidate FROM rollouts WHERE tenant = ?1 AND model = ?2 AND state = 'running'",
                params![new.tenant, new.model],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = running {
            return Err(RegistryError::Busy(format!(
                "a rollout of `{}` is running (candidate {other}): abort it first",
                new.model
            )));
        }
        let now = new.now_ms as i64;
        tx.execute(
            "INSERT INTO rollouts (tenant, model, alias, baseline, candidate, spec, actor, state,
                 step, failures, started_ms, step_started_ms, updated_ms, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', 0, 0, ?8, ?8, ?8, ?9)",
            params![
                new.tenant,
                new.model,
                new.alias,
                baseline,
                new.candidate,
                new.spec,
                new.actor,
                now,
                new.reason
            ],
        )?;
        let id = tx.last_insert_rowid();
        let record = by_id(&tx, id)?;
        tx.commit()?;
        Ok(record)
    }

    /// Apply `u` to running rollout `id`; with `u.promote`, move its alias to the
    /// candidate too (both or neither). `NotFound` when it is not running any more.
    pub fn update_rollout(
        &self,
        id: i64,
        u: &RolloutUpdate<'_>,
    ) -> Result<(RolloutRecord, Option<AliasMove>)> {
        let detail = u.record.detail.to_string();
        capped(&detail)?;
        if let Some((_, reason)) = u.end {
            capped(reason)?;
        }
        let mut conn = self.index().writer()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now: RolloutRecord = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM rollouts WHERE id = ?1 AND state = 'running'"),
                params![id],
                row,
            )
            .optional()?
            .ok_or_else(|| RegistryError::NotFound(format!("rollout {id} is not running")))?;
        let moved = match (u.promote, u.end) {
            (true, Some((_, reason))) => move_alias_in(
                &tx,
                &now.tenant,
                &now.model,
                &now.alias,
                &now.candidate,
                &format!("rollout {id}"),
                reason,
            )?,
            _ => None,
        };
        let (state, reason) = match u.end {
            Some((state, reason)) => (state, reason),
            None => (now.state.as_str(), now.reason.as_str()),
        };
        tx.execute(
            "UPDATE rollouts SET step = ?2, failures = ?3, step_started_ms = ?4, state = ?5,
                 reason = ?6, updated_ms = ?7 WHERE id = ?1",
            params![
                id,
                u.step,
                u.failures,
                u.step_started_ms as i64,
                state,
                reason,
                u.record.at_ms as i64
            ],
        )?;
        let seq: i64 = tx.query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM rollout_steps WHERE rollout = ?1",
            params![id],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO rollout_steps (rollout, seq, at_ms, step, outcome, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                seq,
                u.record.at_ms as i64,
                u.record.step,
                u.record.outcome,
                detail
            ],
        )?;
        let record = by_id(&tx, id)?;
        tx.commit()?;
        Ok((record, moved))
    }

    /// Every running rollout, of every tenant (what a starting host resumes).
    pub fn running_rollouts(&self) -> Result<Vec<RolloutRecord>> {
        let conn = self.index().reader()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM rollouts WHERE state = 'running' ORDER BY id"
        ))?;
        let rows = stmt.query_map([], row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Model `model`'s rollouts, newest first, at most `limit`.
    pub fn rollouts(&self, tenant: &str, model: &str, limit: usize) -> Result<Vec<RolloutRecord>> {
        let conn = self.index().reader()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM rollouts WHERE tenant = ?1 AND model = ?2 ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![tenant, model, limit as i64], row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Rollout `id`'s judged steps, oldest first.
    pub fn rollout_steps(&self, id: i64) -> Result<Vec<RolloutStep>> {
        let conn = self.index().reader()?;
        let mut stmt = conn.prepare(
            "SELECT at_ms, step, outcome, detail FROM rollout_steps WHERE rollout = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![id], |r| {
            let detail: String = r.get(3)?;
            Ok(RolloutStep {
                at_ms: r.get::<_, i64>(0)? as u64,
                step: r.get(1)?,
                outcome: r.get(2)?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path()).unwrap();
        for v in ["1.0.0", "1.1.0", "1.2.0"] {
            let version = semver::Version::parse(v).unwrap();
            r.publish_model("t", "m", &version, "onnx", "{}", v.as_bytes())
                .unwrap();
        }
        r.move_model_alias("t", "m", "champion", "1.0.0", "a", "first")
            .unwrap();
        (dir, r)
    }

    fn new<'a>(candidate: &'a str) -> NewRollout<'a> {
        NewRollout {
            tenant: "t",
            model: "m",
            alias: "champion",
            candidate,
            spec: "{}",
            actor: "test",
            reason: "r",
            now_ms: 1000,
        }
    }

    fn step(outcome: &str) -> RolloutStep {
        RolloutStep {
            at_ms: 2000,
            step: 1,
            outcome: outcome.into(),
            detail: serde_json::json!({"calls": 3}),
        }
    }

    #[test]
    fn one_rollout_runs_per_model_and_a_promotion_moves_the_alias_with_it() {
        let (_dir, r) = registry();
        let first = r.start_rollout(&new("1.1.0")).unwrap();
        assert_eq!(
            (first.baseline.as_str(), first.state.as_str()),
            ("1.0.0", "running")
        );
        assert!(matches!(
            r.start_rollout(&new("1.2.0")),
            Err(RegistryError::Busy(_))
        ));
        assert!(matches!(
            r.start_rollout(&new("9.0.0")),
            Err(RegistryError::NotFound(_))
        ));
        let (moved, _) = r
            .update_rollout(
                first.id,
                &RolloutUpdate {
                    step: 1,
                    failures: 0,
                    step_started_ms: 2000,
                    end: None,
                    promote: false,
                    record: step("passed"),
                },
            )
            .unwrap();
        assert_eq!((moved.step, moved.state.as_str()), (1, "running"));
        assert_eq!(r.running_rollouts().unwrap().len(), 1);
        let (done, alias) = r
            .update_rollout(
                first.id,
                &RolloutUpdate {
                    step: 1,
                    failures: 0,
                    step_started_ms: 2000,
                    end: Some(("promoted", "every step passed")),
                    promote: true,
                    record: step("promoted"),
                },
            )
            .unwrap();
        assert_eq!(done.state, "promoted");
        assert_eq!(alias.unwrap().to, "1.1.0");
        assert_eq!(r.model_alias("t", "m", "champion").unwrap(), "1.1.0");
        assert!(r.running_rollouts().unwrap().is_empty());
        // Ended: no more updates; the next one may start.
        assert!(r
            .update_rollout(
                first.id,
                &RolloutUpdate {
                    step: 2,
                    failures: 0,
                    step_started_ms: 0,
                    end: None,
                    promote: false,
                    record: step("passed"),
                }
            )
            .is_err());
        let steps = r.rollout_steps(first.id).unwrap();
        assert_eq!(
            steps.iter().map(|s| s.outcome.as_str()).collect::<Vec<_>>(),
            ["passed", "promoted"]
        );
        assert!(r.start_rollout(&new("1.1.0")).is_err(), "already champion");
        let second = r.start_rollout(&new("1.2.0")).unwrap();
        assert_eq!(second.baseline, "1.1.0");
        let (rolled, alias) = r
            .update_rollout(
                second.id,
                &RolloutUpdate {
                    step: 0,
                    failures: 1,
                    step_started_ms: 1000,
                    end: Some(("rolled_back", "error rate")),
                    promote: false,
                    record: step("rolled_back"),
                },
            )
            .unwrap();
        assert_eq!((rolled.state.as_str(), alias), ("rolled_back", None));
        assert_eq!(r.model_alias("t", "m", "champion").unwrap(), "1.1.0");
        let all = r.rollouts("t", "m", 10).unwrap();
        assert_eq!(
            all.iter().map(|r| r.id).collect::<Vec<_>>(),
            [second.id, first.id]
        );
    }
}
