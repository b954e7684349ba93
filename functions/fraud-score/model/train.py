"""Train the fraud model on a synthetic, seeded dataset and export it to ONNX.

Reproducible: `python3 train.py` (scikit-learn, skl2onnx, onnx from PyPI) rewrites
`fraud.onnx` and `reference.json` (inputs with the probabilities scikit-learn gives,
which the host's tests compare against).

Features, in order (what `txn-features` computes): log_amount, hour_of_day,
merchant_z, merchant_known. Output: `probabilities`, float32 [N, 2] (legit, fraud).
skl2onnx also emits a `label` output through `ai.onnx.ml.ArrayFeatureExtractor`;
it is cut off so the graph uses standard ONNX operators only (any backend runs it).
"""
import json

import numpy as np
import onnx
from onnx.utils import Extractor
from skl2onnx import to_onnx
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier

SEED = 20261122
rng = np.random.default_rng(SEED)
n = 20_000
log_amount = rng.normal(3.5, 1.2, n)
hour = rng.integers(0, 24, n).astype(float)
merchant_z = rng.normal(0.0, 1.0, n)
known = (rng.random(n) < 0.85).astype(float)
night = ((hour < 5) | (hour > 22)).astype(float)
logit = -1.8 + 1.4 * (log_amount - 3.5) + 2.0 * merchant_z + 1.6 * night - 1.8 * known
fraud = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
X = np.stack([log_amount, hour, merchant_z, known], axis=1).astype(np.float32)

model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=500, random_state=SEED)
model.fit(X, fraud)
onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}}, target_opset=13)
onx = Extractor(onx).extract_model([i.name for i in onx.graph.input], ["probabilities"])
onx.graph.name = "fraud-model"
onnx.checker.check_model(onx)
assert all(node.domain in ("", "ai.onnx") for node in onx.graph.node), "standard ops only"
with open("fraud.onnx", "wb") as f:
    f.write(onx.SerializeToString())

sample = X[:8]
reference = {
    "input": "X",
    "features": ["log_amount", "hour_of_day", "merchant_z", "merchant_known"],
    "rows": sample.tolist(),
    "probabilities": model.predict_proba(sample).astype(np.float32).tolist(),
    "train_accuracy": float(model.score(X, fraud)),
    "train_auc": float(roc_auc_score(fraud, model.predict_proba(X)[:, 1])),
    "fraud_rate": float(fraud.mean()),
    "seed": SEED,
}
with open("reference.json", "w") as f:
    json.dump(reference, f, indent=1)
print(
    f"fraud.onnx: {len(onx.SerializeToString())} bytes, accuracy {reference['train_accuracy']:.3f}, "
    f"AUC {reference['train_auc']:.3f}, fraud rate {reference['fraud_rate']:.3f}"
)
