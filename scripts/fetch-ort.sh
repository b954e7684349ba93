#!/usr/bin/env bash
# Fetch ONNX Runtime's shared library from PyPI (no CDN) and print its path, for
# ORT_DYLIB_PATH. CPU: the `onnxruntime` wheel. `--gpu`: the `onnxruntime-gpu`
# wheel plus NVIDIA's CUDA and cuDNN wheels (their libraries must be on
# LD_LIBRARY_PATH: the script prints the line to export).
set -euo pipefail
gpu=false
[ "${1:-}" = "--gpu" ] && gpu=true
dest="${QUIVER_ORT_DIR:-$HOME/.cache/quiver-ort}"
version="${QUIVER_ORT_VERSION:-1.22.1}"
mkdir -p "$dest"
if $gpu; then
  pkg=onnxruntime-gpu
  out="$dest/gpu"
else
  pkg=onnxruntime
  out="$dest/cpu"
fi
lib="$out/libonnxruntime.so.$version"
if [ ! -f "$lib" ]; then
  mkdir -p "$out/wheels"
  python3 -m pip download --quiet --no-deps --dest "$out/wheels" "$pkg==$version" >&2
  python3 - "$out" "$version" <<'PY'
import glob, os, sys, zipfile
out, version = sys.argv[1], sys.argv[2]
for whl in glob.glob(os.path.join(out, "wheels", "*.whl")):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name.startswith("onnxruntime/capi/libonnxruntime") and ".so" in name:
                target = os.path.join(out, os.path.basename(name))
                with z.open(name) as src, open(target, "wb") as dst:
                    dst.write(src.read())
PY
fi
if $gpu; then
  # CUDA 12 runtime libraries for onnxruntime-gpu 1.22, from NVIDIA's PyPI wheels.
  python3 -m pip install --quiet --target "$out/nvidia" \
    nvidia-cuda-runtime-cu12 nvidia-cublas-cu12 nvidia-cufft-cu12 nvidia-curand-cu12 \
    nvidia-cudnn-cu12 >&2
  libs=$(find "$out/nvidia" -name 'lib' -type d | tr '\n' ':')
  echo "export LD_LIBRARY_PATH=$out:${libs}\${LD_LIBRARY_PATH:-}" >&2
fi
echo "$lib"
