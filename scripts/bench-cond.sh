#!/usr/bin/env bash
# bench-cond.sh — nanoseconds and heap allocations per cond_eval (GrowthBook
# conditions evaluated on a msgpack profile), measured by
# scripts/bench_cond.c on a release build.
#
#   scripts/bench-cond.sh [--iterations N]     (default 1,000,000 per run)
#
# Prints one row per condition: the median and fastest of five runs in ns
# per evaluation, heap allocations per evaluation, and the result.  The
# last row decodes the profile into a jansson tree before every
# evaluation, for comparison.  Figures drift with CPU steal on a shared
# machine: compare rows of one run, quote the median.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target bench_cond -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
exec ./build/bench_cond "$@"
