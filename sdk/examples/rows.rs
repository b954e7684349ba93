//! A transform written against serde rows: `cargo build --example rows --target wasm32-wasip2`.
use quiver_sdk::{from_rows, to_rows, Batch, Error};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Txn {
    amount: f64,
}

#[derive(Serialize)]
struct Scored {
    amount: f64,
    large: bool,
}

fn flag_large(input: Batch) -> Result<Batch, Error> {
    let rows: Vec<Txn> = to_rows(&input)?;
    let out: Vec<Scored> = rows
        .iter()
        .map(|t| Scored {
            amount: t.amount,
            large: t.amount > 1000.0,
        })
        .collect();
    from_rows(&out)
}

quiver_sdk::transform!(flag_large);

fn main() {}
