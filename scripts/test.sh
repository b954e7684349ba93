#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the black-box tests that
# start the real `quiver` binary. `.ci/run` calls exactly this.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

step "cargo fmt --check"
cargo fmt --all -- --check
(cd functions && cargo fmt --all -- --check)
(cd sdk && cargo fmt -- --check)

build_functions
step "cargo clippy (host workspace, functions, sdk)"
cargo clippy --locked --workspace --all-targets -- -D warnings
(cd functions && cargo clippy --locked --target wasm32-wasip2 --all-targets -- -D warnings)
(cd sdk && cargo clippy --locked --target wasm32-wasip2 --all-targets -- -D warnings)

# The feature-store tests run a real Redis server (started by the tests on loopback).
if ! command -v redis-server >/dev/null 2>&1; then
  step "apt-get install redis-server"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi

# The black-box tests run the binary, which lives in another package: build it first.
build_host
step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast
else
  cargo test --locked --workspace --no-fail-fast
fi
