//! Shared by the benches: the first-party components, as built for wasm32-wasip2, and
//! per-call latency percentiles.

use std::path::PathBuf;
use std::time::Duration;

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

/// p50 and p99 of a set of per-call latencies.
#[allow(dead_code)] // not every bench takes percentiles (invoke.rs uses criterion)
pub fn percentiles(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    (d[d.len() / 2], d[d.len() * 99 / 100])
}
