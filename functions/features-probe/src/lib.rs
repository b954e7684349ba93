//! Reads and writes online features, one operation per row — a tool for operators
//! and the tests of the features interface.
//!
//! In: `op` (`put` | `get` | `get-many` | `delete`), `group`, `entity` (for
//! `get-many`: comma-separated ids), `name` (comma-separated for `get`), `value`
//! (f64, for `put`), `ttl_ms` (for `put`; 0 = no expiry).
//! Out, one row per value read (or per operation): `op`, `entity`, `name`, `found`,
//! `value` (0 when not found), `error` (the interface's error, empty on success).
use quiver_sdk::features::{self, Value};
use quiver_sdk::{Batch, Error};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Op {
    op: String,
    group: String,
    entity: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: f64,
    #[serde(default)]
    ttl_ms: i64,
}

#[derive(Serialize)]
struct Out {
    op: String,
    entity: String,
    name: String,
    found: bool,
    value: f64,
    error: String,
}

fn number(v: &Option<Value>) -> Option<f64> {
    match v {
        Some(Value::Float64(x)) => Some(*x),
        Some(Value::Int64(x)) => Some(*x as f64),
        Some(Value::Boolean(b)) => Some(f64::from(u8::from(*b))),
        Some(Value::Text(_)) | None => None,
    }
}

fn error_text(e: &Error) -> String {
    match e {
        Error::InvalidInput(m) => format!("invalid-input: {m}"),
        Error::Unavailable(m) => format!("unavailable: {m}"),
        Error::LimitExceeded(m) => format!("limit-exceeded: {m}"),
        Error::Internal(m) => format!("internal: {m}"),
    }
}

fn split(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn run(op: &Op, out: &mut Vec<Out>) -> Result<(), Error> {
    let row = |entity: &str, name: &str, v: &Option<Value>| Out {
        op: op.op.clone(),
        entity: entity.to_string(),
        name: name.to_string(),
        found: v.is_some(),
        value: number(v).unwrap_or(0.0),
        error: String::new(),
    };
    match op.op.as_str() {
        "put" => {
            let ttl = u64::try_from(op.ttl_ms).ok().filter(|t| *t > 0);
            features::put(
                &op.group,
                &op.entity,
                &[(op.name.clone(), Value::Float64(op.value))],
                ttl,
            )?;
            out.push(row(&op.entity, &op.name, &Some(Value::Float64(op.value))));
        }
        "get" => {
            let names = split(&op.name);
            let values = features::get(&op.group, &op.entity, &names)?;
            for (name, v) in names.iter().zip(&values) {
                out.push(row(&op.entity, name, v));
            }
        }
        "get-many" => {
            let entities = split(&op.entity);
            let columns = features::get_many(&op.group, &entities, &split(&op.name))?;
            for column in &columns {
                for (entity, v) in entities.iter().zip(&column.values) {
                    out.push(row(entity, &column.name, v));
                }
            }
        }
        "delete" => {
            features::delete(&op.group, &op.entity)?;
            out.push(row(&op.entity, "", &None));
        }
        other => return Err(Error::InvalidInput(format!("unknown op `{other}`"))),
    }
    Ok(())
}

fn probe(input: Batch) -> Result<Batch, Error> {
    let ops: Vec<Op> = quiver_sdk::to_rows(&input)?;
    let mut out = Vec::new();
    for op in &ops {
        if let Err(e) = run(op, &mut out) {
            // Expected failures are values the caller can see, not traps.
            out.push(Out {
                op: op.op.clone(),
                entity: op.entity.clone(),
                name: op.name.clone(),
                found: false,
                value: 0.0,
                error: error_text(&e),
            });
        }
    }
    quiver_sdk::from_rows(&out)
}

quiver_sdk::transform!(probe);
