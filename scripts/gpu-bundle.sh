#!/usr/bin/env bash
# Pack what the GPU checks (scripts/gpu-run.sh) need, for a GPU machine that can fetch
# nothing and has no Rust toolchain but has NVIDIA's CUDA 13 wheels in its Python: the
# release `quiver` and the `nn` bench built with ONNX Runtime, the components they run,
# ONNX Runtime's GPU library (PyPI `onnxruntime-gpu`) and wrk. The bundle is split into
# .gpu/p1 .. .gpu/pN, each small enough to travel in one call of the device tool
# (64 MiB with the working tree): carry `.gpu/pK` in call K, each call running
# `bash scripts/gpu-run.sh`; the call that brings the last part runs the checks.
#   usage: scripts/gpu-bundle.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }

build_functions
build_host --release --features quiver-host/ort
step "building the nn bench"
bench=$(cargo bench --locked -p quiver-host --bench nn --features ort --no-run \
  --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "nn" and m.get("executable"):
        print(m["executable"])')
[ -x "$bench" ] || { echo "no nn bench executable"; exit 1; }
step "fetching ONNX Runtime's GPU library (PyPI)"
ort=$(bash scripts/fetch-ort.sh --gpu-lib)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
b="$stage/quiver-gpu"
mkdir -p "$b/bin" "$b/lib" "$b/ort" "$b/wasm32-wasip2/release"
cp "$CARGO_TARGET_DIR/release/quiver" "$b/bin/quiver"
cp "$bench" "$b/bin/nn-bench"
strip "$b/bin/quiver" "$b/bin/nn-bench"
cp /usr/bin/wrk "$b/bin/wrk"
cp "$(ldd /usr/bin/wrk | awk '/libluajit/ {print $3}')" "$b/lib/"
cp "$(dirname "$ort")"/libonnxruntime*.so* "$b/ort/"
cp "$CARGO_TARGET_DIR"/wasm32-wasip2/release/{fraud_score,nn_probe}.wasm "$b/wasm32-wasip2/release/"
basename "$ort" > "$b/ort/LIBRARY"

step "packing (xz)"
tar -C "$stage" -cf - quiver-gpu | xz -T0 -6 > "$stage/bundle.tar.xz"
rm -rf .gpu
mkdir -p .gpu
(cd "$stage" && split -b 48M -d -a 2 bundle.tar.xz part.)
parts=("$stage"/part.*)
n=${#parts[@]}
sum=$(sha256sum "$stage/bundle.tar.xz" | cut -d' ' -f1)
for i in $(seq "$n"); do
  mkdir -p ".gpu/p$i"
  mv "${parts[$((i - 1))]}" ".gpu/p$i/part"
  printf '%s %s %s\n' "$i" "$n" "$sum" > ".gpu/p$i/INDEX"
done
du -sh .gpu/p*
echo "device calls: for K in 1..$n, run \`bash scripts/gpu-run.sh\` with carry [\".gpu/pK\"]"
