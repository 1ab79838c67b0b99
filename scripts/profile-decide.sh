#!/usr/bin/env bash
# profile-decide.sh — instructions per decide, counted by callgrind.
#
#   scripts/profile-decide.sh [--requests N] [--top K]
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
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${PROMOD_SHARED:-$ROOT/../shared}
N=1500
TOP=25
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) N=$2; shift 2 ;;
    --top) TOP=$2; shift 2 ;;
    *) echo "usage: $0 [--requests N] [--top K]" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
bash scripts/setup.sh >/dev/null
PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
WL=$ROOT/bench-out/workload-1000000
if [ ! -f "$WL/customers.txt" ]; then
  python3 "$SHARED/bench/gen_workload.py" "$WL" >/dev/null
fi
OUT=$ROOT/bench-out/profile
rm -rf "$OUT"
mkdir -p "$OUT/rules" "$OUT/plugins"
cp -r plugins/. "$OUT/plugins/"
cp -r "$WL/rules/." "$OUT/rules/"
./build/promod import profiles "$WL/profiles.ndjson" --data "$OUT/data" >/dev/null
PORT=${PROFILE_PORT:-18383}
cat > "$OUT/promod.lua" <<CFG
return { listen = "127.0.0.1:$PORT", data_dir = "$OUT/data", rules_dir = "$OUT/rules",
  plugins_dir = "$OUT/plugins", log_level = "warn", map_size_mb = 8192, threads = 1 }
CFG
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" --toggle-collect=dispatch \
  ./build/promod serve -c "$OUT/promod.lua" 2>"$OUT/valgrind.log" &
VG=$!
trap 'kill $VG 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
python3 - "$PORT" "$N" "$WL/customers.txt" <<'PY'
import http.client, random, sys
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ids = open(path).read().split()
random.seed(7)
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
kill $VG; wait $VG 2>/dev/null || true
trap - EXIT
TOTAL=$(callgrind_annotate "$OUT/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
python3 -c "print('instructions per decide (inside dispatch): %.1f k' % ($TOTAL / $N / 1000))"
echo "most expensive functions (inclusive, per decide):"
callgrind_annotate --inclusive=yes "$OUT/callgrind.out" 2>/dev/null |
  sed -nE 's/^ *([0-9,]+) \( *[0-9.]+%\)  (.*)$/\1 \2/p' | tr -d ',' |
  awk -v n="$N" '{fn = $2; sub(/^.*:/, "", fn); lib = $3; gsub(/[][]/, "", lib); sub(/^.*\//, "", lib);
                  printf "%10.1f k  %s (%s)\n", $1 / n / 1000, fn, lib}' |
  grep -v -E "^ .*(clone|start_thread|event_base|worker_main|PROGRAM|0x0)" | head -"$TOP"
