#!/usr/bin/env bash
# Installs everything the build and the test suite need on a fresh Debian 12 machine.
# Idempotent: each step checks first, so `make test` can call it every time cheaply.
#   system libraries  -> apt (only the missing ones; apt-get update once, when something is missing)
#   Python packages   -> .venv (created with /usr/bin/python3), pinned in tests/requirements.txt
#   JS tooling        -> node_modules (npm ci from package-lock.json; browsers never downloaded: Debian's chromium)
#   newest and oldest -> tests/browser/.frontend/<version> (the comfyui-frontend-package wheels the browser tests
#   frontends            also check, besides the pinned one in tests/requirements.txt)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  python3-dev python3-venv
  libzmq3-dev cppzmq-dev nlohmann-json3-dev libxxhash-dev liblz4-dev libssl-dev zlib1g-dev
  libgtest-dev libgmock-dev libsqlite3-dev
  clang libclang-rt-14-dev
  chromium
)
# Node.js: the machine's own when it has one (the JS tooling wants node >= 20), else Debian's.
command -v node >/dev/null 2>&1 || APT_PACKAGES+=(nodejs)
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(npm)

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

js_stamp=node_modules/.comfymq-lock.sha256
js_want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$js_stamp" ] || [ "$(cat "$js_stamp")" != "$js_want" ]; then
  echo "setup: installing JS tooling (npm ci: typescript, playwright-core, ComfyUI frontend types)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
  echo "$js_want" > "$js_stamp"
fi

# The browser tests also check the newest and the oldest supported frontend besides the pinned one: each version
# named in tests/browser/frontend-{newest,oldest}.txt is unpacked into tests/browser/.frontend/<version>.
front=tests/browser/.frontend
for which in newest oldest; do
  version=$(cat "tests/browser/frontend-$which.txt")
  [ -f "$front/$version/comfyui_frontend_package/static/index.html" ] && continue
  echo "setup: fetching comfyui-frontend-package==$version ($which checked) for the browser tests"
  mkdir -p "$front"
  "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
    "comfyui-frontend-package==$version" -d "$front"
  rm -rf "$front/$version.tmp"
  "$VENV/bin/python" -m zipfile -e "$front/comfyui_frontend_package-$version-py3-none-any.whl" "$front/$version.tmp"
  rm -rf "$front/$version" && mv "$front/$version.tmp" "$front/$version"
  rm -f "$front/comfyui_frontend_package-$version-py3-none-any.whl"
done
