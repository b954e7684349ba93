#!/usr/bin/env bash
# Build everything and run `quiver demo`: a host on embedded defaults (data under
# ./.quiver), the first-party functions and pipeline deployed, sample records sent.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
build_functions
build_host --release
step "quiver demo"
exec "$CARGO_TARGET_DIR/release/quiver" demo "$@"
