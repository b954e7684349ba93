//! Log probe: per row, `lines` lines to stdout (`out <i>`), one to stderr, and one
//! `quiver:ml/log` info line; a row with `flood = true` writes 1 MiB to stdout
//! first (past the host's per-call budget). Answers the rows it saw.
use quiver_sdk::{Batch, Error};

fn probe(input: Batch) -> Result<Batch, Error> {
    let lines = input.i64s("lines")?;
    let flood = input
        .bools("flood")
        .map(<[bool]>::to_vec)
        .unwrap_or_default();
    for (row, n) in lines.iter().enumerate() {
        if flood.get(row).copied().unwrap_or(false) {
            print!("{}", "x".repeat(1 << 20));
        }
        for i in 0..(*n).clamp(0, 10_000) {
            println!("out {row}.{i}");
        }
        eprintln!("err {row}");
        quiver_sdk::log::info(&format!("log {row}"));
    }
    Batch::new().with_i64("seen", vec![lines.len() as i64])
}

quiver_sdk::transform!(probe);
