"""Peak memory of a real host process for the largest single requests, with today's limits and with the old
ones as the baseline. One JSON line per figure, as `make bench` prints them; never asserts.

    .venv/bin/python bench/http_memory.py

Each case runs on a fresh `python -m comfy_nodes host` (VmHWM only grows), posting one request and reading the
host's VmHWM from /proc before and after. Baseline: the limits before api/limits.py (512 MiB of prompt bytes
per request, workflows not counted), given as flags to the same code.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))

from http_host import HostProcess, sized_prompt  # noqa: E402

MIB = 1 << 20
OLD = ("--max-stored-bytes-per-request", str(512 * MIB))

CASES = [  # (name, prompt bytes, count, as a JSON string)
    ("issue_47kb_x10000", 47_000, 10000, True),
    ("limit_6kb_x10000", 6_678, 10000, False),
    ("64kb_x1000", 64_000, 1000, False),
    ("one_63mib_prompt", 63 * MIB, 1, False),
]


def run(tmp: Path, prompt: dict, count: int, as_string: bool, flags=()) -> dict:
    body = {"prompt": json.dumps(prompt) if as_string else prompt}
    if count > 1:
        body["count"] = count
    with HostProcess(tmp, *flags) as host:
        idle = host.peak_rss_kib()
        t0 = time.monotonic()
        status, _ = host.json("POST", "/comfymq/tasks", body, timeout=600)
        took = time.monotonic() - t0
        peak = host.peak_rss_kib()
        jobs = host.json("GET", "/comfymq/stats")[1]["total"]
        store = sum(f.stat().st_size for f in (host.data_dir / "store").rglob("*") if f.is_file())
    return {
        "status": status,
        "jobs": jobs,
        "idle_mib": idle / 1024,
        "peak_mib": peak / 1024,
        "store_mib": store / MIB,
        "seconds": took,
    }


def line(bench: str, metric: str, value, unit: str, baseline: dict | None = None, key: str | None = None) -> None:
    row = {
        "bench": bench,
        "metric": metric,
        "value": round(value, 1) if isinstance(value, float) else value,
        "unit": unit,
    }
    if baseline is not None and key:
        base = baseline[key]
        row.update(baseline="old_limits", baseline_value=round(base, 1) if isinstance(base, float) else base)
        if unit not in ("http", "jobs"):  # a status or a count is compared, not divided
            row["ratio"] = round(value / base, 3) if base else None
    print(json.dumps(row), flush=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="comfymq-bench-http-") as d:
        tmp = Path(d)
        for name, size, count, as_string in CASES:
            prompt = sized_prompt(size)
            old = run(tmp, prompt, count, as_string, OLD)
            new = run(tmp, prompt, count, as_string)
            bench = f"http_memory/{name}"
            line(bench, "status", new["status"], "http", old, "status")
            line(bench, "jobs_stored", new["jobs"], "jobs", old, "jobs")
            line(bench, "host_peak_rss", new["peak_mib"], "MiB", old, "peak_mib")
            line(
                bench,
                "host_peak_rss_above_idle",
                new["peak_mib"] - new["idle_mib"],
                "MiB",
                {"d": old["peak_mib"] - old["idle_mib"]},
                "d",
            )
            line(bench, "store_size", new["store_mib"], "MiB", old, "store_mib")


if __name__ == "__main__":
    main()
