#!/usr/bin/env bash
# Rebuilds the first-party components embedded in the quiver binary
# (host/first-party/): functions/model-serve, the function `quiver models push
# --serve` and `quiver serve-model` deploy. Writes the component and the digest
# of the sources it was built from, which a host unit test compares with the
# tree's (so a change to the SDK, the WIT or model-serve that is not rebuilt
# here fails the tests, naming this script).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-functions/target}"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
(cd functions && cargo build --release --locked --target wasm32-wasip2 -p model-serve)
cp "$target/wasm32-wasip2/release/model_serve.wasm" host/first-party/model-serve.wasm
python3 - <<'PY'
import hashlib, pathlib
files = []
for d in ["functions/model-serve/src", "sdk/src", "wit"]:
    files += [p for p in pathlib.Path(d).rglob("*") if p.is_file()]
files += [pathlib.Path(f) for f in
          ["functions/model-serve/Cargo.toml", "functions/model-serve/quiver.toml", "sdk/Cargo.toml"]]
h = hashlib.sha256()
for f in sorted(files, key=lambda p: str(p)):
    data = f.read_bytes()
    h.update(str(f).encode() + b"\0" + len(data).to_bytes(8, "little") + data)
pathlib.Path("host/first-party/model-serve.sources").write_text(h.hexdigest() + "\n")
print("host/first-party/model-serve.wasm", len(pathlib.Path("host/first-party/model-serve.wasm").read_bytes()), "bytes; sources", h.hexdigest())
PY
