-- wrk script: POST the same prepared body each time (scripts/bench-oip-binary.sh):
-- $BODY is its file; $HLEN, when set, its JSON header's length (the OIP binary
-- tensor data extension's Inference-Header-Content-Length).
wrk.method = "POST"
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
local hlen = os.getenv("HLEN")
if hlen and hlen ~= "" then
  wrk.headers["content-type"] = "application/octet-stream"
  wrk.headers["inference-header-content-length"] = hlen
else
  wrk.headers["content-type"] = "application/json"
end
