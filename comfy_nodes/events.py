"""Broker events -> browser websocket events, rate-limited.

Four events reach the browser (through PromptServer.instance.send_sync inside ComfyUI):

  comfymq.job     {"jobs": [{job_id, state?, from?, worker?, reason?, progress?, removed?}, ...],
                   "resync": false}   -- changes since the last flush, one entry per job (latest wins);
                  {"jobs": [], "resync": true, "changed": n} when more than max_jobs changed: refetch.
  comfymq.worker  {"event": joined|rejoined|left|changed, "worker": {...}, "reason"?}
  comfymq.stats   the broker's stats event (counts per state, paused, workers online/busy, ...)
  comfymq.queue   {"paused": bool}

Job changes and progress are gathered and sent at most every `interval` seconds (so 1,000 jobs queued at once
become one message, not 1,000); worker and queue events go out at once (they are rare); stats at most once
a second. send(event, data) must be thread-safe (send_sync is).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .api.views import without_preview

log = logging.getLogger("comfymq.events")


class EventRelay:
    def __init__(self, send: Callable[[str, dict], None], *, interval: float = 0.25, max_jobs: int = 200):
        self._send = send
        self._interval = interval
        self._max_jobs = max_jobs
        self._lock = threading.Lock()
        self._jobs: dict[str, dict] = {}
        self._overflow = False
        self._stats: dict | None = None
        self._last_stats = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="comfymq-relay", daemon=True)
        self._thread.start()

    def __call__(self, event: dict) -> None:
        """A broker event (called on the service's event thread)."""
        kind = event.get("type")
        if kind == "job":
            with self._lock:
                entry = self._jobs.setdefault(event["job_id"], {"job_id": event["job_id"]})
                for k in ("state", "from", "worker", "reason", "removed"):
                    if k in event:
                        entry[k] = event[k]
                if event.get("state") not in (None, "running"):
                    entry.pop("progress", None)  # a run that ended has no progress to show
                self._overflow |= len(self._jobs) > self._max_jobs
        elif kind == "progress":
            with self._lock:
                entry = self._jobs.setdefault(event["job_id"], {"job_id": event["job_id"]})
                entry["progress"] = without_preview(event.get("progress"))
                if event.get("worker"):
                    entry["worker"] = event["worker"]
                self._overflow |= len(self._jobs) > self._max_jobs
        elif kind == "worker":
            self._emit("comfymq.worker", {k: v for k, v in event.items() if k != "type"})
        elif kind == "queue":
            self._emit("comfymq.queue", {"paused": event.get("paused")})
        elif kind == "stats":
            with self._lock:
                self._stats = {k: v for k, v in event.items() if k != "type"}

    def _emit(self, name: str, data: dict) -> None:
        try:
            self._send(name, data)
        except Exception:  # noqa: BLE001 - a closed socket must not stop the relay
            log.debug("could not send %s", name, exc_info=True)

    def flush(self) -> None:
        with self._lock:
            jobs, overflow = self._jobs, self._overflow
            self._jobs, self._overflow = {}, False
            stats = None
            if self._stats is not None and time.monotonic() - self._last_stats >= 1.0:
                stats, self._stats, self._last_stats = self._stats, None, time.monotonic()
        if overflow:
            self._emit("comfymq.job", {"jobs": [], "resync": True, "changed": len(jobs)})
        elif jobs:
            self._emit("comfymq.job", {"jobs": list(jobs.values()), "resync": False})
        if stats is not None:
            self._emit("comfymq.stats", stats)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.flush()
