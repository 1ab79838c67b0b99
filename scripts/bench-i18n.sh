#!/usr/bin/env bash
# bench-i18n.sh — microseconds per locale-aware format (ICU, base/i18n.h) as
# templates' format filters call it ({{price|currency:EUR}}), measured by
# scripts/bench_i18n.c on a release build.
#
#   scripts/bench-i18n.sh [--iterations N]     (default 200,000 per run)
#
# Rows: money, a number and a date from the per-thread formatter cache, and
# a number with the cache defeated (every call opens a formatter).  Median
# and fastest of five runs; figures drift with CPU steal on a shared
# machine: compare rows of one run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target bench_i18n -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
exec ./build/bench_i18n "$@"
