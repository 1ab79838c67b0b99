#!/usr/bin/env bash
# bench-segments.sh — what segments and campaign audiences cost, on the
# reference workload (../shared/bench) plus 200 generated segments
# (scripts/gen_segments.py), against a release build, wrk on loopback.
#
#   scripts/bench-segments.sh [--profiles N] [--duration S] [--connections C] [--out DIR]
#
# One sitting, one data directory, runs in this order:
#   1. no segment files:   PUT /api/v1/profiles/{id} rate; decide (500
#                          campaigns, targeting in Lua `eligible`)
#   2. 200 segments:       the time the builder takes to fill them; PUT
#                          rate; decide (same campaigns); GET .../size of
#                          every segment (curl's total time, loopback)
#   3. audiences:          decide with the 500 campaigns' targeting
#                          declared as `audience` (gen_workload.py
#                          --audiences); then 2,000 campaigns in Lua and
#                          2,000 with audiences
# and prints the ratios the issue asks about: PUT with / without
# segments, decide with segments and audiences / today's decide, decide at
# 2,000 / 500 campaigns.  Figures drift on a shared 2-core machine; the
# steal seen during the run is printed (see ../shared/bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${PROMOD_SHARED:-$ROOT/../shared}
# a worktree sits one level deeper than the main checkout
[ -d "$SHARED/bench" ] || [ -n "${PROMOD_SHARED:-}" ] || SHARED=$ROOT/../../shared
[ -f "$SHARED/bench/decide.wrk.lua" ] || { echo "no $SHARED/bench (set PROMOD_SHARED)" >&2; exit 2; }
PROFILES=1000000
DURATION=10
CONNS=32
OUT=$ROOT/bench-out
while [ $# -gt 0 ]; do
  case "$1" in
    --profiles) PROFILES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--profiles N] [--duration S] [--connections C] [--out DIR]" >&2; exit 2 ;;
  esac
done

PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
BIN=$ROOT/build/promod
WL=$OUT/workload-$PROFILES
mkdir -p "$OUT"
gen() { # dir args...
  local d=$1; shift
  [ -f "$d/customers.txt" ] || python3 "$SHARED/bench/gen_workload.py" "$d" "$@" >/dev/null
}
echo "== workloads (generated once, kept in $OUT)"
gen "$WL" --profiles "$PROFILES"
gen "$OUT/rules-aud-500" --profiles 1 --audiences
gen "$OUT/rules-2000" --profiles 1 --campaigns 2000
gen "$OUT/rules-aud-2000" --profiles 1 --campaigns 2000 --audiences
[ -d "$OUT/segments-200" ] || python3 scripts/gen_segments.py "$OUT/segments-200" >/dev/null

PORT=${BENCH_PORT:-18183}
DATA=$OUT/seg-data
RUN=$OUT/seg-run
rm -rf "$DATA" "$RUN"
mkdir -p "$RUN/rules" "$RUN/plugins" "$RUN/segments"
cp -r "$ROOT/plugins/." "$RUN/plugins/"
use_rules() { rm -rf "$RUN/rules"; mkdir -p "$RUN/rules"; cp -r "$1/rules/." "$RUN/rules/"; }
use_rules "$WL"

echo "== offline import of $PROFILES profiles"
"$BIN" import profiles "$WL/profiles.ndjson" --data "$DATA" > "$OUT/seg-import.json"

cat > "$RUN/promod.lua" <<CFG
return {
  listen = "127.0.0.1:$PORT", data_dir = "$DATA", rules_dir = "$RUN/rules",
  plugins_dir = "$RUN/plugins", segments_dir = "$RUN/segments", log_level = "warn",
  map_size_mb = 16384,
  ${BENCH_CONFIG:-}
}
CFG

SERVER_PID=
start_server() {
  "$BIN" serve -c "$RUN/promod.lua" 2>>"$OUT/seg-server.log" &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start; see $OUT/seg-server.log" >&2
  exit 1
}
stop_server() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap stop_server EXIT

steal() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
STEAL0=$(steal)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
run_wrk() { # name args... -> req/s; server CPU us per request in seg-cpu-NAME.txt
  local name=$1; shift
  local t0 t1 n
  t0=$(cpu_ticks)
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" > "$OUT/seg-wrk-$name.txt" 2>&1 || true
  t1=$(cpu_ticks)
  n=$(awk '/requests in/ {print $1}' "$OUT/seg-wrk-$name.txt")
  python3 -c "print('%.1f' % (($t1 - $t0) * 1e6 / $(getconf CLK_TCK) / max(1, ${n:-0})))" > "$OUT/seg-cpu-$name.txt"
  awk '/Requests\/sec/ {print $2}' "$OUT/seg-wrk-$name.txt"
}
decide() { # name
  CUSTOMERS=$WL/customers.txt CHANNEL=web PLACEMENT=home_banner \
    run_wrk "$1" -s "$SHARED/bench/decide.wrk.lua" "http://127.0.0.1:$PORT"
}
put() { # name
  CUSTOMERS=$WL/customers.txt METHOD=PUT run_wrk "$1" -s "$ROOT/scripts/profile-write.wrk.lua" \
    "http://127.0.0.1:$PORT"
}
wait_rules() { # campaigns expected
  for _ in $(seq 1 600); do
    n=$(curl -fs "http://127.0.0.1:$PORT/api/v1/rules" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["campaigns"])' 2>/dev/null || echo 0)
    [ "$n" -ge "$1" ] && return 0
    sleep 0.5
  done
  echo "rules never reached $1 campaigns" >&2
  exit 1
}
segs_ready() { # -> number of segments with state "ready"
  curl -fs "http://127.0.0.1:$PORT/api/v1/segments" |
    python3 -c 'import json,sys; print(sum(s["state"] == "ready" for s in json.load(sys.stdin)["segments"]))'
}

echo "== 1. no segments"
start_server
wait_rules 500
decide warm0 >/dev/null
W0=$(put put-noseg)
D0=$(decide decide-noseg)
stop_server

echo "== 2. 200 segments: fill, writes, decide, sizes"
cp "$OUT/segments-200/"*.lua "$RUN/segments/"
T0=$(date +%s.%N)
start_server
for _ in $(seq 1 7200); do
  [ "$(segs_ready)" -ge 200 ] && break
  sleep 0.5
done
T1=$(date +%s.%N)
READY=$(segs_ready)
BUILD_S=$(python3 -c "print('%.0f' % ($T1 - $T0))")
wait_rules 500
decide warm1 >/dev/null
W1=$(put put-seg)
D1=$(decide decide-seg)
for f in "$RUN/segments/"*.lua; do
  id=$(basename "$f" .lua)
  curl -fs -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$PORT/api/v1/segments/$id/size"
done > "$OUT/seg-size-times.txt"
SIZES=$(python3 -c '
import sys; t = sorted(float(x) * 1000 for x in open(sys.argv[1]))
print("median %.2f ms, p90 %.2f ms, max %.2f ms over %d segments" % (t[len(t) // 2], t[len(t) * 9 // 10], t[-1], len(t)))' "$OUT/seg-size-times.txt")
curl -fs "http://127.0.0.1:$PORT/api/v1/segments" | python3 -c '
import json,sys; s = json.load(sys.stdin)["segments"]; n = sorted(x["size"] for x in s)
print("segment sizes: min %d, median %d, max %d" % (n[0], n[len(n) // 2], n[-1]))' > "$OUT/seg-sizes.txt"
stop_server

echo "== 3. audiences; 2,000 campaigns"
use_rules "$OUT/rules-aud-500"
start_server
wait_rules 500
decide warm2 >/dev/null
DA500=$(decide decide-aud500)
stop_server
use_rules "$OUT/rules-2000"
start_server
wait_rules 2000
decide warm3 >/dev/null
DL2000=$(decide decide-lua2000)
stop_server
use_rules "$OUT/rules-aud-2000"
start_server
wait_rules 2000
decide warm4 >/dev/null
DA2000=$(decide decide-aud2000)
stop_server
trap - EXIT

STEAL1=$(steal)
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
cpu() { cat "$OUT/seg-cpu-$1.txt"; }
errs() { # non-2xx answers of a run (0 when wrk printed none)
  awk '/Non-2xx/ {n = $NF} /errors\(non-2xx/ {n = $NF} END {print n + 0}' "$OUT/seg-wrk-$1.txt"
}
echo
echo "== results ($PROFILES profiles, wrk -t1 -c$CONNS -d${DURATION}s, $(nproc) cores)"
echo "steal during the run: $(python3 -c "a='$STEAL0'.split(); b='$STEAL1'.split(); print('%.0f%%' % (100.0 * (int(b[0]) - int(a[0])) / max(1, int(b[1]) - int(a[1]))))")"
echo "segments filled by the builder: $READY of 200 ready after ${BUILD_S} s"
printf '%-52s %10s %12s %8s\n' run req/s cpu_us/req non-2xx
printf '%-52s %10s %12s %8s\n' "PUT profile, no segments" "$W0" "$(cpu put-noseg)" "$(errs put-noseg)"
printf '%-52s %10s %12s %8s\n' "PUT profile, 200 segments" "$W1" "$(cpu put-seg)" "$(errs put-seg)"
printf '%-52s %10s %12s %8s\n' "decide, 500 campaigns (Lua), no segments" "$D0" "$(cpu decide-noseg)" "$(errs decide-noseg)"
printf '%-52s %10s %12s %8s\n' "decide, 500 campaigns (Lua), 200 segments" "$D1" "$(cpu decide-seg)" "$(errs decide-seg)"
printf '%-52s %10s %12s %8s\n' "decide, 500 campaigns (audiences), 200 segments" "$DA500" "$(cpu decide-aud500)" "$(errs decide-aud500)"
printf '%-52s %10s %12s %8s\n' "decide, 2,000 campaigns (Lua), 200 segments" "$DL2000" "$(cpu decide-lua2000)" "$(errs decide-lua2000)"
printf '%-52s %10s %12s %8s\n' "decide, 2,000 campaigns (audiences), 200 segments" "$DA2000" "$(cpu decide-aud2000)" "$(errs decide-aud2000)"
echo "PUT with 200 segments / without:                 $(ratio "$W1" "$W0")"
echo "decide with segments + audiences / today's:      $(ratio "$DA500" "$D0")"
echo "decide 2,000 / 500 campaigns, Lua:               $(ratio "$DL2000" "$D1")"
echo "decide 2,000 / 500 campaigns, audiences:         $(ratio "$DA2000" "$DA500")"
echo "GET /api/v1/segments/{id}/size (curl, loopback): $SIZES"
cat "$OUT/seg-sizes.txt"
echo "offline import: $(cat "$OUT/seg-import.json")"
