#!/usr/bin/env bash
# profile-decide.sh — instructions per decide, counted by callgrind.
#
#   scripts/profile-decide.sh [--requests N] [--warmup W] [--top K] [--profiles P]
#                             [--rules DIR] [--segments DIR] [--tag NAME]
#                             [--dlog] [--all-threads]
#
# Wall-clock figures on a shared 2-core machine swing by ±20% from one
# minute to the next; instruction counts do not.  This runs the release
# server under valgrind's callgrind with one worker on the reference
# workload (freshly imported 1M profiles, 500 campaigns), sends N decides
# (web/home_banner, limit 3, fixed random seed) over one keep-alive
# connection, and prints the instructions executed inside the request
# dispatcher per decide plus the K most expensive functions (inclusive).
# Kernel time (sockets, page faults) is not counted: compare builds with
# it, quote throughput from scripts/bench.sh.
#
# --warmup W sends W decides first and zeroes the counts after them
# (callgrind_control -z): the per-thread memories (the audience index's
# group values, caches) are then filled as on a server that has been
# running, instead of growing inside the measured requests.
# --rules DIR uses the campaign files of another generated workload (e.g.
# gen_workload.py --campaigns 2000 --audiences) instead of the reference
# 500; --segments DIR loads segment files (scripts/gen_segments.py) and
# waits until the builder has filled them; --profiles P uses a workload of
# P profiles (generated once into bench-out/workload-P); --tag NAME keeps
# the run's files in bench-out/profile-NAME.
# PROFILE_VALGRIND_OPTS adds callgrind options: --cache-sim=yes counts the
# simulated cache misses too (callgrind_annotate on the kept callgrind.out
# shows them per function: D1mr, DLmr ...).
# --dlog runs with the decision log at 100% sampling (decision_log_sample
# = 1) and waits until its writer has written every decide; --all-threads
# counts every thread of the server (the log's writer, the store's syncer,
# the event loop), not only the dispatcher, from the end of the warmup on:
# the way to see what the log costs in all, e.g. the ratio of
#   --warmup 300 --all-threads --dlog   to   --warmup 300 --all-threads
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${PROMOD_SHARED:-$ROOT/../shared}
N=1500
WARM=0
TOP=25
PROFILES=1000000
BIN=${PROFILE_BIN:-./build/promod}
RULES=
SEGS=
TAG=
DLOG=0
ALL=0
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) N=$2; shift 2 ;;
    --top) TOP=$2; shift 2 ;;
    --warmup) WARM=$2; shift 2 ;;
    --profiles) PROFILES=$2; shift 2 ;;
    --rules) RULES=$2; shift 2 ;;
    --segments) SEGS=$2; shift 2 ;;
    --tag) TAG=-$2; shift 2 ;;
    --dlog) DLOG=1; shift ;;
    --all-threads) ALL=1; shift ;;
    *) echo "usage: $0 [--requests N] [--top K] [--profiles P] [--rules DIR] [--segments DIR] [--tag NAME]" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
[ -n "${PROFILE_NO_BUILD:-}" ] || bash scripts/setup.sh >/dev/null
[ -n "${PROFILE_NO_BUILD:-}" ] || PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
WL=$ROOT/bench-out/workload-$PROFILES
if [ ! -f "$WL/customers.txt" ]; then
  python3 "$SHARED/bench/gen_workload.py" "$WL" --profiles "$PROFILES" >/dev/null
fi
OUT=$ROOT/bench-out/profile$TAG
rm -rf "$OUT"
mkdir -p "$OUT/rules" "$OUT/plugins" "$OUT/segments"
cp -r plugins/. "$OUT/plugins/"
cp -r "${RULES:-$WL}/rules/." "$OUT/rules/"
[ -z "$SEGS" ] || cp "$SEGS"/*.lua "$OUT/segments/"
# the imported (and segment-filled) store is made once per workload and
# segment set, and copied for each run (a run's decides write caps into it)
BASE=$ROOT/bench-out/profile-data-$PROFILES${SEGS:+-$(basename "$SEGS")}
if [ ! -f "$BASE/.done" ]; then
  rm -rf "$BASE"
  "$BIN" import profiles "$WL/profiles.ndjson" --data "$BASE" >/dev/null
  FILLING=1
fi
PORT=${PROFILE_PORT:-18383}
cat > "$OUT/promod.lua" <<CFG
return { listen = "127.0.0.1:$PORT", data_dir = "$OUT/data", rules_dir = "$OUT/rules",
  plugins_dir = "$OUT/plugins", segments_dir = "$OUT/segments", log_level = "warn",
  map_size_mb = 8192, threads = 1, decision_log_sample = $DLOG }
CFG
if [ -n "$SEGS" ] && [ -n "${FILLING:-}" ]; then
  # the builder fills new segments in the background: let a native server
  # fill them all (valgrind would take an hour), then profile on that data
  sed "s|$OUT/data|$BASE|" "$OUT/promod.lua" > "$OUT/fill.lua"
  "$BIN" serve -c "$OUT/fill.lua" 2>"$OUT/fill.log" &
  FILL=$!
  trap 'kill $FILL 2>/dev/null || true' EXIT
  want=$(ls "$OUT/segments" | wc -l)
  for _ in $(seq 1 3600); do
    ready=$(curl -fs "http://127.0.0.1:$PORT/api/v1/segments" 2>/dev/null | python3 -c \
      'import json,sys; print(sum(s["state"] == "ready" for s in json.load(sys.stdin)["segments"]))' \
      2>/dev/null || echo 0)
    [ "$ready" -ge "$want" ] && break
    sleep 1
  done
  kill $FILL; wait $FILL 2>/dev/null || true
  trap - EXIT
fi
touch "$BASE/.done"
cp -r "$BASE" "$OUT/data"
COLLECT=--toggle-collect=dispatch
[ "$ALL" = 1 ] && COLLECT=--collect-atstart=yes
# shellcheck disable=SC2086 # PROFILE_VALGRIND_OPTS: more callgrind options, e.g. --cache-sim=yes
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" "$COLLECT" ${PROFILE_VALGRIND_OPTS:-} \
  "$BIN" serve -c "$OUT/promod.lua" 2>"$OUT/valgrind.log" &
VG=$!
trap 'kill $VG 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
send() { # count seed
python3 - "$PORT" "$1" "$WL/customers.txt" "$2" <<'PY'
import http.client, random, sys
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ids = open(path).read().split()
random.seed(int(sys.argv[4]))
c = http.client.HTTPConnection('127.0.0.1', port)
offers = 0
for _ in range(n):
    body = ('{"customer_id":"%s","channel":"web","placement":"home_banner",'
            '"context":{"country":"FR","device":"mobile"},"limit":3}' % random.choice(ids))
    c.request('POST', '/api/v1/decide', body, {'Content-Type': 'application/json'})
    r = c.getresponse(); d = r.read()
    if r.status != 200: sys.exit('decide answered %d: %s' % (r.status, d[:200]))
    offers += d.count(b'"campaign_id"')
print('decides %d, offers served %d' % (n, offers))
PY
}
if [ "$WARM" -gt 0 ]; then
  send "$WARM" 11 >/dev/null
  callgrind_control -z "$VG" >/dev/null
fi
send "$N" 7
if [ "$DLOG" = 1 ]; then # the writer's work belongs to the decides it logs
  for _ in $(seq 1 600); do
    w=$(curl -fs "http://127.0.0.1:$PORT/metrics" | awk '$1 == "promod_decision_log_written_total" {print $2}')
    [ "${w:-0}" -ge $((WARM + N)) ] && break
    sleep 0.2
  done
  echo "decision log: ${w:-0} of $((WARM + N)) decides written"
fi
kill $VG; wait $VG 2>/dev/null || true
trap - EXIT
TOTAL=$(callgrind_annotate "$OUT/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
if [ "$ALL" = 1 ]; then
  python3 -c "print('instructions per decide (all threads, after the warmup): %.1f k' % ($TOTAL / $N / 1000))"
else
  python3 -c "print('instructions per decide (inside dispatch): %.1f k' % ($TOTAL / $N / 1000))"
fi
# the worker thread alone: the count above also holds what other threads
# (the outbox's timer, the segment sweep) ran while a request was being
# dispatched, which follows valgrind's wall time (+-2 k on a loaded machine)
WORKER=$(callgrind_annotate --inclusive=yes --threshold=100 "$OUT/callgrind.out" 2>/dev/null |
  awk '/[: ]worker_main / && !w {gsub(",","",$1); w = $1} END {print w}')
[ -z "$WORKER" ] || python3 -c "print('worker thread per decide: %.1f k' % ($WORKER / $N / 1000))"
echo "most expensive functions (inclusive, per decide):"
callgrind_annotate --inclusive=yes "$OUT/callgrind.out" 2>/dev/null |
  sed -nE 's/^ *([0-9,]+) \( *[0-9.]+%\)  (.*)$/\1 \2/p' | tr -d ',' |
  awk -v n="$N" '{fn = $2; sub(/^.*:/, "", fn); lib = $3; gsub(/[][]/, "", lib); sub(/^.*\//, "", lib);
                  printf "%10.1f k  %s (%s)\n", $1 / n / 1000, fn, lib}' |
  grep -v -E "^ .*(clone|start_thread|event_base|worker_main|PROGRAM|0x0)" | head -"$TOP"
