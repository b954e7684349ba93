#!/usr/bin/env bash
# Vendor the dashboard's charting library (uPlot, MIT) into host/ui/vendor/, from
# the npm registry at a pinned version. The files are committed and embedded in the
# binary with include_str!; run this again only to change the version.
set -euo pipefail

UPLOT_VERSION="1.6.32"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/host/ui/vendor"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "uplot@$UPLOT_VERSION" >/dev/null)
tar -xzf "$tmp/uplot-$UPLOT_VERSION.tgz" -C "$tmp"
mkdir -p "$dest"
cp "$tmp/package/dist/uPlot.iife.min.js" "$dest/uPlot.iife.min.js"
cp "$tmp/package/dist/uPlot.min.css" "$dest/uPlot.min.css"
cp "$tmp/package/LICENSE" "$dest/LICENSE"
echo "vendored uPlot $UPLOT_VERSION into ${dest#"$root"/}"
