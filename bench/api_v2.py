"""What the Comfy API v2 layer costs per job: submit throughput through the v2 surface with the official SDK's client
(comfy_low.ComfyLow.post_jobs: the request the SDK's submit makes), against our own POST /comfymq/tasks with the same
prompt over the same HTTP client library (httpx) in the same run, one client and 8 at once; and the time from
submit to the first SSE frame of the job's event stream (the SDK's job.events()). One JSON line per figure, as
`make bench` prints them; never asserts (target: v2 costs under 20% more per job, ratio <= 1.2).

    .venv/bin/python bench/api_v2.py [--jobs 400] [--rounds 50]

A real standalone host (`python -m comfy_nodes host`) on loopback, with no workers: what is measured is the front
door and the store's commit, not a run. Jobs carry an Idempotency-Key, as the SDK's submit always sends one.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_host(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "comfy_nodes",
            "host",
            "--data-dir",
            str(tmp / "host"),
            "--port",
            str(port),
            "--workers-bind",
            f"tcp://127.0.0.1:{free_port()}",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "host.log", "w"),
    )
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            if httpx.get(base + "/comfymq/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit("api_v2 bench: the host did not start")


def emit(name: str, value: float, unit: str, **more) -> None:
    print(json.dumps({"bench": "api_v2", "figure": name, "value": round(value, 3), "unit": unit, **more}), flush=True)


def rate(jobs: int, clients: int, submit) -> float:
    """Jobs per second: `jobs` submits spread over `clients` threads."""
    per = jobs // clients
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: [submit() for _ in range(per)], range(clients)))
    return per * clients / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args()
    from comfy_low import ComfyLow

    with tempfile.TemporaryDirectory() as d:
        proc, base = start_host(Path(d))
        try:
            local = __import__("threading").local()

            def tasks_submit():
                if not hasattr(local, "http"):
                    local.http = httpx.Client(timeout=30)
                r = local.http.post(base + "/comfymq/tasks", json={"prompt": PROMPT})
                assert r.status_code == 200, r.text

            def v2_submit():
                if not hasattr(local, "low"):
                    local.low = ComfyLow(base, None, timeout=30)
                local.low.post_jobs(PROMPT, idempotency_key=uuid.uuid4().hex)

            for f in (tasks_submit, v2_submit):  # warm both paths
                for _ in range(20):
                    f()
            for clients in (1, 8):
                base_rate = rate(args.jobs, clients, tasks_submit)
                v2_rate = rate(args.jobs, clients, v2_submit)
                emit(f"tasks_submit_per_s_{clients}c", base_rate, "jobs/s")
                emit(f"v2_submit_per_s_{clients}c", v2_rate, "jobs/s")
                emit(f"v2_cost_ratio_{clients}c", base_rate / v2_rate, "x", target="<= 1.2")

            low = ComfyLow(base, None, timeout=30)
            firsts = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                job = low.post_jobs(PROMPT, idempotency_key=uuid.uuid4().hex)
                frames = low.get_job_events(job.urls.events)
                next(frames)
                firsts.append((time.perf_counter() - t0) * 1000)
                frames.close()
            emit("v2_submit_to_first_event_ms_p50", statistics.median(firsts), "ms")
            emit("v2_submit_to_first_event_ms_p95", sorted(firsts)[int(0.95 * (len(firsts) - 1))], "ms")
        finally:
            proc.terminate()
            proc.wait(timeout=15)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
