#!/usr/bin/env bash
# A Python venv with scripts/requirements-test.txt, outside the clone (reused
# across runs; rebuilt when the requirements change). Prints its python's path.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
req=scripts/requirements-test.txt
venv="${QUIVER_PY_ENV:-$HOME/.cache/quiver-py}"
stamp="$venv/.requirements"
# One maker at a time (tests run in parallel processes).
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$stamp"; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  cp "$req" "$stamp"
fi
echo "$venv/bin/python"
