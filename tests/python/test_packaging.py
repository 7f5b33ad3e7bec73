"""pyproject.toml against what reads it: pip and scikit-build-core, the Comfy Registry, ComfyUI-Manager.

* The Python floor: `requires-python` is exactly the oldest Python the shipped code can run on, as vermin (pinned in
  tests/requirements.txt) finds it from the syntax, modules, functions and arguments the code uses; CMake's
  find_package(Python ...), install.py's check and the classifiers say the same.
* The build: [project] and [tool.scikit-build] pass validate-pyproject (PEP 621 and scikit-build-core's own schema,
  classifiers against trove-classifiers); the build requirements are the pins of tests/requirements.txt; one
  version everywhere.
* The registry (https://docs.comfy.org/registry/specifications, and comfy-cli's parser, which `comfy node publish`
  runs): name and version rules, a license in a documented form, a Repository URL, [tool.comfy] with a PublisherId,
  an icon that exists and fits, `includes` that name what install.py looks for.
* ComfyUI-Manager parses pyproject with the `toml` package (not tomllib) and reads name, version and
  urls.Repository: that parser must read the same values.
"""

from __future__ import annotations

import ast
import copy
import importlib.machinery
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT_TEXT = (REPO / "pyproject.toml").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads(PYPROJECT_TEXT)
PROJECT = PYPROJECT["project"]
COMFY = PYPROJECT["tool"]["comfy"]

# What ComfyUI imports and runs (the pack, its package, the script ComfyUI-Manager runs): the floor is theirs.
SHIPPED = [
    REPO / "__init__.py",
    REPO / "install.py",
    *sorted(p for p in (REPO / "comfy_nodes").rglob("*.py") if "__pycache__" not in p.parts),
]


def floor_of(spec: str) -> tuple[int, int]:
    found = re.fullmatch(r">=\s*(\d+)\.(\d+)", spec.strip())
    assert found, f"requires-python should be a plain floor like '>=3.11', not {spec!r}"
    return int(found.group(1)), int(found.group(2))


FLOOR = floor_of(PROJECT["requires-python"])


def vermin_minimum(*paths: Path) -> tuple[int, int]:
    """The oldest Python 3 that vermin finds able to run `paths`."""
    vermin = Path(sys.executable).parent / "vermin"  # its console script: the package has no __main__
    r = subprocess.run(
        [str(vermin), "--no-tips", "--eval-annotations", *map(str, paths)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(line for line in r.stdout.splitlines() if line.startswith("Minimum required versions:"))
    found = re.search(r"\b3\.(\d+)\b", line)
    assert found, line
    return 3, int(found.group(1))


# ---- the Python floor ---------------------------------------------------------------------------------------


def test_requires_python_is_the_floor_the_shipped_code_needs():
    needed = vermin_minimum(*SHIPPED)
    assert FLOOR == needed, (
        f"requires-python says >={FLOOR[0]}.{FLOOR[1]} but the code needs "
        f"{needed[0]}.{needed[1]} (run `.venv/bin/python -m vermin -vv` on it to see why)"
    )


@pytest.mark.parametrize(
    "code, version",
    [("import tomllib\n", (3, 11)), ("match x:\n    case 1:\n        pass\n", (3, 10)), ("import json\n", (3, 0))],
)
def test_the_floor_check_sees_what_raises_a_floor(tmp_path, code, version):
    """The check above is live: vermin reports the version a module or a statement needs."""
    probe = tmp_path / "probe.py"
    probe.write_text(code)
    assert vermin_minimum(probe) == version


def test_the_shipped_code_parses_with_the_floor_s_grammar():
    for path in SHIPPED:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=FLOOR)


def test_every_statement_of_the_floor_agrees():
    floor = f"{FLOOR[0]}.{FLOOR[1]}"
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(rf"find_package\(Python {re.escape(floor)} REQUIRED", cmake), "CMake's Python floor"
    versions = [
        c.rsplit(" :: ", 1)[1]
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert versions and min(versions, key=lambda v: tuple(map(int, v.split(".")))) == floor, versions
    sys.path.insert(0, str(REPO))
    try:
        import install
    finally:
        sys.path.remove(str(REPO))
    assert install.python_floor() == FLOOR
    assert install.project_field("version") == PROJECT["version"]


# ---- pip and scikit-build-core ----------------------------------------------------------------------------


def validator():
    from validate_pyproject import api, plugins

    loaded = plugins.list_from_entry_points()
    assert any("skbuild" in p.id or "scikit_build" in p.id for p in loaded), [p.id for p in loaded]
    return api.Validator(loaded)


def test_pyproject_passes_validate_pyproject_with_scikit_build_core_s_schema():
    validator()(copy.deepcopy(PYPROJECT))


@pytest.mark.parametrize("break_it", ["unknown_skbuild_key", "bad_classifier", "bad_license_table"])
def test_validate_pyproject_refuses_what_it_should(break_it):
    from validate_pyproject.error_reporting import ValidationError

    broken = copy.deepcopy(PYPROJECT)
    if break_it == "unknown_skbuild_key":
        broken["tool"]["scikit-build"]["wheel"]["packagez"] = ["comfy_nodes"]
    elif break_it == "bad_classifier":
        broken["project"]["classifiers"].append("Programming Language :: Klingon")
    else:
        broken["project"]["license"] = {"name": "MIT"}
    with pytest.raises(ValidationError):
        validator()(broken)


def requirement_pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{line!r} is not pinned with =="
            pins[name.strip().lower()] = version.strip()
    return pins


def test_build_requirements_are_the_pins_the_tests_use():
    build = requirement_pins(PYPROJECT["build-system"]["requires"])
    tested = requirement_pins((REPO / "tests" / "requirements.txt").read_text().splitlines())
    assert set(build) == {"scikit-build-core", "pybind11"}
    assert {name: tested.get(name) for name in build} == build
    sys.path.insert(0, str(REPO))
    try:
        import install
    finally:
        sys.path.remove(str(REPO))
    assert install.PINS["pybind11"] == f"pybind11=={build['pybind11']}"  # the source build's pybind11


def test_one_version_everywhere():
    version = PROJECT["version"]
    cmake = re.search(r"project\(comfymq VERSION (\S+)", (REPO / "CMakeLists.txt").read_text()).group(1)
    init = re.search(r'__version__ = "([^"]+)"', (REPO / "comfy_nodes" / "__init__.py").read_text()).group(1)
    assert version == cmake == init


def test_the_wheel_holds_the_package_and_cmake_installs_the_module_into_it():
    skbuild = PYPROJECT["tool"]["scikit-build"]
    assert skbuild["wheel"]["packages"] == ["comfy_nodes"]
    assert skbuild["cmake"]["define"]["COMFYMQ_BUILD_TESTS"] == "OFF"
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"if\(SKBUILD\)\s*\n\s*install\(TARGETS _native DESTINATION comfy_nodes\)", cmake)
    # A module built in the tree for `make build` never rides along: .gitignore keeps it out of the wheel.
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "/comfy_nodes/_native*.so" in ignored or "*.so" in ignored


# ---- the Comfy Registry -----------------------------------------------------------------------------------

NAME_RULE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*")  # no leading/consecutive specials
# comfy-cli's validate_version: each comma-separated part is [operator]X.Y.Z[-suffix].
COMFY_VERSION_PART = re.compile(r"(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?")
TOOL_COMFY_KEYS = {
    "PublisherId",
    "DisplayName",
    "Icon",
    "Banner",
    "includes",
    "requires-comfyui",
    "web",
    "Models",
    "version",
}
OS_PREFIXES = ("Microsoft", "POSIX", "MacOS", "OS Independent")
ACCELERATORS = {
    "GPU :: NVIDIA CUDA",
    "GPU :: AMD ROCm",
    "GPU :: Intel Arc",
    "NPU :: Huawei Ascend",
    "GPU :: Apple Metal",
}


def test_project_fields_follow_the_registry_rules():
    name = PROJECT["name"]
    assert len(name) < 100 and NAME_RULE.fullmatch(name), name
    assert "comfyui" not in name.lower()  # the registry's advice
    assert re.fullmatch(r"\d+\.\d+\.\d+", PROJECT["version"]), "X.Y.Z, three numbers"
    assert isinstance(PROJECT["description"], str) and PROJECT["description"].strip()
    license_ = PROJECT["license"]  # documented forms: {file = "LICENSE"} or {text = "MIT"}
    assert isinstance(license_, dict) and len(license_) == 1, license_
    if "file" in license_:
        assert (REPO / license_["file"]).is_file()
    else:
        assert license_["text"] == "MIT"
    repository = PROJECT["urls"]["Repository"]
    assert re.fullmatch(r"https://[^\s/]+/[^\s]+", repository), repository
    for classifier in PROJECT["classifiers"]:
        if classifier.startswith("Operating System :: "):
            assert classifier[len("Operating System :: ") :].startswith(OS_PREFIXES), classifier
        if classifier.startswith("Environment ::"):
            assert classifier[len("Environment :: ") :] in ACCELERATORS, classifier
    from packaging.requirements import Requirement

    for dependency in PROJECT["dependencies"]:
        Requirement(dependency)  # raises on anything pip would not take


def test_tool_comfy_has_what_publishing_needs():
    assert set(COMFY) <= TOOL_COMFY_KEYS, f"unknown [tool.comfy] keys: {set(COMFY) - TOOL_COMFY_KEYS}"
    assert isinstance(COMFY["PublisherId"], str) and re.fullmatch(r"[a-z0-9][a-z0-9-]*", COMFY["PublisherId"])
    assert isinstance(COMFY["DisplayName"], str) and COMFY["DisplayName"].strip()
    assert isinstance(COMFY["includes"], list) and all(isinstance(i, str) for i in COMFY["includes"])
    for include in COMFY["includes"]:
        assert not include.startswith("/") and ".." not in Path(include).parts, include
    for part in COMFY.get("requires-comfyui", "").split(","):
        assert COMFY_VERSION_PART.fullmatch(part.strip()), COMFY["requires-comfyui"]
    for model in COMFY.get("Models", []):
        assert set(model) == {"location", "model_url"}


def test_the_registry_archive_carries_the_wheels_install_py_looks_for():
    sys.path.insert(0, str(REPO))
    try:
        import install
    finally:
        sys.path.remove(str(REPO))
    assert install.WHEELS.relative_to(REPO).as_posix() in COMFY["includes"]


def svg_size(path: Path) -> tuple[float, float]:
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg"), root.tag
    if root.get("width") and root.get("height"):
        return float(root.get("width").removesuffix("px")), float(root.get("height").removesuffix("px"))
    _, _, w, h = (float(v) for v in root.get("viewBox").replace(",", " ").split())
    return w, h


def test_the_icon_is_a_file_of_this_repository_that_fits():
    """Icon: a URL to an SVG, PNG, JPG or GIF of at most 800 x 400. Ours is docs/icon.svg, linked on the default
    branch of the Repository, so the two URLs must agree and the file must exist."""
    icon = COMFY["Icon"]
    assert re.search(r"\.(svg|png|jpe?g|gif)$", icon, re.IGNORECASE), icon
    owner_repo = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)/?", PROJECT["urls"]["Repository"]).group(1)
    prefix = f"https://raw.githubusercontent.com/{owner_repo}/main/"
    assert icon.startswith(prefix), f"{icon} is not a file of {PROJECT['urls']['Repository']}"
    local = REPO / icon[len(prefix) :]
    assert local.is_file(), local
    width, height = svg_size(local)
    assert 0 < width <= 800 and 0 < height <= 400, (width, height)


def test_comfyui_manager_s_parser_reads_the_same_identity():
    """ComfyUI-Manager (cnr_utils.read_cnr_info) reads name, version and urls.Repository with `toml`."""
    import toml

    seen = toml.loads(PYPROJECT_TEXT)["project"]
    assert (seen["name"], seen["version"], seen["urls"]["Repository"]) == (
        PROJECT["name"],
        PROJECT["version"],
        PROJECT["urls"]["Repository"],
    )
    assert seen["name"].strip().lower() == PROJECT["name"]  # the id the Manager indexes by


# ---- install.py's build from source: what it asks for, what it says ---------------------------------------

# What CMakeLists.txt finds for the module (outside its tests/bench/fuzz parts, which install.py turns off), and
# the Debian package that provides each (None: nothing to install from apt).
MODULE_BUILD_FINDS = {
    "Threads": None,  # the C library
    "OpenSSL": "libssl-dev",
    "nlohmann_json": "nlohmann-json3-dev",
    "PkgConfig": "pkg-config",
    "libxxhash": "libxxhash-dev",
    "libzmq": "libzmq3-dev",
    "liblz4": "liblz4-dev",
    "Python": "python3-dev",
    "pybind11": None,  # from PyPI: install.py installs its pin
}
HEADERS_NOT_FOUND_BY_CMAKE = {"zmq.hpp": "cppzmq-dev"}  # included by native/src, found on the include path only
BUILD_TOOLS = ("build-essential", "cmake", "ninja-build")


def import_install():
    sys.path.insert(0, str(REPO))
    try:
        import install
    finally:
        sys.path.remove(str(REPO))
    return install


def module_build_finds(cmake: str) -> set[str]:
    """Names of find_package / pkg_check_modules (the module, not the variable) outside the optional parts."""
    kept = re.sub(r"^if\(COMFYMQ_BUILD_(TESTS|BENCH|FUZZ)\b.*?^endif\(\)", "", cmake, flags=re.S | re.M)
    found = set(re.findall(r"find_package\((\w+)", kept))
    found |= {m.split()[-1] for m in re.findall(r"pkg_check_modules\(([^)#]*)\)", kept)}
    return found


def test_install_py_s_apt_hint_names_every_package_the_module_build_needs():
    """A library the module's build finds, or a header it includes, missing from the hint would leave someone who
    follows install.py's message with a build that still fails; every package in it is one setup-debian.sh
    installs too (so it is a real Debian package name)."""
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert module_build_finds(cmake) == set(MODULE_BUILD_FINDS), "map a new build dependency to its package here"
    sources = "\n".join(p.read_text() for p in (REPO / "native").rglob("*.[ch]*"))
    for header in HEADERS_NOT_FOUND_BY_CMAKE:
        assert f"#include <{header}>" in sources, f"{header} is no longer used: drop it"
    needed = {*BUILD_TOOLS, *(p for p in MODULE_BUILD_FINDS.values() if p), *HEADERS_NOT_FOUND_BY_CMAKE.values()}
    hint = import_install().APT_HINT
    assert hint.startswith("sudo apt-get install "), hint
    listed = hint.split()[3:]
    assert set(listed) == needed and len(listed) == len(needed), sorted(set(listed) ^ needed)
    setup = (REPO / "tools" / "setup-debian.sh").read_text()
    apt_packages = set(re.search(r"APT_PACKAGES=\((.*?)\)", setup, re.S).group(1).split())
    assert needed <= apt_packages, sorted(needed - apt_packages)


def test_module_build_finds_reads_only_the_module_s_part():
    cmake = (
        "find_package(A)\nif(COMFYMQ_BUILD_TESTS)\n  find_package(GTest)\nendif()\n"
        "pkg_check_modules(L REQUIRED IMPORTED_TARGET libq)  # x\n"
    )
    assert module_build_finds(cmake) == {"A", "libq"}


def test_install_py_names_the_module_it_built_not_the_stub(monkeypatch, capsys):
    install = import_install()
    monkeypatch.setattr(install.subprocess, "check_call", lambda *a, **k: 0)  # the build itself is not run here
    assert install.build_from_source() == 0
    out = capsys.readouterr().out
    said = re.search(r"ComfyMQ: built (.*) for ", out).group(1).split(", ")
    assert (install.PACKAGE / "_native.pyi").is_file()  # checked in, never built
    names = {"_native" + suffix for suffix in importlib.machinery.EXTENSION_SUFFIXES}  # what this Python imports
    assert said and said == sorted(p.name for p in install.PACKAGE.glob("_native*") if p.name in names), out
    assert "_native.pyi" not in out

    def fail(*a, **k):
        raise subprocess.CalledProcessError(1, a[0])

    monkeypatch.setattr(install.subprocess, "check_call", fail)
    assert install.build_from_source() == 1
    assert install.APT_HINT in capsys.readouterr().err
