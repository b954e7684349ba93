#!/usr/bin/env bash
# Telemetry's cost on a warm call: fraud-pipeline over /fn (ingest -> txn-features
# -> fraud-score, features and wasi-nn: 9 spans a call) with OTLP export off (the
# default; Prometheus metrics are always kept) and on (every call's span tree to an
# OTLP/HTTP receiver, metrics pushed every second), the same wrk load, alternated
# in rounds on one machine. The receiver is nginx answering 200 (it does not
# decode). `sampled` sends a sampled traceparent (every call exported), `ratio`
# none, with --otlp-sample-ratio 0.1 on the host.
#   usage: scripts/bench-telemetry.sh [seconds] [connections] [rounds]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
secs=${1:-10}; conns=${2:-1}; rounds=${3:-3}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }
command -v nginx >/dev/null || { echo "install nginx (apt-get install nginx)"; exit 1; }
bench_setup

# The OTLP receiver: nginx answering 200 to every export (it reads and drops the
# body), so what is measured is the host's side of the export.
mkdir -p "$data/nginx"
cat > "$data/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $data/nginx/nginx.pid;
error_log $data/nginx/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $data/nginx;
  client_max_body_size 64m;
  server { listen 127.0.0.1:18199; location / { return 200; } }
}
NGINX
nginx -c "$data/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
"$Q" serve --listen 127.0.0.1:18120 --data-dir "$data/off" >/dev/null 2>&1 &
pids+=($!)
"$Q" serve --listen 127.0.0.1:18121 --data-dir "$data/on" \
  --otlp-endpoint http://127.0.0.1:18199 --otlp-metrics-interval 1s >/dev/null 2>&1 &
pids+=($!)
"$Q" serve --listen 127.0.0.1:18122 --data-dir "$data/ratio" --otlp-sample-ratio 0.1 \
  --otlp-endpoint http://127.0.0.1:18199 --otlp-metrics-interval 1s >/dev/null 2>&1 &
pids+=($!)
sides="off:18120 on:18121 ratio:18122"
for side in $sides; do
  port=${side#*:}
  for _ in $(seq 100); do curl -s -o /dev/null "127.0.0.1:$port/healthz" && break; sleep 0.1; done
done
for side in $sides; do
  name=${side%%:*}; port=${side#*:}
  export QUIVER_SERVER=http://127.0.0.1:$port QUIVER_TOKEN; QUIVER_TOKEN=$(cat "$data/$name/admin-token")
  "$Q" models push functions/fraud-score/model/fraud.onnx --name fraud-model --version 1.0.0 >/dev/null
  for f in fraud-score ingest-json txn-features fraud-pipeline; do "$Q" deploy "functions/$f" >/dev/null; done
done
body=$(tr -d '\n' < functions/fraud-pipeline/sample.json)
for side in off on ratio; do
  {
    echo 'wrk.method = "POST"'
    echo 'wrk.headers["content-type"] = "application/json"'
    # `on`: the client's trace is sampled, so every call is exported.
    [ "$side" = on ] && echo 'wrk.headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"'
    echo "wrk.body = [==[$body]==]"
  } > "$data/$side.lua"
done
run() { # run NAME PORT: p50 (us), p99 (us) and requests/s of one round
  local tok; tok=$(cat "$data/$1/admin-token")
  wrk -t1 -c"$conns" -d"${secs}s" --latency -H "Authorization: Bearer $tok" -s "$data/$1.lua" \
    "http://127.0.0.1:$2/fn/default/fraud-pipeline" | awk '
      function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; return v * 1e6 }
      / 50%/ { p50 = us($2) } / 99%/ { p99 = us($2) } /Requests\/sec/ { rps = $2 }
      END { printf "%.0f %.0f %.0f\n", p50, p99, rps }'
}
for side in $sides; do run "${side%%:*}" "${side#*:}" >/dev/null; done  # warm up
echo "round export p50_us p99_us req/s (wrk -c$conns ${secs}s, POST /fn/default/fraud-pipeline, 3 rows)"
for r in $(seq "$rounds"); do
  for side in $sides; do
    echo "$r ${side%%:*} $(run "${side%%:*}" "${side#*:}")"
  done
done | tee "$data/rounds"
awk '{ p[$2] += $3; n[$2]++ } END {
  printf "mean p50: off %.0f us, on (every call) %.0f us (%.3f x), ratio 0.1 %.0f us (%.3f x)\n",
    p["off"]/n["off"], p["on"]/n["on"], (p["on"]/n["on"])/(p["off"]/n["off"]),
    p["ratio"]/n["ratio"], (p["ratio"]/n["ratio"])/(p["off"]/n["off"]) }' "$data/rounds"
