//! Reads and writes online features, one operation per row — a tool for operators
//! and the tests of the features interface.
//!
//! In: `op` (`put` | `get` | `get-many` | `delete` | `time-get`), `group`, `entity`
//! (for `get-many`: comma-separated ids), `name` (comma-separated for `get`), `value`
//! (f64, for `put`; for `time-get` the number of calls), `ttl_ms` (for `put`; 0 = no
//! expiry).
//! Out, one row per value read (or per operation): `op`, `entity`, `name`, `found`,
//! `value` (0 when not found), `error` (the interface's error, empty on success).
//! `time-get` makes `value` `get` calls and writes one row per call: `value` is the
//! call's latency in nanoseconds as the guest sees it (its monotonic clock, across the
//! host boundary and back), `found` whether every name was found.
use quiver_sdk::features::{self, Value};
use quiver_sdk::{Batch, Error};

/// One operation (a row of the input).
struct Op<'a> {
    op: &'a str,
    group: &'a str,
    entity: &'a str,
    name: &'a str,
    value: f64,
    ttl_ms: f64,
}

/// The output, column by column (no per-row serialization: this function is also
/// the benchmark's guest, so it should cost little besides the features calls).
#[derive(Default)]
struct Out {
    op: Vec<String>,
    entity: Vec<String>,
    name: Vec<String>,
    found: Vec<bool>,
    value: Vec<f64>,
    error: Vec<String>,
}

impl Out {
    /// A row for a value read (or an operation): `found` and `value` from `v`.
    fn push(&mut self, op: &str, entity: &str, name: &str, v: Option<&Value>, error: String) {
        let value = v.and_then(number).unwrap_or(0.0);
        self.row(op, entity, name, v.is_some(), value, error);
    }

    fn row(&mut self, op: &str, entity: &str, name: &str, found: bool, value: f64, error: String) {
        self.op.push(op.to_string());
        self.entity.push(entity.to_string());
        self.name.push(name.to_string());
        self.found.push(found);
        self.value.push(value);
        self.error.push(error);
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Float64(x) => Some(*x),
        Value::Int64(x) => Some(*x as f64),
        Value::Boolean(b) => Some(f64::from(u8::from(*b))),
        Value::Text(_) => None,
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

/// The most calls one `time-get` row makes (its output is a row per call).
const MAX_TIMED_CALLS: f64 = 100_000.0;

fn split(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn run(op: &Op, out: &mut Out) -> Result<(), Error> {
    match op.op {
        "put" => {
            let ttl = Some(op.ttl_ms as u64).filter(|t| *t > 0);
            let v = Value::Float64(op.value);
            features::put(
                op.group,
                op.entity,
                &[(op.name.to_string(), v.clone())],
                ttl,
            )?;
            out.push(op.op, op.entity, op.name, Some(&v), String::new());
        }
        "get" => {
            let names = split(op.name);
            let values = features::get(op.group, op.entity, &names)?;
            for (name, v) in names.iter().zip(&values) {
                out.push(op.op, op.entity, name, v.as_ref(), String::new());
            }
        }
        "time-get" => {
            let names = split(op.name);
            let calls = op.value.clamp(1.0, MAX_TIMED_CALLS) as usize;
            for _ in 0..calls {
                let start = std::time::Instant::now();
                let values = features::get(op.group, op.entity, &names)?;
                let nanos = start.elapsed().as_nanos() as f64;
                let found = values.iter().all(Option::is_some);
                out.row(op.op, op.entity, "", found, nanos, String::new());
            }
        }
        "get-many" => {
            let entities = split(op.entity);
            let columns = features::get_many(op.group, &entities, &split(op.name))?;
            for column in &columns {
                for (entity, v) in entities.iter().zip(&column.values) {
                    out.push(op.op, entity, &column.name, v.as_ref(), String::new());
                }
            }
        }
        "delete" => {
            features::delete(op.group, op.entity)?;
            out.push(op.op, op.entity, "", None, String::new());
        }
        other => return Err(Error::InvalidInput(format!("unknown op `{other}`"))),
    }
    Ok(())
}

fn probe(input: Batch) -> Result<Batch, Error> {
    let rows = input.num_rows();
    let (ops, groups, entities) = (
        input.texts("op")?,
        input.texts("group")?,
        input.texts("entity")?,
    );
    let names = input.texts("name").ok();
    let values = input.f64s("value").unwrap_or_else(|_| vec![0.0; rows]);
    let ttls = input.f64s("ttl_ms").unwrap_or_else(|_| vec![0.0; rows]);
    let mut out = Out::default();
    for i in 0..rows {
        let op = Op {
            op: &ops[i],
            group: &groups[i],
            entity: &entities[i],
            name: names.map_or("", |n| n[i].as_str()),
            value: values[i],
            ttl_ms: ttls[i],
        };
        if let Err(e) = run(&op, &mut out) {
            // Expected failures are values the caller can see, not traps.
            out.push(op.op, op.entity, op.name, None, error_text(&e));
        }
    }
    Batch::new()
        .with_text("op", out.op)?
        .with_text("entity", out.entity)?
        .with_text("name", out.name)?
        .with_bool("found", out.found)?
        .with_f64("value", out.value)?
        .with_text("error", out.error)
}

quiver_sdk::transform!(probe);
