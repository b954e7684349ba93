//! Shared by the benches: the first-party components, as built for wasm32-wasip2.

use std::path::PathBuf;

/// `<target>/wasm32-wasip2/release/<name>.wasm` (build the functions first).
pub fn wasm(name: &str) -> Vec<u8> {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (build the functions first)", path.display()))
}
