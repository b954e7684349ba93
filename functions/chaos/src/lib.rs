//! A transform that misbehaves on purpose, so the tests can prove the host survives:
//! the first row's `mode` field picks `loop` (never returns), `oom` (grows memory
//! without bound), `grow` (touches 8 MiB of fresh memory, then echoes: a warm
//! instance that holds memory), `trap` (panics), `fail` (returns an error) or
//! anything else (echoes the batch back).
use quiver_sdk::{Batch, Error};

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
        _ => Ok(input),
    }
}

quiver_sdk::transform!(chaos);
