//! The Open Inference Protocol's tensors on the wire, both ways: JSON `data`, and
//! the binary tensor data extension (KServe / Triton): a JSON header of
//! `Inference-Header-Content-Length` bytes, then each binary tensor's bytes in
//! the order of the header's tensors, `parameters.binary_data_size` each,
//! little-endian, row-major; BOOL one byte, BYTES a 4-byte length before each
//! element. Binary outputs when the request asks (`parameters.binary_data_output`,
//! or an output's `parameters.binary_data`).
//!
//! A tensor of shape `[N]` or `[N, 1]` is one column: FP32 a float32 column,
//! FP16/BF16/FP64 float64, INT*/UINT* int64, BOOL boolean, BYTES text (UTF-8) or
//! bytes (binary, not UTF-8). Any other shape (up to 8 dimensions, the first the
//! rows) is a tensor field of the same element type (FP16, BF16, FP32, FP64,
//! INT8, UINT8, INT32, INT64, BOOL; the others have no tensor element type and
//! are refused). Outputs go back the same way: a column as `[N]` (FP64, FP32,
//! INT64, BOOL, BYTES), a tensor with its own shape and type.
//!
//! Every size comes from the client: each is checked against the bytes that
//! came (the body is bounded) before anything is allocated from it.

use super::ApiError;
use crate::bindings::{Batch, Column, ElementType, Field, Tensor};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

pub(super) const HEADER_LENGTH: &str = "inference-header-content-length";

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
}

#[derive(serde::Deserialize)]
pub(crate) struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct InputTensor {
    pub(crate) name: String,
    pub(crate) shape: Vec<i64>,
    pub(crate) datatype: String,
    #[serde(default)]
    pub(crate) data: Option<Value>,
    #[serde(default)]
    pub(crate) parameters: Option<Map<String, Value>>,
}

#[derive(serde::Deserialize)]
pub(crate) struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// A request as the call path takes it, and what its answer must look like.
pub(crate) struct Request {
    pub(crate) id: Option<String>,
    pub(crate) batch: Batch,
    pub(crate) outputs: Outputs,
}

/// Which outputs the client asked for, and in which encoding.
pub(crate) struct Outputs {
    wanted: Vec<(String, Option<bool>)>,
    binary_default: bool,
}

/// The wire format without the call path, for a server that runs a model itself:
/// the native peer of `scripts/bench-peers.sh` (`host/examples/native_oip.rs`),
/// which decodes and encodes exactly as Quiver does, with no sandbox between.
pub mod direct {
    use crate::bindings::Batch;
    use axum::http::HeaderMap;
    use serde_json::json;

    /// A decoded request: its tensors as a batch, and the outputs it asked for.
    pub struct Decoded {
        pub batch: Batch,
        outputs: super::Outputs,
    }

    /// Decode a request body (JSON, or the binary extension per `headers`).
    pub fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Decoded, String> {
        let req = super::parse(headers, body).map_err(|e| e.message().to_string())?;
        Ok(Decoded {
            batch: req.batch,
            outputs: req.outputs,
        })
    }

    /// The response body for `out`, and the JSON header's length when binary
    /// outputs follow it.
    pub fn encode(
        model: &str,
        out: &Batch,
        asked: &Decoded,
    ) -> Result<(Vec<u8>, Option<usize>), String> {
        let (outputs, binary) =
            super::response_tensors(out, &asked.outputs).map_err(|e| e.message().to_string())?;
        let mut body = json!({ "model_name": model, "outputs": outputs })
            .to_string()
            .into_bytes();
        let header = (!binary.is_empty()).then_some(body.len());
        body.extend_from_slice(&binary);
        Ok((body, header))
    }
}

/// A parameter that must be a boolean when present.
fn flag(
    params: &Option<Map<String, Value>>,
    key: &str,
    what: &str,
) -> Result<Option<bool>, ApiError> {
    match params.as_ref().and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(bad(format!(
            "{what}: parameter `{key}` is {other}, not a boolean"
        ))),
    }
}

/// The body's JSON header and the binary part after it, as the
/// `Inference-Header-Content-Length` header splits them (no header: all JSON).
fn split<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(v) = headers.get(HEADER_LENGTH) else {
        return Ok((body, &[]));
    };
    let n: usize = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| bad(format!("header {HEADER_LENGTH} is not a byte count: {v:?}")))?;
    if n > body.len() {
        return Err(bad(format!(
            "header {HEADER_LENGTH} says the JSON header is {n} bytes; the body has {}",
            body.len()
        )));
    }
    Ok(body.split_at(n))
}

pub(crate) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Request, ApiError> {
    let (header, mut binary) = split(headers, body)?;
    let req: InferRequest = super::extract::json_object(header)
        .map_err(|e| bad(format!("not an inference request: {e}")))?;
    let batch = request_batch(&req.inputs, &mut binary)?;
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data after the last tensor's (binary_data_size of each input must add up to the body)",
            binary.len()
        )));
    }
    let mut wanted = Vec::with_capacity(req.outputs.len());
    for o in &req.outputs {
        let what = format!("output `{}`", o.name);
        if let Some(p) = &o.parameters {
            if p.contains_key("classification") {
                return Err(bad(format!(
                    "{what}: the classification extension is not supported; ask for the tensor"
                )));
            }
        }
        wanted.push((o.name.clone(), flag(&o.parameters, "binary_data", &what)?));
    }
    let binary_default =
        flag(&req.parameters, "binary_data_output", "the request")?.unwrap_or(false);
    Ok(Request {
        id: req.id,
        batch,
        outputs: Outputs {
            wanted,
            binary_default,
        },
    })
}

/// Flatten nested JSON arrays (row-major) into one list of scalars.
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// How an input maps onto a batch field: one column of `N` values (`[N]`,
/// `[N, 1]`), or a tensor of these dimensions.
enum Layout {
    Column(usize),
    Tensor(Vec<u32>),
}

/// The layout of a tensor of `shape`, checked (negative, huge, too many
/// dimensions) before anything is sized from it.
fn layout(name: &str, shape: &[i64]) -> Result<Layout, ApiError> {
    let max = crate::columns::MAX_RANK;
    if shape.is_empty() || shape.len() > max {
        return Err(bad(format!(
            "input `{name}` has shape {shape:?}: 1 to {max} dimensions, the first the rows"
        )));
    }
    let dims = shape
        .iter()
        .map(|d| u32::try_from(*d))
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|_| {
            bad(format!(
                "input `{name}` has shape {shape:?}: a dimension is negative or over {}",
                u32::MAX
            ))
        })?;
    if crate::columns::elements(&dims).is_none_or(|n| n.checked_mul(8).is_none()) {
        return Err(bad(format!(
            "input `{name}` has shape {shape:?}: more elements than this host can address"
        )));
    }
    Ok(match dims.as_slice() {
        [n] | [n, 1] => Layout::Column(*n as usize),
        _ => Layout::Tensor(dims),
    })
}

/// The OIP datatype of a tensor element type.
fn datatype_of(e: ElementType) -> &'static str {
    match e {
        ElementType::Float16 => "FP16",
        ElementType::Bfloat16 => "BF16",
        ElementType::Float32 => "FP32",
        ElementType::Float64 => "FP64",
        ElementType::Int8 => "INT8",
        ElementType::Uint8 => "UINT8",
        ElementType::Int32 => "INT32",
        ElementType::Int64 => "INT64",
        ElementType::Boolean => "BOOL",
    }
}

/// The inclusive range of an integer datatype, as i64 (UINT64's top half does
/// not fit an int64 column and is refused).
fn int_range(datatype: &str) -> Option<(i64, i64)> {
    Some(match datatype {
        "INT8" => (i8::MIN.into(), i8::MAX.into()),
        "INT16" => (i16::MIN.into(), i16::MAX.into()),
        "INT32" => (i32::MIN.into(), i32::MAX.into()),
        "INT64" => (i64::MIN, i64::MAX),
        "UINT8" => (0, u8::MAX.into()),
        "UINT16" => (0, u16::MAX.into()),
        "UINT32" => (0, u32::MAX.into()),
        "UINT64" => (0, i64::MAX),
        _ => return None,
    })
}

/// Bytes per element of a fixed-size datatype (BYTES is not fixed-size).
fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "FP16" | "BF16" | "INT16" | "UINT16" => 2,
        "FP32" | "INT32" | "UINT32" => 4,
        "FP64" | "INT64" | "UINT64" => 8,
        _ => return None,
    })
}

const DATATYPES: &str = "BOOL, INT8-64, UINT8-64, FP16, BF16, FP32, FP64, BYTES";

pub(crate) fn request_batch(inputs: &[InputTensor], binary: &mut &[u8]) -> Result<Batch, ApiError> {
    if inputs.is_empty() {
        return Err(bad("the request has no inputs"));
    }
    let mut fields = Vec::with_capacity(inputs.len());
    let mut rows: Option<(usize, &InputTensor)> = None;
    for t in inputs {
        let layout = layout(&t.name, &t.shape)?;
        let n = match &layout {
            Layout::Column(n) => *n,
            Layout::Tensor(dims) => dims[0] as usize,
        };
        let (first, by) = *rows.get_or_insert((n, t));
        if first != n {
            return Err(bad(format!(
                "input `{}` of shape {:?} has {n} rows, `{}` of shape {:?} {first}: every input's first dimension is the rows",
                t.name, t.shape, by.name, by.shape
            )));
        }
        if element_size(&t.datatype).is_none() && t.datatype != "BYTES" {
            return Err(bad(format!(
                "input `{}`: unknown datatype `{}` ({DATATYPES})",
                t.name, t.datatype
            )));
        }
        let size = match t
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
        {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "input `{}`: binary_data_size {v} is not a byte count",
                            t.name
                        ))
                    })?,
            ),
        };
        let values = match (size, &t.data) {
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "input `{}` has both `data` and binary_data_size: send one",
                    t.name
                )))
            }
            (None, None) => return Err(bad(format!("input `{}` has no `data`", t.name))),
            (None, Some(data)) => match layout {
                Layout::Column(n) => json_column(t, n, data)?,
                Layout::Tensor(dims) => json_tensor(t, dims, data)?,
            },
            (Some(size), None) => {
                if size > binary.len() {
                    return Err(bad(format!(
                        "input `{}`: binary_data_size {size} but only {} bytes of binary data are left",
                        t.name,
                        binary.len()
                    )));
                }
                let (bytes, rest) = binary.split_at(size);
                *binary = rest;
                match layout {
                    Layout::Column(n) => binary_column(t, n, bytes)?,
                    Layout::Tensor(dims) => binary_tensor(t, dims, bytes)?,
                }
            }
        };
        fields.push(Field {
            name: t.name.clone(),
            values,
        });
    }
    Ok(Batch { fields })
}

/// The tensor element type of `t`'s datatype, or why it has none.
fn element_of(t: &InputTensor) -> Result<ElementType, ApiError> {
    crate::columns::element_of_datatype(&t.datatype).ok_or_else(|| {
        bad(format!(
            "input `{}` has shape {:?}: a {} input must be [N] or [N, 1]; n-d tensors are FP16, BF16, FP32, FP64, INT8, UINT8, INT32, INT64 or BOOL",
            t.name, t.shape, t.datatype
        ))
    })
}

fn json_tensor(t: &InputTensor, dims: Vec<u32>, data: &Value) -> Result<Column, ApiError> {
    let element = element_of(t)?;
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    // `layout` checked the product fits.
    let want = crate::columns::elements(&dims).unwrap_or(usize::MAX);
    if flat.len() != want {
        return Err(bad(format!(
            "input `{}`: shape {:?} needs {want} values, data has {}",
            t.name,
            t.shape,
            flat.len()
        )));
    }
    let wrong = |i: usize, want: &str| {
        bad(format!(
            "input `{}` ({}): element {i} is {}, not {want}",
            t.name, t.datatype, flat[i]
        ))
    };
    // Sized from the data that came (bounded by the body).
    let mut bytes = Vec::with_capacity(flat.len() * crate::columns::element_size(element));
    for (i, v) in flat.iter().enumerate() {
        match element {
            ElementType::Boolean => {
                bytes.push(u8::from(v.as_bool().ok_or_else(|| wrong(i, "a boolean"))?))
            }
            ElementType::Float16
            | ElementType::Bfloat16
            | ElementType::Float32
            | ElementType::Float64 => {
                let x = v.as_f64().ok_or_else(|| wrong(i, "a number"))?;
                match element {
                    ElementType::Float16 => bytes.extend(half::f16::from_f64(x).to_le_bytes()),
                    ElementType::Bfloat16 => bytes.extend(half::bf16::from_f64(x).to_le_bytes()),
                    ElementType::Float32 => bytes.extend((x as f32).to_le_bytes()),
                    _ => bytes.extend(x.to_le_bytes()),
                }
            }
            _ => {
                // Checked by `element_of`: an integer datatype with a range.
                let (lo, hi) = int_range(&t.datatype).unwrap_or((i64::MIN, i64::MAX));
                let x = v
                    .as_i64()
                    .filter(|x| (lo..=hi).contains(x))
                    .ok_or_else(|| wrong(i, &format!("an integer in {lo}..={hi}")))?;
                match element {
                    ElementType::Int8 => bytes.extend((x as i8).to_le_bytes()),
                    ElementType::Uint8 => bytes.push(x as u8),
                    ElementType::Int32 => bytes.extend((x as i32).to_le_bytes()),
                    _ => bytes.extend(x.to_le_bytes()),
                }
            }
        }
    }
    Ok(Column::Tensor(Tensor {
        shape: dims,
        element,
        data: bytes,
    }))
}

fn binary_tensor(t: &InputTensor, dims: Vec<u32>, bytes: &[u8]) -> Result<Column, ApiError> {
    let element = element_of(t)?;
    let tensor = Tensor {
        shape: dims,
        element,
        data: bytes.to_vec(),
    };
    crate::columns::check_tensor(&t.name, &tensor).map_err(|e| {
        bad(format!(
            "input {} (binary_data_size {})",
            e.trim_start_matches("field "),
            bytes.len()
        ))
    })?;
    Ok(Column::Tensor(tensor))
}

fn json_column(t: &InputTensor, n: usize, data: &Value) -> Result<Column, ApiError> {
    // Sized from the data that came (bounded by the body), never from the shape.
    let mut data_flat = Vec::new();
    flatten(data, &mut data_flat);
    let data = data_flat;
    if data.len() != n {
        return Err(bad(format!(
            "input `{}`: shape {:?} needs {n} values, data has {}",
            t.name,
            t.shape,
            data.len()
        )));
    }
    let wrong = |i: usize, want: &str| {
        bad(format!(
            "input `{}` ({}): element {i} is {}, not {want}",
            t.name, t.datatype, data[i]
        ))
    };
    Ok(match t.datatype.as_str() {
        "FP32" => Column::Float32(
            data.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_f64()
                        .map(|x| x as f32)
                        .ok_or_else(|| wrong(i, "a number"))
                })
                .collect::<Result<_, _>>()?,
        ),
        "FP16" | "BF16" | "FP64" => Column::Float64(
            data.iter()
                .enumerate()
                .map(|(i, v)| v.as_f64().ok_or_else(|| wrong(i, "a number")))
                .collect::<Result<_, _>>()?,
        ),
        "BOOL" => Column::Boolean(
            data.iter()
                .enumerate()
                .map(|(i, v)| v.as_bool().ok_or_else(|| wrong(i, "a boolean")))
                .collect::<Result<_, _>>()?,
        ),
        "BYTES" => Column::Text(
            data.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| wrong(i, "a string"))
                })
                .collect::<Result<_, _>>()?,
        ),
        dt => {
            // Checked above: an integer datatype.
            let (lo, hi) = int_range(dt).unwrap_or((i64::MIN, i64::MAX));
            let want = format!("an integer in {lo}..={hi}");
            Column::Int64(
                data.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_i64()
                            .filter(|x| (lo..=hi).contains(x))
                            .ok_or_else(|| wrong(i, &want))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
    })
}

fn binary_column(t: &InputTensor, n: usize, bytes: &[u8]) -> Result<Column, ApiError> {
    let name = &t.name;
    if t.datatype == "BYTES" {
        // Each element: a u32 little-endian length, then that many bytes.
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return Err(bad(format!(
                    "input `{name}` (BYTES): a length prefix is cut short"
                )));
            };
            let len = u32::from_le_bytes(*len) as usize;
            if len > tail.len() || out.len() == n {
                return Err(bad(format!(
                    "input `{name}` (BYTES): element {} overruns the tensor's {} bytes or its shape",
                    out.len(),
                    bytes.len()
                )));
            }
            let (s, tail) = tail.split_at(len);
            out.push(s);
            rest = tail;
        }
        if out.len() != n {
            return Err(bad(format!(
                "input `{name}`: shape {:?} needs {n} elements, binary data has {}",
                t.shape,
                out.len()
            )));
        }
        // Text when every element is UTF-8, else opaque bytes.
        return Ok(
            match out
                .iter()
                .map(|s| std::str::from_utf8(s))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(text) => Column::Text(text.into_iter().map(str::to_string).collect()),
                Err(_) => Column::Bytes(out.into_iter().map(<[u8]>::to_vec).collect()),
            },
        );
    }
    // Checked by the caller: a fixed-size datatype.
    let size = element_size(&t.datatype).unwrap_or(1);
    if n.checked_mul(size) != Some(bytes.len()) {
        return Err(bad(format!(
            "input `{name}`: shape {:?} of {} needs {n}×{size} bytes, binary_data_size is {}",
            t.shape,
            t.datatype,
            bytes.len()
        )));
    }
    let floats = |f: fn(&[u8]) -> f64| Column::Float64(bytes.chunks_exact(size).map(f).collect());
    let ints = |f: fn(&[u8]) -> Option<i64>| -> Result<Column, ApiError> {
        bytes
            .chunks_exact(size)
            .enumerate()
            .map(|(i, c)| {
                f(c).ok_or_else(|| {
                    bad(format!(
                        "input `{name}` ({}): element {i} does not fit an int64",
                        t.datatype
                    ))
                })
            })
            .collect::<Result<_, _>>()
            .map(Column::Int64)
    };
    // `chunks_exact(size)` hands each closure exactly `size` bytes.
    fn arr<const K: usize>(c: &[u8]) -> [u8; K] {
        let mut a = [0u8; K];
        a.copy_from_slice(c);
        a
    }
    Ok(match t.datatype.as_str() {
        "FP16" => floats(|c| half::f16::from_le_bytes(arr(c)).to_f64()),
        "BF16" => floats(|c| half::bf16::from_le_bytes(arr(c)).to_f64()),
        "FP32" => Column::Float32(
            bytes
                .chunks_exact(size)
                .map(|c| f32::from_le_bytes(arr(c)))
                .collect(),
        ),
        "FP64" => floats(|c| f64::from_le_bytes(arr(c))),
        "INT8" => ints(|c| Some(i8::from_le_bytes(arr(c)).into()))?,
        "INT16" => ints(|c| Some(i16::from_le_bytes(arr(c)).into()))?,
        "INT32" => ints(|c| Some(i32::from_le_bytes(arr(c)).into()))?,
        "INT64" => ints(|c| Some(i64::from_le_bytes(arr(c))))?,
        "UINT8" => ints(|c| Some(c[0].into()))?,
        "UINT16" => ints(|c| Some(u16::from_le_bytes(arr(c)).into()))?,
        "UINT32" => ints(|c| Some(u32::from_le_bytes(arr(c)).into()))?,
        "UINT64" => ints(|c| i64::try_from(u64::from_le_bytes(arr(c))).ok())?,
        "BOOL" => Column::Boolean(
            bytes
                .iter()
                .enumerate()
                .map(|(i, b)| match b {
                    0 => Ok(false),
                    1 => Ok(true),
                    other => Err(bad(format!(
                        "input `{name}` (BOOL): element {i} is byte {other}, not 0 or 1"
                    ))),
                })
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(bad(format!(
                "input `{name}`: unknown datatype `{other}` ({DATATYPES})"
            )))
        }
    })
}

/// The response's output tensors (JSON header entries) and the binary part that
/// follows the header (empty when every output went as JSON).
pub(crate) fn response_tensors(
    out: &Batch,
    wanted: &Outputs,
) -> Result<(Vec<Value>, Vec<u8>), ApiError> {
    for (w, _) in &wanted.wanted {
        if !out.fields.iter().any(|f| &f.name == w) {
            let have: Vec<&str> = out.fields.iter().map(|f| f.name.as_str()).collect();
            return Err(bad(format!(
                "no output `{w}`; this function returns {have:?}"
            )));
        }
    }
    crate::columns::check_batch(out).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_output",
            format!("the function returned {e}"),
        )
    })?;
    let internal = |f: &Field, what: &str| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("output `{}`: {what}", f.name),
        )
    };
    let mut tensors = Vec::with_capacity(out.fields.len());
    let mut binary = Vec::new();
    for f in &out.fields {
        let asked = wanted.wanted.iter().find(|(w, _)| w == &f.name);
        if !wanted.wanted.is_empty() && asked.is_none() {
            continue;
        }
        let as_binary = asked.and_then(|(_, b)| *b).unwrap_or(wanted.binary_default);
        let n = crate::columns::rows(&f.values);
        let (datatype, shape): (&str, Vec<u32>) = match &f.values {
            Column::Float64(_) => ("FP64", vec![n as u32]),
            Column::Float32(_) => ("FP32", vec![n as u32]),
            Column::Int64(_) => ("INT64", vec![n as u32]),
            Column::Boolean(_) => ("BOOL", vec![n as u32]),
            Column::Text(_) | Column::Bytes(_) => ("BYTES", vec![n as u32]),
            Column::Tensor(t) => (datatype_of(t.element), t.shape.clone()),
        };
        let mut t = json!({ "name": f.name, "datatype": datatype, "shape": shape });
        if as_binary {
            let start = binary.len();
            let mut strings = |items: &mut dyn Iterator<Item = &[u8]>| -> Result<(), ApiError> {
                for s in items {
                    let len = u32::try_from(s.len())
                        .map_err(|_| internal(f, "an element is over 4 GiB"))?;
                    binary.extend_from_slice(&len.to_le_bytes());
                    binary.extend_from_slice(s);
                }
                Ok(())
            };
            match &f.values {
                Column::Text(v) => strings(&mut v.iter().map(|s| s.as_bytes()))?,
                Column::Bytes(v) => strings(&mut v.iter().map(Vec::as_slice))?,
                Column::Float64(v) => v
                    .iter()
                    .for_each(|x| binary.extend_from_slice(&x.to_le_bytes())),
                Column::Float32(v) => v
                    .iter()
                    .for_each(|x| binary.extend_from_slice(&x.to_le_bytes())),
                Column::Int64(v) => v
                    .iter()
                    .for_each(|x| binary.extend_from_slice(&x.to_le_bytes())),
                Column::Boolean(v) => binary.extend(v.iter().map(|b| u8::from(*b))),
                Column::Tensor(t) => binary.extend_from_slice(&t.data),
            }
            t["parameters"] = json!({ "binary_data_size": binary.len() - start });
        } else {
            t["data"] = match &f.values {
                Column::Float64(v) => json!(v),
                Column::Float32(v) => json!(v),
                Column::Int64(v) => json!(v),
                Column::Boolean(v) => json!(v),
                Column::Text(v) => json!(v),
                Column::Bytes(v) => {
                    let text: Result<Vec<&str>, _> =
                        v.iter().map(|b| std::str::from_utf8(b)).collect();
                    json!(text.map_err(|_| bad(format!(
                        "output `{}` holds bytes that are not UTF-8: ask for it with binary_data",
                        f.name
                    )))?)
                }
                Column::Tensor(t) => tensor_json(t),
            };
        }
        tensors.push(t);
    }
    Ok((tensors, binary))
}

/// A checked tensor's elements as a flat JSON array (row-major, as OIP sends them).
fn tensor_json(t: &Tensor) -> Value {
    let size = crate::columns::element_size(t.element);
    Value::Array(
        t.data
            .chunks_exact(size)
            .map(|c| match t.element {
                ElementType::Boolean => Value::from(c[0] == 1),
                ElementType::Int8 | ElementType::Uint8 | ElementType::Int32 => {
                    Value::from(crate::columns::element_f64(t.element, c) as i64)
                }
                ElementType::Int64 => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    Value::from(i64::from_le_bytes(a))
                }
                ElementType::Float32 => {
                    let mut a = [0u8; 4];
                    a.copy_from_slice(c);
                    json!(f32::from_le_bytes(a))
                }
                e => json!(crate::columns::element_f64(e, c)),
            })
            .collect(),
    )
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<bool>().prop_map(|b| json!(b)),
            "[a-z]{0,4}".prop_map(|s| json!(s)),
        ]
    }

    fn dims() -> impl Strategy<Value = Vec<i64>> {
        let dim = prop_oneof![
            any::<i64>(),
            -2i64..6,
            Just(i64::MAX),
            Just(i64::MIN),
            Just(1i64 << 32),
        ];
        prop::collection::vec(dim, 0..4)
    }

    fn datatype() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("FP32"),
            Just("FP64"),
            Just("FP16"),
            Just("INT64"),
            Just("INT8"),
            Just("UINT8"),
            Just("UINT64"),
            Just("BOOL"),
            Just("BYTES"),
            Just("FP8")
        ]
    }

    fn tensor() -> impl Strategy<Value = InputTensor> {
        (
            "[a-z]{1,3}",
            dims(),
            datatype(),
            prop::collection::vec(scalar(), 0..6),
            any::<bool>(),
        )
            .prop_map(|(name, shape, datatype, data, nested)| InputTensor {
                name,
                shape,
                datatype: datatype.to_string(),
                data: Some(match nested {
                    true => json!(data.chunks(2).map(|c| json!(c)).collect::<Vec<_>>()),
                    false => json!(data),
                }),
                parameters: None,
            })
    }

    /// A binary tensor: any declared size (often a lie) over any bytes.
    fn binary_tensor() -> impl Strategy<Value = InputTensor> {
        (
            "[a-z]{1,3}",
            dims(),
            datatype(),
            prop_oneof![0u64..40, any::<u64>()],
        )
            .prop_map(|(name, shape, datatype, size)| InputTensor {
                name,
                shape,
                datatype: datatype.to_string(),
                data: None,
                parameters: Some(
                    json!({ "binary_data_size": size })
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                ),
            })
    }

    fn check(batch: &Batch, inputs: &[InputTensor]) -> Result<(), TestCaseError> {
        prop_assert_eq!(batch.fields.len(), inputs.len());
        for (f, t) in batch.fields.iter().zip(inputs) {
            let want: i64 = t.shape.iter().product();
            match &f.values {
                Column::Tensor(x) => {
                    let shape: Vec<i64> = x.shape.iter().map(|d| i64::from(*d)).collect();
                    prop_assert_eq!(&shape, &t.shape);
                    prop_assert!(crate::columns::check_tensor(&f.name, x).is_ok());
                    let size = crate::columns::element_size(x.element) as i64;
                    prop_assert_eq!(x.data.len() as i64, want * size);
                }
                other => prop_assert_eq!(crate::convert::column_len(other) as i64, want),
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any JSON request maps to a batch or a 400, never a panic or an
        /// allocation sized from the shape; a batch has one column per tensor,
        /// each as long as the shape says and as the data holds.
        #[test]
        fn any_request_is_a_batch_or_a_400(inputs in prop::collection::vec(tensor(), 0..4)) {
            match request_batch(&inputs, &mut &[][..]) {
                Err(e) => prop_assert_eq!(e.status, StatusCode::BAD_REQUEST),
                Ok(batch) => {
                    check(&batch, &inputs)?;
                    for (f, t) in batch.fields.iter().zip(&inputs) {
                        let mut flat = Vec::new();
                        flatten(t.data.as_ref().unwrap_or(&Value::Null), &mut flat);
                        prop_assert_eq!(crate::convert::column_len(&f.values), flat.len());
                    }
                }
            }
        }

        /// Any binary request (sizes that lie, bytes of any value, data left over)
        /// maps to a batch or a 400 the same way.
        #[test]
        fn any_binary_request_is_a_batch_or_a_400(
            inputs in prop::collection::vec(binary_tensor(), 0..4),
            bytes in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut rest = &bytes[..];
            match request_batch(&inputs, &mut rest) {
                Err(e) => prop_assert_eq!(e.status, StatusCode::BAD_REQUEST),
                Ok(batch) => check(&batch, &inputs)?,
            }
        }
    }

    fn header(n: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_LENGTH, n.parse().unwrap());
        h
    }

    #[test]
    fn binary_inputs_decode_and_outputs_encode_as_the_extension_says() {
        let json = json!({
            "inputs": [
                {"name": "a", "shape": [2, 1], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
                {"name": "b", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}},
                {"name": "c", "shape": [2], "datatype": "UINT8", "data": [7, 255]},
                {"name": "d", "shape": [2], "datatype": "FP16", "parameters": {"binary_data_size": 4}},
            ],
            "outputs": [{"name": "c", "parameters": {"binary_data": true}}, {"name": "b"}],
        })
        .to_string();
        let mut body = json.clone().into_bytes();
        body.extend(1.5f32.to_le_bytes());
        body.extend((-2.0f32).to_le_bytes());
        body.extend(2u32.to_le_bytes());
        body.extend(b"hi");
        body.extend(1u32.to_le_bytes());
        body.extend(b"!");
        body.extend(half::f16::from_f64(0.5).to_le_bytes());
        body.extend(half::f16::from_f64(-4.0).to_le_bytes());
        let req = parse(&header(&json.len().to_string()), &body).unwrap();
        let col = |i: usize| &req.batch.fields[i].values;
        assert!(matches!(col(0), Column::Float32(v) if v == &[1.5, -2.0]));
        assert!(matches!(col(1), Column::Text(v) if v == &["hi", "!"]));
        assert!(matches!(col(2), Column::Int64(v) if v == &[7, 255]));
        assert!(matches!(col(3), Column::Float64(v) if v == &[0.5, -4.0]));

        let (tensors, binary) = response_tensors(&req.batch, &req.outputs).unwrap();
        // In the batch's order, only those asked for: b as JSON, c as binary.
        assert_eq!(tensors.len(), 2);
        assert_eq!(tensors[0]["name"], "b");
        assert_eq!(tensors[0]["data"], json!(["hi", "!"]));
        assert_eq!(tensors[1]["name"], "c");
        assert_eq!(tensors[1]["parameters"]["binary_data_size"], 16);
        assert!(tensors[1].get("data").is_none());
        let mut want = 7i64.to_le_bytes().to_vec();
        want.extend(255i64.to_le_bytes());
        assert_eq!(binary, want);
    }

    #[test]
    fn n_d_tensors_come_in_and_go_back_with_their_shape_and_type() {
        let pixels: Vec<u8> = (0..24).collect();
        let json = json!({
            "inputs": [
                {"name": "image", "shape": [2, 3, 2, 2], "datatype": "UINT8",
                 "parameters": {"binary_data_size": 24}},
                {"name": "ids", "shape": [2, 3], "datatype": "INT64", "data": [[1, 2, 3], [4, 5, 6]]},
                {"name": "mask", "shape": [2, 3], "datatype": "BOOL", "data": [true, true, false, true, false, false]},
                {"name": "blob", "shape": [2], "datatype": "BYTES",
                 "parameters": {"binary_data_size": 10}},
            ],
            "outputs": [{"name": "image", "parameters": {"binary_data": true}}, {"name": "ids"}, {"name": "mask"}],
        })
        .to_string();
        let mut body = json.clone().into_bytes();
        body.extend(&pixels);
        body.extend(1u32.to_le_bytes());
        body.push(0xff);
        body.extend(1u32.to_le_bytes());
        body.push(0x00);
        let req = parse(&header(&json.len().to_string()), &body).unwrap();
        let col = |i: usize| &req.batch.fields[i].values;
        let Column::Tensor(image) = col(0) else {
            panic!("a tensor: {:?}", col(0))
        };
        assert_eq!(image.shape, [2, 3, 2, 2]);
        assert_eq!(image.element, ElementType::Uint8);
        assert_eq!(image.data, pixels);
        let Column::Tensor(ids) = col(1) else {
            panic!("a tensor")
        };
        assert_eq!((ids.element, ids.data.len()), (ElementType::Int64, 48));
        assert_eq!(ids.data[24..32], 4i64.to_le_bytes());
        assert!(
            matches!(col(3), Column::Bytes(v) if v == &[vec![0xff], vec![0]]),
            "not UTF-8: bytes"
        );
        let (tensors, binary) = response_tensors(&req.batch, &req.outputs).unwrap();
        assert_eq!(tensors[0]["shape"], json!([2, 3, 2, 2]));
        assert_eq!(tensors[0]["datatype"], "UINT8");
        assert_eq!(tensors[0]["parameters"]["binary_data_size"], 24);
        assert_eq!(binary, pixels);
        assert_eq!(tensors[1]["data"], json!([1, 2, 3, 4, 5, 6]));
        assert_eq!(tensors[1]["shape"], json!([2, 3]));
        assert_eq!(
            tensors[2]["data"],
            json!([true, true, false, true, false, false])
        );
        // A guest's tensor that lies about its shape is the function's fault.
        let lying = Batch {
            fields: vec![Field {
                name: "y".into(),
                values: Column::Tensor(Tensor {
                    shape: vec![1, 4],
                    element: ElementType::Float32,
                    data: vec![0; 4],
                }),
            }],
        };
        let e = response_tensors(
            &lying,
            &Outputs {
                wanted: vec![],
                binary_default: false,
            },
        )
        .unwrap_err();
        assert_eq!(
            (e.status, e.message.contains("needs 16 bytes")),
            (StatusCode::BAD_GATEWAY, true)
        );
    }

    #[test]
    fn lying_sizes_and_bad_elements_are_400s_with_the_reason() {
        let one = |t: Value, bytes: &[u8], hlen: Option<&str>| {
            let json = json!({ "inputs": [t] }).to_string();
            let mut body = json.clone().into_bytes();
            body.extend(bytes);
            let n = json.len().to_string();
            let e = parse(&header(hlen.unwrap_or(&n)), &body).err().unwrap();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            e.message
        };
        let t = |dt: &str, shape: Value, size: u64| json!({"name": "x", "shape": shape, "datatype": dt, "parameters": {"binary_data_size": size}});
        for (msg, want) in [
            (one(t("FP32", json!([2]), 8), &[0; 4], None), "only 4 bytes"),
            (
                one(t("FP32", json!([3]), 8), &[0; 8], None),
                "needs 3×4 bytes",
            ),
            (
                one(t("FP32", json!([1]), 4), &[0; 6], None),
                "2 bytes of binary data after",
            ),
            (one(t("BOOL", json!([1]), 1), &[2], None), "not 0 or 1"),
            (
                one(t("UINT64", json!([1]), 8), &u64::MAX.to_le_bytes(), None),
                "does not fit",
            ),
            (
                one(t("BYTES", json!([1]), 4), &9u32.to_le_bytes(), None),
                "overruns",
            ),
            (one(t("BYTES", json!([1]), 3), &[0; 3], None), "cut short"),
            (
                one(t("FP32", json!([2, 3]), 20), &[0; 20], None),
                "needs 24 bytes of data, it has 20",
            ),
            (
                one(t("BOOL", json!([1, 2]), 2), &[1, 2], None),
                "element 1 is byte 2",
            ),
            (
                one(t("INT16", json!([2, 2]), 8), &[0; 8], None),
                "n-d tensors are FP16",
            ),
            (
                one(
                    t("UINT8", json!([1, 1, 1, 1, 1, 1, 1, 1, 1]), 1),
                    &[0],
                    None,
                ),
                "1 to 8 dimensions",
            ),
            (
                one(
                    t(
                        "UINT8",
                        json!([4_000_000_000u64, 4_000_000_000u64, 4_000_000_000u64]),
                        1,
                    ),
                    &[0],
                    None,
                ),
                "more elements than this host can address",
            ),
            (
                one(t("UINT8", json!([65536, 65536, 65536]), 1), &[0], None),
                "needs 281474976710656 bytes of data, it has 1",
            ),
            (
                one(
                    json!({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}),
                    &[],
                    None,
                ),
                "needs 4 values, data has 3",
            ),
            (
                one(t("FP32", json!([1]), 4), &[0; 4], Some("99999")),
                "the body has",
            ),
            (
                one(t("FP32", json!([1]), 4), &[0; 4], Some("-1")),
                "not a byte count",
            ),
            (
                one(t("FP32", json!([i64::MAX]), 4), &[0; 4], None),
                "negative or over",
            ),
            (
                one(
                    json!({"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}),
                    &[],
                    None,
                ),
                "-128..=127",
            ),
            (
                one(
                    json!({"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": {"binary_data_size": 4}}),
                    &[0; 4],
                    None,
                ),
                "both",
            ),
            (
                one(
                    json!({"name": "x", "shape": [1], "datatype": "FP32"}),
                    &[],
                    None,
                ),
                "no `data`",
            ),
        ] {
            assert!(msg.contains(want), "{msg:?} does not say {want:?}");
        }
    }

    #[test]
    fn huge_and_negative_shapes_are_refused_before_allocating() {
        for shape in [
            vec![i64::MAX],
            vec![-1],
            vec![1 << 32, 1 << 32],
            vec![i64::MAX, 1],
        ] {
            let t = InputTensor {
                name: "x".into(),
                shape: shape.clone(),
                datatype: "FP32".into(),
                data: Some(json!([1.0])),
                parameters: None,
            };
            let e = request_batch(&[t], &mut &[][..]).unwrap_err();
            assert_eq!(
                e.status,
                StatusCode::BAD_REQUEST,
                "{shape:?}: {}",
                e.message
            );
        }
    }
}
