# bench-lib.sh — what the benchmark scripts share (sourced, not run):
# finding the shared reference workload, a free port, starting and
# stopping a server, the server's CPU ticks, the host's steal, medians.
# The caller sets ROOT (the checkout) before sourcing it.

# ../shared (the reference workload's generator), also from a worktree
bench_shared() {
  local s=${PROMOD_SHARED:-$ROOT/../shared}
  [ -d "$s" ] || s=$(cd "$(git -C "$ROOT" rev-parse --path-format=absolute --git-common-dir)/../.." && pwd)/shared
  echo "$s"
}

# the reference workload of N profiles in DIR (generated once)
bench_workload() { # dir profiles
  if [ ! -f "$1/customers.txt" ]; then
    echo "== generating the reference workload ($2 profiles, 500 campaigns)" >&2
    python3 "$(bench_shared)/bench/gen_workload.py" "$1" --profiles "$2" >/dev/null
  fi
}

bench_free_port() { # other servers may be running on this machine
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

SERVER_PID=
bench_start_server() { # binary config log: waits for /healthz on $PORT
  "$1" serve -c "$2" 2>>"$3" &
  SERVER_PID=$!
  for _ in $(seq 1 400); do
    kill -0 "$SERVER_PID" 2>/dev/null || break # ours died: not someone else's server on the port
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server did not start; see $3" >&2
  exit 1
}
bench_stop_server() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# the server's user+system and system CPU ticks, and its minor faults
bench_cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
bench_sys_ticks() { awk '{print $15}' "/proc/$SERVER_PID/stat"; }
bench_minflt() { awk '{print $10}' "/proc/$SERVER_PID/stat"; }
# the CPU ticks of the server's threads named NAME* (worker-0, worker-1 ...:
# the request workers; dlog-writer: the decision log's writer)
bench_thread_ticks() { # name-prefix
  local t
  for t in /proc/"$SERVER_PID"/task/*; do
    case "$(cat "$t/comm" 2>/dev/null)" in "$1"*) awk '{print $14 + $15}' "$t/stat" ;; esac
  done | awk '{s += $1} END {print s + 0}'
}

# "steal total" ticks of the host, for the steal over a run
bench_steal() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
bench_steal_pct() { # st0 tot0 st1 tot1
  python3 -c "print('%.1f%%' % (100 * ($3 - $1) / max(1, $4 - $2)))"
}

bench_median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2] + a[NR/2+1]) / 2}'; }
