#!/usr/bin/env bash
# The Open Inference Protocol's binary tensor data extension vs JSON, same model,
# same rows, one run (release build, wrk): fraud-score on ROWS rows a request
# (default 1000), inputs and outputs both JSON, or both binary. Reports request
# bytes, req/s and p50/p99; two rounds, interleaved.
# Needs wrk (apt).  usage: scripts/bench-oip-binary.sh [rows] [seconds] [connections]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
rows=${1:-1000}; secs=${2:-10}; conns=${3:-8}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }
bench_setup
"$Q" serve --listen 127.0.0.1:18099 --data-dir "$data/q" --max-body 64MiB >/dev/null 2>&1 &
pids+=($!)
sleep 1
export QUIVER_SERVER=http://127.0.0.1:18099
use_token "$data/q"
"$Q" models push functions/fraud-score/model/fraud.onnx --name fraud-model --version 1.0.0 >/dev/null
"$Q" deploy functions/fraud-score >/dev/null
# The two bodies, from the same seeded rows.
hlen=$(python3 - "$data" "$rows" <<'PY'
import json, random, struct, sys
d, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
cols = {
    "log_amount": ("FP32", [rng.uniform(0, 8) for _ in range(n)], "<f"),
    "hour_of_day": ("INT64", [rng.randrange(24) for _ in range(n)], "<q"),
    "merchant_z": ("FP64", [rng.uniform(-2, 2) for _ in range(n)], "<d"),
    "merchant_known": ("BOOL", [rng.random() < 0.5 for _ in range(n)], "<?"),
}
plain = {"inputs": [{"name": k, "shape": [n], "datatype": dt, "data": v}
                    for k, (dt, v, _) in cols.items()]}
open(f"{d}/json.body", "w").write(json.dumps(plain))
raw = [struct.pack(f"<{n}{fmt[1]}", *v) for (_, v, fmt) in cols.values()]
header = {"inputs": [{"name": k, "shape": [n], "datatype": dt,
                      "parameters": {"binary_data_size": len(b)}}
                     for (k, (dt, _, _)), b in zip(cols.items(), raw)],
          "parameters": {"binary_data_output": True}}
h = json.dumps(header).encode()
open(f"{d}/binary.body", "wb").write(h + b"".join(raw))
print(len(h))
PY
)
url=http://127.0.0.1:18099/v2/tenants/default/models/fraud-score/infer
# Both answer 200 (and the same scores) before anything is timed.
curl -sf -H "$AUTH" -H 'content-type: application/json' --data-binary @"$data/json.body" "$url" -o "$data/json.out"
curl -sf -H "$AUTH" -H 'content-type: application/octet-stream' \
  -H "inference-header-content-length: $hlen" --data-binary @"$data/binary.body" "$url" -o "$data/binary.out"
python3 - "$data" "$hlen" <<'PY'
import json, struct, sys
d = sys.argv[1]
j = json.load(open(f"{d}/json.out"))
score = next(o for o in j["outputs"] if o["name"] == "score")["data"]
raw = open(f"{d}/binary.out", "rb").read()
# The answer's own header length: the JSON object is the prefix that parses.
dec = json.JSONDecoder()
head, end = dec.raw_decode(raw.decode("latin-1"))
at = end
for o in head["outputs"]:
    size = o["parameters"]["binary_data_size"]
    if o["name"] == "score":
        got = struct.unpack(f"<{size // 8}d", raw[at:at + size])
    at += size
assert len(got) == len(score) and max(abs(a - b) for a, b in zip(got, score)) < 1e-12
print(f"checked: binary and JSON answers carry the same {len(score)} scores")
PY
echo "encoding rows request-bytes response-bytes req/s p50 p99 ($conns connections, ${secs}s)"
for round in 1 2; do
  for enc in json binary; do
    h=""; [ "$enc" = binary ] && h=$hlen
    out=$(BODY="$data/$enc.body" HLEN="$h" wrk -t2 -c"$conns" -d"${secs}s" --latency \
      -H "Authorization: Bearer $QUIVER_TOKEN" -s scripts/oip-body.lua "$url")
    echo "$enc $rows $(stat -c %s "$data/$enc.body") $(stat -c %s "$data/$enc.out") \
$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1=="50%" {print $2}') \
$(echo "$out" | awk '$1=="99%" {print $2}') $(echo "$out" | grep -o 'Non-2xx.*' || true) (round $round)"
  done
done
