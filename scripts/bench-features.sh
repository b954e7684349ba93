#!/usr/bin/env bash
# Feature reads under 64 concurrent invocations: `features-probe` doing a `get` of
# 16 features of a random entity (of 1,000) per request, on the embedded store and
# on a real Redis on loopback, with wrk. Needs wrk and redis-server (apt).
#   usage: scripts/bench-features.sh [seconds] [connections]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
secs=${1:-10}; conns=${2:-64}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }
command -v redis-server >/dev/null || { echo "install redis-server"; exit 1; }
bench_setup

redis-server --port 16379 --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
"$Q" serve --listen 127.0.0.1:18096 --data-dir "$data/embedded" >/dev/null 2>&1 &
pids+=($!)
"$Q" serve --listen 127.0.0.1:18097 --data-dir "$data/redis" --redis redis://127.0.0.1:16379/0 >/dev/null 2>&1 &
pids+=($!)
sleep 1
python3 - "$data/merchants.csv" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("entity," + ",".join(f"f{i}" for i in range(16)) + "\n")
    for e in range(1000):
        f.write(f"m-{e}," + ",".join(str(e * 0.5 + i) for i in range(16)) + "\n")
PY
cat > "$data/get.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local names = {}
for i = 0, 15 do names[#names + 1] = "f" .. i end
local list = table.concat(names, ",")
request = function()
  local body = string.format('[{"op":"get","group":"merchant","entity":"m-%d","name":"%s"}]', math.random(0, 999), list)
  return wrk.format(nil, nil, nil, body)
end
LUA
for port in 18096 18097; do
  export QUIVER_SERVER=http://127.0.0.1:$port
  [ "$port" = 18096 ] && use_token "$data/embedded" || use_token "$data/redis"
  "$Q" deploy functions/features-probe >/dev/null
  "$Q" features load --group merchant "$data/merchants.csv" >/dev/null
done
echo "backend req/s p50 p99 (features-probe get of 16 features, $conns connections, ${secs}s)"
for b in embedded:18096 redis:18097; do
  use_token "$data/${b%%:*}"
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -H "$AUTH" -s "$data/get.lua" "http://127.0.0.1:${b#*:}/fn/default/features-probe")
  echo "${b%%:*} $(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1=="50%" {print $2}') $(echo "$out" | awk '$1=="99%" {print $2}') $(echo "$out" | grep -o 'Non-2xx.*' || true)"
done
