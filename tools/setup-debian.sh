#!/usr/bin/env bash
# Installs everything the build and the test suite need on a fresh Debian 12 machine.
# Idempotent: each step checks first, so `make test` can call it every time cheaply.
#   system libraries  -> apt (only the missing ones; apt-get update once, when something is missing)
#   Python packages   -> .venv (created with /usr/bin/python3), pinned in tests/requirements.txt
#   JS tooling        -> tests/browser/node_modules (npm ci), only when tests/browser/package.json exists
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  python3-dev python3-venv
  libzmq3-dev cppzmq-dev nlohmann-json3-dev libxxhash-dev libssl-dev zlib1g-dev
  libgtest-dev libgmock-dev libsqlite3-dev
  clang libclang-rt-14-dev
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV=.venv
REQ=tests/requirements.txt
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  /usr/bin/python3 -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing pinned Python packages from $REQ"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
  echo "$want" > "$stamp"
fi

if [ -f tests/browser/package.json ]; then
  if [ ! -d tests/browser/node_modules ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules ]; then
    echo "setup: installing JS tooling (npm ci)"
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
  fi
fi
