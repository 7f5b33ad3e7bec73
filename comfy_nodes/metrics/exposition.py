"""Prometheus text exposition (format 0.0.4) of counters, gauges and histograms with labels. Thread-safe: observe
from any thread, render from another. Label values are escaped (\\, ", newline); metric and label names are the
caller's constants. Series per metric are bounded (MAX_SERIES): past it, new label sets are counted in one
`{overflow="true"}` series instead of growing memory without bound."""

from __future__ import annotations

import bisect
import math
import threading

MAX_SERIES = 2000

SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple, values: tuple, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if isinstance(v, float):
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return repr(v)
    return str(v)


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_: str, labels: tuple = ()):
        self.name, self.help, self.label_names = name, help_, tuple(labels)
        self._lock = threading.Lock()

    def _key(self, values: tuple, table: dict) -> tuple:
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}")
        key = tuple(str(v) for v in values)
        if key not in table and len(table) >= MAX_SERIES:
            return ("overflow",) * len(self.label_names)
        return key

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_: str, labels: tuple = ()):
        super().__init__(name, help_, labels)
        self._values: dict[tuple, float] = {}

    def inc(self, *labels, by: float = 1) -> None:
        with self._lock:
            key = self._key(labels, self._values)
            self._values[key] = self._values.get(key, 0) + by

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}_total{_labels(self.label_names, k)} {_num(v)}" for k, v in items]


class Gauge(_Metric):
    """Set at scrape time: set_all(values) replaces every series (series that went away go with it)."""

    kind = "gauge"

    def __init__(self, name: str, help_: str, labels: tuple = ()):
        super().__init__(name, help_, labels)
        self._values: dict[tuple, float] = {}

    def set(self, value: float, *labels) -> None:
        with self._lock:
            self._values[self._key(labels, self._values)] = value

    def set_all(self, values: dict) -> None:
        with self._lock:
            self._values = {}
            for k, v in values.items():
                k = k if isinstance(k, tuple) else (k,)
                self._values[self._key(k, self._values)] = v

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_num(v)}" for k, v in items]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_: str, labels: tuple = (), buckets: tuple = SECONDS_BUCKETS):
        super().__init__(name, help_, labels)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[tuple, list] = {}  # key -> [counts per bucket..., +Inf count, sum]

    def observe(self, value: float, *labels) -> None:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        with self._lock:
            key = self._key(labels, self._series)
            s = self._series.get(key)
            if s is None:
                s = self._series[key] = [0] * (len(self.buckets) + 1) + [0.0]
            s[bisect.bisect_left(self.buckets, value)] += 1
            s[-1] += value

    def set_series(self, counts: list, total: float, *labels) -> None:
        """Replaces one series with counts kept elsewhere (the store's): per bucket, then past every bound."""
        if len(counts) != len(self.buckets) + 1:
            raise ValueError(f"{self.name} has {len(self.buckets)} buckets and one past them")
        with self._lock:
            self._series[self._key(labels, self._series)] = [int(c) for c in counts] + [float(total)]

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        out = self.header()
        for key, s in items:
            running = 0
            for i, bound in enumerate(self.buckets):
                running += s[i]
                le = 'le="' + repr(float(bound)) + '"'  # (as Prometheus' own clients write it: 1.0, 0.25)
                out.append(self.name + "_bucket" + _labels(self.label_names, key, le) + f" {running}")
            running += s[len(self.buckets)]
            out.append(self.name + "_bucket" + _labels(self.label_names, key, 'le="+Inf"') + f" {running}")
            out.append(f"{self.name}_sum{_labels(self.label_names, key)} {_num(float(s[-1]))}")
            out.append(f"{self.name}_count{_labels(self.label_names, key)} {running}")
        return out


def render(metrics: list) -> str:
    lines: list[str] = []
    for m in metrics:
        lines.extend(m.render())
    return "\n".join(lines) + "\n"
