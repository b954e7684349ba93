//! A transform that misbehaves on purpose, so the tests can prove the host survives
//! hostile guests. The first row's text field `mode` picks:
//!
//! - `loop`: never returns (a busy loop).
//! - `oom`: grows memory without bound, 1 MiB at a time.
//! - `grow`: touches 8 MiB of fresh memory, then echoes (a warm instance that holds
//!   memory).
//! - `trap`: panics.
//! - `fail`: returns `invalid-input`.
//! - `recurse`: unbounded (non-tail) recursion, until the wasm stack overflows (a trap).
//! - `allocs`: many small (48-byte) allocations, never freed, until the memory limit
//!   stops it.
//! - `feature-huge`: puts one 1 MiB text value (`blob`) into group `chaos`, entity
//!   `e`, and returns the host's error as is (it should refuse: values are at most
//!   64 KiB); if the host accepts it, one row with int64 `written` = 1.
//! - `feature-flood`: puts entities `e0`, `e1`, ... into group `chaos`, each with one
//!   60 KiB text value (`blob`), up to the first row's int64 `count` (default
//!   100000); returns the first error as is, or one row with int64 `written`.
//! - `resources`: creates host resources and never drops them (a monotonic-clock
//!   pollable per iteration, at most 10 000 000) until the host refuses; if the loop
//!   ends, one row with int64 `made`.
//! - `big-output`: returns one row with a text field `blob` of 24 MiB.
//! - `read-file`: reads `/etc/passwd` (and lists `/`); one row with text `outcome`:
//!   `read N bytes` if it could, else `denied: ...`.
//! - `env`: one row with int64 `vars`, how many environment variables it sees.
//! - `socket`: opens a TCP connection to the first row's text `target`
//!   (`127.0.0.1:PORT`); text `outcome`: `connected` or `denied: ...`.
//! - `sleep`: waits the first row's int64 `ms` (at most 60 000) on the wasi clock,
//!   then echoes (a function that is running when the host is killed).
//! - `publish`: publishes the batch as rows to the first row's text `topic`, int64
//!   `count` times (default 1); returns the host's error as is, or one row with text
//!   `event_id` (the last one's).
//! - anything else (e.g. `echo`): echoes the batch back.
use quiver_sdk::events::{self, Payload};
use quiver_sdk::features::{self, Value};
use quiver_sdk::{Batch, Error};

/// The feature group this function writes (declared in its manifest).
const GROUP: &str = "chaos";

/// Recurses until the stack runs out: every frame keeps work to do after the call
/// (not a tail call), and `black_box` hides that the end is never reached.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    let below = recurse(std::hint::black_box(depth + 1));
    std::hint::black_box(below.wrapping_add(depth))
}

/// A text value of `bytes` bytes.
fn blob(bytes: usize) -> String {
    "x".repeat(bytes)
}

fn chaos(input: Batch) -> Result<Batch, Error> {
    let mode = input.texts("mode")?.first().cloned().unwrap_or_default();
    match mode.as_str() {
        "loop" => {
            let mut i: u64 = 0;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        "oom" => {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                hog.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hog);
            }
        }
        "grow" => {
            let held = vec![1u8; 8 << 20];
            std::hint::black_box(&held);
            Ok(input)
        }
        "trap" => panic!("chaos asked to trap"),
        "fail" => Err(Error::InvalidInput("chaos asked to fail".into())),
        "recurse" => {
            let depth = recurse(std::hint::black_box(0));
            Batch::new().with_i64("depth", vec![depth as i64])
        }
        "allocs" => {
            let mut held: Vec<Box<[u8; 48]>> = Vec::new();
            loop {
                held.push(std::hint::black_box(Box::new([0u8; 48])));
                std::hint::black_box(&held);
            }
        }
        "feature-huge" => {
            let values = [("blob".to_string(), Value::Text(blob(1 << 20)))];
            features::put(GROUP, "e", &values, None)?;
            Batch::new().with_i64("written", vec![1])
        }
        "feature-flood" => {
            let count = match input.column("count") {
                Ok(_) => input.i64s("count")?.first().copied().unwrap_or(100_000),
                Err(_) => 100_000,
            };
            let values = [("blob".to_string(), Value::Text(blob(60 << 10)))];
            let mut written: i64 = 0;
            while written < count {
                features::put(GROUP, &format!("e{written}"), &values, None)?;
                written += 1;
            }
            Batch::new().with_i64("written", vec![written])
        }
        "resources" => {
            let mut made: i64 = 0;
            while made < 10_000_000 {
                let pollable = wasip2::clocks::monotonic_clock::subscribe_duration(1_000_000_000);
                std::mem::forget(pollable);
                made += 1;
            }
            Batch::new().with_i64("made", vec![made])
        }
        "publish" => {
            let topic = input.texts("topic")?.first().cloned().unwrap_or_default();
            let count = input
                .i64s("count")
                .ok()
                .and_then(|c| c.first().copied())
                .unwrap_or(1);
            let mut id = String::new();
            for _ in 0..count {
                id = events::publish(&topic, &Payload::Rows(input.clone()))?;
            }
            Batch::new().with_text("event_id", vec![id])
        }
        "sleep" => {
            let ms = input
                .i64s("ms")?
                .first()
                .copied()
                .unwrap_or(0)
                .clamp(0, 60_000);
            wasip2::clocks::monotonic_clock::subscribe_duration(ms as u64 * 1_000_000).block();
            Ok(input)
        }
        "read-file" => {
            let outcome = match std::fs::read("/etc/passwd") {
                Ok(b) => format!("read {} bytes", b.len()),
                Err(e) => match std::fs::read_dir("/") {
                    Ok(d) => format!("listed {} entries of /", d.count()),
                    Err(e2) => format!("denied: {e}; {e2}"),
                },
            };
            Batch::new().with_text("outcome", vec![outcome])
        }
        "env" => Batch::new().with_i64("vars", vec![std::env::vars().count() as i64]),
        "socket" => {
            let target = input.texts("target")?.first().cloned().unwrap_or_default();
            let outcome = match std::net::TcpStream::connect(target.as_str()) {
                Ok(_) => "connected".to_string(),
                Err(e) => format!("denied: {e}"),
            };
            Batch::new().with_text("outcome", vec![outcome])
        }
        "big-output" => Batch::new().with_text("blob", vec![blob(24 << 20)]),
        _ => Ok(input),
    }
}

quiver_sdk::transform!(chaos);
