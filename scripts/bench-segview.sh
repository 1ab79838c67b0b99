#!/usr/bin/env bash
# bench-segview.sh — the in-memory segment view (core/engine/segbits.h) on
# the reference workload (../shared/bench, 1M profiles) with 200 generated
# segments (scripts/gen_segments.py), release build, loopback:
#
#   scripts/bench-segview.sh [--profiles N] [--requests R] [--rounds K]
#                            [--duration S] [--connections C] [--vs BIN] [--out DIR]
#
#   1. the store: offline import of N profiles, a server fills the 200
#      segments (kept in OUT/segview-data-N for later runs; remove it to
#      start again — it never touches the reference workload's files);
#   2. start-up: the view's build time, memory and customers (/metrics),
#      for every server start below;
#   3. answers, over one keep-alive connection, client-side time of each:
#      R overlaps (GET /size?overlap=b, random pairs) and R audiences
#      (POST /api/v1/targeting/audience, random any/all/exclude of 1-5
#      segments, sample 10: counted, then saved with a durable commit) and
#      the same R saved audiences counted again (GET .../audience/{id}: the
#      count alone) from the view; 10 of each with ?via=scan (the scan the
#      view replaces); 20 audiences with a 10 % holdout (every member
#      hashed) — median, p99, max;
#   4. with --vs BIN (another promod binary, e.g. main's build): PUT
#      /api/v1/profiles/{id} rate (wrk -t1 -cC -dS, scripts/profile-write.wrk.lua)
#      of BIN and of this build on the same store, interleaved K rounds
#      (BIN first in odd rounds, this build first in even ones), and the
#      ratio per round, the server's CPU per PUT, and the server's
#      anonymous memory (RssAnon) 2 s after each start: the view's whole
#      cost in memory, allocator overhead included, is the difference.
# Load average and CPU steal seen during the run are printed; on a shared
# machine compare the interleaved pairs, not runs of different sittings.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${PROMOD_SHARED:-$ROOT/../shared}
[ -d "$SHARED/bench" ] || [ -n "${PROMOD_SHARED:-}" ] || SHARED=$ROOT/../../shared
[ -f "$SHARED/bench/gen_workload.py" ] || { echo "no $SHARED/bench (set PROMOD_SHARED)" >&2; exit 2; }
PROFILES=1000000
REQUESTS=500
ROUNDS=3
DURATION=10
CONNS=32
VS=
OUT=$ROOT/bench-out
while [ $# -gt 0 ]; do
  case "$1" in
    --profiles) PROFILES=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --vs) VS=$(readlink -f "$2"); shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--profiles N] [--requests R] [--rounds K] [--duration S] [--connections C] [--vs BIN] [--out DIR]" >&2; exit 2 ;;
  esac
done
[ -z "$VS" ] || [ -x "$VS" ] || { echo "--vs: $VS is not an executable" >&2; exit 2; }

PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
BIN=$ROOT/build/promod
WL=$OUT/workload-$PROFILES
mkdir -p "$OUT"
[ -f "$WL/customers.txt" ] || python3 "$SHARED/bench/gen_workload.py" "$WL" --profiles "$PROFILES" >/dev/null
[ -d "$OUT/segments-200" ] || python3 scripts/gen_segments.py "$OUT/segments-200" >/dev/null

PORT=${BENCH_PORT:-18187}
DATA=$OUT/segview-data-$PROFILES
RUN=$OUT/segview-run
LOG=$OUT/segview-server.log
rm -rf "$RUN"
mkdir -p "$RUN/rules" "$RUN/plugins" "$RUN/segments"
cp -r "$ROOT/plugins/." "$RUN/plugins/"
cp -r "$WL/rules/." "$RUN/rules/"
cp "$OUT/segments-200/"*.lua "$RUN/segments/"
cat > "$RUN/promod.lua" <<CFG
return {
  listen = "127.0.0.1:$PORT", data_dir = "$DATA", rules_dir = "$RUN/rules",
  plugins_dir = "$RUN/plugins", segments_dir = "$RUN/segments", log_level = "warn",
  map_size_mb = 16384,
}
CFG

SERVER_PID=
start_server() { # binary
  "$1" serve -c "$RUN/promod.lua" 2>>"$LOG" &
  SERVER_PID=$!
  for _ in $(seq 1 1200); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start; see $LOG" >&2
  exit 1
}
stop_server() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap stop_server EXIT
segs_ready() {
  curl -fs "http://127.0.0.1:$PORT/api/v1/segments" |
    python3 -c 'import json,sys; print(sum(s["state"] == "ready" for s in json.load(sys.stdin)["segments"]))'
}
metric() { # name -> value
  curl -fs "http://127.0.0.1:$PORT/metrics" | awk -v n="$1" '$1 == n {print $2}'
}
view_line() {
  python3 -c "print('build %.2f s, %d customers, %.1f MB' % ($(metric promod_segments_view_build_seconds), $(metric promod_segments_view_customers), $(metric promod_segments_view_bytes) / 1048576))"
}
steal() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
STEAL0=$(steal)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

echo "== 1. store: $PROFILES profiles, 200 segments filled ($DATA)"
if [ ! -f "$DATA/.filled" ]; then
  rm -rf "$DATA"
  "$BIN" import profiles "$WL/profiles.ndjson" --data "$DATA" > "$OUT/segview-import.json"
  T0=$(date +%s.%N)
  start_server "$BIN"
  for _ in $(seq 1 14400); do
    [ "$(segs_ready)" -ge 200 ] && break
    sleep 0.5
  done
  [ "$(segs_ready)" -ge 200 ] || { echo "the 200 segments were not filled" >&2; exit 1; }
  echo "fill: $(python3 -c "print('%.0f' % ($(date +%s.%N) - $T0))") s"
  stop_server
  touch "$DATA/.filled"
fi

echo "== 2-3. start-up and answers (this build)"
start_server "$BIN"
VIEW0=$(view_line)
python3 - "$PORT" "$REQUESTS" > "$OUT/segview-answers.txt" <<'PY'
import http.client, json, random, sys, time
port, R = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection('127.0.0.1', port)
def call(m, path, body=None, want=200):
    t = time.perf_counter()
    c.request(m, path, body, {'Content-Type': 'application/json'} if body else {})
    r = c.getresponse(); data = r.read()
    ms = (time.perf_counter() - t) * 1000
    if r.status != want: sys.exit('%s answered %d: %s' % (path, r.status, data[:200]))
    return ms, json.loads(data)
_, segs = call('GET', '/api/v1/segments')
ids = [s['id'] for s in segs['segments']]
random.seed(20)
def stats(name, t, by):
    t = sorted(t)
    print('%-44s median %7.2f ms  p99 %7.2f ms  max %7.2f ms  (%d answers, counted by %s)' %
          (name, t[len(t) // 2], t[min(len(t) - 1, len(t) * 99 // 100)], t[-1], len(t), ','.join(sorted(by))))
def overlaps(n, via):
    t, by = [], set()
    for _ in range(n):
        a, b = random.sample(ids, 2)
        ms, o = call('GET', '/api/v1/segments/%s/size?overlap=%s%s' % (a, b, via))
        t.append(ms); by.add(o['counted_by'])
    return t, by
def aud_def():
    d = {}
    k = random.randint(1, 5)
    pick = random.sample(ids, k)
    if random.random() < 0.5: d['any'] = pick[:max(1, k - 2)]
    else: d['all'] = pick[:max(1, k - 2)]
    if k > 2: d['exclude'] = pick[k - 2:]
    d['sample'] = 10
    return d
saved = []
def audiences(n, via, extra={}):
    t, by = [], set()
    for _ in range(n):
        d = aud_def(); d.update(extra)
        ms, o = call('POST', '/api/v1/targeting/audience' + via, json.dumps(d), 201)
        t.append(ms); by.add(o['counted_by']); saved.append(o['id'])
    return t, by
def recount(ids):
    t, by = [], set()
    for i in ids:
        ms, o = call('GET', '/api/v1/targeting/audience/' + i)
        t.append(ms); by.add(o['counted_by'])
    return t, by
stats('overlap, view', *overlaps(R, ''))
stats('overlap, ?via=scan', *overlaps(10, '&via=scan'))
stats('audience POST (count + durable save), view', *audiences(R, ''))
stats('audience GET (count again), view', *recount(saved))
stats('audience (any/all/exclude), ?via=scan', *audiences(10, '?via=scan'))
stats('audience with 10% holdout, view', *audiences(20, '', {'holdout': 0.1}))
PY
stop_server
cat "$OUT/segview-answers.txt"
echo "view at start: $VIEW0"

if [ -n "$VS" ]; then
  echo "== 4. PUT rate: $VS vs this build, interleaved, $ROUNDS rounds"
  cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
  put() { # binary tag -> "req/s cpu_us/req" (the server's CPU: every thread, user + system)
    local t0 t1 n
    start_server "$1"
    sleep 2 # the server settles (the view is built before it listens)
    echo "$2 $(awk '/^RssAnon/ {print $2}' "/proc/$SERVER_PID/status")" >> "$OUT/segview-rss.txt"
    t0=$(cpu_ticks)
    CUSTOMERS=$WL/customers.txt METHOD=PUT wrk -t1 -c"$CONNS" -d"${DURATION}s" \
      -s "$ROOT/scripts/profile-write.wrk.lua" "http://127.0.0.1:$PORT" > "$OUT/segview-wrk-$2.txt" 2>&1 || true
    t1=$(cpu_ticks)
    [ "$1" = "$BIN" ] && view_line >> "$OUT/segview-starts.txt"
    stop_server
    n=$(awk '/requests in/ {print $1}' "$OUT/segview-wrk-$2.txt")
    echo "$(awk '/Requests\/sec/ {print $2}' "$OUT/segview-wrk-$2.txt")" \
      "$(python3 -c "print('%.0f' % (($t1 - $t0) * 1e6 / $(getconf CLK_TCK) / max(1, ${n:-0})))")"
  }
  : > "$OUT/segview-starts.txt"
  : > "$OUT/segview-rss.txt"
  printf '%-6s %12s %12s %8s %14s %14s\n' round "vs req/s" "this req/s" ratio "vs cpu_us/req" "this cpu_us/req"
  for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then read -r A CA < <(put "$VS" "vs-$r"); read -r B CB < <(put "$BIN" "this-$r")
    else read -r B CB < <(put "$BIN" "this-$r"); read -r A CA < <(put "$VS" "vs-$r"); fi
    printf '%-6s %12s %12s %8s %14s %14s\n' "$r" "$A" "$B" "$(python3 -c "print('%.2f' % ($B / $A))")" "$CA" "$CB"
  done
  echo "view at each start of this build:"
  cat "$OUT/segview-starts.txt"
  echo "anonymous memory (RssAnon) 2 s after each start, kB:"
  sort "$OUT/segview-rss.txt" | tr '\n' ' '
  echo
fi
trap - EXIT
STEAL1=$(steal)
echo "load average at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg); steal during the run: $(python3 -c "a='$STEAL0'.split(); b='$STEAL1'.split(); print('%.1f%%' % (100.0 * (int(b[0]) - int(a[0])) / max(1, int(b[1]) - int(a[1]))))")"
