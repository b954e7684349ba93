"""The benchmarks' realistic models, seeded (random weights: their speed, not their
answers, is what is measured):

  resnet18  f32 pixels [N,3,224,224] -> logits [N,1000]: ResNet-18's shape (7x7/2
            stem, 3x3/2 max pool, four stages of two basic blocks at 64/128/256/512
            channels with 1x1/2 projections, global average pool, 1000-way FC;
            batch norm folded into the convolutions' biases, as exported models
            usually are). 11.7 M parameters, ~47 MB.
  encoder   i64 input_ids [N,128] + i64 attention_mask [N,128] -> embedding [N,256]:
            a transformer encoder (token + position embeddings, 4 layers of 4-head
            self-attention with the mask, GELU feed-forward 1024, layer norms),
            mean-pooled over the unmasked tokens. ~3.4 M parameters.

Usage: make_bench_models.py OUT_DIR -> OUT_DIR/resnet18.onnx, OUT_DIR/encoder.onnx
and OUT_DIR/inputs.json (a seeded input for each, OIP-shaped) and prints what it
made. Opset 13: every backend Quiver runs takes it.
"""

import json
import math
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
rng = np.random.default_rng(20261205)


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, array, base="c"):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array), n))
        return n

    def op(self, kind, inputs, base=None, **attrs):
        out = self.name(base or kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def model(self, name, inputs, outputs):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def he(shape, fan_in):
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)


def resnet18():
    g = Graph()

    def conv(x, cin, cout, k, stride, relu=True):
        w = g.const(he((cout, cin, k, k), cin * k * k), "w")
        b = g.const(np.zeros(cout, np.float32), "b")
        y = g.op("Conv", [x, w, b], "conv", kernel_shape=[k, k], strides=[stride, stride],
                 pads=[k // 2] * 4)
        return g.op("Relu", [y]) if relu else y

    def block(x, cin, cout, stride):
        y = conv(x, cin, cout, 3, stride)
        y = conv(y, cout, cout, 3, 1, relu=False)
        skip = x if (cin == cout and stride == 1) else conv(x, cin, cout, 1, stride, relu=False)
        return g.op("Relu", [g.op("Add", [y, skip])])

    x = conv("pixels", 3, 64, 7, 2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        x = block(x, cin, cout, stride)
        x = block(x, cout, cout, 1)
        cin = cout
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x], axis=1)
    fc = g.const(he((512, 1000), 512), "fc")
    fb = g.const(np.zeros(1000, np.float32), "fb")
    g.nodes.append(helper.make_node("Gemm", [x, fc, fb], ["logits"]))
    m = g.model("resnet18", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT,
                                                          ["N", 3, 224, 224])],
                [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])])
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    return m, {"pixels": x}


SEQ, HIDDEN, HEADS, LAYERS, FFN, VOCAB = 128, 256, 4, 4, 1024, 1000


def encoder():
    g = Graph()
    d = HIDDEN // HEADS

    def dense(x, cin, cout):
        w = g.const((rng.standard_normal((cin, cout)) / math.sqrt(cin)).astype(np.float32), "w")
        b = g.const(np.zeros(cout, np.float32), "b")
        return g.op("Add", [g.op("MatMul", [x, w]), b])

    def layer_norm(x):
        mean = g.op("ReduceMean", [x], axes=[-1], keepdims=1)
        c = g.op("Sub", [x, mean])
        var = g.op("ReduceMean", [g.op("Mul", [c, c])], axes=[-1], keepdims=1)
        std = g.op("Sqrt", [g.op("Add", [var, g.const(np.float32(1e-5))])])
        y = g.op("Div", [c, std])
        y = g.op("Mul", [y, g.const(np.ones(HIDDEN, np.float32), "gamma")])
        return g.op("Add", [y, g.const(np.zeros(HIDDEN, np.float32), "beta")])

    def heads(x):  # [N,S,H] -> [N,h,S,d]
        r = g.op("Reshape", [x, g.const(np.array([0, 0, HEADS, d], np.int64))])
        return g.op("Transpose", [r], perm=[0, 2, 1, 3])

    tok = g.const((rng.standard_normal((VOCAB, HIDDEN)) * 0.02).astype(np.float32), "tok")
    pos = g.const((rng.standard_normal((SEQ, HIDDEN)) * 0.02).astype(np.float32), "pos")
    x = g.op("Add", [g.op("Gather", [tok, "input_ids"], axis=0), pos])
    maskf = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    # (1 - mask) * -1e4 as [N,1,1,S]: masked keys get no attention.
    bias = g.op("Mul", [g.op("Sub", [g.const(np.float32(1.0)), maskf]),
                        g.const(np.float32(-1e4))])
    bias = g.op("Unsqueeze", [bias, g.const(np.array([1, 2], np.int64))])
    scale = g.const(np.float32(1 / math.sqrt(d)))
    for _ in range(LAYERS):
        q, k, v = (heads(dense(x, HIDDEN, HIDDEN)) for _ in range(3))
        att = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])
        att = g.op("Softmax", [g.op("Add", [g.op("Mul", [att, scale]), bias])], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [att, v])], perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, g.const(np.array([0, 0, HIDDEN], np.int64))])
        x = layer_norm(g.op("Add", [x, dense(ctx, HIDDEN, HIDDEN)]))
        h = dense(x, HIDDEN, FFN)
        # GELU, exact: x * 0.5 * (1 + erf(x / sqrt 2)).
        erf = g.op("Erf", [g.op("Mul", [h, g.const(np.float32(1 / math.sqrt(2)))])])
        h = g.op("Mul", [g.op("Mul", [h, g.const(np.float32(0.5))]),
                         g.op("Add", [erf, g.const(np.float32(1.0))])])
        x = layer_norm(g.op("Add", [x, dense(h, FFN, HIDDEN)]))
    # Mean over the unmasked tokens.
    m3 = g.op("Unsqueeze", [maskf, g.const(np.array([2], np.int64))])
    total = g.op("ReduceSum", [g.op("Mul", [x, m3]), g.const(np.array([1], np.int64))],
                 keepdims=0)
    count = g.op("ReduceSum", [m3, g.const(np.array([1], np.int64))], keepdims=0)
    g.nodes.append(helper.make_node("Div", [total, count], ["embedding"]))
    m = g.model("encoder",
                [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", SEQ]),
                 helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", SEQ])],
                [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", HIDDEN])])
    ids = rng.integers(0, VOCAB, (1, SEQ)).astype(np.int64)
    mask = np.ones((1, SEQ), np.int64)
    mask[0, 100:] = 0
    return m, {"input_ids": ids, "attention_mask": mask}


DATATYPE = {"float32": "FP32", "int64": "INT64"}


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    inputs, made = {}, {}
    for make in (resnet18, encoder):
        m, x = make()
        path = out / f"{m.graph.name}.onnx"
        onnx.save(m, path)
        params = sum(int(np.prod(i.dims)) for i in m.graph.initializer)
        made[m.graph.name] = {"bytes": path.stat().st_size, "parameters": params}
        inputs[m.graph.name] = [
            {"name": k, "datatype": DATATYPE[v.dtype.name], "shape": list(v.shape),
             "data": v.flatten().tolist()} for k, v in x.items()]
    (out / "inputs.json").write_text(json.dumps(inputs))
    print(json.dumps(made))


if __name__ == "__main__":
    main()
