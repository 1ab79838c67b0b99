#!/usr/bin/env bash
# profile-redeem.sh — user-space instructions per coupon redemption,
# validation and /healthz, counted by callgrind.
#
#   scripts/profile-redeem.sh [--requests N] [--connections C] [--top K]
#
# Runs the release server under valgrind's callgrind (one worker thread)
# with a budgeted campaign and single-use codes, then sends N requests of
# each kind over C keep-alive connections at once: GET /healthz, POST
# /api/v1/coupons/validate and POST /api/v1/coupons/redeem (each a
# different code, customer and order).  Counted: the request dispatcher,
# the redemption writer thread, and the callbacks that send answers given
# later or held for the flush — everything a request costs in user space.
# Prints instructions per request of each kind and, for redeem, the K most
# expensive functions (inclusive).  Kernel time (sockets, page faults, the
# flush) is not counted: scripts/bench-redeem.sh measures it as CPU per
# request.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=2000
C=16
TOP=25
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) N=$2; shift 2 ;;
    --connections) C=$2; shift 2 ;;
    --top) TOP=$2; shift 2 ;;
    *) echo "usage: $0 [--requests N] [--connections C] [--top K]" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
bash scripts/setup.sh >/dev/null
PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
OUT=$ROOT/bench-out/profile-redeem
rm -rf "$OUT"
mkdir -p "$OUT/rules" "$OUT/plugins"
cp -r plugins/. "$OUT/plugins/"
cat > "$OUT/rules/checkout.lua" <<'LUA'
return {
  id = "checkout", name = "Checkout coupons", channels = { "web" },
  budget = { amount = 100000000, currency = "EUR", per = "campaign" },
  variants = { { id = "A", weight = 1, content = { headline = "Your code: {{coupon}}" } } },
  eligible = function(p, ctx) return true end,
}
LUA
PORT=${PROFILE_PORT:-18384}
cat > "$OUT/promod.lua" <<CFG
return { listen = "127.0.0.1:$PORT", data_dir = "$OUT/data", rules_dir = "$OUT/rules",
  plugins_dir = "$OUT/plugins", log_level = "warn", map_size_mb = 1024, threads = 1 }
CFG
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
  --toggle-collect=dispatch --toggle-collect=writer_main --toggle-collect=ready_cb \
  --toggle-collect=flush_cb ./build/promod serve -c "$OUT/promod.lua" 2>"$OUT/valgrind.log" &
VG=$!
trap 'kill $VG 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "http://127.0.0.1:$PORT/api/v1/campaigns/checkout/coupons" \
  -d "{\"generate\":{\"count\":$((2 * N)),\"length\":10},\"max_uses\":1}" > "$OUT/codes.json"
phase() { # kind
  callgrind_control -z "$VG" >/dev/null
  python3 - "$PORT" "$N" "$C" "$1" "$OUT/codes.json" <<'PY'
import http.client, json, sys, threading
port, n, conns, kind, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
codes = json.load(open(path))["codes"]
nxt = [0]; lock = threading.Lock(); bad = []
def run():
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=600)
    while True:
        with lock:
            i = nxt[0]; nxt[0] += 1
        if i >= n: return
        if kind == 'healthz':
            c.request('GET', '/healthz')
        else:
            code = codes[i] if kind == 'redeem' else codes[n + i]
            body = {'code': code, 'customer_id': 'p%d' % i, 'amount': 1 + i % 9, 'currency': 'EUR'}
            if kind == 'redeem': body['order_id'] = 'o%d' % i
            c.request('POST', '/api/v1/coupons/' + kind, json.dumps(body), {'Content-Type': 'application/json'})
        r = c.getresponse(); d = r.read()
        if r.status != 200: bad.append('%s %d %s' % (kind, r.status, d[:200]))
ts = [threading.Thread(target=run) for _ in range(conns)]
[t.start() for t in ts]; [t.join() for t in ts]
if bad: sys.exit('%d failed, first: %s' % (len(bad), bad[0]))
PY
  callgrind_control -d "$1" "$VG" >/dev/null
}
phase healthz
phase validate
phase redeem
BATCHES=$(curl -fs "http://127.0.0.1:$PORT/metrics" | awk '/^promod_coupon_redeem_batch(es|ed)_total/ {v[$1]=$2} END {printf "%d redemptions in %d batches", v["promod_coupon_redeem_batched_total"], v["promod_coupon_redeem_batches_total"]}')
kill $VG; wait $VG 2>/dev/null || true
trap - EXIT
per() { # dump file -> instructions per request (k)
  local t
  t=$(callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
  python3 -c "print('%.1f' % (${t:-0} / $N / 1000))"
}
# the dumps are numbered in the order of the phases
i=0
for k in healthz validate redeem; do
  i=$((i + 1))
  f=$OUT/callgrind.out.$i
  echo "$k: $(per "$f") k instructions per request (user space)"
  RF=$f
done
echo "($BATCHES; $C connections, one worker thread)"
echo "most expensive functions of a redemption (inclusive, per request):"
callgrind_annotate --inclusive=yes "$RF" 2>/dev/null |
  sed -nE 's/^ *([0-9,]+) \( *[0-9.]+%\)  (.*)$/\1 \2/p' | tr -d ',' |
  awk -v n="$N" '{fn = $2; sub(/^.*:/, "", fn); lib = $3; gsub(/[][]/, "", lib); sub(/^.*\//, "", lib);
                  printf "%10.1f k  %s (%s)\n", $1 / n / 1000, fn, lib}' |
  grep -v -E "^ .*(clone|start_thread|event_base|worker_main|PROGRAM|0x0)" | head -"$TOP"
