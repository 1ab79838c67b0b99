#!/usr/bin/env bash
# bench-outbox.sh — outbound delivery figures on a release build.
#
#   scripts/bench-outbox.sh [--messages N] [--profiles N] [--out DIR]
#
# 1. Outbox drain: a webhook campaign over N profiles (default 50,000) is
#    launched against the test suite's local HTTP receiver (a libevent
#    server in the test process); prints messages/s between the first and
#    the last delivery (the drain) and end to end (launch to last delivery).
#    Target: >= 5,000 messages/s.
# 2. Audience evaluation: the reference profiles (../shared/bench,
#    default 1,000,000) imported offline with `promod import profiles`, then
#    one targeted email campaign launched; prints profiles evaluated per
#    second (consent, eligible in Lua, content, render, caps, enqueue).
#    Target: >= 100,000 profiles/s.
#
# Both run as Criterion tests (tests/integration/test_bench_outbox.c, skipped
# unless PROMOD_BENCH=1) so they use exactly the shipped server binary and
# the same receiver as the delivery tests.  Lines starting with BENCH are the
# figures.  A shared 2-core machine drifts from run to run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${PROMOD_SHARED:-$ROOT/../shared}
MESSAGES=50000
PROFILES=1000000
OUT=$ROOT/bench-out
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) MESSAGES=$2; shift 2 ;;
    --profiles) PROFILES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--messages N] [--profiles N] [--out DIR]" >&2; exit 2 ;;
  esac
done

bash scripts/build.sh release >/dev/null
WL=$OUT/workload-$PROFILES
mkdir -p "$OUT"
if [ ! -f "$WL/profiles.ndjson" ]; then
  echo "== generating the reference workload ($PROFILES profiles)"
  python3 "$SHARED/bench/gen_workload.py" "$WL" --profiles "$PROFILES" >/dev/null
fi

echo "== outbox drain ($MESSAGES messages to a local receiver)"
PROMOD_BENCH=1 PROMOD_BENCH_MESSAGES=$MESSAGES \
  ./build/test_bench_outbox -j1 --filter 'bench/outbox_drain' 2>&1 | grep -E '^BENCH|FAIL|target' || true

echo "== audience evaluation ($PROFILES reference profiles, one campaign)"
PROMOD_BENCH=1 PROMOD_BENCH_PROFILES=$WL/profiles.ndjson \
  ./build/test_bench_outbox -j1 --filter 'bench/audience_reference_profiles' 2>&1 | grep -E '^BENCH|FAIL|target' || true
