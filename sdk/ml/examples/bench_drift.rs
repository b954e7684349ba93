//! Drift computation at scale: `features` numeric features, `current` rows each,
//! against a `reference` sample per feature: PSI (Evidently's default binning) and
//! the two-sample KS test per feature, with quiver-ml's code (what the drift
//! monitor runs inside its guest, compiled natively here). Writes the data as raw
//! little-endian f64 (`DIR/ref_<i>.f64`, `DIR/cur_<i>.f64`) so that
//! `scripts/bench-drift.py` times Evidently and SciPy on exactly the same values.
//!
//! `cargo run --release --example bench_drift -- DIR [current] [reference] [features]`
//!
//! With `QUIVER_BENCH_READ=1` it reads the files an earlier run wrote instead:
//! how `scripts/bench-drift.sh` runs the same computation built for
//! `wasm32-wasip2` inside the sandbox (`host/examples/run_guest.rs`) on the same data.
//! The label it prints is `QUIVER_BENCH_LABEL` (default `quiver-ml`).
use std::time::Instant;

fn splitmix(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Roughly normal (a sum of 4 uniforms), shifted by `shift`, rounded to 1e-6.
fn sample(n: usize, seed: u64, shift: f64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            let x: f64 = (0..4).map(|_| splitmix(&mut s)).sum::<f64>() - 2.0 + shift;
            (x * 1e6).round() / 1e6
        })
        .collect()
}

fn read(path: &std::path::Path) -> std::io::Result<Vec<f64>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

fn write(path: &std::path::Path, v: &[f64]) -> std::io::Result<()> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .ok_or("usage: bench_drift DIR [current] [reference] [features]")?,
    );
    let arg = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (current, reference, features) = (arg(2, 1_000_000), arg(3, 100_000), arg(4, 20));
    let label = std::env::var("QUIVER_BENCH_LABEL").unwrap_or_else(|_| "quiver-ml".into());
    let mut data = Vec::new();
    if std::env::var("QUIVER_BENCH_READ").is_ok_and(|v| v == "1") {
        for f in 0..features {
            data.push((
                read(&dir.join(format!("ref_{f}.f64")))?,
                read(&dir.join(format!("cur_{f}.f64")))?,
            ));
        }
    }
    if data.is_empty() {
        std::fs::create_dir_all(&dir)?;
        for f in 0..features {
            let r = sample(reference, 1000 + f as u64, 0.0);
            // Every other feature drifts a little.
            let c = sample(
                current,
                5000 + f as u64,
                if f % 2 == 0 { 0.0 } else { 0.05 },
            );
            write(&dir.join(format!("ref_{f}.f64")), &r)?;
            write(&dir.join(format!("cur_{f}.f64")), &c)?;
            data.push((r, c));
        }
    }
    let started = Instant::now();
    let mut results = Vec::new();
    for (r, c) in &data {
        let psi = quiver_ml::drift::psi(r, c)?;
        let ks = quiver_ml::drift::ks_2samp(r, c)?;
        results.push((psi, ks.statistic, ks.p_value));
    }
    let secs = started.elapsed().as_secs_f64();
    for (f, (psi, d, p)) in results.iter().enumerate() {
        println!("feature {f:2}: psi {psi:.6} ks {d:.6} p {p:.3e}");
    }
    println!(
        "{label}: {features} features x {} rows vs {}: {secs:.3} s (PSI + KS)",
        data.first().map_or(0, |d| d.1.len()),
        data.first().map_or(0, |d| d.0.len())
    );
    Ok(())
}
