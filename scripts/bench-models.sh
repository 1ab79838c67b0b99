#!/usr/bin/env bash
# bench-models.sh — what models cost, on the reference workload
# (../shared/bench: 1M profiles, 500 campaigns) with wrk on loopback, as
# scripts/bench.sh measures decide.
#
#   scripts/bench-models.sh [--profiles N] [--events N] [--duration S] [--rounds R]
#                           [--connections C] [--probe K] [--out DIR] [--decide-only]
#
# 1. Events: scripts/gen-model-bench.py plants a conversion propensity on
#    the reference profiles (N events, default 10M, over 60 days), ingested
#    over HTTP.
# 2. Training time: `promod train nba` (200 trees of depth 6, 16 columns)
#    on those profiles and events, the server stopped, all cores.
# 3. Decide with models: the reference campaign files, then the same files
#    with their score hook replaced by score = { model = "nba", value = P }
#    (P = the campaign's priority): every campaign ranks by expected value
#    from the one shared model, predicted once per decide.  Runs interleaved
#    (base, model, base, model ...), each a fresh server, a warm-up, then
#    wrk -t1 -cC -dS with the reference decide script; the ratio is model
#    over base, round by round; cpu/req is the server's own CPU per request
#    from /proc; steal is /proc/stat's over the run.
# 4. A further prediction: the model files plus one campaign whose eligible
#    asks K fresh predictions (promo.predict with a new ctx each, so none is
#    cached) and says no; (cpu/req with it - without) / K is the cost of each
#    further model a decide needs: features read from p and ctx, 200 trees.
#
# --decide-only runs steps 3 and 4 again on the data directory, the rule
# files and the trained model an earlier full run left in --out.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${PROMOD_SHARED:-$ROOT/../shared}
PROFILES=1000000
EVENTS=10000000
DURATION=10
ROUNDS=3
CONNS=32
PROBE=16
OUT=$ROOT/bench-out
DECIDE_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profiles) PROFILES=$2; shift 2 ;;
    --events) EVENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --probe) PROBE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --decide-only) DECIDE_ONLY=1; shift ;;
    *) echo "usage: $0 [--profiles N] [--events N] [--duration S] [--rounds R] [--connections C] [--probe K] [--out DIR] [--decide-only]" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh >/dev/null
PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
BIN=$ROOT/build/promod
WL=$OUT/workload-$PROFILES
EV=$OUT/model-events-$PROFILES-$EVENTS
mkdir -p "$OUT"
if [ ! -f "$WL/customers.txt" ]; then
  echo "== generating the reference workload ($PROFILES profiles, 500 campaigns)"
  python3 "$SHARED/bench/gen_workload.py" "$WL" --profiles "$PROFILES" >/dev/null
fi
if [ ! -f "$EV/nba.lua" ]; then
  echo "== generating $EVENTS events with a planted propensity"
  python3 scripts/gen-model-bench.py "$WL/profiles.ndjson" "$EV" --events "$EVENTS"
fi

PORT=${BENCH_PORT:-18182}
DATA=$OUT/model-data
RUN=$OUT/model-run
INGEST="(not run: --decide-only)"
TRAIN="  (not run: --decide-only)
"
if [ "$DECIDE_ONLY" = 1 ]; then
  [ -f "$RUN/promod.lua" ] && [ -d "$DATA" ] || { echo "--decide-only: no earlier full run in $OUT" >&2; exit 2; }
else
rm -rf "$DATA" "$RUN"
mkdir -p "$RUN/base" "$RUN/model/bench" "$RUN/probe/bench" "$RUN/plugins" "$RUN/models"
cp -r "$ROOT/plugins/." "$RUN/plugins/"
cp -r "$WL/rules/." "$RUN/base/"
cp "$EV/nba.lua" "$RUN/models/"
# the same campaigns ranked by expected value: score = { model, value = priority }
python3 - "$WL/rules/bench" "$RUN/model/bench" <<'PY'
import os, re, sys
src, dst = sys.argv[1], sys.argv[2]
for name in os.listdir(src):
    text = open(os.path.join(src, name)).read()
    prio = int(re.search(r"^  priority = (\d+),", text, re.M).group(1))
    text, n = re.subn(r"^  score = function\(p, ctx\)\n(?:    .*\n)*?  end,\n",
                      "  score = { model = \"nba\", value = %d },\n" % prio, text, flags=re.M)
    assert n == 1, name
    open(os.path.join(dst, name), "w").write(text)
PY
cp "$RUN/model/bench/"*.lua "$RUN/probe/bench/"
cat > "$RUN/probe/bench/zz-probe.lua" <<LUA
-- K predictions no decide would cache (a fresh ctx each), then no offer
return {
  id = "zz-probe", channels = { "web" }, priority = 1,
  variants = { { id = "A", content = { headline = "probe" } } },
  eligible = function(p, ctx)
    for i = 1, $PROBE do promo.predict(p, "nba", { i = i }) end
    return false
  end,
}
LUA

echo "== offline import of $PROFILES profiles"
"$BIN" import profiles "$WL/profiles.ndjson" --data "$DATA" > "$OUT/model-import.json"
cat "$OUT/model-import.json"

cat > "$RUN/promod.lua" <<CFG
return {
  listen = "127.0.0.1:$PORT", data_dir = "$DATA", rules_dir = "$RUN/base",
  plugins_dir = "$RUN/plugins", models_dir = "$RUN/models", log_level = "warn",
  map_size_mb = 32768, max_import_body_mb = 512, request_timeout = 900, ${BENCH_CONFIG:-}
}
CFG
fi

SERVER_PID=
start_server() { # rules dir
  "$BIN" serve -c "$RUN/promod.lua" --rules "$1" 2>>"$OUT/model-server.log" &
  SERVER_PID=$!
  for _ in $(seq 1 400); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server did not start; see $OUT/model-server.log" >&2
  exit 1
}
stop_server() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap stop_server EXIT

if [ "$DECIDE_ONLY" = 0 ]; then
echo "== ingesting the events over HTTP"
start_server "$RUN/base"
T0=$(date +%s.%N)
for f in "$EV"/events-*.ndjson; do
  curl -sS --fail-with-body -XPOST "http://127.0.0.1:$PORT/api/v1/events" -H 'Content-Type: application/x-ndjson' \
       --data-binary "@$f" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["rejected"] == 0, d' 
done
T1=$(date +%s.%N)
NEV=$(cat "$EV"/events-*.ndjson | wc -l)
INGEST=$(python3 -c "print('%.0f events/s (%d events in %.1f s)' % ($NEV / ($T1 - $T0), $NEV, $T1 - $T0))")
echo "$INGEST"
stop_server

# Training, the server stopped: one XGBoost thread, then every core.  On a
# shared machine OpenMP's spinning threads lose their cores to other
# processes and wait for each other, so the wait policy is passive.
TRAIN=""
for th in 1 "$(nproc)"; do
  echo "== training: promod train nba --threads $th (server stopped)"
  T0=$(date +%s.%N)
  OMP_WAIT_POLICY=passive /usr/bin/time -f "%U %S" -o "$OUT/model-train-time.txt" \
    "$BIN" train nba -c "$RUN/promod.lua" --threads "$th" --force > "$OUT/model-train-$th.json"
  T1=$(date +%s.%N)
  cat "$OUT/model-train-$th.json"
  TRAIN="$TRAIN$(python3 - "$OUT/model-train-$th.json" "$OUT/model-train-time.txt" "$T0" "$T1" "$th" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
u, s = map(float, open(sys.argv[2]).read().split()[-2:])
print("  %s thread(s): %.1f s wall, %.1f s CPU (examples %d, training rows %d; AUC %.3f)"
      % (sys.argv[5], float(sys.argv[4]) - float(sys.argv[3]), u + s, d["rows"]["examples"],
         d["rows"]["train"], d["validation"]["auc"]))
PY
)
"
done
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
steal_ticks() { awk '/^cpu / {print $9; exit}' /proc/stat; }
all_ticks() { awk '/^cpu / {s = 0; for (i = 2; i <= NF; i++) s += $i; print s; exit}' /proc/stat; }
REF_SCRIPT=$SHARED/bench/decide.wrk.lua
RESULTS=$OUT/model-results.txt
: > "$RESULTS"
run() { # label rules-dir
  start_server "$2"
  CUSTOMERS=$WL/customers.txt CHANNEL=web PLACEMENT=home_banner \
    wrk -t1 -c"$CONNS" -d2s -s "$REF_SCRIPT" "http://127.0.0.1:$PORT" >/dev/null 2>&1 || true
  local c0 s0 a0 c1 s1 a1
  c0=$(cpu_ticks); s0=$(steal_ticks); a0=$(all_ticks)
  CUSTOMERS=$WL/customers.txt CHANNEL=web PLACEMENT=home_banner \
    wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$REF_SCRIPT" "http://127.0.0.1:$PORT" > "$OUT/wrk-model-$1.txt" 2>&1 || true
  c1=$(cpu_ticks); s1=$(steal_ticks); a1=$(all_ticks)
  stop_server
  local rps n err
  rps=$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-model-$1.txt")
  n=$(awk '/requests in/ {print $1}' "$OUT/wrk-model-$1.txt")
  err=$(awk '/Non-2xx/ {print $NF}' "$OUT/wrk-model-$1.txt")
  python3 -c "print('%-10s %10.0f %9.1f %7.1f%% %s' % ('$1', $rps, ($c1 - $c0) * 1e6 / $(getconf CLK_TCK) / max(1, $n), 100.0 * ($s1 - $s0) / max(1, $a1 - $a0), '${err:-0}'))" | tee -a "$RESULTS"
}

echo "== decide: base vs model-ranked, interleaved ($ROUNDS rounds)"
printf '%-10s %10s %9s %8s %s\n' run req/s cpu_us/req steal non2xx | tee -a "$RESULTS"
for r in $(seq 1 "$ROUNDS"); do
  run "base-$r" "$RUN/base"
  run "model-$r" "$RUN/model"
  run "probe-$r" "$RUN/probe"
done
trap - EXIT

echo
echo "== results"
python3 - "$RESULTS" "$PROBE" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 4 and f[0][0:4] in ("base", "mode", "prob"):
        kind, r = f[0].rsplit("-", 1)
        rows.setdefault(r, {})[kind] = (float(f[1]), float(f[2]), f[3])
k = int(sys.argv[2])
for r in sorted(rows):
    d = rows[r]
    if "base" in d and "model" in d:
        print("round %s: throughput model / base %.2f (%.0f / %.0f req/s), cpu/req %.1f vs %.1f us, steal %s / %s"
              % (r, d["model"][0] / d["base"][0], d["model"][0], d["base"][0], d["model"][1], d["base"][1],
                 d["base"][2], d["model"][2]))
    if "model" in d and "probe" in d:
        print("round %s: a further prediction costs %.2f us of server CPU ((%.1f - %.1f) / %d)"
              % (r, (d["probe"][1] - d["model"][1]) / k, d["probe"][1], d["model"][1], k))
PY
echo "ingestion: $INGEST"
echo "training of nba ($PROFILES profiles, ${NEV:-?} events), promod train:"
printf '%s' "$TRAIN"
echo "load average at the end: $(cat /proc/loadavg)"
