"""What ComfyUI-Manager runs after cloning: builds the native module for the Python running this script.

    python install.py          (from the repository folder, with ComfyUI's Python)

It installs the two build helpers it needs from PyPI if they are missing (pybind11, and cmake/ninja when the
system has none), configures CMake for sys.executable, and builds only the Python module, which lands in
comfy_nodes/. System libraries (ZeroMQ, nlohmann/json, xxHash, OpenSSL) must be installed; if one is missing
the error says which package to install. Exit status 0 on success, 1 with a one-paragraph reason otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PINS = {"pybind11": "pybind11==3.1.0", "cmake": "cmake==4.4.4", "ninja": "ninja==1.13.2"}
APT_HINT = ("sudo apt-get install build-essential cmake ninja-build pkg-config python3-dev "
            "libzmq3-dev cppzmq-dev nlohmann-json3-dev libxxhash-dev libssl-dev")


def pip_install(*pkgs: str) -> None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", *pkgs])


def tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    scripts = Path(sys.executable).parent
    candidate = scripts / name
    return str(candidate) if candidate.exists() else None


def main() -> int:
    try:
        import pybind11  # noqa: F401
    except ImportError:
        pip_install(PINS["pybind11"])
    if tool("cmake") is None:
        pip_install(PINS["cmake"])
    if tool("ninja") is None:
        pip_install(PINS["ninja"])
    import pybind11

    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    build = ROOT / "build" / f"module-{tag}"
    configure = [
        tool("cmake") or "cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja",
        f"-DCMAKE_MAKE_PROGRAM={tool('ninja') or 'ninja'}", "-DCMAKE_BUILD_TYPE=Release",
        f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        "-DCOMFYMQ_BUILD_TESTS=OFF", "-DCOMFYMQ_BUILD_BENCH=OFF",
    ]
    try:
        subprocess.check_call(configure)
        subprocess.check_call([tool("cmake") or "cmake", "--build", str(build), "--target", "_native"])
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"\nComfyMQ: building the native module failed ({e}).\n"
              f"If CMake said a package was not found, install the system libraries, e.g. on Debian/Ubuntu:\n"
              f"    {APT_HINT}\nthen run `{sys.executable} install.py` again.", file=sys.stderr)
        return 1
    built = sorted((ROOT / "comfy_nodes").glob("_native*"))
    print(f"ComfyMQ: built {', '.join(p.name for p in built)} for {sys.executable}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
