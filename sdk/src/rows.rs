//! Batch <-> rows of any serde type, for functions that think in records.

use crate::{Batch, Column, Error};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Number, Value};

/// Turn a batch into rows: each row is deserialized from an object of its fields.
pub fn to_rows<T: DeserializeOwned>(batch: &Batch) -> Result<Vec<T>, Error> {
    (0..batch.num_rows())
        .map(|i| {
            let mut row = Map::new();
            for field in &batch.fields {
                let v = match &field.values {
                    Column::Float64(v) => Number::from_f64(v[i]).map_or(Value::Null, Value::Number),
                    Column::Float32(v) => {
                        Number::from_f64(v[i].into()).map_or(Value::Null, Value::Number)
                    }
                    Column::Int64(v) => Value::from(v[i]),
                    Column::Text(v) => Value::from(v[i].clone()),
                    Column::Boolean(v) => Value::from(v[i]),
                    Column::Bytes(v) => Value::from(v[i].clone()),
                    Column::Tensor(_) => {
                        return Err(Error::InvalidInput(format!(
                            "field `{}` is a tensor; read it with Batch::tensor",
                            field.name
                        )))
                    }
                };
                row.insert(field.name.clone(), v);
            }
            serde_json::from_value(Value::Object(row))
                .map_err(|e| Error::InvalidInput(format!("row {}: {e}", i + 1)))
        })
        .collect()
}

/// Turn rows into a batch. Column types follow the first row's values; a later row
/// with another type for the same field is an error.
pub fn from_rows<T: Serialize>(rows: &[T]) -> Result<Batch, Error> {
    let mut names: Vec<String> = Vec::new();
    let mut columns: Vec<Column> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let value = serde_json::to_value(row).map_err(|e| Error::Internal(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(Error::Internal(format!("row {} is not a record", i + 1)));
        };
        if i == 0 {
            for (k, v) in &obj {
                names.push(k.clone());
                columns.push(match v {
                    Value::Number(n) if n.is_i64() => Column::Int64(Vec::new()),
                    Value::Number(_) => Column::Float64(Vec::new()),
                    Value::Bool(_) => Column::Boolean(Vec::new()),
                    _ => Column::Text(Vec::new()),
                });
            }
        }
        for (name, column) in names.iter().zip(columns.iter_mut()) {
            let v = obj.get(name).unwrap_or(&Value::Null);
            let bad = || Error::Internal(format!("row {}: field `{name}` changed type", i + 1));
            match column {
                Column::Int64(c) => c.push(v.as_i64().ok_or_else(bad)?),
                Column::Float64(c) => c.push(v.as_f64().ok_or_else(bad)?),
                Column::Boolean(c) => c.push(v.as_bool().ok_or_else(bad)?),
                Column::Text(c) => c.push(match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
                // Only the four above are made from the first row.
                Column::Float32(_) | Column::Bytes(_) | Column::Tensor(_) => return Err(bad()),
            }
        }
    }
    let mut batch = Batch::new();
    for (name, column) in names.into_iter().zip(columns) {
        batch = batch.with(&name, column)?;
    }
    Ok(batch)
}
