#!/usr/bin/env bash
# profile-coupon-decide.sh — user-space instructions per decide with the
# top campaign's content plain and with {{coupon}}, counted by callgrind.
#
#   scripts/profile-coupon-decide.sh [N]
#
# Needs the store left by `scripts/bench-redeem.sh --part decide`
# (bench-out/coupon-decide-run: the reference workload's 1M profiles and
# 500 campaigns, a top-priority web campaign "zz-extra" with 600,000
# codes).  One server under callgrind (one worker); N decides (default
# 800, one keep-alive connection, random known customers) per phase:
#   1 plain, 2 {{coupon}} (customers seen for the first time: a code is
#   assigned in the decide's reservation transaction), 3 plain, 4
#   {{coupon}} (other new customers), 5 {{coupon}} again for the customers
#   of 4 (their codes are already assigned).
# Counts are of the request dispatcher; kernel time (the commit's page
# faults and flush) is not in them.  The store is changed (assignments).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-800}
D=bench-out/coupon-decide-run
WL=bench-out/workload-1000000
OUT=bench-out/profile-coupon-decide
rm -rf "$OUT"; mkdir -p "$OUT"
PORT=18385
sed "s/127.0.0.1:18191/127.0.0.1:$PORT/; s/map_size_mb = 8192,/map_size_mb = 8192, threads = 1,/" $D/promod.lua > $OUT/promod.lua
extra() {
cat > "$D/rules/zz-extra.lua.tmp" <<LUA
return {
  id = "zz-extra", name = "Top offer", channels = { "web" }, priority = 100000,
  variants = { { id = "A", weight = 1, content = { headline = "$1", body = "Up to 30% off, {{first_name|friend}}" } } },
  eligible = function(p, ctx) return true end,
}
LUA
mv "$D/rules/zz-extra.lua.tmp" "$D/rules/zz-extra.lua"
}
wait_reload() {
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$PORT/api/v1/decide" -d '{"customer_id":"warm-1","channel":"web","placement":"home_banner","dry_run":true}' | grep -q "$1" && return 0
    sleep 0.2
  done; echo "no reload" >&2; exit 1
}
extra "Your offer"
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" --toggle-collect=dispatch \
  ./build/promod serve -c "$OUT/promod.lua" 2>"$OUT/valgrind.log" &
VG=$!
trap 'kill $VG 2>/dev/null || true' EXIT
for _ in $(seq 1 900); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
phase() { # seed
  callgrind_control -z "$VG" >/dev/null
  python3 - "$PORT" "$N" "$WL/customers.txt" "$1" <<'PY'
import http.client, random, sys
port, n, path, seed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ids = open(path).read().split()
random.seed(seed)
c = http.client.HTTPConnection('127.0.0.1', port, timeout=600)
offers = coupons = 0
for _ in range(n):
    body = '{"customer_id":"%s","channel":"web","placement":"home_banner","limit":3}' % random.choice(ids)
    c.request('POST', '/api/v1/decide', body, {'Content-Type': 'application/json'})
    r = c.getresponse(); d = r.read()
    if r.status != 200: sys.exit('decide %d %s' % (r.status, d[:200]))
    offers += d.count(b'"campaign_id"'); coupons += d.count(b'Your code: ')
print('decides %d offers %d with a code %d' % (n, offers, coupons))
PY
  callgrind_control -d "$VG" >/dev/null
}
phase 101                     # .1 plain
extra "Your code: {{coupon}}"; wait_reload "Your code:"
phase 202                     # .2 coupon, new customers: assignments
extra "Your offer"; wait_reload "Your offer"
phase 303                     # .3 plain
extra "Your code: {{coupon}}"; wait_reload "Your code:"
phase 404                     # .4 coupon
phase 404                     # .5 coupon, the same customers again: codes already assigned
kill $VG; wait $VG 2>/dev/null || true
trap - EXIT
for i in 1 2 3 4 5; do
  t=$(callgrind_annotate "$OUT/callgrind.out.$i" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
  echo "dump $i: $(python3 -c "print('%.1f' % ($t / $N / 1000))") k instructions per decide"
done
