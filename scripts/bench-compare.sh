#!/usr/bin/env bash
# Two quiver binaries side by side, in one run, on the same components, load
# generator (wrk) and connections: `hello-http` over /http (a fresh instance per
# request), `txn-features` over POST /fn (the warm typed-function path) and
# `fraud-score` over the Open Inference Protocol (one row per request). Rounds
# alternate between the binaries so drift on a shared VM hits both alike.
#   usage: scripts/bench-compare.sh BASE_BIN NEW_BIN [seconds] [connections] [rounds]
#   e.g.   git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release --bin quiver)
#          scripts/bench-compare.sh /tmp/base-quiver "$CARGO_TARGET_DIR/release/quiver"
#   HELLO_WASM=path.wasm deploys that hello-http build on both (see below).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
base=${1:?usage: bench-compare.sh BASE_BIN NEW_BIN [seconds] [connections] [rounds]}
new=${2:?usage: bench-compare.sh BASE_BIN NEW_BIN [seconds] [connections] [rounds]}
secs=${3:-10}; conns=${4:-32}; rounds=${5:-3}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }
build_functions
data=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$data"' EXIT

cat > "$data/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = [==[$(tr -d '\n' < functions/txn-features/sample.json)]==]
LUA

# start NAME BIN PORT: a server on its own data dir with the three functions.
start() {
  mkdir -p "$data/$1"
  "$2" serve --listen "127.0.0.1:$3" --data-dir "$data/$1" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -s -o /dev/null "127.0.0.1:$3/healthz" && break; sleep 0.1; done
  export QUIVER_SERVER="http://127.0.0.1:$3"
  # A binary with tenancy writes an admin token at first start; an older one has none.
  if [ -s "$data/$1/admin-token" ] || sleep 0.5 && [ -s "$data/$1/admin-token" ]; then
    use_token "$data/$1"
    INVOKE=$("$2" --json tokens create --scope invoke | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  fi
  # HELLO_WASM: a hello-http build both binaries accept (one without tenancy refuses
  # the 1.2.0 component, which imports outgoing-handler).
  if [ -n "${HELLO_WASM:-}" ]; then
    "$2" deploy "$HELLO_WASM" --kind http --name hello-http --version 1.1.0 >/dev/null
  else
    "$2" deploy functions/hello-http >/dev/null
  fi
  "$2" deploy functions/txn-features >/dev/null
  "$2" models push functions/fraud-score/model/fraud.onnx --name fraud-model --version 1.0.0 >/dev/null
  "$2" deploy functions/fraud-score >/dev/null
  curl -sf -H "Authorization: Bearer ${INVOKE:-none}" "127.0.0.1:$3/http/default/hello-http/bench" >/dev/null
  # Each binary gets its own tenant's token (one without tenancy ignores the header).
  printf -v "TOKEN_$1" '%s' "${INVOKE:-none}"
}
start base "$base" 18180
start new "$new" 18181

# row TOKEN URL [wrk args...] -> "req/s p50 p99 non2xx"
row() {
  local token=$1 url=$2; shift 2
  local out
  # Both binaries get requests of the same size: an invoke token of its own
  # `default` tenant (tokens have a fixed length).
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -H "Authorization: Bearer $token" "$@" "$url")
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1=="50%" {print $2}') $(echo "$out" | awk '$1=="99%" {print $2}') $(echo "$out" | awk '/Non-2xx/ {print $NF}')"
}

echo "round binary path req/s p50 p99 non-2xx"
for r in $(seq "$rounds"); do
  order=("base 18180" "new 18181")
  [ $((r % 2)) -eq 0 ] && order=("new 18181" "base 18180")
  for entry in "${order[@]}"; do
    set -- $entry
    token_var="TOKEN_$1"; t=${!token_var}
    echo "$r $1 http $(row "$t" "http://127.0.0.1:$2/http/default/hello-http/bench")"
    echo "$r $1 fn $(row "$t" "http://127.0.0.1:$2/fn/default/txn-features" -s "$data/post.lua")"
    echo "$r $1 oip $(row "$t" "http://127.0.0.1:$2/v2/models/fraud-score/infer" -s scripts/oip.lua)"
  done
done
