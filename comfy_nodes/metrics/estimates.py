"""Estimates for pending jobs: when each is expected to start and to end, from run times measured on this farm.

    Estimator(service).estimate(job) -> {"start": ms, "end": ms, "ahead": n, "run_seconds": s} | None

The model: every online worker that is not draining has `capacity` slots; a slot that runs a job frees up after
half the farm's mean run time (scaled by that worker's speed: the broker's measured factor, 0.5 = twice as fast);
the `ahead` jobs before this one in dispatch order (the store's queue position: priority, then owners' turns) take
the first slots to free up, in turn, each the farm's mean run time on its slot's worker; this job starts when the
next slot frees and ends its own kind's mean run time (its template's or graph shape's, RecentStats) later, on
that worker. Past SIMULATED jobs ahead the rest go at the farm's rate (the sum of its slots' speeds).

None when nothing has been measured yet (no run has succeeded since the host started), when no online worker
takes jobs, or for a job that is not pending and ready (it waits for others: its place is not known yet).
The farm's picture is read at most once a second (REFRESH), so estimating a page of jobs costs little.
"""

from __future__ import annotations

import heapq
import threading
import time

from .recent import graph_shape

SIMULATED = 2000  # jobs ahead placed one by one; the rest at the farm's rate
REFRESH = 1.0  # seconds a farm picture is reused


class Estimator:
    def __init__(self, service):
        self.service = service
        self._lock = threading.Lock()
        self._picture: tuple[float, dict | None] = (0.0, None)

    def _farm(self) -> dict | None:
        """{"slots": [(free_at_s, speed)], "mean": s, "kinds": {kind: mean s}} or None (blocking reads)."""
        now = time.monotonic()
        with self._lock:
            at, picture = self._picture
            if now - at < REFRESH:
                return picture
        picture = self._read_farm()
        with self._lock:
            self._picture = (now, picture)
        return picture

    def _read_farm(self) -> dict | None:
        svc = self.service
        metrics = getattr(svc, "metrics", None)
        if metrics is None or svc.broker is None:
            return None
        per_kind = metrics.recent.times("template")
        runs = [(e["run"]["mean"], e["run"]["count"]) for e in per_kind.values() if e["run"]["count"]]
        if not runs:
            return None
        mean = sum(m * n for m, n in runs) / sum(n for _, n in runs)
        kinds = {k: e["run"]["mean"] for k, e in per_kind.items() if e["run"]["count"]}
        slots = []
        for w in svc.broker.workers():
            if not w.get("online") or w.get("draining"):
                continue
            speed = max(0.05, float(w.get("speed") or 1.0))
            busy = len(w.get("running") or [])
            for i in range(max(1, int(w.get("capacity") or 1))):
                slots.append((mean * speed / 2 if i < busy else 0.0, speed))
        if not slots:
            return None
        return {"slots": slots, "mean": max(mean, 0.001), "kinds": kinds}

    def estimate(self, job: dict, now_ms: int | None = None) -> dict | None:
        """The estimate of one pending job (blocking: call it on the service's pool)."""
        if job.get("state") != "pending":
            return None
        ahead = self.service.store.queue_position(job["id"])
        if ahead is None:
            return None
        farm = self._farm()
        if farm is None:
            return None
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        mean = farm["mean"]
        heap = [(t, i, speed) for i, (t, speed) in enumerate(farm["slots"])]
        heapq.heapify(heap)
        placed = min(ahead, SIMULATED)
        for _ in range(placed):
            t, i, speed = heapq.heappop(heap)
            heapq.heappush(heap, (t + mean * speed, i, speed))
        start_s, _, speed = heap[0]
        if ahead > placed:
            rate = sum(1 / (mean * s) for _, s in farm["slots"])  # jobs per second with every slot busy
            start_s += (ahead - placed) / rate
        t = (job.get("labels") or {}).get("comfymq/template")
        kind = "template " + t["name"] if isinstance(t, dict) and isinstance(t.get("name"), str) else None
        kind = kind or graph_shape(job.get("prompt")) or ""
        run_s = farm["kinds"].get(kind, mean) * speed
        return {
            "start": now_ms + int(start_s * 1000),
            "end": now_ms + int((start_s + run_s) * 1000),
            "ahead": ahead,
            "run_seconds": round(run_s, 3),
        }
