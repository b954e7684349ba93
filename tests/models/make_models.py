"""Small ONNX models of different ranks and input types, seeded, with what
onnxruntime answers for seeded inputs: what `tests/tests/model_serve.rs` serves
with no code (functions/model-serve) and compares against.

  image   f32 NCHW [N,3,8,8] -> Conv+Relu+GlobalAveragePool+Gemm -> logits [N,5]
  tokens  i64 input_ids [N,6] + i64 attention_mask [N,6] -> masked mean of an
          embedding -> embedding [N,8]
  pixels  u8 [N,4,4] -> Cast, scale, mean -> brightness [N]
  multi   f32 x [N,3] -> sum [N,1], doubled [N,3], argmax i64 [N]

Usage: make_models.py OUT_DIR -> OUT_DIR/<name>.onnx and OUT_DIR/reference.json
({name: {"inputs": {name: {"datatype", "shape", "data"}}, "outputs": {...}}}), and
OUT_DIR/pipeline.json: what functions/vision-pipeline (image-prep → the image model →
top-class) must answer for uint8 images [6, 8, 8, 3], computed here with numpy and
onnxruntime ({"image": {...}, "class": [...], "probability": [...]}).
"""

import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
rng = np.random.default_rng(20261204)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def model(name, nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def image():
    w = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (4,)).astype(np.float32)
    fc = rng.normal(0, 0.5, (4, 5)).astype(np.float32)
    fb = rng.normal(0, 0.1, (5,)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["pixels", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc", "fb"], ["logits"]),
    ]
    m = model("image", nodes, [vi("pixels", TensorProto.FLOAT, ["N", 3, 8, 8])],
              [vi("logits", TensorProto.FLOAT, ["N", 5])],
              [init("w", w), init("b", b), init("fc", fc), init("fb", fb)])
    x = rng.normal(0, 1, (2, 3, 8, 8)).astype(np.float32)
    return m, {"pixels": x}


def tokens():
    emb = rng.normal(0, 1, (50, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"], axis=0),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mf", "axis2"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["m3", "axis1"], ["count"], keepdims=0),
        helper.make_node("Div", ["total", "count"], ["embedding"]),
    ]
    m = model("tokens", nodes,
              [vi("input_ids", TensorProto.INT64, ["N", 6]),
               vi("attention_mask", TensorProto.INT64, ["N", 6])],
              [vi("embedding", TensorProto.FLOAT, ["N", 8])],
              [init("emb", emb), init("axis1", np.array([1], np.int64)),
               init("axis2", np.array([2], np.int64))])
    ids = rng.integers(0, 50, (2, 6)).astype(np.int64)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], np.int64)
    return m, {"input_ids": ids, "attention_mask": mask}


def pixels():
    nodes = [
        helper.make_node("Cast", ["image_u8"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "scale"], ["s"]),
        helper.make_node("ReduceMean", ["s"], ["brightness"], axes=[1, 2], keepdims=0),
    ]
    m = model("pixels", nodes, [vi("image_u8", TensorProto.UINT8, ["N", 4, 4])],
              [vi("brightness", TensorProto.FLOAT, ["N"])],
              [init("scale", np.array(1 / 255, np.float32))])
    x = rng.integers(0, 256, (2, 4, 4)).astype(np.uint8)
    return m, {"image_u8": x}


def multi():
    nodes = [
        helper.make_node("ReduceSum", ["x", "axis1"], ["sum"], keepdims=1),
        helper.make_node("Mul", ["x", "two"], ["doubled"]),
        helper.make_node("ArgMax", ["x"], ["argmax"], axis=1, keepdims=0),
    ]
    m = model("multi", nodes, [vi("x", TensorProto.FLOAT, ["N", 3])],
              [vi("sum", TensorProto.FLOAT, ["N", 1]),
               vi("doubled", TensorProto.FLOAT, ["N", 3]),
               vi("argmax", TensorProto.INT64, ["N"])],
              [init("axis1", np.array([1], np.int64)), init("two", np.array(2, np.float32))])
    x = rng.normal(0, 1, (2, 3)).astype(np.float32)
    return m, {"x": x}


DATATYPE = {"float32": "FP32", "int64": "INT64", "uint8": "UINT8", "float64": "FP64"}


def tensor(a):
    return {"datatype": DATATYPE[a.dtype.name], "shape": list(a.shape),
            "data": a.flatten().tolist()}


MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def vision_pipeline(image_model):
    # Noise over six different tints and brightnesses, so that the classes differ.
    tint = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1]])
    noise = rng.integers(0, 64, (6, 8, 8, 3))
    images = np.clip(noise + 190 * tint[:, None, None, :], 0, 255).astype(np.uint8)
    x = ((images.astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    session = ort.InferenceSession(str(image_model), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"pixels": np.ascontiguousarray(x)})
    e = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    probability = (e / e.sum(axis=1, keepdims=True)).max(axis=1)
    return {"image": tensor(images), "class": logits.argmax(axis=1).tolist(),
            "probability": probability.tolist()}


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    reference = {}
    for make in (image, tokens, pixels, multi):
        m, inputs = make()
        path = out / f"{m.graph.name}.onnx"
        onnx.save(m, path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        got = session.run(names, inputs)
        reference[m.graph.name] = {
            "inputs": {k: tensor(v) for k, v in inputs.items()},
            "outputs": {n: tensor(v) for n, v in zip(names, got)},
        }
    (out / "reference.json").write_text(json.dumps(reference, indent=1))
    (out / "pipeline.json").write_text(json.dumps(vision_pipeline(out / "image.onnx")))
    print(json.dumps({"models": sorted(reference), "onnxruntime": ort.__version__,
                      "onnx": onnx.__version__}))


if __name__ == "__main__":
    main()
