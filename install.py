"""What ComfyUI-Manager runs after installing this folder: puts a native module that loads into comfy_nodes/.

    python install.py                  (from the repository folder, with ComfyUI's Python)
    python install.py --prebuilt-only  never compile: exit 1 when no prebuilt wheel fits
    python install.py --from-source    skip the prebuilt wheels

ComfyUI imports this folder, not site-packages, so the module must sit in comfy_nodes/. Two ways, in order:

1. A prebuilt wheel, chosen by pip with the rules of `pip install` (this Python's version and ABI, this platform,
   and on Linux this glibc) among the comfymq wheels of exactly this checkout's version found in
     - wheels/ beside this file (a release puts its wheels there: [tool.comfy] includes it in the registry's archive),
     - COMFYMQ_WHEELS: more folders or pages listing wheels (pip --find-links), separated by semicolons,
     - COMFYMQ_WHEEL_INDEX: a package index URL (PEP 503 "simple" layout).
   Nothing else is asked (pip runs --isolated, so no pip.conf or PIP_* index applies): a "comfymq" on PyPI need
   not be this project. Only the wheel's compiled parts are taken, each checked against the wheel's RECORD: the
   extension (comfy_nodes/_native*) and the libraries it carries (comfymq.libs/ from auditwheel or delvewheel,
   comfy_nodes/.dylibs/ from delocate); the Python files stay this checkout's. A fresh Python must then import the
   module from this folder, or the previous files are put back and the next way is tried. A Python without pip
   (a virtualenv made by uv) tries the wheels in wheels/ made for its ABI in turn, and that import check decides.
2. A build from source for sys.executable: pybind11 (and cmake/ninja when the system has none) from PyPI, CMake
   configured for this Python, only the module built. It needs a C++17 compiler and the system libraries (ZeroMQ,
   nlohmann/json, xxHash, LZ4, OpenSSL); when one is missing the message says which packages to install.

Exit status 0 on success, 1 with a one-paragraph reason otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "comfy_nodes"
WHEELS = ROOT / "wheels"
PINS = {"pybind11": "pybind11==3.1.0", "cmake": "cmake==4.4.4", "ninja": "ninja==1.13.2"}
# Debian/Ubuntu packages the module's build needs (compiler and tools, Python headers, and what CMakeLists.txt finds
# outside its tests/bench/fuzz parts, plus cppzmq's headers); tests/python/test_packaging.py keeps it complete.
APT_HINT = (
    "sudo apt-get install build-essential cmake ninja-build pkg-config python3-dev "
    "libzmq3-dev cppzmq-dev nlohmann-json3-dev libxxhash-dev liblz4-dev libssl-dev"
)

# Run by a fresh Python in this folder: the module must load from here (not from an installed comfymq).
VERIFY = """
import sys
sys.path.insert(0, sys.argv[1])
import comfy_nodes._native as m
from pathlib import Path
where = Path(m.__file__).resolve()
assert where.parent == Path(sys.argv[1], "comfy_nodes").resolve(), f"loaded from {where}"
print(f"{where.name} (CURVE {'available' if m.curve_available() else 'NOT available'})")
"""


def project_field(name: str) -> str:
    """A top-level string of pyproject's [project] table (read with a regex: works before the floor check)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = re.split(r"^\[project\][ \t]*$", text, maxsplit=1, flags=re.MULTILINE)[-1].split("\n[", 1)[0]
    found = re.search(rf'^{re.escape(name)}\s*=\s*"([^"]*)"', section, re.MULTILINE)
    if not found:
        raise SystemExit(f"ComfyMQ: pyproject.toml has no [project] {name}")
    return found.group(1)


def python_floor() -> tuple[int, ...]:
    spec = project_field("requires-python")  # ">=3.11"
    return tuple(int(x) for x in spec.lstrip(">=").split("."))


# ---- 1. a prebuilt wheel -------------------------------------------------------------------------------


def wheel_sources() -> list[str]:
    """pip arguments naming where prebuilt wheels may be; empty when nothing is configured or present."""
    args: list[str] = []
    if WHEELS.is_dir() and any(WHEELS.glob("*.whl")):
        args += ["--find-links", str(WHEELS)]
    for place in (p.strip() for p in os.environ.get("COMFYMQ_WHEELS", "").split(";")):
        if "://" in place or place.startswith("file:"):
            args += ["--find-links", place]
        elif place:
            args += ["--find-links", str(Path(place).expanduser().resolve())]
    index = os.environ.get("COMFYMQ_WHEEL_INDEX", "").strip()
    if index:
        return args + ["--index-url", index]
    return args + ["--no-index"] if args else []


def pick_wheels(version: str, into: Path) -> list[Path]:
    """The wheel pip would install here for comfymq==version, downloaded or copied into `into`. Without pip (a
    virtualenv made by uv has none) every wheel in wheels/ of this version for this Python's ABI: the import check
    after extracting one then tells whether it fits this platform."""
    if importlib.util.find_spec("pip") is None:
        abi = f"cp{sys.version_info.major}{sys.version_info.minor}"
        found = sorted(WHEELS.glob(f"comfymq-{version}-{abi}-{abi}-*.whl")) if WHEELS.is_dir() else []
        print(f"ComfyMQ: this Python has no pip; trying the {len(found)} wheel(s) in wheels/ made for {abi}")
        return found
    sources = wheel_sources()
    if not sources:
        print("ComfyMQ: no prebuilt wheels to try (wheels/ is empty; COMFYMQ_WHEELS and COMFYMQ_WHEEL_INDEX unset)")
        return []
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "--isolated",
        "download",
        f"comfymq=={version}",
        "--only-binary=:all:",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(into),
        *sources,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob("comfymq-*.whl"))
    if r.returncode != 0 or not found:
        reason = (r.stderr.strip().splitlines() or ["no output"])[-1]
        print(
            f"ComfyMQ: no prebuilt wheel of comfymq {version} fits Python {sys.version_info.major}."
            f"{sys.version_info.minor} on this platform ({reason})"
        )
        return []
    return found[:1]


def payload(name: str) -> Path | None:
    """Where a wheel member goes in this folder, or None for members this checkout already has (Python, metadata).
    On Windows delvewheel's DLLs go beside the .pyd: the extension's folder is searched for its DLLs, while the
    wheel's own hook for comfymq.libs/ lives in an __init__.py this checkout does not take."""
    parts = name.split("/")
    if (
        parts[0] == "comfy_nodes"
        and len(parts) == 2
        and parts[1].startswith("_native")
        and not parts[1].endswith((".py", ".pyi"))
    ):
        return ROOT / name
    if parts[0] == "comfy_nodes" and len(parts) > 2 and parts[1] == ".dylibs":
        return ROOT / name
    if parts[0].endswith(".libs") and len(parts) > 1 and parts[-1]:
        return PACKAGE / parts[-1] if os.name == "nt" else ROOT / name
    return None


def extract_native(wheel: Path, staging: Path) -> dict[Path, Path]:
    """Extracts the compiled members into staging, each checked against RECORD; returns {staged file: target}."""
    with zipfile.ZipFile(wheel) as z:
        records = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            raise ValueError(f"{wheel.name} has no RECORD")
        hashes = {}
        for line in z.read(records[0]).decode("utf-8").splitlines():
            path, digest, _size = line.rsplit(",", 2)
            hashes[path] = digest
        moves: dict[Path, Path] = {}
        for name in z.namelist():
            target = payload(name)
            if target is None:
                continue
            data = z.read(name)
            algo, _, want = hashes.get(name, "").partition("=")
            got = base64.urlsafe_b64encode(hashlib.new(algo or "sha256", data).digest()).rstrip(b"=").decode()
            if not want or got != want:
                raise ValueError(f"{name} in {wheel.name} does not match the wheel's RECORD")
            staged = staging / name
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.write_bytes(data)
            info = z.getinfo(name)
            if info.external_attr >> 16 & 0o111:
                staged.chmod(0o755)
            moves[staged] = target
    if not any(t.parent == PACKAGE and t.name.startswith("_native") for t in moves.values()):
        raise ValueError(f"{wheel.name} holds no comfy_nodes/_native module")
    return moves


def verify() -> tuple[bool, str]:
    r = subprocess.run([sys.executable, "-c", VERIFY, str(ROOT)], capture_output=True, text=True, cwd=str(ROOT))
    out = (r.stdout.strip() or r.stderr.strip() or "no output").splitlines()
    return r.returncode == 0, out[-1]


def install_prebuilt(version: str) -> bool:
    with tempfile.TemporaryDirectory(prefix="comfymq-install-") as tmp:
        tmp_path = Path(tmp)
        for n, wheel in enumerate(reversed(pick_wheels(version, tmp_path / "download"))):
            if try_wheel(wheel, tmp_path / f"try-{n}"):
                return True
        return False


def try_wheel(wheel: Path, work: Path) -> bool:
    """Puts the wheel's compiled members in place; keeps them if a fresh Python imports the module, else puts back
    what was there before."""
    try:
        moves = extract_native(wheel, work / "staging")
    except (ValueError, zipfile.BadZipFile, OSError) as e:
        print(f"ComfyMQ: cannot use {wheel.name}: {e}")
        return False
    saved: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for staged, target in moves.items():
            if target.exists():
                keep = work / "previous" / target.relative_to(ROOT)
                keep.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(target), str(keep))
                saved.append((keep, target))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staged), str(target))
            placed.append(target)
        ok, said = verify()
    except OSError as e:
        ok, said = False, str(e)
    if not ok:
        for target in placed:
            target.unlink(missing_ok=True)
        for keep, target in saved:
            shutil.move(str(keep), str(target))
        for folder in {t.parent for t in placed}:
            if folder != PACKAGE and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        print(f"ComfyMQ: the module from {wheel.name} does not load here ({said}); previous files restored")
        return False
    print(f"ComfyMQ: installed {said} from the prebuilt {wheel.name} for {sys.executable}")
    return True


# ---- 2. a build from source ----------------------------------------------------------------------------


def pip_install(*pkgs: str) -> None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", *pkgs])


def tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    scripts = Path(sys.executable).parent
    candidate = scripts / name
    return str(candidate) if candidate.exists() else None


def build_from_source() -> int:
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
        tool("cmake") or "cmake",
        "-S",
        str(ROOT),
        "-B",
        str(build),
        "-G",
        "Ninja",
        f"-DCMAKE_MAKE_PROGRAM={tool('ninja') or 'ninja'}",
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DPython_EXECUTABLE={sys.executable}",
        f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        "-DCOMFYMQ_BUILD_TESTS=OFF",
        "-DCOMFYMQ_BUILD_BENCH=OFF",
    ]
    try:
        subprocess.check_call(configure)
        subprocess.check_call([tool("cmake") or "cmake", "--build", str(build), "--target", "_native"])
    except (subprocess.CalledProcessError, OSError) as e:
        print(
            f"\nComfyMQ: building the native module failed ({e}).\n"
            f"If CMake said a package was not found, install the system libraries, e.g. on Debian/Ubuntu:\n"
            f"    {APT_HINT}\nthen run `{sys.executable} install.py` again.",
            file=sys.stderr,
        )
        return 1
    print(f"ComfyMQ: built {', '.join(p.name for p in built_modules())} for {sys.executable}")
    return 0


def built_modules() -> list[Path]:
    """The compiled module file(s) in comfy_nodes/ this Python would import (_native + one of its extension
    suffixes): not the checked-in stub _native.pyi, nor a module built for another Python."""
    names = {"_native" + suffix for suffix in importlib.machinery.EXTENSION_SUFFIXES}
    return sorted(p for p in PACKAGE.glob("_native*") if p.name in names)


def main(argv: list[str]) -> int:
    floor = python_floor()
    if sys.version_info[: len(floor)] < floor:
        print(
            f"ComfyMQ needs Python {'.'.join(map(str, floor))} or newer; {sys.executable} is "
            f"{sys.version_info.major}.{sys.version_info.minor}.",
            file=sys.stderr,
        )
        return 1
    unknown = [a for a in argv if a not in ("--prebuilt-only", "--from-source")]
    if unknown or len(argv) > 1:
        print(f"usage: {Path(sys.argv[0]).name} [--prebuilt-only | --from-source]", file=sys.stderr)
        return 2
    if "--from-source" not in argv and install_prebuilt(project_field("version")):
        return 0
    if "--prebuilt-only" in argv:
        print("ComfyMQ: no prebuilt module was installed, and --prebuilt-only forbids building one.", file=sys.stderr)
        return 1
    return build_from_source()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
