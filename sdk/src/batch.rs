//! Columnar batches: typed accessors and builders over the WIT `batch` record.

pub use crate::base::quiver::ml::types::{Batch, Column, ElementType, Field, Tensor};
use crate::Error;
use std::borrow::Cow;

impl ElementType {
    /// Bytes of one element.
    pub fn size(self) -> usize {
        match self {
            ElementType::Boolean | ElementType::Int8 | ElementType::Uint8 => 1,
            ElementType::Float16 | ElementType::Bfloat16 => 2,
            ElementType::Float32 | ElementType::Int32 => 4,
            ElementType::Float64 | ElementType::Int64 => 8,
        }
    }

    /// The WIT name (`float32`, `int64`...), for messages.
    pub fn name(self) -> &'static str {
        match self {
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
}

/// Element types a Rust slice can be viewed as.
pub trait Element: bytemuck::Pod {
    const TYPE: ElementType;
}

macro_rules! element {
    ($t:ty, $e:ident) => {
        impl Element for $t {
            const TYPE: ElementType = ElementType::$e;
        }
    };
}
element!(f32, Float32);
element!(f64, Float64);
element!(i8, Int8);
element!(u8, Uint8);
element!(i32, Int32);
element!(i64, Int64);

/// A tensor field, borrowed from its batch: typed views of its data without a
/// copy when the data is aligned for the type (a copy when not).
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub shape: &'a [u32],
    pub element: ElementType,
    /// Contiguous little-endian elements, row-major.
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    pub fn of(t: &'a Tensor) -> Self {
        TensorView {
            shape: &t.shape,
            element: t.element,
            data: &t.data,
        }
    }

    /// The first dimension.
    pub fn rows(&self) -> usize {
        self.shape.first().map_or(0, |d| *d as usize)
    }

    /// The elements as `T`, which must be the tensor's element type.
    pub fn values<T: Element>(&self) -> Result<Cow<'a, [T]>, Error> {
        if self.element != T::TYPE {
            return Err(Error::InvalidInput(format!(
                "a tensor of {} read as {}",
                self.element.name(),
                T::TYPE.name()
            )));
        }
        if !self.data.len().is_multiple_of(self.element.size()) {
            return Err(Error::InvalidInput("a tensor's data is cut short".into()));
        }
        // Wasm is little-endian, the tensor's byte order: the values are the bytes.
        Ok(match bytemuck::try_cast_slice(self.data) {
            Ok(v) => Cow::Borrowed(v),
            Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(self.data)),
        })
    }

    pub fn f32s(&self) -> Result<Cow<'a, [f32]>, Error> {
        self.values()
    }
}

impl Tensor {
    /// A tensor of `shape` from typed values (their bytes, little-endian).
    pub fn from_values<T: Element>(shape: Vec<u32>, values: &[T]) -> Tensor {
        Tensor {
            shape,
            element: T::TYPE,
            data: bytemuck::cast_slice(values).to_vec(),
        }
    }
}

impl Column {
    /// Rows: the values of a column, the first dimension of a tensor.
    pub fn len(&self) -> usize {
        match self {
            Column::Float64(v) => v.len(),
            Column::Int64(v) => v.len(),
            Column::Text(v) => v.len(),
            Column::Boolean(v) => v.len(),
            Column::Float32(v) => v.len(),
            Column::Bytes(v) => v.len(),
            Column::Tensor(t) => t.shape.first().map_or(0, |d| *d as usize),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Column::Float64(_) => "float64",
            Column::Int64(_) => "int64",
            Column::Text(_) => "text",
            Column::Boolean(_) => "boolean",
            Column::Float32(_) => "float32",
            Column::Bytes(_) => "bytes",
            Column::Tensor(_) => "tensor",
        }
    }

    /// One number per row as f64 (booleans as 0 and 1); `None` for text, bytes
    /// and tensors.
    pub fn numbers(&self) -> Option<Vec<f64>> {
        match self {
            Column::Float64(v) => Some(v.clone()),
            Column::Float32(v) => Some(v.iter().map(|x| f64::from(*x)).collect()),
            Column::Int64(v) => Some(v.iter().map(|x| *x as f64).collect()),
            Column::Boolean(v) => Some(v.iter().map(|b| f64::from(u8::from(*b))).collect()),
            Column::Text(_) | Column::Bytes(_) | Column::Tensor(_) => None,
        }
    }

    /// The rows `idx`, in that order (each below `len()`).
    pub fn select(&self, idx: &[usize]) -> Column {
        match self {
            Column::Float64(v) => Column::Float64(idx.iter().map(|&i| v[i]).collect()),
            Column::Int64(v) => Column::Int64(idx.iter().map(|&i| v[i]).collect()),
            Column::Text(v) => Column::Text(idx.iter().map(|&i| v[i].clone()).collect()),
            Column::Boolean(v) => Column::Boolean(idx.iter().map(|&i| v[i]).collect()),
            Column::Float32(v) => Column::Float32(idx.iter().map(|&i| v[i]).collect()),
            Column::Bytes(v) => Column::Bytes(idx.iter().map(|&i| v[i].clone()).collect()),
            Column::Tensor(t) => {
                let rows = t.shape.first().map_or(1, |d| (*d as usize).max(1));
                let row = t.data.len() / rows;
                let mut data = Vec::with_capacity(idx.len() * row);
                for &i in idx {
                    data.extend_from_slice(&t.data[i * row..(i + 1) * row]);
                }
                let mut shape = t.shape.clone();
                if let Some(d) = shape.first_mut() {
                    *d = idx.len() as u32;
                }
                Column::Tensor(Tensor {
                    shape,
                    element: t.element,
                    data,
                })
            }
        }
    }

    /// Append `other`'s rows; false (nothing appended) when its type (a tensor:
    /// element type and row shape) differs.
    pub fn append(&mut self, other: Column) -> bool {
        match (self, other) {
            (Column::Float64(x), Column::Float64(y)) => x.extend(y),
            (Column::Int64(x), Column::Int64(y)) => x.extend(y),
            (Column::Text(x), Column::Text(y)) => x.extend(y),
            (Column::Boolean(x), Column::Boolean(y)) => x.extend(y),
            (Column::Float32(x), Column::Float32(y)) => x.extend(y),
            (Column::Bytes(x), Column::Bytes(y)) => x.extend(y),
            (Column::Tensor(x), Column::Tensor(y))
                if x.element == y.element && x.shape.get(1..) == y.shape.get(1..) =>
            {
                match (x.shape.first_mut(), y.shape.first()) {
                    (Some(a), Some(b)) => *a += *b,
                    _ => return false,
                }
                x.data.extend(y.data);
            }
            _ => return false,
        }
        true
    }
}

// The type is generated by wit-bindgen, so `#[derive(Default)]` is not available.
#[allow(clippy::derivable_impls)]
impl Default for Batch {
    fn default() -> Self {
        Batch { fields: Vec::new() }
    }
}

fn wrong_type(name: &str, want: &str, got: &Column) -> Error {
    Error::InvalidInput(format!(
        "field `{name}` must be {want}, got {}",
        got.type_name()
    ))
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of rows (every field has this many values).
    pub fn num_rows(&self) -> usize {
        self.fields.first().map_or(0, |f| f.values.len())
    }

    pub fn column(&self, name: &str) -> Result<&Column, Error> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.values)
            .ok_or_else(|| Error::InvalidInput(format!("missing field `{name}`")))
    }

    /// A numeric field as f64 (int64 columns are widened).
    pub fn f64s(&self, name: &str) -> Result<Vec<f64>, Error> {
        match self.column(name)? {
            Column::Float64(v) => Ok(v.clone()),
            Column::Float32(v) => Ok(v.iter().map(|x| f64::from(*x)).collect()),
            Column::Int64(v) => Ok(v.iter().map(|x| *x as f64).collect()),
            other => Err(wrong_type(name, "numeric", other)),
        }
    }

    /// A numeric field as f32: a float32 column borrowed, others converted.
    pub fn f32s(&self, name: &str) -> Result<Cow<'_, [f32]>, Error> {
        match self.column(name)? {
            Column::Float32(v) => Ok(Cow::Borrowed(v)),
            Column::Float64(v) => Ok(Cow::Owned(v.iter().map(|x| *x as f32).collect())),
            Column::Int64(v) => Ok(Cow::Owned(v.iter().map(|x| *x as f32).collect())),
            other => Err(wrong_type(name, "numeric", other)),
        }
    }

    /// A tensor field, borrowed.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, Error> {
        match self.column(name)? {
            Column::Tensor(t) => Ok(TensorView::of(t)),
            other => Err(wrong_type(name, "a tensor", other)),
        }
    }

    /// The fields `names` as one row-major f32 matrix (`num_rows() x names.len()`), a
    /// model's input: float64 and int64 values converted, booleans as 0 and 1.
    pub fn f32_rows(&self, names: &[&str]) -> Result<Vec<f32>, Error> {
        let rows = self.num_rows();
        let columns = names
            .iter()
            .map(|name| {
                let c: Vec<f32> = match self.column(name)? {
                    Column::Float32(v) => v.clone(),
                    Column::Float64(v) => v.iter().map(|x| *x as f32).collect(),
                    Column::Int64(v) => v.iter().map(|x| *x as f32).collect(),
                    Column::Boolean(v) => v.iter().map(|b| f32::from(u8::from(*b))).collect(),
                    other => {
                        return Err(Error::InvalidInput(format!(
                            "field `{name}` is {}; the model takes one number per row",
                            other.type_name()
                        )))
                    }
                };
                match c.len() == rows {
                    true => Ok(c),
                    false => Err(Error::InvalidInput(format!(
                        "field `{name}` has {} values, the batch {rows} rows",
                        c.len()
                    ))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut x = Vec::with_capacity(rows * columns.len());
        for r in 0..rows {
            x.extend(columns.iter().map(|c| c[r])); // every column has `rows` values
        }
        Ok(x)
    }

    pub fn i64s(&self, name: &str) -> Result<&[i64], Error> {
        match self.column(name)? {
            Column::Int64(v) => Ok(v),
            other => Err(wrong_type(name, "int64", other)),
        }
    }

    pub fn texts(&self, name: &str) -> Result<&[String], Error> {
        match self.column(name)? {
            Column::Text(v) => Ok(v),
            other => Err(wrong_type(name, "text", other)),
        }
    }

    pub fn bools(&self, name: &str) -> Result<&[bool], Error> {
        match self.column(name)? {
            Column::Boolean(v) => Ok(v),
            other => Err(wrong_type(name, "boolean", other)),
        }
    }

    /// Add (or replace) a field; its length must match the batch's rows.
    pub fn with(mut self, name: &str, values: Column) -> Result<Self, Error> {
        if !self.fields.is_empty() && values.len() != self.num_rows() {
            return Err(Error::Internal(format!(
                "field `{name}` has {} values, the batch has {} rows",
                values.len(),
                self.num_rows()
            )));
        }
        self.fields.retain(|f| f.name != name);
        self.fields.push(Field {
            name: name.to_string(),
            values,
        });
        Ok(self)
    }

    pub fn with_f32(self, name: &str, values: Vec<f32>) -> Result<Self, Error> {
        self.with(name, Column::Float32(values))
    }

    pub fn with_tensor(self, name: &str, tensor: Tensor) -> Result<Self, Error> {
        let want = tensor
            .shape
            .iter()
            .try_fold(tensor.element.size(), |n, d| n.checked_mul(*d as usize));
        if tensor.shape.is_empty() || want != Some(tensor.data.len()) {
            return Err(Error::Internal(format!(
                "tensor `{name}` of shape {:?} has {} bytes of data",
                tensor.shape,
                tensor.data.len()
            )));
        }
        self.with(name, Column::Tensor(tensor))
    }

    pub fn with_f64(self, name: &str, values: Vec<f64>) -> Result<Self, Error> {
        self.with(name, Column::Float64(values))
    }

    pub fn with_i64(self, name: &str, values: Vec<i64>) -> Result<Self, Error> {
        self.with(name, Column::Int64(values))
    }

    pub fn with_text(self, name: &str, values: Vec<String>) -> Result<Self, Error> {
        self.with(name, Column::Text(values))
    }

    pub fn with_bool(self, name: &str, values: Vec<bool>) -> Result<Self, Error> {
        self.with(name, Column::Boolean(values))
    }
}
