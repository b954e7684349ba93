#!/usr/bin/env bash
# The first request on a host that has never seen a version, with the artifacts in
# an OCI registry (Debian's docker-registry on loopback), two ways, one run:
#   compile     — pull the component, compile it, run;
#   precompiled — pull the code another host compiled for this engine (MAC-checked,
#                 --precompiled-key-file), deserialize it, run.
# Each round restarts both hosts on their own data dirs with the blob store and the
# AOT cache emptied (the index stays: it says which version serves), then times one
# request to first response byte with curl. Host start-up is not timed. Interleaved
# rounds; prints p50 and p90 of each and the ratio.
# Needs docker-registry (apt).   usage: scripts/bench-first-pull.sh [rounds] [function]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
rounds=${1:-15}; fn=${2:-txn-features}
command -v docker-registry >/dev/null || { echo "install docker-registry (apt)"; exit 1; }
bench_setup
cat > "$data/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $data/storage
http:
  addr: 127.0.0.1:18500
YML
docker-registry serve "$data/registry.yml" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:18500/v2/ >/dev/null && break; sleep 0.1; done
head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$data/key"
port_of() { case $1 in compile) echo 18501 ;; precompiled) echo 18502 ;; esac; }
host_pid=()
start_host() { # mode
  local port; port=$(port_of "$1")
  local extra=(); [ "$1" = precompiled ] && extra=(--precompiled-key-file "$data/key")
  RUST_LOG=warn "$Q" serve --listen "127.0.0.1:$port" --data-dir "$data/$1" \
    --registry oci://127.0.0.1:18500/quiver-$1 "${extra[@]}" >/dev/null 2>>"$data/$1.log" &
  host_pid[$port]=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.05; done
  echo "host $1 did not start"; cat "$data/$1.log"; exit 1
}
stop_host() { # mode
  local port; port=$(port_of "$1")
  kill "${host_pid[$port]}"; wait "${host_pid[$port]}" 2>/dev/null || true
}
body='[{"txn_id":"t-0","amount":4.5,"ts":1763812800,"merchant":"coffee-corner"}]'
for mode in compile precompiled; do
  start_host $mode
  use_token "$data/$mode"
  QUIVER_SERVER=http://127.0.0.1:$(port_of $mode) "$Q" deploy "functions/$fn" >/dev/null
  stop_host $mode
done
: > "$data/times"
for r in $(seq "$rounds"); do
  for mode in compile precompiled; do
    rm -rf "$data/$mode/aot" "$data/$mode/registry/blobs/sha256"
    mkdir -p "$data/$mode/aot" "$data/$mode/registry/blobs/sha256"
    start_host $mode
    use_token "$data/$mode"
    # Any answer of the function counts: what is timed is getting it loaded.
    t=$(curl -s -o "$data/out" -w '%{http_code} %{time_starttransfer}' -H "$AUTH" \
      -H 'content-type: application/json' --data-binary "$body" \
      "http://127.0.0.1:$(port_of $mode)/fn/default/$fn")
    code=${t% *}
    case $code in 5*|401|403|404) echo "$mode: HTTP $code: $(cat "$data/out")"; exit 1 ;; esac
    loaded=$(curl -s -H "$AUTH" "http://127.0.0.1:$(port_of $mode)/metrics" \
      | awk '/^quiver_compilations_total /{print $2}')
    echo "$mode ${t#* } compiled=$loaded" >> "$data/times"
    stop_host $mode
  done
done
python3 - "$data/times" "$fn" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for mode, t, compiled in rows:
    by.setdefault(mode, []).append((float(t) * 1000, compiled))
for mode, want in (("compile", "compiled=1"), ("precompiled", "compiled=0")):
    bad = [c for _, c in by[mode] if c != want]
    assert not bad, f"{mode}: expected {want} on every round, got {bad}"
def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]
c = [t for t, _ in by["compile"]]; p = [t for t, _ in by["precompiled"]]
print(f"first request of {sys.argv[2]}, {len(c)} rounds each, ms to first byte")
print(f"  pull + compile        p50 {q(c, .5):8.1f}  p90 {q(c, .9):8.1f}")
print(f"  pull precompiled code p50 {q(p, .5):8.1f}  p90 {q(p, .9):8.1f}")
print(f"  ratio (compile / precompiled) at p50: {q(c, .5) / q(p, .5):.1f}x")
PY
