"""InputStore: the host's input files, kept by content, one copy per content however many jobs use it.

Layout under the root (`<data_dir>/inputs`), shared with the broker, which reads the files for workers:

  <root>/<sha256[0:2]>/<sha256>    exactly the file's bytes; the name is their SHA-256, 64 lowercase hex digits
  <root>/tmp/<random>.part         uploads and copies in progress (same file system, so the rename is atomic)

A file is written to tmp/, fsynced, its SHA-256 computed as it streams (never whole in memory), then linked into
place without replacing anything and tmp's entry removed; the shard folder is fsynced (and the root, when the
shard folder was new). A file already stored under that name is kept: the new copy is dropped. So a name in the
store always holds complete, synced bytes with that hash.

A stored file's mtime is its last use: set when it is stored, and again by touch() whenever a job about to be
queued names it. sweep() removes files no kept job names whose last use is older than a grace period, so an upload
not yet used, and an input a job is being queued with right now, stay. touch() and the removal of a file take one
lock, so a file is never removed between an enqueue's check and its job's commit.

Thread-safe: any thread may call any method; one PendingInput is used by one thread at a time.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Container, Iterable

from ..durable import sync_dir

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
TMP = "tmp"
TMP_SUFFIX = ".part"
COPY_BLOCK = 1 << 20  # bytes read at a time by put_file
DEFAULT_GRACE = 24 * 3600.0  # seconds an unreferenced input is kept after its last use (sweep)


class InputTooLarge(ValueError):
    """More bytes than the store was told to take (put_stream / put_file / PendingInput max_bytes)."""

    def __init__(self, limit: int):
        super().__init__(f"the input is larger than the limit of {limit} bytes")
        self.limit = limit


def check_sha256(sha256) -> str:
    """sha256 itself when it is 64 lowercase hex digits, else ValueError saying so."""
    if not isinstance(sha256, str) or not SHA256_RE.match(sha256):
        shown = sha256[:80] if isinstance(sha256, str) else type(sha256).__name__
        raise ValueError(f"'{shown}' is not a SHA-256 (64 lowercase hex digits)")
    return sha256


@dataclass(frozen=True)
class StoredInput:
    sha256: str
    size: int
    existed: bool  # the store held these bytes already; this copy was dropped


class PendingInput:
    """A file being written into the store: write() its bytes in order, then commit() (or abort()). As a
    context manager it aborts unless committed. max_bytes: write() past it aborts and raises InputTooLarge."""

    def __init__(self, store: "InputStore", max_bytes: int | None = None):
        self._store = store
        self._max = max_bytes
        self._hash = hashlib.sha256()
        self.size = 0
        self.temp_path = store.tmp_dir / (secrets.token_hex(16) + TMP_SUFFIX)
        fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._done = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._done:
            raise ValueError("this input was committed or aborted already")
        if self._max is not None and self.size + len(data) > self._max:
            self.abort()
            raise InputTooLarge(self._max)
        try:
            self._file.write(data)
        except BaseException:
            self.abort()
            raise
        self._hash.update(data)
        self.size += len(data)

    def commit(self) -> StoredInput:
        """Syncs the bytes and puts them in place (see the module doc). On any error the temp file is removed."""
        if self._done:
            raise ValueError("this input was committed or aborted already")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            sha = self._hash.hexdigest()
            existed = self._store._place(self.temp_path, sha)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return StoredInput(sha, self.size, existed)

    def abort(self) -> None:
        """Drops what was written (safe to call more than once, and after commit: then it does nothing)."""
        if self._done:
            return
        self._done = True
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "PendingInput":
        return self

    def __exit__(self, *exc) -> None:
        self.abort()


class InputStore:
    """The input files under `root` (the module doc). Opening removes temp files a crash left behind: call it
    once per data dir, in the process that holds the job store (whose lock keeps other processes out)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.tmp_dir = self.root / TMP
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # touch() vs. the removal of a file (sweep, remove)
        self.stale_removed = 0
        for entry in os.scandir(self.tmp_dir):
            if entry.name.endswith(TMP_SUFFIX):
                try:
                    os.unlink(entry.path)
                    self.stale_removed += 1
                except OSError:
                    pass

    # ---- writing ------------------------------------------------------------------------------------------

    def begin(self, max_bytes: int | None = None) -> PendingInput:
        """A new file to write into the store (PendingInput)."""
        return PendingInput(self, max_bytes)

    def put_stream(self, chunks: Iterable[bytes], max_bytes: int | None = None) -> StoredInput:
        """Stores the concatenated chunks. InputTooLarge past max_bytes (nothing stored)."""
        with self.begin(max_bytes) as pending:
            for chunk in chunks:
                pending.write(chunk)
            return pending.commit()

    def put_file(self, path: str | os.PathLike, max_bytes: int | None = None) -> StoredInput:
        """Stores a copy of the file at `path`, read in blocks. OSError when it cannot be read."""
        with open(path, "rb") as f:
            return self.put_stream(iter(lambda: f.read(COPY_BLOCK), b""), max_bytes)

    def _place(self, temp: Path, sha: str) -> bool:
        """Links temp in as `sha` unless that exists (True then), and removes temp. Syncs the folders."""
        shard = self.root / sha[:2]
        new_shard = not shard.is_dir()
        if new_shard:
            shard.mkdir(exist_ok=True)
        target = shard / sha
        try:
            os.link(temp, target)
            existed = False
        except FileExistsError:
            existed = True
        except OSError as e:  # a file system without hard links: a rename (which replaces) after a check
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            existed = target.exists()
            if not existed:
                os.rename(temp, target)
        if existed:
            self.touch(sha)  # the same bytes were just used again
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        if not existed:
            sync_dir(shard, strict=True)
            if new_shard:
                sync_dir(self.root, strict=True)
        return existed

    # ---- reading ------------------------------------------------------------------------------------------

    def path(self, sha256: str) -> Path:
        """Where the input with this SHA-256 is (or would be). ValueError for a malformed sha256."""
        check_sha256(sha256)
        return self.root / sha256[:2] / sha256

    def stat(self, sha256: str) -> int | None:
        """The stored input's size in bytes, or None when the store does not hold it."""
        try:
            st = os.stat(self.path(sha256))
        except FileNotFoundError:
            return None
        return st.st_size

    def touch(self, sha256: str) -> int | None:
        """Marks the input as used now (its grace period starts again); its size, or None when it is not
        stored. Callers queueing a job that names it call this first (see the module doc)."""
        path = self.path(sha256)
        with self._lock:
            try:
                os.utime(path)
                return os.stat(path).st_size
            except FileNotFoundError:
                return None

    # ---- removing -----------------------------------------------------------------------------------------

    def remove(self, sha256: str) -> bool:
        """Removes the input; False when it was not there."""
        with self._lock:
            try:
                os.unlink(self.path(sha256))
                return True
            except FileNotFoundError:
                return False

    def unused_since(self, older_than: float, now: float | None = None) -> set[str]:
        """The stored inputs whose last use is more than older_than seconds ago (candidates for sweep())."""
        now = time.time() if now is None else now
        found = set()
        for shard in os.scandir(self.root):
            if not shard.is_dir(follow_symlinks=False) or len(shard.name) != 2 or shard.name == TMP:
                continue
            for entry in os.scandir(shard.path):
                if entry.name.startswith(shard.name) and SHA256_RE.match(entry.name):
                    try:
                        if now - entry.stat(follow_symlinks=False).st_mtime > older_than:
                            found.add(entry.name)
                    except FileNotFoundError:
                        pass
        return found

    def remove_unused(self, sha256s: Iterable[str], older_than: float, now: float | None = None) -> tuple[int, int]:
        """Removes each of these inputs whose last use is still more than older_than seconds ago (checked under
        the lock touch() takes, right before the removal). Returns (files removed, bytes freed)."""
        now = time.time() if now is None else now
        removed = freed = 0
        for sha in sorted(sha256s):
            path = self.path(sha)
            with self._lock:
                try:
                    st = os.stat(path)
                    if now - st.st_mtime <= older_than:
                        continue
                    os.unlink(path)
                except FileNotFoundError:
                    continue
            removed += 1
            freed += st.st_size
        return removed, freed

    def remove_stale_temps(self, older_than: float, now: float | None = None) -> int:
        """Removes temp files older than older_than seconds (an upload in progress is never that old)."""
        now = time.time() if now is None else now
        removed = 0
        for entry in os.scandir(self.tmp_dir):
            try:
                if entry.name.endswith(TMP_SUFFIX) and now - entry.stat().st_mtime > older_than:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def sweep(
        self, referenced: Container[str], older_than: float = DEFAULT_GRACE, now: float | None = None
    ) -> tuple[int, int]:
        """Removes every input not in `referenced` whose last use is more than older_than seconds ago, and temp
        files as old (left by a crash). Returns (files removed, bytes freed)."""
        unused = [sha for sha in self.unused_since(older_than, now) if sha not in referenced]
        result = self.remove_unused(unused, older_than, now)
        self.remove_stale_temps(older_than, now)
        return result
