//! Models are registry artifacts like components: content-addressed bytes plus an
//! index entry per `(tenant, name, version)`, immutable once published. They live in
//! the same index under a name no function can have (`model:` + name; function names
//! are `[a-z0-9-]`), with kind `model`, the format as world and their metadata (JSON:
//! inputs, outputs, lineage) where a function keeps its manifest.

use crate::{NewVersion, PublishOutcome, Registry, RegistryError, Result, VersionRecord};

pub const MODEL_KIND: &str = "model";
pub(crate) const PREFIX: &str = "model:";

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// A stored model record with its plain name.
fn unkeyed(mut r: VersionRecord) -> VersionRecord {
    if let Some(n) = r.name.strip_prefix(PREFIX) {
        r.name = n.to_string();
    }
    r
}

/// A model name: 1-64 characters of a-z, 0-9, '-', '_' and '.'.
pub fn check_model_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    match ok {
        true => Ok(()),
        false => Err(RegistryError::Invalid(format!(
            "model name `{name}` must be 1-64 characters of a-z, 0-9, '-', '_' and '.'"
        ))),
    }
}

impl Registry {
    /// Store a model version (`format` e.g. `onnx`, `metadata` JSON). Same rules as
    /// functions: a version is immutable; the same bytes again are `Unchanged`.
    pub fn publish_model(
        &self,
        tenant: &str,
        name: &str,
        version: &semver::Version,
        format: &str,
        metadata: &str,
        bytes: &[u8],
    ) -> Result<(VersionRecord, PublishOutcome)> {
        check_model_name(name)?;
        let name = key(name);
        let (r, outcome) = self.publish(&NewVersion {
            tenant,
            name: &name,
            version,
            kind: MODEL_KIND,
            world: format,
            manifest: metadata,
            bytes,
        })?;
        Ok((unkeyed(r), outcome))
    }

    /// Every version of a model, oldest first.
    pub fn model_versions(&self, tenant: &str, name: &str) -> Result<Vec<VersionRecord>> {
        Ok(self
            .index()
            .versions(tenant, &key(name))?
            .into_iter()
            .map(unkeyed)
            .collect())
    }

    /// One exact version of a model.
    pub fn model(&self, tenant: &str, name: &str, version: &str) -> Result<VersionRecord> {
        self.index()
            .get(tenant, &key(name), version)?
            .map(unkeyed)
            .ok_or_else(|| RegistryError::NotFound(format!("model `{name}@{version}` not found")))
    }

    /// Delete one version of a model, in one transaction. Models serve by range, not by
    /// channel, so the newest version is deleted like any other (no `force`). Whether
    /// a function still binds the model is the caller's check (see
    /// [`crate::Index::all_versions`]). The blob stays until [`Registry::gc`].
    pub fn delete_model(&self, tenant: &str, name: &str, version: &str) -> Result<VersionRecord> {
        self.index()
            .delete(tenant, &key(name), version, true)?
            .map(|(r, _)| unkeyed(r))
            .ok_or_else(|| RegistryError::NotFound(format!("model `{name}@{version}` not found")))
    }

    /// The highest version of `name` that `range` accepts (`^1`, `=1.2.0`, `*`...).
    pub fn resolve_model(
        &self,
        tenant: &str,
        name: &str,
        range: &semver::VersionReq,
    ) -> Result<VersionRecord> {
        let versions = self.model_versions(tenant, name)?;
        let best = versions
            .iter()
            .filter(|r| r.semver().is_ok_and(|v| range.matches(&v)))
            .max_by_key(|r| r.semver().ok())
            .cloned();
        best.ok_or_else(|| {
            let have: Vec<&str> = versions.iter().map(|r| r.version.as_str()).collect();
            RegistryError::NotFound(match have.is_empty() {
                true => format!("model `{name}` not found (push it with `quiver models push`)"),
                false => format!(
                    "model `{name}` has no version matching `{range}` (have: {})",
                    have.join(", ")
                ),
            })
        })
    }

    /// The newest version of every model of a tenant.
    pub fn list_models(&self, tenant: &str) -> Result<Vec<VersionRecord>> {
        let mut out = Vec::new();
        for name in self.index().names(tenant, MODEL_KIND)? {
            if let Some(name) = name.strip_prefix(PREFIX) {
                if let Some(last) = self.model_versions(tenant, name)?.pop() {
                    out.push(last);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(reg: &Registry, v: &str, bytes: &[u8]) -> Result<(VersionRecord, PublishOutcome)> {
        let v = semver::Version::parse(v).unwrap();
        reg.publish_model("t", "fraud-model", &v, "onnx", "{}", bytes)
    }

    #[test]
    fn resolves_ranges_to_the_highest_match() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        push(&reg, "1.0.0", b"a").unwrap();
        push(&reg, "1.2.0", b"b").unwrap();
        push(&reg, "2.0.0", b"c").unwrap();
        let req = |s: &str| semver::VersionReq::parse(s).unwrap();
        let got = reg.resolve_model("t", "fraud-model", &req("^1")).unwrap();
        assert_eq!(
            (got.name.as_str(), got.version.as_str()),
            ("fraud-model", "1.2.0")
        );
        assert_eq!(got.kind, MODEL_KIND);
        assert_eq!(
            reg.resolve_model("t", "fraud-model", &req("*"))
                .unwrap()
                .version,
            "2.0.0"
        );
        let err = reg
            .resolve_model("t", "fraud-model", &req("^3"))
            .unwrap_err();
        assert!(
            err.to_string().contains("^3") && err.to_string().contains("1.2.0"),
            "{err}"
        );
        let err = reg.resolve_model("t", "nope", &req("^1")).unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
        // Another tenant sees none of them; functions do not list models.
        assert!(reg.resolve_model("u", "fraud-model", &req("*")).is_err());
        assert!(reg.index().list_serving("t").unwrap().is_empty());
        let listed = reg.list_models("t").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].version, "2.0.0");
    }

    #[test]
    fn model_versions_are_immutable() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        push(&reg, "1.0.0", b"a").unwrap();
        assert_eq!(
            push(&reg, "1.0.0", b"a").unwrap().1,
            PublishOutcome::Unchanged
        );
        assert!(matches!(
            push(&reg, "1.0.0", b"changed"),
            Err(RegistryError::Conflict { .. })
        ));
        let v = semver::Version::parse("1.0.0").unwrap();
        assert!(reg
            .publish_model("t", "Bad Name", &v, "onnx", "{}", b"a")
            .is_err());
    }
}
