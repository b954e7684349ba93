//! Deleting versions and collecting the blobs nothing references.
//!
//! A delete removes an index row (one transaction) and leaves the blob: other rows may
//! share it (content addressing), and a publish of the same bytes may be on its way.
//! [`Registry::gc`] removes every blob no row references, excluded from publishes by
//! the registry's publish/gc lock (see [`Registry`]'s `publish_gc`).

use crate::{Digest, Registry, RegistryError, Result, VersionRecord};
use std::collections::HashSet;
use std::sync::PoisonError;

/// A deleted version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub record: VersionRecord,
    /// The version `stable` points at after the delete; `None` if no version is left.
    pub serving: Option<String>,
}

/// What [`Registry::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The blobs it deleted.
    pub removed: Vec<Digest>,
    /// How many blobs it kept because a row references them.
    pub kept: usize,
}

impl Registry {
    /// Delete one version of a function or pipeline, in one transaction. Deleting the
    /// version `stable` points at is refused unless `force`; with `force`, `stable`
    /// moves to the highest remaining version by semver (or goes when none remain).
    /// The blob stays until [`Registry::gc`].
    pub fn delete_version(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        force: bool,
    ) -> Result<Deleted> {
        let not_found =
            || RegistryError::NotFound(format!("function `{name}@{version}` not found"));
        // Models are deleted with `delete_model`, which knows their stored names.
        if name.starts_with(crate::models::PREFIX) {
            return Err(not_found());
        }
        let (record, serving) = self
            .index()
            .delete(tenant, name, version, force)?
            .ok_or_else(not_found)?;
        Ok(Deleted { record, serving })
    }

    /// Every digest any index row references: functions, pipelines and models of every
    /// tenant.
    pub fn referenced_digests(&self) -> Result<HashSet<Digest>> {
        self.index()
            .digests()?
            .iter()
            .map(|d| {
                Digest::parse(d).map_err(|_| {
                    RegistryError::Storage(format!("index row has a bad digest `{d}`"))
                })
            })
            .collect()
    }

    /// Delete every blob no index row references. Holds the publish/gc lock for
    /// writing throughout, so no publish is between its blob put and its commit: a
    /// blob a publish relies on is either referenced when gc reads the index, or
    /// written again after gc. An index that cannot be read fully deletes nothing.
    pub fn gc(&self) -> Result<GcReport> {
        let _exclusive = self
            .publish_gc
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let referenced = self.referenced_digests()?;
        let mut report = GcReport::default();
        for digest in self.blobs().list()? {
            match referenced.contains(&digest) {
                true => report.kept += 1,
                false => {
                    self.blobs().delete(&digest)?;
                    report.removed.push(digest);
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use crate::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    fn publish(reg: &Registry, name: &str, version: &str, bytes: &[u8]) -> PublishOutcome {
        let version = semver::Version::parse(version).unwrap();
        reg.publish(&NewVersion {
            tenant: "t",
            name,
            version: &version,
            kind: "transform",
            world: "quiver:ml/transform@0.2.0",
            manifest: "{}",
            bytes,
        })
        .unwrap()
        .1
    }

    fn stable(reg: &Registry, name: &str) -> Option<String> {
        reg.index().channel("t", name, "stable").unwrap()
    }

    #[test]
    fn delete_refuses_the_serving_version_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        publish(&reg, "f", "1.0.0", b"one");
        publish(&reg, "f", "2.0.0", b"two");
        publish(&reg, "f", "1.5.0", b"three"); // serving, not the highest
        reg.index()
            .set_channel("t", "f", "canary", "1.0.0")
            .unwrap();

        // Not serving: deleted, stable stays.
        let d = reg.delete_version("t", "f", "1.0.0", false).unwrap();
        assert_eq!(d.record.version, "1.0.0");
        assert_eq!(d.serving.as_deref(), Some("1.5.0"));
        assert_eq!(reg.index().channel("t", "f", "canary").unwrap(), None);
        assert!(matches!(
            reg.delete_version("t", "f", "1.0.0", false),
            Err(RegistryError::NotFound(_))
        ));

        // Serving: refused, nothing changes.
        let err = reg.delete_version("t", "f", "1.5.0", false).unwrap_err();
        assert!(
            matches!(&err, RegistryError::Invalid(m) if m.contains("serving version") && m.contains("--force")),
            "{err}"
        );
        assert_eq!(reg.index().versions("t", "f").unwrap().len(), 2);
        assert_eq!(stable(&reg, "f").as_deref(), Some("1.5.0"));

        // Forced: stable moves to the highest remaining version.
        let d = reg.delete_version("t", "f", "1.5.0", true).unwrap();
        assert_eq!(d.serving.as_deref(), Some("2.0.0"));
        assert_eq!(reg.resolve("t", "f", None).unwrap().version, "2.0.0");

        // The last one: the channel goes, the function no longer resolves.
        let d = reg.delete_version("t", "f", "2.0.0", true).unwrap();
        assert_eq!(d.serving, None);
        assert_eq!(stable(&reg, "f"), None);
        assert!(matches!(
            reg.resolve("t", "f", None),
            Err(RegistryError::NotFound(_))
        ));
        // Blobs stay until gc.
        assert!(reg.blobs().has(&Digest::of(b"two")));
    }

    #[test]
    fn delete_model_removes_only_that_model_version() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let v = |s: &str| semver::Version::parse(s).unwrap();
        reg.publish_model("t", "m", &v("1.0.0"), "onnx", "{}", b"a")
            .unwrap();
        reg.publish_model("t", "m", &v("1.1.0"), "onnx", "{}", b"b")
            .unwrap();
        // The newest model version is deleted without force: models serve by range.
        let d = reg.delete_model("t", "m", "1.1.0").unwrap();
        assert_eq!((d.name.as_str(), d.version.as_str()), ("m", "1.1.0"));
        assert_eq!(reg.model_versions("t", "m").unwrap().len(), 1);
        assert!(matches!(
            reg.delete_model("t", "m", "1.1.0"),
            Err(RegistryError::NotFound(_))
        ));
        assert!(matches!(
            reg.delete_model("t", "nope", "1.0.0"),
            Err(RegistryError::NotFound(_))
        ));
        // A function delete does not reach models by their stored name.
        assert!(matches!(
            reg.delete_version("t", "model:m", "1.0.0", true),
            Err(RegistryError::NotFound(_))
        ));
        reg.delete_model("t", "m", "1.0.0").unwrap();
        assert!(reg.list_models("t").unwrap().is_empty());
    }

    #[test]
    fn gc_removes_unreferenced_blobs_and_keeps_referenced_ones() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        publish(&reg, "f", "1.0.0", b"one");
        publish(&reg, "f", "2.0.0", b"two");
        publish(&reg, "g", "1.0.0", b"one"); // shares f@1.0.0's blob
        reg.publish_model(
            "u",
            "m",
            &semver::Version::parse("1.0.0").unwrap(),
            "onnx",
            "{}",
            b"model",
        )
        .unwrap();
        let stray = reg.blobs().put(b"stray").unwrap();
        let report = reg.gc().unwrap();
        assert_eq!(report.removed, vec![stray]);
        assert_eq!(report.kept, 3);

        reg.delete_version("t", "f", "1.0.0", false).unwrap();
        // Still referenced by g@1.0.0.
        assert!(reg.gc().unwrap().removed.is_empty());
        reg.delete_version("t", "g", "1.0.0", true).unwrap();
        assert_eq!(reg.gc().unwrap().removed, vec![Digest::of(b"one")]);
        assert!(!reg.blobs().has(&Digest::of(b"one")));
        let want: std::collections::HashSet<Digest> =
            [Digest::of(b"two"), Digest::of(b"model")].into();
        assert_eq!(reg.referenced_digests().unwrap(), want);
        for d in want {
            reg.blobs().get(&d).unwrap();
        }
    }

    /// gc in a loop against publishes of bytes whose blob is on disk but unreferenced:
    /// every version a publish creates has its blob, then and at the end.
    #[test]
    fn gc_never_removes_a_blob_a_concurrent_publish_commits() {
        const PUBLISHERS: usize = 4;
        const ROUNDS: usize = 40;
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let bytes = b"shared bytes".as_slice();
        let digest = Digest::of(bytes);
        publish(&reg, "seed", "1.0.0", bytes);
        reg.delete_version("t", "seed", "1.0.0", true).unwrap();
        assert!(reg.blobs().has(&digest)); // on disk, unreferenced

        /// Counts a publisher as done when it returns or panics, so gc's loop ends.
        struct Finished<'a>(&'a AtomicUsize);
        impl Drop for Finished<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let done = AtomicUsize::new(0);
        let start = Barrier::new(PUBLISHERS + 1);
        std::thread::scope(|s| {
            s.spawn(|| {
                start.wait();
                while done.load(Ordering::SeqCst) < PUBLISHERS {
                    reg.gc().unwrap();
                }
            });
            for p in 0..PUBLISHERS {
                let (reg, start, done) = (&reg, &start, &done);
                s.spawn(move || {
                    let _finished = Finished(done);
                    let name = format!("f{p}");
                    start.wait();
                    for round in 0..ROUNDS {
                        let version = format!("2.0.{round}");
                        assert_eq!(
                            publish(reg, &name, &version, bytes),
                            PublishOutcome::Created
                        );
                        // Referenced now: no gc may take it.
                        reg.blobs().get(&digest).unwrap();
                        // Unreferenced again (unless another publisher holds it), so
                        // the next publish races gc; the last round stays.
                        if round + 1 < ROUNDS {
                            reg.delete_version("t", &name, &version, true).unwrap();
                        }
                    }
                });
            }
        });
        reg.gc().unwrap();
        let rows = reg.index().all_versions("t").unwrap();
        assert_eq!(rows.len(), PUBLISHERS);
        for r in rows {
            let d = r.digest().unwrap();
            assert!(
                reg.blobs().has(&d),
                "{}@{} lost its blob",
                r.name,
                r.version
            );
            reg.blobs().get(&d).unwrap();
        }
    }
}
