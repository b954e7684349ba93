//! Building a function directory into a component with cargo.

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn spinner(visible: bool, message: String) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        pb.set_style(style);
    }
    pb.set_message(message);
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// `cargo build --release --target wasm32-wasip2` in `dir`; returns the .wasm it made.
/// cargo decides whether anything needs rebuilding.
pub async fn build_component(dir: &Path, progress: bool) -> anyhow::Result<PathBuf> {
    let manifest_path = dir
        .join("Cargo.toml")
        .canonicalize()
        .context("locating Cargo.toml")?;
    let pb = spinner(
        progress,
        format!("building {} for wasm32-wasip2", dir.display()),
    );
    let output =
        tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--message-format",
                "json-render-diagnostics",
                "--manifest-path",
            ])
            .arg(&manifest_path)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .context("running cargo (is the Rust toolchain installed?)")?;
    pb.finish_and_clear();
    if !output.status.success() {
        bail!(
            "cargo build failed for {}:\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut found = None;
    for line in output.stdout.split(|b| *b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact"
            || msg["manifest_path"].as_str() != manifest_path.to_str()
        {
            continue;
        }
        for f in msg["filenames"].as_array().into_iter().flatten() {
            if let Some(f) = f.as_str().filter(|f| f.ends_with(".wasm")) {
                found = Some(PathBuf::from(f));
            }
        }
    }
    found.with_context(|| {
        format!(
            "cargo built no .wasm for {} (is it a cdylib?)",
            dir.display()
        )
    })
}
