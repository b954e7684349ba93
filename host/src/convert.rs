//! JSON rows <-> columnar batches, at the edge of the host only: stages inside a
//! pipeline pass batches to each other directly.

use crate::bindings::{Batch, Column, Field};
use serde_json::{Map, Number, Value};

/// Accepts an array of objects, one object, or `{"rows": [...]}`. Column types follow
/// the values: all integers -> int64, any fraction -> float64, strings -> text,
/// booleans -> boolean. Every row must have every field; null is not a value.
pub fn json_to_batch(doc: &Value) -> Result<Batch, String> {
    let rows: &[Value] = match doc {
        Value::Array(items) => items,
        Value::Object(obj) => match obj.get("rows") {
            Some(Value::Array(items)) => items,
            Some(_) => return Err("`rows` must be an array of objects".into()),
            None => std::slice::from_ref(doc),
        },
        _ => return Err("expected a JSON object or an array of objects".into()),
    };
    let objects: Vec<&Map<String, Value>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.as_object()
                .ok_or(format!("row {} is not a JSON object", i + 1))
        })
        .collect::<Result<_, _>>()?;
    let Some(first) = objects.first() else {
        return Ok(Batch { fields: Vec::new() });
    };
    let mut fields = Vec::with_capacity(first.len());
    for name in first.keys() {
        let values: Vec<&Value> = objects
            .iter()
            .enumerate()
            .map(|(i, o)| match o.get(name) {
                None | Some(Value::Null) => {
                    Err(format!("row {}: field `{name}` is missing", i + 1))
                }
                Some(v) => Ok(v),
            })
            .collect::<Result<_, _>>()?;
        fields.push(Field {
            name: name.clone(),
            values: column_of(name, &values)?,
        });
    }
    if let Some((i, extra)) = objects
        .iter()
        .enumerate()
        .find_map(|(i, o)| o.keys().find(|k| !first.contains_key(*k)).map(|k| (i, k)))
    {
        return Err(format!(
            "row {}: field `{extra}` is not in the first row",
            i + 1
        ));
    }
    Ok(Batch { fields })
}

fn column_of(name: &str, values: &[&Value]) -> Result<Column, String> {
    let mismatch = |i: usize, want: &str, got: &Value| {
        format!(
            "row {}: field `{name}` must be {want} like the first row, got {got}",
            i + 1
        )
    };
    Ok(match values[0] {
        Value::Number(_) => {
            if values.iter().all(|v| v.is_i64()) {
                Column::Int64(values.iter().filter_map(|v| v.as_i64()).collect())
            } else {
                let mut out = Vec::with_capacity(values.len());
                for (i, v) in values.iter().enumerate() {
                    out.push(v.as_f64().ok_or_else(|| mismatch(i, "a number", v))?);
                }
                Column::Float64(out)
            }
        }
        Value::String(_) => {
            let mut out = Vec::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                out.push(
                    v.as_str()
                        .ok_or_else(|| mismatch(i, "a string", v))?
                        .to_string(),
                );
            }
            Column::Text(out)
        }
        Value::Bool(_) => {
            let mut out = Vec::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                out.push(v.as_bool().ok_or_else(|| mismatch(i, "a boolean", v))?);
            }
            Column::Boolean(out)
        }
        Value::Array(_) => tensor_of(name, values)?,
        other => {
            return Err(format!(
                "field `{name}` must be a number, string, boolean or an array of them, got {other}"
            ))
        }
    })
}

/// Rows whose values are (nested) arrays of one shape: a tensor whose first
/// dimension is the rows. All integers: int64; any fraction: float64; booleans:
/// boolean.
fn tensor_of(name: &str, values: &[&Value]) -> Result<Column, String> {
    use crate::bindings::{ElementType, Tensor};
    // The first row's shape, from its first elements; every row must match it.
    let mut shape = vec![values.len() as u32];
    let mut at = values[0];
    while let Value::Array(items) = at {
        let len = u32::try_from(items.len())
            .map_err(|_| format!("field `{name}`: an array is too long"))?;
        shape.push(len);
        if shape.len() > crate::columns::MAX_RANK {
            return Err(format!(
                "field `{name}`: a tensor has at most {} dimensions",
                crate::columns::MAX_RANK
            ));
        }
        match items.first() {
            Some(first) => at = first,
            None => break,
        }
    }
    let mut flat: Vec<&Value> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let before = flat.len();
        if !flat_into(v, &shape[1..], &mut flat) {
            return Err(format!(
                "row {}: field `{name}` is not an array of shape {:?} like the first row",
                i + 1,
                &shape[1..]
            ));
        }
        debug_assert!(flat.len() >= before);
    }
    let bad = |v: &Value| {
        format!("field `{name}`: tensor elements must all be numbers or all booleans, got {v}")
    };
    let (element, data): (ElementType, Vec<u8>) = match flat.first() {
        Some(Value::Bool(_)) => (
            ElementType::Boolean,
            flat.iter()
                .map(|v| v.as_bool().map(u8::from).ok_or_else(|| bad(v)))
                .collect::<Result<_, _>>()?,
        ),
        _ if flat.iter().all(|v| v.is_i64()) => (
            ElementType::Int64,
            flat.iter()
                .filter_map(|v| v.as_i64())
                .flat_map(i64::to_le_bytes)
                .collect(),
        ),
        _ => {
            let mut data = Vec::with_capacity(flat.len() * 8);
            for v in &flat {
                data.extend_from_slice(&v.as_f64().ok_or_else(|| bad(v))?.to_le_bytes());
            }
            (ElementType::Float64, data)
        }
    };
    Ok(Column::Tensor(Tensor {
        shape,
        element,
        data,
    }))
}

/// Push the leaves of `v` if it is an array of exactly `shape`.
fn flat_into<'a>(v: &'a Value, shape: &[u32], out: &mut Vec<&'a Value>) -> bool {
    match (v, shape.split_first()) {
        (Value::Array(items), Some((n, rest))) => {
            items.len() == *n as usize && items.iter().all(|i| flat_into(i, rest, out))
        }
        (Value::Array(_), None) | (Value::Null, _) | (Value::Object(_), _) => false,
        (_, Some(_)) => false,
        (leaf, None) => {
            out.push(leaf);
            true
        }
    }
}

/// The most JSON a function's result may make as a response.
pub const MAX_RESPONSE: usize = 16 << 20;

/// At least how many bytes of JSON `batch` makes (rows or tensors), computed from
/// the columns alone: checked before converting, so a huge result is refused
/// without building its JSON.
pub fn json_size_lower_bound(batch: &Batch) -> usize {
    batch
        .fields
        .iter()
        .map(|f| {
            let n = column_len(&f.values);
            let values = match &f.values {
                Column::Text(v) => v.iter().map(|s| s.len() + 3).sum(),
                // Base64: 4 characters per 3 bytes.
                Column::Bytes(v) => v.iter().map(|b| b.len() / 3 * 4 + 3).sum(),
                Column::Tensor(t) => {
                    (t.data.len() / crate::columns::element_size(t.element)).saturating_mul(2)
                }
                other => column_len(other) * 2,
            };
            values + n.saturating_mul(f.name.len() + 3)
        })
        .fold(0usize, usize::saturating_add)
}

/// Refuse a result whose JSON would pass [`MAX_RESPONSE`].
pub fn check_response_size(batch: &Batch) -> Result<(), String> {
    let at_least = json_size_lower_bound(batch);
    match at_least > MAX_RESPONSE {
        true => Err(format!(
            "the function returned a result of at least {at_least} bytes of JSON; the most this host sends back is {MAX_RESPONSE}"
        )),
        false => Ok(()),
    }
}

pub fn column_len(c: &Column) -> usize {
    crate::columns::rows(c)
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// Row `i` of a checked tensor as nested arrays.
fn tensor_row(t: &crate::bindings::Tensor, i: usize) -> Value {
    use crate::bindings::ElementType;
    let size = crate::columns::element_size(t.element);
    let row = crate::columns::row_bytes(t);
    let bytes = &t.data[i * row..(i + 1) * row];
    let leaves: Vec<Value> = bytes
        .chunks_exact(size)
        .map(|c| match t.element {
            ElementType::Int8 | ElementType::Uint8 | ElementType::Int32 | ElementType::Int64 => {
                Value::from(crate::columns::element_f64(t.element, c) as i64)
            }
            ElementType::Boolean => Value::from(c[0] == 1),
            e => float(crate::columns::element_f64(e, c)),
        })
        .collect();
    nest(&t.shape[1..], &mut leaves.into_iter())
}

fn nest(shape: &[u32], leaves: &mut impl Iterator<Item = Value>) -> Value {
    match shape.split_first() {
        None => leaves.next().unwrap_or(Value::Null),
        Some((n, rest)) => Value::Array((0..*n).map(|_| nest(rest, leaves)).collect()),
    }
}

/// Rows as JSON objects: a tensor's row as nested arrays, bytes as base64 text. A
/// guest that returns ragged columns or a malformed tensor gets an error, not a
/// panic.
pub fn batch_to_rows(batch: &Batch) -> Result<Vec<Value>, String> {
    use base64::Engine as _;
    let n = crate::columns::check_batch(batch).map_err(|e| format!("the function returned {e}"))?;
    Ok((0..n)
        .map(|i| {
            let mut row = Map::with_capacity(batch.fields.len());
            for f in &batch.fields {
                let v = match &f.values {
                    Column::Float64(v) => float(v[i]),
                    Column::Float32(v) => float(v[i].into()),
                    Column::Int64(v) => Value::from(v[i]),
                    Column::Text(v) => Value::from(v[i].as_str()),
                    Column::Boolean(v) => Value::from(v[i]),
                    Column::Bytes(v) => {
                        Value::from(base64::engine::general_purpose::STANDARD.encode(&v[i]))
                    }
                    Column::Tensor(t) => tensor_row(t, i),
                };
                row.insert(f.name.clone(), v);
            }
            Value::Object(row)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roundtrip_and_typing() {
        let doc = json!([{"a": 1, "b": 1.5, "c": "x", "d": true}, {"a": 2, "b": 2, "c": "y", "d": false}]);
        let batch = json_to_batch(&doc).unwrap();
        assert!(matches!(batch.fields[0].values, Column::Int64(ref v) if v == &[1, 2]));
        assert!(matches!(batch.fields[1].values, Column::Float64(ref v) if v == &[1.5, 2.0]));
        let rows = batch_to_rows(&batch).unwrap();
        assert_eq!(rows[1], json!({"a": 2, "b": 2.0, "c": "y", "d": false}));
        assert_eq!(json_to_batch(&json!({"a": 1})).unwrap().fields.len(), 1);
        assert_eq!(json_to_batch(&json!({"rows": []})).unwrap().fields.len(), 0);
    }

    #[test]
    fn bad_shapes_are_named() {
        let e = json_to_batch(&json!([{"a": 1}, {"a": "x"}])).unwrap_err();
        assert!(e.contains("row 2") && e.contains("`a`"), "{e}");
        assert!(json_to_batch(&json!([{"a": 1}, {}]))
            .unwrap_err()
            .contains("missing"));
        assert!(json_to_batch(&json!([{"a": null}])).is_err());
        assert!(json_to_batch(&json!([{"a": 1}, {"a": 2, "z": 1}]))
            .unwrap_err()
            .contains("`z`"));
        assert!(json_to_batch(&json!(3)).is_err());
        assert!(json_to_batch(&json!([1])).is_err());
        let ragged = Batch {
            fields: vec![
                Field {
                    name: "a".into(),
                    values: Column::Int64(vec![1, 2]),
                },
                Field {
                    name: "b".into(),
                    values: Column::Int64(vec![1]),
                },
            ],
        };
        assert!(batch_to_rows(&ragged).unwrap_err().contains("ragged"));
    }

    #[test]
    fn nested_arrays_are_tensors_and_come_back_as_nested_arrays() {
        let doc = json!([{"img": [[1, 2], [3, 4]], "p": [0.5, 1]}, {"img": [[5, 6], [7, 8]], "p": [2, 3]}]);
        let batch = json_to_batch(&doc).unwrap();
        let Column::Tensor(img) = &batch.fields[0].values else {
            panic!("a tensor")
        };
        assert_eq!(img.shape, [2, 2, 2]);
        assert_eq!(img.element, crate::bindings::ElementType::Int64);
        let Column::Tensor(p) = &batch.fields[1].values else {
            panic!("a tensor")
        };
        assert_eq!(
            (p.shape.as_slice(), p.element),
            (&[2, 2][..], crate::bindings::ElementType::Float64)
        );
        let rows = batch_to_rows(&batch).unwrap();
        assert_eq!(rows[1], json!({"img": [[5, 6], [7, 8]], "p": [2.0, 3.0]}));
        let e = json_to_batch(&json!([{"x": [1, 2]}, {"x": [1, 2, 3]}])).unwrap_err();
        assert!(e.contains("row 2") && e.contains("shape [2]"), "{e}");
        assert!(json_to_batch(&json!([{"x": [1, "a"]}])).is_err());
        assert!(json_to_batch(&json!([{"x": [[1], 2]}])).is_err());
        let deep = json!([{"x": [[[[[[[[[1]]]]]]]]]}]);
        assert!(json_to_batch(&deep).unwrap_err().contains("at most 8"));
        // A malformed tensor from a guest is an error, not a panic.
        let lying = Batch {
            fields: vec![Field {
                name: "t".into(),
                values: Column::Tensor(crate::bindings::Tensor {
                    shape: vec![4, 1000],
                    element: crate::bindings::ElementType::Float32,
                    data: vec![0; 16],
                }),
            }],
        };
        assert!(batch_to_rows(&lying)
            .unwrap_err()
            .contains("needs 16000 bytes"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                "[a-c]{0,3}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map("[a-c]{1,2}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]

            /// Any JSON document becomes a batch or an error, never a panic; a
            /// batch has as many rows as the document and converts back to rows of
            /// the same fields.
            #[test]
            fn any_json_is_a_batch_or_an_error(doc in json_value()) {
                if let Ok(batch) = json_to_batch(&doc) {
                    let rows = batch_to_rows(&batch).expect("a converted batch is rectangular");
                    let want = match &doc {
                        Value::Array(items) => items.len(),
                        Value::Object(o) => match o.get("rows") {
                            Some(Value::Array(items)) => items.len(),
                            _ => 1,
                        },
                        _ => unreachable!("only arrays and objects convert"),
                    };
                    if !batch.fields.is_empty() {
                        prop_assert_eq!(rows.len(), want);
                    }
                    for row in &rows {
                        prop_assert_eq!(row.as_object().map(|o| o.len()), Some(batch.fields.len()));
                    }
                }
            }

            /// Rows of one consistent shape always convert, and come back equal
            /// (integers stay integers, numbers keep their value).
            #[test]
            fn consistent_rows_round_trip(
                ints in prop::collection::vec(any::<i64>(), 1..20),
                texts in prop::collection::vec("[a-z]{0,5}", 1..20),
            ) {
                let n = ints.len().min(texts.len());
                let doc = Value::Array((0..n).map(|i| serde_json::json!({"i": ints[i], "t": texts[i]})).collect());
                let batch = json_to_batch(&doc).expect("consistent rows convert");
                prop_assert_eq!(Value::Array(batch_to_rows(&batch).expect("rows")), doc);
            }
        }
    }
}
