"""Recent figures for GET /comfymq/stats (seed 001's stats): jobs ended per minute over the last day, and the last
SAMPLES wait and run times per worker and per template (or graph shape, for a job made from no template), with
their mean and p95. Memory only (a restart starts them again), bounded: MINUTES buckets, SAMPLES per key, KEYS
keys per kind (the least recently used key goes first)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict, deque

MINUTES = 24 * 60
SAMPLES = 1000
KEYS = 1000


def graph_shape(prompt) -> str | None:
    """A short name for a workflow's shape: its node classes (a hash of their sorted list, with the first few)."""
    if not isinstance(prompt, dict):
        return None
    classes = sorted({str(n.get("class_type")) for n in prompt.values() if isinstance(n, dict)})
    digest = hashlib.sha256("\n".join(classes).encode()).hexdigest()[:8]
    return f"{'+'.join(c for c in classes[:3])}{'+…' if len(classes) > 3 else ''}#{digest}"


class RecentStats:
    def __init__(self):
        self._lock = threading.Lock()
        self._ended = [0] * MINUTES  # endings per minute, ring by minute since the epoch
        self._ended_state: list[dict] = [{} for _ in range(MINUTES)]
        self._minute = [0] * MINUTES  # which minute each slot holds
        self._seconds = [0] * 60  # endings per second over the last minute, ring by second
        self._second = [0] * 60
        self._times: dict[str, OrderedDict] = {"worker": OrderedDict(), "template": OrderedDict()}

    def ended(self, state: str, at_s: float | None = None) -> None:
        at = at_s or time.time()
        m = int(at // 60)
        i = m % MINUTES
        sec = int(at)
        with self._lock:
            if self._second[sec % 60] != sec:
                self._second[sec % 60], self._seconds[sec % 60] = sec, 0
            self._seconds[sec % 60] += 1
            if self._minute[i] != m:
                self._minute[i], self._ended[i], self._ended_state[i] = m, 0, {}
            self._ended[i] += 1
            self._ended_state[i][state] = self._ended_state[i].get(state, 0) + 1

    def sample(self, kind: str, key: str, what: str, seconds: float) -> None:
        """kind: worker | template; what: wait | run."""
        if not key:
            return
        with self._lock:
            table = self._times[kind]
            entry = table.get(key)
            if entry is None:
                entry = table[key] = {"wait": deque(maxlen=SAMPLES), "run": deque(maxlen=SAMPLES)}
                while len(table) > KEYS:
                    table.popitem(last=False)
            table.move_to_end(key)
            entry[what].append(seconds)

    def throughput(self, now_s: float | None = None) -> dict:
        """Endings in the last 60 s (by second), the last 60 minutes and the last 24 hours (by minute)."""
        at = now_s or time.time()
        now = int(at // 60)
        out = {"last_minute": 0, "last_hour": 0, "last_day": 0, "last_day_by_state": {}}
        with self._lock:
            out["last_minute"] = sum(n for i, n in enumerate(self._seconds) if 0 <= int(at) - self._second[i] < 60)
            for i in range(MINUTES):
                age = now - self._minute[i]
                if not 0 <= age < MINUTES or not self._ended[i]:
                    continue
                out["last_day"] += self._ended[i]
                for s, n in self._ended_state[i].items():
                    out["last_day_by_state"][s] = out["last_day_by_state"].get(s, 0) + n
                if age < 60:
                    out["last_hour"] += self._ended[i]
        return out

    def times(self, kind: str) -> dict:
        """{key: {"wait": {count, mean, p95}, "run": {...}}} of the last SAMPLES of each (seconds)."""
        with self._lock:
            copied = {k: {w: list(v) for w, v in e.items()} for k, e in self._times[kind].items()}
        return {k: {w: _summary(v) for w, v in e.items()} for k, e in copied.items()}


def _summary(values: list) -> dict:
    if not values:
        return {"count": 0, "mean": None, "p95": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, int(round(0.95 * len(ordered))) - 1))]
    return {"count": len(values), "mean": round(sum(values) / len(values), 4), "p95": round(p95, 4)}
