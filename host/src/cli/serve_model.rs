//! Zero-code model serving: `quiver models push FILE --serve` and `quiver
//! serve-model NAME@RANGE` deploy the first-party generic inference function
//! (`functions/model-serve`, embedded in this binary) bound to a model. It is an
//! ordinary deployment: the sandbox, limits, metrics, batching, versions and
//! rollback, scale-to-zero all apply, and `/v2/models/NAME` reports the model's
//! own input and output names, datatypes and shapes.

use super::client::Client;
use crate::manifest::{InferenceSection, Manifest, TensorDecl};
use anyhow::Context as _;
use serde_json::Value;

/// `functions/model-serve` built for wasm32-wasip2. `scripts/first-party.sh`
/// rebuilds it and records the digest of the sources it was built from
/// (`model-serve.sources`), which a test compares with the tree's.
pub const MODEL_SERVE_WASM: &[u8] = include_bytes!("../../first-party/model-serve.wasm");
const MODEL_SERVE_MANIFEST: &str = include_str!("../../../functions/model-serve/quiver.toml");

/// The tensors of a model record (`{name, datatype, shape}` each) as manifest
/// declarations.
fn decls(tensors: &Value) -> Vec<TensorDecl> {
    tensors
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| TensorDecl {
            name: t["name"].as_str().unwrap_or_default().to_string(),
            datatype: t["datatype"].as_str().unwrap_or_default().to_string(),
            shape: t["shape"]
                .as_array()
                .map(|dims| dims.iter().map(|d| d.as_i64().unwrap_or(-1)).collect()),
        })
        .collect()
}

/// The manifest that serves `model` (a model record: name, version, inputs,
/// outputs) as function `function`@the model's version, bound to `name@req`.
pub fn manifest_for(model: &Value, req: &str, function: &str) -> anyhow::Result<Manifest> {
    let name = model["name"]
        .as_str()
        .context("the model record has no name")?;
    let version = model["version"]
        .as_str()
        .context("the model record has no version")?;
    let mut manifest = Manifest::parse(MODEL_SERVE_MANIFEST)?;
    manifest.function.name = function.to_string();
    manifest.function.version = version.to_string();
    manifest.models = [("model".to_string(), format!("{name}@{req}"))].into();
    manifest.inference = Some(InferenceSection {
        inputs: decls(&model["inputs"]),
        outputs: decls(&model["outputs"]),
        ..manifest.inference.unwrap_or_default()
    });
    manifest.check()?;
    Ok(manifest)
}

/// Deploy the serving function for `model` (a model record).
pub async fn serve(
    client: &Client,
    model: &Value,
    req: &str,
    function: &str,
) -> anyhow::Result<Value> {
    let manifest = manifest_for(model, req, function)?;
    client
        .deploy(&manifest.to_toml()?, Some(MODEL_SERVE_WASM.to_vec()), None)
        .await
}

/// The version of model `name` that `req` names: where an alias (`champion`)
/// points now, or the newest version a semver range matches.
pub async fn newest_matching(client: &Client, name: &str, req: &str) -> anyhow::Result<Value> {
    let versions = client.get(&format!("models/{name}/versions")).await?;
    let versions = versions["versions"].as_array().cloned().unwrap_or_default();
    if req.starts_with(|c: char| c.is_ascii_lowercase()) {
        let aliases = client.get(&format!("models/{name}/aliases")).await?;
        let target = aliases["aliases"][req]
            .as_str()
            .with_context(|| format!("model `{name}` has no alias `{req}`"))?;
        return versions
            .into_iter()
            .find(|m| m["version"] == target)
            .with_context(|| format!("`{name}@{req}` points at {target}, which is gone"));
    }
    let range = semver::VersionReq::parse(req).with_context(|| {
        format!("`{req}` is neither an alias nor a version range (`^1`, `=1.2.0`)")
    })?;
    versions
        .iter()
        .filter_map(|m| {
            let v = semver::Version::parse(m["version"].as_str()?).ok()?;
            range.matches(&v).then_some((v, m))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, m)| m.clone())
        .with_context(|| format!("no version of model `{name}` matches `{req}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};
    use std::path::{Path, PathBuf};

    const MODEL_SERVE_SOURCES: &str = include_str!("../../first-party/model-serve.sources");

    /// The files the embedded component is built from, as scripts/first-party.sh
    /// lists them: relative to the repository, sorted.
    fn sources(repo: &Path) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                match p.is_dir() {
                    true => walk(&p, out),
                    false => out.push(p),
                }
            }
        }
        let mut files = Vec::new();
        for d in ["functions/model-serve/src", "sdk/src", "wit"] {
            walk(&repo.join(d), &mut files);
        }
        for f in [
            "functions/model-serve/Cargo.toml",
            "functions/model-serve/quiver.toml",
            "sdk/Cargo.toml",
        ] {
            files.push(repo.join(f));
        }
        let mut rel: Vec<PathBuf> = files
            .into_iter()
            .map(|p| p.strip_prefix(repo).unwrap().to_path_buf())
            .collect();
        // By the path as text, as the script sorts.
        rel.sort_by_key(|p| p.to_string_lossy().into_owned());
        rel
    }

    #[test]
    fn the_embedded_model_serve_is_built_from_the_tree() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut h = Sha256::new();
        for f in sources(repo) {
            let bytes = std::fs::read(repo.join(&f)).unwrap();
            h.update(f.to_string_lossy().as_bytes());
            h.update([0]);
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
        let digest = format!("{:x}", h.finalize());
        assert_eq!(
            MODEL_SERVE_SOURCES.trim(),
            digest,
            "host/first-party/model-serve.wasm is older than its sources: run scripts/first-party.sh"
        );
        assert_eq!(&MODEL_SERVE_WASM[..4], b"\0asm");
    }

    #[test]
    fn a_model_record_becomes_a_manifest_with_its_tensors() {
        let model = serde_json::json!({
            "name": "resnet", "version": "1.2.0",
            "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}],
        });
        let m = manifest_for(&model, "^1", "resnet").unwrap();
        assert_eq!(m.function.name, "resnet");
        assert_eq!(m.function.version, "1.2.0");
        assert_eq!(m.function.kind, "inference");
        assert_eq!(m.models["model"], "resnet@^1");
        let inf = m.inference.unwrap();
        assert_eq!(inf.inputs[0].shape, Some(vec![-1, 3, 224, 224]));
        assert_eq!(inf.outputs[0].datatype, "FP32");
        // It survives the round trip the deploy makes.
        let again = Manifest::parse(&manifest_for(&model, "^1", "r").unwrap().to_toml().unwrap());
        assert!(again.is_ok(), "{again:?}");
    }
}
