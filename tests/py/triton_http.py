"""Drive Quiver's Open Inference Protocol routes with NVIDIA's own client
(`tritonclient[http]`, pinned in scripts/requirements-test.txt), as a user of
Triton or KServe would: JSON and the binary tensor data extension, both ways.

usage: triton_http.py HOST:PORT MODEL TOKEN REFERENCE_JSON [ADMIN_TOKEN]
Prints one JSON object of what it measured; exits non-zero on any failed check.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, model, token, reference = sys.argv[1:5]  # the admin token is not used here
AUTH = {"Authorization": f"Bearer {token}"}


def h():
    """A fresh dict per call: tritonclient adds Inference-Header-Content-Length
    to the dict it is given, which would follow into the next request."""
    return dict(AUTH)

ref = json.load(open(reference))
rows = np.array(ref["rows"], dtype=np.float64)
want = np.array([p[1] for p in ref["probabilities"]], dtype=np.float64)
n = len(rows)

client = httpclient.InferenceServerClient(url)
assert client.is_server_live(headers=h())
assert client.is_server_ready(headers=h())
assert client.is_model_ready(model, headers=h())
meta = client.get_model_metadata(model, headers=h())
assert meta["name"] == model, meta
assert [i["name"] for i in meta["inputs"]] == [
    "log_amount", "hour_of_day", "merchant_z", "merchant_known"], meta
server = client.get_server_metadata(headers=h())
assert "binary_tensor_data" in server["extensions"], server


def inputs(binary):
    cols = [
        ("log_amount", rows[:, 0].astype(np.float32), "FP32"),
        ("hour_of_day", rows[:, 1].astype(np.int64).reshape(n, 1), "INT64"),
        ("merchant_z", rows[:, 2], "FP64"),
        ("merchant_known", rows[:, 3] == 1.0, "BOOL"),
    ]
    out = []
    for name, arr, dt in cols:
        t = httpclient.InferInput(name, list(arr.shape), dt)
        t.set_data_from_numpy(arr, binary_data=binary)
        out.append(t)
    return out


results = {"rows": n, "cases": []}
for binary_in in (True, False):
    for binary_out in (True, False):
        outs = [httpclient.InferRequestedOutput("score", binary_data=binary_out),
                httpclient.InferRequestedOutput("label", binary_data=binary_out)]
        r = client.infer(model, inputs(binary_in), outputs=outs, headers=h(),
                         request_id="req-1")
        score = r.as_numpy("score")
        label = r.as_numpy("label")
        assert score.shape == (n,), score.shape
        assert score.dtype == np.float64, score.dtype
        assert label.dtype == np.bool_, label.dtype
        # log_amount went as FP32: scores agree with scikit-learn's to float32's
        # precision, not float64's.
        err = float(np.max(np.abs(score - want)))
        assert err < 1e-4, err
        assert (label == (score > 0.5)).all()
        resp = r.get_response()
        assert resp["id"] == "req-1", resp
        for o in resp["outputs"]:
            assert ("binary_data_size" in o.get("parameters", {})) == binary_out, o
        results["cases"].append({"binary_inputs": binary_in, "binary_outputs": binary_out,
                                 "max_abs_err": err})

# No outputs named: all of them, binary by default (tritonclient asks for that).
r = client.infer(model, inputs(True), headers=h())
assert sorted(o["name"] for o in r.get_response()["outputs"]) == ["label", "score"]
for o in r.get_response()["outputs"]:
    assert "binary_data_size" in o.get("parameters", {}), o
assert r.as_numpy("score").shape == (n,)


def refused(call):
    try:
        call()
    except InferenceServerException as e:
        return {"status": e.status(), "message": e.message()}
    raise AssertionError("not refused")


bad_shape = httpclient.InferInput("log_amount", [1, n], "FP32")
bad_shape.set_data_from_numpy(rows[:, 0].astype(np.float32).reshape(1, n))
results["errors"] = {
    "unknown_model": refused(lambda: client.infer("no-such-model", inputs(True), headers=h())),
    "bad_shape": refused(lambda: client.infer(model, [bad_shape] + inputs(True)[1:], headers=h())),
    "unknown_output": refused(lambda: client.infer(
        model, inputs(True), outputs=[httpclient.InferRequestedOutput("nope")], headers=h())),
    "compressed": refused(lambda: client.infer(
        model, inputs(True), headers=h(), request_compression_algorithm="gzip")),
    "no_token": refused(lambda: client.infer(model, inputs(True))),
}
print(json.dumps(results))
