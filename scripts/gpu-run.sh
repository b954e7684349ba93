#!/usr/bin/env bash
# The GPU checks, on a machine with an NVIDIA GPU, from the bundle that
# scripts/gpu-bundle.sh made. Each call keeps the parts it finds under .gpu/ in
# /tmp/quiver-gpu; once all are there it unpacks them and checks, with ONNX Runtime's
# CUDA execution provider:
#  1. the fraud model deployed with `[inference] target = "gpu"` scores like
#     scikit-learn (functions/fraud-score/model/reference.json, 1e-4);
#  2. dynamic batching is on by default on the GPU (concurrent calls, fewer runs);
#  3. the nn bench with a GPU row (QUIVER_BENCH_GPU=1);
#  4. Open Inference Protocol v2 under load with wrk: fraud-score and the medium
#     model on the GPU, batching off (max_batch = 1) and on (the GPU default).
# Writes gpu-report.txt to $OUT (the device tool's folder) or /tmp/quiver-gpu.
#   usage: scripts/gpu-run.sh [seconds per wrk run]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs=${1:-10}
home=/tmp/quiver-gpu
report="${OUT:-$home}/gpu-report.txt"
mkdir -p "$home/parts"
for index in .gpu/p*/INDEX; do
  [ -f "$index" ] || continue
  read -r i n sum < "$index"
  cp "$(dirname "$index")/part" "$home/parts/$(printf '%02d' "$i")"
  echo "$n $sum" > "$home/WANT"
done
[ -f "$home/WANT" ] || { echo "no parts under .gpu/ (carry .gpu/pK; see scripts/gpu-bundle.sh)"; exit 1; }
read -r n sum < "$home/WANT"
have=$(find "$home/parts" -type f | wc -l)
if [ "$have" -lt "$n" ]; then
  echo "have $have of $n parts; carry the next one"
  exit 0
fi
cat "$home"/parts/* > "$home/bundle.tar.xz"
echo "$sum  $home/bundle.tar.xz" | sha256sum -c --quiet
rm -rf "$home/x" && mkdir -p "$home/x"
tar -C "$home/x" -xJf "$home/bundle.tar.xz"
b="$home/x/quiver-gpu"

# Each check reports and the next one runs, whatever the last one did.
checks() {
set +e
echo "== GPU"
nvidia-smi -L || echo "nvidia-smi: none"
# NVIDIA's CUDA 13 and cuDNN wheels in the machine's Python (nvidia-cuda-runtime,
# nvidia-cublas, nvidia-cudnn-cu13...).
nvidia_libs=$(python3 - <<'PY'
import os
try:
    import nvidia
except ImportError:
    raise SystemExit
dirs = set()
for root in nvidia.__path__:
    for dirpath, dirnames, filenames in os.walk(root):
        if any(f.endswith(".so") or ".so." in f for f in filenames):
            dirs.add(dirpath)
print(":".join(sorted(dirs)))
PY
)
# The driver's libcuda where an image mounts it outside the loader's default paths.
driver=""
[ -d /usr/local/nvidia/lib64 ] && driver=":/usr/local/nvidia/lib64"
export LD_LIBRARY_PATH="$b/ort:$b/lib:${nvidia_libs}${driver}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ORT_DYLIB_PATH="$b/ort/$(cat "$b/ort/LIBRARY")"
echo "ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
echo "CUDA provider's libraries not found: $(ldd "$b/ort/libonnxruntime_providers_cuda.so" | grep -c 'not found' || true)"
ldd "$b/ort/libonnxruntime_providers_cuda.so" | grep 'not found' || true

Q="$b/bin/quiver"
export QUIVER_SERVER=http://127.0.0.1:18099
rm -rf "$home/data"
"$Q" serve --listen 127.0.0.1:18099 --data-dir "$home/data" --onnx-backend ort >"$home/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null "$QUIVER_SERVER/v2/health/live" && break; sleep 0.1; done
# The admin token the first start wrote (the CLI and the requests below use it).
export QUIVER_TOKEN; for _ in $(seq 100); do [ -s "$home/data/admin-token" ] && break; sleep 0.1; done
QUIVER_TOKEN=$(cat "$home/data/admin-token"); AUTH="Authorization: Bearer $QUIVER_TOKEN"
"$Q" models push functions/fraud-score/model/fraud.onnx --name fraud-model --version 1.0.0 >/dev/null
"$Q" models push tests/fixtures/models/medium.onnx --name medium-model --version 1.0.0 >/dev/null
wasm="$b/wasm32-wasip2/release/fraud_score.wasm"
deploy() { "$Q" deploy "$wasm" --kind inference --version 1.0.0 --name "$@"; }

echo "== 1. fraud-score on the GPU against scikit-learn"
deploy fraud-gpu --set 'models.fraud=fraud-model@^1' --set inference.target=gpu
python3 - "$QUIVER_SERVER" <<'PY'
import json, os, sys, urllib.request
server = sys.argv[1]
ref = json.load(open("functions/fraud-score/model/reference.json"))
rows = ref["rows"]
cols = list(zip(*rows))
body = {"inputs": [
    {"name": "log_amount", "shape": [len(rows)], "datatype": "FP64", "data": list(cols[0])},
    {"name": "hour_of_day", "shape": [len(rows)], "datatype": "INT64", "data": [int(h) for h in cols[1]]},
    {"name": "merchant_z", "shape": [len(rows)], "datatype": "FP64", "data": list(cols[2])},
    {"name": "merchant_known", "shape": [len(rows)], "datatype": "BOOL", "data": [k == 1.0 for k in cols[3]]},
]}
req = urllib.request.Request(f"{server}/v2/tenants/default/models/fraud-gpu/infer", json.dumps(body).encode(),
                             {"content-type": "application/json", "authorization": "Bearer " + os.environ["QUIVER_TOKEN"]})
try:
    out = json.load(urllib.request.urlopen(req))
except OSError as e:
    raise SystemExit(f"FAIL: {e}")
score = next(o for o in out["outputs"] if o["name"] == "score")["data"]
worst = max(abs(s - p[1]) for s, p in zip(score, ref["probabilities"]))
print(f"{len(score)} rows, largest difference from scikit-learn {worst:.2e}:",
      "PASS" if worst <= 1e-4 else "FAIL")
PY

echo "== 2. batching on by default on the GPU"
python3 - "$QUIVER_SERVER" <<'PY'
import json, os, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
server = sys.argv[1]
body = json.dumps({"inputs": [
    {"name": "log_amount", "shape": [1], "datatype": "FP64", "data": [4.2]},
    {"name": "hour_of_day", "shape": [1], "datatype": "INT64", "data": [3]},
    {"name": "merchant_z", "shape": [1], "datatype": "FP64", "data": [1.7]},
    {"name": "merchant_known", "shape": [1], "datatype": "BOOL", "data": [False]}]}).encode()
def call(_):
    req = urllib.request.Request(f"{server}/v2/tenants/default/models/fraud-gpu/infer", body, {"content-type": "application/json", "authorization": "Bearer " + os.environ["QUIVER_TOKEN"]})
    return json.load(urllib.request.urlopen(req))["outputs"][0]["data"][0]
try:
    with ThreadPoolExecutor(32) as pool:
        scores = list(pool.map(call, range(2000)))
except OSError as e:
    raise SystemExit(f"FAIL: {e}")
print("same score for the same row every time:", "PASS" if len(set(scores)) == 1 else "FAIL")
PY
curl -s -H "$AUTH" "$QUIVER_SERVER/metrics" | grep -E '^quiver_inference_(computes|backend_runs)\{function="fraud-gpu"' || true

echo "== 3. nn bench (CPU and GPU rows)"
CARGO_MANIFEST_DIR="$PWD/host" CARGO_TARGET_DIR="$b" QUIVER_BENCH_GPU=1 "$b/bin/nn-bench" || echo "nn bench failed"

echo "== 4. OIP v2 under load (wrk, 32 connections, ${secs}s each)"
deploy medium-gpu-plain --set 'models.fraud=medium-model@^1' --set inference.target=gpu --set inference.max_batch=1
deploy medium-gpu-batched --set 'models.fraud=medium-model@^1' --set inference.target=gpu
deploy medium-cpu --set 'models.fraud=medium-model@^1'
echo "function req/s p50 p99"
source scripts/oip-load.sh
for name in fraud-gpu medium-cpu medium-gpu-plain medium-gpu-batched; do
  WRK="$b/bin/wrk" WRK_THREADS=4 oip_row "$QUIVER_SERVER" "$name" 32 "$secs"
done
curl -s -H "$AUTH" "$QUIVER_SERVER/metrics" | grep -E '^quiver_inference_(computes|backend_runs)\{function="medium' || true
echo "== server log (last lines)"
tail -5 "$home/serve.log"
kill $server 2>/dev/null
}
checks 2>&1 | tee "$report"
