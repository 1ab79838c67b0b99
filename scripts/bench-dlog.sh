#!/usr/bin/env bash
# bench-dlog.sh — what the decision log costs decide, and how fast a replay
# runs, on the reference workload (../shared/bench: 1M profiles, 500
# campaigns) with a release build and wrk on loopback.
#
#   scripts/bench-dlog.sh [--profiles N] [--duration S] [--rounds R] [--connections C] [--out DIR]
#
# Decide throughput (web/home_banner, limit 3, caps on) with the log off
# (decision_log_sample = 0) and on at 100% sampling (= 1), the two servers
# run in turn on the same data, R rounds in the order off-on, on-off, ...
# (so a drift of the machine's speed weighs on both alike); each round's
# ratio on/off and the median ratio are printed, with the server's CPU
# time per decide (steadier than req/s on a shared machine), the main
# store's write-lock waits per decide (promod_store_write_lock_wait_*:
# cap reservations waiting for another writer), the log's drops and the
# CPU per decide of the log's writer thread (the task named dlog-writer;
# builds before it was named print 0), of the worker threads (named
# worker-N) and of the stores' syncer threads (sync-<dir>; builds before
# they were named print 0 for both).  Then `promod replay` (the rules as they are against themselves:
# every decide is run twice) over everything the "on" runs logged, which
# prints replayed decisions per second.  Load (/proc/loadavg) and CPU steal
# (/proc/stat) over the run are printed last: quote them with the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${PROMOD_SHARED:-$ROOT/../shared}
if [ ! -d "$SHARED" ]; then
  SHARED=$(cd "$(git rev-parse --path-format=absolute --git-common-dir)/../.." && pwd)/shared
fi
PROFILES=1000000
DURATION=10
ROUNDS=3
CONNS=32
OUT=$ROOT/bench-out
while [ $# -gt 0 ]; do
  case "$1" in
    --profiles) PROFILES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--profiles N] [--duration S] [--rounds R] [--connections C] [--out DIR]" >&2
       exit 2 ;;
  esac
done

bash scripts/setup.sh >/dev/null
if [ -z "${BENCH_BIN:-}" ]; then
  PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
fi
BIN=${BENCH_BIN:-$ROOT/build/promod} # BENCH_BIN: another build to measure (before/after)
WL=$OUT/workload-$PROFILES
mkdir -p "$OUT"
if [ ! -f "$WL/customers.txt" ]; then
  echo "== generating the reference workload ($PROFILES profiles, 500 campaigns)"
  python3 "$SHARED/bench/gen_workload.py" "$WL" --profiles "$PROFILES" >/dev/null
fi

# a free port (other servers may be running on this machine)
PORT=${BENCH_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
DATA=$OUT/dlog-data
RUN=$OUT/dlog-run
rm -rf "$DATA" "$RUN"
mkdir -p "$RUN/rules" "$RUN/plugins"
cp -r "$ROOT/plugins/." "$RUN/plugins/"
cp -r "$WL/rules/." "$RUN/rules/"
echo "== offline import of $PROFILES profiles"
"$BIN" import profiles "$WL/profiles.ndjson" --data "$DATA" >/dev/null
# every run starts from the store as imported (the log, $DATA/dlog, is kept
# for the replay below): with one store for all runs, the campaigns' daily
# total caps got spent as the runs went on, and later runs stepped over
# more capped candidates than earlier ones — a drift across the rounds
# larger than the log's cost
cp "$DATA/data.mdb" "$OUT/dlog-data.base.mdb"

for s in 0 1; do
  cat > "$RUN/promod-$s.lua" <<CFG
return {
  listen = "127.0.0.1:$PORT", data_dir = "$DATA", rules_dir = "$RUN/rules",
  plugins_dir = "$RUN/plugins", log_level = "warn", map_size_mb = 16384,
  decision_log_sample = $s, decision_log_retention_days = 30,
}
CFG
done

steal() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
read -r ST0 TOT0 < <(steal)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

SERVER_PID=
start_server() { # sample
  cp "$OUT/dlog-data.base.mdb" "$DATA/data.mdb"
  rm -f "$DATA/lock.mdb"
  "$BIN" serve -c "$RUN/promod-$1.lua" 2>>"$OUT/dlog-server.log" &
  SERVER_PID=$!
  for _ in $(seq 1 400); do
    kill -0 "$SERVER_PID" 2>/dev/null || break # ours died: not someone else's server on the port
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server did not start; see $OUT/dlog-server.log" >&2
  exit 1
}
stop_server() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap stop_server EXIT
metric() { curl -fs "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
sys_ticks() { awk '{print $15}' "/proc/$SERVER_PID/stat"; }
minflt() { awk '{print $10}' "/proc/$SERVER_PID/stat"; }
writer_ticks() { # the decision log's writer thread (named dlog-writer), user + system
  class_ticks 'dlog-writer'
}
class_ticks() { # PATTERN: user + system ticks of the server's threads whose name matches
  for t in /proc/"$SERVER_PID"/task/*; do
    case "$(cat "$t/comm" 2>/dev/null)" in $1) awk '{print $14 + $15}' "$t/stat" ;; esac
  done | awk '{s += $1} END {print s + 0}'
}
REF_SCRIPT=$SHARED/bench/decide.wrk.lua
run() { # sample round -> "rps cpu_us_per_decide dropped"
  start_server "$1"
  CUSTOMERS=$WL/customers.txt CHANNEL=web PLACEMENT=home_banner DECIDE_SCRIPT=$REF_SCRIPT \
    wrk -t1 -c"$CONNS" -d2s -s "$REF_SCRIPT" "http://127.0.0.1:$PORT" >/dev/null 2>&1 || true
  local t0 t1 f=$OUT/wrk-dlog-$1-$2.txt
  t0=$(cpu_ticks); s0=$(sys_ticks); f0=$(minflt); w0=$(writer_ticks); k0=$(class_ticks 'worker*'); y0=$(class_ticks 'sync-*')
  CUSTOMERS=$WL/customers.txt CHANNEL=web PLACEMENT=home_banner DECIDE_SCRIPT=$REF_SCRIPT \
    wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$REF_SCRIPT" "http://127.0.0.1:$PORT" >"$f" 2>&1 || true
  t1=$(cpu_ticks); s1=$(sys_ticks); f1=$(minflt); w1=$(writer_ticks); k1=$(class_ticks 'worker*'); y1=$(class_ticks 'sync-*')
  local rps n dropped
  rps=$(awk '/Requests\/sec/ {print $2}' "$f")
  n=$(awk '/requests in/ {print $1}' "$f")
  dropped=$(metric promod_decision_log_dropped_total)
  waits=$(metric promod_store_write_lock_waits_total)
  waitsec=$(metric promod_store_write_lock_wait_seconds_total)
  stop_server
  python3 -c "n = max(1, $n + 0); hz = $(getconf CLK_TCK); print('%s %.1f %s %.1f %.2f %.1f %.2f %.1f %.1f %.1f' % ('$rps', ($t1 - $t0) * 1e6 / hz / n, '$dropped', 1000.0 * ${waits:-0} / n, 1e6 * ${waitsec:-0} / n, ($s1 - $s0) * 1e6 / hz / n, ($f1 - $f0) / n, ($w1 - $w0) * 1e6 / hz / n, ($k1 - $k0) * 1e6 / hz / n, ($y1 - $y0) * 1e6 / hz / n))"
}

echo "== decide, decision log off (sample 0) and on (sample 1), $ROUNDS interleaved rounds of ${DURATION}s"
RATIOS=()
CPURATIOS=()
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then
    read -r OFF OFFCPU _ OFFW OFFWUS OFFSYS OFFPF _ OFFWK OFFSY < <(run 0 "$r")
    read -r ON ONCPU DROP ONW ONWUS ONSYS ONPF ONWR ONWK ONSY < <(run 1 "$r")
  else
    read -r ON ONCPU DROP ONW ONWUS ONSYS ONPF ONWR ONWK ONSY < <(run 1 "$r")
    read -r OFF OFFCPU _ OFFW OFFWUS OFFSYS OFFPF _ OFFWK OFFSY < <(run 0 "$r")
  fi
  RATIO=$(python3 -c "print('%.3f' % ($ON / $OFF))")
  CPURATIO=$(python3 -c "print('%.3f' % ($OFFCPU / max(0.001, $ONCPU)))")
  RATIOS+=("$RATIO")
  CPURATIOS+=("$CPURATIO")
  printf "round %d: off %8.0f/s   on %8.0f/s   on/off %s\n" "$r" "$OFF" "$ON" "$RATIO"
  printf "   per decide, off / on: server cpu %s / %s us (of it kernel %s / %s us), page faults %s / %s, store write-lock waits %s / %s per 1000 decides, %s / %s us waited; %s entries dropped; the log's writer thread %s us\n" \
    "$OFFCPU" "$ONCPU" "$OFFSYS" "$ONSYS" "$OFFPF" "$ONPF" "$OFFW" "$ONW" "$OFFWUS" "$ONWUS" "$DROP" "$ONWR"
  printf "   of the server cpu per decide, off / on: worker threads %s / %s us, the stores' syncer threads (sync-*) %s / %s us\n" \
    "$OFFWK" "$ONWK" "$OFFSY" "$ONSY"
done
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "median on/off decide rate ratio: $(printf '%s\n' "${RATIOS[@]}" | median) (target >= 0.9)"
echo "median off/on server cpu per decide ratio: $(printf '%s\n' "${CPURATIOS[@]}" | median)"

echo "== promod replay over the logged decides (the rule set against itself)"
"$BIN" replay -c "$RUN/promod-1.lua" --from 0 --json --show 0 > "$OUT/dlog-replay.json" 2>>"$OUT/dlog-server.log"
python3 - "$OUT/dlog-replay.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("replayed %d decides (each on both rule sets) in %.1f s: %.0f decides/s, changed %d, drift %d"
      % (r["decisions"], r["seconds"], r["decisions_per_second"], r["changed"], r["drift"]))
if r["decisions_per_second"]:
    print("1,000,000 logged decides would take %.1f min" % (1e6 / r["decisions_per_second"] / 60))
PY
read -r ST1 TOT1 < <(steal)
echo "load before: $LOAD0   after: $(cut -d' ' -f1-3 /proc/loadavg)   steal over the run: $(python3 -c "print('%.1f%%' % (100 * ($ST1 - $ST0) / max(1, $TOT1 - $TOT0)))")"
