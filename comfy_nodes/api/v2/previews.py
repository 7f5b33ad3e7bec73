"""The newest preview image of each running job, for the v2 SSE stream's `preview` events (the contract: the
server keeps only the most recent and pushes it on connect).

Workers send a preview (a small JPEG, base64) inside a progress message at most once a second
(worker/previews.py); the broker's progress events bring it here (a service listener, on its event thread).
Bounded: MAX_JOBS jobs, the oldest dropped first; a job's preview goes when it ends.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

MAX_JOBS = 64
MAX_BASE64 = 300_000


class LatestPreviews:
    def __init__(self):
        self._lock = threading.Lock()
        self._by_job: OrderedDict[str, tuple[int, dict]] = OrderedDict()
        self._seq = 0

    def __call__(self, event: dict) -> None:
        kind, job = event.get("type"), event.get("job_id")
        if not isinstance(job, str):
            return
        if kind == "job" and event.get("state") not in (None, "running"):
            with self._lock:
                self._by_job.pop(job, None)
            return
        if kind != "progress":
            return
        p = event.get("progress")
        pv = p.get("preview") if isinstance(p, dict) else None
        if not isinstance(pv, dict) or not isinstance(pv.get("data_base64"), str):
            return
        if len(pv["data_base64"]) > MAX_BASE64 or pv.get("content_type") not in ("image/jpeg", "image/png"):
            return
        payload = {
            "node_id": str(pv.get("node_id") or ""),
            "content_type": pv["content_type"],
            "data_base64": pv["data_base64"],
        }
        with self._lock:
            self._seq += 1
            self._by_job[job] = (self._seq, payload)
            self._by_job.move_to_end(job)
            while len(self._by_job) > MAX_JOBS:
                self._by_job.popitem(last=False)

    def get(self, job: str) -> tuple[int, dict] | None:
        """(a number that changes with each new preview, the PreviewEvent payload), or None."""
        with self._lock:
            return self._by_job.get(job)
