#!/usr/bin/env bash
# Realistic models, the wasi-nn guest path vs the backend called natively, in
# process: the ResNet-18-shaped model and the transformer encoder that
# tests/models/make_bench_models.py makes (seeded), tract and (with ORT_DYLIB_PATH
# from scripts/fetch-ort.sh) ONNX Runtime on CPU. host/benches/models.rs.
# usage: scripts/bench-models.sh [iterations per path, default 40]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
py=$(bash scripts/py-env.sh)
"$py" tests/models/make_bench_models.py "$dir"
export QUIVER_BENCH_MODELS="$dir" QUIVER_BENCH_ITERS="${1:-40}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(bash scripts/fetch-ort.sh | tail -1)}"
cargo bench --locked -p quiver-host --bench models --features ort
