//! Traffic splits: while a function has one, its unpinned calls go to its versions
//! in proportion to their weights instead of to `stable`. Set in one transaction
//! that checks every version exists; an empty split removes it. A function may also
//! have one shadow version, which sees a copy of its calls (their answers are only
//! recorded).

use crate::index::version_exists;
use crate::{Registry, RegistryError, Result};
use rusqlite::{params, TransactionBehavior};

/// Versions one split may name.
pub const MAX_SPLIT: usize = 16;

impl Registry {
    /// Replace `name`'s split with `weights` (`version`, weight > 0); `[]` removes it.
    pub fn set_traffic(&self, tenant: &str, name: &str, weights: &[(String, u32)]) -> Result<()> {
        if weights.len() > MAX_SPLIT {
            return Err(RegistryError::Invalid(format!(
                "a split names at most {MAX_SPLIT} versions"
            )));
        }
        let mut conn = self.index().writer()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (version, weight) in weights {
            if *weight == 0 {
                return Err(RegistryError::Invalid(format!(
                    "{version}: a weight is a positive number (drop the version instead)"
                )));
            }
            if !version_exists(&tx, tenant, name, version)? {
                return Err(RegistryError::NotFound(format!(
                    "`{name}@{version}` not found"
                )));
            }
        }
        tx.execute(
            "DELETE FROM traffic WHERE tenant = ?1 AND name = ?2",
            params![tenant, name],
        )?;
        for (version, weight) in weights {
            tx.execute(
                "INSERT INTO traffic (tenant, name, version, weight) VALUES (?1, ?2, ?3, ?4)",
                params![tenant, name, version, weight],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// `name`'s split, by version (empty: none, `stable` serves).
    pub fn traffic(&self, tenant: &str, name: &str) -> Result<Vec<(String, u32)>> {
        let conn = self.index().reader()?;
        let mut stmt = conn.prepare(
            "SELECT version, weight FROM traffic WHERE tenant = ?1 AND name = ?2 ORDER BY version",
        )?;
        let rows = stmt.query_map(params![tenant, name], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

impl Registry {
    /// Mirror `name`'s calls to `version` (`None` ends the shadow).
    pub fn set_shadow(&self, tenant: &str, name: &str, version: Option<&str>) -> Result<()> {
        let mut conn = self.index().writer()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM shadows WHERE tenant = ?1 AND name = ?2",
            params![tenant, name],
        )?;
        if let Some(version) = version {
            if !version_exists(&tx, tenant, name, version)? {
                return Err(RegistryError::NotFound(format!(
                    "`{name}@{version}` not found"
                )));
            }
            tx.execute(
                "INSERT INTO shadows (tenant, name, version) VALUES (?1, ?2, ?3)",
                params![tenant, name, version],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The version `name`'s calls are mirrored to, if any.
    pub fn shadow(&self, tenant: &str, name: &str) -> Result<Option<String>> {
        let conn = self.index().reader()?;
        let mut stmt =
            conn.prepare("SELECT version FROM shadows WHERE tenant = ?1 AND name = ?2")?;
        let mut rows = stmt.query_map(params![tenant, name], |r| r.get(0))?;
        Ok(rows.next().transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewVersion;

    #[test]
    fn a_split_names_versions_that_exist() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path()).unwrap();
        let wasm = wat::parse_str("(component)").unwrap();
        for v in ["1.0.0", "1.1.0"] {
            r.publish(&NewVersion {
                tenant: "t",
                name: "f",
                version: &semver::Version::parse(v).unwrap(),
                kind: "transform",
                world: "transform",
                manifest: "",
                bytes: &wasm,
            })
            .unwrap();
        }
        let split = vec![("1.0.0".to_string(), 90), ("1.1.0".to_string(), 10)];
        r.set_traffic("t", "f", &split).unwrap();
        assert_eq!(r.traffic("t", "f").unwrap(), split);
        assert!(r.set_traffic("t", "f", &[("9.0.0".into(), 1)]).is_err());
        assert!(r.set_traffic("t", "f", &[("1.0.0".into(), 0)]).is_err());
        assert_eq!(
            r.traffic("t", "f").unwrap(),
            split,
            "a refused split changes nothing"
        );
        r.set_traffic("t", "f", &[]).unwrap();
        assert!(r.traffic("t", "f").unwrap().is_empty());

        // One shadow at most, of a version that exists.
        assert_eq!(r.shadow("t", "f").unwrap(), None);
        r.set_shadow("t", "f", Some("1.1.0")).unwrap();
        r.set_shadow("t", "f", Some("1.0.0")).unwrap();
        assert_eq!(r.shadow("t", "f").unwrap().as_deref(), Some("1.0.0"));
        assert!(r.set_shadow("t", "f", Some("9.0.0")).is_err());
        assert_eq!(r.shadow("t", "f").unwrap().as_deref(), Some("1.0.0"));
        r.set_shadow("t", "f", None).unwrap();
        assert_eq!(r.shadow("t", "f").unwrap(), None);
    }
}
