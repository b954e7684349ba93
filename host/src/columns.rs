//! What the host does with a batch's columns whatever their type: count rows,
//! check tensors, select and append rows. Guests and clients make batches, so
//! nothing here trusts a tensor's shape before [`check_tensor`] has.

use crate::bindings::{Batch, Column, ElementType, Tensor};

/// The most dimensions a tensor may have.
pub const MAX_RANK: usize = 8;

/// Bytes of one element.
pub fn element_size(e: ElementType) -> usize {
    match e {
        ElementType::Boolean | ElementType::Int8 | ElementType::Uint8 => 1,
        ElementType::Float16 | ElementType::Bfloat16 => 2,
        ElementType::Float32 | ElementType::Int32 => 4,
        ElementType::Float64 | ElementType::Int64 => 8,
    }
}

pub fn element_name(e: ElementType) -> &'static str {
    match e {
        ElementType::Float16 => "float16",
        ElementType::Bfloat16 => "bfloat16",
        ElementType::Float32 => "float32",
        ElementType::Float64 => "float64",
        ElementType::Int8 => "int8",
        ElementType::Uint8 => "uint8",
        ElementType::Int32 => "int32",
        ElementType::Int64 => "int64",
        ElementType::Boolean => "boolean",
    }
}

/// The tensor element type of an OIP / KServe datatype (`FP32`, `UINT8`...), if
/// it has one.
pub fn element_of_datatype(datatype: &str) -> Option<ElementType> {
    Some(match datatype {
        "FP16" => ElementType::Float16,
        "BF16" => ElementType::Bfloat16,
        "FP32" => ElementType::Float32,
        "FP64" => ElementType::Float64,
        "INT8" => ElementType::Int8,
        "UINT8" => ElementType::Uint8,
        "INT32" => ElementType::Int32,
        "INT64" => ElementType::Int64,
        "BOOL" => ElementType::Boolean,
        _ => return None,
    })
}

/// Rows of a column: its length, or a tensor's first dimension.
pub fn rows(c: &Column) -> usize {
    match c {
        Column::Float64(v) => v.len(),
        Column::Int64(v) => v.len(),
        Column::Text(v) => v.len(),
        Column::Boolean(v) => v.len(),
        Column::Float32(v) => v.len(),
        Column::Bytes(v) => v.len(),
        Column::Tensor(t) => t.shape.first().map_or(0, |d| *d as usize),
    }
}

/// Rows of a batch (its first column's).
pub fn batch_rows(b: &Batch) -> usize {
    b.fields.first().map_or(0, |f| rows(&f.values))
}

/// The column's type, as errors name it.
pub fn type_name(c: &Column) -> String {
    match c {
        Column::Float64(_) => "float64".into(),
        Column::Int64(_) => "int64".into(),
        Column::Text(_) => "text".into(),
        Column::Boolean(_) => "boolean".into(),
        Column::Float32(_) => "float32".into(),
        Column::Bytes(_) => "bytes".into(),
        Column::Tensor(t) => format!("tensor<{}>{:?}", element_name(t.element), t.shape),
    }
}

/// Elements in a tensor of `shape`, if the product fits.
pub fn elements(shape: &[u32]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d as usize))
}

/// A tensor is well formed when it has 1 to [`MAX_RANK`] dimensions and exactly
/// product(shape) elements of data (and a boolean's bytes are 0 or 1).
pub fn check_tensor(name: &str, t: &Tensor) -> Result<(), String> {
    if t.shape.is_empty() || t.shape.len() > MAX_RANK {
        return Err(format!(
            "field `{name}`: a tensor has 1 to {MAX_RANK} dimensions (the first is the rows), this one {}",
            t.shape.len()
        ));
    }
    let size = element_size(t.element);
    let want = elements(&t.shape).and_then(|n| n.checked_mul(size));
    if want != Some(t.data.len()) {
        return Err(format!(
            "field `{name}`: a {} tensor of shape {:?} needs {} bytes of data, it has {}",
            element_name(t.element),
            t.shape,
            want.map_or("more than usize::MAX".to_string(), |w| w.to_string()),
            t.data.len()
        ));
    }
    if t.element == ElementType::Boolean {
        if let Some(i) = t.data.iter().position(|b| *b > 1) {
            return Err(format!(
                "field `{name}`: boolean element {i} is byte {}, not 0 or 1",
                t.data[i]
            ));
        }
    }
    Ok(())
}

/// Every tensor well formed and every field with the same number of rows; the
/// row count.
pub fn check_batch(b: &Batch) -> Result<usize, String> {
    let n = batch_rows(b);
    for f in &b.fields {
        if let Column::Tensor(t) = &f.values {
            check_tensor(&f.name, t)?;
        }
        let got = rows(&f.values);
        if got != n {
            return Err(format!(
                "a ragged batch: field `{}` has {got} rows, expected {n}",
                f.name
            ));
        }
    }
    Ok(n)
}

/// Bytes of one row of a checked tensor.
pub fn row_bytes(t: &Tensor) -> usize {
    elements(&t.shape[1..]).unwrap_or(0) * element_size(t.element)
}

/// The rows `idx` of a checked column, in that order (`idx` < its rows).
pub fn select(c: &Column, idx: &[usize]) -> Column {
    match c {
        Column::Float64(v) => Column::Float64(idx.iter().map(|&i| v[i]).collect()),
        Column::Int64(v) => Column::Int64(idx.iter().map(|&i| v[i]).collect()),
        Column::Text(v) => Column::Text(idx.iter().map(|&i| v[i].clone()).collect()),
        Column::Boolean(v) => Column::Boolean(idx.iter().map(|&i| v[i]).collect()),
        Column::Float32(v) => Column::Float32(idx.iter().map(|&i| v[i]).collect()),
        Column::Bytes(v) => Column::Bytes(idx.iter().map(|&i| v[i].clone()).collect()),
        Column::Tensor(t) => {
            let row = row_bytes(t);
            let mut data = Vec::with_capacity(idx.len() * row);
            for &i in idx {
                data.extend_from_slice(&t.data[i * row..(i + 1) * row]);
            }
            let mut shape = t.shape.clone();
            shape[0] = idx.len() as u32;
            Column::Tensor(Tensor {
                shape,
                element: t.element,
                data,
            })
        }
    }
}

/// Whether `b`'s rows can be appended to `a` (same type; a tensor: same element
/// and row shape).
pub fn same_type(a: &Column, b: &Column) -> bool {
    match (a, b) {
        (Column::Tensor(x), Column::Tensor(y)) => {
            x.element == y.element && x.shape.get(1..) == y.shape.get(1..)
        }
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

/// Append `from`'s rows to `into`; false (and nothing appended) unless
/// [`same_type`]. A tensor whose row count would pass u32 is not appended.
pub fn append(into: &mut Column, from: Column) -> bool {
    match (into, from) {
        (Column::Float64(x), Column::Float64(y)) => x.extend(y),
        (Column::Int64(x), Column::Int64(y)) => x.extend(y),
        (Column::Text(x), Column::Text(y)) => x.extend(y),
        (Column::Boolean(x), Column::Boolean(y)) => x.extend(y),
        (Column::Float32(x), Column::Float32(y)) => x.extend(y),
        (Column::Bytes(x), Column::Bytes(y)) => x.extend(y),
        (Column::Tensor(x), Column::Tensor(y))
            if x.element == y.element && x.shape.get(1..) == y.shape.get(1..) =>
        {
            let Some(n) = x.shape[0].checked_add(y.shape[0]) else {
                return false;
            };
            x.shape[0] = n;
            x.data.extend(y.data);
        }
        _ => return false,
    }
    true
}

/// A one-value-per-row numeric column as f64 (booleans as 0 and 1); `None` for
/// text, bytes and tensors.
pub fn numbers(c: &Column) -> Option<Vec<f64>> {
    match c {
        Column::Float64(v) => Some(v.clone()),
        Column::Float32(v) => Some(v.iter().map(|x| f64::from(*x)).collect()),
        Column::Int64(v) => Some(v.iter().map(|x| *x as f64).collect()),
        Column::Boolean(v) => Some(v.iter().map(|b| f64::from(u8::from(*b))).collect()),
        Column::Text(_) | Column::Bytes(_) | Column::Tensor(_) => None,
    }
}

/// The elements of a checked tensor as f64, in order.
pub fn tensor_f64s(t: &Tensor) -> Vec<f64> {
    let size = element_size(t.element);
    t.data
        .chunks_exact(size)
        .map(|c| element_f64(t.element, c))
        .collect()
}

/// One little-endian element (`c` is exactly its size) as f64.
pub fn element_f64(e: ElementType, c: &[u8]) -> f64 {
    fn arr<const K: usize>(c: &[u8]) -> [u8; K] {
        let mut a = [0u8; K];
        a.copy_from_slice(&c[..K]);
        a
    }
    match e {
        ElementType::Float16 => half::f16::from_le_bytes(arr(c)).to_f64(),
        ElementType::Bfloat16 => half::bf16::from_le_bytes(arr(c)).to_f64(),
        ElementType::Float32 => f32::from_le_bytes(arr(c)).into(),
        ElementType::Float64 => f64::from_le_bytes(arr(c)),
        ElementType::Int8 => i8::from_le_bytes(arr(c)).into(),
        ElementType::Uint8 => c[0].into(),
        ElementType::Int32 => i32::from_le_bytes(arr(c)).into(),
        ElementType::Int64 => i64::from_le_bytes(arr(c)) as f64,
        ElementType::Boolean => f64::from(c[0]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[u32], element: ElementType, data: Vec<u8>) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            element,
            data,
        }
    }

    #[test]
    fn tensors_are_checked_before_anything_is_sized_from_them() {
        assert!(check_tensor("x", &t(&[2, 3], ElementType::Float32, vec![0; 24])).is_ok());
        let short = check_tensor("x", &t(&[2, 3], ElementType::Float32, vec![0; 20])).unwrap_err();
        assert!(
            short.contains("needs 24 bytes") && short.contains("has 20"),
            "{short}"
        );
        let huge = check_tensor(
            "x",
            &t(&[u32::MAX, u32::MAX, u32::MAX], ElementType::Int64, vec![]),
        )
        .unwrap_err();
        assert!(huge.contains("more than usize::MAX"), "{huge}");
        assert!(check_tensor("x", &t(&[], ElementType::Uint8, vec![])).is_err());
        assert!(check_tensor("x", &t(&[1; 9], ElementType::Uint8, vec![0])).is_err());
        let b = check_tensor("x", &t(&[2], ElementType::Boolean, vec![1, 2])).unwrap_err();
        assert!(b.contains("element 1 is byte 2"), "{b}");
    }

    #[test]
    fn rows_select_and_append_keep_the_row_shape() {
        let data: Vec<u8> = (0..12).collect();
        let mut c = Column::Tensor(t(&[3, 2, 2], ElementType::Uint8, data));
        assert_eq!(rows(&c), 3);
        let Column::Tensor(picked) = select(&c, &[2, 0]) else {
            panic!("a tensor")
        };
        assert_eq!(picked.shape, [2, 2, 2]);
        assert_eq!(picked.data, [8, 9, 10, 11, 0, 1, 2, 3]);
        assert!(append(&mut c, Column::Tensor(picked)));
        assert_eq!(rows(&c), 5);
        let other = Column::Tensor(t(&[1, 4], ElementType::Uint8, vec![0; 4]));
        assert!(!same_type(&c, &other));
        assert!(!append(&mut c, other), "another row shape");
        assert!(!append(&mut c, Column::Float32(vec![1.0])));
        let ragged = Batch {
            fields: vec![
                crate::bindings::Field {
                    name: "a".into(),
                    values: Column::Float32(vec![1.0, 2.0]),
                },
                crate::bindings::Field {
                    name: "b".into(),
                    values: Column::Tensor(t(&[3, 1], ElementType::Int8, vec![0; 3])),
                },
            ],
        };
        assert!(check_batch(&ragged).unwrap_err().contains("`b` has 3 rows"));
    }
}
