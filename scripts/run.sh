#!/usr/bin/env bash
# run.sh — from a fresh machine to a running demo server in one command:
# install dependencies, build (release), load the demo profiles into
# ./data, then serve with config/promod.lua (rules in rules/, channel
# plugins in plugins/) on http://127.0.0.1:8080.
#
#   scripts/run.sh            # Ctrl-C (SIGTERM) stops the server cleanly
#
# The import replaces the demo profiles by id; other data in ./data stays.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/build.sh release promod   # the server only: tests are scripts/test.sh's job

# The demo file is committed; regenerate it only if someone deleted it.
if [ ! -s scripts/demo/profiles.ndjson ]; then
  python3 scripts/demo/gen_profiles.py > scripts/demo/profiles.ndjson
fi

build/promod import profiles scripts/demo/profiles.ndjson -c config/promod.lua --data ./data

cat <<'MSG'

promod is starting on http://127.0.0.1:8080 — try:
  curl -s localhost:8080/healthz
  curl -s localhost:8080/api/v1/profiles/c00000042
  curl -s -X POST localhost:8080/api/v1/decide \
       -d '{"customer_id":"c00000042","channel":"web","placement":"home_banner","explain":true}'
MSG
exec build/promod serve -c config/promod.lua
