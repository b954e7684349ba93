//! Versioned, content-addressed storage of Quiver components, pipelines and models.
//!
//! Two parts with one job each: [`BlobStore`] keeps bytes by sha256 digest, the
//! [`Index`] maps `(tenant, name, version)` to a digest plus metadata and keeps
//! channels (`stable` is the version that serves). [`Registry`] puts them together so
//! that a version appears in the index only after its blob is durably on disk: a
//! `kill -9` at any point leaves either the whole version or none of it.
#![forbid(unsafe_code)]

mod blob;
mod index;
mod models;
pub mod validate;

pub use blob::{BlobStore, Digest};
pub use index::{Index, VersionRecord};
pub use models::{check_model_name, MODEL_KIND};

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("{name}@{version} already exists with digest {existing}; versions are immutable, publish a new version")]
    Conflict {
        name: String,
        version: String,
        existing: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("registry storage: {0}")]
    Storage(String),
}

impl From<std::io::Error> for RegistryError {
    fn from(e: std::io::Error) -> Self {
        RegistryError::Storage(e.to_string())
    }
}

impl From<rusqlite::Error> for RegistryError {
    fn from(e: rusqlite::Error) -> Self {
        RegistryError::Storage(e.to_string())
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// What a publish asks to store.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub tenant: &'a str,
    pub name: &'a str,
    pub version: &'a semver::Version,
    pub kind: &'a str,
    pub world: &'a str,
    /// The manifest as deployed (JSON), kept for the host to rebuild the deployment.
    pub manifest: &'a str,
    pub bytes: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    Created,
    /// The same version with the same digest was already there.
    Unchanged,
}

pub struct Registry {
    blobs: BlobStore,
    index: Index,
}

impl Registry {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Registry {
            blobs: BlobStore::open(&root.join("blobs"))?,
            index: Index::open(&root.join("index.sqlite3"))?,
        })
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Store the bytes, then record the version and point `stable` at it, in that order.
    pub fn publish(&self, v: &NewVersion<'_>) -> Result<(VersionRecord, PublishOutcome)> {
        let digest = Digest::of(v.bytes);
        if let Some(existing) = self.index.get(v.tenant, v.name, &v.version.to_string())? {
            if existing.digest != digest.to_string() {
                return Err(RegistryError::Conflict {
                    name: v.name.to_string(),
                    version: v.version.to_string(),
                    existing: existing.digest,
                });
            }
            self.index
                .set_channel(v.tenant, v.name, "stable", &existing.version)?;
            return Ok((existing, PublishOutcome::Unchanged));
        }
        self.blobs.put(v.bytes)?;
        let record = self.index.insert(v, &digest)?;
        Ok((record, PublishOutcome::Created))
    }

    /// The version that serves `name`: `stable`, or a named version.
    pub fn resolve(
        &self,
        tenant: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<VersionRecord> {
        let found = match version {
            Some(v) => self.index.get(tenant, name, v)?,
            None => self.index.serving(tenant, name)?,
        };
        found.ok_or_else(|| match version {
            Some(v) => RegistryError::NotFound(format!("function `{name}@{v}` not found")),
            None => RegistryError::NotFound(format!("function `{name}` not found")),
        })
    }

    /// Point `stable` at `to`, or at the highest version below the current one.
    pub fn rollback(&self, tenant: &str, name: &str, to: Option<&str>) -> Result<VersionRecord> {
        let current = self.resolve(tenant, name, None)?;
        let target = match to {
            Some(v) => self.resolve(tenant, name, Some(v))?,
            None => {
                let cur = current.semver()?;
                let mut older: Vec<VersionRecord> = self
                    .index
                    .versions(tenant, name)?
                    .into_iter()
                    .filter(|r| r.semver().map(|s| s < cur).unwrap_or(false))
                    .collect();
                older.sort_by_key(|r| r.semver().ok());
                older.pop().ok_or_else(|| {
                    RegistryError::Invalid(format!(
                        "`{name}` has no version older than {} to roll back to",
                        current.version
                    ))
                })?
            }
        };
        self.index
            .set_channel(tenant, name, "stable", &target.version)?;
        self.resolve(tenant, name, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(
        reg: &Registry,
        tenant: &str,
        version: &str,
        bytes: &[u8],
    ) -> Result<(VersionRecord, PublishOutcome)> {
        let version = semver::Version::parse(version).unwrap();
        reg.publish(&NewVersion {
            tenant,
            name: "f",
            version: &version,
            kind: "transform",
            world: "quiver:ml/transform@0.1.0",
            manifest: "{}",
            bytes,
        })
    }

    #[test]
    fn versions_are_immutable_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let (rec, outcome) = publish(&reg, "default", "1.0.0", b"one").unwrap();
        assert_eq!(outcome, PublishOutcome::Created);
        assert_eq!(rec.digest, Digest::of(b"one").to_string());
        assert_eq!(
            publish(&reg, "default", "1.0.0", b"one").unwrap().1,
            PublishOutcome::Unchanged
        );
        let err = publish(&reg, "default", "1.0.0", b"two").unwrap_err();
        assert!(matches!(err, RegistryError::Conflict { .. }), "{err}");
        // The conflicting bytes were not stored.
        assert!(!reg.blobs().has(&Digest::of(b"two")));
    }

    #[test]
    fn serving_rollback_and_tenant_separation() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        publish(&reg, "default", "1.0.0", b"one").unwrap();
        publish(&reg, "default", "1.1.0", b"two").unwrap();
        publish(&reg, "default", "2.0.0", b"three").unwrap();
        assert_eq!(reg.resolve("default", "f", None).unwrap().version, "2.0.0");
        assert_eq!(reg.rollback("default", "f", None).unwrap().version, "1.1.0");
        assert_eq!(reg.rollback("default", "f", None).unwrap().version, "1.0.0");
        assert!(reg.rollback("default", "f", None).is_err());
        assert_eq!(
            reg.rollback("default", "f", Some("2.0.0")).unwrap().version,
            "2.0.0"
        );
        assert!(matches!(
            reg.resolve("other", "f", None),
            Err(RegistryError::NotFound(_))
        ));
        assert!(matches!(
            reg.resolve("default", "f", Some("9.9.9")),
            Err(RegistryError::NotFound(_))
        ));
        // The index survives a reopen.
        drop(reg);
        let reg = Registry::open(dir.path()).unwrap();
        assert_eq!(reg.resolve("default", "f", None).unwrap().version, "2.0.0");
        assert_eq!(reg.index().versions("default", "f").unwrap().len(), 3);
    }
}
