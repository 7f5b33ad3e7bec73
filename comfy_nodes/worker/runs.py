"""What the worker bridge posted to its ComfyUI, kept on disk so a restarted worker can find it again.

Each run of a job gets a prompt id minted from the job's id, attempt and lease token (prompt_id_for): a canonical
lowercase UUID (what newer ComfyUIs require of a caller's id), different for every lease, and the same whenever it
is minted again for that lease. Before the bridge posts a prompt it writes a record <work_dir>/runs/<job id>.json:

    {"job_id", "attempt", "token", "prompt_id", "comfy_url", "at"}

(written to a temporary file, synced, renamed over the old one: a record is whole or absent). When the job comes
back to this worker (the worker restarted, or left the broker and joined again: the broker handed the job out
again under a new lease), the record says which prompt its ComfyUI may still hold for it; the bridge asks ComfyUI
what became of that prompt and adopts or follows it (bridge.py). A record goes once the host has the job's result,
or when the job ended otherwise; records nobody claimed are dropped after max_age.

Thread safety: one bridge (its asyncio loop) owns a folder; the calls are short synchronous file operations.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from pathlib import Path

from ..durable import sync_dir

log = logging.getLogger("comfymq.worker")

PROMPT_ID_NAMESPACE = uuid.UUID("3f4b8a5e-6c1d-5d2e-9b7a-0c8e1f2a3b4c")  # ComfyMQ's, for uuid5
_SAFE = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


def prompt_id_for(job_id: str, attempt, token) -> str:
    """The prompt id of one lease of a job (uuid5: deterministic, canonical lowercase)."""
    return str(uuid.uuid5(PROMPT_ID_NAMESPACE, f"comfymq/{job_id}/{attempt}/{token}"))


def client_id_for(worker_id: str, install_id: str, comfy_url: str) -> str:
    """The websocket session id the bridge posts prompts for: stable across restarts of this worker, so a restarted
    worker receives the events of a prompt its earlier process posted (ComfyUI sends them to that session)."""
    return "comfymq-" + uuid.uuid5(PROMPT_ID_NAMESPACE, f"client/{worker_id}/{install_id}/{comfy_url}").hex


class RunRecords:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def _path(self, job_id: str) -> Path | None:
        return self.folder / f"{job_id}.json" if _SAFE.match(str(job_id)) else None

    def put(self, job_id: str, attempt, token, prompt_id: str, comfy_url: str) -> None:
        """Records the run before its prompt is posted (synced; a record is never seen half-written)."""
        path = self._path(job_id)
        if path is None:
            return
        record = {
            "job_id": job_id,
            "attempt": attempt,
            "token": token,
            "prompt_id": prompt_id,
            "comfy_url": comfy_url,
            "at": time.time(),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        sync_dir(self.folder)

    def get(self, job_id: str) -> dict | None:
        path = self._path(job_id)
        if path is None:
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("job_id") != job_id or not record.get("prompt_id"):
            return None
        return record

    def drop(self, job_id: str, token=None) -> None:
        """Forgets the job's record (only if it is of this lease, when a token is given)."""
        path = self._path(job_id)
        if path is None:
            return
        if token is not None:
            record = self.get(job_id)
            if record is not None and record.get("token") != token:
                return
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not remove the run record %s: %s", path, e)

    def all(self) -> list[dict]:
        out = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            record = self.get(path.stem)
            if record is not None:
                out.append(record)
        return out

    def prune(self, max_age: float) -> int:
        """Drops records older than max_age seconds (and stray temporary files); returns how many went."""
        removed = 0
        now = time.time()
        for path in list(self.folder.glob("*.tmp")) if self.folder.is_dir() else []:
            path.unlink(missing_ok=True)
        for record in self.all():
            if now - float(record.get("at") or 0) > max_age:
                self.drop(record["job_id"])
                removed += 1
        return removed
