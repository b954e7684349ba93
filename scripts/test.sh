#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the black-box tests that
# start the real `quiver` binary. `.ci/run` calls exactly this.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

step "cargo fmt --check"
cargo fmt --all -- --check
(cd functions && cargo fmt --all -- --check)
(cd sdk && cargo fmt -- --check)
(cd sdk/ml && cargo fmt -- --check)

# ONNX Runtime's library from PyPI for the `ort` backend (CPU); the GPU build of
# the backend is the same code (CUDA execution provider), compiled here too.
step "fetch ONNX Runtime (PyPI)"
ORT_DYLIB_PATH="$(bash scripts/fetch-ort.sh)"
export ORT_DYLIB_PATH
FEATURES=(--features quiver-host/ort)

build_functions
step "cargo clippy (host workspace with and without ort, functions, sdk)"
cargo clippy --locked --workspace --all-targets "${FEATURES[@]}" -- -D warnings
cargo clippy --locked -p quiver-host --lib -- -D warnings
(cd functions && cargo clippy --locked --target wasm32-wasip2 --all-targets -- -D warnings)
(cd sdk && cargo clippy --locked --target wasm32-wasip2 --all-targets -- -D warnings)
(cd sdk/ml && cargo clippy --locked --all-targets -- -D warnings)

# The feature-store tests run a real Redis server (started by the tests on loopback);
# the TLS test makes a certificate with openssl and calls the host with curl; a
# real Prometheus scrapes /metrics in tests/tests/prometheus.rs; headless Chromium
# loads the dashboard in tests/tests/dashboard.rs.
missing=()
for tool in redis-server:redis-server docker-registry:docker-registry openssl:openssl curl:curl prometheus:prometheus chromium:chromium nginx:nginx; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The black-box tests run the binary, which lives in another package: build it first.
build_host "${FEATURES[@]}"
step "tests"
# quiver-ml (drift statistics against Evidently/SciPy's numbers, the trainer, its
# ONNX encoding) is shared by guests and the host, and is its own package.
(cd sdk/ml && cargo test --locked)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast "${FEATURES[@]}"
else
  cargo test --locked --workspace --no-fail-fast "${FEATURES[@]}"
fi
