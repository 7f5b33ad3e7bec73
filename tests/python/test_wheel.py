"""The wheel `make wheel` builds, tested the way a user gets it, and install.py using it instead of a compiler.

These tests run when COMFYMQ_TEST_WHEEL names the repaired wheel, or a folder holding it: `make test-wheel` (part
of `make test`) builds the wheel of this tree first and sets it, so a wheel left in dist/ by an older build is
never what is tested. Without it they are skipped, saying so. Marked `wheel` (`pytest -m wheel`).

* The wheel goes into a fresh virtualenv (`python -m venv`, no system site-packages), with its dependency and the
  test tools from PyPI at tests/requirements.txt's pins (pip's cache makes a rerun quick).
* `auditwheel show` must find no library outside the manylinux policy its tag names, and `ldd` on the installed
  module must resolve every library to the wheel's own comfymq.libs/ or to one that policy allows.
* The module must import from site-packages in a directory that holds no checkout, with CURVE working.
* The Python tests that drive the module (store, cluster with CURVE, artifacts, SIGKILL crashes, the CLI and the
  standalone host) run in that virtualenv against the installed package, through tools/test-installed-wheel.py
  (also cibuildwheel's test step): it copies them to a folder whose "repository root" (conftest's REPO_ROOT,
  tests/python/..) holds no comfy_nodes/, so every import and every `python -m comfy_nodes` child finds the
  installed one; a test it adds to the copy checks that they did.
* install.py, run the way ComfyUI-Manager runs it in a copy of the checkout without a built module, installs the
  module from wheels/ or from an index and builds nothing; it refuses wheels of another version, members that do
  not match the wheel's RECORD, and a module that does not load (putting the previous one back).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import tomllib
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "tests" / "requirements.txt"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
PY_TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
WHEEL_ENV = os.environ.get("COMFYMQ_TEST_WHEEL", "")

# What those tests need besides the wheel (its own dependency, aiohttp, comes with it).
TEST_TOOLS = ["pytest", "pytest-timeout", "pytest-asyncio", "pytest-aiohttp", "pyzmq"]

pytestmark = [
    pytest.mark.wheel,
    pytest.mark.skipif(
        not WHEEL_ENV, reason="COMFYMQ_TEST_WHEEL is not set: `make test-wheel` builds the wheel and runs these tests"
    ),
]


def run(
    cmd: list, *, cwd: Path, timeout: float = 600, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Runs cmd without PYTHONPATH or COMFYMQ_* settings from this process; fails the test on a non-zero exit."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COMFYMQ_") and k != "PYTHONPATH"}
    clean.update(env or {})
    r = subprocess.run([str(c) for c in cmd], cwd=str(cwd), env=clean, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} exited {r.returncode}\n--- stdout\n{r.stdout[-6000:]}\n"
            f"--- stderr\n{r.stderr[-6000:]}"
        )
    return r


def pip_install(python: Path, *args: str, cwd: Path) -> None:
    run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c", REQUIREMENTS, *args], cwd=cwd)


def new_venv(where: Path) -> Path:
    """A fresh virtualenv of this interpreter's base Python, without system site-packages; returns its python."""
    run([sys.executable, "-m", "venv", where], cwd=where.parent)
    python = where / "bin" / "python"
    assert python.exists()
    return python


@functools.cache
def wheel_file() -> Path:
    """The one comfymq wheel of this version for this Python named by COMFYMQ_TEST_WHEEL (a file or a folder)."""
    given = Path(WHEEL_ENV).resolve()
    candidates = [given] if given.is_file() else sorted(given.glob(f"comfymq-{VERSION}-{PY_TAG}-*.whl"))
    assert len(candidates) == 1, f"want one comfymq {VERSION} wheel for {PY_TAG} in {given}, found {candidates}"
    return candidates[0]


def wheel_platform_tag() -> str:
    return wheel_file().name[: -len(".whl")].split("-")[-1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The wheel installed into a fresh virtualenv: {python, site, root (an empty folder to run from)}."""
    base = tmp_path_factory.mktemp("wheel-venv")
    python = new_venv(base / "venv")
    pip_install(python, str(wheel_file()), cwd=base)
    site = Path(
        run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['platlib'])"], cwd=base).stdout.strip()
    )
    empty = base / "empty"
    empty.mkdir()
    return {"python": python, "site": site, "venv": base / "venv", "root": empty}


# ---- the wheel itself ------------------------------------------------------------------------------------


def test_the_wheel_is_named_and_filled_as_the_project_says():
    wheel = wheel_file()
    name, version, py, abi, plat = wheel.name[: -len(".whl")].split("-")
    assert (name, version, py, abi) == ("comfymq", VERSION, PY_TAG, PY_TAG)
    assert re.fullmatch(rf"manylinux_2_\d+_{platform.machine()}", plat), plat
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(f"comfymq-{VERSION}.dist-info/METADATA").decode()
        entry_points = z.read(f"comfymq-{VERSION}.dist-info/entry_points.txt").decode()
    # Every Python file of the package, the stub, one extension module, and nothing from js/ or tests/.
    package_sources = {
        p.relative_to(REPO).as_posix() for p in (REPO / "comfy_nodes").rglob("*.py") if "__pycache__" not in p.parts
    }
    assert package_sources and package_sources <= names, sorted(package_sources - names)
    assert "comfy_nodes/_native.pyi" in names
    modules = [n for n in names if re.fullmatch(r"comfy_nodes/_native\..+\.so", n)]
    assert modules == [
        f"comfy_nodes/_native.cpython-{sys.version_info.major}{sys.version_info.minor}-"
        f"{platform.machine()}-linux-gnu.so"
    ], modules
    assert not [n for n in names if n.startswith(("js/", "tests/", "native/"))]
    # CMake's Release build, stripped on install: not the RelWithDebInfo module `make build` leaves in the tree.
    from elftools.elf.elffile import ELFFile

    with zipfile.ZipFile(wheel) as z, z.open(modules[0]) as f:
        sections = {s.name for s in ELFFile(io.BytesIO(f.read())).iter_sections()}
    assert ".debug_info" not in sections and ".text" in sections
    bundled = {n.split("/")[1].split("-")[0] for n in names if n.startswith("comfymq.libs/") and n.count("/") == 1}
    assert {"libzmq", "libsodium", "liblz4", "libxxhash", "libcrypto"} <= bundled, bundled
    assert f"\nVersion: {VERSION}\n" in metadata
    assert f"\nRequires-Python: {PYPROJECT['project']['requires-python']}\n" in metadata
    assert "comfymq = comfy_nodes.cli:main" in entry_points
    if (REPO / "LICENSE").is_file():
        assert f"comfymq-{VERSION}.dist-info/licenses/LICENSE" in names


def test_auditwheel_finds_nothing_outside_the_manylinux_policy():
    r = run([sys.executable, "-m", "auditwheel", "show", "--json", wheel_file()], cwd=REPO)
    shown = json.loads(r.stdout)
    assert shown["pure"] is False
    assert shown["external_libs"] == {}, shown["external_libs"]
    assert shown["overall_tag"] == wheel_platform_tag(), shown
    assert shown["policy_upgrades"] == {}


def policy_whitelist(tag: str) -> set[str]:
    import auditwheel.policy

    policies = json.loads((Path(auditwheel.policy.__file__).parent / "manylinux-policy.json").read_text())
    policy_name = re.match(r"(manylinux_\d+_\d+)_", tag).group(1)  # manylinux_2_35_x86_64 -> manylinux_2_35
    (policy,) = [p for p in policies if p["name"] == policy_name or policy_name in p["aliases"]]
    return set(policy["lib_whitelist"])


def test_the_installed_module_loads_only_its_own_libraries_and_the_policy_s(installed):
    (module,) = (installed["site"] / "comfy_nodes").glob("_native*.so")
    bundled_dir = (installed["site"] / "comfymq.libs").resolve()
    allowed = policy_whitelist(wheel_platform_tag())
    lines = run(["ldd", module], cwd=installed["root"]).stdout.splitlines()
    resolved = {}
    for line in lines:
        parts = line.split()
        if not parts or parts[0].startswith(("linux-vdso", "/lib64/ld-linux", "/lib/ld-linux")):
            continue
        assert "not found" not in line, line
        assert len(parts) >= 3 and parts[1] == "=>", line
        resolved[parts[0]] = Path(parts[2]).resolve()
    outside = {name: str(path) for name, path in resolved.items() if path.parent != bundled_dir and name not in allowed}
    assert outside == {}, f"libraries neither bundled nor in the manylinux policy: {outside}"
    from_wheel = {name.split("-")[0] for name, path in resolved.items() if path.parent == bundled_dir}
    assert {"libzmq", "libsodium", "liblz4", "libxxhash", "libcrypto"} <= from_wheel, resolved


def test_it_imports_from_site_packages_with_curve_working(installed):
    probe = textwrap.dedent("""
        import importlib.metadata, json, sys
        from pathlib import Path
        import comfy_nodes, comfy_nodes._native as native
        public, secret = native.curve_keypair()
        print(json.dumps({"package": comfy_nodes.__file__, "module": native.__file__,
                          "version": comfy_nodes.__version__, "dist": importlib.metadata.version("comfymq"),
                          "curve": native.curve_available(), "keys": [public, secret],
                          "path": [str(Path(p or ".").resolve()) for p in sys.path]}))
    """)
    seen = json.loads(run([installed["python"], "-c", probe], cwd=installed["root"]).stdout)
    site = installed["site"].resolve()
    assert Path(seen["package"]).resolve().parent == site / "comfy_nodes"
    assert Path(seen["module"]).resolve().parent == site / "comfy_nodes"
    assert not [p for p in seen["path"] if (Path(p) / "comfy_nodes").is_dir() and Path(p) != site], seen["path"]
    assert seen["version"] == seen["dist"] == VERSION
    assert seen["curve"] is True
    public, secret = seen["keys"]
    assert len(public) == len(secret) == 40 and public != secret  # Z85 of 32 bytes
    # The console script of [project.scripts], and the store through it.
    status = run([installed["venv"] / "bin" / "comfymq", "--help"], cwd=installed["root"])
    assert "host" in status.stdout and "worker" in status.stdout


@pytest.mark.timeout(1200)
def test_the_module_s_python_tests_pass_against_the_installed_wheel(installed, tmp_path):
    pip_install(installed["python"], *TEST_TOOLS, cwd=installed["root"])
    report = tmp_path / "junit.xml"
    r = run(
        [installed["python"], REPO / "tools" / "test-installed-wheel.py", f"--junitxml={report}"],
        cwd=installed["root"],
        timeout=1100,
        check=False,
    )
    summary = (r.stdout.strip().splitlines() or ["no output"])[-1]
    assert r.returncode == 0, f"{summary}\n{r.stdout[-8000:]}\n{r.stderr[-4000:]}"
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] >= 100 and counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts
    ran = {case.get("name") for case in suite.iter("testcase")}
    assert "test_these_tests_import_the_installed_wheel" in ran
    assert "test_a_worker_with_the_wrong_key_never_gets_a_job" in ran  # CURVE, not skipped
    print(f"against the installed wheel: {summary}")


# ---- install.py: a prebuilt wheel instead of a compiler ---------------------------------------------------


def checkout_copy(dest: Path) -> Path:
    """This checkout as a fresh clone has it: the pack, install.py and pyproject, no built module, no build/."""
    dest.mkdir(parents=True)
    for name in ("__init__.py", "install.py", "pyproject.toml"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(
        REPO / "comfy_nodes",
        dest / "comfy_nodes",
        ignore=shutil.ignore_patterns("__pycache__", "_native*.so", "_native*.pyd", ".dylibs"),
    )
    shutil.copytree(REPO / "js", dest / "js")
    return dest


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """ComfyUI's Python as far as install.py can tell: a fresh virtualenv with nothing installed."""
    return new_venv(tmp_path_factory.mktemp("comfyui-python") / "venv")


IMPORT_AS_COMFYUI = textwrap.dedent("""
    import importlib.util, sys
    folder = sys.argv[1]
    spec = importlib.util.spec_from_file_location("ComfyMQ", folder + "/__init__.py",
                                                  submodule_search_locations=[folder])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["ComfyMQ"] = pack
    spec.loader.exec_module(pack)
    native = sys.modules["ComfyMQ.comfy_nodes.native"]
    module = native.load()
    print(native.error(), module.__file__, module.curve_available())
""")


def installed_files(checkout: Path) -> list[str]:
    return sorted(
        p.relative_to(checkout).as_posix()
        for p in checkout.rglob("*")
        if p.is_file() and (p.name.startswith("_native") and p.suffix != ".pyi" or "comfymq.libs" in p.parts)
    )


def assert_built_nothing(checkout: Path, python: Path) -> None:
    assert not (checkout / "build").exists()
    tools = run([python, "-m", "pip", "list", "--format=json"], cwd=checkout).stdout
    assert not {p["name"].lower() for p in json.loads(tools)} & {"pybind11", "cmake", "ninja"}


def test_install_py_uses_a_wheel_from_wheels_and_builds_nothing(bare_python, tmp_path):
    checkout = checkout_copy(tmp_path / "comfymq")
    (checkout / "wheels").mkdir()
    shutil.copy2(wheel_file(), checkout / "wheels")
    # As ComfyUI-Manager runs it; no cmake or compiler on PATH, so a build could not even start.
    r = run([bare_python, "install.py"], cwd=checkout, env={"PATH": str(bare_python.parent)})
    assert f"from the prebuilt {wheel_file().name}" in r.stdout, r.stdout
    assert_built_nothing(checkout, bare_python)
    files = installed_files(checkout)
    assert any(re.fullmatch(r"comfy_nodes/_native\..+\.so", f) for f in files), files
    assert any(f.startswith("comfymq.libs/libzmq") for f in files), files
    # The Python files are the checkout's own, untouched; the stub too.
    for p in (REPO / "comfy_nodes").rglob("*.py"):
        if "__pycache__" not in p.parts:
            assert (checkout / p.relative_to(REPO)).read_bytes() == p.read_bytes()
    # ComfyUI's import of the folder (as custom_nodes/<name>) finds the module, from a directory elsewhere.
    seen = run([bare_python, "-c", IMPORT_AS_COMFYUI, checkout], cwd=tmp_path).stdout.strip().splitlines()[-1]
    error, where, curve = seen.rsplit(" ", 2)
    assert error == "None" and curve == "True", seen
    assert Path(where).resolve().parent == (checkout / "comfy_nodes").resolve()


def test_install_py_without_pip_tries_the_wheels_in_wheels(tmp_path):
    """A virtualenv made by uv has no pip: install.py then tries wheels/ itself, and the import check decides."""
    python = tmp_path / "venv" / "bin" / "python"
    run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "venv"], cwd=tmp_path)
    checkout = checkout_copy(tmp_path / "comfymq")
    (checkout / "wheels").mkdir()
    shutil.copy2(wheel_file(), checkout / "wheels")
    # A wheel for another platform, tried first (its tag sorts last) and refused by the import check.
    with zipfile.ZipFile(wheel_file()) as z:
        (member,) = [n for n in z.namelist() if re.fullmatch(r"comfy_nodes/_native\..+\.so", n)]
    foreign = wheel_file().name.replace(wheel_platform_tag(), "manylinux_2_99_" + platform.machine())
    rewrite_member(wheel_file(), checkout / "wheels" / foreign, member, b"not for this machine", update_record=True)
    r = run([python, "install.py", "--prebuilt-only"], cwd=checkout)
    assert "has no pip" in r.stdout and f"{foreign} does not load here" in r.stdout, r.stdout
    assert f"from the prebuilt {wheel_file().name}" in r.stdout, r.stdout
    assert any(f.startswith("comfymq.libs/libzmq") for f in installed_files(checkout))
    assert not (checkout / "build").exists()


class _Index(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test's output clean
        pass


def test_install_py_takes_a_wheel_from_a_configured_index(bare_python, tmp_path):
    """COMFYMQ_WHEEL_INDEX: a PEP 503 index (served here on loopback), with no wheels/ folder at all."""
    served = tmp_path / "index"
    (served / "simple" / "comfymq").mkdir(parents=True)
    (served / "files").mkdir()
    shutil.copy2(wheel_file(), served / "files")
    (served / "simple" / "comfymq" / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="../../files/{wheel_file().name}">{wheel_file().name}</a></body></html>'
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Index, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        checkout = checkout_copy(tmp_path / "comfymq")
        url = f"http://127.0.0.1:{server.server_address[1]}/simple/"
        r = run([bare_python, "install.py", "--prebuilt-only"], cwd=checkout, env={"COMFYMQ_WHEEL_INDEX": url})
    finally:
        server.shutdown()
        server.server_close()
    assert f"from the prebuilt {wheel_file().name}" in r.stdout, r.stdout
    assert_built_nothing(checkout, bare_python)
    assert installed_files(checkout)


def test_install_py_refuses_a_wheel_of_another_version(bare_python, tmp_path):
    checkout = checkout_copy(tmp_path / "comfymq")
    (checkout / "wheels").mkdir()
    other = wheel_file().name.replace(f"-{VERSION}-", "-9.9.9-")
    shutil.copy2(wheel_file(), checkout / "wheels" / other)
    r = run([bare_python, "install.py", "--prebuilt-only"], cwd=checkout, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"no prebuilt wheel of comfymq {VERSION} fits" in r.stdout, r.stdout
    assert "--prebuilt-only forbids building" in r.stderr
    assert installed_files(checkout) == []
    assert_built_nothing(checkout, bare_python)


def rewrite_member(wheel: Path, dest: Path, member: str, data: bytes, *, update_record: bool) -> Path:
    """A copy of wheel with member's bytes replaced (and, if asked, its RECORD line made to match)."""
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == member:
                body = data
            elif info.filename.endswith(".dist-info/RECORD") and update_record:
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                lines = [
                    f"{member},sha256={digest},{len(data)}" if line.startswith(member + ",") else line
                    for line in body.decode().splitlines()
                ]
                body = ("\n".join(lines) + "\n").encode()
            out.writestr(info, body)
    return dest


@pytest.mark.parametrize("case", ["does_not_load", "does_not_match_record"])
def test_install_py_keeps_the_previous_module_when_the_wheel_s_is_unusable(bare_python, tmp_path, case):
    checkout = checkout_copy(tmp_path / "comfymq")
    (checkout / "wheels").mkdir()
    with zipfile.ZipFile(wheel_file()) as z:
        (member,) = [n for n in z.namelist() if re.fullmatch(r"comfy_nodes/_native\..+\.so", n)]
    rewrite_member(
        wheel_file(),
        checkout / "wheels" / wheel_file().name,
        member,
        b"not a shared object",
        update_record=(case == "does_not_load"),
    )
    previous = checkout / member
    previous.write_bytes(b"the module that was here before")
    r = run([bare_python, "install.py", "--prebuilt-only"], cwd=checkout, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    said = {"does_not_load": "does not load here", "does_not_match_record": "does not match the wheel's RECORD"}
    assert said[case] in r.stdout, r.stdout
    assert previous.read_bytes() == b"the module that was here before"
    assert installed_files(checkout) == [member]  # nothing of the wheel's left behind
    assert_built_nothing(checkout, bare_python)
