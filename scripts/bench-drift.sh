#!/usr/bin/env bash
# Drift computation at scale, quiver-ml vs Evidently + SciPy on the same data and
# machine, one run: `scripts/bench-drift.sh [current rows] [reference rows] [features]`
# (default 1 000 000 x 20 features against 100 000-row references).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
CUR=${1:-1000000} REF=${2:-100000} FEATURES=${3:-20}
DATA=$(mktemp -d); trap 'rm -rf "$DATA"' EXIT
VENV=${QUIVER_PYREF:-$HOME/.cache/quiver-pyref}
if [ ! -x "$VENV/bin/python" ]; then
  step "venv with evidently 0.7.23, scipy 1.14.1 (PyPI)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q evidently==0.7.23 scipy==1.14.1 numpy==2.2.6 pandas==2.2.3
fi
step "quiver-ml (native, release)"
(cd sdk/ml && cargo run -q --release --example bench_drift -- "$DATA" "$CUR" "$REF" "$FEATURES")
step "quiver-ml inside Wasm (wasm32-wasip2, Quiver's engine configuration), same data"
(cd sdk/ml && cargo build -q --release --example bench_drift --target wasm32-wasip2)
cargo build -q --locked --release --example run_guest -p quiver-host
QUIVER_BENCH_READ=1 QUIVER_BENCH_LABEL="quiver-ml in wasm" \
  "$CARGO_TARGET_DIR/release/examples/run_guest" \
  "$CARGO_TARGET_DIR/wasm32-wasip2/release/examples/bench_drift.wasm" "$DATA" \
  /data "$CUR" "$REF" "$FEATURES"
step "Evidently + SciPy"
"$VENV/bin/python" scripts/bench-drift.py "$DATA" "$FEATURES"
