"""ComfyUI imports the repo folder as a package; that import must never raise, built or not.

Without the compiled core, the import logs how to build it, and the CLI says so in one line.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.subprocess

# Imports a folder as a package the way ComfyUI's load_custom_node does (spec_from_file_location on its
# __init__.py, registered in sys.modules, then executed). argv[1] = the folder, argv[2] = the package name.
IMPORT_AS_COMFYUI = textwrap.dedent("""
    import importlib.util, logging, sys
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    folder, name = sys.argv[1], sys.argv[2]
    spec = importlib.util.spec_from_file_location(name, folder + "/__init__.py",
                                                  submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    print("NODES", sorted(module.NODE_CLASS_MAPPINGS), sorted(module.NODE_DISPLAY_NAME_MAPPINGS))
    print("WEB", module.WEB_DIRECTORY)
    print("NATIVE_LOADED", any(k.endswith("comfy_nodes._native") for k in sys.modules))
""")


def _import_in_process(folder: Path, name: str):
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def test_import_repo_as_comfyui_package(caplog):
    name = "comfymq_pack"
    try:
        with caplog.at_level("WARNING", logger="comfymq"):
            module = _import_in_process(REPO_ROOT, name)
        assert module.__name__ == name
        assert isinstance(module.NODE_CLASS_MAPPINGS, dict)
        assert isinstance(module.NODE_DISPLAY_NAME_MAPPINGS, dict)
        assert module.WEB_DIRECTORY == "./js"
        assert set(module.__all__) >= {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"}
        # Display names only for nodes the pack defines, and the web directory it names exists.
        assert set(module.NODE_DISPLAY_NAME_MAPPINGS) <= set(module.NODE_CLASS_MAPPINGS)
        assert (REPO_ROOT / module.WEB_DIRECTORY).is_dir()
        # With the core built (conftest made sure), nothing is logged about a missing build.
        assert not [r for r in caplog.records if "install.py" in r.getMessage()]
    finally:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]


@pytest.fixture
def copy_without_native(tmp_path) -> Path:
    """The pack's Python files (no compiled module) copied to <tmp>/ComfyMQ."""
    dest = tmp_path / "ComfyMQ"
    dest.mkdir()
    shutil.copy2(REPO_ROOT / "__init__.py", dest / "__init__.py")
    for src in (REPO_ROOT / "comfy_nodes").rglob("*.py"):
        if "__pycache__" in src.parts:
            continue
        target = dest / src.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    assert not list(dest.rglob("*.so"))
    return dest


def _run(args, *, cwd, env, timeout=60):
    return subprocess.run(
        [sys.executable, *args], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout
    )


def test_import_without_native_does_not_raise_and_logs_build_instruction(copy_without_native, subprocess_env):
    r = _run(
        ["-c", IMPORT_AS_COMFYUI, str(copy_without_native), "comfymq_pack"], cwd=copy_without_native, env=subprocess_env
    )
    assert r.returncode == 0, r.stderr
    # The nodes load the native module only when they run, so they register even without it.
    assert "NODES ['ComfyMQJobInfo', 'ComfyMQLoadJobArtifact', 'ComfyMQSaveImageAtomic']" in r.stdout
    assert "WEB ./js" in r.stdout
    assert "NATIVE_LOADED False" in r.stdout
    warnings = [line for line in r.stderr.splitlines() if line.startswith("WARNING comfymq")]
    assert warnings, r.stderr
    assert "install.py" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_without_native_exits_1_with_one_error_line(copy_without_native, subprocess_env, tmp_path):
    r = _run(
        ["-m", "comfy_nodes", "host", "--data-dir", str(tmp_path / "data"), "--port", "1"],
        cwd=copy_without_native,
        env=subprocess_env,
    )
    assert r.returncode == 1, (r.stdout, r.stderr)
    error_lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, r.stderr
    assert "install.py" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "data").exists()  # nothing was created


def test_cli_without_native_error_is_one_line_naming_install_py(copy_without_native, subprocess_env, tmp_path):
    r = _run(
        ["-m", "comfy_nodes", "host", "--data-dir", str(tmp_path / "data"), "--port", "1"],
        cwd=copy_without_native,
        env=subprocess_env,
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:") and "install.py" in lines[0]


def test_conftest_stops_the_run_without_native(copy_without_native, subprocess_env):
    # These tests must fail loudly (never skip) when the core is not built: run this very conftest against
    # the copy without the compiled module.
    tests = copy_without_native / "tests" / "python"
    tests.mkdir(parents=True)
    shutil.copy2(Path(__file__).with_name("conftest.py"), tests / "conftest.py")
    (tests / "test_dummy.py").write_text("def test_dummy():\n    pass\n")
    r = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)], cwd=copy_without_native, env=subprocess_env)
    out = r.stdout + r.stderr
    assert r.returncode == 3, out  # conftest's pytest.exit(returncode=3)
    assert "install.py" in out
    assert "1 passed" not in out and "skipped" not in out


def test_import_as_comfyui_finds_built_native_without_sys_path(tmp_path, subprocess_env):
    # ComfyUI runs from its own folder and imports custom_nodes/<pack>/__init__.py by file location; the
    # pack's folder is not on sys.path. With the core built, the pack must load it and log no warning.
    r = _run(["-c", IMPORT_AS_COMFYUI, str(REPO_ROOT), "ComfyMQ"], cwd=tmp_path, env=subprocess_env)
    assert r.returncode == 0, r.stderr
    assert "install.py" not in r.stderr, r.stderr
    assert "NATIVE_LOADED True" in r.stdout


def test_inside_comfyui_without_native_every_route_says_how_to_build(copy_without_native, subprocess_env, tmp_path):
    # The stand-in ComfyUI loads the pack through ComfyUI's extension points; the core is not built there.
    env = dict(subprocess_env, COMFYMQ_DATA_DIR=str(tmp_path / "data"))
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.standin",
            "--port",
            "0",
            "--output-dir",
            str(tmp_path / "out"),
            "--user-dir",
            str(tmp_path / "user"),
            "--with-plugin",
            str(copy_without_native),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = p.stdout.readline()
        assert line.startswith("READY"), p.stderr.read() if p.poll() is not None else line
        base = line.split()[-1]
        for path in ("/api/comfymq/health", "/comfymq/tasks", "/api/comfymq/workers"):
            try:
                urllib.request.urlopen(base + path, timeout=10)
                raise AssertionError(f"{path} answered 200 without the native module")
            except urllib.error.HTTPError as e:
                assert e.code == 503
                body = json.loads(e.read())
                assert "install.py" in body["error"]["message"]
        # ComfyUI itself keeps working.
        with urllib.request.urlopen(base + "/system_stats", timeout=10) as r:
            assert r.status == 200
    finally:
        p.terminate()
        _, err = p.communicate(timeout=15)
    assert "Traceback" not in err, err
    assert not (tmp_path / "data").exists(), "nothing was created"


def test_the_job_states_are_one_list_taken_from_the_core():
    """JobStateName (C++) is the list; the module exports it and js/lib/states.js is generated from it."""
    import subprocess
    import sys
    from pathlib import Path

    from comfy_nodes import _native

    assert _native.JOB_STATES == ("pending", "running", "succeeded", "failed", "cancelled")
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        [sys.executable, str(repo / "tools" / "write_js_states.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    for js in (repo / "js").rglob("*.js"):  # no other list of the states (maps of labels per state are fine)
        if js.name != "states.js":
            assert '"pending", "running", "succeeded"' not in js.read_text(), js
