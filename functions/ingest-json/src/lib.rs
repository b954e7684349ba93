//! Ingest JSON (an array or a single object), JSON lines or CSV into a typed batch.
//!
//! Every record is checked against the schema in `[config] schema`
//! (`name:type,...`, types `float64 | int64 | text | boolean`). A record that does
//! not fit is reported in `rejected` with its 1-based number and the reason; it is
//! never dropped silently. Fields not in the schema are ignored.
use quiver_sdk::{Batch, Column, Error, Ingested, RejectedRow};
use serde_json::Value;

#[derive(Clone, Copy)]
enum Kind {
    Float64,
    Int64,
    Text,
    Boolean,
}

struct Schema(Vec<(String, Kind)>);

impl Schema {
    fn from_config() -> Result<Self, Error> {
        let spec = quiver_sdk::config("schema")
            .ok_or_else(|| Error::InvalidInput("config key `schema` is not set".into()))?;
        let mut fields = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, ty) = part.split_once(':').ok_or_else(|| {
                Error::InvalidInput(format!("schema entry `{part}` is not name:type"))
            })?;
            let kind = match ty.trim() {
                "float64" => Kind::Float64,
                "int64" => Kind::Int64,
                "text" => Kind::Text,
                "boolean" => Kind::Boolean,
                other => {
                    return Err(Error::InvalidInput(format!(
                        "schema type `{other}` is unknown"
                    )))
                }
            };
            fields.push((name.trim().to_string(), kind));
        }
        if fields.is_empty() {
            return Err(Error::InvalidInput("schema declares no fields".into()));
        }
        Ok(Schema(fields))
    }

    fn empty_columns(&self) -> Vec<Column> {
        self.0
            .iter()
            .map(|(_, k)| match k {
                Kind::Float64 => Column::Float64(Vec::new()),
                Kind::Int64 => Column::Int64(Vec::new()),
                Kind::Text => Column::Text(Vec::new()),
                Kind::Boolean => Column::Boolean(Vec::new()),
            })
            .collect()
    }
}

/// One typed value, checked before any column is touched so a bad record leaves no trace.
enum Cell {
    F(f64),
    I(i64),
    T(String),
    B(bool),
}

fn cell_from_json(name: &str, kind: Kind, v: Option<&Value>) -> Result<Cell, String> {
    let v = match v {
        None | Some(Value::Null) => return Err(format!("field `{name}` is missing")),
        Some(v) => v,
    };
    match kind {
        Kind::Float64 => v.as_f64().map(Cell::F),
        Kind::Int64 => v.as_i64().map(Cell::I),
        Kind::Text => v.as_str().map(|s| Cell::T(s.to_string())),
        Kind::Boolean => v.as_bool().map(Cell::B),
    }
    .ok_or_else(|| format!("field `{name}` must be {}, got {v}", kind_name(kind)))
}

fn cell_from_text(name: &str, kind: Kind, raw: Option<&str>) -> Result<Cell, String> {
    let raw = match raw.map(str::trim) {
        None | Some("") => return Err(format!("field `{name}` is missing")),
        Some(r) => r,
    };
    let bad = || format!("field `{name}` must be {}, got `{raw}`", kind_name(kind));
    Ok(match kind {
        Kind::Float64 => Cell::F(raw.parse().map_err(|_| bad())?),
        Kind::Int64 => Cell::I(raw.parse().map_err(|_| bad())?),
        Kind::Text => Cell::T(raw.to_string()),
        Kind::Boolean => Cell::B(raw.parse().map_err(|_| bad())?),
    })
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float64 => "float64",
        Kind::Int64 => "int64",
        Kind::Text => "text",
        Kind::Boolean => "boolean",
    }
}

struct Builder {
    columns: Vec<Column>,
    rejected: Vec<RejectedRow>,
}

impl Builder {
    fn push(&mut self, row: u32, cells: Result<Vec<Cell>, String>) {
        let cells = match cells {
            Ok(c) => c,
            Err(reason) => {
                self.rejected.push(RejectedRow { row, reason });
                return;
            }
        };
        for (column, cell) in self.columns.iter_mut().zip(cells) {
            match (column, cell) {
                (Column::Float64(c), Cell::F(v)) => c.push(v),
                (Column::Int64(c), Cell::I(v)) => c.push(v),
                (Column::Text(c), Cell::T(v)) => c.push(v),
                (Column::Boolean(c), Cell::B(v)) => c.push(v),
                // Cells are built from the same schema as the columns, in order.
                _ => unreachable!("cell type follows the schema"),
            }
        }
    }
}

fn ingest(content_type: &str, body: &[u8]) -> Result<Ingested, Error> {
    let schema = Schema::from_config()?;
    let mut b = Builder {
        columns: schema.empty_columns(),
        rejected: Vec::new(),
    };
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let text = std::str::from_utf8(body)
        .map_err(|e| Error::InvalidInput(format!("body is not UTF-8: {e}")))?;

    let json_row = |row: u32, v: &Value| -> Result<Vec<Cell>, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("record {row} is not a JSON object"))?;
        schema
            .0
            .iter()
            .map(|(n, k)| cell_from_json(n, *k, obj.get(n)))
            .collect()
    };

    match mime.as_str() {
        "text/csv" => {
            let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(body);
            let headers = reader
                .headers()
                .map_err(|e| Error::InvalidInput(format!("CSV header: {e}")))?
                .clone();
            for (i, record) in reader.records().enumerate() {
                let row = i as u32 + 1;
                let cells = record.map_err(|e| e.to_string()).and_then(|rec| {
                    schema
                        .0
                        .iter()
                        .map(|(n, k)| {
                            let idx = headers.iter().position(|h| h.trim() == n);
                            cell_from_text(n, *k, idx.and_then(|i| rec.get(i)))
                        })
                        .collect()
                });
                b.push(row, cells);
            }
        }
        "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => {
            let lines = text.lines().filter(|l| !l.trim().is_empty());
            for (i, line) in lines.enumerate() {
                let row = i as u32 + 1;
                let cells = serde_json::from_str::<Value>(line)
                    .map_err(|e| format!("invalid JSON: {e}"))
                    .and_then(|v| json_row(row, &v));
                b.push(row, cells);
            }
        }
        _ => {
            let doc: Value = serde_json::from_str(text)
                .map_err(|e| Error::InvalidInput(format!("invalid JSON: {e}")))?;
            let records = match doc {
                Value::Array(items) => items,
                Value::Object(mut obj) => match obj.remove("rows") {
                    Some(Value::Array(items)) => items,
                    Some(_) => return Err(Error::InvalidInput("`rows` must be an array".into())),
                    None => vec![Value::Object(obj)],
                },
                _ => {
                    return Err(Error::InvalidInput(
                        "expected a JSON array or object".into(),
                    ))
                }
            };
            for (i, v) in records.iter().enumerate() {
                let row = i as u32 + 1;
                b.push(row, json_row(row, v));
            }
        }
    }

    let mut batch = Batch::new();
    for ((name, _), column) in schema.0.iter().zip(b.columns) {
        batch = batch.with(name, column)?;
    }
    Ok(Ingested {
        batch,
        rejected: b.rejected,
    })
}

quiver_sdk::ingest!(ingest);
