"""Durable file steps shared by the host's input store, the worker's input cache and its run records."""

from __future__ import annotations

import os
from pathlib import Path


def sync_dir(path: str | os.PathLike, *, strict: bool = False) -> None:
    """fsyncs a directory, so that a rename or link made in it survives a power cut. strict: an OSError goes to the
    caller (which then must not report the file as kept); else it is ignored, for file systems that cannot sync a
    directory (the rename is still atomic there)."""
    try:
        fd = os.open(Path(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if strict:
            raise
