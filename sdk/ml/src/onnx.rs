//! The ONNX encoding of a trained [`Model`], written by hand (a
//! few protobuf primitives, no dependencies).
//!
//! [`logistic_regression`] gives the graph the served fraud model
//! (`functions/fraud-score/model/fraud.onnx`) has from the outside: input
//! [`INPUT`] (`X`), float32 `[N, F]`; output [`OUTPUT`] (`probabilities`), float32
//! `[N, 2]`, (P(false), P(true)) per row. Inside: `MatMul` by `W` `[F, 2]` (columns
//! `-w/2`, `+w/2`), `Add` `B` `[2]` (`-b/2`, `+b/2`), `Softmax` over axis 1, so that
//! `P(true) = e^(z/2) / (e^(-z/2) + e^(z/2)) = sigmoid(w · x + b)`, `z = w · x + b`.
//! IR version [`IR_VERSION`] (8), default-domain opset [`OPSET`] (13): standard
//! operators only, which tract 0.23 and ONNX Runtime load.
//!
//! The bytes depend only on the model (weights rounded to f32), not on the
//! platform or the time: fields are written in field-number order, repeated
//! scalars unpacked (as proto2's own encoder does).
//!
//! Field numbers are those of `onnx/onnx.proto` (onnx 1.23; stable since IR 3).
use crate::train::Model;

/// The graph's input, as in `fraud.onnx`.
pub const INPUT: &str = "X";
/// The graph's output, as in `fraud.onnx`.
pub const OUTPUT: &str = "probabilities";
/// `ModelProto.ir_version` (IR_VERSION_2021_7_30).
pub const IR_VERSION: i64 = 8;
/// The default ("ai.onnx") domain's opset version.
pub const OPSET: i64 = 13;
/// `ModelProto.producer_name`.
pub const PRODUCER: &str = "quiver-ml";

// onnx.proto's field numbers.
mod field {
    pub mod model {
        pub const IR_VERSION: u32 = 1;
        pub const PRODUCER_NAME: u32 = 2;
        pub const PRODUCER_VERSION: u32 = 3;
        pub const GRAPH: u32 = 7;
        pub const OPSET_IMPORT: u32 = 8;
    }
    pub mod opset {
        pub const DOMAIN: u32 = 1;
        pub const VERSION: u32 = 2;
    }
    pub mod graph {
        pub const NODE: u32 = 1;
        pub const NAME: u32 = 2;
        pub const INITIALIZER: u32 = 5;
        pub const INPUT: u32 = 11;
        pub const OUTPUT: u32 = 12;
    }
    pub mod node {
        pub const INPUT: u32 = 1;
        pub const OUTPUT: u32 = 2;
        pub const NAME: u32 = 3;
        pub const OP_TYPE: u32 = 4;
        pub const ATTRIBUTE: u32 = 5;
    }
    pub mod attribute {
        pub const NAME: u32 = 1;
        pub const I: u32 = 3;
        pub const TYPE: u32 = 20;
        /// AttributeProto.AttributeType.INT
        pub const TYPE_INT: i64 = 2;
    }
    pub mod tensor {
        pub const DIMS: u32 = 1;
        pub const DATA_TYPE: u32 = 2;
        pub const NAME: u32 = 8;
        pub const RAW_DATA: u32 = 9;
        /// TensorProto.DataType.FLOAT
        pub const FLOAT: i64 = 1;
    }
    pub mod value_info {
        pub const NAME: u32 = 1;
        pub const TYPE: u32 = 2;
    }
    pub mod type_proto {
        pub const TENSOR_TYPE: u32 = 1;
        pub const ELEM_TYPE: u32 = 1;
        pub const SHAPE: u32 = 2;
    }
    pub mod shape {
        pub const DIM: u32 = 1;
        pub const DIM_VALUE: u32 = 1;
        pub const DIM_PARAM: u32 = 2;
    }
}

/// Protobuf wire types.
const VARINT: u64 = 0;
const LEN: u64 = 2;

/// A protobuf message being written.
#[derive(Default)]
struct Message(Vec<u8>);

/// Append `v` as a base-128 varint.
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

impl Message {
    fn key(&mut self, field: u32, wire: u64) {
        put_varint(&mut self.0, (u64::from(field) << 3) | wire);
    }

    /// An int32/int64/enum field (negative values as 10-byte two's complement).
    fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, VARINT);
        put_varint(&mut self.0, v as u64);
        self
    }

    fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, LEN);
        put_varint(&mut self.0, v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    fn string(&mut self, field: u32, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }

    fn message(&mut self, field: u32, m: &Message) -> &mut Self {
        self.bytes(field, &m.0)
    }
}

/// One dimension of a shape: a fixed size or a named, free one.
enum Dim<'a> {
    Value(i64),
    Param(&'a str),
}

/// A ValueInfoProto of a float tensor.
fn float_tensor_info(name: &str, dims: &[Dim]) -> Message {
    use field::{shape, type_proto, value_info};
    let mut shape_msg = Message::default();
    for d in dims {
        let mut dim = Message::default();
        match d {
            Dim::Value(v) => dim.int(shape::DIM_VALUE, *v),
            Dim::Param(p) => dim.string(shape::DIM_PARAM, p),
        };
        shape_msg.message(shape::DIM, &dim);
    }
    let mut tensor = Message::default();
    tensor
        .int(type_proto::ELEM_TYPE, field::tensor::FLOAT)
        .message(type_proto::SHAPE, &shape_msg);
    let mut ty = Message::default();
    ty.message(type_proto::TENSOR_TYPE, &tensor);
    let mut info = Message::default();
    info.string(value_info::NAME, name)
        .message(value_info::TYPE, &ty);
    info
}

/// A float TensorProto (an initializer), `values` row-major in `dims`.
fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> Message {
    use field::tensor;
    let mut t = Message::default();
    for &d in dims {
        t.int(tensor::DIMS, d);
    }
    t.int(tensor::DATA_TYPE, tensor::FLOAT)
        .string(tensor::NAME, name);
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t.bytes(tensor::RAW_DATA, &raw);
    t
}

/// A NodeProto of the default domain.
fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], ints: &[(&str, i64)]) -> Message {
    use field::{attribute, node};
    let mut n = Message::default();
    for i in inputs {
        n.string(node::INPUT, i);
    }
    for o in outputs {
        n.string(node::OUTPUT, o);
    }
    n.string(node::NAME, name).string(node::OP_TYPE, op);
    for (k, v) in ints {
        let mut a = Message::default();
        a.string(attribute::NAME, k)
            .int(attribute::I, *v)
            .int(attribute::TYPE, attribute::TYPE_INT);
        n.message(node::ATTRIBUTE, &a);
    }
    n
}

/// The ONNX bytes of a logistic regression over `n_features` raw features (see
/// the module documentation). An error when `n_features` is 0, differs from the
/// model's, or a parameter is not finite (or too large for f32).
pub fn logistic_regression(model: &Model, n_features: usize) -> Result<Vec<u8>, String> {
    use field::{graph, model as m, opset};
    if n_features == 0 {
        return Err("a model needs at least one feature".into());
    }
    if model.weights.len() != n_features {
        return Err(format!(
            "the model has {} weights, not {n_features}",
            model.weights.len()
        ));
    }
    let f32_finite = |v: f64| {
        let x = v as f32;
        match x.is_finite() {
            true => Ok(x),
            false => Err(format!("parameter {v} does not fit a finite float32")),
        }
    };
    let mut w = Vec::with_capacity(2 * n_features);
    for &wj in &model.weights {
        let half = f32_finite(wj / 2.0)?;
        w.extend_from_slice(&[-half, half]);
    }
    let half_b = f32_finite(model.bias / 2.0)?;
    let f = n_features as i64;

    let mut g = Message::default();
    g.message(
        graph::NODE,
        &node("MatMul", "matmul", &[INPUT, "W"], &["xw"], &[]),
    )
    .message(
        graph::NODE,
        &node("Add", "add", &["xw", "B"], &["logits"], &[]),
    )
    .message(
        graph::NODE,
        &node("Softmax", "softmax", &["logits"], &[OUTPUT], &[("axis", 1)]),
    )
    .string(graph::NAME, "quiver-logistic-regression")
    .message(graph::INITIALIZER, &float_tensor("W", &[f, 2], &w))
    .message(
        graph::INITIALIZER,
        &float_tensor("B", &[2], &[-half_b, half_b]),
    )
    .message(
        graph::INPUT,
        &float_tensor_info(INPUT, &[Dim::Param("N"), Dim::Value(f)]),
    )
    .message(
        graph::OUTPUT,
        &float_tensor_info(OUTPUT, &[Dim::Param("N"), Dim::Value(2)]),
    );

    let mut op = Message::default();
    op.string(opset::DOMAIN, "").int(opset::VERSION, OPSET);
    let mut out = Message::default();
    out.int(m::IR_VERSION, IR_VERSION)
        .string(m::PRODUCER_NAME, PRODUCER)
        .string(m::PRODUCER_VERSION, env!("CARGO_PKG_VERSION"))
        .message(m::GRAPH, &g)
        .message(m::OPSET_IMPORT, &op);
    Ok(out.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoded field: its number and a varint or length-delimited value.
    #[derive(Debug, PartialEq)]
    enum Value<'a> {
        Int(u64),
        Bytes(&'a [u8]),
    }

    fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *buf.get(*pos)?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    /// Every top-level field of a message (only wire types 0 and 2 are written).
    fn fields(buf: &[u8]) -> Vec<(u32, Value<'_>)> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < buf.len() {
            let key = varint(buf, &mut pos).expect("key");
            let (field, wire) = ((key >> 3) as u32, key & 7);
            match wire {
                0 => out.push((field, Value::Int(varint(buf, &mut pos).expect("varint")))),
                2 => {
                    let len = varint(buf, &mut pos).expect("len") as usize;
                    out.push((field, Value::Bytes(&buf[pos..pos + len])));
                    pos += len;
                }
                w => panic!("wire type {w}"),
            }
        }
        out
    }

    fn get<'a>(fs: &[(u32, Value<'a>)], field: u32) -> Vec<&'a [u8]> {
        fs.iter()
            .filter_map(|(f, v)| match (f, v) {
                (f, Value::Bytes(b)) if *f == field => Some(*b),
                _ => None,
            })
            .collect()
    }

    fn int(fs: &[(u32, Value<'_>)], field: u32) -> Vec<u64> {
        fs.iter()
            .filter_map(|(f, v)| match (f, v) {
                (f, Value::Int(i)) if *f == field => Some(*i),
                _ => None,
            })
            .collect()
    }

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).expect("utf-8")
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut pos = 0;
            assert_eq!(varint(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());
        }
        let mut buf = Vec::new();
        put_varint(&mut buf, 300);
        assert_eq!(buf, [0xac, 0x02]); // the protobuf documentation's example
        let mut m = Message::default();
        m.int(1, -1);
        assert_eq!(m.0.len(), 11); // key + 10 bytes of two's complement
        let mut m = Message::default();
        m.int(20, 2).string(2, "hi");
        assert_eq!(m.0, [0xa0, 0x01, 0x02, 0x12, 0x02, b'h', b'i']);
    }

    fn model() -> Model {
        Model {
            weights: vec![1.5, -0.25, 2.0, -1.0],
            bias: -0.75,
        }
    }

    #[test]
    fn deterministic_bytes() {
        let a = logistic_regression(&model(), 4).unwrap();
        let b = logistic_regression(&model(), 4).unwrap();
        assert_eq!(a, b);
        let mut other = model();
        other.bias = 0.5;
        assert_ne!(a, logistic_regression(&other, 4).unwrap());
        assert!(logistic_regression(&model(), 3).is_err());
        assert!(logistic_regression(
            &Model {
                weights: vec![],
                bias: 0.0
            },
            0
        )
        .is_err());
        let inf = Model {
            weights: vec![1e300],
            bias: 0.0,
        };
        assert!(logistic_regression(&inf, 1).is_err());
    }

    #[test]
    fn decodes_to_the_intended_graph() {
        let bytes = logistic_regression(&model(), 4).unwrap();
        let top = fields(&bytes);
        assert_eq!(int(&top, 1), [8]);
        assert_eq!(text(get(&top, 2)[0]), "quiver-ml");
        let opset = fields(get(&top, 8)[0]);
        assert_eq!(get(&opset, 1), [b"" as &[u8]]);
        assert_eq!(int(&opset, 2), [13]);

        let graph = fields(get(&top, 7)[0]);
        let nodes: Vec<_> = get(&graph, 1).into_iter().map(fields).collect();
        let ops: Vec<&str> = nodes.iter().map(|n| text(get(n, 4)[0])).collect();
        assert_eq!(ops, ["MatMul", "Add", "Softmax"]);
        let softmax = &nodes[2];
        assert_eq!(text(get(softmax, 2)[0]), OUTPUT);
        let attr = fields(get(softmax, 5)[0]);
        assert_eq!(text(get(&attr, 1)[0]), "axis");
        assert_eq!((int(&attr, 3), int(&attr, 20)), (vec![1], vec![2]));

        let inits: Vec<_> = get(&graph, 5).into_iter().map(fields).collect();
        assert_eq!(text(get(&inits[0], 8)[0]), "W");
        assert_eq!(int(&inits[0], 1), [4, 2]);
        assert_eq!(int(&inits[0], 2), [1]);
        let w: Vec<f32> = get(&inits[0], 9)[0]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(w, [-0.75, 0.75, 0.125, -0.125, -1.0, 1.0, 0.5, -0.5]);
        let b: Vec<f32> = get(&inits[1], 9)[0]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(b, [0.375, -0.375]);

        // Input X [N, 4], output probabilities [N, 2].
        for (field, name, width) in [(11, INPUT, 4), (12, OUTPUT, 2)] {
            let info = fields(get(&graph, field)[0]);
            assert_eq!(text(get(&info, 1)[0]), name);
            let tensor = fields(get(&fields(get(&info, 2)[0]), 1)[0]);
            assert_eq!(int(&tensor, 1), [1]);
            let dims: Vec<_> = get(&fields(get(&tensor, 2)[0]), 1)
                .into_iter()
                .map(fields)
                .collect();
            assert_eq!(text(get(&dims[0], 2)[0]), "N");
            assert_eq!(int(&dims[1], 1), [width]);
        }
    }
}
