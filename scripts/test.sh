#!/usr/bin/env bash
# test.sh — everything CI runs: dependencies, a release build and an
# ASan+UBSan build, and every Criterion suite (ctest) in both; then the
# libFuzzer build (clang) and a short run of every fuzz target under
# ASan+UBSan.  Prints one final line "N passed, N failed" (ctest test
# programs of both builds, plus one per fuzz target) and exits non-zero on
# any failure or build error.  The layering check of core/
# (scripts/check-layers.py) counts as one more test, and so do two suites
# run against the release build: the web console in a headless chromium
# (tests/browser/test_console.py; `--shots docs/screenshots` refreshes the
# README's screenshots, a test run leaves them alone) and the
# Prometheus/Grafana kit in deploy/ (tests/deploy/test_kit.py, promtool).
#
#   scripts/test.sh
#
# PROMOD_TEST_JOBS sets ctest's parallelism (default 2: the suites use
# their own temp dirs and port 0, so they do not conflict).
# PROMOD_FUZZ_SECONDS sets the run of each fuzz target (default 20; 0
# skips the fuzz step).  20 s x 9 targets keeps the step near three and a
# half minutes on a shared two-core machine: enough to replay every seed and
# catch what breaks near them (a crash found later in a long run gets its
# input committed as a seed, so it is replayed here from then on); the
# deep search is scripts/fuzz.sh's job (hours per target).
set -uo pipefail
cd "$(dirname "$0")/.."

jobs=${PROMOD_TEST_JOBS:-2}
passed=0
failed=0

bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

# ctest prints "N% tests passed, F tests failed out of T": take F and T.
run_suite() { # name dir [env...]
  local name=$1 dir=$2
  shift 2
  echo "=== $name: ctest in $dir"
  local log
  log=$(mktemp)
  env "$@" ctest --test-dir "$dir" --output-on-failure -j"$jobs" 2>&1 | tee "$log"
  local line total fail
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
  rm -f "$log"
  if [ -z "$line" ]; then
    echo "=== $name: ctest gave no summary (crashed or found no tests)"
    failed=$((failed + 1))
    return
  fi
  total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
  fail=$(sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/' <<<"$line")
  passed=$((passed + total - fail))
  failed=$((failed + fail))
}

build() { # mode
  if ! bash scripts/build.sh "$1"; then
    echo "=== build $1 failed"
    failed=$((failed + 1))
    return 1
  fi
}

# The layering check (core/ folders include only downward, no circles):
# the real tree must pass, and each tree under tests/layers/ must get the
# verdict its name says, so the check itself is tested.
check_layers() {
  echo "=== layers"
  local ok=1 out
  python3 scripts/check-layers.py . || ok=0
  python3 scripts/check-layers.py tests/layers/ok >/dev/null || { echo "layers: ok/ refused"; ok=0; }
  for t in up:"from a higher layer" circle:"circle between modules" nofolder:"without its folder"; do
    out=$(python3 scripts/check-layers.py "tests/layers/${t%%:*}") && { echo "layers: ${t%%:*}/ accepted"; ok=0; }
    grep -q "${t#*:}" <<<"$out" || { echo "layers: ${t%%:*}/ not refused for the right reason: $out"; ok=0; }
  done
  if [ $ok -eq 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

# A Python suite (/usr/bin/python3: Debian's selenium and yaml) that prints
# its own summary and exits non-zero on failure: one test.
run_py() { # name script args...
  local name=$1
  shift
  echo "=== $name"
  if /usr/bin/python3 "$@"; then passed=$((passed + 1)); else echo "=== $name failed"; failed=$((failed + 1)); fi
}

start=$(date +%s)
check_layers
if build release; then
  run_suite release build
  run_py "browser: the web console in headless chromium" tests/browser/test_console.py --bin build/promod
  run_py "deploy: Prometheus and Grafana kit" tests/deploy/test_kit.py --bin build/promod
fi
if build asan; then
  run_suite asan build-asan \
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
fuzz_secs=${PROMOD_FUZZ_SECONDS:-20}
if [ "$fuzz_secs" != 0 ]; then
  if build fuzz; then
    for t in $(bash scripts/fuzz.sh --list); do
      if PROMOD_FUZZ_NO_BUILD=1 bash scripts/fuzz.sh --smoke --time "$fuzz_secs" "$t"; then
        passed=$((passed + 1))
      else
        failed=$((failed + 1))
      fi
    done
  fi
fi
echo "=== $(( $(date +%s) - start )) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
