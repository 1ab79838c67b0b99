#!/usr/bin/env bash
# build.sh — configure and build promod (and its test suites).
#
#   scripts/build.sh [release|asan]
#
#   release (default)  optimised build in build/        -> build/promod
#   asan               AddressSanitizer + UBSan in build-asan/
#
# Warnings are errors.  Uses every core (nproc) for the compile.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-release}
case "$mode" in
  release) dir=build;      args=(-DCMAKE_BUILD_TYPE=Release) ;;
  asan)    dir=build-asan; args=(-DCMAKE_BUILD_TYPE=Debug -DPROMOD_SANITIZE=ON) ;;
  *) echo "usage: $0 [release|asan]" >&2; exit 2 ;;
esac

cmake -S . -B "$dir" "${args[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc 2>/dev/null || echo 2)"
echo "build: $dir/promod ($mode)"
