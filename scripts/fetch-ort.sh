#!/usr/bin/env bash
# Fetch ONNX Runtime's shared library from PyPI (no CDN) and print its path, for
# ORT_DYLIB_PATH. CPU: the `onnxruntime` wheel. `--gpu`: the `onnxruntime-gpu` wheel
# (built for CUDA 13 from 1.28 on) plus NVIDIA's CUDA 13 and cuDNN wheels (their
# libraries must be on LD_LIBRARY_PATH: the script prints the line to export);
# `--gpu-lib`: the GPU library without NVIDIA's wheels.
#
# 1.28.0 for both, so that what CI tests on the CPU is the runtime the GPU path uses.
# The `ort` crate (2.0.0-rc.10) targets ONNX Runtime 1.22's C API; ONNX Runtime's C
# API only grows, and the CPU library of 1.22.1, 1.27.0 and 1.28.0 passes the same
# tests here (QUIVER_ORT_VERSION picks another).
set -euo pipefail
gpu=false; cuda_wheels=true
case "${1:-}" in
  --gpu) gpu=true ;;
  # The GPU library alone, for a machine that has NVIDIA's CUDA 13 wheels already
  # (scripts/gpu-bundle.sh).
  --gpu-lib) gpu=true; cuda_wheels=false ;;
esac
dest="${QUIVER_ORT_DIR:-$HOME/.cache/quiver-ort}"
version="${QUIVER_ORT_VERSION:-1.28.0}"
mkdir -p "$dest"
if $gpu; then
  pkg=onnxruntime-gpu
  out="$dest/gpu"
else
  pkg=onnxruntime
  out="$dest/cpu"
fi
# Each version's libraries in a folder of their own: the provider libraries
# (`libonnxruntime_providers_*.so`) are loaded from beside `libonnxruntime.so`.
libdir="$out/$version"
lib="$libdir/libonnxruntime.so.$version"
if [ ! -f "$lib" ]; then
  wheels="$libdir/wheels"
  mkdir -p "$wheels"
  python3 -m pip download --quiet --no-deps --dest "$wheels" "$pkg==$version" >&2
  python3 - "$libdir" "$wheels" <<'PY'
import glob, os, sys, zipfile
out, wheels = sys.argv[1], sys.argv[2]
for whl in glob.glob(os.path.join(wheels, "*.whl")):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name.startswith("onnxruntime/capi/libonnxruntime") and ".so" in name:
                target = os.path.join(out, os.path.basename(name))
                with z.open(name) as src, open(target, "wb") as dst:
                    dst.write(src.read())
PY
fi
if $gpu && $cuda_wheels; then
  # CUDA 13 runtime libraries, from NVIDIA's PyPI wheels: the ranges onnxruntime-gpu
  # 1.28 asks for (its `cuda` and `cudnn` extras), plus cuBLAS, which its CUDA
  # execution provider links.
  python3 -m pip install --quiet --no-deps --target "$out/nvidia" \
    "nvidia-cuda-runtime~=13.0" "nvidia-cuda-nvrtc~=13.0" "nvidia-cublas~=13.0" \
    "nvidia-cufft~=12.0" "nvidia-curand~=10.0" "nvidia-cudnn-cu13~=9.0" >&2
  libs=$(find "$out/nvidia" -name 'lib' -type d | tr '\n' ':')
  echo "export LD_LIBRARY_PATH=$libdir:${libs}\${LD_LIBRARY_PATH:-}" >&2
fi
echo "$lib"
