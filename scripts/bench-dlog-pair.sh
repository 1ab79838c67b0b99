#!/usr/bin/env bash
# bench-dlog-pair.sh — two servers measured AT THE SAME TIME, so that the
# load of a shared machine weighs on both alike: the decision log's cost
# (log off against log on, one build) or two builds with the log on
# (before / after a change).  Each server has its own copy of the
# imported reference workload and its own wrk (-t1 -c16); per round the
# script prints each server's CPU per decide (user + system of all its
# threads, and of its worker threads) and the ratio; the servers swap
# places every round (A/B position is not neutral: the second wrk tends to
# get more requests through), and the median ratio is printed last.
#
#   scripts/bench-dlog-pair.sh [--rounds R] [--duration S] [--bin-a PATH] [--bin-b PATH]
#                              [--sample-a X] [--sample-b Y] [--out DIR]
#
# Defaults: this build for both, decision_log_sample 0 for A and 1 for B
# (what the log costs); e.g. --bin-a OLD/promod --sample-a 1 compares an
# older build with the log on against this one.  The CPU ratio is the
# figure: decide rates of two servers sharing two cores depend on how the
# scheduler splits the cores between them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${PROMOD_SHARED:-$ROOT/../shared}
ROUNDS=4
DURATION=10
BIN_A=$ROOT/build/promod
BIN_B=$ROOT/build/promod
SA=0
SB=1
OUT=$ROOT/bench-out
PROFILES=1000000
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --bin-a) BIN_A=$2; shift 2 ;;
    --bin-b) BIN_B=$2; shift 2 ;;
    --sample-a) SA=$2; shift 2 ;;
    --sample-b) SB=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds R] [--duration S] [--bin-a PATH] [--bin-b PATH] [--sample-a X] [--sample-b Y] [--out DIR]" >&2
       exit 2 ;;
  esac
done
[ -x "$BIN_A" ] && [ -x "$BIN_B" ] || { echo "build first: bash scripts/build.sh release" >&2; exit 1; }
WL=$OUT/workload-$PROFILES
if [ ! -f "$WL/customers.txt" ]; then
  echo "== generating the reference workload ($PROFILES profiles, 500 campaigns)"
  python3 "$SHARED/bench/gen_workload.py" "$WL" --profiles "$PROFILES" >/dev/null
fi
REF=$SHARED/bench/decide.wrk.lua
RUN=$OUT/dlog-pair
rm -rf "$RUN"
mkdir -p "$RUN/rules" "$RUN/plugins"
cp -r "$ROOT/plugins/." "$RUN/plugins/"
cp -r "$WL/rules/." "$RUN/rules/"
echo "== offline import of $PROFILES profiles"
"$BIN_B" import profiles "$WL/profiles.ndjson" --data "$RUN/base" >/dev/null
freeport() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
steal() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
read -r ST0 TOT0 < <(steal)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
PIDS=()
cleanup() { # the servers are not this shell's children (started in $(...)): wait until they are gone
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
    for _ in $(seq 1 600); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  PIDS=()
}
trap cleanup EXIT
start() { # name bin sample port -> pid
  rm -rf "$RUN/data-$1"
  cp -r "$RUN/base" "$RUN/data-$1"
  cat > "$RUN/promod-$1.lua" <<CFG
return {
  listen = "127.0.0.1:$4", data_dir = "$RUN/data-$1", rules_dir = "$RUN/rules",
  plugins_dir = "$RUN/plugins", log_level = "warn", map_size_mb = 16384,
  decision_log_sample = $3, decision_log_retention_days = 30,
}
CFG
  "$2" serve -c "$RUN/promod-$1.lua" >/dev/null 2>>"$RUN/server.log" &
  echo $!
}
wait_up() { # pid port
  for _ in $(seq 1 400); do
    kill -0 "$1" 2>/dev/null || { echo "server died; see $RUN/server.log" >&2; exit 1; }
    curl -fs "http://127.0.0.1:$2/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server did not start; see $RUN/server.log" >&2
  exit 1
}
ticks() { # pid pattern -> user + system ticks of its threads whose name matches
  for t in /proc/"$1"/task/*; do
    case "$(cat "$t/comm" 2>/dev/null)" in $2) awk '{print $14 + $15}' "$t/stat" ;; esac
  done | awk '{s += $1} END {print s + 0}'
}
drive() { # port seconds outfile
  CUSTOMERS=$WL/customers.txt CHANNEL=web PLACEMENT=home_banner \
    wrk -t1 -c16 -d"$2s" -s "$REF" "http://127.0.0.1:$1" >"$3" 2>&1 || true
}
HZ=$(getconf CLK_TCK)
RATIOS=()
echo "== A: $BIN_A (decision_log_sample $SA)   B: $BIN_B (decision_log_sample $SB); $ROUNDS rounds of ${DURATION}s, both at once"
for r in $(seq 1 "$ROUNDS"); do
  PA=$(freeport); PB=$(freeport)
  if [ $((r % 2)) -eq 1 ]; then
    A=$(start a "$BIN_A" "$SA" "$PA"); PIDS+=("$A"); B=$(start b "$BIN_B" "$SB" "$PB"); PIDS+=("$B")
  else
    B=$(start b "$BIN_B" "$SB" "$PB"); PIDS+=("$B"); A=$(start a "$BIN_A" "$SA" "$PA"); PIDS+=("$A")
  fi
  wait_up "$A" "$PA"; wait_up "$B" "$PB"
  drive "$PA" 2 /dev/null & W=$!; drive "$PB" 2 /dev/null; wait $W
  a0=$(ticks "$A" '*'); b0=$(ticks "$B" '*'); aw0=$(ticks "$A" 'worker*'); bw0=$(ticks "$B" 'worker*')
  if [ $((r % 2)) -eq 1 ]; then
    drive "$PA" "$DURATION" "$RUN/wrk-a.txt" & W=$!; drive "$PB" "$DURATION" "$RUN/wrk-b.txt"
  else
    drive "$PB" "$DURATION" "$RUN/wrk-b.txt" & W=$!; drive "$PA" "$DURATION" "$RUN/wrk-a.txt"
  fi
  wait $W
  a1=$(ticks "$A" '*'); b1=$(ticks "$B" '*'); aw1=$(ticks "$A" 'worker*'); bw1=$(ticks "$B" 'worker*')
  cleanup
  na=$(awk '/requests in/ {print $1}' "$RUN/wrk-a.txt"); nb=$(awk '/requests in/ {print $1}' "$RUN/wrk-b.txt")
  line=$(python3 -c "
na, nb, hz = max(1, $na), max(1, $nb), $HZ
ca, cb = ($a1 - $a0) * 1e6 / hz / na, ($b1 - $b0) * 1e6 / hz / nb
wa, wb = ($aw1 - $aw0) * 1e6 / hz / na, ($bw1 - $bw0) * 1e6 / hz / nb
print('%.3f round $r: A %d decides, %.1f us cpu per decide (workers %.1f)   B %d decides, %.1f us (workers %.1f)   cpu A/B %.3f' % (ca / cb, na, ca, wa, nb, cb, wb, ca / cb))")
  RATIOS+=("${line%% *}")
  echo "${line#* }"
done
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "median cpu per decide A/B: $(printf '%s\n' "${RATIOS[@]}" | median)"
read -r ST1 TOT1 < <(steal)
echo "load before: $LOAD0   after: $(cut -d' ' -f1-3 /proc/loadavg)   steal over the run: $(python3 -c "print('%.1f%%' % (100 * ($ST1 - $ST0) / max(1, $TOT1 - $TOT0)))")"
