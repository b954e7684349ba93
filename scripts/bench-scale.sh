#!/usr/bin/env bash
# Density (1,000 Cold functions: deploy time, RSS) and cold start from Cold over HTTP
# (p50/p99 to first response byte) against the release binary.
#   usage: scripts/bench-scale.sh [density|cold_start]   (SCALE_N=200 by default)
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
build_functions
build_host --release
QUIVER_BIN="$CARGO_TARGET_DIR/release/quiver" RUST_LOG=warn \
  cargo bench -q -p quiver-tests --bench scale -- "$@"
