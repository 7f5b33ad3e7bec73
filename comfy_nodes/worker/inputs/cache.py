"""The worker's cache of job input files, by content, bounded in bytes.

Layout (under the bridge's work dir, <work_dir>/inputs):

    <root>/<sha[0:2]>/<sha>    one input, whole, its sha256 checked (the only files the cache ever uses)
    <root>/tmp/                fetches in flight (removed when the cache is opened: never trusted, never used)

A file reaches its final place only by a rename after the fetch checked its sha256 (the native fetch does) and
after it was synced, so a file there is whole and right even after a crash or a power cut.

Bound: after each fetch and each release, the least recently used files that no job holds are removed until the
files fit in max_bytes (0 keeps nothing between jobs). Last use is the file's mtime, touched at each use, so the
order survives a restart. A file larger than the whole bound is still fetched for the job that needs it, and
removed once no job holds it. Before a fetch, unheld files are removed to make room for it.

Fetches: acquire(sha, size, fetch) returns the file's path and holds it (never removed) until release(sha).
`fetch(sha256, dest) -> size` is blocking (the native WorkerClient.fetch_input, bound to one job's lease): it
writes the file at dest (a path in tmp/) with its sha256 checked, or raises. It runs on a daemon thread of its own,
not an executor: a fetch may take minutes, and neither the loop's shutdown nor interpreter exit may wait for it.
Concurrent acquires of one sha share one fetch; when that fetch fails, each waiter tries again with its own fetch
(the failure may be the other job's alone: its lease ended, the input is not that job's). A caller cancelled while
waiting stops waiting; the fetch goes on and its file lands in the cache.

Thread safety: one asyncio loop owns a cache (the bridge's); one cache owns its folder.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...durable import sync_dir

log = logging.getLogger("comfymq.worker")

Fetch = Callable[[str, str], int]  # (sha256, dest path) -> size; blocking
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class _Entry:
    size: int
    last_used: float


class InputCache:
    def __init__(self, root: str | os.PathLike, max_bytes: int):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.max_bytes = max(0, int(max_bytes))
        self._files: dict[str, _Entry] = {}
        self._held: Counter = Counter()  # sha -> acquires not yet released (also counts callers still waiting)
        self._fetches: dict[str, asyncio.Future] = {}  # sha -> its fetch in flight
        self._reserved = 0  # bytes of fetches in flight

    # ---- state -----------------------------------------------------------------------------------------

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    @property
    def total_bytes(self) -> int:
        """Bytes of the files in their final place."""
        return sum(e.size for e in self._files.values())

    def cached(self) -> dict[str, int]:
        """sha -> size of every file in the cache."""
        return {sha: e.size for sha, e in self._files.items()}

    def recent(self, n: int) -> list[str]:
        """The shas of at most n files in the cache, most recently used first (what the worker tells the host it
        keeps, so that jobs naming them come here first)."""
        return sorted(self._files, key=lambda sha: self._files[sha].last_used, reverse=True)[: max(0, n)]

    def open(self) -> None:
        """Removes what fetches of an earlier process left in tmp/, finds the files in their final place, and
        trims them to the bound. Call once, before the first acquire."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._files.clear()
        for sub in self.root.iterdir():
            if not (sub.is_dir() and len(sub.name) == 2):
                continue
            for f in sub.iterdir():
                if _SHA256.match(f.name) and f.name[:2] == sub.name:
                    try:
                        st = f.stat()
                    except OSError:
                        continue
                    self._files[f.name] = _Entry(st.st_size, st.st_mtime)
        self._trim()
        log.info(
            "input cache %s: %d files, %d bytes (bound %d bytes)",
            self.root,
            len(self._files),
            self.total_bytes,
            self.max_bytes,
        )

    # ---- acquire / release -----------------------------------------------------------------------------

    async def acquire(self, sha256: str, size: int, fetch: Fetch, on_fetch: Callable[[], None] | None = None) -> Path:
        """The path of the input with this sha256, fetched with `fetch` unless the cache has it, held until
        release(sha256). `size` is what the job says (room is made for it before a fetch). on_fetch() is called
        when this caller starts or joins a fetch. Raises what the fetch raised (the caller's own fetch)."""
        self._held[sha256] += 1
        try:
            while True:
                entry = self._files.get(sha256)
                if entry is not None:
                    path = self.path(sha256)
                    if path.is_file():
                        self._touch(sha256, path)
                        return path
                    del self._files[sha256]  # removed under us: fetch it again
                pending = self._fetches.get(sha256)
                mine = pending is None
                if mine:
                    pending = self._fetches[sha256] = asyncio.ensure_future(self._fetch(sha256, size, fetch))
                    pending.add_done_callback(lambda f, sha=sha256: self._fetched(sha, f))
                if on_fetch is not None:
                    on_fetch()
                    on_fetch = None
                try:
                    await asyncio.shield(pending)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    if mine:
                        raise
                    # another job's fetch failed: try with this job's own
        except BaseException:
            self._release(sha256)
            raise

    def release(self, sha256: str) -> None:
        """Ends one acquire's hold; trims the cache to its bound."""
        self._release(sha256)

    def _release(self, sha256: str) -> None:
        self._held[sha256] -= 1
        if self._held[sha256] <= 0:
            del self._held[sha256]
        self._trim()

    # ---- fetching --------------------------------------------------------------------------------------

    async def _fetch(self, sha256: str, size: int, fetch: Fetch) -> None:
        self._trim(room_for=size)
        self._reserved += size
        try:
            got = await _in_thread(self._fetch_into_place, sha256, fetch)
        finally:
            self._reserved -= size
        self._files[sha256] = _Entry(got, time.time())

    def _fetch_into_place(self, sha256: str, fetch: Fetch) -> int:
        """(fetch thread) fetch into tmp/, sync, rename into the final place, sync the folder."""
        dest = self.tmp / f"{sha256}.{uuid.uuid4().hex}"
        try:
            fetch(sha256, str(dest))
            fd = os.open(dest, os.O_RDONLY)
            try:
                os.fsync(fd)
                got = os.fstat(fd).st_size
            finally:
                os.close(fd)
            final = self.path(sha256)
            final.parent.mkdir(exist_ok=True)
            os.replace(dest, final)
            sync_dir(final.parent)
            return got
        finally:
            dest.unlink(missing_ok=True)

    def _fetched(self, sha256: str, fut: asyncio.Future) -> None:
        self._fetches.pop(sha256, None)
        if not fut.cancelled() and fut.exception() is not None:
            log.debug("fetch of input %s failed: %s", sha256, fut.exception())
        self._trim()

    # ---- the bound -------------------------------------------------------------------------------------

    def _touch(self, sha256: str, path: Path) -> None:
        now = time.time()
        self._files[sha256].last_used = now
        try:
            os.utime(path, (now, now))
        except OSError:
            pass

    def _trim(self, room_for: int = 0) -> None:
        """Removes unheld files, least recently used first, until the cache (and fetches in flight, and room_for)
        fit in max_bytes, or nothing more may go."""
        total = self.total_bytes + self._reserved + room_for
        if total <= self.max_bytes:
            return
        for sha, entry in sorted(self._files.items(), key=lambda kv: kv[1].last_used):
            if total <= self.max_bytes:
                break
            if self._held.get(sha):
                continue
            try:
                self.path(sha).unlink(missing_ok=True)
            except OSError as e:
                log.warning("could not remove the cached input %s: %s", self.path(sha), e)
                continue
            del self._files[sha]
            total -= entry.size


def _in_thread(fn, *args):
    """Runs fn(*args) on a daemon thread; returns a future of its result on the calling loop."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def deliver(ok: bool, value) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def main() -> None:
        try:
            result = (True, fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to the loop, raised there
            result = (False, e)
        try:
            loop.call_soon_threadsafe(deliver, *result)
        except RuntimeError:  # the loop is gone: nobody waits any more
            pass

    threading.Thread(target=main, name="comfymq-input-fetch", daemon=True).start()
    return fut
