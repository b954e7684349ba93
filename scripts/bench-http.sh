#!/usr/bin/env bash
# hello-http on Quiver vs `wasmtime serve` 48.0.8: the same component, the same
# load generator (wrk), the same connections, on this machine, in one run.
#   needs: wrk (apt), wasmtime-cli 48.0.8 (`cargo install wasmtime-cli@48.0.8 --locked`)
#   usage: scripts/bench-http.sh [seconds] [connections] [rounds]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
secs=${1:-10}; conns=${2:-32}; rounds=${3:-3}
WASMTIME=${WASMTIME:-$(command -v wasmtime || echo /tmp/wasmtime-cli/bin/wasmtime)}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }
[ -x "$WASMTIME" ] || { echo "wasmtime not found; set WASMTIME"; exit 1; }
"$WASMTIME" --version | grep -q '^wasmtime 48.0.8' || echo "warning: $("$WASMTIME" --version) is not 48.0.8"

bench_setup
wasm="$CARGO_TARGET_DIR/wasm32-wasip2/release/hello_http.wasm"

"$Q" serve --listen 127.0.0.1:18080 --data-dir "$data" >/dev/null 2>&1 &
pids+=($!)
"$WASMTIME" serve --addr 127.0.0.1:18081 -Scli "$wasm" >/dev/null 2>&1 &
pids+=($!)
for port in 18080 18081; do
  for _ in $(seq 100); do curl -s -o /dev/null "127.0.0.1:$port/" && break; sleep 0.1; done
done
export QUIVER_SERVER=http://127.0.0.1:18080
use_token "$data"
"$Q" deploy functions/hello-http >/dev/null
# The same component again, opted in to instance reuse (it keeps no state).
"$Q" deploy functions/hello-http --name hello-reuse \
  --set scaling.instance_reuse=true >/dev/null
curl -sf -H "$AUTH" 127.0.0.1:18080/http/default/hello-http/bench >/dev/null
curl -sf -H "$AUTH" 127.0.0.1:18080/http/default/hello-reuse/bench >/dev/null
curl -sf 127.0.0.1:18081/bench >/dev/null

# Every request carries the token (wasmtime serve ignores it: the same bytes go to both).
rps() { wrk -t2 -c"$conns" -d"${secs}s" --latency -H "$AUTH" "$1" | tee -a "$data/wrk.log" | awk '/Requests\/sec/ {print $2}'; }
echo "round quiver_fresh_rps quiver_reuse_rps wasmtime_rps ratio_fresh ratio_reuse"
for r in $(seq "$rounds"); do
  q=$(rps http://127.0.0.1:18080/http/default/hello-http/bench)
  u=$(rps http://127.0.0.1:18080/http/default/hello-reuse/bench)
  w=$(rps http://127.0.0.1:18081/bench)
  echo "$r $q $u $w $(python3 -c "print(round($q/$w, 2), round($u/$w, 2))")"
done
grep -E "Latency|50%|99%" "$data/wrk.log" | sed 's/^/  /'

# A typed function over /fn (no peer serves this API): Quiver alone.
"$Q" deploy functions/txn-features >/dev/null
cat > "$data/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = [==[$(tr -d '\n' < functions/txn-features/sample.json)]==]
LUA
echo "txn-features over POST /fn (2 rows per request):"
wrk -t2 -c"$conns" -d"${secs}s" --latency -H "$AUTH" -s "$data/post.lua" http://127.0.0.1:18080/fn/default/txn-features \
  | grep -E "Requests/sec|50%|99%|Non-2xx" | sed 's/^/  /'
