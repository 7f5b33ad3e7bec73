"""What the panel's list pages cost on a big store: GET /comfymq/tasks and GET /comfymq/jobs on a standalone host
whose store holds 100,000 jobs in mixed states (30% pending, 45% succeeded, 10% failed, 15% cancelled) with 300
light workers connected, against the same requests on a store of 1,000 jobs in the same run (the baseline).
One JSON line per figure, as `make bench` prints them; never asserts (target: every page p95 < 50 ms).

    .venv/bin/python bench/panel_scale.py [--jobs 100000] [--baseline-jobs 1000] [--workers 300] [--rounds 60]

The pages are the panel's: the first page of 100 (what the panel opens on), a state-filtered page (failed: 10%
of the jobs), a page of 100 deep in the list (the 100 jobs older than the 200th oldest: at 100,000 jobs
99.8% of the way down, as scrolling far down asks), a
filtered deep page, the page the panel's reload and window fetches ask for (200: js/lib/job-list.js fetchRange), and
the largest page (1,000: what the panel asked for in one request before). Latency is measured by one
client on a kept-alive connection, requests one after another; p50 and p95 over `rounds` requests each.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "browser"))

import scale_farm  # noqa: E402  (the fill and the light workers, shared with the browser scale test)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_host(data: Path) -> tuple[subprocess.Popen, int, str]:
    port, broker = free_port(), f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "comfy_nodes", "host", "--data-dir", str(data), "--port", str(port)]
        + ["--workers-bind", broker],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(data / "host.log", "w"),
    )
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"panel_scale bench: the host exited ({proc.returncode}); see {data / 'host.log'}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/comfymq/health")
            if c.getresponse().status == 200:
                return proc, port, broker
        except OSError:
            time.sleep(0.05)
    raise SystemExit("panel_scale bench: the host did not start")


def start_workers(broker: str, count: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, scale_farm.__file__, "workers", broker, "--count", str(count)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("WORKERS"):
        raise SystemExit(f"panel_scale bench: the workers did not connect ({line!r})")
    return proc


class Client:
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str) -> tuple[float, dict]:
        t0 = time.perf_counter()
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        body = r.read()
        ms = (time.perf_counter() - t0) * 1000
        if r.status != 200:
            raise SystemExit(f"panel_scale bench: GET {path}: {r.status} {body[:200]!r}")
        return ms, json.loads(body)


def pages(client: Client) -> dict[str, str]:
    """The requests measured, by name: the deep cursors are ids ~99% of the way down the newest-first list."""
    _, oldest = client.get("/comfymq/jobs?order=oldest&limit=1000")
    ids = [j["id"] for j in oldest["jobs"]]
    deep = ids[min(199, len(ids) // 2)]  # a page of 100 jobs older than the 200th oldest
    _, failed = client.get("/comfymq/jobs?order=oldest&state=failed&limit=1000")
    deep_failed = failed["jobs"][min(199, len(failed["jobs"]) // 2)]["id"]
    return {
        "first_page": "/comfymq/jobs?limit=100",
        "tasks_first_page": "/comfymq/tasks?limit=100",
        "filtered_page": "/comfymq/jobs?state=failed&limit=100",
        "pending_page": "/comfymq/jobs?state=pending&limit=100",
        "deep_page": f"/comfymq/jobs?limit=100&cursor={deep}",
        "tasks_deep_page": f"/comfymq/tasks?limit=100&cursor={deep}",
        "filtered_deep_page": f"/comfymq/jobs?state=failed&limit=100&cursor={deep_failed}",
        "page_of_200": "/comfymq/jobs?limit=200",
        "page_of_1000": "/comfymq/jobs?limit=1000",
    }


def measure(jobs: int, workers: int, rounds: int) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory(prefix="comfymq-panel-scale-") as d:
        data = Path(d)
        filled = scale_farm.fill(str(data), jobs)
        print(json.dumps({"bench": "panel_scale", "metric": f"fill_{jobs}", **filled}), flush=True)
        host, port, broker = start_host(data)
        farm = start_workers(broker, workers) if workers else None
        try:
            client = Client(port)
            out = {}
            for name, path in pages(client).items():
                for _ in range(5):  # warm
                    client.get(path)
                times = sorted(client.get(path)[0] for _ in range(rounds))
                out[name] = (statistics.median(times), times[int(0.95 * (len(times) - 1))])
            return out
        finally:
            if farm:
                farm.stdin.close()
                farm.wait(timeout=30)
            host.terminate()
            host.wait(timeout=30)


def emit(metric: str, value: float, unit: str, baseline: str, baseline_value: float, **more) -> None:
    row = {"bench": "panel_scale", "metric": metric, "value": round(value, 3), "unit": unit}
    row.update(baseline=baseline, baseline_value=round(baseline_value, 3))
    row["ratio"] = round(value / baseline_value, 3) if baseline_value else None
    row.update(more)
    print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--baseline-jobs", type=int, default=1_000)
    ap.add_argument("--workers", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args()
    base = measure(args.baseline_jobs, args.workers, args.rounds)
    big = measure(args.jobs, args.workers, args.rounds)
    for name, (p50, p95) in big.items():
        b50, b95 = base[name]
        emit(f"{name}_ms_p50", p50, "ms", f"{name} at {args.baseline_jobs} jobs", b50, jobs=args.jobs)
        emit(f"{name}_ms_p95", p95, "ms", f"{name} at {args.baseline_jobs} jobs", b95, jobs=args.jobs, target="< 50")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
