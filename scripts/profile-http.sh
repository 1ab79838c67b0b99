#!/usr/bin/env bash
# profile-http.sh — user-space instructions per HTTP request, whole server,
# counted by callgrind: for comparing builds where wall-clock figures
# (scripts/bench.sh) swing more than the difference.
#
#   scripts/profile-http.sh [--bin PATH] [--requests N]
#
# Runs PATH (default build/promod, built if missing) under callgrind with
# one worker thread, the repository's rules/ and plugins/ and the 500 demo
# profiles, and counts the instructions of the worker thread (libevent,
# the connection reader, dispatch, handlers; not the kernel, not the
# background threads, whose timers would only add noise) for four loads:
# GET /healthz and POST /api/v1/decide (web/home_banner, limit 3), each on
# one keep-alive connection and on a new connection per request.  Each
# figure is (instructions after 2N requests - after N) / N, so start-up and
# warm-up cancel out.  Needs valgrind (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/build/promod
N=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$(realpath "$2"); shift 2 ;;
    --requests) N=$2; shift 2 ;;
    *) echo "usage: $0 [--bin PATH] [--requests N]" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
if [ "$BIN" = "$ROOT/build/promod" ] && [ ! -x "$BIN" ]; then
  PROMOD_BUILD_TESTS=OFF bash scripts/build.sh release promod >/dev/null
fi
OUT=$(mktemp -d)
trap 'kill $VG 2>/dev/null || true; rm -rf "$OUT"' EXIT
VG=
"$BIN" import profiles scripts/demo/profiles.ndjson --data "$OUT/data" >/dev/null
PORT=${PROFILE_PORT:-18393}

count() { # "healthz|decide" "keepalive|close" n -> instructions of the whole run
  local path=$1 conn=$2 n=$3
  cat > "$OUT/promod.lua" <<CFG
return { listen = "127.0.0.1:$PORT", data_dir = "$OUT/data", rules_dir = "$ROOT/rules",
  plugins_dir = "$ROOT/plugins", log_level = "warn", threads = 1 }
CFG
  rm -f "$OUT"/cg.out*
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$OUT/cg.out" \
    "$BIN" serve -c "$OUT/promod.lua" \
    2>"$OUT/vg.log" &
  VG=$!
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  python3 - "$PORT" "$path" "$conn" "$n" <<'PY'
import socket, sys
port, path, conn, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
body = b'{"customer_id":"c00000042","channel":"web","placement":"home_banner","limit":3}'
if path == "healthz":
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
else:
    req = (b"POST /api/v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n" % len(body))
def one(s, close):
    s.sendall(req + (b"Connection: close\r\n" if close else b"") + b"\r\n" +
              (body if path == "decide" else b""))
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    want = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(rest) < want:
        rest += s.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
s = None
for i in range(n):
    if conn == "close" or s is None:
        s = socket.create_connection(("127.0.0.1", port))
    one(s, conn == "close")
    if conn == "close":
        s.close()
PY
  kill -INT "$VG"
  wait "$VG" 2>/dev/null || true
  VG=
  # the worker is the thread that ran the dispatcher (no early exit in awk:
  # callgrind_annotate would die of SIGPIPE under pipefail)
  callgrind_annotate "$(grep -lE '^fn=\([0-9]+\) dispatch$' "$OUT"/cg.out-* | head -1)" 2>/dev/null |
    awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}'
}

printf '%-10s %-10s %16s\n' request connection "instructions/req"
for path in healthz decide; do
  for conn in keepalive close; do
    a=$(count "$path" "$conn" "$N")
    b=$(count "$path" "$conn" $((2 * N)))
    printf '%-10s %-10s %16s\n' "$path" "$conn" $(( (b - a) / N ))
  done
done
