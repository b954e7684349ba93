#!/usr/bin/env bash
# Telemetry's cost on a warm call: fraud-pipeline over /fn (ingest -> txn-features
# -> fraud-score, features and wasi-nn: 9 spans a call) with OTLP export off (the
# default; Prometheus metrics are always kept) and on (every call's span tree to an
# OTLP/HTTP receiver, metrics pushed every second), the same wrk load, alternated
# in rounds on one machine. The receiver is a small Python server that answers 200
# (it does not decode: what it costs is its own, not the host's).
#   usage: scripts/bench-telemetry.sh [seconds] [connections] [rounds]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
secs=${1:-10}; conns=${2:-1}; rounds=${3:-3}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }
bench_setup

python3 - 18199 <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
pids+=($!)
"$Q" serve --listen 127.0.0.1:18120 --data-dir "$data/off" >/dev/null 2>&1 &
pids+=($!)
"$Q" serve --listen 127.0.0.1:18121 --data-dir "$data/on" \
  --otlp-endpoint http://127.0.0.1:18199 --otlp-metrics-interval 1s >/dev/null 2>&1 &
pids+=($!)
for port in 18120 18121; do
  for _ in $(seq 100); do curl -s -o /dev/null "127.0.0.1:$port/healthz" && break; sleep 0.1; done
done
for side in off:18120 on:18121; do
  name=${side%%:*}; port=${side#*:}
  export QUIVER_SERVER=http://127.0.0.1:$port QUIVER_TOKEN; QUIVER_TOKEN=$(cat "$data/$name/admin-token")
  "$Q" models push functions/fraud-score/model/fraud.onnx --name fraud-model --version 1.0.0 >/dev/null
  for f in fraud-score ingest-json txn-features fraud-pipeline; do "$Q" deploy "functions/$f" >/dev/null; done
done
cat > "$data/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
wrk.body = [==[$(tr -d '\n' < functions/fraud-pipeline/sample.json)]==]
LUA
run() { # run NAME PORT: p50 (us) and requests/s of one round
  local tok; tok=$(cat "$data/$1/admin-token")
  wrk -t1 -c"$conns" -d"${secs}s" --latency -H "Authorization: Bearer $tok" -s "$data/post.lua" \
    "http://127.0.0.1:$2/fn/default/fraud-pipeline" | awk '
      function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; return v * 1e6 }
      / 50%/ { p50 = us($2) } / 99%/ { p99 = us($2) } /Requests\/sec/ { rps = $2 }
      END { printf "%.0f %.0f %.0f\n", p50, p99, rps }'
}
for side in off:18120 on:18121; do run "${side%%:*}" "${side#*:}" >/dev/null; done  # warm up
echo "round export p50_us p99_us req/s (wrk -c$conns ${secs}s, POST /fn/default/fraud-pipeline, 3 rows)"
for r in $(seq "$rounds"); do
  for side in off:18120 on:18121; do
    echo "$r ${side%%:*} $(run "${side%%:*}" "${side#*:}")"
  done
done | tee "$data/rounds"
awk '{ p[$2] += $3; n[$2]++ } END { printf "mean p50: off %.0f us, on %.0f us, on/off %.3f\n", p["off"]/n["off"], p["on"]/n["on"], (p["on"]/n["on"])/(p["off"]/n["off"]) }' "$data/rounds"
