#!/usr/bin/env bash
# setup.sh — install what promod needs to build, test and benchmark on a
# Debian/Ubuntu machine.  Only missing packages are installed; `apt-get
# update` runs once, and only when something is missing.  Uses sudo when
# not root.  Safe to run again: with everything present it does nothing.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  libluajit-5.1-dev libevent-dev libmsgpack-dev liblmdb-dev libjansson-dev
  libcriterion-dev libssl-dev libpcre2-dev
  libxgboost-dev liblinear-dev python3-sklearn
  libicu-dev # locale formatting of numbers, money and dates in templates (core/base/i18n.c)
  tzdata wrk lmdb-utils python3 curl openssl
  clang libclang-rt-14-dev
  chromium chromium-driver python3-selenium python3-yaml prometheus
  python3-scipy # reference statistics for tests/unit/test_stats.c (stats_ref.py)
)

# No pipe into grep -q here: with pipefail, grep leaving early makes a long
# `dpkg -s` (prometheus lists many conffiles) die of SIGPIPE, and the
# package would count as missing.
installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for p in "${PKGS[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages present"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: missing ${missing[*]} and apt-get is not available; install them by hand" >&2
  exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "setup: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "setup: installing ${missing[*]}"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

still=()
for p in "${missing[@]}"; do
  installed "$p" || still+=("$p")
done
if [ ${#still[@]} -ne 0 ]; then
  echo "setup: still missing after apt-get: ${still[*]}" >&2
  exit 1
fi
echo "setup: done"
