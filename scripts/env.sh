# Shared setup for scripts/demo.sh and scripts/test.sh (sourced, not run).
# Installs what a fresh machine lacks and builds the first-party functions.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# One target dir outside the clone, so repeated runs (and CI) build incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quiver-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n== %s\n' "$*"; }

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  step "rustup target add wasm32-wasip2"
  rustup target add wasm32-wasip2
fi

build_functions() {
  step "building first-party functions (wasm32-wasip2)"
  (cd functions && cargo build --release --target wasm32-wasip2 --locked)
}

build_host() {
  step "building the quiver host"
  cargo build --locked --bin quiver "$@"
}

# use_token DATA_DIR: wait for the admin token a first start writes there and export
# it as QUIVER_TOKEN (the CLI reads it); `$AUTH` is the matching curl/wrk header.
use_token() {
  for _ in $(seq 100); do [ -s "$1/admin-token" ] && break; sleep 0.1; done
  export QUIVER_TOKEN; QUIVER_TOKEN=$(cat "$1/admin-token")
  AUTH="Authorization: Bearer $QUIVER_TOKEN"
}

# For the benchmark scripts: release builds, `$Q` (the quiver binary), a scratch dir
# `$data`, and `$pids`: servers started there are killed, and `$data` removed, on exit.
bench_setup() {
  build_functions
  build_host --release
  Q="$CARGO_TARGET_DIR/release/quiver"
  data=$(mktemp -d)
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$data"' EXIT
}
