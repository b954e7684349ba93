#!/usr/bin/env bash
# Events through Quiver's bus to a subscribed function, embedded log vs Redis
# Streams, against `redis-benchmark` XADD on the same Redis (the ceiling); then the
# monitor tap's cost on /fn (fraud-pipeline with and without [pipeline] monitor).
# Needs wrk and redis-server (apt).
#   usage: scripts/bench-events.sh [seconds] [connections]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
secs=${1:-10}; conns=${2:-32}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }
command -v redis-server >/dev/null || { echo "install redis-server"; exit 1; }
bench_setup

# One Redis for both the bus and redis-benchmark: AOF on, fsync once a second.
redis-server --port 16380 --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec \
  --dir "$data" >/dev/null &
pids+=($!)
"$Q" serve --listen 127.0.0.1:18110 --data-dir "$data/embedded" >/dev/null 2>&1 &
pids+=($!)
"$Q" serve --listen 127.0.0.1:18111 --data-dir "$data/redis" --redis redis://127.0.0.1:16380/0 >/dev/null 2>&1 &
pids+=($!)
for port in 18110 18111; do
  for _ in $(seq 100); do curl -s -o /dev/null "127.0.0.1:$port/healthz" && break; sleep 0.1; done
done

token_of() { cat "$data/$1/admin-token"; }
metric() { # metric PORT TOKEN SERIES-PREFIX: the sum of the matching samples
  curl -s -H "Authorization: Bearer $2" "127.0.0.1:$1/metrics" |
    awk -v s="$3" 'index($0, s) == 1 { sum += $NF } END { printf "%d\n", sum }'
}
# lag_quantiles PORT TOKEN: p50 and p99 of quiver_event_lag_seconds (ms), interpolated
# within buckets as Prometheus' histogram_quantile does.
lag_quantiles() {
  curl -s -H "Authorization: Bearer $2" "127.0.0.1:$1/metrics" | python3 -c '
import re, sys
b = []
for line in sys.stdin:
    m = re.match(r"quiver_event_lag_seconds_bucket\{.*le=\"([^\"]+)\".*\} (\S+)", line)
    if m:
        b.append((float("inf") if m[1] == "+Inf" else float(m[1]), float(m[2])))
b.sort()
def q(p):
    total = b[-1][1]
    lo, below = 0.0, 0.0
    for le, n in b:
        if n >= p * total:
            if le == float("inf"):
                return lo * 1000
            return (lo + (le - lo) * (p * total - below) / max(n - below, 1)) * 1000
        lo, below = le, n
print("%.2f %.2f" % (q(0.5), q(0.99)))'
}

cat > "$data/publish.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '[{"x": 1}]'
LUA
echo "backend lag_p50_ms lag_p99_ms (300 events one at a time) published/s delivered/s (wrk -c$conns ${secs}s on POST /events, subscriber: ingest-json)"
for b in embedded:18110 redis:18111; do
  name=${b%%:*}; port=${b#*:}; tok=$(token_of "$name")
  QUIVER_SERVER=http://127.0.0.1:$port QUIVER_TOKEN=$tok "$Q" deploy functions/ingest-json --name sink \
    --set 'triggers.events=["bench"]' --set config.schema=x:int64 --set scaling.max_concurrency=32 >/dev/null
  # Light load first: publication to the start of its delivery, one event at a time.
  for i in $(seq 300); do
    curl -s -o /dev/null -H "Authorization: Bearer $tok" -H 'content-type: application/json' \
      -d '[{"x": 1}]' "http://127.0.0.1:$port/events/default/bench"
    sleep 0.005
  done
  read -r p50 p99 < <(lag_quantiles "$port" "$tok")
  start=$(date +%s.%N)
  out=$(wrk -t2 -c"$conns" -d"${secs}s" -H "Authorization: Bearer $tok" -s "$data/publish.lua" \
    "http://127.0.0.1:$port/events/default/bench")
  published=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  published=$((published - ${non2xx:-0} + 300))
  series='quiver_event_deliveries_total{function="sink",outcome="ok"'
  for _ in $(seq 600); do
    [ "$(metric "$port" "$tok" "$series")" -ge "$published" ] && break
    sleep 0.1
  done
  end=$(date +%s.%N)
  delivered=$(( $(metric "$port" "$tok" "$series") - 300 ))
  echo "$name $p50 $p99 $(python3 -c "print(round(($published-300)/$secs), round($delivered/($end-$start)))")"
done

echo "redis-benchmark XADD (same Redis, -c$conns, 200000 commands):"
redis-benchmark -p 16380 -c "$conns" -n 200000 -q XADD quiver:bench '*' payload '[{"x": 1}]' | tr '\r' '\n' | tail -1 | sed 's/^/  /'

# The tap's cost on the request path.
export QUIVER_SERVER=http://127.0.0.1:18110 QUIVER_TOKEN; QUIVER_TOKEN=$(token_of embedded)
AUTH="Authorization: Bearer $QUIVER_TOKEN"
"$Q" models push functions/fraud-score/model/fraud.onnx --name fraud-model --version 1.0.0 >/dev/null
for f in txn-features fraud-score drift-monitor; do "$Q" deploy "functions/$f" >/dev/null; done
"$Q" deploy functions/ingest-json >/dev/null
"$Q" deploy functions/fraud-pipeline >/dev/null
"$Q" deploy functions/fraud-pipeline --name tapped-pipeline --set 'pipeline.monitor="drift-monitor"' >/dev/null
# A monitor that does nothing (slow-monitor, no sleep): the tap's own cost.
"$Q" deploy functions/slow-monitor --name noop-monitor --set config.sleep_ms=0 >/dev/null
"$Q" deploy functions/fraud-pipeline --name noop-pipeline --set 'pipeline.monitor="noop-monitor"' >/dev/null
cat > "$data/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = [==[$(tr -d '\n' < functions/fraud-pipeline/sample.json)]==]
LUA
echo "connections round plain_p50 noop_tap_p50 drift_tap_p50 plain_rps noop_tap_rps drift_tap_rps (fraud-pipeline over /fn, ${secs}s each)"
for c in 1 "$conns"; do for r in 1 2; do
  for f in fraud-pipeline noop-pipeline tapped-pipeline; do
    out=$(wrk -t1 -c"$c" -d"${secs}s" --latency -H "$AUTH" -s "$data/post.lua" "http://127.0.0.1:18110/fn/default/$f")
    eval "${f%%-*}_p50=\$(echo \"\$out\" | awk '\$1==\"50%\" {print \$2}')"
    eval "${f%%-*}_rps=\$(echo \"\$out\" | awk '/Requests\/sec/ {print \$2}')"
  done
  echo "$c $r $fraud_p50 $noop_p50 $tapped_p50 $fraud_rps $noop_rps $tapped_rps"
done; done
echo "drift-monitor calls: $(metric 18110 "$QUIVER_TOKEN" 'quiver_monitor_observations_total{monitor="drift-monitor",outcome="ok"') ok, observations dropped: $(metric 18110 "$QUIVER_TOKEN" 'quiver_monitor_dropped_total')"
