-- redeem.wrk.lua — POST /api/v1/coupons/redeem, every request a different
-- single-use code, customer and order (codes from CODES, one a line, as
-- written by scripts/bench-redeem.sh).  Use with wrk -t1: the position in
-- the list is per wrk thread.  OFFSET skips codes used by an earlier run.
-- MODE=validate: POST /api/v1/coupons/validate of the same codes instead
-- (nothing is written; the codes stay unused).  Prints the count of
-- non-2xx answers (a used-up or unknown code would be one: the run must
-- show 0).
local ffi = require "ffi"
local file = assert(os.getenv("CODES"), "CODES: file of codes, one a line")
local fh = assert(io.open(file, "rb")); local data = fh:read("*a"); fh:close()
if data:sub(-1) ~= "\n" then data = data .. "\n" end
local n, pos = 0, 1
while true do local e = data:find("\n", pos, true); if not e then break end; n = n + 1; pos = e + 1 end
local starts = ffi.new("uint32_t[?]", n + 1)
n, pos = 0, 1
while true do local e = data:find("\n", pos, true); if not e then break end; starts[n] = pos; n = n + 1; pos = e + 1 end
starts[n] = pos
local i = tonumber(os.getenv("OFFSET") or "0")
local key = os.getenv("API_KEY")
local validate = os.getenv("MODE") == "validate"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if key then wrk.headers["Authorization"] = "Bearer " .. key end
function request()
  local k = i % n
  i = i + 1
  local code = data:sub(starts[k], starts[k + 1] - 2)
  -- amounts 1.00 .. 9.99 EUR
  if validate then
    return wrk.format(nil, "/api/v1/coupons/validate", nil, string.format(
      '{"code":"%s","customer_id":"bench-%d","amount":%d.%02d,"currency":"EUR"}',
      code, i, 1 + i % 9, i % 100))
  end
  local body = string.format(
    '{"code":"%s","customer_id":"bench-%d","order_id":"order-%d","amount":%d.%02d,"currency":"EUR"}',
    code, i, i, 1 + i % 9, i % 100)
  return wrk.format(nil, "/api/v1/coupons/redeem", nil, body)
end
function done(summary, latency, requests)
  io.write(string.format("requests %d  errors(non-2xx or socket) %d\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  for _, p in ipairs({ 50, 90, 99, 99.9 }) do
    io.write(string.format("p%s_us %d\n", tostring(p), latency:percentile(p)))
  end
end
