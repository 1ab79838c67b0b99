#!/usr/bin/env bash
# bench-events.sh — NDJSON event ingestion throughput and time-to-visible.
#
#   scripts/bench-events.sh [EVENTS] [URL]
#
# Generates EVENTS (default 200000) events of about 250 bytes each (a mix of
# impressions, clicks, conversions with revenue, sends and a custom type over
# 20,000 customers and 50 campaigns), POSTs them as one NDJSON body with curl,
# and prints events/s.  Then posts one more event and measures how long until
# GET /api/v1/analytics/campaigns/<id> counts it.
#
# URL defaults to a throwaway server this script starts itself (build dir
# from $PROMOD_BIN, default ./build/promod) with max_import_body_mb = 256;
# pass the URL of a running server instead to measure that one.
# Needs: bash, awk, curl.  API key: $PROMOD_KEY (sent as a bearer token).
set -euo pipefail

N=${1:-200000}
URL=${2:-}
BIN=${PROMOD_BIN:-./build/promod}
TMP=$(mktemp -d /tmp/promod-bench-events.XXXXXX)
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

auth=()
[ -n "${PROMOD_KEY:-}" ] && auth=(-H "Authorization: Bearer $PROMOD_KEY")

if [ -z "$URL" ]; then
  mkdir -p "$TMP/rules" "$TMP/plugins" "$TMP/data"
  cat > "$TMP/promod.lua" <<EOF
return { data_dir = "$TMP/data", rules_dir = "$TMP/rules", plugins_dir = "$TMP/plugins",
         max_import_body_mb = 256, log_level = "warn" }
EOF
  "$BIN" serve -c "$TMP/promod.lua" --listen 127.0.0.1:0 --port-file "$TMP/port" 2>"$TMP/server.log" &
  PID=$!
  for _ in $(seq 1 200); do [ -s "$TMP/port" ] && break; sleep 0.05; done
  [ -s "$TMP/port" ] || { echo "server did not start:"; cat "$TMP/server.log"; exit 1; }
  URL="http://127.0.0.1:$(cat "$TMP/port")"
fi

now=$(date +%s)
awk -v n="$N" -v now="$now" 'BEGIN {
  srand(42);
  pad = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
  for (i = 0; i < n; i++) {
    r = rand();
    c = int(rand() * 20000); k = int(rand() * 50); v = (rand() < 0.5) ? "A" : "B";
    ch = (r < 0.1) ? "email" : ((rand() < 0.7) ? "web" : "app");
    ts = now - int(rand() * 86400);
    if (r < 0.60)      t = "impression";
    else if (r < 0.85) t = "click";
    else if (r < 0.90) t = "send";
    else if (r < 0.95) t = "add_to_cart";
    else               t = "conversion";
    extra = (t == "conversion") ? sprintf(",\"revenue\":%.2f,\"currency\":\"EUR\"", rand() * 200) : "";
    printf "{\"type\":\"%s\",\"customer_id\":\"cust%06d\",\"campaign_id\":\"camp%02d\",\"variant\":\"%s\",\"channel\":\"%s\",\"ts\":%d,\"event_id\":\"bench-%d\"%s,\"properties\":{\"page\":\"/p/%d\",\"pad\":\"%s\"}}\n", t, c, k, v, ch, ts, i, extra, i % 977, substr(pad, 1, 40 + i % 30);
  }
}' > "$TMP/events.ndjson"
bytes=$(wc -c < "$TMP/events.ndjson")
echo "body: $N events, $((bytes / 1048576)) MiB"

start=$(date +%s.%N)
curl -sS -o "$TMP/resp.json" -w '%{http_code}\n' "${auth[@]}" -X POST \
  -H 'Content-Type: application/x-ndjson' --data-binary @"$TMP/events.ndjson" \
  "$URL/api/v1/events" > "$TMP/code"
end=$(date +%s.%N)
echo "status: $(cat "$TMP/code") $(head -c 200 "$TMP/resp.json")"
awk -v s="$start" -v e="$end" -v n="$N" 'BEGIN { printf "ingest: %.2f s, %.0f events/s\n", e - s, n / (e - s) }'

# time until one new event is counted by analytics
before=$(curl -sS "${auth[@]}" "$URL/api/v1/analytics/campaigns/visible-probe" | grep -o '"clicks":[0-9]*' | head -1 | cut -d: -f2 || true)
before=${before:-0}
t0=$(date +%s.%N)
curl -sS -o /dev/null "${auth[@]}" -X POST -H 'Content-Type: application/json' \
  -d '{"type":"click","customer_id":"probe","campaign_id":"visible-probe"}' "$URL/api/v1/events"
for _ in $(seq 1 1000); do
  got=$(curl -sS "${auth[@]}" "$URL/api/v1/analytics/campaigns/visible-probe" | grep -o '"clicks":[0-9]*' | head -1 | cut -d: -f2 || true)
  [ "${got:-0}" -gt "$before" ] && break
  sleep 0.01
done
t1=$(date +%s.%N)
awk -v s="$t0" -v e="$t1" 'BEGIN { printf "visible in analytics after: %.3f s (POST included)\n", e - s }'
