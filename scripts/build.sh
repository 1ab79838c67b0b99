#!/usr/bin/env bash
# build.sh — configure and build promod (and its test suites).
#
#   scripts/build.sh [release|asan|fuzz] [TARGET]
#
#   release (default)  optimised build in build/        -> build/promod
#   asan               AddressSanitizer + UBSan in build-asan/
#   fuzz               clang, libFuzzer + ASan + UBSan in build-fuzz/: the
#                      fuzz targets (build-fuzz/fuzz_*), no test suites
#   TARGET             build only that target (e.g. "promod": the server alone)
#
# Warnings are errors.  Uses every core (nproc) for the compile.  The test
# suites are built too (they are what scripts/test.sh runs); set
# PROMOD_BUILD_TESTS=OFF to build only the server.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-release}
case "$mode" in
  release) dir=build;      args=(-DCMAKE_BUILD_TYPE=Release) ;;
  asan)    dir=build-asan; args=(-DCMAKE_BUILD_TYPE=Debug -DPROMOD_SANITIZE=ON) ;;
  fuzz)    dir=build-fuzz; args=(-DCMAKE_BUILD_TYPE=Debug -DPROMOD_FUZZ=ON -DCMAKE_C_COMPILER=clang)
           PROMOD_BUILD_TESTS=OFF ;;
  *) echo "usage: $0 [release|asan|fuzz] [TARGET]" >&2; exit 2 ;;
esac

cmake -S . -B "$dir" "${args[@]}" -DPROMOD_TESTS="${PROMOD_BUILD_TESTS:-ON}" >/dev/null
target=${2:-}
cmake --build "$dir" -j"$(nproc 2>/dev/null || echo 2)" ${target:+--target "$target"}
echo "build: $dir/promod ($mode)"
