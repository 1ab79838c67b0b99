#!/usr/bin/env bash
# bench-segments.sh — what segments and campaign audiences cost, on the
# reference workload (../shared/bench) plus 200 generated segments
# (scripts/gen_segments.py), against a release build, wrk on loopback.
#
#   scripts/bench-segments.sh [--profiles N] [--duration S] [--connections C]
#                             [--rounds R] [--part all|audiences] [--out DIR]
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
#                          2,000 with audiences; then 500 and 2,000 with
#                          audiences and declared scores (the same
#                          campaigns, their Lua `score` hooks rewritten as
#                          `score = { base, per, boost }` by
#                          scripts/declare_scores.py)
# and prints the ratios the issue asks about: PUT with / without
# segments, decide with segments and audiences / today's decide, decide at
# 2,000 / 500 campaigns.  Figures drift on a shared 2-core machine; the
# steal seen during the run is printed (see ../shared/bench/README.md).
# --rounds R runs step 3's four audience set-ups (500 and 2,000 campaigns,
# Lua and declared scores) R times, interleaved (500, 2,000, 500 declared,
# 2,000 declared; again ...), and prints each round's 2,000 / 500 ratios
# and their median: one run per row cannot tell 0.74 from 0.82 on this
# machine.  --part audiences runs only that (after the import and the
# segments' fill).  Each row also gives the CPU per decide of the request
# workers alone (threads worker-N) beside the whole server's.
#
#   scripts/bench-segments.sh --instructions [--profiles N]
#
# instead counts the instructions per decide under callgrind
# (scripts/profile-decide.sh: one worker, 3,000 warm-up decides, then 1,000
# counted ones, web / home_banner, limit 3) for the four set-ups the
# targets compare — 500 campaigns in Lua without segments (today's decide),
# the same with 200 segments, 500 and 2,000 campaigns with audiences and
# 200 segments, and those two again with declared scores — on a workload of N profiles (default 100,000: the fill
# of 200 segments runs natively first), and prints the ratios.  The counts
# are the worker thread's (other threads' timers, which run while a request
# is dispatched, are left out: they follow valgrind's wall time).  They do
# not depend on the machine's load, so they compare builds and set-ups
# where wall-clock rates on this machine cannot.
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
INSTR=
ROUNDS=1
PART=all
while [ $# -gt 0 ]; do
  case "$1" in
    --instructions) INSTR=1; [ "$PROFILES" = 1000000 ] && PROFILES=100000; shift ;;
    --profiles) PROFILES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --part) PART=$2; shift 2 ;;
    *) echo "usage: $0 [--instructions] [--profiles N] [--duration S] [--connections C] [--rounds R] [--part all|audiences] [--out DIR]" >&2; exit 2 ;;
  esac
done

case "$PART" in all|audiences) ;; *) echo "--part: all or audiences" >&2; exit 2 ;; esac
. "$ROOT/scripts/bench-lib.sh"

PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
BIN=$ROOT/build/promod

WL=$OUT/workload-$PROFILES
mkdir -p "$OUT"
gen() { # dir args...
  local d=$1; shift
  [ -f "$d/customers.txt" ] || python3 "$SHARED/bench/gen_workload.py" "$d" "$@" >/dev/null
}

if [ -n "$INSTR" ]; then
  gen "$OUT/rules-aud-500" --profiles 1 --audiences
  gen "$OUT/rules-aud-2000" --profiles 1 --campaigns 2000 --audiences
  [ -d "$OUT/segments-200" ] || python3 scripts/gen_segments.py "$OUT/segments-200" >/dev/null
  python3 scripts/declare_scores.py "$OUT/rules-aud-500" "$OUT/rules-decl-500" >/dev/null
  python3 scripts/declare_scores.py "$OUT/rules-aud-2000" "$OUT/rules-decl-2000" >/dev/null
  icount() { # tag profile-decide args... -> instructions per decide (k)
    local tag=$1; shift
    PROFILE_NO_BUILD=1 PROMOD_SHARED=$SHARED bash scripts/profile-decide.sh --profiles "$PROFILES" \
      --warmup 3000 --requests 1000 --top 40 --tag "seg-$tag" "$@" > "$OUT/seg-instr-$tag.txt"
    awk '/worker thread per decide/ {print $(NF-1)}' "$OUT/seg-instr-$tag.txt"
  }
  I0=$(icount lua500)
  I1=$(icount lua500-seg --segments "$OUT/segments-200")
  I2=$(icount aud500 --rules "$OUT/rules-aud-500" --segments "$OUT/segments-200")
  I3=$(icount aud2000 --rules "$OUT/rules-aud-2000" --segments "$OUT/segments-200")
  I4=$(icount decl500 --rules "$OUT/rules-decl-500" --segments "$OUT/segments-200")
  I5=$(icount decl2000 --rules "$OUT/rules-decl-2000" --segments "$OUT/segments-200")
  echo "== instructions per decide of the worker thread (callgrind, $PROFILES profiles, web / home_banner, limit 3)"
  printf '%-52s %10s\n' "500 campaigns (Lua), no segments" "${I0}k"
  printf '%-52s %10s\n' "500 campaigns (Lua), 200 segments" "${I1}k"
  printf '%-52s %10s\n' "500 campaigns (audiences), 200 segments" "${I2}k"
  printf '%-52s %10s\n' "2,000 campaigns (audiences), 200 segments" "${I3}k"
  printf '%-52s %10s\n' "500 campaigns (audiences, declared scores)" "${I4}k"
  printf '%-52s %10s\n' "2,000 campaigns (audiences, declared scores)" "${I5}k"
  python3 -c "
i0, i1, i2, i3, i4, i5 = $I0, $I1, $I2, $I3, $I4, $I5
print('decide with segments + audiences / today\'s (rate = 1 / instructions): %.2f' % (i0 / i2))
print('decide 2,000 / 500 campaigns, audiences, Lua scores:                %.2f' % (i2 / i3))
print('decide 2,000 / 500 campaigns, audiences, declared scores:           %.2f' % (i4 / i5))"
  echo "(per-function counts: $OUT/seg-instr-*.txt)"
  exit 0
fi
echo "== workloads (generated once, kept in $OUT)"
gen "$WL" --profiles "$PROFILES"
gen "$OUT/rules-aud-500" --profiles 1 --audiences
gen "$OUT/rules-2000" --profiles 1 --campaigns 2000
gen "$OUT/rules-aud-2000" --profiles 1 --campaigns 2000 --audiences
[ -d "$OUT/segments-200" ] || python3 scripts/gen_segments.py "$OUT/segments-200" >/dev/null
python3 scripts/declare_scores.py "$OUT/rules-aud-500" "$OUT/rules-decl-500" >/dev/null
python3 scripts/declare_scores.py "$OUT/rules-aud-2000" "$OUT/rules-decl-2000" >/dev/null

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
  local t0 t1 w0 w1 n
  t0=$(cpu_ticks); w0=$(bench_thread_ticks worker-)
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" > "$OUT/seg-wrk-$name.txt" 2>&1 || true
  t1=$(cpu_ticks); w1=$(bench_thread_ticks worker-)
  n=$(awk '/requests in/ {print $1}' "$OUT/seg-wrk-$name.txt")
  python3 -c "print('%.1f' % (($t1 - $t0) * 1e6 / $(getconf CLK_TCK) / max(1, ${n:-0})))" > "$OUT/seg-cpu-$name.txt"
  python3 -c "print('%.1f' % (($w1 - $w0) * 1e6 / $(getconf CLK_TCK) / max(1, ${n:-0})))" > "$OUT/seg-wcpu-$name.txt"
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
share() { # -> "M of N": campaigns eligible / visited for web / home_banner, mean of 300 customers (explain)
  python3 - "$PORT" "$WL/customers.txt" <<'PY'
import http.client, json, random, sys
port, ids = int(sys.argv[1]), open(sys.argv[2]).read().split()
random.seed(3)
c = http.client.HTTPConnection('127.0.0.1', port)
elig = placed = 0
for _ in range(300):
    body = json.dumps({"customer_id": random.choice(ids), "channel": "web", "placement": "home_banner",
                       "limit": 3, "dry_run": True, "explain": True})
    c.request('POST', '/api/v1/decide', body, {'Content-Type': 'application/json'})
    x = json.loads(c.getresponse().read())["explain"]
    elig += sum(e.get("eligible") is True for e in x)
    placed += sum(e.get("reason") not in ("placement not targeted", "outside schedule") for e in x if "campaign_id" in e)
print("%.1f of %.1f" % (elig / 300, placed / 300))
PY
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

W0=- D0=- W1=- D1=- SIZES=- OVERLAPS=- DL2000=-
if [ "$PART" = all ]; then
  echo "== 1. no segments"
  start_server
  wait_rules 500
  decide warm0 >/dev/null
  W0=$(put put-noseg)
  D0=$(decide decide-noseg)
  stop_server
fi

echo "== 2. 200 segments: fill (then, with --part all: writes, decide, sizes)"
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
if [ "$PART" = all ]; then
wait_rules 500
decide warm1 >/dev/null
W1=$(put put-seg)
D1=$(decide decide-seg)
# sizes (5 rounds over every segment) and overlaps (10 pairs), over one
# keep-alive connection: the time of each answer, client side
IFS=$'\t' read -r SIZES OVERLAPS < <(python3 - "$PORT" <<'PY' | tr '\n' '\t'
import http.client, json, sys, time
c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]))
def get(path):
    t = time.perf_counter(); c.request('GET', path); r = c.getresponse(); r.read()
    if r.status != 200: sys.exit('%s answered %d' % (path, r.status))
    return (time.perf_counter() - t) * 1000
c.request('GET', '/api/v1/segments'); ids = [s["id"] for s in json.loads(c.getresponse().read())["segments"]]
t = sorted(get('/api/v1/segments/%s/size' % i) for _ in range(5) for i in ids)
print("median %.2f ms, p99 %.2f ms, max %.2f ms over %d answers" % (t[len(t) // 2], t[len(t) * 99 // 100], t[-1], len(t)))
o = sorted(get('/api/v1/segments/%s/size?overlap=%s' % (ids[k], ids[k + 1])) for k in range(10, 110, 10))
print("min %.0f ms, median %.0f ms, max %.0f ms over %d pairs" % (o[0], o[len(o) // 2], o[-1], len(o)))
PY
) || true # read meets the end of the text without a newline
fi
curl -fs "http://127.0.0.1:$PORT/api/v1/segments" | python3 -c '
import json,sys; s = json.load(sys.stdin)["segments"]; n = sorted(x["size"] for x in s)
print("segment sizes: min %d, median %d, max %d" % (n[0], n[len(n) // 2], n[-1]))' > "$OUT/seg-sizes.txt"
stop_server

echo "== 3. audiences; 2,000 campaigns ($ROUNDS round(s), interleaved)"
# every run of step 3 starts from the store as the fill left it: the
# counters of earlier runs (campaigns' daily total caps exhausted, which the
# walk then steps over) would otherwise make a run depend on the ones before
rm -rf "$DATA.base"
cp -a "$DATA" "$DATA.base"
one() { # tag rules-dir campaigns rate-file: appends the run's req/s to rate-file
  use_rules "$2"
  rm -rf "$DATA"
  cp -a "$DATA.base" "$DATA"
  start_server
  wait_rules "$3"
  decide "warm-$1" >/dev/null
  decide "$1" >> "$4"
  [ "$1" = decide-aud500-r1 ] && share > "$OUT/seg-share-500.txt"
  [ "$1" = decide-aud2000-r1 ] && share > "$OUT/seg-share-2000.txt"
  stop_server
}
rm -f "$OUT"/seg-rate-*.txt
for r in $(seq 1 "$ROUNDS"); do
  one "decide-aud500-r$r" "$OUT/rules-aud-500" 500 "$OUT/seg-rate-aud500.txt"
  one "decide-aud2000-r$r" "$OUT/rules-aud-2000" 2000 "$OUT/seg-rate-aud2000.txt"
  one "decide-decl500-r$r" "$OUT/rules-decl-500" 500 "$OUT/seg-rate-decl500.txt"
  one "decide-decl2000-r$r" "$OUT/rules-decl-2000" 2000 "$OUT/seg-rate-decl2000.txt"
  if [ "$r" = 1 ] && [ "$PART" = all ]; then
    one decide-lua2000 "$OUT/rules-2000" 2000 "$OUT/seg-rate-lua2000.txt"
    DL2000=$(cat "$OUT/seg-rate-lua2000.txt")
  fi
done
trap - EXIT
STEAL1=$(steal)
ratio() { [ "$1" = - ] || [ "$2" = - ] && { echo -; return; }; python3 -c "print('%.2f' % ($1 / $2))"; }
cpu() { [ -f "$OUT/seg-cpu-$1.txt" ] && echo "$(cat "$OUT/seg-cpu-$1.txt") / $(cat "$OUT/seg-wcpu-$1.txt")" || echo -; }
errs() { # non-2xx answers of a run (0 when wrk printed none)
  [ -f "$OUT/seg-wrk-$1.txt" ] || { echo -; return; }
  awk '/Non-2xx/ {n = $NF} /errors\(non-2xx/ {n = $NF} END {print n + 0}' "$OUT/seg-wrk-$1.txt"
}
DA500=$(bench_median < "$OUT/seg-rate-aud500.txt")
DA2000=$(bench_median < "$OUT/seg-rate-aud2000.txt")
DD500=$(bench_median < "$OUT/seg-rate-decl500.txt")
DD2000=$(bench_median < "$OUT/seg-rate-decl2000.txt")
row() { printf '%-52s %10s %18s %8s\n' "$@"; }
echo
echo "== results ($PROFILES profiles, wrk -t1 -c$CONNS -d${DURATION}s, $(nproc) cores, $ROUNDS round(s))"
echo "steal during the run: $(python3 -c "a='$STEAL0'.split(); b='$STEAL1'.split(); print('%.0f%%' % (100.0 * (int(b[0]) - int(a[0])) / max(1, int(b[1]) - int(a[1]))))"), load now: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "segments filled by the builder: $READY of 200 ready after ${BUILD_S} s"
row run req/s "cpu_us/req all/wkr" non-2xx
row "PUT profile, no segments" "$W0" "$(cpu put-noseg)" "$(errs put-noseg)"
row "PUT profile, 200 segments" "$W1" "$(cpu put-seg)" "$(errs put-seg)"
row "decide, 500 campaigns (Lua), no segments" "$D0" "$(cpu decide-noseg)" "$(errs decide-noseg)"
row "decide, 500 campaigns (Lua), 200 segments" "$D1" "$(cpu decide-seg)" "$(errs decide-seg)"
row "decide, 2,000 campaigns (Lua), 200 segments" "$DL2000" "$(cpu decide-lua2000)" "$(errs decide-lua2000)"
for r in $(seq 1 "$ROUNDS"); do
  row "round $r: 500 campaigns (audiences), 200 segments" "$(sed -n "${r}p" "$OUT/seg-rate-aud500.txt")" "$(cpu decide-aud500-r$r)" "$(errs decide-aud500-r$r)"
  row "round $r: 2,000 campaigns (audiences)" "$(sed -n "${r}p" "$OUT/seg-rate-aud2000.txt")" "$(cpu decide-aud2000-r$r)" "$(errs decide-aud2000-r$r)"
  row "round $r: 500 (audiences, declared scores)" "$(sed -n "${r}p" "$OUT/seg-rate-decl500.txt")" "$(cpu decide-decl500-r$r)" "$(errs decide-decl500-r$r)"
  row "round $r: 2,000 (audiences, declared scores)" "$(sed -n "${r}p" "$OUT/seg-rate-decl2000.txt")" "$(cpu decide-decl2000-r$r)" "$(errs decide-decl2000-r$r)"
done
per_round() { # a b -> the rounds' ratios b/a, and their median
  paste "$OUT/seg-rate-$2.txt" "$OUT/seg-rate-$1.txt" | awk '{printf "%.2f\n", $1 / $2}' > "$OUT/seg-ratio-$2.txt"
  echo "$(tr '\n' ' ' < "$OUT/seg-ratio-$2.txt")-> median $(bench_median < "$OUT/seg-ratio-$2.txt")"
}
echo "PUT with 200 segments / without:                 $(ratio "$W1" "$W0")"
echo "decide with segments + audiences / today's:      $(ratio "$DA500" "$D0") (median of the 500 rows)"
echo "decide 2,000 / 500 campaigns, Lua:               $(ratio "$DL2000" "$D1")"
echo "decide 2,000 / 500 campaigns, audiences:         $(per_round aud500 aud2000)"
echo "decide 2,000 / 500, audiences + declared scores: $(per_round decl500 decl2000)"
echo "campaigns whose audience (and eligible) hold, of those on web / home_banner, per customer:"
echo "  500: $(cat "$OUT/seg-share-500.txt"), 2,000: $(cat "$OUT/seg-share-2000.txt")"
echo "GET /api/v1/segments/{id}/size (loopback):       $SIZES"
echo "GET .../size?overlap=other (loopback, a scan):   $OVERLAPS"
cat "$OUT/seg-sizes.txt"
echo "offline import: $(cat "$OUT/seg-import.json")"
