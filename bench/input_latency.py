"""How long an input that travels with a job delays its start: the time from enqueue to the worker's POST /prompt
reaching its ComfyUI, for a job naming a 20 MiB input the worker has never seen (cold: fetched from the host,
uploaded into ComfyUI), for a second job naming the same input (cached: in the worker's cache and already in
ComfyUI), and, as the baseline measured in the same run, the same job without an input (its file already in
ComfyUI's input folder). One JSON line per figure, as `make bench` prints them; never asserts.

    .venv/bin/python bench/input_latency.py [--rounds 5] [--mib 20]

All real processes on loopback: a host (`python -m comfy_nodes host`), one worker (`python -m comfy_nodes
worker`) and the stand-in ComfyUI (v0.8.0's API). ComfyUI stamps each prompt it takes (`extra_data.create_time`,
milliseconds, read back from /history); the bench stamps its POST /comfymq/jobs. Each round runs the three jobs
one after the other, the worker idle; a cold job names a new input each round. The figures are medians.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))

from input_files import MIB, digest_graph, upload_file, write_random_file  # noqa: E402


def http(url: str, method: str = "GET", body=None, timeout: float = 60.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except OSError:
        return 0, None


def wait_for(fn, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.01)
    raise SystemExit(f"input_latency: timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A host, a stand-in ComfyUI and one worker driving it, in tmp; stop() ends them."""

    def __init__(self, tmp: Path):
        self.tmp, self.procs = tmp, []
        port, broker = free_port(), f"tcp://127.0.0.1:{free_port()}"
        self.host = f"http://127.0.0.1:{port}"
        self.input_dir = tmp / "comfy-input"
        self._start("host", "host", "--data-dir", str(tmp / "host"), "--port", str(port), "--workers-bind", broker)
        wait_for(lambda: http(self.host + "/comfymq/health")[0] == 200, 30, "the host")
        comfy = subprocess.Popen(
            [sys.executable, "-m", "tests.standin", "--port", "0", "--comfyui-version", "0.8.0"]
            + ["--output-dir", str(tmp / "comfy-output"), "--input-dir", str(self.input_dir)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=open(tmp / "comfy.log", "w"),
            text=True,
        )
        self.procs.append(comfy)
        line = comfy.stdout.readline()
        if not line.startswith("READY"):
            raise SystemExit(f"input_latency: the stand-in ComfyUI did not start: {line!r}")
        self.comfy = line.split()[-1]
        self._start("worker", "worker", "--comfy-url", self.comfy, "--broker", broker, "--data-dir", str(tmp / "w"))
        wait_for(self._online, 60, "the worker")

    def _start(self, name: str, *args: str) -> None:
        log = open(self.tmp / f"{name}.log", "w")
        self.procs.append(
            subprocess.Popen([sys.executable, "-m", "comfy_nodes", *args], cwd=REPO, stdout=log, stderr=log)
        )

    def _online(self) -> bool:
        status, workers = http(self.host + "/comfymq/workers")
        return status == 200 and any(w["online"] for w in workers)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def latency_ms(self, file, tag: str) -> float:
        """Enqueues the job, waits for it to succeed; the ms from just before POST /comfymq/jobs to ComfyUI's
        stamp on the prompt the worker posted for it."""
        sent_ms = time.time() * 1000
        status, body = http(self.host + "/comfymq/jobs", "POST", {"prompt": digest_graph(file, tag)})
        if status != 200:
            raise SystemExit(f"input_latency: enqueue answered {status}: {body}")
        job_id = body["jobs"][0]["id"]

        def done():
            job = http(f"{self.host}/comfymq/jobs/{job_id}")[1]["job"]
            if job["state"] in ("failed", "cancelled"):
                raise SystemExit(f"input_latency: job {job_id} {job['state']}: {job['error']}")
            return job["state"] == "succeeded"

        wait_for(done, 120, f"job {job_id}")
        for entry in http(self.comfy + "/history")[1].values():
            extra = entry["prompt"][3]
            if extra.get("extra_pnginfo", {}).get("comfymq", {}).get("job_id") == job_id:
                return extra["create_time"] - sent_ms
        raise SystemExit(f"input_latency: ComfyUI has no prompt for job {job_id}")


def line(bench: str, metric: str, values: list[float], base: list[float] | None, **params) -> None:
    value = statistics.median(values)
    row = {"bench": bench, "metric": metric, "value": round(value, 1), "unit": "ms"}
    if base is not None:
        base_value = statistics.median(base)
        row.update(baseline="no_input", baseline_value=round(base_value, 1))
        row["ratio"] = round(value / base_value, 2) if base_value > 0 else None
    row.update(min=round(min(values), 1), max=round(max(values), 1), **params)
    print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=20, help="the input's size in MiB")
    args = parser.parse_args()
    size = args.mib * MIB
    with tempfile.TemporaryDirectory(prefix="comfymq-bench-inputs-") as d:
        tmp = Path(d)
        cluster = Cluster(tmp)
        try:
            cluster.input_dir.mkdir(parents=True, exist_ok=True)
            write_random_file(cluster.input_dir / "local.mp4", size, seed=0)  # the baseline's file, in ComfyUI
            cluster.latency_ms("local.mp4", "warm-up")  # the first run pays for connections and imports
            times: dict[str, list[float]] = {"no_input": [], "cold": [], "cached": []}
            for r in range(args.rounds):
                src = tmp / f"input-{r}.mp4"
                sha = write_random_file(src, size, seed=r + 1)
                upload_file(cluster.host, src, "clip.mp4")
                src.unlink()
                reference = {"comfymq_input": sha, "name": "clip.mp4"}
                times["no_input"].append(cluster.latency_ms("local.mp4", f"base-{r}"))
                times["cold"].append(cluster.latency_ms(reference, f"cold-{r}"))
                times["cached"].append(cluster.latency_ms(reference, f"cached-{r}"))
            served = http(cluster.host + "/comfymq/stats")[1]["broker"]["inputs_served"]
        finally:
            cluster.stop()
    params = {"rounds": args.rounds, "input_mib": args.mib}
    line("input_latency/no_input", "enqueue_to_comfyui_prompt", times["no_input"], None, **params)
    for case in ("cold", "cached"):
        line(f"input_latency/{case}", "enqueue_to_comfyui_prompt", times[case], times["no_input"], **params)
    print(
        json.dumps(
            {
                "bench": "input_latency/cold",
                "metric": "inputs_fetched",
                "value": served["fetches"],
                "unit": "fetches",
                "baseline": "cold_jobs",
                "baseline_value": args.rounds,
                "bytes_sent": served["bytes_sent"],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
