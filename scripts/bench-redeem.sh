#!/usr/bin/env bash
# bench-redeem.sh — coupon redemptions per second, and decide throughput
# with a coupon code assigned in the content, on a release build with wrk.
#
#   scripts/bench-redeem.sh [--part redeem|decide|all] [--duration S]
#                           [--connections "C1 C2 ..."] [--rounds N]
#                           [--vs OTHER_PROMOD_BINARY | --vs-config 'KEY = VALUE, ...']
#                           [--profiles N] [--out DIR]
#
# redeem: a campaign with a money budget and single-use codes; wrk (-t1,
#   scripts/redeem.wrk.lua) redeems a different code for a different
#   customer and order on every request.  A redemption is acknowledged only
#   once the group commit has it on disk.  With --vs, the same store (a copy
#   made before the first run, page cache dropped before every server start)
#   is driven by this build and by OTHER_PROMOD_BINARY (e.g. a build of
#   main) in alternating runs: round 1 this, other, round 2 this, other, ...
#   for each connection count; every server start is followed by an
#   uncounted warm-up of BENCH_WARM (5) seconds of redemptions.  A build
#   with store_prewarm (on by default) reads the store back into the page
#   cache at start, during the warm-up; a build without it, or run with
#   --vs-config 'store_prewarm = false', starts cold (the default pool's
#   ~570 MB store then takes a disk read per first touch of a page).  With
#   --vs-config, "old" is this build with those config entries added (e.g.
#   'store_writemap = false'), run the same way.  Rows also give the ceilings of this HTTP
#   server on this machine: GET /healthz (no work) and POST
#   /api/v1/coupons/validate (the same request parsing, checks and reads,
#   no write, no fsync).  Reported: req/s, latencies, non-2xx (must be 0),
#   the server's CPU time per request, the host's load and CPU steal, and
#   the redemption writer's batches; then the pipeline of every run from
#   the server's /metrics (average batch, apply + commit per batch,
#   fdatasync per flush, queue wait per redemption), and last each build's
#   median redemptions/s per connection count against issue 16's target
#   of 10,000/s.
# decide: the reference workload (../shared/bench, N profiles, 500
#   campaigns) plus one top-priority web campaign, run with its content
#   plain and then with "{{coupon}}" in it (a code assigned to every
#   customer served for the first time, in the reservation's transaction),
#   interleaved for N rounds; reported as the ratio coupon / plain per pair.
#
# Figures drift on a shared 2-core machine (wrk takes one core): compare
# the ratios of interleaved runs, and look at the load and steal columns
# before trusting a pair.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${PROMOD_SHARED:-$ROOT/../shared}
PART=all
DURATION=10
CONNS_LIST="64 256"
ROUNDS=3
VS=
VS_CONFIG=
PROFILES=1000000
OUT=$ROOT/bench-out
while [ $# -gt 0 ]; do
  case "$1" in
    --part) PART=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS_LIST=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --vs) VS=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    --vs-config) VS_CONFIG=$2; shift 2 ;;
    --profiles) PROFILES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--part redeem|decide|all] [--duration S] [--connections \"C ...\"] [--rounds N] [--vs BINARY | --vs-config 'K = V'] [--profiles N] [--out DIR]" >&2
       exit 2 ;;
  esac
done

bash scripts/setup.sh >/dev/null
PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
BIN=$ROOT/build/promod
PORT=${BENCH_PORT:-18191}
mkdir -p "$OUT"
SERVER_PID=
start_server() { # config [binary]
  "${2:-$BIN}" serve -c "$1" 2>>"$OUT/redeem-server.log" &
  SERVER_PID=$!
  for _ in $(seq 1 400); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server did not start; see $OUT/redeem-server.log" >&2
  exit 1
}
stop_server() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap stop_server EXIT
# the page cache of a store file, dropped: every server starts as after a
# reboot, so no run inherits another's cached pages (or their folio sizes)
drop_cache() { python3 -c "
import os, sys
for f in sys.argv[1:]:
    fd = os.open(f, os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)" "$@"; }

CONNS=64
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
stat_cpu() { awk '/^cpu / {t=0; for (i=2;i<=NF;i++) t+=$i; print t, $9}' /proc/stat; }
run_wrk() { # name wrk-args...: prints req/s; leaves wrk-NAME.txt, cpu-, steal-, load-NAME.txt
  local name=$1; shift
  local t0 t1 s0 s1
  t0=$(cpu_ticks); s0=$(stat_cpu)
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" > "$OUT/wrk-$name.txt" 2>&1 || true
  t1=$(cpu_ticks); s1=$(stat_cpu)
  awk '{print $1}' /proc/loadavg > "$OUT/load-$name.txt"
  local n rps
  rps=$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-$name.txt")
  n=$(awk '/requests in/ {print $1}' "$OUT/wrk-$name.txt")
  python3 -c "print('%.1f' % (($t1 - $t0) * 1e6 / $(getconf CLK_TCK) / max(1, $n)))" > "$OUT/cpu-$name.txt"
  python3 -c "
a, b = '$s0'.split(), '$s1'.split()
dt, ds = int(b[0]) - int(a[0]), int(b[1]) - int(a[1])
print('%.0f%%' % (100.0 * ds / max(1, dt)))" > "$OUT/steal-$name.txt"
  echo "$rps"
}
used() { awk '/requests in/ {print $1}' "$OUT/wrk-$1.txt"; }
pct() { awk -v k="$2" '$1 == k { print $2; exit }' "$OUT/wrk-$1.txt"; }
errors() { awk '/errors\(non-2xx/ {print $NF}' "$OUT/wrk-$1.txt"; }
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
FMT='%-44s %10s %6s %8s %8s %8s %7s %10s %6s %5s\n'
header() { printf "$FMT" "$1" req/s ratio p50_us p99_us p99.9_us errors cpu_us/req steal load; }
row() { # label req/s name base
  printf "$FMT" "$1" "$2" "$(ratio "$2" "$4")" "$(pct "$3" p50_us || true)" "$(pct "$3" p99_us || true)" \
    "$(pct "$3" p99.9_us || true)" "$(errors "$3" || true)" "$(cat "$OUT/cpu-$3.txt")" \
    "$(cat "$OUT/steal-$3.txt")" "$(cat "$OUT/load-$3.txt")"
}
generate() { # campaign count -> appends codes to $RUN/codes.txt
  local left=$2
  while [ "$left" -gt 0 ]; do
    local n=$(( left > 200000 ? 200000 : left ))
    curl -fs "http://127.0.0.1:$PORT/api/v1/campaigns/$1/coupons" \
      -d "{\"generate\":{\"count\":$n,\"length\":10},\"max_uses\":1}" |
      python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["codes"]))' >> "$RUN/codes.txt"
    left=$(( left - n ))
  done
}

# --- redemptions per second ------------------------------------------------
if [ "$PART" = redeem ] || [ "$PART" = all ]; then
  RUN=$OUT/redeem-run
  rm -rf "$RUN"
  mkdir -p "$RUN/rules" "$RUN/plugins"
  cp -r "$ROOT/plugins/." "$RUN/plugins/"
  cat > "$RUN/rules/checkout.lua" <<'LUA'
return {
  id = "checkout", name = "Checkout coupons", channels = { "web" },
  budget = { amount = 100000000, currency = "EUR", per = "campaign" },
  variants = { { id = "A", weight = 1, content = { headline = "Your code: {{coupon}}" } } },
  eligible = function(p, ctx) return true end,
}
LUA
  config() { # data dir -> config file (data-old: with --vs-config's entries)
    local extra=
    [ "$(basename "$1")" = data-old ] && extra=$VS_CONFIG
    cat > "$RUN/promod-$(basename "$1").lua" <<CFG
return { listen = "127.0.0.1:$PORT", data_dir = "$1", rules_dir = "$RUN/rules",
         plugins_dir = "$RUN/plugins", log_level = "warn", map_size_mb = 4096,
         ${extra:+$extra,} ${BENCH_CONFIG:-} }
CFG
    echo "$RUN/promod-$(basename "$1").lua"
  }
  NCODES=${BENCH_CODES:-2000000} # a quiet machine redeems ~10,000/s: 3 rounds x 2 counts x (warm-up + run) per build
  start_server "$(config "$RUN/data-new")"
  echo "== generating $NCODES single-use codes"
  : > "$RUN/codes.txt"
  generate checkout "$NCODES"
  stop_server
  BINS="new"
  if [ -n "$VS" ] || [ -n "$VS_CONFIG" ]; then
    [ -n "$VS" ] || VS=$BIN
    cp --sparse=always -r "$RUN/data-new" "$RUN/data-old"
    BINS="new old"
  fi
  declare -A OFFSET=( [new]=0 [old]=0 )
  bin_of() { [ "$1" = new ] && echo "$BIN" || echo "$VS"; }
  # the last 50,000 codes are never redeemed: validate runs on them
  VALIDATE_AT=$(( NCODES - 50000 ))
  tail -n 50000 "$RUN/codes.txt" > "$RUN/validate-codes.txt"
  WARM=${BENCH_WARM:-5}
  ROWS=$OUT/redeem-rows.txt
  : > "$ROWS"
  : > "$OUT/redeem-pipeline.txt"
  for round in $(seq 1 "$ROUNDS"); do
    for c in $CONNS_LIST; do
      CONNS=$c
      for b in $BINS; do
        drop_cache "$RUN/data-$b/data.mdb"
        start_server "$(config "$RUN/data-$b")" "$(bin_of "$b")"
        name=redeem-$b-c$c-r$round
        # warm-up, not counted: the server faults in the pages it uses its own way
        DURATION_SAVED=$DURATION; DURATION=$WARM
        CODES=$RUN/codes.txt OFFSET=${OFFSET[$b]} run_wrk "warm-$name" -s scripts/redeem.wrk.lua --timeout 10s "http://127.0.0.1:$PORT" >/dev/null
        DURATION=$DURATION_SAVED
        OFFSET[$b]=$(( ${OFFSET[$b]} + $(used "warm-$name") + 1000 ))
        R=$(CODES=$RUN/codes.txt OFFSET=${OFFSET[$b]} run_wrk "$name" -s scripts/redeem.wrk.lua --timeout 10s "http://127.0.0.1:$PORT")
        OFFSET[$b]=$(( ${OFFSET[$b]} + $(used "$name") + 1000 ))
        [ "${OFFSET[$b]}" -lt "$VALIDATE_AT" ] || { echo "out of codes: raise BENCH_CODES" >&2; exit 1; }
        curl -fs "http://127.0.0.1:$PORT/metrics" > "$OUT/metrics-$name.txt" || true
        B=$(awk '/^promod_coupon_redeem_batch(es|ed)_total/ {v[$1]=$2} END {if (v["promod_coupon_redeem_batches_total"] > 0) printf "%.1f", v["promod_coupon_redeem_batched_total"] / v["promod_coupon_redeem_batches_total"]; else print "-"}' "$OUT/metrics-$name.txt")
        # the pipeline, as the server saw it (warm-up included; "-" when the
        # binary has no such metric): mean batch, mean apply+commit, mean
        # fdatasync, mean queue wait before a batch starts
        awk -v name="$name" '
          { v[$1] = $2 }
          END {
            b = v["promod_coupon_redeem_batches_total"]; bi = v["promod_coupon_redeem_batched_total"]
            ac = v["promod_coupon_redeem_apply_seconds_count"]; as = v["promod_coupon_redeem_apply_seconds_sum"]
            sc = v["promod_store_syncs_total"]; ss = v["promod_store_sync_seconds_total"]
            qc = v["promod_coupon_redeem_queue_seconds_count"]; qs = v["promod_coupon_redeem_queue_seconds_sum"]
            printf "%-28s batch %6s  apply+commit %8s ms  fdatasync %8s ms (%s syncs)  queue wait %8s ms\n", name,
              (b > 0 ? sprintf("%.1f", bi / b) : "-"), (ac > 0 ? sprintf("%.3f", 1000 * as / ac) : "-"),
              (sc > 0 && ss != "" ? sprintf("%.3f", 1000 * ss / sc) : "-"), (sc != "" ? sc : "-"),
              (qc > 0 ? sprintf("%.3f", 1000 * qs / qc) : "-")
          }' "$OUT/metrics-$name.txt" >> "$OUT/redeem-pipeline.txt"
        if [ "$round" = 1 ]; then # ceilings of the same server and machine, once per connection count
          H=$(run_wrk "healthz-$b-c$c" "http://127.0.0.1:$PORT/healthz")
          V=$(CODES=$RUN/validate-codes.txt OFFSET=0 MODE=validate run_wrk "validate-$b-c$c" -s scripts/redeem.wrk.lua --timeout 10s "http://127.0.0.1:$PORT")
          echo "healthz $b $c $round $H healthz-$b-c$c -" >> "$ROWS"
          echo "validate $b $c $round $V validate-$b-c$c -" >> "$ROWS"
        fi
        stop_server
        echo "redeem $b $c $round $R $name $B" >> "$ROWS"
      done
    done
  done
  echo
  echo "== redemptions: wrk -t1 -d${DURATION}s, $(nproc) cores, server threads = cores; rounds interleave the builds"
  echo "   new = $BIN${VS:+, old = $VS}${VS_CONFIG:+ with $VS_CONFIG}; avg batch = redemptions per store transaction (new only)"
  for c in $CONNS_LIST; do
    header "-c$c"
    while read -r kind b cc round rps name avg; do
      [ "$cc" = "$c" ] || continue
      base=$rps
      if [ "$kind" = redeem ] && [ "$b" = old ]; then
        base=$(awk -v r="$round" -v c="$c" '$1=="redeem" && $2=="new" && $3==c && $4==r {print $5}' "$ROWS")
      fi
      label="$kind ($b) round $round"
      [ "$kind" = redeem ] && label="POST redeem ($b) round $round, avg batch $avg"
      [ "$kind" = healthz ] && label="GET /healthz ($b)"
      [ "$kind" = validate ] && label="POST validate ($b)"
      row "$label" "$rps" "$name" "$base"
    done < "$ROWS"
  done
  echo "(ratio: an old row against the new row of its round; others against themselves)"
  echo
  echo "== the redemption pipeline per run (server metrics, warm-up included)"
  cat "$OUT/redeem-pipeline.txt"
  echo
  echo "== redemptions per second against the target of 10,000/s (median over rounds)"
  for b in $BINS; do
    for c in $CONNS_LIST; do
      python3 - "$ROWS" "$b" "$c" "$(bin_of "$b")" <<'PY'
import statistics, sys
rows, b, c, binary = sys.argv[1:]
x = [float(f[4]) for f in (l.split() for l in open(rows)) if f[0] == "redeem" and f[1] == b and f[2] == c]
if x:
    m = statistics.median(x)
    print("%-4s -c%-4s median %8.0f/s over %d round(s): %s the 10,000/s target  (%s)"
          % (b, c, m, len(x), "MEETS" if m >= 10000 else "BELOW", binary))
PY
    done
  done
  echo "(load and steal per run are in the table above: a figure taken on a loaded or stolen machine is a floor)"
fi

# --- decide with {{coupon}} vs plain ----------------------------------------
if [ "$PART" = decide ] || [ "$PART" = all ]; then
  WL=$OUT/workload-$PROFILES
  if [ ! -f "$WL/customers.txt" ]; then
    echo "== generating the reference workload ($PROFILES profiles, 500 campaigns)"
    python3 "$SHARED/bench/gen_workload.py" "$WL" --profiles "$PROFILES" >/dev/null
  fi
  DRUN=$OUT/coupon-decide-run
  rm -rf "$DRUN"
  mkdir -p "$DRUN/rules" "$DRUN/plugins"
  cp -r "$ROOT/plugins/." "$DRUN/plugins/"
  cp -r "$WL/rules/." "$DRUN/rules/"
  echo "== offline import of $PROFILES profiles"
  "$BIN" import profiles "$WL/profiles.ndjson" --data "$DRUN/data" >/dev/null
  extra() { # content
    cat > "$DRUN/rules/zz-extra.lua.tmp" <<LUA
return {
  id = "zz-extra", name = "Top offer", channels = { "web" }, priority = 100000,
  variants = { { id = "A", weight = 1, content = { headline = "$1", body = "Up to 30% off, {{first_name|friend}}" } } },
  eligible = function(p, ctx) return true end,
}
LUA
    mv "$DRUN/rules/zz-extra.lua.tmp" "$DRUN/rules/zz-extra.lua"
  }
  wait_reload() { # expected headline fragment
    for _ in $(seq 1 100); do
      curl -fs "http://127.0.0.1:$PORT/api/v1/decide" \
        -d '{"customer_id":"warm-1","channel":"web","placement":"home_banner","dry_run":true}' |
        grep -q "$1" && return 0
      sleep 0.1
    done
    echo "reload not seen" >&2
    exit 1
  }
  P=(); C=()
  extra "Your offer"
  cat > "$DRUN/promod.lua" <<CFG
return { listen = "127.0.0.1:$PORT", data_dir = "$DRUN/data", rules_dir = "$DRUN/rules",
         plugins_dir = "$DRUN/plugins", log_level = "warn", map_size_mb = 8192, ${BENCH_CONFIG:-} }
CFG
  start_server "$DRUN/promod.lua"
  echo "== generating 600,000 codes for the top campaign"
  RUN=$DRUN
  : > "$RUN/codes.txt"
  generate zz-extra 600000
  REF=$SHARED/bench/decide.wrk.lua
  dwrk() { CUSTOMERS=$WL/customers.txt CHANNEL=web PLACEMENT=home_banner run_wrk "$1" -s "$REF" "http://127.0.0.1:$PORT"; }
  CONNS=${CONNS_LIST%% *}
  dwrk warm >/dev/null
  for round in $(seq 1 "$ROUNDS"); do
    extra "Your offer"; wait_reload "Your offer"
    P[$round]=$(dwrk "plain-$round")
    extra "Your code: {{coupon}}"; wait_reload "Your code:"
    C[$round]=$(dwrk "coupon-$round")
  done
  ASSIGNED=$(curl -fs "http://127.0.0.1:$PORT/api/v1/campaigns/zz-extra/coupons" | python3 -c 'import json,sys; print(json.load(sys.stdin)["assigned"])')
  stop_server
  trap - EXIT
  echo
  echo "== decide, reference workload + a top campaign (wrk -t1 -c$CONNS -d${DURATION}s), interleaved"
  header run
  for round in $(seq 1 "$ROUNDS"); do
    row "decide, plain content ($round)" "${P[$round]}" "plain-$round" "${P[$round]}"
    row "decide, {{coupon}} in content ($round)" "${C[$round]}" "coupon-$round" "${P[$round]}"
  done
  python3 -c "
import statistics, sys
r = [float(c) / float(p) for p, c in zip(sys.argv[1].split(), sys.argv[2].split())]
print('coupon / plain per round: ' + ' '.join('%.2f' % x for x in r) + ', median %.2f' % statistics.median(r))" "${P[*]}" "${C[*]}"
  echo "codes assigned during the coupon runs: $ASSIGNED"
fi
