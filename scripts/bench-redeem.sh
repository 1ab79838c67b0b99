#!/usr/bin/env bash
# bench-redeem.sh — coupon redemptions per second, and decide throughput
# with a coupon code assigned in the content, on a release build with wrk.
#
#   scripts/bench-redeem.sh [--part redeem|decide|all] [--duration S]
#                           [--connections C] [--profiles N] [--out DIR]
#
# redeem: a campaign with a money budget and 300,000 single-use codes;
#   wrk (-t1, scripts/redeem.wrk.lua) redeems a different code for a
#   different customer and order on every request.  Every redemption is
#   checked and written in one LMDB write transaction and acknowledged only
#   once the group commit has it on disk.  Reported: redemptions/s, the
#   ratio to GET /healthz in the same run, latencies, non-2xx (must be 0),
#   the server's CPU time per request, and the host's CPU steal.
# decide: the reference workload (../shared/bench, N profiles, 500
#   campaigns) plus one top-priority web campaign, run with its content
#   plain and then with "{{coupon}}" in it (a code assigned to every
#   customer served for the first time, in the reservation's transaction),
#   interleaved twice; reported as the ratio coupon / plain.
#
# Figures drift on a shared 2-core machine (wrk takes one core): compare
# the ratios, and look at the steal column before trusting a pair.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${PROMOD_SHARED:-$ROOT/../shared}
PART=all
DURATION=10
CONNS=64
PROFILES=1000000
OUT=$ROOT/bench-out
while [ $# -gt 0 ]; do
  case "$1" in
    --part) PART=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --profiles) PROFILES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--part redeem|decide|all] [--duration S] [--connections C] [--profiles N] [--out DIR]" >&2
       exit 2 ;;
  esac
done

bash scripts/setup.sh >/dev/null
PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
BIN=$ROOT/build/promod
PORT=${BENCH_PORT:-18191}
mkdir -p "$OUT"
RUN=$OUT/redeem-run
SERVER_PID=
start_server() { # config
  "$BIN" serve -c "$1" 2>>"$OUT/redeem-server.log" &
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

cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
stat_cpu() { awk '/^cpu / {t=0; for (i=2;i<=NF;i++) t+=$i; print t, $9}' /proc/stat; }
run_wrk() { # name wrk-args...: prints req/s; leaves wrk-NAME.txt, cpu-NAME.txt, steal-NAME.txt
  local name=$1; shift
  local t0 t1 s0 s1
  t0=$(cpu_ticks); s0=$(stat_cpu)
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" > "$OUT/wrk-$name.txt" 2>&1 || true
  t1=$(cpu_ticks); s1=$(stat_cpu)
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
pct() { awk -v k="$2" '$1 == k { print $2; exit }' "$OUT/wrk-$1.txt"; }
errors() { awk '/errors\(non-2xx/ {print $NF}' "$OUT/wrk-$1.txt"; }
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
FMT='%-40s %10s %6s %8s %8s %8s %9s %7s %10s %6s\n'
row() { # label req/s name base
  printf "$FMT" "$1" "$2" "$(ratio "$2" "$4")" "$(pct "$3" p50_us || true)" "$(pct "$3" p99_us || true)" \
    "$(pct "$3" p99.9_us || true)" "$(errors "$3" || true)" "" "$(cat "$OUT/cpu-$3.txt")" "$(cat "$OUT/steal-$3.txt")"
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
  cat > "$RUN/promod.lua" <<CFG
return { listen = "127.0.0.1:$PORT", data_dir = "$RUN/data", rules_dir = "$RUN/rules",
         plugins_dir = "$RUN/plugins", log_level = "warn", map_size_mb = 4096, ${BENCH_CONFIG:-} }
CFG
  start_server "$RUN/promod.lua"
  echo "== generating 300,000 single-use codes"
  : > "$RUN/codes.txt"
  generate checkout 300000
  echo "== warm-up, GET /healthz, POST /api/v1/coupons/redeem"
  CODES=$RUN/codes.txt OFFSET=0 run_wrk redeem-warm -s scripts/redeem.wrk.lua --timeout 5s "http://127.0.0.1:$PORT" >/dev/null
  USED=$(awk '/requests in/ {print $1}' "$OUT/wrk-redeem-warm.txt")
  H=$(run_wrk healthz "http://127.0.0.1:$PORT/healthz")
  R=$(CODES=$RUN/codes.txt OFFSET=$USED run_wrk redeem -s scripts/redeem.wrk.lua --timeout 5s "http://127.0.0.1:$PORT")
  STATS=$(curl -fs "http://127.0.0.1:$PORT/api/v1/campaigns/checkout/coupons" |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print("redeemed %d, budget spent %s of %s EUR" % (s["redeemed"], s["budget"]["spent"], s["budget"]["amount"]))')
  SYNCS=$(curl -fs "http://127.0.0.1:$PORT/metrics" | awk '/^promod_store_syncs_total/ {print $2}')
  stop_server
  echo
  echo "== redemptions (wrk -t1 -c$CONNS -d${DURATION}s, $(nproc) cores, server threads = cores)"
  printf "$FMT" endpoint req/s ratio p50_us p99_us p99.9_us errors "" cpu_us/req steal
  printf "$FMT" "GET /healthz" "$H" 1.00 "" "" "" "$(errors healthz || true)" "" "$(cat "$OUT/cpu-healthz.txt")" "$(cat "$OUT/steal-healthz.txt")"
  row "POST /api/v1/coupons/redeem" "$R" redeem "$H"
  echo "after both runs: $STATS; store syncs (fsync rounds) so far: ${SYNCS:-?}"
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
  dwrk warm >/dev/null
  P1=$(dwrk plain-1)
  extra "Your code: {{coupon}}"; wait_reload "Your code:"
  C1=$(dwrk coupon-1)
  extra "Your offer"; wait_reload "Your offer"
  P2=$(dwrk plain-2)
  extra "Your code: {{coupon}}"; wait_reload "Your code:"
  C2=$(dwrk coupon-2)
  ASSIGNED=$(curl -fs "http://127.0.0.1:$PORT/api/v1/campaigns/zz-extra/coupons" | python3 -c 'import json,sys; print(json.load(sys.stdin)["assigned"])')
  stop_server
  trap - EXIT
  echo
  echo "== decide, reference workload + a top campaign (wrk -t1 -c$CONNS -d${DURATION}s), interleaved"
  printf "$FMT" run req/s ratio p50_us p99_us p99.9_us errors "" cpu_us/req steal
  row "decide, plain content (1)" "$P1" plain-1 "$P1"
  row "decide, {{coupon}} in content (1)" "$C1" coupon-1 "$P1"
  row "decide, plain content (2)" "$P2" plain-2 "$P2"
  row "decide, {{coupon}} in content (2)" "$C2" coupon-2 "$P2"
  echo "codes assigned during the coupon runs: $ASSIGNED"
fi
