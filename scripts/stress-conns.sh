#!/usr/bin/env bash
# stress-conns.sh — the reproducer of issue 13's "a connection now and then
# ends with no reply": the server with the demo profiles and rules, then
# scripts/stress-conns.py (N simultaneous connections per round, one dry-run
# decide each, busy loops competing for the CPU).  Prints the rounds, and
# the server's promod_http_head_deadline_deferred_total and
# promod_http_idle_closed_total counters.
#
#   scripts/stress-conns.sh [--conns N] [--rounds R] [--burners B] [--header-timeout S] [--bin PATH]
#
# --header-timeout (default 10, the server's default) shorter makes the
# race easier to reach on a fast machine; --bin runs another build.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CONNS=1000 ROUNDS=5 BURNERS=2 HT=10 BIN=$ROOT/build/promod
PORT=${STRESS_PORT:-18491}
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) CONNS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --burners) BURNERS=$2; shift 2 ;;
    --header-timeout) HT=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    *) echo "usage: $0 [--conns N] [--rounds R] [--burners B] [--header-timeout S] [--bin PATH]" >&2; exit 2 ;;
  esac
done
[ -x "$BIN" ] || PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
RUN=$(mktemp -d "${TMPDIR:-/tmp}/promod-stress.XXXXXX")
mkdir -p "$RUN/rules" "$RUN/plugins"
cp -r plugins/. "$RUN/plugins/"
cp -r rules/. "$RUN/rules/"
"$BIN" import profiles scripts/demo/profiles.ndjson --data "$RUN/data" >/dev/null
cat > "$RUN/promod.lua" <<CFG
return { listen = "127.0.0.1:$PORT", data_dir = "$RUN/data", rules_dir = "$RUN/rules",
  plugins_dir = "$RUN/plugins", segments_dir = "$RUN/segments",
  models_dir = "$RUN/models", log_level = "warn", threads = 2,
  header_timeout = $HT }
CFG
"$BIN" serve -c "$RUN/promod.lua" 2>>"$RUN/server.log" &
PID=$!
cleanup() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$RUN"; }
trap cleanup EXIT
for _ in $(seq 1 600); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "load before: $(cat /proc/loadavg)"
python3 scripts/stress-conns.py "$PORT" --conns "$CONNS" --rounds "$ROUNDS" --burners "$BURNERS"
RC=$?
echo "load after: $(cat /proc/loadavg)"
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^promod_http_(head_deadline_deferred|idle_closed)_total'
exit $RC
