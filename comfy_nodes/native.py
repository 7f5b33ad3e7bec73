"""Loads the compiled native core, or says exactly how to build it.

`load()` returns the `_native` module or raises NativeUnavailable whose message is the build instruction.
Nothing here raises at import time: ComfyUI marks a whole node pack broken when an import fails.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class NativeUnavailable(RuntimeError):
    """The compiled module is missing or was built for another Python."""


def build_instructions(reason: str) -> str:
    """One line: what went wrong and the command that fixes it."""
    return (
        f"ComfyMQ's native module could not be loaded ({reason}); build it for this Python "
        f"({sys.version_info.major}.{sys.version_info.minor}) with: cd {REPO_ROOT} && {sys.executable} install.py "
        "(it takes a prebuilt wheel from wheels/, COMFYMQ_WHEELS or COMFYMQ_WHEEL_INDEX when one fits, else it "
        "builds from source, which needs a C++17 compiler, CMake and the libraries listed in the README)"
    )


_module = None
_error: str | None = None


def load():
    """Returns comfy_nodes._native, importing it on first call."""
    global _module, _error
    if _module is not None:
        return _module
    if _error is not None:
        raise NativeUnavailable(_error)
    try:
        # Relative to this package: ComfyUI imports the pack by file location under its folder's name,
        # so the name "comfy_nodes" is not importable there.
        _module = importlib.import_module("._native", __package__)
    except ImportError as e:  # missing, or built for another interpreter (undefined symbols, wrong ABI)
        _error = build_instructions((str(e) or e.__class__.__name__).splitlines()[0])
        raise NativeUnavailable(_error) from None
    return _module


def error() -> str | None:
    """The build instruction if loading failed (after load() was tried), else None."""
    if _module is None and _error is None:
        try:
            load()
        except NativeUnavailable:
            pass
    return _error
