#!/usr/bin/env bash
# soak.sh — the server under mixed decide traffic while every hostile script
# of issue 13 rotates through rules/ (in a hook and at file load) and
# POST /api/v1/rules/validate.  Bounded: 10 minutes by default.
#
#   scripts/soak.sh [--minutes M | --seconds S] [--port P] [--out DIR]
#
# Traffic: wrk (1 thread, 4 connections) sends dry-run decides for the demo
# profiles on the web channel; a prober asks /healthz every 100 ms on a
# fresh connection and records its latency, on the ops port (ops_port: the
# thread that never runs Lua, where probes belong) and on the main port.  Hostile scripts (gsub
# recursion, the xpcall wedge, a backtracking pattern, a memory hog, a log
# flood, writes to p/ctx/a shared library, Lua stack overflow, recursion
# through sort and __tostring, a returned table whose metatable never
# returns) are each written as a campaign whose hook runs the script when
# the request says "attack" — sent by the rotation loop itself, so the
# ordinary traffic meets the hostile campaigns without paying their
# budgets on every request — then as a file whose top level runs it, then
# posted to /api/v1/rules/validate.
#
# Prints, at the end: crashes (the server process died; it is restarted to
# go on — must be 0), hangs (an attack or validate request unanswered after
# 60 s, or SIGTERM not stopping the server within 20 s — must be 0), the
# attack/validate answers, /healthz p50/p99/max and p99 per minute for both
# ports (target on the ops port: p99 < 50 ms in every minute), and the load
# and CPU steal seen during the run.
# Exits 1 when crashes or hangs are not 0.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_TOTAL=600
PORT=${SOAK_PORT:-18481}
OPS_PORT=${SOAK_OPS_PORT:-$((PORT + 1))}
OUT=$ROOT/bench-out/soak
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) SECONDS_TOTAL=$(( $2 * 60 )); shift 2 ;;
    --seconds) SECONDS_TOTAL=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--minutes M | --seconds S] [--port P] [--out DIR]" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh >/dev/null
PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
BIN=$ROOT/build/promod
URL=http://127.0.0.1:$PORT
OPS_URL=http://127.0.0.1:$OPS_PORT
rm -rf "$OUT"
RUN=$OUT/run
mkdir -p "$RUN/rules/lib" "$RUN/plugins"
cp -r plugins/. "$RUN/plugins/"
cp -r rules/. "$RUN/rules/"
cat > "$RUN/rules/lib/greet.lua" <<'LUA'
local M = {}
function M.hello(name) return 'Hello ' .. tostring(name) end
return M
LUA
cat > "$RUN/rules/neighbour.lua" <<'LUA'
local greet = require 'greet'
return { id = 'neighbour', channels = { 'web' }, priority = 5,
  variants = { { id = 'A', content = { t = 'Hi {{first_name|there}}' } } },
  eligible = function(p, ctx)
    return greet.hello(p.first_name) ~= 'PWNED' and ctx.channel == 'web', 'steered'
  end }
LUA
"$BIN" import profiles scripts/demo/profiles.ndjson --data "$RUN/data" >/dev/null
head -c 2000000 scripts/demo/profiles.ndjson | python3 -c '
import json, sys
ids = []
for line in sys.stdin:
    try: ids.append(json.loads(line)["id"])
    except Exception: pass
open(sys.argv[1], "w").write("\n".join(ids[:2000]))' "$RUN/customers.txt"
cat > "$RUN/promod.lua" <<CFG
return { listen = "127.0.0.1:$PORT", data_dir = "$RUN/data", rules_dir = "$RUN/rules",
  plugins_dir = "$RUN/plugins", segments_dir = "$RUN/segments", models_dir = "$RUN/models",
  log_level = "warn", threads = 2, lua_memory_mb = 64,
  ops_port = $OPS_PORT }
CFG

SERVER_PID=
CRASHES=0
HANGS=0
start_server() {
  "$BIN" serve -c "$RUN/promod.lua" 2>>"$OUT/server.log" &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    curl -fs "$URL/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "server did not start; see $OUT/server.log" >&2
  return 1
}
check_alive() { # where
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    wait "$SERVER_PID" 2>/dev/null
    local st=$?
    CRASHES=$((CRASHES + 1))
    echo "CRASH during $1 (exit status $st); log tail:" | tee -a "$OUT/events.txt"
    tail -5 "$OUT/server.log" | tee -a "$OUT/events.txt"
    start_server || exit 1
  fi
}
stop_server() {
  [ -z "$SERVER_PID" ] && return
  kill "$SERVER_PID" 2>/dev/null
  for _ in $(seq 1 200); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    HANGS=$((HANGS + 1))
    echo "HANG: SIGTERM did not stop the server in 20 s" | tee -a "$OUT/events.txt"
    kill -9 "$SERVER_PID" 2>/dev/null
  fi
  wait "$SERVER_PID" 2>/dev/null
  SERVER_PID=
}
cleanup() {
  [ -n "${WRK_PID:-}" ] && kill "$WRK_PID" 2>/dev/null
  [ -n "${PROBE_PID:-}" ] && kill "$PROBE_PID" 2>/dev/null
  stop_server
}
trap cleanup EXIT
start_server || exit 1
STAT0=$(awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $9}' /proc/stat)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- ordinary traffic -------------------------------------------------
cat > "$OUT/decide.wrk.lua" <<LUA
local ids = {}
for line in io.lines("$RUN/customers.txt") do ids[#ids + 1] = line end
math.randomseed(7)
request = function()
  local body = '{"customer_id":"' .. ids[math.random(#ids)] .. '","channel":"web",'
    .. '"limit":3,"dry_run":true,"context":{"country":"FR"}}'
  return wrk.format("POST", "/api/v1/decide", { ["Content-Type"] = "application/json" }, body)
end
LUA
wrk -t1 -c4 -d"${SECONDS_TOTAL}s" -s "$OUT/decide.wrk.lua" "$URL" > "$OUT/wrk.txt" 2>&1 &
WRK_PID=$!
# the prober: /healthz on the ops port (the probe target: its thread never
# runs Lua) and on the main port (served by the workers, for comparison)
( end=$(( $(date +%s) + SECONDS_TOTAL ))
  while [ "$(date +%s)" -lt "$end" ]; do
    t=$(date +%s.%N)
    r=$(curl -s -o /dev/null --max-time 30 -w '%{http_code} %{time_total}' "$OPS_URL/healthz") || r="000 30"
    echo "ops $r $t"
    t=$(date +%s.%N)
    r=$(curl -s -o /dev/null --max-time 30 -w '%{http_code} %{time_total}' "$URL/healthz") || r="000 30"
    echo "main $r $t"
    sleep 0.1
  done > "$OUT/healthz.txt" ) &
PROBE_PID=$!

# ---- the hostile scripts ----------------------------------------------
# name|code (runs in a hook when ctx.attack is set, and at a file's top level)
HOSTILE=$(cat <<'LIST'
segfault|local function f(s) return (string.gsub(s, '.', f)) end f('abc')
wedge|xpcall(function() while true do end end, function() while true do end end)
slow_pattern|local x = ('a'):rep(20000):find('^.-.-.-b')
memory_hog|HOG[#HOG + 1] = ('x'):rep(20 * 1024 * 1024 - 64) .. #HOG
log_flood|for i = 1, 20000 do print('flood', i) end
steer|local g = require 'greet' g.hello = function() return 'PWNED' end if P then P.first_name = 'PWNED' end
lua_stack|local function f() return f() + 1 end f()
sort_recursion|local function f(a, b) table.sort({ 3, 2, 1 }, f) return a < b end table.sort({ 3, 2, 1 }, f)
tostring_recursion|local t = setmetatable({}, { __tostring = function(s) return string.format('%s', s) end }) tostring(t)
LIST
)
ATTACKS=0; ATTACKS_OK=0; VALIDATES=0; VALIDATES_OK=0; LOADS=0; LOADS_REPORTED=0
attack() { # name
  local code
  code=$(curl -s -o "$OUT/attack.json" --max-time 60 -w '%{http_code}' -H 'Content-Type: application/json' \
    -d '{"customer_id":"c00000001","channel":"web","limit":5,"dry_run":true,"explain":true,"context":{"attack":true}}' \
    "$URL/api/v1/decide")
  ATTACKS=$((ATTACKS + 1))
  if [ "$code" = 200 ]; then ATTACKS_OK=$((ATTACKS_OK + 1))
  elif [ "$code" = 000 ]; then HANGS=$((HANGS + 1)); echo "HANG: attack $1 unanswered" | tee -a "$OUT/events.txt"
  else echo "attack $1 answered $code" >> "$OUT/events.txt"; fi
}
step() { echo "$(date +%s.%N) $*" >> "$OUT/steps.txt"; }
deadline=$(( $(date +%s) + SECONDS_TOTAL - 5 ))
rounds=0
while [ "$(date +%s)" -lt "$deadline" ]; do
  while IFS='|' read -r name code; do
    [ "$(date +%s)" -ge "$deadline" ] && break
    # 1. in a hook
    cat > "$RUN/rules/zz_hostile.lua" <<LUA
local HOG, P = {}, nil
return { id = 'hostile-$name', channels = { 'web' }, priority = 90,
  variants = { { id = 'A', content = { t = 'hostile' } } },
  eligible = function(p, ctx)
    if not ctx.attack then return false, 'no attack' end
    P = p
    $code
    return false, 'survived'
  end }
LUA
    sleep 1
    step "hook:$name"
    attack "$name"; attack "$name"
    check_alive "hook:$name"
    rm -f "$RUN/rules/zz_hostile.lua"
    # 2. at file load (the top level runs in the reloader)
    printf 'local HOG, P = {}, nil\n%s\nreturn { id = "load-%s", channels = { "web" },\n  variants = { { id = "A", content = {} } }, eligible = function() return false end }\n' \
      "$code" "$name" > "$RUN/rules/zz_load.lua"
    step "load:$name"
    LOADS=$((LOADS + 1))
    for _ in $(seq 1 100); do
      if curl -s --max-time 60 "$URL/api/v1/rules" | grep -q 'zz_load.lua'; then
        LOADS_REPORTED=$((LOADS_REPORTED + 1)); break
      fi
      sleep 0.2
    done
    check_alive "load:$name"
    rm -f "$RUN/rules/zz_load.lua"
    # 3. through validate
    body=$(python3 -c 'import json,sys; print(json.dumps({"script": "local HOG, P = {}, nil\n" + sys.argv[1] +
      "\nreturn { channels = { \"web\" }, variants = { { id = \"A\", content = {} } }, eligible = function() return true end }",
      "name": "hostile.lua"}))' "$code")
    step "validate:$name"
    vcode=$(curl -s -o "$OUT/validate.json" --max-time 60 -w '%{http_code}' -H 'Content-Type: application/json' \
      -d "$body" "$URL/api/v1/rules/validate")
    VALIDATES=$((VALIDATES + 1))
    case "$vcode" in
      200|422) VALIDATES_OK=$((VALIDATES_OK + 1)) ;;
      000) HANGS=$((HANGS + 1)); echo "HANG: validate $name unanswered" | tee -a "$OUT/events.txt" ;;
      *) echo "validate $name answered $vcode" >> "$OUT/events.txt" ;;
    esac
    check_alive "validate:$name"
  done <<< "$HOSTILE"
  # a returned table whose __index never returns (the reloader reads it)
  step "load:metatable"
  echo "return setmetatable({}, { __index = function() while true do end end })" > "$RUN/rules/zz_meta.lua"
  sleep 2
  check_alive "load:metatable"
  rm -f "$RUN/rules/zz_meta.lua"
  rounds=$((rounds + 1))
done
wait "$WRK_PID" 2>/dev/null
WRK_PID=
wait "$PROBE_PID" 2>/dev/null
PROBE_PID=
check_alive "the end"
stop_server

echo "== soak: $SECONDS_TOTAL s, $rounds rounds of $(echo "$HOSTILE" | wc -l) hostile scripts (+ a metatable trap)"
echo "traffic:   $(awk '/requests in/ {print $1, "decides,"} /Non-2xx/ {print $NF, "non-2xx"} /Requests\/sec/ {print $2, "req/s"}' "$OUT/wrk.txt" | tr '\n' ' ')"
echo "attacks:   $ATTACKS_OK / $ATTACKS answered 200; files loaded: $LOADS_REPORTED / $LOADS reported in GET /api/v1/rules; validate: $VALIDATES_OK / $VALIDATES answered"
python3 - "$OUT/healthz.txt" "$OUT/steps.txt" <<'PY'
import bisect, sys
samples = {"ops": [], "main": []}
bad = {"ops": 0, "main": 0}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) != 4 or parts[0] not in samples: continue
    if parts[1] != '200': bad[parts[0]] += 1
    samples[parts[0]].append((float(parts[2]) * 1000, float(parts[3])))
steps = []
try:
    for line in open(sys.argv[2]):
        t, what = line.split(None, 1)
        steps.append((float(t), what.strip()))
except OSError:
    pass
times = [t for t, _ in steps]
def q(lat, f):
    return lat[min(len(lat) - 1, int(f * len(lat)))]
for port, label in (("ops", "ops port (probe target)"), ("main", "main port (workers)")):
    ss = samples[port]
    lat = sorted(s[0] for s in ss)
    if not lat:
        print("healthz %s: no samples" % label); continue
    print("healthz %s: %d probes, %d not 200; p50 %.1f ms, p99 %.1f ms, max %.1f ms"
          % (label, len(lat), bad[port], q(lat, 0.5), q(lat, 0.99), lat[-1])
          + (" (target p99 < 50 ms)" if port == "ops" else ""))
    t0 = min(t for _, t in ss)
    mins = {}
    for ms, t in ss:
        mins.setdefault(int((t - t0) // 60), []).append(ms)
    print("  per minute p99 (ms): " + " ".join(
        "%d:%.1f" % (m + 1, q(sorted(v), 0.99)) for m, v in sorted(mins.items())))
    worst = max(q(sorted(v), 0.99) for v in mins.values())
    print("  worst minute p99: %.1f ms" % worst)
    for ms, t in sorted(ss, reverse=True)[:3]:
        i = bisect.bisect_right(times, t) - 1
        print("  slowest: %.1f ms during %s" % (ms, steps[i][1] if i >= 0 else "start"))
PY
STAT1=$(awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $9}' /proc/stat)
echo "crashes:   $CRASHES"
echo "hangs:     $HANGS"
echo "machine:   loadavg at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg); steal $(echo "$STAT0 $STAT1" | awk '{d = $3 - $1; printf "%.1f%%", (d > 0 ? 100 * ($4 - $2) / d : 0)}') of CPU time during the run (/proc/stat)"
echo "(events: $OUT/events.txt, server log: $OUT/server.log)"
[ "$CRASHES" = 0 ] && [ "$HANGS" = 0 ]
