#!/usr/bin/env bash
# bench-writemap.sh — the store's two ways of committing, side by side:
# `store_writemap = true` (MDB_WRITEMAP: a commit writes through the map)
# and `false` (a commit pwrite()s its pages), on this machine.
#
#   scripts/bench-writemap.sh [--part decide|redeem|all] [--profiles N]
#                             [--duration S] [--rounds R] [--connections C] [--out DIR]
#
# decide: the reference workload (../shared/bench: N profiles, 500
#   campaigns; web/home_banner, limit 3, caps on: every decide commits its
#   reservation without waiting for the disk), one server per mode on the
#   same data, R rounds in the order on-off, off-on, ... Printed per round:
#   decides/s, the ratio off/on, the server's CPU and kernel time per
#   decide and its page faults per decide; then the medians.
# redeem: scripts/bench-redeem.sh --part redeem with --vs-config
#   'store_writemap = false' (durable redemptions: every answer waits for
#   the group fsync), R rounds at 256 connections.
# Load and steal over the run are printed last: quote them with the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/bench-lib.sh
PART=all
PROFILES=1000000
DURATION=15
ROUNDS=4
CONNS=32
OUT=$ROOT/bench-out
while [ $# -gt 0 ]; do
  case "$1" in
    --part) PART=$2; shift 2 ;;
    --profiles) PROFILES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--part decide|redeem|all] [--profiles N] [--duration S] [--rounds R] [--connections C] [--out DIR]" >&2
       exit 2 ;;
  esac
done

bash scripts/setup.sh >/dev/null
PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
BIN=$ROOT/build/promod
mkdir -p "$OUT"
read -r ST0 TOT0 < <(bench_steal)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

if [ "$PART" = decide ] || [ "$PART" = all ]; then
  WL=$OUT/workload-$PROFILES
  bench_workload "$WL" "$PROFILES"
  PORT=${BENCH_PORT:-$(bench_free_port)}
  DATA=$OUT/wm-data
  RUN=$OUT/wm-run
  LOG=$OUT/wm-server.log
  rm -rf "$DATA" "$RUN"
  mkdir -p "$RUN/rules" "$RUN/plugins"
  cp -r "$ROOT/plugins/." "$RUN/plugins/"
  cp -r "$WL/rules/." "$RUN/rules/"
  echo "== offline import of $PROFILES profiles"
  "$BIN" import profiles "$WL/profiles.ndjson" --data "$DATA" >/dev/null
  for m in true false; do
    cat > "$RUN/promod-$m.lua" <<CFG
return {
  listen = "127.0.0.1:$PORT", data_dir = "$DATA", rules_dir = "$RUN/rules",
  plugins_dir = "$RUN/plugins", log_level = "warn", map_size_mb = 16384,
  store_writemap = $m,
}
CFG
  done
  trap bench_stop_server EXIT
  REF=$(bench_shared)/bench/decide.wrk.lua
  dwrk() { # seconds file
    CUSTOMERS=$WL/customers.txt CHANNEL=web PLACEMENT=home_banner DECIDE_SCRIPT=$REF \
      wrk -t1 -c"$CONNS" -d"$1s" -s "$REF" "http://127.0.0.1:$PORT" >"$2" 2>&1 || true
  }
  run() { # mode round -> "rps cpu_us sys_us faults" per decide
    bench_start_server "$BIN" "$RUN/promod-$1.lua" "$LOG"
    dwrk 2 /dev/null
    local f=$OUT/wrk-wm-$1-$2.txt t0 s0 f0 t1 s1 f1
    t0=$(bench_cpu_ticks); s0=$(bench_sys_ticks); f0=$(bench_minflt)
    dwrk "$DURATION" "$f"
    t1=$(bench_cpu_ticks); s1=$(bench_sys_ticks); f1=$(bench_minflt)
    bench_stop_server
    python3 -c "
n = max(1, int('$(awk '/requests in/ {print $1}' "$f")' or 0)); hz = $(getconf CLK_TCK)
print('%s %.1f %.1f %.2f' % ('$(awk '/Requests\/sec/ {print $2}' "$f")', ($t1 - $t0) * 1e6 / hz / n, ($s1 - $s0) * 1e6 / hz / n, ($f1 - $f0) / n))"
  }
  echo "== decide with store_writemap = true (on) and false (off), $ROUNDS interleaved rounds of ${DURATION}s, wrk -t1 -c$CONNS"
  RATIOS=(); CPUR=()
  for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then
      read -r ON ONCPU ONSYS ONPF < <(run true "$r")
      read -r OFF OFFCPU OFFSYS OFFPF < <(run false "$r")
    else
      read -r OFF OFFCPU OFFSYS OFFPF < <(run false "$r")
      read -r ON ONCPU ONSYS ONPF < <(run true "$r")
    fi
    RATIOS+=("$(python3 -c "print('%.3f' % ($OFF / $ON))")")
    CPUR+=("$(python3 -c "print('%.3f' % ($OFFCPU / max(0.001, $ONCPU)))")")
    printf "round %d: on %8.0f/s   off %8.0f/s   off/on %s\n" "$r" "$ON" "$OFF" "${RATIOS[-1]}"
    printf "   per decide, on / off: server cpu %s / %s us (of it kernel %s / %s us), page faults %s / %s\n" \
      "$ONCPU" "$OFFCPU" "$ONSYS" "$OFFSYS" "$ONPF" "$OFFPF"
  done
  echo "median off/on decide rate: $(printf '%s\n' "${RATIOS[@]}" | bench_median)"
  echo "median off/on server cpu per decide: $(printf '%s\n' "${CPUR[@]}" | bench_median)"
  trap - EXIT
fi

if [ "$PART" = redeem ] || [ "$PART" = all ]; then
  echo "== redemptions: new = store_writemap true, old = false"
  BENCH_CODES=${BENCH_CODES:-$((ROUNDS * 2 * (DURATION + 8) * 15000 + 100000))} \
    bash scripts/bench-redeem.sh --part redeem --rounds "$ROUNDS" --duration "$DURATION" \
      --connections 256 --vs-config 'store_writemap = false' --out "$OUT" |
    sed -n '/^== redemptions: wrk/,$p'
fi
read -r ST1 TOT1 < <(bench_steal)
echo "load before: $LOAD0   after: $(cut -d' ' -f1-3 /proc/loadavg)   steal over the run: $(bench_steal_pct "$ST0" "$TOT0" "$ST1" "$TOT1")"
