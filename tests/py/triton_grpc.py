"""Drive Quiver's Open Inference Protocol gRPC service (`--grpc-listen`) with
NVIDIA's client (`tritonclient[grpc]`, pinned in scripts/requirements-test.txt).

usage: triton_grpc.py HOST:PORT MODEL TOKEN REFERENCE_JSON ADMIN_TOKEN
Prints one JSON object of what it measured; exits non-zero on any failed check.
"""
import json
import sys

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

url, model, token, reference, admin = sys.argv[1:6]
AUTH = {"authorization": f"Bearer {token}"}
ref = json.load(open(reference))
rows = np.array(ref["rows"], dtype=np.float64)
want = np.array([p[1] for p in ref["probabilities"]], dtype=np.float64)
n = len(rows)

client = grpcclient.InferenceServerClient(url)
assert client.is_server_live(headers=AUTH)
assert client.is_server_ready(headers=AUTH)
assert client.is_model_ready(model, headers=AUTH)
meta = client.get_model_metadata(model, headers=AUTH, as_json=True)
assert meta["name"] == model, meta
assert [i["name"] for i in meta["inputs"]] == [
    "log_amount", "hour_of_day", "merchant_z", "merchant_known"], meta
server = client.get_server_metadata(headers=AUTH, as_json=True)
assert server["name"] == "quiver", server
assert "binary_tensor_data" in server["extensions"], server


def inputs():
    cols = [
        ("log_amount", rows[:, 0].astype(np.float32), "FP32"),
        ("hour_of_day", rows[:, 1].astype(np.int64).reshape(n, 1), "INT64"),
        ("merchant_z", rows[:, 2], "FP64"),
        ("merchant_known", rows[:, 3] == 1.0, "BOOL"),
    ]
    out = []
    for name, arr, dt in cols:
        t = grpcclient.InferInput(name, list(arr.shape), dt)
        t.set_data_from_numpy(arr)  # raw_input_contents, as the client sends them
        out.append(t)
    return out


results = {"rows": n}
outs = [grpcclient.InferRequestedOutput("score"), grpcclient.InferRequestedOutput("label")]
r = client.infer(model, inputs(), outputs=outs, headers=AUTH, request_id="req-9")
score, label = r.as_numpy("score"), r.as_numpy("label")
assert score.shape == (n,) and score.dtype == np.float64, (score.shape, score.dtype)
assert label.dtype == np.bool_, label.dtype
err = float(np.max(np.abs(score - want)))
assert err < 1e-4, err
assert (label == (score > 0.5)).all()
resp = r.get_response(as_json=True)
assert resp["id"] == "req-9", resp
assert resp["model_name"] == model, resp
results["max_abs_err"] = err

# Typed `contents` rather than raw bytes (tritonclient always sends raw, so the
# request is made with the protocol's own messages).
stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(url))
typed = service_pb2.ModelInferRequest(model_name=model, id="typed")
for name, dt, shape, field, vals in [
    ("log_amount", "FP32", [n], "fp32_contents", rows[:, 0].tolist()),
    ("hour_of_day", "INT64", [n, 1], "int64_contents", rows[:, 1].astype(int).tolist()),
    ("merchant_z", "FP64", [n], "fp64_contents", rows[:, 2].tolist()),
    ("merchant_known", "BOOL", [n], "bool_contents", (rows[:, 3] == 1.0).tolist()),
]:
    t = typed.inputs.add()
    t.name, t.datatype = name, dt
    t.shape.extend(shape)
    getattr(t.contents, field).extend(vals)
resp = stub.ModelInfer(typed, metadata=[("authorization", f"Bearer {token}")])
names = [o.name for o in resp.outputs]
typed_score = np.frombuffer(resp.raw_output_contents[names.index("score")], dtype="<f8")
results["typed_max_abs_err"] = float(np.max(np.abs(typed_score - want)))
assert results["typed_max_abs_err"] < 1e-4, results

# The platform admin's token names the tenant in metadata (REST: /v2/tenants/{t}).
as_admin = [("authorization", f"Bearer {admin}")]
r = client.infer(model, inputs(), headers=dict(as_admin + [("quiver-tenant", "default")]))
assert r.as_numpy("score").shape == (n,)

# No outputs named: all of them.
r = client.infer(model, inputs(), headers=AUTH)
assert sorted(o["name"] for o in r.get_response(as_json=True)["outputs"]) == ["label", "score"]


def refused(call):
    try:
        call()
    except InferenceServerException as e:
        return {"status": e.status(), "message": e.message()}
    raise AssertionError("not refused")


bad_shape = grpcclient.InferInput("log_amount", [1, n], "FP32")
bad_shape.set_data_from_numpy(rows[:, 0].astype(np.float32).reshape(1, n))
results["errors"] = {
    "unknown_model": refused(lambda: client.infer("no-such-model", inputs(), headers=AUTH)),
    "bad_shape": refused(lambda: client.infer(model, [bad_shape] + inputs()[1:], headers=AUTH)),
    "unknown_output": refused(lambda: client.infer(
        model, inputs(), outputs=[grpcclient.InferRequestedOutput("nope")], headers=AUTH)),
    "no_token": refused(lambda: client.infer(model, inputs())),
    "path_escape": refused(lambda: client.infer("../../admin/v1/gc", inputs(), headers=AUTH)),
    "admin_without_tenant": refused(lambda: client.infer(model, inputs(), headers=dict(as_admin))),
    "other_tenant": refused(lambda: client.infer(
        model, inputs(), headers=dict(AUTH, **{"quiver-tenant": "someone-else"}))),
}
print(json.dumps(results))
