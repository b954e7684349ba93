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
