#!/usr/bin/env bash
# fuzz.sh — build the libFuzzer targets (fuzz/fuzz_*.c; clang, ASan+UBSan,
# build-fuzz/) and run them.
#
#   scripts/fuzz.sh [--time SECONDS] [TARGET ...]    long runs (default 3600 s each)
#   scripts/fuzz.sh --smoke [--time SECONDS] TARGET  the short run test.sh makes
#   scripts/fuzz.sh --list                           the target names
#
# Long runs: one target after the other (the machine has 2 cores shared
# with others: one fuzzing process at a time, niced).  Each target reads
# the committed seeds in fuzz/corpus/<target>/ and grows its own corpus in
# fuzz-out/<target>/corpus/ (kept between runs: a second run continues
# where the first stopped); crashes, leaks, timeouts and out-of-memory
# inputs are saved as fuzz-out/<target>/crash-* (leak-*, timeout-*,
# oom-*) and the log in fuzz-out/<target>/log.  Replay one with
# build-fuzz/fuzz_<target> FILE.  The last line per target gives the runs,
# the time, the coverage and the number of findings.
#
# --smoke: SECONDS (default 20) on the committed seeds, with a throwaway
# corpus; exits non-zero when the target crashes or a sanitizer reports
# anything, so test.sh fails.
#
# Targets (fuzz/README.md says what each covers): json msgpack tmpl config
# rules import events http cond.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

mode=long
secs=
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) mode=smoke; shift ;;
    --time) secs=$2; shift 2 ;;
    --list) mode=list; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

all=()
for f in fuzz/fuzz_*.c; do
  n=$(basename "$f" .c)
  all+=("${n#fuzz_}")
done
if [ "$mode" = list ]; then
  printf '%s\n' "${all[@]}"
  exit 0
fi
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_$t.c" ] || { echo "fuzz.sh: no target $t (have: ${all[*]})" >&2; exit 2; }
done

if [ -z "${PROMOD_FUZZ_NO_BUILD:-}" ]; then
  bash scripts/build.sh fuzz >/dev/null || { echo "fuzz.sh: the fuzz build failed" >&2; exit 1; }
fi

# Per-target libFuzzer options: inputs are capped near what the server
# takes per request; a single input may run 20 s (a Lua file under its
# budget, an import with fsyncs) before it counts as a hang.
opts() {
  local t=$1
  local o=(-timeout=20 -rss_limit_mb=3072 -print_final_stats=1)
  case "$t" in
    http) o=(-timeout=120 -rss_limit_mb=3072 -print_final_stats=1 -max_len=65536) ;;
    import|events) o+=(-max_len=65536) ;;
    rules|config) o+=(-max_len=16384) ;;
    *) o+=(-max_len=8192) ;;
  esac
  printf '%s\n' "${o[@]}"
}

summary() { # log -> "runs=N cov=N ft=N": runs summed over the processes the log holds
  awk '/^#[0-9]+:?[ \t].*cov: / {n=$1; gsub(/[#:]/, "", n); last=n
                             for (i=1;i<=NF;i++) {if ($i=="cov:") c=$(i+1); if ($i=="ft:") f=$(i+1)}}
       /stat::number_of_executed_units/ {r+=$2; last=0}
       END {r+=last; printf "runs=%s cov=%s ft=%s", r ? r : "?", c ? c : "?", f ? f : "?"}' "$1"
}

if [ "$mode" = smoke ]; then
  secs=${secs:-20}
  status=0
  for t in "${targets[@]}"; do
    tmp=$(mktemp -d)
    mkdir -p "$tmp/corpus"
    mapfile -t o < <(opts "$t")
    start=$(date +%s)
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
      nice "build-fuzz/fuzz_$t" "${o[@]}" -max_total_time="$secs" -artifact_prefix="$tmp/" \
        "$tmp/corpus" "fuzz/corpus/$t" >"$tmp/log" 2>&1
    rc=$?
    found=$(find "$tmp" -maxdepth 1 -name 'crash-*' -o -maxdepth 1 -name 'leak-*' -o -maxdepth 1 -name 'timeout-*' -o -maxdepth 1 -name 'oom-*' | head -1)
    if [ $rc -ne 0 ] || [ -n "$found" ]; then
      echo "fuzz $t: FAILED (exit $rc, $(( $(date +%s) - start )) s) — log:"
      tail -60 "$tmp/log"
      if [ -n "$found" ]; then
        mkdir -p fuzz-out/smoke
        cp "$found" fuzz-out/smoke/
        echo "fuzz $t: input kept as fuzz-out/smoke/$(basename "$found"); replay: build-fuzz/fuzz_$t fuzz-out/smoke/$(basename "$found")"
      fi
      status=1
    else
      echo "fuzz $t: ok ($(summary "$tmp/log"), $(( $(date +%s) - start )) s)"
    fi
    rm -rf "$tmp"
  done
  exit $status
fi

secs=${secs:-3600}
for t in "${targets[@]}"; do
  out=$ROOT/fuzz-out/$t
  mkdir -p "$out/corpus"
  mapfile -t o < <(opts "$t")
  echo "== fuzz $t for $secs s (log: $out/log)"
  start=$(date +%s)
  # One process at a time; after a finding (which stops libFuzzer) start
  # again from the grown corpus until the time is used up.  Each finding's
  # report stays in the log, next to its input.
  while :; do
    left=$(( secs - ($(date +%s) - start) ))
    [ "$left" -gt 5 ] || break
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
      nice "build-fuzz/fuzz_$t" "${o[@]}" -max_total_time="$left" -artifact_prefix="$out/" \
        "$out/corpus" "fuzz/corpus/$t" >>"$out/log" 2>&1 || true
  done
  n=$(find "$out" -maxdepth 1 \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  echo "fuzz $t: $(( $(date +%s) - start )) s, $(summary "$out/log"), corpus $(find "$out/corpus" -type f | wc -l) files, findings $n"
done
