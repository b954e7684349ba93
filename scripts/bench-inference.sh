#!/usr/bin/env bash
# Inference under load, over HTTP (release build, wrk):
#  1. Open Inference Protocol v2: POST /v2/models/fraud-score/infer, one row per
#     request, 32 connections: latency and throughput of the fraud model.
#  2. Dynamic batching off vs on at 32 connections, on a model where compute
#     matters (tests/fixtures/models/medium.onnx, 4 x 1024^2 MatMuls) through the
#     same fraud-score component: [inference] max_batch = 1 vs 32 (max_wait 2ms).
# Needs wrk (apt).  usage: scripts/bench-inference.sh [seconds] [connections] [inference-threads]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
secs=${1:-10}; conns=${2:-32}; threads=${3:-1}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }
bench_setup
"$Q" serve --listen 127.0.0.1:18098 --data-dir "$data/q" --inference-threads "$threads" >/dev/null 2>&1 &
pids+=($!)
sleep 1
export QUIVER_SERVER=http://127.0.0.1:18098
use_token "$data/q"
"$Q" models push functions/fraud-score/model/fraud.onnx --name fraud-model --version 1.0.0 >/dev/null
"$Q" models push tests/fixtures/models/medium.onnx --name medium-model --version 1.0.0 >/dev/null
"$Q" deploy functions/fraud-score >/dev/null
"$Q" deploy functions/fraud-score --name medium-plain --set models.fraud=medium-model@^1 >/dev/null
"$Q" deploy functions/fraud-score --name medium-batched --set models.fraud=medium-model@^1 \
  --set inference.max_batch=32 --set inference.max_wait=2ms >/dev/null
source scripts/oip-load.sh
echo "function req/s p50 p99 (OIP v2 infer, 1 row, $conns connections, ${secs}s, $threads inference thread(s))"
for name in fraud-score medium-plain medium-batched; do
  oip_row http://127.0.0.1:18098 "$name" "$conns" "$secs"
done
curl -s -H "$AUTH" http://127.0.0.1:18098/metrics | grep -E '^quiver_inference_(computes|backend_runs)\{function="medium' || true
