#!/usr/bin/env bash
# Quiver against the servers its users would otherwise pick, same models, same
# backend (ONNX Runtime 1.28.0 on CPU, one intra-op thread a run), same load
# generator and connections, one run: OIP v2 REST infer of
#   fraud          the fraud MLP, X FP32 [1,4], JSON;
#   resnet-json    the ResNet-18-shaped model (tests/models/make_bench_models.py),
#                  pixels FP32 [1,3,224,224] as JSON;
#   resnet-binary  the same with the binary tensor data extension;
# against
#   quiver         `quiver models push --serve` (model-serve in the sandbox), full
#                  call path (token, tenant, quota, admission, metrics);
#   native         host/examples/native_oip.rs: axum + Quiver's wire code + the same
#                  backend, no sandbox, no call path (the limit for this work);
#   kserve-1/-N    KServe's Python ModelServer (PyPI kserve), a custom Model on
#                  onnxruntime, one uvicorn worker and one per core.
# Each answer is checked against the others before anything is timed. wrk runs on
# the same machine as the servers (it takes a share of the same cores).
# Needs wrk (apt).  usage: scripts/bench-peers.sh [seconds] [connections] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; conns=${2:-32}; rounds=${3:-2}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quiver-target}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(bash scripts/fetch-ort.sh | tail -1)}"
peers="$HOME/.cache/quiver-peers"
if ! "$peers/bin/python" -c 'import kserve, onnx' 2>/dev/null; then
  python3 -m venv "$peers"
  "$peers/bin/pip" install -q kserve==0.21.0 onnxruntime==1.28.0 onnx==1.19.1
fi
py="$peers/bin/python"
cargo build --release --locked -p quiver-host --features ort --bin quiver --example native_oip
Q="$CARGO_TARGET_DIR/release/quiver"; N="$CARGO_TARGET_DIR/release/examples/native_oip"
data=$(mktemp -d); pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$data"' EXIT
"$py" tests/models/make_bench_models.py "$data" >/dev/null
fraud=functions/fraud-score/model/fraud.onnx; resnet="$data/resnet18.onnx"
cores=$(nproc)

wait_up() { for _ in $(seq 300); do curl -s -o /dev/null "$1" && return; sleep 0.1; done; echo "$1 did not start"; exit 1; }
"$Q" serve --listen 127.0.0.1:18701 --data-dir "$data/q" --onnx-backend ort \
  --inference-threads "$cores" --max-body 64MiB >/dev/null 2>"$data/quiver.log" &
pids+=($!)
"$N" 127.0.0.1:18702 ort fraud="$fraud" resnet="$resnet" >/dev/null 2>&1 &
pids+=($!)
(cd "$data" && exec "$py" "$OLDPWD/scripts/peers/kserve_onnx.py" 18703 1 fraud="$OLDPWD/$fraud" resnet="$resnet" >/dev/null 2>&1) &
pids+=($!)
(cd "$data" && exec "$py" "$OLDPWD/scripts/peers/kserve_onnx.py" 18704 "$cores" fraud="$OLDPWD/$fraud" resnet="$resnet" >/dev/null 2>&1) &
pids+=($!)
wait_up http://127.0.0.1:18701/healthz
for _ in $(seq 100); do [ -s "$data/q/admin-token" ] && break; sleep 0.1; done
export QUIVER_SERVER=http://127.0.0.1:18701 QUIVER_TOKEN; QUIVER_TOKEN=$(cat "$data/q/admin-token")
"$Q" models push "$fraud" --name fraud --version 1.0.0 --serve >/dev/null
"$Q" models push "$resnet" --name resnet --version 1.0.0 --serve >/dev/null
wait_up http://127.0.0.1:18702/; wait_up http://127.0.0.1:18703/v2/health/ready; wait_up http://127.0.0.1:18704/v2/health/ready

url() { case $1 in
  quiver) echo "http://127.0.0.1:18701/v2/tenants/default/models/$2/infer" ;;
  native) echo "http://127.0.0.1:18702/v2/models/$2/infer" ;;
  kserve-1) echo "http://127.0.0.1:18703/v2/models/$2/infer" ;;
  kserve-n) echo "http://127.0.0.1:18704/v2/models/$2/infer" ;; esac; }
# The bodies, seeded; the binary one's header length in $data/resnet-binary.hlen.
"$py" - "$data" <<'PY'
import json, sys
import numpy as np
d = sys.argv[1]
rng = np.random.default_rng(7)
x = rng.random((1, 4), dtype=np.float32) * 4
open(f"{d}/fraud.body", "w").write(json.dumps({"inputs": [
    {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": x.flatten().tolist()}]}))
img = rng.standard_normal((1, 3, 224, 224), dtype=np.float32)
open(f"{d}/resnet-json.body", "w").write(json.dumps({"inputs": [
    {"name": "pixels", "shape": [1, 3, 224, 224], "datatype": "FP32",
     "data": img.flatten().tolist()}]}))
raw = img.astype("<f4").tobytes()
head = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 3, 224, 224], "datatype": "FP32",
                               "parameters": {"binary_data_size": len(raw)}}]}).encode()
open(f"{d}/resnet-binary.body", "wb").write(head + raw)
open(f"{d}/resnet-binary.hlen", "w").write(str(len(head)))
PY
servers="quiver native kserve-1 kserve-n"
post() { # server case -> the answer in $data/SERVER.CASE.out
  local model=${2%%-*} h=""; [ "$2" = resnet-binary ] && h=$(cat "$data/resnet-binary.hlen")
  local ct=application/json; [ -n "$h" ] && ct=application/octet-stream
  curl -sf -H "Authorization: Bearer $QUIVER_TOKEN" -H "content-type: $ct" \
    ${h:+-H "inference-header-content-length: $h"} --data-binary @"$data/$2.body" \
    "$(url "$1" "$model")" -o "$data/$1.$2.out" || { echo "$1 refused $2"; exit 1; }
}
for c in fraud resnet-json resnet-binary; do for s in $servers; do post "$s" "$c"; done; done
"$py" - "$data" $servers <<'PY'
import json, sys
d, servers = sys.argv[1], sys.argv[2:]
for case in ["fraud", "resnet-json", "resnet-binary"]:
    first = lambda s: json.load(open(f"{d}/{s}.{case}.out"))["outputs"][0]["data"]
    ref = first("native")
    for s in servers:
        got = first(s)
        err = max(abs(a - b) for a, b in zip(got, ref))
        assert len(got) == len(ref) and err < 1e-3, (case, s, err)
    print(f"checked {case}: {len(ref)} outputs, the same from {', '.join(servers)}")
PY
echo "case server request-bytes req/s p50 p99 errors ($conns connections, ${secs}s, wrk -t2 --timeout 10s)"
for round in $(seq "$rounds"); do
  for c in fraud resnet-json resnet-binary; do
    for s in $servers; do
      h=""; [ "$c" = resnet-binary ] && h=$(cat "$data/resnet-binary.hlen")
      out=$(BODY="$data/$c.body" HLEN="$h" wrk -t2 -c"$conns" -d"${secs}s" --timeout 10s --latency \
        -H "Authorization: Bearer $QUIVER_TOKEN" -s scripts/oip-body.lua "$(url "$s" "${c%%-*}")")
      echo "$c $s $(stat -c %s "$data/$c.body") $(echo "$out" | awk '/Requests\/sec/ {print $2}') \
$(echo "$out" | awk '$1=="50%" {print $2}') $(echo "$out" | awk '$1=="99%" {print $2}') \
$(echo "$out" | grep -oE 'Non-2xx.*|Socket errors.*' | tr '\n' ' ' || true)(round $round)"
    done
  done
done
