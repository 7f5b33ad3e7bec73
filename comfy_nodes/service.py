"""QueueService: the host's store and artifact writer, with async wrappers for aiohttp handlers.

Store calls block (they fsync, or wait for a group commit), so handlers run them on a thread pool: the
event loop stays free, and concurrent requests share syncs through the store's group commit.
"""

from __future__ import annotations

import asyncio
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import native


class QueueService:
    def __init__(self, data_dir: str | os.PathLike, artifact_root: str | os.PathLike | None = None, *,
                 threads: int = 32, **store_options):
        n = native.load()
        self.data_dir = Path(data_dir)
        self.store = n.Store(str(self.data_dir / "store"), **store_options)
        root = Path(artifact_root) if artifact_root else self.data_dir / "artifacts"
        self.artifacts = n.ArtifactWriter(str(root))
        self.artifact_root = Path(self.artifacts.root)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="comfymq-store")

    async def call(self, fn, *args, **kwargs):
        """Runs a blocking store call on the pool; exceptions propagate unchanged."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def health(self) -> dict:
        """Whether the store accepts writes, and how much room the disk has."""
        n = native.load()
        try:
            self.store.health()
            writable, problem = True, None
        except n.ComfyMQError as e:
            writable, problem = False, str(e)
        st = os.statvfs(self.data_dir)
        free = st.f_bavail * st.f_frsize
        if writable and free < 16 << 20:
            writable, problem = False, f"only {free} bytes free on the store's disk"
        return {"writable": writable, "problem": problem, "free_bytes": free, "data_dir": str(self.data_dir)}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.store.close()
