#!/usr/bin/env bash
# bench-experiments.sh — decide throughput with an experiment running against
# the same decide without it, on the reference workload (../shared/bench:
# 1M profiles, 500 campaigns, web / home_banner, limit 3), runs interleaved.
#
#   scripts/bench-experiments.sh [--profiles N] [--duration S] [--rounds R] [--out DIR]
#
# One server, one data directory.  Each round runs, back to back:
#   off   no experiment running;
#   one   a running experiment (A/B, 10 % holdout) on the campaign decide
#         serves most often (found from promod_offers_served_total);
#   five  one running experiment covering the five most served campaigns
#         that have variants A and B.
# The campaigns' caps are removed (see below).  Every "one"/"five" run
# starts a NEW experiment, so each decide that serves
# it is a first exposure (the most expensive case: an exposure queued and
# stored), and it is stopped after the run.  Per run: req/s, the server's
# own CPU time per request (/proc, the steadier figure on a shared
# machine), the exposures recorded, and the host's steal time (/proc/stat)
# during the run: a pair whose steal differs much is worth repeating.
# The last lines compare each experiment row with the "off" run of the
# same round, and give the median over rounds.  The rounds alternate their
# order (off one five, then five one off) so that a drift of the machine
# within a round weighs on both sides; the load average is printed beside
# each run because on a shared machine other processes, not only steal,
# take the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${PROMOD_SHARED:-$ROOT/../shared}
if [ ! -d "$SHARED" ]; then # a git worktree elsewhere: beside the checkout that owns the repository
  SHARED=$(cd "$(git rev-parse --path-format=absolute --git-common-dir)/../.." && pwd)/shared
fi
PROFILES=1000000
DURATION=10
ROUNDS=6
CONNS=32
OUT=$ROOT/bench-out
while [ $# -gt 0 ]; do
  case "$1" in
    --profiles) PROFILES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--profiles N] [--duration S] [--rounds R] [--out DIR]" >&2; exit 2 ;;
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

PORT=${BENCH_PORT:-18183}
DATA=$OUT/xdata
RUN=$OUT/xrun
rm -rf "$DATA" "$RUN"
mkdir -p "$RUN/rules" "$RUN/plugins" "$RUN/experiments"
cp -r "$ROOT/plugins/." "$RUN/plugins/"
cp -r "$WL/rules/." "$RUN/rules/"
# Caps off (as bench.sh's "caps off" row): with the reference caps (3 per
# customer per 7 days, some daily budgets) the most served campaign stops
# being served after a few runs and the later runs would measure nothing.
# The web plugin's contact policy still counts every offer, so each decide
# still commits its reservation.
sed -i -E 's/^  caps = .*$//' "$RUN"/rules/bench/*.lua
echo "== offline import of $PROFILES profiles"
"$BIN" import profiles "$WL/profiles.ndjson" --data "$DATA" >/dev/null

cat > "$RUN/promod.lua" <<CFG
return {
  listen = "127.0.0.1:$PORT", data_dir = "$DATA", rules_dir = "$RUN/rules",
  plugins_dir = "$RUN/plugins", experiments_dir = "$RUN/experiments",
  log_level = "warn", map_size_mb = 8192,
}
CFG

SERVER_PID=
"$BIN" serve -c "$RUN/promod.lua" 2>>"$OUT/xserver.log" &
SERVER_PID=$!
trap '[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.05
done
API=http://127.0.0.1:$PORT/api/v1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
steal_now() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
REF_SCRIPT=$SHARED/bench/decide.wrk.lua
recorded() {
  curl -fs "http://127.0.0.1:$PORT/metrics" |
    awk '/^promod_experiment_exposures_total\{result="recorded"\}/ {print $2}'
}
# run NAME: wrk on decide; prints "req/s cpu_us steal_pct exposures"
run() {
  local t0 t1 s0 s1 x0 x1
  t0=$(cpu_ticks); s0=$(steal_now); x0=$(recorded)
  CUSTOMERS=$WL/customers.txt CHANNEL=web PLACEMENT=home_banner \
    wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$REF_SCRIPT" "http://127.0.0.1:$PORT" \
    > "$OUT/xwrk-$1.txt" 2>&1 || true
  t1=$(cpu_ticks); s1=$(steal_now); x1=$(recorded)
  python3 - "$OUT/xwrk-$1.txt" "$t0" "$t1" "$s0" "$s1" "$x0" "$x1" "$(getconf CLK_TCK)" <<'PY'
import re, sys
txt = open(sys.argv[1]).read()
rps = float(re.search(r'Requests/sec:\s+([\d.]+)', txt).group(1))
n = int(re.search(r'(\d+) requests in', txt).group(1))
t0, t1 = float(sys.argv[2]), float(sys.argv[3])
s0, tot0 = map(float, sys.argv[4].split()); s1, tot1 = map(float, sys.argv[5].split())
x = int(float(sys.argv[7] or 0) - float(sys.argv[6] or 0))
cpu = (t1 - t0) * 1e6 / float(sys.argv[8]) / max(1, n)
steal = 100 * (s1 - s0) / max(1, tot1 - tot0)
print("%.0f %.1f %.1f %d" % (rps, cpu, steal, x))
PY
}

echo "== warm-up (two runs), and which campaigns decide serves most"
run warmup >/dev/null
run warmup2 >/dev/null
TOP=$(python3 - "$RUN/rules/bench" <<PY
import os, re, sys, urllib.request
served = {}
for line in urllib.request.urlopen("http://127.0.0.1:$PORT/metrics").read().decode().splitlines():
    m = re.match(r'promod_offers_served_total\{campaign="([^"]+)"\} (\d+)', line)
    if m: served[m.group(1)] = int(m.group(2))
ab = []
for cid, n in sorted(served.items(), key=lambda kv: -kv[1]):
    src = open(os.path.join(sys.argv[1], cid + ".lua")).read()
    if 'id = "A"' in src and 'id = "B"' in src:
        ab.append("%s:%d" % (cid, n))
print(" ".join(ab[:5]))
PY
)
echo "most served campaigns with variants A and B (offers in the warm-up): $TOP"
ONE=${TOP%%:*}
FIVE=$(for t in $TOP; do printf '"%s",' "${t%%:*}"; done)
FIVE=${FIVE%,}

xp() { # id campaigns-json
  curl -fs -XPOST "$API/experiments" \
    -d "{\"id\":\"$1\",\"campaigns\":[$2],\"variants\":[\"A\",\"B\"],\"holdout\":0.1}" >/dev/null
  curl -fs -XPOST "$API/experiments/$1/start" >/dev/null
}
xstop() { curl -fs -XPOST "$API/experiments/$1/stop" >/dev/null; }

FMT='%-6s %-6s %9s %12s %8s %11s %6s\n'
printf "$FMT" round run req/s cpu_us/req steal% exposures load | tee "$OUT/xresults.txt"
one_run() { # round kind
  local id="$2-$1"
  case "$2" in
    one) xp "$id" "\"$ONE\"" ;;
    five) xp "$id" "$FIVE" ;;
  esac
  read -r v1 v2 v3 v4 < <(run "$id")
  [ "$2" != off ] && xstop "$id"
  printf "$FMT" "$1" "$2" "$v1" "$v2" "$v3" "$v4" "$(cut -d' ' -f1 /proc/loadavg)" |
    tee -a "$OUT/xresults.txt"
}
for r in $(seq 1 "$ROUNDS"); do
  # alternate the order (off one five, five one off, ...) so a drift of the
  # machine during a round falls on both sides
  if [ $((r % 2)) -eq 1 ]; then order="off one five"; else order="five one off"; fi
  for k in $order; do one_run "$r" "$k"; done
done
for id in one-1 five-1; do
  t0=$(date +%s%N)
  n=$(curl -fs "$API/experiments/$id/results" | python3 -c 'import json,sys; print(json.load(sys.stdin)["exposures"])')
  echo "results of $id: $n exposed customers in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
done
python3 - "$OUT/xresults.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
by = {}
for r, name, rps, cpu, steal, x, load in rows:
    by.setdefault(r, {})[name] = (float(rps), float(cpu))
for name in ("one", "five"):
    tp = [by[r][name][0] / by[r]["off"][0] for r in by]
    cp = [by[r][name][1] / by[r]["off"][1] for r in by]
    print("%-4s vs off: throughput %s (median %.3f), cpu per decide %s (median %.3f)" % (
        name, " ".join("%.3f" % x for x in tp), statistics.median(tp),
        " ".join("%.3f" % x for x in cp), statistics.median(cp)))
PY
