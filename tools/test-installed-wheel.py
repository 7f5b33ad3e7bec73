"""Runs the Python tests that drive the native module against an installed comfymq (a wheel), not a checkout.

    python tools/test-installed-wheel.py [--junitxml FILE] [more pytest arguments]

Run it with the Python whose site-packages holds comfymq, and pytest, pytest-timeout, pytest-asyncio,
pytest-aiohttp and pyzmq. Used by tests/python/test_wheel.py (`make test-wheel`) and by cibuildwheel's test step
(.github/workflows/wheels.yml).

The tests import comfy_nodes from "the repository root", tests/python/.. (conftest's REPO_ROOT, and the helper
scripts they start): so they are copied into a temporary folder that holds no comfy_nodes/, where every import and
every `python -m comfy_nodes` child finds the installed package. A test added to the copy checks that it does.
Exit status: pytest's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests" / "python"

# The tests that use the module: store, cluster (with CURVE), artifacts, SIGKILL crashes, the CLI and the
# standalone host. About a minute on a 2-core machine.
SUITE = ["test_store.py", "test_cluster.py", "test_artifacts.py", "test_crash.py", "test_cli.py", "test_http_server.py"]

ORIGIN_TEST = '''
"""Added by tools/test-installed-wheel.py to its copy of the tests: they import the installed package."""
import sys
import sysconfig
from pathlib import Path

import comfy_nodes
from comfy_nodes import _native


def test_these_tests_import_the_installed_wheel():
    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    assert Path(comfy_nodes.__file__).resolve().parent == site / "comfy_nodes", comfy_nodes.__file__
    assert Path(_native.__file__).resolve().parent == site / "comfy_nodes", _native.__file__
    assert _native.curve_available()
'''


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="comfymq-installed-") as tmp:
        root = Path(tmp)
        copy = root / "tests" / "python"
        shutil.copytree(TESTS, copy, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        (copy / "test_installed_origin.py").write_text(ORIGIN_TEST)
        files = [f"tests/python/{name}" for name in ["test_installed_origin.py", *SUITE]]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv, *files], cwd=str(root), env=env
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
