//! Model aliases (as MLflow's: `champion`, `challenger`) with their full history:
//! who moved each one, when, from which version to which, and why. An alias is a
//! channel of the model's index entry (`alias:<name>`); every move is one
//! `BEGIN IMMEDIATE` transaction that checks the version, moves the channel and
//! appends the history row, so the history never disagrees with the alias.

use crate::index::{channel_on, upsert_channel, version_exists};
use crate::models::PREFIX;
use crate::{Registry, RegistryError, Result};
use rusqlite::{params, TransactionBehavior};
use serde::Serialize;
use std::time::SystemTime;

/// The longest reason kept with a move.
pub const MAX_ALIAS_REASON: usize = 1024;

/// One move of an alias.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AliasMove {
    pub alias: String,
    /// `None`: the alias was made by this move.
    pub from: Option<String>,
    pub to: String,
    pub actor: String,
    pub reason: String,
    /// RFC 3339, seconds.
    pub at: String,
}

/// An alias: 1-32 characters of a-z, 0-9 and '-', starting with a letter (so that it
/// never reads as a semver range: `fraud-model@champion` vs `fraud-model@^1`).
pub fn check_alias(alias: &str) -> Result<()> {
    let ok = alias.len() <= 32
        && alias.starts_with(|c: char| c.is_ascii_lowercase())
        && alias
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    match ok {
        true => Ok(()),
        false => Err(RegistryError::Invalid(format!(
            "alias `{}` must be 1-32 characters of a-z, 0-9 and '-', starting with a letter",
            alias.chars().take(64).collect::<String>()
        ))),
    }
}

/// Move `alias` inside the caller's transaction (which commits it): check the
/// version, move the channel, append the history row.
pub(crate) fn move_alias_in(
    tx: &rusqlite::Transaction<'_>,
    tenant: &str,
    name: &str,
    alias: &str,
    version: &str,
    actor: &str,
    reason: &str,
) -> Result<Option<AliasMove>> {
    let key = format!("{PREFIX}{name}");
    if !version_exists(tx, tenant, &key, version)? {
        return Err(RegistryError::NotFound(format!(
            "model `{name}@{version}` not found"
        )));
    }
    let from = channel_on(tx, tenant, &key, &channel(alias))?;
    if from.as_deref() == Some(version) {
        return Ok(None);
    }
    upsert_channel(tx, tenant, &key, &channel(alias), version)?;
    let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    tx.execute(
        "INSERT INTO alias_history (tenant, name, alias, from_version, to_version, actor, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![tenant, key, alias, from, version, actor, reason, at],
    )?;
    Ok(Some(AliasMove {
        alias: alias.to_string(),
        from,
        to: version.to_string(),
        actor: actor.to_string(),
        reason: reason.to_string(),
        at,
    }))
}

fn channel(alias: &str) -> String {
    format!("alias:{alias}")
}

impl Registry {
    /// Point `alias` of model `name` at `version` (which must exist), recording who
    /// and why. Moving it to where it already points records nothing and is `None`.
    pub fn move_model_alias(
        &self,
        tenant: &str,
        name: &str,
        alias: &str,
        version: &str,
        actor: &str,
        reason: &str,
    ) -> Result<Option<AliasMove>> {
        crate::check_model_name(name)?;
        check_alias(alias)?;
        if reason.len() > MAX_ALIAS_REASON {
            return Err(RegistryError::Invalid(format!(
                "a reason is at most {MAX_ALIAS_REASON} bytes"
            )));
        }
        let mut conn = self.index().writer()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let moved = move_alias_in(&tx, tenant, name, alias, version, actor, reason)?;
        tx.commit()?;
        Ok(moved)
    }

    /// The version `alias` of model `name` points at.
    pub fn model_alias(&self, tenant: &str, name: &str, alias: &str) -> Result<String> {
        let key = format!("{PREFIX}{name}");
        channel_on(&*self.index().reader()?, tenant, &key, &channel(alias))?.ok_or_else(|| {
            RegistryError::NotFound(format!(
                "model `{name}` has no alias `{alias}` (set one with `quiver models alias`)"
            ))
        })
    }

    /// Every alias of model `name` and where it points, by alias.
    pub fn model_aliases(&self, tenant: &str, name: &str) -> Result<Vec<(String, String)>> {
        let key = format!("{PREFIX}{name}");
        let conn = self.index().reader()?;
        let mut stmt = conn.prepare(
            "SELECT substr(channel, 7), version FROM channels
             WHERE tenant = ?1 AND name = ?2 AND channel LIKE 'alias:%' ORDER BY channel",
        )?;
        let rows = stmt.query_map(params![tenant, key], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Every move of every alias of model `name`, oldest first.
    pub fn alias_history(&self, tenant: &str, name: &str) -> Result<Vec<AliasMove>> {
        let key = format!("{PREFIX}{name}");
        let conn = self.index().reader()?;
        let mut stmt = conn.prepare(
            "SELECT alias, from_version, to_version, actor, reason, at FROM alias_history
             WHERE tenant = ?1 AND name = ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![tenant, key], |r| {
            Ok(AliasMove {
                alias: r.get(0)?,
                from: r.get(1)?,
                to: r.get(2)?,
                actor: r.get(3)?,
                reason: r.get(4)?,
                at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_are_kept_in_order_and_need_a_version_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path()).unwrap();
        for v in ["1.0.0", "1.1.0"] {
            r.publish_model(
                "t",
                "m",
                &semver::Version::parse(v).unwrap(),
                "onnx",
                "{}",
                v.as_bytes(),
            )
            .unwrap();
        }
        let first = r
            .move_model_alias("t", "m", "champion", "1.0.0", "alice", "first")
            .unwrap()
            .unwrap();
        assert_eq!(first.from, None);
        assert!(r
            .move_model_alias("t", "m", "champion", "1.0.0", "bob", "again")
            .unwrap()
            .is_none());
        r.move_model_alias("t", "m", "champion", "1.1.0", "bob", "better auc")
            .unwrap();
        assert_eq!(r.model_alias("t", "m", "champion").unwrap(), "1.1.0");
        assert!(matches!(
            r.move_model_alias("t", "m", "champion", "9.9.9", "bob", ""),
            Err(RegistryError::NotFound(_))
        ));
        for bad in ["", "Champ", "1st", "a b", "stable/x"] {
            assert!(
                r.move_model_alias("t", "m", bad, "1.0.0", "x", "").is_err(),
                "{bad}"
            );
        }
        let h = r.alias_history("t", "m").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(
            (h[1].from.as_deref(), h[1].to.as_str(), h[1].actor.as_str()),
            (Some("1.0.0"), "1.1.0", "bob")
        );
        assert_eq!(
            r.model_aliases("t", "m").unwrap(),
            vec![("champion".to_string(), "1.1.0".to_string())]
        );
        assert!(r.alias_history("u", "m").unwrap().is_empty(), "per tenant");
    }
}
