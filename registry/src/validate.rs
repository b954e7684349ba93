//! Upload validation: is it a component, does it export the world its kind declares,
//! does it import only what the host provides, is it small enough. Each failure is a
//! message that names what is wrong.

use crate::{RegistryError, Result};
use wasmparser::{Encoding, Parser, Payload, Validator, WasmFeatures};

/// What a component imports and exports at its top level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// The export that makes a component of each kind, and the world it belongs to.
pub fn world_of_kind(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "ingest" => ("ingest", "quiver:ml/ingest@0.2.0"),
        "transform" => ("transform", "quiver:ml/transform@0.2.0"),
        "inference" => ("infer", "quiver:ml/inference@0.2.0"),
        "monitor" => ("observe", "quiver:ml/monitor@0.2.0"),
        "trainer" => ("train", "quiver:ml/trainer@0.2.0"),
        "http" => ("wasi:http/incoming-handler", "wasi:http/proxy@0.2.12"),
        _ => return None,
    })
}

/// The version of the `quiver:ml` package (`wit/quiver.wit`) this host links.
pub const QUIVER_ML_VERSION: &str = "0.2.0";

pub const KINDS: &str = "ingest, transform, inference, monitor, trainer, http";

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::Invalid(msg.into())
}

/// `wasi:cli/environment@0.2.6` -> `wasi:cli/environment`.
fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(n, _)| n)
}

pub fn inspect(bytes: &[u8]) -> Result<Inspection> {
    if bytes.is_empty() {
        return Err(invalid("the upload is empty: expected a Wasm component"));
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(invalid(
            "not a WebAssembly binary (missing the `\\0asm` header)",
        ));
    }
    let mut out = Inspection::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| invalid(format!("malformed Wasm: {e}")))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == Encoding::Module {
                    return Err(invalid(
                        "this is a core Wasm module, not a component; build for wasm32-wasip2 \
                         or wrap it with `wasm-tools component new`",
                    ));
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| invalid(format!("malformed import: {e}")))?;
                    // Type imports come with a world's `use` and carry no capability.
                    if !matches!(import.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        out.imports.push(import.name.name.to_string());
                    }
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| invalid(format!("malformed export: {e}")))?;
                    out.exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    validator
        .validate_all(bytes)
        .map_err(|e| invalid(format!("invalid component: {e}")))?;
    Ok(out)
}

/// Validate an upload of `kind`. `provided` lists the interfaces the host links
/// (`wasi:cli/environment`) or whole packages (`wasi:cli/*`), without versions.
pub fn validate_component(
    bytes: &[u8],
    kind: &str,
    provided: &[&str],
    max_size: usize,
) -> Result<Inspection> {
    if bytes.len() > max_size {
        return Err(invalid(format!(
            "component is {} bytes, over the {max_size}-byte limit",
            bytes.len()
        )));
    }
    let (export, world) = world_of_kind(kind)
        .ok_or_else(|| invalid(format!("unknown kind `{kind}` (expected one of: {KINDS})")))?;
    let inspection = inspect(bytes)?;
    if !inspection.exports.iter().any(|e| unversioned(e) == export) {
        return Err(invalid(format!(
            "a `{kind}` component must export `{export}` (world `{world}`); this one exports [{}]",
            inspection.exports.join(", ")
        )));
    }
    // Quiver's own interfaces are versioned with the host: a component built
    // against another version of `quiver:ml` would fail to link, for a reason the
    // linker words badly.
    if let Some(old) = inspection
        .imports
        .iter()
        .find(|i| i.starts_with("quiver:ml/") && !i.ends_with(&format!("@{QUIVER_ML_VERSION}")))
    {
        return Err(invalid(format!(
            "component imports `{old}`; this host speaks quiver:ml@{QUIVER_ML_VERSION}: rebuild it with this release's quiver-sdk"
        )));
    }
    for import in &inspection.imports {
        let name = unversioned(import);
        let ok = provided.iter().any(|p| match p.strip_suffix("/*") {
            Some(package) => name.split_once('/').is_some_and(|(pkg, _)| pkg == package),
            None => *p == name,
        });
        if !ok {
            return Err(invalid(format!(
                "component imports `{import}`, which Quiver does not provide to `{kind}` functions"
            )));
        }
    }
    Ok(inspection)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROVIDED: &[&str] = &["wasi:cli/*", "quiver:ml/log"];

    fn err(bytes: &[u8], kind: &str) -> String {
        validate_component(bytes, kind, PROVIDED, 1 << 20)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn rejects_empty_random_and_core_modules() {
        assert!(err(b"", "transform").contains("empty"));
        assert!(err(b"definitely not wasm", "transform").contains("not a WebAssembly binary"));
        let core = wat::parse_str("(module)").unwrap();
        assert!(err(&core, "transform").contains("core Wasm module"));
    }

    #[test]
    fn checks_exports_imports_and_size() {
        let good = wat::parse_str(
            r#"(component
                 (import "wasi:cli/environment@0.2.0" (instance))
                 (core module $m (func (export "f")))
                 (core instance $i (instantiate $m))
                 (func $f (canon lift (core func $i "f")))
                 (export "transform" (func $f)))"#,
        )
        .unwrap();
        let ok = validate_component(&good, "transform", PROVIDED, 1 << 20).unwrap();
        assert_eq!(ok.exports, vec!["transform"]);
        assert_eq!(ok.imports, vec!["wasi:cli/environment@0.2.0"]);

        assert!(err(&good, "ingest").contains("must export `ingest`"));
        assert!(err(&good, "nonsense").contains("unknown kind `nonsense`"));
        let e = validate_component(&good, "transform", PROVIDED, 10).unwrap_err();
        assert!(e.to_string().contains("over the 10-byte limit"));

        let sneaky = wat::parse_str(
            r#"(component
                 (import "acme:secrets/vault@1.0.0" (instance))
                 (core module $m (func (export "f")))
                 (core instance $i (instantiate $m))
                 (func $f (canon lift (core func $i "f")))
                 (export "transform" (func $f)))"#,
        )
        .unwrap();
        assert!(err(&sneaky, "transform").contains("imports `acme:secrets/vault@1.0.0`"));

        let old = wat::parse_str(
            r#"(component
                 (import "quiver:ml/log@0.1.0" (instance))
                 (core module $m (func (export "f")))
                 (core instance $i (instantiate $m))
                 (func $f (canon lift (core func $i "f")))
                 (export "transform" (func $f)))"#,
        )
        .unwrap();
        let e = err(&old, "transform");
        assert!(
            e.contains("quiver:ml/log@0.1.0") && e.contains("speaks quiver:ml@0.2.0"),
            "{e}"
        );
    }
}
