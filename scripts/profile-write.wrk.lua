-- wrk script: PUT (or PATCH) /api/v1/profiles/{id} for random known customers,
-- with bodies shaped like the reference workload's profiles.
-- Usage: CUSTOMERS=customers.txt METHOD=PUT wrk -t1 -c32 -d10s -s profile-write.wrk.lua URL
-- METHOD=PATCH sends a small merge-patch (tier, ltv, days_since_purchase)
-- instead of the whole profile.  Ids are held as in ../shared/bench/decide.wrk.lua
-- (one string and an FFI offsets array) so wrk's own GC stays quiet.
local ffi = require "ffi"
local file = os.getenv("CUSTOMERS") or "customers.txt"
local fh = assert(io.open(file, "rb")); local data = fh:read("*a"); fh:close()
if data:sub(-1) ~= "\n" then data = data .. "\n" end
local n, pos = 0, 1
while true do local e = data:find("\n", pos, true); if not e then break end; n = n + 1; pos = e + 1 end
local starts = ffi.new("uint32_t[?]", n + 1)
n, pos = 0, 1
while true do local e = data:find("\n", pos, true); if not e then break end; starts[n] = pos; n = n + 1; pos = e + 1 end
starts[n] = pos
local method = os.getenv("METHOD") or "PUT"
local key = os.getenv("API_KEY")
local tiers = { "bronze", "bronze", "bronze", "silver", "silver", "gold", "platinum" }
local countries = { "FR", "DE", "US", "GB", "ES", "IT", "NL", "BE", "SE", "PL",
                    "BR", "MX", "CA", "JP", "IN", "AU", "CH", "AT", "PT", "IE" }
local interests = { "beach", "ski", "city", "family", "luxury", "budget", "business", "golf",
                    "food", "wine", "museums", "hiking", "cruise", "kids", "nightlife", "spa" }
local names = { "Ana", "Ben", "Chloe", "Dev", "Emma", "Femi", "Gus", "Hana" }
function setup(thread) thread:set("seed", math.random(1, 1e9)) end
function init() math.randomseed(seed or os.time()) end
wrk.method = method
wrk.headers["Content-Type"] = "application/json"
if key then wrk.headers["Authorization"] = "Bearer " .. key end
local function pick(t) return t[math.random(1, #t)] end
local function tf(p) return math.random() < p and "true" or "false" end
function request()
  local i = math.random(0, n - 1)
  local id = data:sub(starts[i], starts[i + 1] - 2)
  local body
  if method == "PATCH" then
    body = string.format('{"tier":"%s","ltv":%.2f,"days_since_purchase":%d}',
      pick(tiers), math.random() * 2000, math.random(0, 720))
  else
    body = string.format(
      '{"first_name":"%s","tier":"%s","country":"%s","age":%d,"ltv":%.2f,"days_since_purchase":%d,' ..
      '"app_user":%s,"interests":["%s","%s","%s"],"consent":{"email":%s,"sms":%s,"push":%s},' ..
      '"email":"%s@example.com"}',
      pick(names), pick(tiers), pick(countries), math.random(18, 80), math.random() * 2000,
      math.random(0, 720), tf(0.4), pick(interests), pick(interests), pick(interests),
      tf(0.7), tf(0.3), tf(0.5), id)
  end
  return wrk.format(nil, "/api/v1/profiles/" .. id, nil, body)
end
function done(summary, latency, requests)
  io.write(string.format("requests %d  errors(non-2xx or socket) %d\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("p%s_us %d\n", p, latency:percentile(p)))
  end
end
