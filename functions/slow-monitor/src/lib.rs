//! A monitor that takes its time: waits `[config] sleep_ms` (at most 4000) on the
//! wasi clock, then reports `rows` and `outputs.rows`.
use quiver_sdk::{Batch, Error, Report};

fn observe(inputs: Batch, outputs: Batch) -> Result<Report, Error> {
    let ms: u64 = quiver_sdk::config("sleep_ms")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
        .min(4000);
    wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
    Ok(Report {
        metrics: vec![
            ("rows".into(), inputs.num_rows() as f64),
            ("outputs.rows".into(), outputs.num_rows() as f64),
        ],
        alerts: Vec::new(),
    })
}

quiver_sdk::monitor!(observe);
