#!/usr/bin/env bash
# bench-predict.sh — nanoseconds, heap allocations and Lua bytes per model
# prediction on the worker (features read from p and ctx, 200 trees of
# depth 6: the reference "nba" model), measured by scripts/bench_predict.c
# on a release build.
#
#   scripts/bench-predict.sh [--iterations N] [--rounds R] [--gc-every K]
#   scripts/bench-predict.sh --instructions [--gc-every K]
#
# Rows run interleaved round by round; the median and the fastest round
# are printed, with the load average and the CPU steal seen over the run:
# wall-clock figures drift with steal on a shared machine, compare rows of
# one run.  --instructions counts instructions per prediction of each row
# under valgrind's callgrind instead (runs of 2,000 and 4,000 predictions,
# the difference / 2,000: start-up cancels out), which load does not move.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target bench_predict -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
if [ "${1:-}" = "--instructions" ]; then
  shift
  ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null ./build/bench_predict \
           --rounds 1 --row "$1" --iterations "$2" "${@:3}" 2>&1 >/dev/null |
         awk '/Collected :/{print $NF}'; }
  names=("keys kept (this branch)" "keys not kept (before)" "trees only")
  echo "instructions per prediction (callgrind, (Ir(4000) - Ir(2000)) / 2000) $*"
  for row in 0 1 2; do
    a=$(ir $row 2000 "$@"); b=$(ir $row 4000 "$@")
    printf '%-26s %10.0f\n' "${names[$row]}" "$(awk -v a="$a" -v b="$b" 'BEGIN{print (b-a)/2000}')"
  done
  exit 0
fi
steal() { awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
read -r s0 t0 < <(steal)
./build/bench_predict "$@"
read -r s1 t1 < <(steal)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); steal over the run: $(awk -v a=$((s1-s0)) -v b=$((t1-t0)) 'BEGIN{printf "%.1f %%", b ? 100*a/b : 0}')"
