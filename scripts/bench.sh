#!/usr/bin/env bash
# bench.sh — the reference workload (../shared/bench: 1M profiles, 500
# campaigns) against a release build, with wrk on loopback.
#
#   scripts/bench.sh [--profiles N] [--duration S] [--connections C] [--out DIR]
#
# BENCH_CONFIG adds entries to the server's config table, e.g.
#   BENCH_CONFIG='sync_interval_ms = 5000' scripts/bench.sh
#
# Prints, for the same server in the same run: GET /healthz throughput and
# latency, then POST /api/v1/decide (web/home_banner, limit 3) with caps on,
# as a dry run (no reservation committed) and with the campaigns' caps
# removed, each as a ratio to healthz plus p50/p90/p99/p99.9 latency; the offline
# import rate; the time to reload all 500 campaign files; and decide while
# the web console's dashboard polls (one console at its 5 s interval, and
# ten at once), interleaved with runs without it, plus the server time one
# poll costs.  Figures drift on a shared 2-core machine; ratios hold (see
# ../shared/bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${PROMOD_SHARED:-$ROOT/../shared}
if [ ! -d "$SHARED" ]; then # a git worktree elsewhere: beside the checkout that owns the repository
  SHARED=$(cd "$(git rev-parse --path-format=absolute --git-common-dir)/../.." && pwd)/shared
fi
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

bash scripts/setup.sh >/dev/null
PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
BIN=$ROOT/build/promod
WL=$OUT/workload-$PROFILES
mkdir -p "$OUT"
if [ ! -f "$WL/customers.txt" ]; then
  echo "== generating the reference workload ($PROFILES profiles, 500 campaigns)"
  python3 "$SHARED/bench/gen_workload.py" "$WL" --profiles "$PROFILES" >/dev/null
fi

PORT=${BENCH_PORT:-18181}
DATA=$OUT/data
RUN=$OUT/run
rm -rf "$DATA" "$RUN"
mkdir -p "$RUN/rules" "$RUN/plugins"
cp -r "$ROOT/plugins/." "$RUN/plugins/"
cp -r "$WL/rules/." "$RUN/rules/"

echo "== offline import of $PROFILES profiles"
"$BIN" import profiles "$WL/profiles.ndjson" --data "$DATA" | tee "$OUT/import.json"

cat > "$RUN/promod.lua" <<CFG
return {
  listen = "127.0.0.1:$PORT", data_dir = "$DATA", rules_dir = "$RUN/rules",
  plugins_dir = "$RUN/plugins", log_level = "warn", map_size_mb = 8192,
  ${BENCH_CONFIG:-}
}
CFG

SERVER_PID=
start_server() {
  "$BIN" serve -c "$RUN/promod.lua" 2>>"$OUT/server.log" &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server did not start; see $OUT/server.log" >&2
  exit 1
}
stop_server() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap stop_server EXIT

# wrk: 1 thread (the server gets the other core), $CONNS connections.
# Besides req/s, the server's own CPU time per request (utime+stime from
# /proc, in microseconds) is recorded: it does not depend on what else the
# machine is doing, so it is the steadier figure on a shared machine.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
run_wrk() { # name path-or-script...
  local name=$1; shift
  local t0 t1
  t0=$(cpu_ticks)
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" > "$OUT/wrk-$name.txt" 2>&1 || true
  t1=$(cpu_ticks)
  local rps n
  rps=$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-$name.txt")
  n=$(awk '/requests in/ {print $1}' "$OUT/wrk-$name.txt")
  python3 -c "print('%.1f' % (($t1 - $t0) * 1e6 / $(getconf CLK_TCK) / max(1, $n)))" > "$OUT/cpu-$name.txt"
  echo "$rps"
}
cpu() { cat "$OUT/cpu-$1.txt"; }
REF_SCRIPT=$SHARED/bench/decide.wrk.lua
decide_wrk() { # name [wrk script]
  CUSTOMERS=$WL/customers.txt CHANNEL=web PLACEMENT=home_banner DECIDE_SCRIPT=$REF_SCRIPT \
    run_wrk "$1" -s "${2:-$REF_SCRIPT}" "http://127.0.0.1:$PORT"
}
# percentiles in microseconds: decide.wrk.lua prints "p99_us N"; plain wrk
# --latency prints "99%  2.34ms" (p99.9 only from the decide script)
pct() {
  awk -v k="$2" '
    $1 == k { print $2; exit }
    k ~ /^p[0-9]+_us$/ && $1 == substr(k, 2, length(k) - 4) "%" {
      v = $2; m = 1 # "us"
      if (v ~ /ms$/) m = 1000; else if (v ~ /[0-9]s$/) m = 1000000
      sub(/[a-z]+$/, "", v); printf "%.0f\n", v * m; exit
    }' "$OUT/wrk-$1.txt"
}
# The server's own time per decide (dispatch to reply, no queueing): the
# request-duration histogram of /metrics, before and after a run.
decide_hist() { # file
  curl -fs "http://127.0.0.1:$PORT/metrics" |
    grep 'promod_http_request_duration_seconds_bucket{route="/api/v1/decide",status="200"' > "$1" || true
}
server_pct() { # before after -> "p50 / p99 / p99.9" in microseconds (histogram_quantile)
  python3 - "$1" "$2" <<'PY'
import re, sys
def load(f):
    d = {}
    for line in open(f):
        m = re.search(r'le="([^"]+)"\} (\d+)', line)
        if m: d[m.group(1)] = int(m.group(2))
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
bk = sorted(((float(k) if k != '+Inf' else float('inf'), b[k] - a.get(k, 0)) for k in b))
total = bk[-1][1] if bk else 0
out = []
for q in (0.5, 0.99, 0.999):
    want, prev_le, prev_n = q * total, 0.0, 0
    for le, n in bk:
        if n >= want:
            if le == float('inf'):
                out.append('>%g' % (prev_le * 1e6)); break
            f = (want - prev_n) / max(1, n - prev_n)
            out.append('%.0f' % ((prev_le + (le - prev_le) * f) * 1e6)); break
        prev_le, prev_n = le, n
print(' / '.join(out) if total else 'n/a')
PY
}
errors() { awk '/errors\(non-2xx/ {print $NF}' "$OUT/wrk-$1.txt"; }

start_server
echo "== warm-up"
decide_wrk warmup >/dev/null
echo "== GET /healthz"
H=$(run_wrk healthz "http://127.0.0.1:$PORT/healthz")
echo "== POST /api/v1/decide, caps on"
decide_hist "$OUT/hist0.txt"
D=$(decide_wrk decide-caps)
decide_hist "$OUT/hist1.txt"
SERVER_PCT=$(server_pct "$OUT/hist0.txt" "$OUT/hist1.txt")
echo "== POST /api/v1/decide, caps on, dry_run (everything but the reservation's write)"
DD=$(decide_wrk decide-dry "$ROOT/scripts/decide-dry.wrk.lua")

# The web console's dashboard as a browser runs it (web/js/pages/
# dashboard.js): every tick /metrics and the outbox summary, every 3rd
# tick today's dashboard, every 60th (5 minutes at 5 s) the 30-day
# dashboard and the by-day report.  curl opens a connection per request
# where a browser keeps one alive, so this costs the server a little more
# than a real console.
console_poller() { # tick_s
  local n=0 today u="http://127.0.0.1:$PORT"
  today=$(date -u +%F)
  while :; do
    curl -fs -o /dev/null "$u/metrics" || true
    curl -fs -o /dev/null "$u/api/v1/outbox" || true
    if [ $((n % 3)) -eq 0 ]; then
      curl -fs -o /dev/null "$u/api/v1/analytics/dashboard?from=$today&to=$today&top=1" || true
    fi
    if [ $((n % 60)) -eq 0 ]; then
      curl -fs -o /dev/null "$u/api/v1/analytics/dashboard" || true
      curl -fs -o /dev/null -H 'Content-Type: application/json' -d \
        '{"dimensions":["day"],"metrics":["impressions","clicks","conversions"]}' \
        "$u/api/v1/analytics/reports" || true
    fi
    n=$((n + 1))
    sleep "$1"
  done
}
# The server's own time per request of a route, in microseconds: the mean
# from its request-duration histogram (dispatch to reply) over 50 requests
# one after another.  An upper bound of the CPU it costs: on a shared
# machine it includes time the thread waited for a core.
route_sum_count() { # route
  curl -fs "http://127.0.0.1:$PORT/metrics" | awk -v r="route=\"$1\"" '
    index($1, r) && $1 ~ /^promod_http_request_duration_seconds_sum/ { s += $2 }
    index($1, r) && $1 ~ /^promod_http_request_duration_seconds_count/ { c += $2 }
    END { printf "%.9f %d\n", s, c }'
}
req_server_us() { # route path [curl args...]
  local route=$1 p=$2 a b
  shift 2
  a=$(route_sum_count "$route")
  for _ in $(seq 1 50); do curl -fs -o /dev/null "$@" "http://127.0.0.1:$PORT$p"; done
  b=$(route_sum_count "$route")
  python3 -c "a, b = '$a'.split(), '$b'.split(); print('%.0f' % (1e6 * (float(b[0]) - float(a[0])) / max(1, int(b[1]) - int(a[1]))))"
}
POLLER_PID=
poller_start() { console_poller "$1" & POLLER_PID=$!; }
poller_stop() { [ -n "$POLLER_PID" ] && kill "$POLLER_PID" 2>/dev/null && wait "$POLLER_PID" 2>/dev/null || true; POLLER_PID=; }
trap 'poller_stop; stop_server' EXIT
echo "== events for the dashboard to read (100,000 over the 500 campaigns, last 30 days)"
awk -v now="$(date +%s)" 'BEGIN {
  srand(7);
  for (i = 0; i < 100000; i++) {
    r = rand(); k = int(rand() * 500); v = (rand() < 0.5) ? "A" : "B";
    t = (r < 0.8) ? "impression" : (r < 0.95) ? "click" : "conversion";
    rev = (t == "conversion") ? sprintf(",\"revenue\":%.2f", rand() * 100) : "";
    printf "{\"type\":\"%s\",\"customer_id\":\"console%06d\",\"campaign_id\":\"bench-%03d\",\"variant\":\"%s\",\"channel\":\"web\",\"ts\":%d%s}\n", t, i % 20000, k, v, now - int(rand() * 30 * 86400), rev;
  }
}' > "$OUT/console-events.ndjson"
curl -fsS -o /dev/null -X POST -H 'Content-Type: application/x-ndjson' \
  --data-binary @"$OUT/console-events.ndjson" "http://127.0.0.1:$PORT/api/v1/events"
echo "== POST /api/v1/decide with and without the console polling (interleaved)"
# (the poller starts with a 30-day refresh, as a console does when opened)
DC0=$(decide_wrk decide-console0)
poller_start 5
DC1=$(decide_wrk decide-console1)
poller_stop
poller_start 0.5 # ten consoles: ten times the requests
DC10=$(decide_wrk decide-console10)
poller_stop
DC0B=$(decide_wrk decide-console0b)
# what each of the console's requests costs the server, and so one open
# console a minute: 12 ticks, 4 of today's dashboard, a fifth of the
# 30-day refresh
TODAY=$(date -u +%F)
RQ='{"dimensions":["day"],"metrics":["impressions","clicks","conversions"]}'
DPATH=/api/v1/analytics/dashboard
C_MET=$(req_server_us /metrics /metrics)
C_TODAY=$(req_server_us $DPATH "$DPATH?from=$TODAY&to=$TODAY&top=1")
C_OUT=$(req_server_us /api/v1/outbox /api/v1/outbox)
C_DASH=$(req_server_us $DPATH $DPATH)
C_REP=$(req_server_us /api/v1/analytics/reports /api/v1/analytics/reports -H 'Content-Type: application/json' -d "$RQ")
C_MIN=$(( 12 * (C_MET + C_OUT) + 4 * C_TODAY + (C_DASH + C_REP) / 5 ))
POLL_MS="server time per request: /metrics ${C_MET} us, outbox ${C_OUT} us (every 5 s), today's dashboard"
POLL_MS+=" ${C_TODAY} us (every 15 s), 30-day dashboard ${C_DASH} us and by-day report ${C_REP} us (every 5 min)"
POLL_MS+="; one console: $(python3 -c "print('%.1f ms a minute, %.3f%% of a core' % ($C_MIN / 1000, $C_MIN / 600000))")"

echo "== reload of every campaign file (POST /api/v1/rules/reload, forced)"
RELOAD_MS=$(curl -fs -XPOST "http://127.0.0.1:$PORT/api/v1/rules/reload" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["build_ms"],1))')
T0=$(date +%s%N)
touch "$RUN"/rules/bench/*.lua
GEN0=$(curl -fs "http://127.0.0.1:$PORT/api/v1/rules" | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])')
stop_server

echo "== POST /api/v1/decide, caps off (same campaigns without caps)"
sed -i -E 's/^  caps = .*$//' "$RUN"/rules/bench/*.lua
start_server
decide_wrk warmup2 >/dev/null
D0=$(decide_wrk decide-nocaps)
stop_server
trap - EXIT

ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
echo
echo "== results (wrk -t1 -c$CONNS -d${DURATION}s, server threads = cores, $(nproc) cores)"
FMT='%-34s %10s %6s %8s %8s %8s %8s %7s %9s\n'
row() { # label req/s wrk-run-name; "-" where wrk printed no figure
  local p50 p90 p99 p999 err
  p50=$(pct "$3" p50_us); p90=$(pct "$3" p90_us); p99=$(pct "$3" p99_us)
  p999=$(pct "$3" p99.9_us); err=$(errors "$3")
  printf "$FMT" "$1" "$2" "$(ratio "$2" "$H")" "${p50:--}" "${p90:--}" "${p99:--}" "${p999:--}" \
    "${err:--}" "$(cpu "$3")"
}
printf "$FMT" endpoint req/s ratio p50_us p90_us p99_us p99.9_us errors cpu_us/req
row "GET /healthz" "$H" healthz
row "POST /api/v1/decide (caps on)" "$D" decide-caps
row "POST /api/v1/decide (caps off)" "$D0" decide-nocaps
row "POST /api/v1/decide (dry_run)" "$DD" decide-dry
row "decide, no console" "$DC0" decide-console0
row "decide, 1 console polling / 5 s" "$DC1" decide-console1
row "decide, 10 consoles (poll / 0.5 s)" "$DC10" decide-console10
row "decide, no console (again)" "$DC0B" decide-console0b
echo "caps on / caps off throughput: $(ratio "$D" "$D0")"
echo "console: decide throughput with 1 console / without: $(ratio "$DC1" "$(python3 -c "print(($DC0 + $DC0B) / 2)")"), with 10: $(ratio "$DC10" "$(python3 -c "print(($DC0 + $DC0B) / 2)")"); $POLL_MS"
echo "server time per decide, caps on (p50 / p99 / p99.9 us, from /metrics; no queueing): $SERVER_PCT"
echo "reload of all campaign files: ${RELOAD_MS} ms (generation build, forced)"
echo "offline import: $(cat "$OUT/import.json")"
