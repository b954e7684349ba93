//! Versioned, content-addressed storage of Quiver components, pipelines and models.
//!
//! Two parts with one job each: [`BlobStore`] keeps bytes by sha256 digest, the
//! [`Index`] maps `(tenant, name, version)` to a digest plus metadata and keeps
//! channels (`stable` is the version that serves). [`Registry`] puts them together so
//! that a version appears in the index only after its blob is durably on disk: a
//! `kill -9` at any point leaves either the whole version or none of it (at worst a
//! blob no row references). Deleting a version removes its row only;
//! [`Registry::gc`] removes the blobs no row references.
#![forbid(unsafe_code)]

mod aliases;
mod blob;
mod index;
mod models;
mod retention;
mod rollouts;
mod signatures;
mod traffic;
pub mod validate;

pub use aliases::{check_alias, AliasMove, MAX_ALIAS_REASON};
pub use blob::{BlobStore, Digest};
pub use index::{Index, VersionRecord, BUSY_TIMEOUT, READERS};
pub use models::{check_model_name, MODEL_KIND};
pub use retention::{Deleted, GcReport};
pub use rollouts::{NewRollout, RolloutRecord, RolloutStep, RolloutUpdate};
pub use signatures::MAX_SIGNATURES;
pub use traffic::MAX_SPLIT;

use index::Inserted;
use std::path::Path;
use std::sync::{PoisonError, RwLock};

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
    /// Something is already under way that this would contradict (a second
    /// rollout of one model).
    #[error("{0}")]
    Busy(String),
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
    /// The same version with the same digest was already there; nothing changed.
    Unchanged,
}

pub struct Registry {
    blobs: BlobStore,
    index: Index,
    /// Keeps [`Registry::publish`] and [`Registry::gc`] from interleaving. A publish
    /// holds a read guard from its blob put until its index row commits; gc holds the
    /// write guard from reading the referenced digests until its last delete. Without
    /// it, a publish of bytes whose blob exists but is unreferenced (its version was
    /// deleted) could find the file, skip the write, and commit a row after gc read the
    /// referenced set and before gc removed that file: a version without its blob.
    /// Publishes only share the guard, so they still run concurrently with each other.
    /// The guard protects no data, so a poisoned one is used as is. It covers one
    /// process: run gc in the process that publishes.
    publish_gc: RwLock<()>,
}

impl Registry {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Registry {
            blobs: BlobStore::open(&root.join("blobs"))?,
            index: Index::open(&root.join("index.sqlite3"))?,
            publish_gc: RwLock::new(()),
        })
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Store the bytes, then record the version and point `stable` at it.
    ///
    /// The check for an existing version and the insert are one `BEGIN IMMEDIATE`
    /// transaction: of concurrent publishes of one new version exactly one is
    /// `Created`; the others get `Unchanged` (same digest) or `Conflict` (another
    /// digest). The blob is durably on disk before that transaction commits; a race
    /// lost to a conflicting publish leaves an unreferenced blob, which [`Registry::gc`]
    /// removes. A version already in the index is answered before any blob is written,
    /// and `Unchanged` changes nothing: no channel moves.
    pub fn publish(&self, v: &NewVersion<'_>) -> Result<(VersionRecord, PublishOutcome)> {
        let digest = Digest::of(v.bytes);
        if let Some(existing) = self.index.get(v.tenant, v.name, &v.version.to_string())? {
            return existing_outcome(v, &digest, existing);
        }
        let _publishing = self
            .publish_gc
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        self.blobs.put_as(v.bytes, &digest)?;
        match self.index.insert(v, &digest)? {
            Inserted::Created(record) => Ok((record, PublishOutcome::Created)),
            Inserted::Existing(existing) => existing_outcome(v, &digest, existing),
        }
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
        if !self
            .index
            .move_channel(tenant, name, "stable", &target.version)?
        {
            return Err(RegistryError::NotFound(format!(
                "function `{name}@{}` was deleted while rolling back to it",
                target.version
            )));
        }
        self.resolve(tenant, name, None)
    }
}

/// A publish that found its version already there: `Unchanged` with the same digest,
/// `Conflict` with another.
fn existing_outcome(
    v: &NewVersion<'_>,
    digest: &Digest,
    existing: VersionRecord,
) -> Result<(VersionRecord, PublishOutcome)> {
    match existing.digest == digest.to_string() {
        true => Ok((existing, PublishOutcome::Unchanged)),
        false => Err(RegistryError::Conflict {
            name: v.name.to_string(),
            version: v.version.to_string(),
            existing: existing.digest,
        }),
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
            world: "quiver:ml/transform@0.2.0",
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

    /// 8 threads publish one new version at once: one creates it, the rest see it.
    #[test]
    fn concurrent_publishes_of_one_version_never_fail_on_storage() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        for (round, same_bytes) in [(0, true), (1, false), (2, true), (3, false)] {
            let version = format!("1.0.{round}");
            let barrier = std::sync::Barrier::new(8);
            let results: Vec<Result<(VersionRecord, PublishOutcome)>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|i| {
                        let (reg, barrier, version) = (&reg, &barrier, &version);
                        s.spawn(move || {
                            let bytes = match same_bytes {
                                true => format!("bytes {round}"),
                                false => format!("bytes {round} from {i}"),
                            };
                            barrier.wait();
                            publish(reg, "default", version, bytes.as_bytes())
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let (mut created, mut unchanged, mut conflict) = (0, 0, 0);
            for r in &results {
                match r {
                    Ok((_, PublishOutcome::Created)) => created += 1,
                    Ok((_, PublishOutcome::Unchanged)) => unchanged += 1,
                    Err(RegistryError::Conflict { .. }) => conflict += 1,
                    Err(e) => panic!("round {round}: {e:?}"),
                }
            }
            assert_eq!(created, 1, "round {round}");
            match same_bytes {
                true => assert_eq!((unchanged, conflict), (7, 0), "round {round}"),
                false => assert_eq!((unchanged, conflict), (0, 7), "round {round}"),
            }
            // Every caller's record is the one stored row.
            let stored = reg.index().get("default", "f", &version).unwrap().unwrap();
            for (rec, _) in results.iter().flatten() {
                assert_eq!(rec, &stored);
            }
            reg.blobs().get(&stored.digest().unwrap()).unwrap();
        }
    }

    #[test]
    fn identical_republish_moves_no_channel() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        publish(&reg, "default", "1.0.0", b"one").unwrap();
        publish(&reg, "default", "1.1.0", b"two").unwrap();
        reg.index()
            .set_channel("default", "f", "canary", "1.0.0")
            .unwrap();
        let (rec, outcome) = publish(&reg, "default", "1.0.0", b"one").unwrap();
        assert_eq!(outcome, PublishOutcome::Unchanged);
        assert_eq!(rec.version, "1.0.0");
        assert_eq!(reg.resolve("default", "f", None).unwrap().version, "1.1.0");
        assert_eq!(
            reg.index().channel("default", "f", "canary").unwrap(),
            Some("1.0.0".into())
        );
    }
}
