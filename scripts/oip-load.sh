# Sourced by scripts/bench-inference.sh and scripts/gpu-run.sh: one wrk run of
# scripts/oip.lua against a function's Open Inference Protocol v2 infer endpoint.
#   oip_row SERVER NAME CONNECTIONS SECONDS  ->  "NAME req/s p50 p99 [Non-2xx ...]"
# $WRK (default: wrk) and $WRK_THREADS (default: 2) choose the load generator.
oip_row() {
  local out
  out=$("${WRK:-wrk}" -t"${WRK_THREADS:-2}" -c"$3" -d"$4s" --latency \
    -H "Authorization: Bearer ${QUIVER_TOKEN:-}" \
    -s "$(dirname "${BASH_SOURCE[0]}")/oip.lua" "$1/v2/tenants/default/models/$2/infer")
  echo "$2 $(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1=="50%" {print $2}') $(echo "$out" | awk '$1=="99%" {print $2}') $(echo "$out" | grep -o 'Non-2xx.*' || true)"
}
