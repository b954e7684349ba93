"""Check quiver-ml's ONNX export and metrics against the reference implementations.

It trains nothing: `examples/export.rs` trains the Rust logistic regression and
writes `DIR/model.onnx` and `DIR/check.json` (weights, training data, probe rows
with the Rust probabilities, score sets with the Rust metrics). This script

1. runs `onnx.checker.check_model` (full check, with shape inference) and checks
   the graph's interface: input `X` float [N, 4], output `probabilities` float
   [N, 2], IR version 8, opset 13, standard operators only;
2. runs the model in ONNX Runtime on the probe rows and the training rows and
   compares P(true) with sigmoid(w . x + b) computed here (float64) from the
   exported weights, and with the Rust probabilities;
3. checks that the Rust weights are the optimum they claim to be: the gradient
   of the objective (mean log loss + l2/2 |w_std|^2 on standardized features,
   computed here with numpy) vanishes at them;
4. with scikit-learn installed, compares the Rust `auc`, `log_loss` and
   `accuracy` with `roc_auc_score`, `log_loss` and `accuracy_score` on the same
   numbers (including tied and 0/1 scores).

Run (from `sdk/ml`):

    python3 -m venv /tmp/pyml && /tmp/pyml/bin/pip install onnx onnxruntime scikit-learn numpy
    cargo run --example export -- /tmp/quiver-ml-check
    /tmp/pyml/bin/python tests/onnx_check.py /tmp/quiver-ml-check

(or set QUIVER_ML_ONNX_OUT=DIR for both). Exits non-zero on any mismatch.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main() -> int:
    out = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("QUIVER_ML_ONNX_OUT")
    if not out:
        print(__doc__)
        return 2
    path = os.path.join(out, "model.onnx")
    with open(os.path.join(out, "check.json")) as f:
        ref = json.load(f)

    # 1. The ONNX checker and the graph's interface.
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == ref["ir_version"] == 8, model.ir_version
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets == {"": ref["opset"]} and ref["opset"] == 13, opsets
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add", "Softmax"]
    (inp,), (outp,) = model.graph.input, model.graph.output
    assert inp.name == ref["input"] == "X" and outp.name == ref["output"] == "probabilities"

    def shape(vi):
        t = vi.type.tensor_type
        assert t.elem_type == onnx.TensorProto.FLOAT
        return [d.dim_param or d.dim_value for d in t.shape.dim]

    assert shape(inp) == ["N", 4] and shape(outp) == ["N", 2], (shape(inp), shape(outp))
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    assert shape(inferred.graph.output[0]) == ["N", 2]
    print(f"checker: ok ({os.path.getsize(path)} bytes, IR {model.ir_version}, opset {opsets['']})")

    # 2. ONNX Runtime against sigmoid(w . x + b).
    w = np.array(ref["weights"], dtype=np.float64)
    b = float(ref["bias"])
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    worst = {}
    for name, xs, rust_p in [
        ("probe", ref["probe_x"], ref["probe_p"]),
        ("train", ref["train_x"], ref["metrics"][0]["scores"]),
    ]:
        x = np.array(xs, dtype=np.float64)
        (probs,) = sess.run(["probabilities"], {"X": x.astype(np.float32)})
        assert probs.shape == (len(x), 2) and probs.dtype == np.float32
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
        expect = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        d_sigmoid = float(np.max(np.abs(probs[:, 1] - expect)))
        d_rust = float(np.max(np.abs(np.array(rust_p) - expect)))
        # float32 weights and inputs: logits off by ~1e-6 relative.
        assert d_sigmoid < 1e-5, (name, d_sigmoid)
        assert d_rust < 1e-12, (name, d_rust)
        worst[name] = (d_sigmoid, d_rust)
        print(
            f"onnxruntime {ort.__version__} on {len(x)} {name} rows: "
            f"max |p_onnx - sigmoid| = {d_sigmoid:.2e}, max |p_rust - sigmoid| = {d_rust:.2e}"
        )

    # 3. The Rust weights are the optimum of the objective they minimize.
    x = np.array(ref["train_x"], dtype=np.float64)
    y = np.array(ref["train_y"], dtype=np.float64)
    l2 = float(ref["params"]["l2"])
    mean, std = x.mean(axis=0), x.std(axis=0)
    z = (x - mean) / std
    w_std = w * std
    b_std = b + float(w @ mean)
    r = 1.0 / (1.0 + np.exp(-(z @ w_std + b_std))) - y
    grad = np.concatenate([z.T @ r / len(y) + l2 * w_std, [r.mean()]])
    g = float(np.max(np.abs(grad)))
    assert g < 1e-7, grad
    print(f"optimality: max |gradient| at the Rust weights = {g:.2e} (l2 {l2}, {len(y)} rows)")

    # 4. Metrics against scikit-learn.
    try:
        from sklearn import __version__ as skl_version
        from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
    except ImportError:
        print("scikit-learn not installed: metrics not compared")
        return 0
    for case in ref["metrics"]:
        s = np.array(case["scores"], dtype=np.float64)
        lab = np.array(case["labels"], dtype=bool)
        sk = {
            "auc": roc_auc_score(lab, s),
            "log_loss": log_loss(lab, s, labels=[False, True]),
            "accuracy": accuracy_score(lab, s >= 0.5),
        }
        diffs = {k: abs(case[k] - v) for k, v in sk.items()}
        assert all(d < 1e-12 for d in diffs.values()), (case["name"], case, sk)
        print(
            f"scikit-learn {skl_version}, {case['name']} ({len(s)} scores, {len(np.unique(s))} distinct): "
            + ", ".join(f"{k} rust {case[k]:.12g} sklearn {sk[k]:.12g}" for k in sk)
        )
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
